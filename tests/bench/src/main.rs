//! `bench [--quick]`: measures the firewall on this machine in one run and
//! writes `target/bench/results.json` and a Markdown report
//! (`BENCHMARKS.md` at the workspace root for a full run).
//!
//! Sections: per-packet cost through BPF_PROG_TEST_RUN next to two
//! baselines ([`micro`]), live throughput over veth against other
//! filters ([`live`]), and scale ([`scale`]). Everything it sets up
//! (namespaces, pins, rules, attachments) is removed by guards.
//!
//! Runs behind `cargo xtask bench`. Needs root, the release `firewall`
//! binary (`FIREWALL_BIN`), nftables, iptables, xdp-tools and ethtool.

pub mod contenders;
pub mod live;
pub mod micro;
pub mod policy;
pub mod profile;
pub mod report;
pub mod scale;
#[cfg(test)]
mod selftest;
pub mod sys;
pub mod topo;

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// How much to measure.
#[derive(Clone, Debug)]
pub struct Cfg {
    pub quick: bool,
    /// BPF_PROG_TEST_RUN repetitions per run, and runs per measurement.
    pub micro_repeat: u32,
    pub micro_runs: usize,
    /// Distinct sources for the new-source path.
    pub new_sources: usize,
    /// Live runs: measured seconds, warm-up seconds, repetitions.
    pub live_secs: f64,
    pub warmup: f64,
    pub live_reps: usize,
    pub profile_secs: f64,
    /// Repetitions of the scale timings.
    pub scale_reps: usize,
    /// The generator runs on `gen_cpu`, the gateway (and the per-packet
    /// measurements) on `gw_cpu`.
    pub gen_cpu: usize,
    pub gw_cpu: usize,
}

impl Cfg {
    fn new(quick: bool) -> Cfg {
        let n = ncpus();
        let gw_cpu = if n > 1 { 1 } else { 0 };
        if quick {
            Cfg {
                quick,
                micro_repeat: 200_000,
                micro_runs: 3,
                new_sources: 2_000,
                live_secs: 1.0,
                warmup: 0.3,
                live_reps: 1,
                profile_secs: 0.5,
                scale_reps: 1,
                gen_cpu: 0,
                gw_cpu,
            }
        } else {
            Cfg {
                quick,
                micro_repeat: 1_000_000,
                micro_runs: 7,
                new_sources: 50_000,
                live_secs: 3.0,
                warmup: 0.5,
                live_reps: 3,
                profile_secs: 1.0,
                scale_reps: 3,
                gen_cpu: 0,
                gw_cpu,
            }
        }
    }
}

static ID: AtomicU32 = AtomicU32::new(0);

/// Unique within this process (names of pins, temp dirs).
pub fn next_id() -> u32 {
    ID.fetch_add(1, Ordering::Relaxed)
}

/// CPUs online (counted in /proc/stat, which does not depend on the
/// calling thread's affinity).
pub fn ncpus() -> usize {
    let n = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .and_then(|r| r.chars().next())
                .is_some_and(|c| c.is_ascii_digit())
        })
        .count();
    n.max(1)
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The workspace root: this crate lives in `tests/bench`.
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn usage() -> ! {
    eprintln!(
        "usage: bench [--quick] [--only micro|live|scale] [--out-json FILE] [--out-md FILE]\n       bench --from-json results.json [--out-md FILE]\n\
         Measures per-packet cost, live throughput against nftables, iptables and\n\
         xdp-filter, and scale; needs root. `cargo xtask bench` sets everything up."
    );
    std::process::exit(2)
}

fn preflight() -> Result<()> {
    if let Some(p) = testkit::privilege_problem() {
        bail!("the bench cannot run here: {p}");
    }
    let missing: Vec<&str> = [
        "nft",
        "iptables-nft",
        "iptables-legacy",
        "xdp-filter",
        "ethtool",
    ]
    .into_iter()
    .filter(|p| !on_path(p))
    .collect();
    if !missing.is_empty() {
        bail!(
            "missing {} (apt-get install nftables iptables xdp-tools ethtool; \
             `cargo xtask bench` installs them)",
            missing.join(", ")
        );
    }
    let fw = testkit::firewall_bin();
    if !fw.exists() {
        bail!(
            "the firewall binary is not at {} (build it with cargo build --release -p firewall-user, or set FIREWALL_BIN)",
            fw.display()
        );
    }
    Ok(())
}

