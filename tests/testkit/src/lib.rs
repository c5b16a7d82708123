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
#[cfg(feature = "dataplane")]
pub mod old_maps;
pub mod packet;
pub mod sandbox;
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

use std::ffi::CString;
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

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn is_bpffs(path: &str) -> bool {
    let Ok(c) = CString::new(path) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed, properly sized struct.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Mounts bpffs at /sys/fs/bpf unless it is there. Returns whether it is mounted.
pub fn ensure_bpffs() -> bool {
    const DIR: &str = "/sys/fs/bpf";
    if is_bpffs(DIR) {
        return true;
    }
    let _ = std::fs::create_dir_all(DIR);
    let src = CString::new("bpf").unwrap();
    let dir = CString::new(DIR).unwrap();
    // SAFETY: plain mount(2) with valid C strings and no data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dir.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    rc == 0 && is_bpffs(DIR)
}

fn probe_privileges() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
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
        // SAFETY: unshare only affects this short-lived thread.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
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

/// Creates (and closes) a one-entry BPF array map.
fn bpf_map_probe() -> std::io::Result<()> {
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size,
    // max_entries, then fields we leave zero.
    let mut attr = [0u32; 32];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4;
    attr[2] = 4;
    attr[3] = 1;
    // SAFETY: bpf(BPF_MAP_CREATE) reads `size` bytes from attr, which is that big.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, // BPF_MAP_CREATE
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a descriptor we own.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
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
