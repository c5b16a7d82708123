//! Where the time goes: `perf record` of one thread (the gateway's NAPI
//! thread, or the bench's own thread running BPF_PROG_TEST_RUN), reported
//! as the symbols with the most cpu-clock samples. JIT-compiled BPF
//! programs show as `bpf_prog_<tag>_<name>`, helpers and the kernel's
//! networking code under their own names.

use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// `perf record` (cpu-clock samples) of one thread, from `delay` seconds
/// after start for `secs` seconds, if perf is installed.
pub struct Perf {
    child: std::process::Child,
    file: std::path::PathBuf,
    tid: i32,
}

impl Perf {
    pub fn start(tid: i32, cpu: usize, delay: f64, secs: f64) -> Option<Perf> {
        if tid <= 0 || !super::on_path("perf") {
            return None;
        }
        let file = std::env::temp_dir().join(format!(
            "{}{}-perf{}.data",
            testkit::firewall::LOG_PREFIX,
            std::process::id(),
            super::next_id()
        ));
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sleep {delay}; exec perf record -q -e cpu-clock -C {cpu} -o {} -- sleep {secs}",
                file.display()
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(Perf { child, file, tid })
    }

    /// The symbols with at least 2 % of the samples: (percent, symbol).
    pub fn finish(mut self) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let out = testkit::output_timeout(
            std::process::Command::new("perf").args([
                "report",
                "-i",
                &self.file.display().to_string(),
                "--stdio",
                "--no-children",
                "--tid",
                &self.tid.to_string(),
                "--percentage",
                "relative",
                "--sort",
                "sym",
                "--percent-limit",
                "2",
            ]),
            Duration::from_secs(60),
        );
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#') && l.contains('%'))
            .filter_map(|l| {
                let l = l.trim();
                let (pct, rest) = l.split_once('%')?;
                let pct: f64 = pct.trim().parse().ok()?;
                let sym = rest
                    .trim()
                    .trim_start_matches("[k]")
                    .trim_start_matches("[.]")
                    .trim();
                Some(json!({"percent": pct, "symbol": sym}))
            })
            .take(15)
            .collect()
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}
