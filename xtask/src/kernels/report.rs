//! What one kernel's VM said: the runner's lines gathered while it runs,
//! printed as the matrix's summary.

use std::path::PathBuf;

use super::{fetch::Fetched, initramfs::EXIT_MARKER};

/// A kernel's verifier log is kept to this many trailing lines in the report
/// (the whole console is in `target/kernels/<name>/console.log`).
const LOG_EXCERPT: usize = 40;

/// What one kernel's VM reported.
#[derive(Default)]
pub struct Report {
    pub(super) kernel: &'static str,
    pub(super) fetched: Fetched,
    pub(super) fetch_secs: f64,
    pub(super) boot_secs: f64,
    pub(super) console_log: PathBuf,
    release: String,
    /// `load: <hook> ...` lines, without the prefix.
    loads: Vec<String>,
    /// `fixtures: ...`, without the prefix.
    summary: Option<String>,
    /// `clock: ...`: the clock the loader picked on this kernel.
    clock: Option<String>,
    failures: Vec<String>,
    /// (program, log lines) of each rejected program.
    pub(super) verifier_logs: Vec<(String, Vec<String>)>,
    pub(super) exit: Option<i32>,
    pub(super) problem: Option<String>,
}

impl Report {
    pub(super) fn new(kernel: &'static str, console_log: PathBuf) -> Report {
        Report {
            kernel,
            console_log,
            ..Default::default()
        }
    }

    pub(super) fn ok(&self) -> bool {
        self.exit == Some(0) && self.problem.is_none()
    }

    pub(super) fn print(&self) {
        let f = &self.fetched;
        eprintln!(
            "  {:<5} {} {} ({}, fetch {:.1}s) kernel {}",
            self.kernel,
            f.package,
            f.version,
            if f.cached { "cached" } else { "downloaded" },
            self.fetch_secs,
            if self.release.is_empty() {
                "?"
            } else {
                &self.release
            },
        );
        eprintln!(
            "        loaded: {}",
            if self.loads.is_empty() {
                "-".to_string()
            } else {
                self.loads.join(", ")
            }
        );
        eprintln!(
            "        clock: {}",
            self.clock.as_deref().unwrap_or("not reported")
        );
        eprintln!(
            "        fixtures: {}",
            self.summary.as_deref().unwrap_or("no summary")
        );
        for fl in &self.failures {
            eprintln!("        {fl}");
        }
        for (prog, lines) in &self.verifier_logs {
            eprintln!("        verifier log of {prog} (last {LOG_EXCERPT} lines):");
            for l in &lines[lines.len().saturating_sub(LOG_EXCERPT)..] {
                eprintln!("          | {l}");
            }
        }
        if let Some(p) = &self.problem {
            eprintln!("        problem: {p}");
        }
        eprintln!(
            "        VM {:.1}s, runner exit {}: {}  (console: {})",
            self.boot_secs,
            self.exit.map_or("-".to_string(), |c| c.to_string()),
            if self.ok() { "ok" } else { "FAILED" },
            self.console_log.display()
        );
    }

    /// Takes in one console line (escape sequences removed).
    pub(super) fn line(&mut self, l: &str) {
        if let Some(r) = l.strip_prefix("kernel: ") {
            self.release = r.to_string();
        } else if let Some(x) = l.strip_prefix("load: ") {
            self.loads.push(x.to_string());
        } else if let Some(x) = l.strip_prefix("fixtures: ") {
            self.summary = Some(x.to_string());
        } else if let Some(x) = l.strip_prefix("clock: ") {
            self.clock = Some(x.to_string());
        } else if l.starts_with("FAIL ") {
            self.failures.push(l.to_string());
        } else if let Some(x) = l.strip_prefix(EXIT_MARKER) {
            self.exit = x.trim().parse().ok();
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn report_reads_runner_lines() {
        let mut r = Report::default();
        for l in [
            "kernel: 5.10.0-46-cloud-amd64",
            "load: xdp ok",
            "load: tc REJECTED: BPF_PROG_LOAD of firewall_tc failed: Permission denied",
            "FAIL tc: x: returned 0, expected 2",
            "fixtures: xdp 64 passed 0 failed; tc 63 passed 1 failed",
            "FIXTURE-RUNNER-EXIT=1",
        ] {
            r.line(l);
        }
        assert_eq!(r.release, "5.10.0-46-cloud-amd64");
        assert_eq!(r.loads.len(), 2);
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.exit, Some(1));
        assert!(!r.ok());
    }
}
