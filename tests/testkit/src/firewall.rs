//! Driving the real `firewall` binary: the daemon (`firewall run`) inside a
//! namespace, and CLI calls against its pin directory.
//!
//! The data plane stays attached when the daemon exits (by design), so
//! [`FirewallDaemon`]'s drop runs `firewall detach` and removes the pins.

use crate::netns::{netns_path, nsenter_cmd, output_timeout};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Pin dirs are `/sys/fs/bpf/fwt<pid>-<n>`.
pub const PIN_PREFIX: &str = "fwt";
/// Log dirs are `$TMPDIR/fwlog<pid>-<n>`.
pub const LOG_PREFIX: &str = "fwlog";
/// How long [`FirewallDaemon::start`] waits for readiness.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one CLI call may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// The `firewall` binary: `$FIREWALL_BIN` if set, else `../firewall`
/// relative to the running executable (test executables live in
/// `target/<profile>/deps/`), else `firewall` next to the executable.
pub fn firewall_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FIREWALL_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    let up = dir.join("../firewall");
    if up.exists() {
        return up;
    }
    let here = dir.join("firewall");
    if here.exists() {
        return here;
    }
    up
}

/// The test variant of the `firewall` binary (`$FIREWALL_BIN_VARIANT`): a
/// separate build with the test hooks (`--features test-hooks`); `cargo
/// xtask test` builds it. `None` (with a SKIP line naming `what`) when it is not set; under
/// `CI=true` that panics instead.
pub fn variant_bin(what: &str) -> Option<PathBuf> {
    match std::env::var_os("FIREWALL_BIN_VARIANT").filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None if crate::under_ci() => {
            panic!("FIREWALL_BIN_VARIANT is not set (cargo xtask test builds it)")
        }
        None => {
            eprintln!("SKIP {what}: set FIREWALL_BIN_VARIANT to a build made with --features test-hooks (cargo xtask test does)");
            None
        }
    }
}

/// A fresh, unused pin dir path under /sys/fs/bpf (not created).
pub fn unique_pin_dir() -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/{PIN_PREFIX}{}", crate::unique_id()))
}

/// `firewall --pin-dir DIR ARGS...` in the host namespace (60 s limit;
/// a timeout shows as a failed Output with the reason on stderr).
pub fn cli(pin_dir: impl AsRef<Path>, args: &[&str]) -> Output {
    cli_cmd(Command::new(firewall_bin()), pin_dir.as_ref(), args)
}

/// `firewall --pin-dir DIR ARGS...` inside namespace `ns` (name or path).
pub fn cli_in(ns: &str, pin_dir: impl AsRef<Path>, args: &[&str]) -> Output {
    cli_cmd(nsenter_cmd(ns, firewall_bin()), pin_dir.as_ref(), args)
}

fn cli_cmd(mut cmd: Command, pin_dir: &Path, args: &[&str]) -> Output {
    cmd.arg("--pin-dir").arg(pin_dir).args(args);
    match output_timeout(&mut cmd, CLI_TIMEOUT) {
        Ok(o) => o,
        Err(e) => failed_output(format!("error: running {cmd:?}: {e}")),
    }
}

fn failed_output(msg: String) -> Output {
    use std::os::unix::process::ExitStatusExt;
    Output {
        status: ExitStatus::from_raw(127 << 8),
        stdout: Vec::new(),
        stderr: msg.into_bytes(),
    }
}

/// `firewall run` running in a namespace, with its own pin dir and captured
/// stdout (JSON event lines) and stderr.
pub struct FirewallDaemon {
    child: Option<Child>,
    bin: PathBuf,
    ns: String,
    pin_dir: PathBuf,
    log_dir: PathBuf,
    exit: Option<ExitStatus>,
    cleaned: bool,
}

impl FirewallDaemon {
    /// Starts `nsenter --net=/run/netns/NS firewall --pin-dir <unique> run ARGS...`
    /// and waits for readiness (see [`FirewallDaemon::spawn`]). Panics with
    /// the daemon's stderr if it does not become ready.
    pub fn start(ns: &str, args: &[&str]) -> FirewallDaemon {
        Self::try_start(ns, args).unwrap_or_else(|e| panic!("FirewallDaemon::start: {e:#}"))
    }

    pub fn try_start(ns: &str, args: &[&str]) -> Result<FirewallDaemon> {
        Self::spawn(&firewall_bin(), ns, &unique_pin_dir(), args)
    }

