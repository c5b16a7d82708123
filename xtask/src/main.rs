//! `cargo xtask <command>`: the chores cargo can't do alone.
//!
//! - `setup`: install what the build and the tests need (idempotent, quick
//!   when everything is present).
//! - `test`:  setup, build the `firewall` binary, run every test.
//! - `demo`:  setup, build, and show the firewall limiting a flood in a
//!   namespace sandbox while a legitimate client is served.
//! - `fuzz`:  setup, then a million hostile frames through the data plane.
//! - `kernels`: the fixture table on Debian's 5.10 and 6.1 kernels under qemu.
//! - `bench`: per-packet cost, live throughput against other filters, and
//!   scale, written to BENCHMARKS.md.

mod bench;
mod demo;
mod demo_fleet;
mod fuzz;
mod kernels;
mod package;
mod setup;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::time::Instant;
use util::{cargo, run, Failed};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project chores: setup, test, demo")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: LLVM 22 dev packages, iproute2, util-linux,
    /// bpf-linker 0.13.0, the nightly toolchain with rust-src; mount bpffs.
    Setup,
    /// Setup, build the `firewall` binary (release), run all tests (release).
    ///
    /// `cargo xtask test [CARGO_TEST_ARGS]... [-- TEST_BINARY_ARGS]...`,
    /// e.g. `cargo xtask test -- sandbox` or `cargo xtask test -p tests`.
    Test {
        /// Extra arguments for `cargo test`; after `--`, arguments for the
        /// test binaries (filters, `--nocapture`...).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CARGO_TEST_ARGS"
        )]
        cargo_args: Vec<String>,
    },
    /// Setup, build, then run the firewall on a sandbox gateway with a client
    /// flow and an attacker flood, and show who got through (`--fleet`:
    /// three gateways sharing bans through NATS).
    Demo(demo::DemoArgs),
    /// Setup, then a million random and mutated frames through the XDP and
    /// TC programs (BPF_PROG_TEST_RUN), every one checked.
    Fuzz(fuzz::FuzzArgs),
    /// The kernel matrix: the fixture table (XDP and TC) under qemu on
    /// Debian's 5.10 and 6.1 cloud kernels, fetched once into target/kernels.
    Kernels(kernels::KernelsArgs),
    /// Build the Debian package (binary, systemd unit, default policy,
    /// dashboard, alerts, completions, man pages) into target/debian/.
    Package,
    /// Setup, the contenders' packages, build, then measure (BPF_PROG_TEST_RUN
    /// per-packet cost, live throughput against nftables, iptables and
    /// xdp-filter, scale) into BENCHMARKS.md and target/bench/results.json.
    Bench(bench::BenchArgs),
}

fn main() {
    util::extend_path();
    let (cli, test_args) = parse_cli(std::env::args().collect());
    let r = match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Test { cargo_args } => run_steps(&test_steps(cargo_args, test_args)),
        Cmd::Demo(args) => demo::demo(&args),
        Cmd::Fuzz(args) => fuzz::fuzz(&args),
        Cmd::Kernels(args) => kernels::kernels(&args),
        Cmd::Package => package::package().map(|_| ()),
        Cmd::Bench(args) => bench::bench(&args),
    };
    if let Err(e) = r {
        let code = e.downcast_ref::<Failed>().map(|f| f.code).unwrap_or(1);
        eprintln!("xtask: error: {e:#}");
        std::process::exit(code);
    }
}

/// Parses the command line. For `test`, everything after the first `--` is
/// split off first (clap would swallow a leading `--`) and returned as the
/// test-binary arguments.
fn parse_cli(mut argv: Vec<String>) -> (Cli, Vec<String>) {
    let mut test_args = Vec::new();
    if argv.get(1).map(String::as_str) == Some("test") {
        if let Some(i) = argv.iter().position(|a| a == "--") {
            test_args = argv.split_off(i + 1);
            argv.pop();
        }
    }
    (Cli::parse_from(argv), test_args)
}

/// One named step of a pipeline.
pub struct Step {
    pub name: String,
    pub run: Box<dyn Fn() -> Result<()>>,
}

impl Step {
    pub fn new(name: impl Into<String>, run: impl Fn() -> Result<()> + 'static) -> Self {
        Step {
            name: name.into(),
            run: Box::new(run),
        }
    }
}