fn main() {
    let mut quick = false;
    let mut out_json = None;
    let mut out_md = None;
    let mut only = None;
    let mut from = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out-json" => out_json = Some(PathBuf::from(args.next().unwrap_or_else(|| usage()))),
            "--out-md" => out_md = Some(PathBuf::from(args.next().unwrap_or_else(|| usage()))),
            // Development aid: one section only (micro, live or scale).
            "--only" => only = Some(args.next().unwrap_or_else(|| usage())),
            // Re-render the report of an earlier run's results.json.
            "--from-json" => from = Some(PathBuf::from(args.next().unwrap_or_else(|| usage()))),
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let root = workspace_root();
    let bench_dir = root.join("target/bench");
    let out_json = out_json.unwrap_or_else(|| {
        bench_dir.join(if quick {
            "results-quick.json"
        } else {
            "results.json"
        })
    });
    let out_md = out_md.unwrap_or_else(|| {
        if quick {
            bench_dir.join("BENCHMARKS-quick.md")
        } else {
            root.join("BENCHMARKS.md")
        }
    });
    if let Some(src) = from {
        let r = std::fs::read_to_string(&src)
            .map_err(anyhow::Error::from)
            .and_then(|t| Ok(serde_json::from_str::<serde_json::Value>(&t)?))
            .and_then(|all| {
                let quick = all["env"]["quick"].as_bool().unwrap_or(quick);
                Ok(std::fs::write(
                    &out_md,
                    report::markdown(&all, &Cfg::new(quick)),
                )?)
            });
        if let Err(e) = r {
            eprintln!("bench: error: {}: {e:#}", src.display());
            std::process::exit(1);
        }
        return;
    }
    match run(quick, only.as_deref(), &out_json, &out_md) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(
    quick: bool,
    only: Option<&str>,
    out_json: &std::path::Path,
    out_md: &std::path::Path,
) -> Result<()> {
    sys::catch_interrupts();
    preflight()?;
    let cfg = Cfg::new(quick);
    let started = Instant::now();
    let loadavg_start = loadavg();
    let date = firewall_user::clock::rfc3339(std::time::SystemTime::now());
    let command = std::env::var("BENCH_COMMAND").unwrap_or_else(|_| {
        let mut c = String::from("cargo run --release -p bench --bin bench --");
        if quick {
            c.push_str(" --quick");
        }
        c
    });
    eprintln!(
        "bench: {} run, {} CPUs",
        if quick { "quick" } else { "full" },
        ncpus()
    );
    let mut sections = serde_json::Map::new();
    let want = |s: &str| only.is_none_or(|o| o == s);
    if want("micro") {
        let t = Instant::now();
        sections.insert("micro".into(), micro::run(&cfg).context("per-packet cost")?);
        sections.insert("micro_seconds".into(), json!(t.elapsed().as_secs_f64()));
    }
    if want("live") {
        let t = Instant::now();
        sections.insert("live".into(), live::run(&cfg).context("live throughput")?);
        sections.insert("live_seconds".into(), json!(t.elapsed().as_secs_f64()));
    }
    if want("scale") {
        let t = Instant::now();
        sections.insert("scale".into(), scale::run(&cfg).context("scale")?);
        sections.insert("scale_seconds".into(), json!(t.elapsed().as_secs_f64()));
    }

    let env = json!({
        "command": command,
        "quick": quick,
        "date": date,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpu_model": cpu_model(),
        "cpus": ncpus(),
        "bpf_stats_enabled_sysctl": std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default().trim(),
        "bpf_jit_enable": std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable").unwrap_or_default().trim(),
        "tools": contenders::versions().into_iter().map(|(k, v)| json!({"tool": k, "version": v})).collect::<Vec<_>>(),
        "firewall_bin": testkit::firewall_bin().display().to_string(),
        "total_seconds": started.elapsed().as_secs_f64(),
        "loadavg_start": loadavg_start,
        "loadavg_end": loadavg(),
    });
    let mut all = json!({"env": env});
    for (k, v) in sections {
        all[k] = v;
    }
    let md = report::markdown(&all, &cfg);
    all["targets"] = report::targets_json(&all);
    for p in [out_json, out_md] {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
        }
    }
    std::fs::write(out_json, serde_json::to_string_pretty(&all)? + "\n")
        .with_context(|| format!("writing {}", out_json.display()))?;
    std::fs::write(out_md, md).with_context(|| format!("writing {}", out_md.display()))?;
    eprintln!(
        "bench: done in {:.0} s: {} and {}",
        started.elapsed().as_secs_f64(),
        out_json.display(),
        out_md.display()
    );
    Ok(())
}

/// The 1, 5 and 15-minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Whether an executable `prog` is on PATH (or in /usr/sbin, /sbin).
pub fn on_path(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| {
            std::fs::metadata(d.join(prog))
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}
