//! `cargo xtask package`: the Debian package, `target/debian/firewall_*.deb`.
//!
//! Builds the `firewall` binary (release), generates the shell completions
//! and man pages with it (`firewall completions SHELL`, `firewall man`) into
//! `target/release/gen/`, then runs `cargo deb --no-build` with the
//! `[package.metadata.deb]` of `firewall-user/Cargo.toml`. Installs
//! cargo-deb first when it is missing.

use crate::util::{cargo, cargo_bin_dir, probe, run, target_dir};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// Known to build with the toolchain here (Rust 1.95).
const CARGO_DEB_VERSION: &str = "3.8.0";

fn cargo_deb_version() -> Option<String> {
    probe(cargo().args(["deb", "--version"]))
        .or_else(|| {
            let bin = cargo_bin_dir()?.join("cargo-deb");
            probe(Command::new(bin).args(["deb", "--version"]))
        })
        .map(|s| s.trim().to_string())
}

/// `cargo install cargo-deb@3.8.0 --locked` unless some cargo-deb is there.
pub fn ensure_cargo_deb() -> Result<()> {
    if let Some(v) = cargo_deb_version() {
        println!("{:<22} present ({v})", "cargo-deb");
        return Ok(());
    }
    run(cargo().args([
        "install",
        &format!("cargo-deb@{CARGO_DEB_VERSION}"),
        "--locked",
    ]))?;
    match cargo_deb_version() {
        Some(v) => println!("{:<22} installed ({v})", "cargo-deb"),
        None => bail!("cargo-deb still not usable after `cargo install cargo-deb`"),
    }
    Ok(())
}

/// Completions (bash, zsh, fish) and man pages from the built binary.
fn generate_assets() -> Result<()> {
    let bin = crate::util::firewall_release_bin();
    let gen = target_dir().join("release/gen");
    let _ = std::fs::remove_dir_all(&gen);
    let completions = gen.join("completions");
    std::fs::create_dir_all(&completions)?;
    for (shell, file) in [
        ("bash", "firewall.bash"),
        ("zsh", "_firewall"),
        ("fish", "firewall.fish"),
    ] {
        let out = Command::new(&bin)
            .args(["completions", shell])
            .output()
            .with_context(|| format!("running {} completions {shell}", bin.display()))?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!(
                "firewall completions {shell} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::write(completions.join(file), &out.stdout)?;
    }
    run(Command::new(&bin)
        .args(["man", "--out-dir"])
        .arg(gen.join("man")))?;
    Ok(())
}

/// The newest `firewall_*.deb` under `target/debian/`.
pub fn deb_path() -> Option<PathBuf> {
    std::fs::read_dir(target_dir().join("debian"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("firewall_") && n.ends_with(".deb"))
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

/// Build the package; returns its path.
pub fn package() -> Result<PathBuf> {
    ensure_cargo_deb()?;
    crate::build_firewall()?;
    generate_assets()?;
    let out = target_dir().join("debian");
    std::fs::create_dir_all(&out)?;
    run(cargo()
        .args(["deb", "-p", "firewall-user", "--no-build", "--output"])
        .arg(&out))?;
    let deb = deb_path().context("cargo deb ran but left no target/debian/firewall_*.deb")?;
    println!("package: {}", deb.display());
    Ok(deb)
}
