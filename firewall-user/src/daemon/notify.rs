//! systemd's readiness protocol (sd_notify(3)) for `Type=notify` units: one
//! datagram per state change to the unix socket named by `$NOTIFY_SOCKET`
//! (a path, or `@name` for an abstract socket). Without the variable (not
//! under systemd) every call does nothing.
//!
//! - `READY=1` once the program is attached and the policy applied;
//! - `RELOADING=1` (with `MONOTONIC_USEC`) and `READY=1` around a reload
//!   asked for with SIGHUP (`systemctl reload`);
//! - `STOPPING=1` when the controller exits (the data plane stays).
//!
//! Each message carries a `STATUS=` line for `systemctl status`.

use std::{
    ffi::OsString,
    os::unix::net::{SocketAddr, UnixDatagram},
    sync::atomic::{AtomicBool, Ordering},
};

use crate::clock::mono_ns;

fn socket() -> Option<OsString> {
    std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty())
}

/// Send one notification; a failure is reported once and otherwise ignored
/// (the firewall does not depend on its supervisor).
pub fn send(msg: &str) {
    let Some(path) = socket() else { return };
    if let Err(e) = try_send(&path, msg) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            eprintln!(
                "warning: cannot notify systemd at NOTIFY_SOCKET={}: {e}",
                path.to_string_lossy()
            );
        }
    }
}

fn try_send(path: &OsString, msg: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(std::path::Path::new(path))?,
    };
    let sock = UnixDatagram::unbound()?;
    let n = sock.send_to_addr(msg.as_bytes(), &addr)?;
    if n != msg.len() {
        return Err(std::io::Error::other("short write"));
    }
    Ok(())
}

/// `READY=1`: attached on `ifaces`, the policy of `generation` in force.
pub fn ready(ifaces: &[String], monitor: bool, generation: u32) {
    send(&format!(
        "READY=1\nSTATUS={} on {}, policy generation {generation}",
        if monitor { "monitoring" } else { "enforcing" },
        ifaces.join(", ")
    ));
}

/// `RELOADING=1`, run the reload, then `READY=1`.
pub fn around_reload<T>(reload: impl FnOnce() -> T) -> T {
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the policy",
        mono_ns() / 1000
    ));
    let r = reload();
    send("READY=1\nSTATUS=policy reloaded");
    r
}

/// `STOPPING=1`: the controller exits; the data plane stays attached.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=controller stopping; the data plane stays attached");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("fw-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("notify.sock");
        let _ = std::fs::remove_file(&p);
        let rx = UnixDatagram::bind(&p).unwrap();
        try_send(&p.clone().into_os_string(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("fw-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        try_send(&format!("@{name}").into(), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