    /// Starts `bin --pin-dir PIN_DIR run ARGS...` in namespace `ns` and waits
    /// (at most 20 s) until it is ready: an `attach` event for every
    /// `--iface` in `args` on stdout, or a `start` event plus the pin dir
    /// and then up to 2 s more for the attach events. Fails with the
    /// captured stderr if the daemon exits or the time runs out (the daemon
    /// is then killed and cleaned up).
    pub fn spawn(bin: &Path, ns: &str, pin_dir: &Path, args: &[&str]) -> Result<FirewallDaemon> {
        if !bin.exists() {
            bail!(
                "firewall binary not found at {} (build it: cargo build --release -p firewall-user, or set FIREWALL_BIN)",
                bin.display()
            );
        }
        let log_dir = std::env::temp_dir().join(format!("{LOG_PREFIX}{}", crate::unique_id()));
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("mkdir {}", log_dir.display()))?;
        let stdout = std::fs::File::create(log_dir.join("stdout.log"))?;
        let stderr = std::fs::File::create(log_dir.join("stderr.log"))?;
        let mut cmd = nsenter_cmd(ns, bin);
        cmd.arg("--pin-dir")
            .arg(pin_dir)
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let mut d = FirewallDaemon {
            child: Some(child),
            bin: bin.to_path_buf(),
            ns: ns.to_string(),
            pin_dir: pin_dir.to_path_buf(),
            log_dir,
            exit: None,
            cleaned: false,
        };
        let ifaces = args
            .iter()
            .filter(|a| **a == "--iface" || a.starts_with("--iface="))
            .count();
        // On error `d` is dropped: killed, detached, pins removed.
        d.wait_ready(ifaces, READY_TIMEOUT)
            .with_context(|| format!("daemon {cmd:?} did not become ready"))?;
        Ok(d)
    }

    fn wait_ready(&mut self, ifaces: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut started_at: Option<Instant> = None;
        loop {
            let ev = self.events();
            let attached = ev.iter().filter(|e| e["event"] == "attach").count();
            let started = ev.iter().any(|e| e["event"] == "start");
            // `start` follows the attach events: wait for both, so that a
            // caller finds every event of the start-up.
            if ifaces > 0 && attached >= ifaces && started {
                return Ok(());
            }
            if started && self.pin_dir.exists() {
                let t = *started_at.get_or_insert_with(Instant::now);
                if ifaces == 0 || t.elapsed() >= Duration::from_secs(2) {
                    return Ok(());
                }
            }
            if let Some(status) = self.try_wait() {
                bail!(
                    "firewall run exited with {status} before it was ready\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    self.stderr(),
                    self.stdout()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "firewall run not ready after {timeout:?} (want {ifaces} attach events or a start event and {})\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    self.pin_dir.display(),
                    self.stderr(),
                    self.stdout()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The namespace the daemon runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Directory with `stdout.log` and `stderr.log`.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The exit status if the daemon has exited (reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(s)) = c.try_wait() {
                    self.exit = Some(s);
                }
            }
        }
        self.exit
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.log_dir.join("stdout.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log_dir.join("stderr.log")).unwrap_or_default()
    }

    /// Every stdout line that parses as a JSON object, in order.
    pub fn events(&self) -> Vec<Value> {
        self.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// Waits (at most `timeout`) for an event satisfying `pred`.
    pub fn wait_for_event(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (e.g. `libc::SIGHUP` to reload the policy).
    pub fn signal(&mut self, sig: i32) -> Result<()> {
        if !self.is_running() {
            bail!("daemon is not running");
        }
        // Our own child, not yet reaped: the pid is still its.
        let pid = self.pid().context("no child")?;
        crate::send_signal(pid, sig).with_context(|| format!("kill({pid}, {sig})"))
    }

    /// SIGTERM, then waits up to 10 s (SIGKILL after that). Returns the exit
    /// status. The data plane stays attached (that is the contract).
    pub fn stop(&mut self) -> ExitStatus {
        if self.is_running() {
            let _ = self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.try_wait().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill9()
    }

    /// SIGKILL (if still running) and reap. Returns the exit status.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(s) = self.try_wait() {
            return s;
        }
        let c = self.child.as_mut().expect("child present until drop");
        let _ = c.kill();
        let s = c.wait().expect("wait for the firewall daemon");
        self.exit = Some(s);
        s
    }

    /// `firewall --pin-dir <this pin dir> ARGS...` inside the daemon's namespace.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli_cmd(nsenter_cmd(&self.ns, &self.bin), &self.pin_dir, args)
    }

    /// Stops the daemon if needed, runs `firewall detach` and removes the pin
    /// dir. Idempotent; also done on drop. Returns an error describing what
    /// could not be cleaned.
    pub fn cleanup(&mut self) -> Result<()> {
        if self.cleaned {
            return Ok(());
        }
        self.cleaned = true;
        if self.child.is_some() {
            self.kill9();
        }
        let mut problems = Vec::new();
        if self.pin_dir.exists() {
            // Detach inside the namespace if it still exists (interface names
            // resolve there), else from the host.
            let ns_alive = Path::new(&netns_path(&self.ns)).exists();
            let cmd = if ns_alive {
                nsenter_cmd(&self.ns, &self.bin)
            } else {
                Command::new(&self.bin)
            };
            let o = cli_cmd(cmd, &self.pin_dir, &["detach"]);
            if !o.status.success() {
                problems.push(format!(
                    "firewall detach: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            if self.pin_dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(&self.pin_dir) {
                    problems.push(format!("remove {}: {e}", self.pin_dir.display()));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("{}", problems.join("; "))
        }
    }
}

impl Drop for FirewallDaemon {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            let tail = |s: String| {
                let start = s.len().saturating_sub(4000);
                let start = (start..s.len())
                    .find(|i| s.is_char_boundary(*i))
                    .unwrap_or(0);
                s[start..].to_string()
            };
            eprintln!(
                "--- firewall daemon stderr (tail) ---\n{}\n--- firewall daemon stdout (tail) ---\n{}\n--- logs kept in {} ---",
                tail(self.stderr()),
                tail(self.stdout()),
                self.log_dir.display()
            );
        }
        if let Err(e) = self.cleanup() {
            eprintln!("warning: firewall daemon cleanup: {e:#}");
        }
        if !panicking {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}
