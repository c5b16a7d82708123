//! The SYN challenge through BPF_PROG_TEST_RUN: SYN in, SYN-ACK out (checked
//! by an independent parse and checksum computation), RST with the cookie
//! in, source admitted; wrong and stale cookies, the answer budget, TC.
//! Each scenario is a sequence of packets, so these are run as steps with
//! one outcome per scenario, on the host (`tests/tests/challenge.rs`) and in
//! the kernel matrix (appended to the fixture table's outcomes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, ensure, Context, Result};
use firewall_common::{Stat, Verdict};
use firewall_user::policy::{self, Policy};

use crate::{
    fixtures::Outcome,
    harness::{delta, Harness, Hook, TC_ACT_SHOT, XDP_DROP, XDP_PASS, XDP_TX},
    packet::{self, tcp_flags, Frame, L4},
};

/// A new-source budget of one a second (per CPU): spent by the first new
/// source, so that every fresh source after it meets the challenge.
pub const POLICY: &str = r#"
[defaults]
rate = 1
burst = 2

[[rule]]
name = "ssh-syn"
protocol = "tcp"
dst_port = 22
syn_only = true
rate = 1
burst = 1

[flood]
new_sources_rate = 1
new_sources_burst = 1
syn_challenge = true
syn_challenge_rate = 1
syn_challenge_burst = 40
"#;

pub fn policy() -> Policy {
    policy::parse(POLICY).expect("challenge policy is valid").0
}

const SERVER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const SERVER6: &str = "2001:db8:ffff::1";
const CLIENT_MAC: packet::Mac = [0x02, 0, 0, 0, 0xc1, 0x01];
const GATEWAY_MAC: packet::Mac = [0x02, 0, 0, 0, 0x9a, 0x01];
/// The client's initial sequence number in every SYN.
const ISN: u32 = 0x1234_5678;

/// Fresh source addresses: each scenario's clients are never seen before.
struct Sources {
    next: u16,
}

impl Sources {
    fn take(&mut self, family: u8) -> IpAddr {
        self.next += 1;
        let n = self.next;
        if family == 4 {
            IpAddr::V4(Ipv4Addr::new(10, 77, (n >> 8) as u8, n as u8))
        } else {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x77, n, 0, 0, 0, 1))
        }
    }
}

fn server(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V4(_) => IpAddr::V4(SERVER4),
        IpAddr::V6(_) => IpAddr::V6(SERVER6.parse().unwrap()),
    }
}

/// How a scenario's frames are wrapped.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    family: u8,
    tags: &'static [u16],
    /// IPv4 options and TCP options on the SYN.
    options: bool,
}

const SHAPES: [Shape; 5] = [
    Shape {
        name: "IPv4",
        family: 4,
        tags: &[],
        options: false,
    },
    Shape {
        name: "IPv6",
        family: 6,
        tags: &[],
        options: false,
    },
    Shape {
        name: "IPv4 802.1Q with IP and TCP options",
        family: 4,
        tags: &[100],
        options: true,
    },
    Shape {
        name: "IPv6 QinQ with TCP options",
        family: 6,
        tags: &[200, 20],
        options: true,
    },
    Shape {
        name: "IPv4 QinQ",
        family: 4,
        tags: &[300, 30],
        options: false,
    },
];

fn segment(shape: Shape, src: IpAddr, dport: u16, flags: u8, seq: u32) -> Vec<u8> {
    let mut f = Frame::ip(src, server(src))
        .macs(GATEWAY_MAC, CLIENT_MAC)
        .tcp(40_000, dport, flags)
        .with_l4(|l4| {
            if let L4::Tcp(t) = l4 {
                t.seq = seq;
                t.ack = 0;
                if shape.options && flags & tcp_flags::SYN != 0 {
                    // MSS 1460, SACK permitted, timestamps, window scale 7:
                    // what a Linux client's SYN carries.
                    t.options = vec![
                        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
                    ];
                    t.payload = b"fast open data".to_vec();
                }
            }
        });
    if shape.options && shape.family == 4 {
        // Record route (7 bytes) and a NOP: options an answer must not echo.
        f = f.with_ipv4(|ip| ip.options = vec![7, 7, 4, 0, 0, 0, 0, 1]);
    }
    match shape.tags {
        [] => f,
        [vid] => f.vlan(*vid),
        [outer, inner] => f.qinq(*outer, *inner),
        _ => unreachable!("at most two tags"),
    }
    .build()
}

