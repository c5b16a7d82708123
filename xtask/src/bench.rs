//! `cargo xtask bench [--quick]`: setup, the contenders' packages, a release
//! build, then the `bench` program (see `tests/bench/src/main.rs`),
//! which writes `BENCHMARKS.md` (full run) and `target/bench/results.json`.

use crate::util::{apt_install, cargo, dpkg_installed, is_root, run};
use anyhow::{bail, Result};

#[derive(clap::Args, Default)]
pub struct BenchArgs {
    /// A smoke run (well under 5 minutes): every path and contender once,
    /// few repetitions; writes target/bench/BENCHMARKS-quick.md and
    /// results-quick.json instead of BENCHMARKS.md.
    #[arg(long)]
    pub quick: bool,
    /// Skip `cargo xtask setup` and the package check.
    #[arg(long)]
    pub no_setup: bool,
}

/// Debian packages of the contenders and the measuring tools, by the
/// program each provides.
const PACKAGES: &[(&str, &str)] = &[
    ("nftables", "nft"),
    ("iptables", "iptables-legacy"),
    ("xdp-tools", "xdp-filter"),
    ("ethtool", "ethtool"),
    ("linux-perf", "perf"),
];

/// Installs the contenders' packages that are missing (idempotent).
pub fn contender_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(pkg, _)| !dpkg_installed(pkg))
        .map(|(pkg, _)| *pkg)
        .collect();
    for (pkg, _) in PACKAGES {
        if !missing.contains(pkg) {
            println!("{pkg:<22} present");
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    // perf only adds profiles to the report: a failure there is not fatal.
    let (optional, needed): (Vec<&str>, Vec<&str>) =
        missing.iter().partition(|p| **p == "linux-perf");
    apt_install(&needed)?;
    if let Err(e) = apt_install(&optional) {
        eprintln!("warning: {e:#}; the report will have no perf profiles");
    }
    for p in missing {
        println!("{p:<22} installed");
    }
    Ok(())
}

/// The `bench` program through cargo (release), with the release
/// `firewall` binary.
pub fn run_bench(quick: bool) -> Result<()> {
    let mut c = cargo();
    c.args(["run", "--release", "-p", "bench", "--bin", "bench", "--"]);
    let mut shown = String::from("cargo xtask bench");
    if quick {
        c.arg("--quick");
        shown.push_str(" --quick");
    }
    c.env("FIREWALL_BIN", crate::util::firewall_release_bin())
        .env("BENCH_COMMAND", shown);
    run(&mut c)
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    if !is_root() {
        bail!("the bench loads BPF programs and creates network namespaces: run it as root");
    }
    let quick = args.quick;
    let mut steps = Vec::new();
    if !args.no_setup {
        steps.push(crate::Step::new("setup", crate::setup::setup));
        steps.push(crate::Step::new("contenders' packages", contender_packages));
    }
    steps.push(crate::Step::new(
        "build firewall (release)",
        crate::build_firewall,
    ));
    steps.push(crate::Step::new(
        if quick { "bench --quick" } else { "bench" },
        move || run_bench(quick),
    ));
    crate::run_steps(&steps)
}
