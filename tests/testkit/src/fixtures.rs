//! The fixture table (Katran style): frame in, expected return value and
//! counter deltas out, run through BPF_PROG_TEST_RUN on XDP and TC. The same
//! table runs on the host kernel (`tests/tests/fixtures.rs`) and inside the
//! kernel matrix's VMs (`fixture-runner`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use firewall_common::Verdict;
use firewall_user::policy::{self, Policy};

use crate::{
    harness::{delta, Harness, Hook},
    packet::{self, tcp_flags, Frame, Ipv6Ext},
};

/// The policy the table is written against.
pub const POLICY: &str = r#"
allow = ["192.0.2.0/28", "2001:db8:a::/48", "192.0.2.100", "2001:db8:a0::1"]
block = ["203.0.113.0/24", "2001:db8:bad::/48", "203.0.114.7", "2001:db8:bad0::7", "192.0.2.3"]

[defaults]
rate = 1
burst = 2

[[limit]]
cidr = "198.51.100.128/25"
rate = 10
burst = 5

[[rule]]
name = "dns"
protocol = "udp"
dst_port = 53
rate = 1
burst = 1

[[rule]]
name = "ssh-syn"
protocol = "tcp"
dst_port = 22
syn_only = true
rate = 1
burst = 1
"#;

pub fn policy() -> Policy {
    policy::parse(POLICY).expect("fixture policy is valid").0
}

/// One row: `frame` is run `repeat` times (back to back, well within the
/// refill time of one token: the limits are a few packets a second, so a
/// clock tick that falls within a row, even on a slow emulated guest, adds
/// no token), and the counters must move by `expect`.
pub struct Fixture {
    pub name: String,
    pub frame: Vec<u8>,
    pub repeat: u32,
    /// Packets expected per verdict; every other verdict must not move.
    pub expect: Vec<(Verdict, u64)>,
    /// The kernel's skb test run refuses frames whose IP ethertype is not
    /// followed by a whole IP header (EINVAL), so TC cannot be shown them
    /// this way; for TC the row then checks the refusal and that nothing
    /// was counted.
    pub skb_refuses: bool,
}

impl Fixture {
    fn new(
        name: impl Into<String>,
        frame: Vec<u8>,
        repeat: u32,
        expect: &[(Verdict, u64)],
    ) -> Self {
        Fixture {
            name: name.into(),
            frame,
            repeat,
            expect: expect.to_vec(),
            skb_refuses: false,
        }
    }

    fn skb_refuses(mut self) -> Self {
        self.skb_refuses = true;
        self
    }