/// The steps of `cargo xtask test`, in order. Add more steps here (bench
/// smoke, kernel matrix...).
fn test_steps(cargo_args: Vec<String>, test_args: Vec<String>) -> Vec<Step> {
    vec![
        Step::new("setup", setup::setup),
        Step::new("build firewall (release)", build_firewall),
        Step::new(
            "build the test variant of firewall (release)",
            build_variant,
        ),
        Step::new("build the Debian package", || {
            let deb = package::package()?;
            // The package test (tests/tests/ops_package.rs) finds it here.
            std::env::set_var("FIREWALL_DEB", deb);
            Ok(())
        }),
        Step::new("cargo test (release, workspace)", move || {
            let bin = util::firewall_release_bin();
            let mut c = cargo();
            let picks_packages = cargo_args
                .iter()
                .any(|a| a.starts_with("-p") || a.starts_with("--package"));
            c.args(["test", "--release"]);
            if !picks_packages {
                // firewall-ebpf is a member but builds for the BPF target only
                // (through firewall-user's build script), never for the host.
                c.args(["--workspace", "--exclude", "firewall-ebpf"]);
            }
            c.args(&cargo_args).arg("--");
            // Namespace tests run fine in parallel; BPF-heavy ones get flaky
            // with more threads on these 2-core machines.
            if !test_args.iter().any(|a| a.starts_with("--test-threads")) {
                c.arg("--test-threads=2");
            }
            c.args(&test_args)
                .env("FIREWALL_BIN", &bin)
                .env("FIREWALL_BIN_VARIANT", variant_bin());
            run(&mut c)
        }),
        Step::new("kernel matrix (5.10, 6.1 under qemu)", || {
            kernels::kernels(&kernels::KernelsArgs::default())
        }),
        // A smoke run of the benchmark: every path and contender once, no
        // thresholds (writes target/bench/BENCHMARKS-quick.md).
        Step::new("bench --quick (smoke)", || {
            bench::contender_packages()?;
            bench::run_bench(true)
        }),
    ]
}

/// `cargo build --release -p firewall-user`: the `firewall` binary.
pub fn build_firewall() -> Result<()> {
    run(cargo().args(["build", "--release", "-p", "firewall-user"]))
}

/// A second `firewall` for the tests, built apart (its own target dir) with
/// the test hooks (feature `test-hooks`) that the shipped one lacks: the
/// in-place upgrade test starts it over a running daemon's pins, and the
/// TUI test uses its panic hook.
pub fn build_variant() -> Result<()> {
    run(cargo()
        .args(["build", "--release", "-p", "firewall-user"])
        .args(["--features", "test-hooks", "--target-dir"])
        .arg(util::workspace_root().join("target/variant")))
}

pub fn variant_bin() -> std::path::PathBuf {
    util::workspace_root().join("target/variant/release/firewall")
}

/// Runs the steps in order, printing each with its time, stopping at the
/// first failure (whose exit code is kept), then a summary.
pub fn run_steps(steps: &[Step]) -> Result<()> {
    let total = Instant::now();
    let mut done: Vec<(String, f64, bool)> = Vec::new();
    let mut failure = None;
    for (i, s) in steps.iter().enumerate() {
        eprintln!("==> [{}/{}] {}", i + 1, steps.len(), s.name);
        let t = Instant::now();
        let r = (s.run)();
        let secs = t.elapsed().as_secs_f64();
        let ok = r.is_ok();
        eprintln!(
            "<== [{}/{}] {}: {} in {secs:.1}s",
            i + 1,
            steps.len(),
            s.name,
            if ok { "ok" } else { "FAILED" }
        );
        done.push((s.name.clone(), secs, ok));
        if let Err(e) = r {
            failure = Some(e);
            break;
        }
    }
    eprintln!("\nsummary:");
    for (name, secs, ok) in &done {
        eprintln!(
            "  {:<40} {:>8.1}s  {}",
            name,
            secs,
            if *ok { "ok" } else { "FAILED" }
        );
    }
    for s in steps.iter().skip(done.len()) {
        eprintln!("  {:<40} {:>9}  skipped", s.name, "-");
    }
    eprintln!("  {:<40} {:>8.1}s", "total", total.elapsed().as_secs_f64());
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod cli_tests {
    use super::*;

    fn parse(args: &[&str]) -> (Vec<String>, Vec<String>) {
        let argv = std::iter::once("xtask")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        let (cli, test_args) = parse_cli(argv);
        match cli.cmd {
            Cmd::Test { cargo_args } => (cargo_args, test_args),
            _ => panic!("not test"),
        }
    }

    #[test]
    fn test_args_split_at_double_dash() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse(&["test"]), (v(&[]), v(&[])));
        assert_eq!(parse(&["test", "--", "filter"]), (v(&[]), v(&["filter"])));
        assert_eq!(
            parse(&["test", "--", "--nocapture", "x"]),
            (v(&[]), v(&["--nocapture", "x"]))
        );
        assert_eq!(
            parse(&["test", "-p", "testkit", "--lib", "--", "--bogus"]),
            (v(&["-p", "testkit", "--lib"]), v(&["--bogus"]))
        );
    }
}
