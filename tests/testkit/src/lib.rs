//! Test support for the firewall: network-namespace sandboxes, traffic
//! generators and receivers, raw frame builders, and a driver for the real
//! `firewall` binary.
//!
//! End-to-end tests follow this shape (drop order matters: declare the
//! sandbox first so the daemon is dropped, and detached, before the
//! namespaces disappear):
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! if !testkit::privileged("flood_is_limited") { return Ok(()); }
//! let sb = testkit::Sandbox::new()?;
//! let fw = testkit::FirewallDaemon::start(&sb.gw_ns, &["--iface", &sb.gw_attacker_if]);
//! let sink = testkit::UdpSink::bind(&sb.gw_path(), "198.51.100.1:9000".parse()?);
//! testkit::send_udp(&sb.attacker_path(), None, sink.addr(), 5000, std::time::Duration::from_secs(1));
//! println!("{}", String::from_utf8_lossy(&fw.cli(&["stats"]).stdout));
//! # Ok(()) }
//! ```

#[cfg(feature = "dataplane")]
pub mod challenge_fixtures;
pub mod daemon;
pub mod e2e;
pub mod firewall;
#[cfg(feature = "dataplane")]
pub mod fixtures;
pub mod fleet;
#[cfg(feature = "dataplane")]
pub mod harness;
pub mod netns;
pub mod packet;
pub mod sandbox;
#[cfg(feature = "dataplane")]
pub mod stage;
pub mod traffic;
#[cfg(feature = "dataplane")]
pub mod web;

#[cfg(test)]
mod selftest;

pub use daemon::DaemonBuilder;
pub use firewall::{cli, cli_in, firewall_bin, unique_pin_dir, variant_bin, FirewallDaemon};
pub use netns::{
    if_index, in_netns, mac_address, netns_path, nsenter_cmd, output_timeout, sysctl_get,
};
pub use sandbox::*;
pub use traffic::{
    send_raw, send_udp, send_udp_burst, Capture, CapturedFrame, RawSocket, SinkCounts, UdpSink,
};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Per-process counter for unique names (namespaces, pin dirs, log dirs).
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `<pid>-<n>`: unique within this machine while this process lives. Names
/// built from it start with a fixed prefix and embed the pid, so
/// [`cleanup_stale`] can tell leftovers of dead processes.
pub(crate) fn unique_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// True when `CI` says we run under continuous integration.
pub fn under_ci() -> bool {
    std::env::var("CI")
        .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
        .unwrap_or(false)
}

/// Returns `None` when privileged tests can run here (root, namespaces,
/// BPF maps, bpffs at /sys/fs/bpf, `ip` and `nsenter`), else the reason.
/// Mounts bpffs at /sys/fs/bpf when it is missing and we are root.
/// The answer is computed once per process.
pub fn privilege_problem() -> Option<String> {
    static ANSWER: OnceLock<Option<String>> = OnceLock::new();
    ANSWER
        .get_or_init(|| {
            let problem = probe_privileges();
            if problem.is_none() {
                // Leftovers of crashed runs only cost memory, but clean them
                // once per process before creating more.
                cleanup_stale();
            }
            problem
        })
        .clone()
}

/// Gate for privileged tests: `if !testkit::privileged("name") { return; }`.
///
/// Returns true when the test can run. Otherwise, under `CI=true` it panics
/// with the reason (privileged tests never skip in CI); elsewhere it prints
/// `SKIP <test>: <reason>` to stderr and returns false.
pub fn privileged(test: &str) -> bool {
    match privilege_problem() {
        None => true,
        Some(reason) if under_ci() => {
            panic!("privileged test {test} cannot run under CI=true: {reason}")
        }
        Some(reason) => {
            eprintln!("SKIP {test}: {reason}");
            false
        }
    }
}

/// `BPF_FS_MAGIC` of `include/uapi/linux/magic.h`.
const BPF_FS_MAGIC: rustix::fs::FsWord = 0xcafe4a11;

fn is_bpffs(path: &str) -> bool {
    rustix::fs::statfs(path).is_ok_and(|st| st.f_type == BPF_FS_MAGIC)
}

/// Mounts bpffs at /sys/fs/bpf unless it is there. Returns whether it is mounted.
pub fn ensure_bpffs() -> bool {
    const DIR: &str = "/sys/fs/bpf";
    if is_bpffs(DIR) {
        return true;
    }
    let _ = std::fs::create_dir_all(DIR);
    let mounted = rustix::mount::mount("bpf", DIR, "bpf", rustix::mount::MountFlags::empty(), None);
    mounted.is_ok() && is_bpffs(DIR)
}

