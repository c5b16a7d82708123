//! Small helpers shared by the end-to-end tests.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::Output,
};

use serde_json::Value;

use crate::FirewallDaemon;

/// An address literal of a test (panics on a typo).
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Write a policy file into a fresh temporary directory.
pub fn policy_file(toml: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fw-policy-{}", crate::unique_id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join("policy.toml");
    std::fs::write(&p, toml).expect("writing policy");
    p
}

/// Run a CLI command against the daemon's pins and require success.
pub fn ok(fw: &FirewallDaemon, args: &[&str]) -> String {
    let out = fw.cli(args);
    assert!(
        out.status.success(),
        "firewall {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A CLI command's stdout as JSON.
pub fn json(fw: &FirewallDaemon, args: &[&str]) -> Value {
    let s = ok(fw, args);
    serde_json::from_str(&s)
        .unwrap_or_else(|e| panic!("firewall {args:?}: not one JSON document ({e}):\n{s}"))
}

/// Packets counted under a verdict, as `stats --json` shows them.
pub fn verdict(fw: &FirewallDaemon, name: &str) -> u64 {
    json(fw, &["stats", "--json"])["verdicts"][name]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no verdict {name} in stats --json"))
}

/// The `top --json` row of a prefix.
pub fn top_row(fw: &FirewallDaemon, prefix: &str) -> Option<Value> {
    json(fw, &["top", "-n", "100000", "--json"])
        .as_array()?
        .iter()
        .find(|r| r["prefix"] == prefix && r.get("rule").is_none())
        .cloned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// `ip -d link show dev IF` inside a namespace: shows an attached XDP
/// program as `prog/xdp`.
pub fn link_details(ns: &str, ifname: &str) -> String {
    let out = crate::nsenter_cmd(ns, "ip")
        .args(["-d", "link", "show", "dev", ifname])
        .output()
        .expect("running ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `expected` within `pct` percent.
pub fn within(got: u64, expected: f64, pct: f64) -> bool {
    (got as f64 - expected).abs() <= expected * pct / 100.0
}

/// `GET /metrics` from inside the gateway namespace (the listener is bound
/// to that namespace's loopback).
pub fn scrape(gw_path: &str, port: u16) -> String {
    use std::io::{Read, Write};
    crate::in_netns(gw_path, move || {
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting to /metrics");
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).expect("reading /metrics");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        body
    })
}

/// The value of one sample, e.g. `firewall_packets_total{verdict="passed"}`.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// UDP flows sent in the background, each on its own thread (see
/// `crate::send_udp`); `join` returns how many each one sent.
pub struct Flows(Vec<std::thread::JoinHandle<u64>>);

impl Flows {
    /// Start one flow per `(namespace path, source, destination, packets/s)`,
    /// all lasting `duration`.
    pub fn start(flows: &[(&str, &str, SocketAddr, u64)], duration: std::time::Duration) -> Flows {
        Flows(
            flows
                .iter()
                .map(|&(ns, src, dst, pps)| {
                    let (ns, src) = (
                        ns.to_string(),
                        src.parse::<IpAddr>().expect("source address"),
                    );
                    std::thread::spawn(move || crate::send_udp(&ns, Some(src), dst, pps, duration))
                })
                .collect(),
        )
    }

    pub fn join(self) -> Vec<u64> {
        self.0
            .into_iter()
            .map(|h| h.join().expect("sender thread"))
            .collect()
    }
}

/// Sends `n` UDP frames from the attacker, each from its own forged source
/// (100.64.0.0 + i), as fast as the raw socket takes them, for at most
/// `deadline`. Returns the frames sent and the time taken.
pub fn spoofed_flood(
    sb: &crate::Sandbox,
    n: u32,
    deadline: std::time::Duration,
) -> (u64, std::time::Duration) {
    use std::net::Ipv4Addr;
    let template = sb
        .attacker_frame(
            "100.64.0.1".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        )
        .udp(40000, 9000, 18)
        .build();
    let sock = crate::RawSocket::open(&sb.attacker_path(), &sb.attacker_if).expect("raw socket");
    let start = std::time::Instant::now();
    let mut frame = template.clone();
    // No UDP checksum: only the IP header changes per frame.
    frame[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let mut sent = 0;
    for i in 0..n {
        if start.elapsed() > deadline {
            break;
        }
        let src = Ipv4Addr::from(0x6440_0000u32 + i);
        frame[14 + 12..14 + 16].copy_from_slice(&src.octets());
        frame[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
        let c = crate::packet::checksum(&frame[14..34]);
        frame[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
        if sock.send(&frame).is_ok() {
            sent += 1;
        }
    }
    (sent, start.elapsed())
}