    /// The verdict of the last run decides the return value.
    fn last_drops(&self) -> bool {
        // Rows list the verdict of the last packet last.
        self.expect.last().map(|(v, _)| v.drops()).unwrap_or(false)
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

const GW4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn dst_for(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V4(_) => IpAddr::V4(GW4),
        IpAddr::V6(_) => v6("2001:db8:ffff::1"),
    }
}

fn udp(src: IpAddr, dport: u16) -> Frame {
    Frame::ip(src, dst_for(src)).udp(40000, dport, 18)
}

/// Encapsulations every verdict is checked under.
type Wrap = fn(Frame) -> Frame;

fn encaps() -> Vec<(&'static str, Wrap)> {
    vec![
        ("untagged", |f| f),
        ("802.1Q", |f| f.vlan(100)),
        ("802.1ad+802.1Q", |f| f.qinq(100, 200)),
    ]
}

use Verdict::*;

/// Every verdict, for IPv4 and IPv6, untagged and with one and two tags.
fn verdict_rows() -> Vec<Fixture> {
    let mut rows = Vec::new();
    for (i, (enc, wrap)) in encaps().into_iter().enumerate() {
        let i = i as u8;
        let fams: [(&str, IpAddr, IpAddr, IpAddr, IpAddr); 2] = [
            (
                "IPv4",
                v4(198, 51, 100, 10 + i),
                v4(192, 0, 2, 5 + i),
                v4(203, 0, 113, 9 + i),
                v4(198, 51, 100, 20 + i),
            ),
            (
                "IPv6",
                v6(&format!("2001:db8:1:{i}::10")),
                v6(&format!("2001:db8:a::{}", 5 + i)),
                v6(&format!("2001:db8:bad::{}", 9 + i)),
                v6(&format!("2001:db8:2:{i}::20")),
            ),
        ];
        for (fam, pass, allow, block, limited) in fams {
            rows.push(Fixture::new(
                format!("{fam} {enc}: within limit -> passed"),
                wrap(udp(pass, 9000)).build(),
                1,
                &[(Passed, 1)],
            ));
            rows.push(Fixture::new(
                format!("{fam} {enc}: allowlisted flood -> allowed"),
                wrap(udp(allow, 9000)).build(),
                50,
                &[(Allowed, 50)],
            ));
            rows.push(Fixture::new(
                format!("{fam} {enc}: blocklisted -> blocked"),
                wrap(udp(block, 9000)).build(),
                3,
                &[(Blocked, 3)],
            ));
            rows.push(Fixture::new(
                format!("{fam} {enc}: over burst 2 -> rate_limited"),
                wrap(udp(limited, 9000)).build(),
                5,
                &[(Passed, 2), (RateLimited, 3)],
            ));
        }
        rows.push(Fixture::new(
            format!("ARP {enc} -> passed"),
            wrap(Frame::arp_request(
                [2, 0, 0, 0, 0, 9],
                Ipv4Addr::new(198, 51, 100, 9),
                GW4,
            ))
            .build(),
            4,
            &[(Passed, 4)],
        ));
    }
    rows
}

/// Limit classes, rules, aggregation, fragments, other L4 and non-IP.
fn policy_rows() -> Vec<Fixture> {
    let tcp =
        |src: IpAddr, dport: u16, flags: u8| Frame::ip(src, dst_for(src)).tcp(40000, dport, flags);
    vec![
        Fixture::new(
            "limit class /25: burst 5 -> 5 passed then rate_limited",
            udp(v4(198, 51, 100, 200), 9000).build(),
            7,
            &[(Passed, 5), (RateLimited, 2)],
        ),
        Fixture::new(
            "rule dns: udp/53 uses its own bucket of burst 1",
            udp(v4(198, 51, 100, 50), 53).build(),
            3,
            &[(Passed, 1), (RateLimited, 2)],
        ),
        Fixture::new(
            "rule dns leaves the default bucket of the same source alone",
            udp(v4(198, 51, 100, 50), 54).build(),
            2,
            &[(Passed, 2)],
        ),
        Fixture::new(
            "rule ssh-syn: SYN to 22 limited to burst 1",
            tcp(v4(198, 51, 100, 51), 22, tcp_flags::SYN).build(),
            3,
            &[(Passed, 1), (RateLimited, 2)],
        ),
        Fixture::new(
            "rule ssh-syn: ACK to 22 is not a SYN (default bucket, burst 2)",
            tcp(v4(198, 51, 100, 51), 22, tcp_flags::ACK).build(),
            2,
            &[(Passed, 2)],
        ),
        Fixture::new(
            "rule ssh-syn: SYN+ACK to 22 is not a SYN",
            tcp(v4(198, 51, 100, 52), 22, tcp_flags::SYN | tcp_flags::ACK).build(),
            2,
            &[(Passed, 2)],
        ),
        Fixture::new(
            "rule ssh-syn: SYN to 23 is not the rule's port",
            tcp(v4(198, 51, 100, 53), 23, tcp_flags::SYN).build(),
            2,
            &[(Passed, 2)],
        ),
        Fixture::new(
            "UDP to 22, a TCP rule's port: no rule covers it, default bucket",
            udp(v4(198, 51, 100, 54), 22).build(),
            3,
            &[(Passed, 2), (RateLimited, 1)],
        ),
        Fixture::new(
            "IPv6 rule dns applies to IPv6 too",
            udp(v6("2001:db8:3::53"), 53).build(),
            2,
            &[(Passed, 1), (RateLimited, 1)],
        ),
        Fixture::new(
            "IPv6 /64 aggregation: ::1 takes the shared burst",
            udp(v6("2001:db8:4::1"), 9000).build(),
            2,
            &[(Passed, 2)],
        ),
        Fixture::new(
            "IPv6 /64 aggregation: ::2 in the same /64 finds it spent",
            udp(v6("2001:db8:4::2"), 9000).build(),
            1,
            &[(RateLimited, 1)],
        ),
        Fixture::new(
            "IPv4 /32: a neighbour has its own bucket",
            udp(v4(198, 51, 100, 90), 9000).build(),
            1,
            &[(Passed, 1)],
        ),
        Fixture::new(
            "IPv4 first fragment (MF) to udp/53: L4 read, rule applies",
            udp(v4(198, 51, 100, 60), 53)
                .with_ipv4(|ip| ip.flags = packet::IPV4_MF)
                .build(),
            2,
            &[(Passed, 1), (RateLimited, 1)],
        ),
        Fixture::new(
            "IPv4 later fragment: no L4 header to read, default bucket",
            Frame::ip(v4(198, 51, 100, 61), IpAddr::V4(GW4))
                .l4_raw(17, vec![0xab; 8])
                .with_ipv4(|ip| ip.frag_offset = 185)
                .build(),
            2,
            &[(Passed, 2)],
        ),
        Fixture::new(
            "IPv4 later fragment shorter than a TCP header is not malformed",
            Frame::ip(v4(198, 51, 100, 62), IpAddr::V4(GW4))
                .l4_raw(6, vec![1, 2, 3])
                .with_ipv4(|ip| ip.frag_offset = 3)
                .build(),
            1,
            &[(Passed, 1)],
        ),
        Fixture::new(
            "IPv6 fragment header, first fragment: rule applies",
            udp(v6("2001:db8:5::1"), 53)
                .with_ipv6(|ip| {
                    ip.ext = vec![Ipv6Ext::Fragment {
                        offset: 0,
                        more: true,
                        id: 7,
                    }]
                })
                .build(),
            2,
            &[(Passed, 1), (RateLimited, 1)],
        ),
        Fixture::new(
            "IPv6 hop-by-hop + destination options before UDP/53: rule applies",
            udp(v6("2001:db8:7::2"), 53)
                .with_ipv6(|ip| {
                    ip.ext = vec![Ipv6Ext::HopByHop(vec![0; 6]), Ipv6Ext::DestOpts(vec![0; 6])]
                })
                .build(),
            2,
            &[(Passed, 1), (RateLimited, 1)],
        ),
        Fixture::new(
            "ICMP echo from a known source -> default bucket",
            Frame::ip(v4(198, 51, 100, 63), IpAddr::V4(GW4))
                .icmp_echo(1, 1)
                .build(),
            3,
            &[(Passed, 2), (RateLimited, 1)],
        ),
        Fixture::new(
            "LLDP -> passed",
            Frame::raw(packet::ETH_P_LLDP, vec![0; 46]).build(),
            2,
            &[(Passed, 2)],
        ),
        Fixture::new(
            "unknown ethertype -> passed",
            Frame::raw(0x88b5, vec![0; 46]).build(),
            1,
            &[(Passed, 1)],
        ),
    ]
}

/// Frames that must be counted `malformed` and dropped, never aborted.
fn malformed_rows() -> Vec<Fixture> {
    let src = v4(198, 51, 100, 70);
    let good = || udp(src, 9000);
    let tcp = || Frame::ip(src, IpAddr::V4(GW4)).tcp(40000, 80, tcp_flags::SYN);
    let mut eth_only = good().build();
    eth_only.truncate(14);
    let mut vlan_cut = good().vlan(7).build();
    vlan_cut.truncate(16);
    let mut ip_cut = good().build();
    ip_cut.truncate(14 + 10);
    let mut v6_cut = udp(v6("2001:db8:6::1"), 9000).build();
    v6_cut.truncate(14 + 20);
    let mut tcp_cut = tcp().build();
    tcp_cut.truncate(14 + 20 + 10);
    let mut udp_cut = good().build();
    udp_cut.truncate(14 + 20 + 4);
    let rows: Vec<(&str, Vec<u8>)> = vec![
        (
            "Ethernet header only (IPv4 ethertype, no IP header)",
            eth_only,
        ),
        ("802.1Q tag cut short", vlan_cut),
        (
            "three VLAN tags",
            good().tag(0x88a8, 1).tag(0x8100, 2).tag(0x8100, 3).build(),
        ),
        ("IPv4 header cut after 10 bytes", ip_cut),
        (
            "IPv4 IHL < 5",
            good().with_ipv4(|ip| ip.ihl = Some(4)).build(),
        ),
        (
            "IPv4 IHL past the end of the frame",
            good()
                .with_ipv4(|ip| ip.ihl = Some(15))
                .truncate(14 + 40)
                .build(),
        ),
        (
            "IPv4 total length longer than the frame",
            good().with_ipv4(|ip| ip.total_len = Some(1400)).build(),
        ),
        (
            "IPv4 total length shorter than its header",
            good().with_ipv4(|ip| ip.total_len = Some(12)).build(),
        ),
        (
            "IPv4 version field says 6",
            good().with_ipv4(|ip| ip.version = 6).build(),
        ),
        (
            "IPv4 total length ends inside the TCP header",
            tcp().with_ipv4(|ip| ip.total_len = Some(30)).build(),
        ),
        ("truncated TCP header", tcp_cut),
        (
            "TCP data offset < 5",
            tcp()
                .with_l4(|l4| {
                    if let packet::L4::Tcp(t) = l4 {
                        t.data_offset = Some(4)
                    }
                })
                .build(),
        ),
        (
            "TCP data offset past the segment",
            tcp()
                .with_l4(|l4| {
                    if let packet::L4::Tcp(t) = l4 {
                        t.data_offset = Some(15)
                    }
                })
                .build(),
        ),
        ("truncated UDP header", udp_cut),
        ("truncated IPv6 header", v6_cut),
        (
            "IPv6 payload length longer than the frame",
            udp(v6("2001:db8:6::2"), 9000)
                .with_ipv6(|ip| ip.payload_len = Some(1400))
                .build(),
        ),
        (
            "IPv6 version field says 4",
            udp(v6("2001:db8:6::3"), 9000)
                .with_ipv6(|ip| ip.version = 4)
                .build(),
        ),
        (
            "IPv6 extension header running past the payload",
            udp(v6("2001:db8:6::4"), 9000)
                .with_ipv6(|ip| ip.ext = vec![Ipv6Ext::HopByHop(vec![0; 6])])
                .with_ipv6(|ip| ip.payload_len = Some(8 + 4))
                .truncate(14 + 40 + 12)
                .build(),
        ),
    ];
    let refused = [
        "Ethernet header only (IPv4 ethertype, no IP header)",
        "IPv4 header cut after 10 bytes",
        "truncated IPv6 header",
    ];
    rows.into_iter()
        .map(|(n, f)| {
            let row = Fixture::new(format!("malformed: {n}"), f, 2, &[(Malformed, 2)]);
            if refused.contains(&n) {
                row.skb_refuses()
            } else {
                row
            }
        })
        .collect()
}

/// Exact hosts (/32, /128) live in hashes looked up before everything else;
/// the allowlist still wins over them.
fn host_rows() -> Vec<Fixture> {
    let mut rows = Vec::new();
    for (i, (enc, wrap)) in encaps().into_iter().enumerate() {
        let i = i as u8;
        for (fam, allow, block, neighbour) in [
            (
                "IPv4",
                v4(192, 0, 2, 100),
                v4(203, 0, 114, 7),
                v4(203, 0, 114, 8 + i),
            ),
            (
                "IPv6",
                v6("2001:db8:a0::1"),
                v6("2001:db8:bad0::7"),
                v6(&format!("2001:db8:bad0:{i}::8")),
            ),
        ] {
            rows.push(Fixture::new(
                format!("{fam} {enc}: exact allowed host flood -> allowed"),
                wrap(udp(allow, 53)).build(),
                20,
                &[(Allowed, 20)],
            ));
            rows.push(Fixture::new(
                format!("{fam} {enc}: exact blocked host -> blocked"),
                wrap(udp(block, 53)).build(),
                4,
                &[(Blocked, 4)],
            ));
            rows.push(Fixture::new(
                format!("{fam} {enc}: the blocked host's neighbour -> passed"),
                wrap(udp(neighbour, 9000)).build(),
                1,
                &[(Passed, 1)],
            ));
        }
    }
    rows.push(Fixture::new(
        "blocked host inside an allowed prefix: allow wins -> allowed",
        udp(v4(192, 0, 2, 3), 9000).build(),
        3,
        &[(Allowed, 3)],
    ));
    rows
}

pub fn table() -> Vec<Fixture> {
    let mut t = verdict_rows();
    t.extend(host_rows());
    t.extend(policy_rows());
    t.extend(malformed_rows());
    t
}

/// Outcome of one fixture.
pub struct Outcome {
    pub name: String,
    pub error: Option<String>,
}

/// Run the whole table through `hook` on a fresh load; one outcome a row,
/// then the SYN challenge's scenarios (`challenge_fixtures`).
pub fn run_table(hook: Hook) -> Result<Vec<Outcome>> {
    let mut out = run_rows(hook)?;
    out.extend(crate::challenge_fixtures::run(hook)?);
    Ok(out)
}

fn run_rows(hook: Hook) -> Result<Vec<Outcome>> {
    let mut h = Harness::new(&policy())?;
    let mut out = Vec::new();
    for f in table() {
        let before = h.counters();
        if hook == Hook::Tc && f.skb_refuses {
            let refused = h.run(hook, &f.frame, 1).is_err();
            let moved = delta(&before, &h.counters()).iter().any(|(p, _)| *p != 0);
            let error = match (refused, moved) {
                (true, false) => None,
                (false, _) => Some("the kernel ran a frame its skb test run is known to refuse: make this row a normal one".into()),
                (true, true) => Some("refused, yet counters moved".into()),
            };
            out.push(Outcome {
                name: format!("{} (TC: refused by the kernel)", f.name),
                error,
            });
            continue;
        }
        let got = h.run(hook, &f.frame, 1);
        let mut error = None;
        // `repeat` runs are separate calls so that each packet is counted
        // by the kernel exactly as it would be on the wire.
        let mut last = got;
        for _ in 1..f.repeat {
            last = h.run(hook, &f.frame, 1);
        }
        match last {
            Err(e) => error = Some(format!("test run failed: {e}")),
            Ok(rv) => {
                let want = hook.action(f.last_drops());
                if rv != want {
                    error = Some(format!("returned {rv}, expected {want}"));
                }
            }
        }
        let d = delta(&before, &h.counters());
        for v in Verdict::ALL {
            let want = f
                .expect
                .iter()
                .filter(|(e, _)| *e == v)
                .map(|(_, n)| *n)
                .sum::<u64>();
            let (packets, bytes) = d[v as usize];
            if packets != want || bytes != want * f.frame.len() as u64 {
                let msg = format!(
                    "{}: {packets} packets / {bytes} bytes, expected {want} / {}",
                    v.name(),
                    want * f.frame.len() as u64
                );
                error = Some(error.map(|e| format!("{e}; {msg}")).unwrap_or(msg));
            }
        }
        out.push(Outcome {
            name: f.name,
            error,
        });
    }
    Ok(out)
}
