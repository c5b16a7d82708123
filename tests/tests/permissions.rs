//! Root-only by default: what `firewall run` leaves reachable to others.
//! The pin directory (maps, links, controller state) is root's alone, mode
//! 0700, and the metrics endpoint listens on loopback only unless
//! `--metrics-addr` says otherwise.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    time::Duration,
};

use testkit::{FirewallDaemon, Sandbox};

const DEFAULT_METRICS_PORT: u16 = 9477;

/// Every entry under `dir` with its mode and owner.
fn walk(dir: &Path, out: &mut Vec<(String, u32, u32, u32)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        out.push((
            e.path().display().to_string(),
            md.permissions().mode() & 0o7777,
            md.uid(),
            md.gid(),
        ));
        if md.is_dir() {
            walk(&e.path(), out);
        }
    }
}

/// Listening TCP sockets of `pid`'s network namespace on `port`, from
/// /proc/<pid>/net/tcp and tcp6: (address as printed by the kernel, family).
fn listeners(pid: u32, port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ...; st 0A is LISTEN.
            if f.len() < 4 || f[3] != "0A" {
                continue;
            }
            let Some((addr, p)) = f[1].split_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16) != Ok(port) {
                continue;
            }
            let shown = if v6 {
                format!("[{addr}]")
            } else {
                // The kernel prints the address's bytes as one native u32.
                let raw = u32::from_str_radix(addr, 16).unwrap();
                Ipv4Addr::from(raw.to_ne_bytes()).to_string()
            };
            out.push(shown);
        }
    }
    out
}

#[test]
fn pin_dir_is_roots_alone_and_metrics_listen_on_loopback() {
    if !testkit::privileged("pin_dir_is_roots_alone_and_metrics_listen_on_loopback") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    // No --metrics-addr: the default is what is checked.
    let fw = FirewallDaemon::start(&sb.gw_ns, &["--iface", &sb.gw_attacker_if]);

    // The pin directory: mode 0700, root:root.
    let md = std::fs::metadata(fw.pin_dir()).unwrap();
    let mode = md.permissions().mode() & 0o7777;
    let mut entries = Vec::new();
    walk(fw.pin_dir(), &mut entries);
    for (path, mode, uid, gid) in &entries {
        println!("{mode:04o} {uid}:{gid} {path}");
    }
    assert_eq!(
        mode,
        0o700,
        "{} has mode {mode:04o}, expected 0700",
        fw.pin_dir().display()
    );
    assert_eq!((md.uid(), md.gid()), (0, 0), "pin dir owner");
    // Inside it: root's, and nothing writable by group or others.
    for (path, mode, uid, _) in &entries {
        assert_eq!(*uid, 0, "{path} is not owned by root");
        assert_eq!(mode & 0o022, 0, "{path} has mode {mode:04o}");
    }

    // The metrics endpoint: the start event says 127.0.0.1:9477 ...
    let start = fw
        .events()
        .into_iter()
        .find(|e| e["event"] == "start")
        .expect("a start event");
    assert_eq!(
        start["metrics_addr"], "127.0.0.1:9477",
        "start event: {start}"
    );
    // ... the kernel agrees: the only listener on the port is loopback ...
    let pid = fw.pid().expect("daemon pid");
    let l = listeners(pid, DEFAULT_METRICS_PORT);
    assert_eq!(
        l,
        vec!["127.0.0.1".to_string()],
        "listeners on port {DEFAULT_METRICS_PORT} in the gateway namespace"
    );
    // ... it answers there ...
    let body = testkit::in_netns(&sb.gw_path(), || {
        let addr: SocketAddr = ([127, 0, 0, 1], DEFAULT_METRICS_PORT).into();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    });
    assert!(
        body.starts_with("HTTP/1") && body.contains("firewall_packets_total"),
        "GET /metrics on loopback: {body:.300}"
    );
    // ... and not on the gateway's address, seen from the attacker's side.
    let gw: SocketAddr = (testkit::GW_ATTACKER_V4, DEFAULT_METRICS_PORT).into();
    let r = testkit::in_netns(&sb.attacker_path(), || {
        TcpStream::connect_timeout(&gw, Duration::from_secs(3))
    });
    assert!(
        r.is_err(),
        "the metrics port answered on {gw} from the attacker's namespace"
    );
}
