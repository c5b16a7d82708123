//! Entering network namespaces: from a thread (`in_netns`) and from a child
//! process (`nsenter_cmd`), plus small helpers that need the namespace.

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `/run/netns/NAME` for a namespace name; a path (starting with `/`) is
/// returned unchanged.
pub fn netns_path(ns: &str) -> String {
    if ns.starts_with('/') {
        ns.to_string()
    } else {
        format!("/run/netns/{ns}")
    }
}

/// Runs `f` on a fresh thread that first joins the network namespace at
/// `ns_path` (a `/run/netns/NAME` path, or a bare name). Only that thread
/// changes namespace; sockets it creates stay in that namespace for their
/// whole life, so they can be returned and used from any thread.
///
/// Panics if the namespace cannot be entered; a panic in `f` is propagated.
pub fn in_netns<T: Send>(ns_path: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = netns_path(ns_path);
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            enter_netns(&path).unwrap_or_else(|e| panic!("{e:#}"));
            f()
        });
        match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

/// Moves the calling thread into the network namespace at `path`.
fn enter_netns(path: &str) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("open netns {path}"))?;
    rustix::thread::move_into_link_name_space(
        f.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("setns({path})"))
}

/// `nsenter --net=/run/netns/NS PROGRAM`: a command that runs in the network
/// namespace `ns` (name or path) while keeping the host's mounts, so bpffs
/// pins under /sys/fs/bpf stay visible (unlike `ip netns exec`, which
/// remounts /sys). nsenter execs the program, so the child pid is the
/// program's pid.
pub fn nsenter_cmd(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns_path(ns)))
        .arg("--")
        .arg(program);
    c
}

/// Like `Command::output`, but kills the child after `timeout`
/// (then the error says so). Stdin is null.
pub fn output_timeout(cmd: &mut Command, timeout: Duration) -> std::io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let tout = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let terr = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{cmd:?} did not finish within {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: tout.join().unwrap_or_default(),
        stderr: terr.join().unwrap_or_default(),
    })
}

/// Runs `cmd` (30 s limit) and fails with its stderr unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let o = output_timeout(cmd, Duration::from_secs(30)).with_context(|| format!("{cmd:?}"))?;
    if !o.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The interface index of `ifname` inside the namespace.
pub fn if_index(ns_path: &str, ifname: &str) -> Result<u32> {
    let name = CString::new(ifname)?;
    let idx = in_netns(ns_path, move || {
        // SAFETY: valid C string.
        unsafe { libc::if_nametoindex(name.as_ptr()) }
    });
    if idx == 0 {
        bail!("no interface {ifname} in {ns_path}");
    }
    Ok(idx)
}

/// The MAC address of `ifname` inside the namespace (ioctl SIOCGIFHWADDR;
/// /sys/class/net would show the host's namespace).
pub fn mac_address(ns_path: &str, ifname: &str) -> Result<[u8; 6]> {
    if ifname.len() >= 16 {
        bail!("interface name too long: {ifname}");
    }
    let name = ifname.to_string();
    in_netns(ns_path, move || -> Result<[u8; 6]> {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")
            .or_else(|_| std::net::UdpSocket::bind("[::]:0"))
            .context("socket for ioctl")?;
        // struct ifreq: 16-byte name, then the union (sockaddr for HWADDR).
        let mut ifr = [0u8; 40];
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: ifr is larger than struct ifreq; the kernel writes a sockaddr at 16.
        let rc =
            unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR as _, ifr.as_mut_ptr()) };
        if rc != 0 {
            return Err(anyhow!(
                "SIOCGIFHWADDR {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&ifr[18..24]);
        Ok(mac)
    })
}

/// Writes a sysctl under /proc/sys (e.g. `net/ipv6/conf/all/accept_dad`)
/// from inside the namespace.
pub(crate) fn sysctl_in(ns_path: &str, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    let value = value.to_string();
    in_netns(ns_path, move || std::fs::write(&path, value))
        .with_context(|| format!("sysctl {key} in {ns_path}"))
}

/// Reads a sysctl from inside the namespace.
pub fn sysctl_get(ns_path: &str, key: &str) -> Result<String> {
    let path = format!("/proc/sys/{key}");
    in_netns(ns_path, move || std::fs::read_to_string(&path))
        .map(|s| s.trim().to_string())
        .with_context(|| format!("read sysctl {key} in {ns_path}"))
}