fn syn(shape: Shape, src: IpAddr, dport: u16) -> Vec<u8> {
    segment(shape, src, dport, tcp_flags::SYN, ISN)
}

/// The RST a client's TCP sends for an unacceptable SYN-ACK: sequence
/// number = that SYN-ACK's acknowledgment number (RFC 9293, 3.10.7.3).
fn rst(shape: Shape, src: IpAddr, dport: u16, seq: u32) -> Vec<u8> {
    segment(shape, src, dport, tcp_flags::RST, seq)
}

/// One run: what came back and how the counters moved.
struct Step {
    rv: u32,
    out: Vec<u8>,
    verdicts: Vec<(u64, u64)>,
    stats: [u64; 4],
}

fn stats(h: &Harness) -> [u64; 4] {
    Stat::CHALLENGES.map(|(s, _)| h.stat(s))
}

fn step(h: &mut Harness, hook: Hook, frame: &[u8]) -> Result<Step> {
    let (before, sb) = (h.counters(), stats(h));
    let (rv, out) = h.run_out(hook, frame).context("test run")?;
    let (after, sa) = (h.counters(), stats(h));
    Ok(Step {
        rv,
        out,
        verdicts: delta(&before, &after),
        stats: [0, 1, 2, 3].map(|i| sa[i] - sb[i]),
    })
}

impl Step {
    /// Exactly one packet of `frame_len` bytes counted, under `v`.
    fn only(&self, v: Verdict, frame_len: usize) -> Result<()> {
        for w in Verdict::ALL {
            let want = if w == v {
                (1, frame_len as u64)
            } else {
                (0, 0)
            };
            let got = self.verdicts[w as usize];
            ensure!(
                got == want,
                "{}: {} packets / {} bytes, expected {} / {}",
                w.name(),
                got.0,
                got.1,
                want.0,
                want.1
            );
        }
        Ok(())
    }

    /// Challenge statistics moved by `sent, passed, failed, refused`.
    fn challenges(&self, want: [u64; 4]) -> Result<()> {
        ensure!(
            self.stats == want,
            "challenges (sent, passed, failed, refused) moved by {:?}, expected {want:?}",
            self.stats
        );
        Ok(())
    }

    fn returned(&self, want: u32) -> Result<()> {
        ensure!(self.rv == want, "returned {}, expected {want}", self.rv);
        Ok(())
    }
}

/// Spend the new-source budget: fresh UDP sources until one is refused.
fn spend_new_sources(h: &mut Harness, hook: Hook, src: &mut Sources) -> Result<()> {
    for _ in 0..8 {
        let a = src.take(4);
        let f = Frame::ip(a, server(a)).udp(40_000, 9000, 8).build();
        let s = step(h, hook, &f)?;
        if s.verdicts[Verdict::RateLimited as usize].0 == 1 {
            return Ok(());
        }
    }
    bail!("the new-source budget of 1/s was never spent")
}