/// kill(2) with a signal number as `libc` spells it.
pub(crate) fn send_signal(pid: u32, sig: i32) -> std::io::Result<()> {
    use rustix::process::{kill_process, Pid, Signal};
    let invalid = || std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let pid = Pid::from_raw(pid as i32).ok_or_else(invalid)?;
    let sig = Signal::from_named_raw(sig).ok_or_else(invalid)?;
    Ok(kill_process(pid, sig)?)
}

fn probe_privileges() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root (network namespaces, XDP, BPF maps)".into());
    }
    for (prog, arg, pkg) in [
        ("ip", "-V", "iproute2"),
        ("nsenter", "--version", "util-linux"),
    ] {
        match std::process::Command::new(prog)
            .arg(arg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
        {
            Ok(s) if s.success() => {}
            _ => {
                return Some(format!(
                    "`{prog}` not found (install {pkg}; `cargo xtask setup` does)"
                ))
            }
        }
    }
    // Creating a network namespace: try it on a throwaway thread.
    let ns = std::thread::spawn(|| {
        // SAFETY: a new network namespace only affects this short-lived
        // thread; file descriptor tables stay shared (no CLONE_FILES).
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
    })
    .join();
    match ns {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Some(format!("cannot create a network namespace: {e}")),
        Err(_) => return Some("cannot create a network namespace: probe thread panicked".into()),
    }
    if let Err(e) = bpf_map_probe() {
        return Some(format!("cannot create a BPF map: {e}"));
    }
    if !ensure_bpffs() {
        return Some("bpffs is not mounted at /sys/fs/bpf and mounting it failed".into());
    }
    None
}

/// Creates (and closes) a one-entry BPF array map, through aya's probe.
fn bpf_map_probe() -> std::io::Result<()> {
    match aya::sys::is_map_supported(aya::maps::MapType::Array) {
        Ok(true) => Ok(()),
        Ok(false) => Err(std::io::Error::other("array maps are not supported")),
        Err(e) => Err(e.io_error),
    }
}

fn pid_alive(pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    // Signal 0 only checks for existence; EPERM means it exists.
    !matches!(rustix::process::test_kill_process(pid), Err(e) if e == rustix::io::Errno::SRCH)
}

/// Parses the pid out of `<prefix><pid>-<n>...`.
fn owner_pid(name: &str, prefix: &str) -> Option<i32> {
    let rest = name.strip_prefix(prefix)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// Removes network namespaces (`fw<pid>-...`), bpffs pin dirs
/// (`/sys/fs/bpf/fwt<pid>-...`) and log dirs left by test processes that are
/// no longer alive. Safe to call concurrently with running tests: anything
/// owned by a live pid is left alone. Returns the names removed.
pub fn cleanup_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let me = std::process::id() as i32;
    let stale = |pid: i32| pid != me && !pid_alive(pid);

    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten().take(10_000) {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner_pid(&name, sandbox::NS_PREFIX).is_some_and(stale) {
                let _ = output_timeout(
                    std::process::Command::new("ip").args(["netns", "del", &name]),
                    std::time::Duration::from_secs(10),
                );
                removed.push(name);
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") {
        for e in dir.flatten().take(10_000) {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner_pid(&name, firewall::PIN_PREFIX).is_some_and(stale) {
                // Removing the pins drops the last reference to the XDP links.
                let _ = std::fs::remove_dir_all(e.path());
                removed.push(e.path().display().to_string());
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        for e in dir.flatten().take(100_000) {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner_pid(&name, firewall::LOG_PREFIX).is_some_and(stale) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    removed
}

#[cfg(test)]
mod unit {
    #[test]
    fn owner_pid_parses() {
        assert_eq!(super::owner_pid("fw123-4-gw", "fw"), Some(123));
        assert_eq!(super::owner_pid("fwt77-0", "fwt"), Some(77));
        assert_eq!(super::owner_pid("fwx-1", "fw"), None);
        assert_eq!(super::owner_pid("other", "fw"), None);
    }

    #[test]
    fn unique_ids_differ() {
        assert_ne!(super::unique_id(), super::unique_id());
    }
}
