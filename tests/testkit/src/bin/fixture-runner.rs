//! `fixture-runner`: the BPF_PROG_TEST_RUN fixture table (the same
//! `testkit::fixtures::run_table` the host's `tests/tests/fixtures.rs` runs),
//! as a standalone binary for the kernel matrix (`cargo xtask kernels`),
//! which builds it statically for musl and runs it as a VM's only program.
//!
//! Output (parsed by xtask, keep the shapes):
//! - `kernel: <release>`
//! - `load: xdp ok` / `load: xdp REJECTED: <error>` (each program loaded on
//!   its own, so a rejection of one does not hide the other), followed for a
//!   rejection by the verifier log between `--- verifier log <prog> ---` and
//!   `--- end verifier log ---`
//! - one line a fixture: `ok   xdp: <name>` / `FAIL xdp: <name>: <why>`
//! - `clock: jiffies (HZ=N)` / `clock: ktime`: the clock the loader chose
//! - `fixtures: xdp N passed M failed; tc N passed M failed`
//!
//! Exits 0 only when both programs load and every fixture passes. Needs
//! root and bpffs at /sys/fs/bpf.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use aya::{
    programs::{ProgramError, SchedClassifier, Xdp},
    EbpfLoader,
};
use firewall_common::maps as names;
use firewall_user::loader;
use testkit::{fixtures, harness::Hook};

/// At most this many trailing lines of a verifier log are printed (the
/// verbose log of a rejected program can run to megabytes).
const MAX_LOG_LINES: usize = 400;

fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Xdp => "xdp",
        Hook::Tc => "tc",
    }
}

fn print_verifier_log(prog: &str, log: &str) {
    let lines: Vec<&str> = log.lines().collect();
    println!("--- verifier log {prog} ---");
    if lines.len() > MAX_LOG_LINES {
        println!(
            "[... {} earlier lines left out ...]",
            lines.len() - MAX_LOG_LINES
        );
    }
    for l in &lines[lines.len().saturating_sub(MAX_LOG_LINES)..] {
        println!("{l}");
    }
    println!("--- end verifier log ---");
}

/// Loads the object and then only the program of `hook`, in a private pin
/// directory that is removed afterwards.
fn probe_load(hook: Hook) -> Result<(), String> {
    let pin_dir = PathBuf::from(format!(
        "/sys/fs/bpf/fwprobe-{}-{}",
        std::process::id(),
        hook_name(hook)
    ));
    loader::ensure_bpffs(&pin_dir).map_err(|e| format!("{e:#}"))?;
    let r = (|| {
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pin_dir)
            .load(loader::object())
            .map_err(|e| format!("loading the object (maps, BTF): {e}"))?;
        let name = match hook {
            Hook::Xdp => names::PROG_XDP,
            Hook::Tc => names::PROG_TC,
        };
        let prog = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("program {name} missing from the object"))?;
        let loaded: Result<(), ProgramError> = match hook {
            Hook::Xdp => <&mut Xdp>::try_from(prog).and_then(|p| p.load()),
            Hook::Tc => <&mut SchedClassifier>::try_from(prog).and_then(|p| p.load()),
        };
        match loaded {
            Ok(()) => Ok(()),
            Err(ProgramError::LoadError {
                io_error,
                verifier_log,
            }) => {
                print_verifier_log(name, &verifier_log.to_string());
                Err(format!("BPF_PROG_LOAD of {name} failed: {io_error}"))
            }
            Err(e) => Err(format!("{name}: {e}")),
        }
    })();
    let _ = std::fs::remove_dir_all(&pin_dir);
    r
}

/// The clock `firewall run` would pick on this kernel (see `tick`).
fn probe_clock() -> String {
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/fwclock-{}", std::process::id()));
    let r = loader::ensure_bpffs(&pin_dir)
        .and_then(|_| loader::load(&pin_dir, &Default::default()))
        .map(|l| l.tick.describe())
        .unwrap_or_else(|e| format!("unknown ({e:#})"));
    let _ = loader::detach(&pin_dir, None);
    let _ = std::fs::remove_dir_all(&pin_dir);
    r
}

fn main() -> ExitCode {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel: {}", release.trim());
    let mut all_ok = true;

    for hook in [Hook::Xdp, Hook::Tc] {
        match probe_load(hook) {
            Ok(()) => println!("load: {} ok", hook_name(hook)),
            Err(e) => {
                all_ok = false;
                println!("load: {} REJECTED: {e}", hook_name(hook));
            }
        }
    }

    println!("clock: {}", probe_clock());

    let mut summary = Vec::new();
    for hook in [Hook::Xdp, Hook::Tc] {
        let h = hook_name(hook);
        let t = Instant::now();
        let (passed, failed) = match fixtures::run_table(hook) {
            Ok(outcomes) => {
                let mut passed = 0;
                for o in &outcomes {
                    match &o.error {
                        None => {
                            passed += 1;
                            println!("ok   {h}: {}", o.name);
                        }
                        Some(e) => println!("FAIL {h}: {}: {e}", o.name),
                    }
                }
                (passed, outcomes.len() - passed)
            }
            Err(e) => {
                // The verifier log, if any, was printed by the load probe.
                let msg = format!("{e:#}");
                let msg = msg.split(". Verifier output:").next().unwrap_or("");
                println!("FAIL {h}: the table did not run: {msg}");
                (0, fixtures::table().len())
            }
        };
        println!(
            "table {h}: {passed} passed {failed} failed in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        all_ok &= failed == 0 && passed > 0;
        summary.push(format!("{h} {passed} passed {failed} failed"));
    }
    println!("fixtures: {}", summary.join("; "));
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