/// Check an answer against the SYN it answers, reading both frames with an
/// independent parser and recomputing every checksum.
fn check_answer(syn: &[u8], ans: &[u8], shape: Shape) -> Result<u32> {
    let tags = shape.tags.len() * 4;
    ensure!(
        ans[..6] == syn[6..12],
        "destination MAC is not the SYN's source"
    );
    ensure!(
        ans[6..12] == syn[..6],
        "source MAC is not the SYN's destination"
    );
    ensure!(
        ans[12..14 + tags] == syn[12..14 + tags],
        "VLAN tags and ethertype not kept"
    );
    let l3 = 14 + tags;
    let (src, dst, l4) = if shape.family == 4 {
        let ihl = (ans[l3] & 0x0f) as usize * 4;
        ensure!(ans[l3] >> 4 == 4, "not IPv4");
        ensure!(
            ihl == (syn[l3] & 0x0f) as usize * 4,
            "IPv4 header length changed"
        );
        ensure!(
            ans[l3 + 20..l3 + ihl].iter().all(|b| *b == 1),
            "IPv4 options not replaced by NOPs: {:?}",
            &ans[l3 + 20..l3 + ihl]
        );
        let total = u16::from_be_bytes([ans[l3 + 2], ans[l3 + 3]]) as usize;
        ensure!(
            total == ihl + 20,
            "IPv4 total length {total}, expected {}",
            ihl + 20
        );
        ensure!(ans[l3 + 9] == packet::IPPROTO_TCP, "not TCP");
        ensure!(
            packet::checksum(&ans[l3..l3 + ihl]) == 0,
            "IPv4 header checksum wrong"
        );
        let a = |o: usize| IpAddr::V4(Ipv4Addr::new(ans[o], ans[o + 1], ans[o + 2], ans[o + 3]));
        let s = |o: usize| IpAddr::V4(Ipv4Addr::new(syn[o], syn[o + 1], syn[o + 2], syn[o + 3]));
        ensure!(
            a(l3 + 12) == s(l3 + 16),
            "source is not the SYN's destination"
        );
        ensure!(
            a(l3 + 16) == s(l3 + 12),
            "destination is not the SYN's source"
        );
        (a(l3 + 12), a(l3 + 16), l3 + ihl)
    } else {
        ensure!(ans[l3] >> 4 == 6, "not IPv6");
        let plen = u16::from_be_bytes([ans[l3 + 4], ans[l3 + 5]]) as usize;
        ensure!(plen == 20, "IPv6 payload length {plen}, expected 20");
        ensure!(ans[l3 + 6] == packet::IPPROTO_TCP, "next header not TCP");
        let a = |b: &[u8], o: usize| {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[o..o + 16]).unwrap()))
        };
        ensure!(
            a(ans, l3 + 8) == a(syn, l3 + 24),
            "source is not the SYN's destination"
        );
        ensure!(
            a(ans, l3 + 24) == a(syn, l3 + 8),
            "destination is not the SYN's source"
        );
        (a(ans, l3 + 8), a(ans, l3 + 24), l3 + 40)
    };
    ensure!(
        ans.len() == l4 + 20,
        "answer is {} bytes, expected {}",
        ans.len(),
        l4 + 20
    );
    let tcp = &ans[l4..];
    let syn_tcp = &syn[l4..];
    ensure!(
        tcp[0..2] == syn_tcp[2..4],
        "source port is not the SYN's destination port"
    );
    ensure!(
        tcp[2..4] == syn_tcp[0..2],
        "destination port is not the SYN's source port"
    );
    ensure!(
        tcp[12] >> 4 == 5,
        "TCP data offset {}, expected 5",
        tcp[12] >> 4
    );
    ensure!(
        tcp[13] == tcp_flags::SYN | tcp_flags::ACK,
        "flags {:#x}, expected SYN|ACK",
        tcp[13]
    );
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    ensure!(
        ack != ISN.wrapping_add(1),
        "acknowledges the ISN: a handshake, not a challenge"
    );
    let mut zeroed = tcp.to_vec();
    zeroed[16..18].copy_from_slice(&[0, 0]);
    let want = packet::l4_checksum(src, dst, packet::IPPROTO_TCP, &zeroed);
    ensure!(
        u16::from_be_bytes([tcp[16], tcp[17]]) == want,
        "TCP checksum {:#06x}, expected {want:#06x}",
        u16::from_be_bytes([tcp[16], tcp[17]])
    );
    Ok(ack)
}

/// SYN -> challenge; a wrong RST -> dropped; the right RST -> admitted;
/// the next SYN -> passed as a known source. TC cannot answer: the SYN is
/// rate_limited there and no challenge is counted.
fn round_trip(
    h: &mut Harness,
    hook: Hook,
    shape: Shape,
    dport: u16,
    src: &mut Sources,
) -> Result<()> {
    let client = src.take(shape.family);
    spend_new_sources(h, hook, src)?;
    let s = syn(shape, client, dport);
    let st = step(h, hook, &s)?;
    if hook == Hook::Tc {
        st.returned(TC_ACT_SHOT)?;
        st.only(Verdict::RateLimited, s.len())?;
        return st.challenges([0, 0, 0, 0]);
    }
    st.returned(XDP_TX)?;
    st.only(Verdict::Challenged, s.len())?;
    st.challenges([1, 0, 0, 0])?;
    let cookie = check_answer(&s, &st.out, shape)?;

    spend_new_sources(h, hook, src)?;
    let wrong = rst(shape, client, dport, cookie.wrapping_add(1));
    let st = step(h, hook, &wrong).context("RST with a wrong cookie")?;
    st.returned(XDP_DROP)?;
    st.only(Verdict::RateLimited, wrong.len())?;
    st.challenges([0, 0, 1, 0])?;

    let right = rst(shape, client, dport, cookie);
    let st = step(h, hook, &right).context("RST with the cookie")?;
    st.returned(XDP_PASS)?;
    st.only(Verdict::Passed, right.len())?;
    st.challenges([0, 1, 0, 0])?;

    spend_new_sources(h, hook, src)?;
    let st = step(h, hook, &s).context("the SYN again, from a validated source")?;
    st.returned(XDP_PASS)?;
    st.only(Verdict::Passed, s.len())?;
    st.challenges([0, 0, 0, 0])
}

