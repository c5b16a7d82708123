//! `cargo xtask setup`: install what is missing, one line per item.
//! Idempotent and quick (well under a second) when everything is present.

use crate::util::{apt_install, cargo, cargo_bin_dir, dpkg_installed, is_root, probe, run};
use anyhow::{bail, Result};
use std::process::Command;

/// Debian packages: LLVM for bpf-linker, iproute2 (`ip`), util-linux (`nsenter`).
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "util-linux",
    // `firewall top --watch` is tested in tmux (tests/tests/ops_tui.rs).
    "tmux",
    // The fleet bus (NATS JetStream) in tests/tests/e2e_fleet.rs.
    "nats-server",
    // The SYN challenge end to end (tests/tests/e2e_challenge.rs): a web
    // server on the gateway, a forged-source SYN flood, real clients.
    "nginx-light",
    "hping3",
    "curl",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

fn item(name: &str, state: &str) {
    println!("{name:<22} {state}");
}

pub fn setup() -> Result<()> {
    apt_packages()?;
    bpf_linker()?;
    nightly()?;
    bpffs()?;
    crowdsec()?;
    Ok(())
}

/// Where Debian's crowdsec looks for central-API credentials.
const CROWDSEC_ONLINE_CREDS: &str = "/etc/crowdsec/online_api_credentials.yaml";

/// Debian's `crowdsec` (LAPI and cscli) for tests/tests/e2e_crowdsec.rs.
/// Its post-install script registers with CrowdSec's central API unless
/// `online_api_credentials.yaml` is already there and non-empty; without a
/// network that fails and leaves the package unconfigured. A placeholder
/// makes it skip the registration (the tests run the LAPI with -no-capi).
fn crowdsec() -> Result<()> {
    let name = "crowdsec";
    if dpkg_installed(name) {
        item(name, "present");
        return Ok(());
    }
    if !is_root() {
        bail!("missing package crowdsec: run as root to install it");
    }
    let creds = std::path::Path::new(CROWDSEC_ONLINE_CREDS);
    if std::fs::metadata(creds)
        .map(|m| m.len() == 0)
        .unwrap_or(true)
    {
        std::fs::create_dir_all("/etc/crowdsec")?;
        std::fs::write(
            creds,
            "# placeholder written by `cargo xtask setup`: no central API here\nurl: https://api.crowdsec.net/\nlogin: offline\npassword: offline\n",
        )?;
        item("crowdsec online creds", "placeholder written");
    }
    // Left half-configured by an earlier attempt without the placeholder.
    let state = probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", name]));
    if state.is_some_and(|s| s.contains("half-configured") || s.contains("unpacked")) {
        run(Command::new("dpkg")
            .args(["--configure", name])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !dpkg_installed(name) {
        apt_install(&[name])?;
    }
    item(name, "installed");
    Ok(())
}

fn apt_packages() -> Result<()> {
    if probe(Command::new("dpkg-query").arg("--version")).is_none() {
        bail!(
            "dpkg-query not found: this setup supports Debian/Ubuntu; install {} by hand",
            APT_PACKAGES.join(" ")
        );
    }
    let mut missing = Vec::new();
    for p in APT_PACKAGES {
        if dpkg_installed(p) {
            item(p, "present");
        } else {
            missing.push(*p);
        }
    }
    apt_install(&missing)?;
    for p in missing {
        item(p, "installed");
    }
    Ok(())
}

fn bpf_linker_version() -> Option<String> {
    let mut candidates = vec![std::path::PathBuf::from("bpf-linker")];
    if let Some(d) = cargo_bin_dir() {
        candidates.push(d.join("bpf-linker"));
    }
    candidates
        .iter()
        .find_map(|c| probe(Command::new(c).arg("--version")))
        .map(|s| s.trim().to_string())
}

fn bpf_linker() -> Result<()> {
    let name = "bpf-linker";
    match bpf_linker_version() {
        Some(v) if v.split_whitespace().any(|w| w == BPF_LINKER_VERSION) => {
            item(name, &format!("present ({v})"));
            return Ok(());
        }
        Some(v) => eprintln!("{name}: found {v}, want {BPF_LINKER_VERSION}; reinstalling"),
        None => {}
    }
    run(cargo()
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--no-default-features",
            "--features",
            "llvm-22",
            "--force",
        ])
        .env("LLVM_PREFIX", LLVM_PREFIX))?;
    match bpf_linker_version() {
        Some(v) if v.contains(BPF_LINKER_VERSION) => item(name, &format!("installed ({v})")),
        other => bail!("bpf-linker still not usable after install: {other:?}"),
    }
    Ok(())
}

fn nightly() -> Result<()> {
    let toolchains = probe(Command::new("rustup").args(["toolchain", "list"]));
    let Some(toolchains) = toolchains else {
        bail!("rustup not found: install Rust with rustup (the eBPF build needs the nightly toolchain)");
    };
    if toolchains.lines().any(|l| l.starts_with("nightly")) {
        item("nightly toolchain", "present");
    } else {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
        item("nightly toolchain", "installed");
    }
    let installed = probe(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        item("rust-src (nightly)", "present");
    } else {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
        item("rust-src (nightly)", "installed");
    }
    Ok(())
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 2 && f[1] == "/sys/fs/bpf" && f[2] == "bpf"
            })
        })
        .unwrap_or(false)
}

fn bpffs() -> Result<()> {
    let name = "bpffs /sys/fs/bpf";
    if bpffs_mounted() {
        item(name, "present");
        return Ok(());
    }
    if !is_root() {
        item(
            name,
            "not mounted (needs root: mount -t bpf bpf /sys/fs/bpf)",
        );
        return Ok(());
    }
    let _ = std::fs::create_dir_all("/sys/fs/bpf");
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    item(name, "mounted");
    Ok(())
}