/// A cookie of the previous epoch still passes; one two epochs old fails.
fn epochs(h: &mut Harness, hook: Hook, src: &mut Sources) -> Result<()> {
    let shape = SHAPES[0];
    for (rotations, passes) in [(1, true), (2, false)] {
        let client = src.take(4);
        spend_new_sources(h, hook, src)?;
        let s = syn(shape, client, 443);
        let st = step(h, hook, &s)?;
        st.returned(XDP_TX)?;
        let cookie = check_answer(&s, &st.out, shape)?;
        for _ in 0..rotations {
            h.maps.write()?.rotate_challenge_key()?;
        }
        spend_new_sources(h, hook, src)?;
        let r = rst(shape, client, 443, cookie);
        let st = step(h, hook, &r)?;
        if passes {
            st.returned(XDP_PASS)
                .context("a cookie of the previous epoch")?;
            st.challenges([0, 1, 0, 0])?;
        } else {
            st.returned(XDP_DROP).context("a cookie two epochs old")?;
            st.only(Verdict::RateLimited, r.len())?;
            st.challenges([0, 0, 1, 0])?;
        }
    }
    Ok(())
}

/// Beyond the answer budget a SYN is counted as refused and dropped, with
/// no answer.
fn budget(h: &mut Harness, hook: Hook, src: &mut Sources) -> Result<()> {
    let shape = SHAPES[1];
    for _ in 0..100 {
        let client = src.take(6);
        spend_new_sources(h, hook, src)?;
        let s = syn(shape, client, 443);
        let st = step(h, hook, &s)?;
        if st.rv == XDP_TX {
            continue;
        }
        st.returned(XDP_DROP)?;
        st.only(Verdict::RateLimited, s.len())?;
        return st.challenges([0, 0, 0, 1]);
    }
    bail!("100 SYNs were all answered under a budget of burst 40, 1/s")
}

/// With `syn_challenge = false` a SYN beyond the budget is just dropped.
fn switched_off(h: &mut Harness, hook: Hook, src: &mut Sources) -> Result<()> {
    let mut p = policy();
    p.syn_challenge.enabled = false;
    h.apply(&p)?;
    let client = src.take(4);
    spend_new_sources(h, hook, src)?;
    let s = syn(SHAPES[0], client, 443);
    let st = step(h, hook, &s)?;
    h.apply(&policy())?;
    st.returned(XDP_DROP)?;
    st.only(Verdict::RateLimited, s.len())?;
    st.challenges([0, 0, 0, 0])
}

/// Every scenario through `hook` on a fresh load; one outcome a scenario.
pub fn run(hook: Hook) -> Result<Vec<Outcome>> {
    let mut h = Harness::new(&policy())?;
    let mut src = Sources { next: 0 };
    let mut out = Vec::new();
    let mut record = |name: String, r: Result<()>| {
        out.push(Outcome {
            name,
            error: r.err().map(|e| format!("{e:#}")),
        })
    };
    for shape in SHAPES {
        let r = round_trip(&mut h, hook, shape, 443, &mut src);
        record(
            format!("challenge {}: SYN, wrong RST, RST, SYN", shape.name),
            r,
        );
    }
    let r = round_trip(&mut h, hook, SHAPES[0], 22, &mut src);
    record(
        "challenge: a syn_only rule's port keys the admitted source by rule".into(),
        r,
    );
    if hook == Hook::Xdp {
        let r = epochs(&mut h, hook, &mut src);
        record(
            "challenge: previous epoch's cookie passes, older fails".into(),
            r,
        );
        let r = budget(&mut h, hook, &mut src);
        record(
            "challenge: answer budget spent -> refused, dropped".into(),
            r,
        );
        let r = switched_off(&mut h, hook, &mut src);
        record("challenge: syn_challenge = false -> rate_limited".into(), r);
    }
    Ok(out)
}
