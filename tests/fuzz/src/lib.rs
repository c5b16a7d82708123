//! Frame fuzzing through the real data plane (BPF_PROG_TEST_RUN).
//!
//! Every frame is derived from `(seed, index)` alone, so any failure replays
//! (`cargo xtask fuzz --seed S --replay INDEX`). A frame is one of:
//! - a structured frame from the [`packet`](testkit::packet) builder with
//!   random choices: IPv4/IPv6/non-IP, UDP/TCP/ICMP/raw L4, 0..6 VLAN tags
//!   with 802.1Q/802.1ad/other TPIDs, IPv4 options, IPv6 extension-header
//!   chains (long, repeated, fragment headers), fragments, TCP data offsets,
//!   and length fields that lie (IHL, total length, payload length, UDP
//!   length), optionally truncated or padded;
//! - a mutation of a corpus frame (the fixture table plus structured frames):
//!   bit flips, interesting bytes and words at header fields, byte
//!   insert/delete, truncation, extension, tag insertion/removal, splices;
//! - random bytes behind an interesting ethertype.
//!
//! Each frame is run once through XDP (a share through TC) and checked:
//! - the test run succeeds, except the kernel's documented refusal of skb
//!   test runs whose IP ethertype is not followed by a whole IP header (TC
//!   only; counted separately, and nothing may be counted for it);
//! - the return value is XDP_PASS/XDP_DROP (TC_ACT_OK/TC_ACT_SHOT), or
//!   XDP_TX exactly for a `challenged` SYN (XDP only), never XDP_ABORTED or
//!   anything else;
//! - the per-verdict counters moved by exactly one packet and the frame's
//!   length in bytes, under exactly one verdict, and that verdict drops iff
//!   the program returned the drop action;
//! - the verdict is one the policy allows for what a reference parser
//!   ([`model`]) makes of the frame: `malformed` exactly when the frame is,
//!   `passed` for non-IP, `allowed`/`blocked` by the lists, else `passed`
//!   or `rate_limited` (`would_drop` in monitor mode), or `challenged` for
//!   a TCP SYN (the starved budget refuses most new sources);
//! - at the end, the per-rule counters moved as the reference parser's rule
//!   matches predict (same verdicts).
//!
//! The run goes through four policies in turn: the fixtures' POLICY
//! (enforce), the same in monitor mode, a variant with coarser aggregation
//! (so the lists are decided per packet), an ICMP rule and autoban, and
//! the fixtures' POLICY with a starved `[flood]` budget (most new sources
//! refused: allowlisted and blocklisted ones must keep their verdict).
//!
//! Frames shorter than 14 bytes are refused by the kernel (EINVAL) for both
//! hooks; they are checked separately, once per length, and are not part of
//! the frame count. A run's `frames` are frames run and counted.

use std::{
    collections::BTreeMap,
    fmt::{self, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::programs::ProgramError;
use firewall_common::{Counter, Stat, Verdict, N_VERDICTS};
use firewall_user::policy::{self, Policy};

use testkit::{
    fixtures,
    harness::{delta, Harness, Hook, TC_ACT_OK, TC_ACT_SHOT, XDP_DROP, XDP_PASS, XDP_TX},
    packet::{self, tcp_flags, Frame, Ipv6Ext, L4},
};

/// The longest frame generated (well inside what both test runs accept).
pub const MAX_FRAME: usize = 1600;
/// The shortest frame the kernel test-runs.
pub const ETH_HLEN: usize = 14;

// ---------------------------------------------------------------------------
// PRNG

/// SplitMix64: tiny, fast, and good enough to drive a fuzzer.
#[derive(Clone, Debug)]
pub struct Rng(u64);

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The generator of frame `index` of the run seeded with `seed`.
    pub fn for_frame(seed: u64, index: u64) -> Self {
        Rng(mix(seed ^ mix(index.wrapping_add(0x1234_5678_9abc_def1))))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64 + 1) as usize
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn u16(&mut self) -> u16 {
        self.next_u64() as u16
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }

    /// One of `xs`, or (as often as any one of them) `other(self)`.
    pub fn pick_or<T: Copy>(&mut self, xs: &[T], other: fn(&mut Self) -> T) -> T {
        let i = self.below(xs.len() as u64 + 1) as usize;
        if i == xs.len() {
            other(self)
        } else {
            xs[i]
        }
    }
}

// ---------------------------------------------------------------------------
// Structured frames

const GW4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

/// Sources that hit every branch of the fixture policy: the default class
/// (a small pool, so buckets run dry), the /25 limit class, the allowlist
/// and its neighbours, the blocklist, and random addresses (new sources).
fn src_v4(rng: &mut Rng) -> Ipv4Addr {
    match rng.below(100) {
        0..=24 => Ipv4Addr::new(198, 51, 100, rng.range(2, 127) as u8),
        25..=34 => Ipv4Addr::new(198, 51, 100, rng.range(128, 255) as u8),
        35..=44 => Ipv4Addr::new(192, 0, 2, rng.range(0, 31) as u8),
        45..=54 => Ipv4Addr::new(203, 0, 113, rng.byte()),
        55..=57 => rng.pick(&[Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST]),
        _ => Ipv4Addr::from(rng.next_u64() as u32),
    }
}

fn src_v6(rng: &mut Rng) -> Ipv6Addr {
    let r = rng.next_u64();
    let w = |i: u32| (r >> (16 * i)) as u16;
    match rng.below(100) {
        0..=24 => Ipv6Addr::new(0x2001, 0xdb8, 1, rng.below(16) as u16, 0, 0, 0, w(0)),
        25..=34 => Ipv6Addr::new(0x2001, 0xdb8, 0xa, w(0), w(1), 0, 0, w(2)),
        35..=44 => Ipv6Addr::new(0x2001, 0xdb8, 0xbad, w(0), w(1), w(2), 0, w(3)),
        // Just outside the allow and block prefixes.
        45..=49 => Ipv6Addr::new(
            0x2001,
            0xdb8,
            rng.pick(&[0x9, 0xb, 0xbac, 0xbae]),
            0,
            0,
            0,
            0,
            1,
        ),
        50..=52 => rng.pick(&[Ipv6Addr::UNSPECIFIED, Ipv6Addr::LOCALHOST]),
        _ => Ipv6Addr::from((u128::from(rng.next_u64()) << 64) | u128::from(r)),
    }
}

fn port(rng: &mut Rng) -> u16 {
    match rng.below(10) {
        0..=2 => 53,
        3..=5 => 22,
        6 => rng.pick(&[0, 1, 21, 23, 52, 54, 80, 443, 65535]),
        _ => rng.u16(),
    }
}

fn payload(rng: &mut Rng) -> Vec<u8> {
    let n = if rng.chance(5) {
        rng.range(0, 1400)
    } else {
        rng.range(0, 64)
    };
    rng.bytes(n)
}

fn tpid(rng: &mut Rng) -> u16 {
    match rng.below(100) {
        0..=44 => packet::ETH_P_8021Q,
        45..=89 => packet::ETH_P_8021AD,
        90..=94 => 0x9100,
        _ => rng.u16(),
    }
}

fn ipv4_options(rng: &mut Rng) -> Vec<u8> {
    let n = rng.range(1, 40);
    let mut o = Vec::with_capacity(n);
    while o.len() < n {
        match rng.below(6) {
            0 => o.push(1),                             // NOP
            1 => o.push(0),                             // EOL
            2 => o.extend_from_slice(&[0x94, 4, 0, 0]), // router alert
            3 => {
                // timestamp / record route with a random (maybe lying) length
                o.push(rng.pick(&[0x44, 0x07, 0x83, 0x89]));
                o.push(rng.byte() % 48);
            }
            _ => o.push(rng.byte()),
        }
    }
    o.truncate(40);
    o
}

fn ipv6_ext(rng: &mut Rng) -> Ipv6Ext {
    let data = |rng: &mut Rng| {
        let n = if rng.chance(5) {
            rng.range(0, 600)
        } else {
            rng.range(0, 30)
        };
        rng.bytes(n)
    };
    match rng.below(4) {
        0 => Ipv6Ext::HopByHop(data(rng)),
        1 => Ipv6Ext::Routing(data(rng)),
        2 => Ipv6Ext::DestOpts(data(rng)),
        _ => Ipv6Ext::Fragment {
            offset: if rng.chance(60) {
                0
            } else {
                rng.u16() & 0x1fff
            },
            more: rng.chance(50),
            id: rng.next_u64() as u32,
        },
    }
}

fn l4(rng: &mut Rng, v6: bool) -> L4 {
    match rng.below(100) {
        0..=34 => {
            let pl = payload(rng);
            let length = rng.chance(10).then(|| {
                let real = (8 + pl.len()) as u16;
                rng.pick_or(
                    &[
                        0,
                        1,
                        7,
                        8,
                        9,
                        real.wrapping_sub(1),
                        real.wrapping_add(1),
                        0xffff,
                    ],
                    Rng::u16,
                )
            });
            L4::Udp(packet::Udp {
                sport: rng.u16(),
                dport: port(rng),
                length,
                checksum: rng.chance(10).then(|| rng.u16()),
                payload: pl,
            })
        }
        35..=69 => {
            let flags = match rng.below(6) {
                0 | 1 => tcp_flags::SYN,
                2 => tcp_flags::SYN | tcp_flags::ACK,
                3 => tcp_flags::ACK,
                4 => rng.pick(&[0, 0xff, tcp_flags::SYN | tcp_flags::FIN, tcp_flags::RST]),
                _ => rng.byte(),
            };
            L4::Tcp(packet::Tcp {
                sport: rng.u16(),
                dport: port(rng),
                seq: rng.next_u64() as u32,
                ack: rng.next_u64() as u32,
                data_offset: rng.chance(15).then(|| rng.below(16) as u8),
                flags,
                window: rng.u16(),
                checksum: rng.chance(10).then(|| rng.u16()),
                urgent: 0,
                options: if rng.chance(20) {
                    let n = rng.range(0, 40);
                    rng.bytes(n)
                } else {
                    Vec::new()
                },
                payload: payload(rng),
            })
        }
        70..=81 => L4::Icmp(packet::Icmp {
            icmp_type: if rng.chance(60) {
                if v6 {
                    128
                } else {
                    8
                }
            } else {
                rng.byte()
            },
            code: 0,
            checksum: None,
            rest: [0, 1, 0, 1],
            payload: payload(rng),
        }),
        82..=94 => {
            let n = rng.range(0, 40);
            L4::Raw {
                protocol: rng.pick_or(&[0, 1, 6, 17, 43, 44, 50, 58, 59, 60, 132, 255], Rng::byte),
                bytes: rng.bytes(n),
            }
        }
        _ => L4::None,
    }
}

/// A frame from the builder with random choices (see the module docs).
pub fn structured(rng: &mut Rng) -> Vec<u8> {
    let fam = rng.below(100);
    let mut f = if fam < 45 {
        let mut f = Frame::ipv4(src_v4(rng), GW4);
        f.l4 = l4(rng, false);
        f.with_ipv4(|h| {
            if rng.chance(5) {
                h.version = rng.below(16) as u8;
            }
            if rng.chance(15) {
                h.options = ipv4_options(rng);
            }
            if rng.chance(8) {
                h.ihl = Some(rng.below(16) as u8);
            }
            if rng.chance(8) {
                h.total_len =
                    Some(rng.pick_or(&[0, 1, 19, 20, 21, 27, 28, 39, 40, 0xffff], Rng::u16));
            }
            if rng.chance(15) {
                h.flags |= packet::IPV4_MF;
            }
            if rng.chance(15) {
                h.frag_offset = rng.u16() & 0x1fff;
            }
            if rng.chance(3) {
                h.protocol = Some(rng.byte());
            }
            if rng.chance(10) {
                h.checksum = Some(rng.u16());
            }
        })
    } else if fam < 85 {
        let mut f = Frame::ipv6(src_v6(rng), GW6);
        f.l4 = l4(rng, true);
        f.with_ipv6(|h| {
            if rng.chance(30) {
                let n = if rng.chance(10) {
                    rng.range(5, 14)
                } else {
                    rng.range(1, 5)
                };
                if rng.chance(20) {
                    // The same header over and over: the shape of a loop.
                    let e = ipv6_ext(rng);
                    h.ext = vec![e; n];
                } else {
                    h.ext = (0..n).map(|_| ipv6_ext(rng)).collect();
                }
            }
            if rng.chance(8) {
                h.payload_len = Some(rng.pick_or(&[0, 1, 7, 8, 9, 20, 0xffff], Rng::u16));
            }
            if rng.chance(5) {
                h.next_header = Some(rng.pick_or(&[0, 43, 44, 60, 59, 6, 17, 58], Rng::byte));
            }
            if rng.chance(4) {
                h.version = rng.below(16) as u8;
            }
        })
    } else {
        match rng.below(4) {
            0 => Frame::arp_request([2, 0, 0, 0, 0, 9], src_v4(rng), GW4),
            1 => Frame::raw(packet::ETH_P_LLDP, payload(rng)),
            _ => Frame::raw(
                rng.pick_or(&[0x88b5, 0x8847, 0x88e5, 0x0000, 0x05dc, 0xffff], Rng::u16),
                payload(rng),
            ),
        }
    };
    let tags = match rng.below(100) {
        0..=54 => 0,
        55..=74 => 1,
        75..=89 => 2,
        90..=96 => 3,
        _ => rng.range(4, 6),
    };
    for _ in 0..tags {
        let t = tpid(rng);
        f = f.tag(t, rng.u16());
    }
    if rng.chance(5) {
        f = f.ethertype(rng.pick_or(
            &[
                packet::ETH_P_IP,
                packet::ETH_P_IPV6,
                packet::ETH_P_8021Q,
                packet::ETH_P_8021AD,
            ],
            Rng::u16,
        ));
    }
    if rng.chance(10) {
        f = f.pad_to(rng.pick(&[60, 64]));
    }
    let mut bytes = f.build();
    if rng.chance(20) {
        let n = rng.range(0, bytes.len());
        bytes.truncate(n);
    }
    bytes
}

// ---------------------------------------------------------------------------
// Mutations

const TAG_TPIDS: [u16; 3] = [packet::ETH_P_8021Q, packet::ETH_P_8021AD, 0x9100];

/// Where the (tag-walked) ethertype and the L3 header are, as far as tags
/// of any of [`TAG_TPIDS`] go (at most 6).
fn locate(f: &[u8]) -> (usize, usize) {
    let mut et = 12;
    for _ in 0..6 {
        match be16(f, et) {
            Some(t) if TAG_TPIDS.contains(&t) => et += 4,
            _ => break,
        }
    }
    (et, et + 2)
}

fn be16(f: &[u8], off: usize) -> Option<u16> {
    f.get(off..off + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn put16(f: &mut [u8], off: usize, v: u16) {
    if off + 2 <= f.len() {
        f[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }
}

const INTERESTING_U8: [u8; 20] = [
    0, 1, 0x7f, 0x80, 0xff, 0x45, 0x46, 0x4f, 0x40, 0x60, 0x06, 0x11, 0x2c, 0x2b, 0x3c, 0x3b, 0x3a,
    0x02, 0x12, 0x50,
];

fn interesting_u16(rng: &mut Rng, f: &[u8], l3: usize) -> u16 {
    let rest = f.len().saturating_sub(l3) as u16;
    rng.pick_or(
        &[
            0,
            1,
            7,
            8,
            19,
            20,
            39,
            40,
            0x7fff,
            0x8000,
            0xfffe,
            0xffff,
            packet::ETH_P_IP,
            packet::ETH_P_IPV6,
            packet::ETH_P_8021Q,
            packet::ETH_P_8021AD,
            rest,
            rest.wrapping_add(1),
            rest.wrapping_sub(1),
            rest.wrapping_sub(40),
            rest.wrapping_sub(39),
            rest.wrapping_sub(41),
        ],
        Rng::u16,
    )
}

/// A header field of the frame as it stands: (offset, width in bytes).
fn header_field(rng: &mut Rng, f: &[u8]) -> (usize, usize) {
    let (et, l3) = locate(f);
    match be16(f, et) {
        Some(packet::ETH_P_IP) => {
            let ihl = f.get(l3).map(|b| (b & 0x0f) as usize * 4).unwrap_or(20);
            let l4 = l3 + ihl.max(20);
            rng.pick(&[
                (l3, 1),      // version / IHL
                (l3 + 2, 2),  // total length
                (l3 + 6, 2),  // flags / fragment offset
                (l3 + 9, 1),  // protocol
                (l3 + 20, 1), // first option byte
                (l4 + 2, 2),  // destination port
                (l4 + 4, 2),  // UDP length
                (l4 + 12, 1), // TCP data offset
                (l4 + 13, 1), // TCP flags
                (et, 2),
            ])
        }
        Some(packet::ETH_P_IPV6) => rng.pick(&[
            (l3, 1),      // version
            (l3 + 4, 2),  // payload length
            (l3 + 6, 1),  // next header
            (l3 + 40, 1), // first extension: next header
            (l3 + 41, 1), // first extension: length
            (l3 + 42, 2), // fragment offset / L4 dst port
            (l3 + 48, 1),
            (l3 + 49, 1),
            (l3 + 52, 1),
            (et, 2),
        ]),
        _ => rng.pick(&[(12, 2), (et, 2), (l3, 1)]),
    }
}

/// Mutate `f` in place with 1..=10 random edits; `other` is a splice donor.
pub fn mutate(rng: &mut Rng, f: &mut Vec<u8>, other: &[u8]) {
    let n = if rng.chance(75) {
        rng.range(1, 3)
    } else {
        rng.range(4, 10)
    };
    for _ in 0..n {
        let len = f.len();
        match rng.below(15) {
            0 | 1 if len > 0 => {
                let i = rng.below(len as u64) as usize;
                f[i] ^= 1 << rng.below(8);
            }
            2 if len > 0 => {
                let i = rng.below(len as u64) as usize;
                f[i] = rng.pick(&INTERESTING_U8);
            }
            3 | 4 => {
                let (off, width) = header_field(rng, f);
                let l3 = locate(f).1;
                if width == 2 {
                    let v = interesting_u16(rng, f, l3);
                    put16(f, off, v);
                } else if off < f.len() {
                    f[off] = if rng.chance(50) {
                        rng.pick(&INTERESTING_U8)
                    } else {
                        // Keep one nibble: version vs IHL, data offset vs flags.
                        (f[off] & if rng.chance(50) { 0xf0 } else { 0x0f })
                            | (rng.byte() & if rng.chance(50) { 0x0f } else { 0xf0 })
                    };
                }
            }
            5 => {
                let at = rng.below(len as u64 + 1) as usize;
                let k = rng.range(1, 8);
                let ins = rng.bytes(k);
                f.splice(at..at, ins);
            }
            6 if len > 0 => {
                let at = rng.below(len as u64) as usize;
                let k = rng.range(1, 8).min(len - at);
                f.drain(at..at + k);
            }
            7 => {
                let at = rng.below(len as u64 + 1) as usize;
                f.truncate(at);
            }
            8 => {
                let k = rng.range(1, 64);
                let more = rng.bytes(k);
                f.extend_from_slice(&more);
            }
            9 if len >= 12 => {
                // Push a tag right after the MACs (or after the tags there).
                let at = if rng.chance(50) {
                    12
                } else {
                    locate(f).0.min(len)
                };
                let t = tpid(rng).to_be_bytes();
                let tci = rng.u16().to_be_bytes();
                f.splice(at..at, [t[0], t[1], tci[0], tci[1]]);
            }
            10 if len >= 18 => {
                f.drain(12..16);
            }
            11 if !other.is_empty() => {
                let at = rng.below(len as u64 + 1) as usize;
                let from = rng.below(other.len() as u64) as usize;
                f.truncate(at);
                f.extend_from_slice(&other[from..]);
            }
            12 => {
                let (et, _) = locate(f);
                let v = match be16(f, et) {
                    Some(packet::ETH_P_IP) => packet::ETH_P_IPV6,
                    Some(packet::ETH_P_IPV6) => packet::ETH_P_IP,
                    _ => rng.pick(&[packet::ETH_P_IP, packet::ETH_P_IPV6]),
                };
                put16(f, et, v);
            }
            13 if len > 2 => {
                let at = rng.below(len as u64 - 1) as usize;
                let l3 = locate(f).1;
                let v = interesting_u16(rng, f, l3);
                put16(f, at, v);
            }
            14 if len > 0 => {
                let a = rng.below(len as u64) as usize;
                let k = rng.range(1, 16).min(len - a);
                let chunk = f[a..a + k].to_vec();
                let at = rng.below(len as u64 + 1) as usize;
                f.splice(at..at, chunk);
            }
            _ => {
                if len > 0 {
                    let i = rng.below(len as u64) as usize;
                    f[i] = rng.byte();
                }
            }
        }
        if f.len() > MAX_FRAME {
            f.truncate(MAX_FRAME);
        }
    }
}

/// Random bytes behind an interesting ethertype (maybe tagged).
fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    let hi = if rng.chance(10) { 600 } else { 120 };
    let n = rng.range(ETH_HLEN, hi);
    let mut f = rng.bytes(n);
    let et = rng.pick_or(
        &[
            packet::ETH_P_IP,
            packet::ETH_P_IPV6,
            packet::ETH_P_8021Q,
            packet::ETH_P_8021AD,
            packet::ETH_P_ARP,
        ],
        Rng::u16,
    );
    put16(&mut f, 12, et);
    if et == packet::ETH_P_8021Q || et == packet::ETH_P_8021AD {
        let inner = rng.pick(&[packet::ETH_P_IP, packet::ETH_P_IPV6, packet::ETH_P_8021Q]);
        put16(&mut f, 16, inner);
    }
    f
}

/// What produced a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    Structured,
    Mutated,
    Random,
}

/// The seed corpus: the fixture table's frames plus structured frames.
pub fn corpus(seed: u64) -> Vec<Vec<u8>> {
    let mut c: Vec<Vec<u8>> = fixtures::table().into_iter().map(|f| f.frame).collect();
    let mut rng = Rng::new(mix(seed ^ 0xc0c0_c0c0));
    for _ in 0..256 {
        let mut f = structured(&mut rng);
        pad_min(&mut rng, &mut f);
        c.push(f);
    }
    c
}

fn pad_min(rng: &mut Rng, f: &mut Vec<u8>) {
    while f.len() < ETH_HLEN {
        f.push(rng.byte());
    }
}

/// Frame `index` of the run seeded with `seed` (at least 14 bytes).
pub fn frame(seed: u64, index: u64, corpus: &[Vec<u8>]) -> (Vec<u8>, Origin) {
    let mut rng = Rng::for_frame(seed, index);
    let (mut f, origin) = match rng.below(100) {
        0..=34 => (structured(&mut rng), Origin::Structured),
        35..=89 => {
            let mut f = corpus[rng.below(corpus.len() as u64) as usize].clone();
            let other = &corpus[rng.below(corpus.len() as u64) as usize];
            mutate(&mut rng, &mut f, other);
            (f, Origin::Mutated)
        }
        90..=94 => {
            let mut f = structured(&mut rng);
            let other = &corpus[rng.below(corpus.len() as u64) as usize];
            mutate(&mut rng, &mut f, other);
            (f, Origin::Mutated)
        }
        _ => (random_bytes(&mut rng), Origin::Random),
    };
    pad_min(&mut rng, &mut f);
    f.truncate(MAX_FRAME);
    (f, origin)
}

// ---------------------------------------------------------------------------
// The reference parser

/// What a frame is, by the rules the data plane documents: Ethernet, up to
/// two 802.1Q/802.1ad tags, IPv4 (IHL >= 5, IHL <= total length <= what
/// the frame holds) or IPv6 (payload length <= what the frame holds, up to
/// four extension headers walked), then the TCP/UDP header for ports and
/// flags unless this is a later fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Malformed(&'static str),
    NotIp,
    Ip {
        src: IpAddr,
        /// L4 protocol (0 when more extension headers follow than walked).
        proto: u8,
        /// Destination port and TCP flags, when the L4 header was read.
        l4: Option<(u16, u8)>,
    },
}

/// Features of a frame the model saw, for the coverage summary.
pub mod feature {
    pub const TAG1: u32 = 1 << 0;
    pub const TAG2: u32 = 1 << 1;
    pub const TAG3: u32 = 1 << 2;
    pub const IPV4: u32 = 1 << 3;
    pub const IPV6: u32 = 1 << 4;
    pub const V4_OPTIONS: u32 = 1 << 5;
    pub const V4_LATER_FRAGMENT: u32 = 1 << 6;
    pub const V6_EXT: u32 = 1 << 7;
    pub const V6_FRAGMENT: u32 = 1 << 8;
    pub const V6_LATER_FRAGMENT: u32 = 1 << 9;
    pub const V6_EXT_BEYOND_WALK: u32 = 1 << 10;
    pub const TCP: u32 = 1 << 11;
    pub const UDP: u32 = 1 << 12;
    pub const TCP_OPTIONS: u32 = 1 << 13;
    pub const TRAILER: u32 = 1 << 14;

    pub const NAMES: [(u32, &str); 15] = [
        (TAG1, "one or more VLAN tags"),
        (TAG2, "two or more VLAN tags"),
        (TAG3, "three or more VLAN tags"),
        (IPV4, "IPv4 header present"),
        (IPV6, "IPv6 header present"),
        (V4_OPTIONS, "IPv4 options (IHL > 5)"),
        (V4_LATER_FRAGMENT, "IPv4 later fragment"),
        (V6_EXT, "IPv6 extension header walked"),
        (V6_FRAGMENT, "IPv6 fragment header walked"),
        (V6_LATER_FRAGMENT, "IPv6 later fragment"),
        (V6_EXT_BEYOND_WALK, "IPv6 extension chain beyond 4 headers"),
        (TCP, "TCP header read"),
        (UDP, "UDP header read"),
        (TCP_OPTIONS, "TCP options (data offset > 5)"),
        (TRAILER, "bytes after the IP length (padding)"),
    ];
}

const MAX_EXT_HEADERS: usize = 4;

fn is_tag(t: u16) -> bool {
    t == packet::ETH_P_8021Q || t == packet::ETH_P_8021AD
}

/// The reference parser: what `f` is, and the features it has.
pub fn model(f: &[u8]) -> (Parsed, u32) {
    let mut feats = 0;
    let p = model_inner(f, &mut feats);
    (p, feats)
}

fn model_inner(f: &[u8], feats: &mut u32) -> Parsed {
    use feature::*;
    use Parsed::Malformed;
    let Some(mut proto) = be16(f, 12) else {
        return Malformed("shorter than an Ethernet header");
    };
    let mut off = ETH_HLEN;
    if is_tag(proto) {
        *feats |= TAG1;
        let Some(p) = be16(f, off + 2) else {
            return Malformed("VLAN tag cut short");
        };
        proto = p;
        off += 4;
        if is_tag(proto) {
            *feats |= TAG2;
            let Some(p) = be16(f, off + 2) else {
                return Malformed("second VLAN tag cut short");
            };
            proto = p;
            off += 4;
            if is_tag(proto) {
                *feats |= TAG3;
                return Malformed("three VLAN tags");
            }
        }
    }
    match proto {
        packet::ETH_P_IP => model_v4(f, off, feats),
        packet::ETH_P_IPV6 => model_v6(f, off, feats),
        _ => Parsed::NotIp,
    }
}

fn model_v4(f: &[u8], off: usize, feats: &mut u32) -> Parsed {
    use Parsed::Malformed;
    if off + 20 > f.len() {
        return Malformed("IPv4 header cut short");
    }
    *feats |= feature::IPV4;
    let h = &f[off..];
    if h[0] >> 4 != 4 {
        return Malformed("IPv4 version field is not 4");
    }
    let ihl = (h[0] & 0x0f) as usize * 4;
    if ihl < 20 {
        return Malformed("IPv4 IHL < 5");
    }
    let avail = f.len() - off;
    let tot = u16::from_be_bytes([h[2], h[3]]) as usize;
    if ihl > avail {
        return Malformed("IPv4 IHL past the end of the frame");
    }
    if tot < ihl {
        return Malformed("IPv4 total length shorter than its header");
    }
    if tot > avail {
        return Malformed("IPv4 total length longer than the frame");
    }
    if ihl > 20 {
        *feats |= feature::V4_OPTIONS;
    }
    if tot < avail {
        *feats |= feature::TRAILER;
    }
    let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    let proto = h[9];
    if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
        *feats |= feature::V4_LATER_FRAGMENT;
        return Parsed::Ip {
            src,
            proto,
            l4: None,
        };
    }
    model_l4(f, off + ihl, tot - ihl, src, proto, feats)
}

fn model_v6(f: &[u8], off: usize, feats: &mut u32) -> Parsed {
    use Parsed::Malformed;
    if off + 40 > f.len() {
        return Malformed("IPv6 header cut short");
    }
    *feats |= feature::IPV6;
    let h = &f[off..];
    if h[0] >> 4 != 6 {
        return Malformed("IPv6 version field is not 6");
    }
    let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
    let avail = f.len() - off - 40;
    if payload > avail {
        return Malformed("IPv6 payload length longer than the frame");
    }
    if payload < avail {
        *feats |= feature::TRAILER;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    let src = IpAddr::V6(Ipv6Addr::from(src));
    let mut next = h[6];
    let mut at = off + 40;
    let mut left = payload;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            0 | 43 | 60 => {
                if at + 2 > f.len() {
                    return Malformed("IPv6 extension header cut short");
                }
                let len = (f[at + 1] as usize + 1) * 8;
                if len > left {
                    return Malformed("IPv6 extension header longer than the payload");
                }
                *feats |= feature::V6_EXT;
                next = f[at];
                at += len;
                left -= len;
            }
            44 => {
                if at + 4 > f.len() {
                    return Malformed("IPv6 fragment header cut short");
                }
                if left < 8 {
                    return Malformed("IPv6 fragment header longer than the payload");
                }
                *feats |= feature::V6_FRAGMENT;
                let fo = u16::from_be_bytes([f[at + 2], f[at + 3]]);
                next = f[at];
                at += 8;
                left -= 8;
                if fo & 0xfff8 != 0 {
                    *feats |= feature::V6_LATER_FRAGMENT;
                    return Parsed::Ip {
                        src,
                        proto: next,
                        l4: None,
                    };
                }
            }
            _ => break,
        }
    }
    if matches!(next, 0 | 43 | 60 | 44) {
        *feats |= feature::V6_EXT_BEYOND_WALK;
        return Parsed::Ip {
            src,
            proto: 0,
            l4: None,
        };
    }
    model_l4(f, at, left, src, next, feats)
}

fn model_l4(f: &[u8], off: usize, len: usize, src: IpAddr, proto: u8, feats: &mut u32) -> Parsed {
    use Parsed::Malformed;
    match proto {
        packet::IPPROTO_TCP => {
            if off + 20 > f.len() {
                return Malformed("TCP header cut short");
            }
            let t = &f[off..];
            let doff = (t[12] >> 4) as usize * 4;
            if len < 20 {
                return Malformed("TCP header longer than the IP length");
            }
            if doff < 20 {
                return Malformed("TCP data offset < 5");
            }
            if doff > len {
                return Malformed("TCP data offset past the segment");
            }
            *feats |= feature::TCP;
            if doff > 20 {
                *feats |= feature::TCP_OPTIONS;
            }
            Parsed::Ip {
                src,
                proto,
                l4: Some((u16::from_be_bytes([t[2], t[3]]), t[13])),
            }
        }
        packet::IPPROTO_UDP => {
            if off + 8 > f.len() {
                return Malformed("UDP header cut short");
            }
            if len < 8 {
                return Malformed("UDP header longer than the IP length");
            }
            *feats |= feature::UDP;
            Parsed::Ip {
                src,
                proto,
                l4: Some((u16::from_be_bytes([f[off + 2], f[off + 3]]), 0)),
            }
        }
        _ => Parsed::Ip {
            src,
            proto,
            l4: None,
        },
    }
}

/// The verdicts `policy` allows for a frame the model parsed as `p`, and
/// the rule (index) whose counters it also goes to.
pub fn expected(policy: &Policy, p: &Parsed) -> (&'static [Verdict], Option<usize>) {
    use Verdict::*;
    let monitor = policy.defaults.monitor;
    match p {
        Parsed::Malformed(_) => (&[Malformed], None),
        Parsed::NotIp => (&[Passed], None),
        Parsed::Ip { src, proto, l4 } => {
            let rule = policy.rules.iter().position(|r| {
                r.protocol.matches(*proto)
                    && r.dst_port
                        .is_none_or(|(lo, hi)| l4.is_some_and(|(port, _)| port >= lo && port <= hi))
                    && (!r.syn_only
                        || l4.is_some_and(|(_, fl)| {
                            fl & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
                        }))
            });
            let v: &'static [Verdict] = if policy.allow.iter().any(|n| n.contains(src)) {
                &[Allowed]
            } else if policy.block.iter().any(|n| n.contains(src)) {
                if monitor {
                    &[WouldDrop]
                } else {
                    &[Blocked]
                }
            } else if monitor {
                &[Passed, WouldDrop]
            } else if policy.syn_challenge.enabled
                && *proto == packet::IPPROTO_TCP
                && l4.is_some_and(|(_, fl)| {
                    fl & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN
                })
            {
                // A SYN the new-source budget refuses is challenged (XDP).
                &[Passed, RateLimited, Challenged]
            } else {
                &[Passed, RateLimited]
            };
            (v, rule)
        }
    }
}

/// Whether the kernel's skb test run may refuse `f` (EINVAL): its
/// (untagged) ethertype says IP but no whole IP header follows.
pub fn skb_may_refuse(f: &[u8]) -> bool {
    match be16(f, 12) {
        Some(packet::ETH_P_IP) => f.len() < ETH_HLEN + 20,
        Some(packet::ETH_P_IPV6) => f.len() < ETH_HLEN + 40,
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Policies

/// The three policies of a run, in order, with their names.
pub fn policies() -> Vec<(&'static str, Policy)> {
    let base = fixtures::POLICY;
    let monitor = base.replacen("[defaults]\n", "[defaults]\nmode = \"monitor\"\n", 1);
    let mut variant = base.replacen(
        "[defaults]\n",
        "[defaults]\nipv4_prefix = 24\nipv6_prefix = 48\n",
        1,
    );
    variant.push_str(
        "\n[[rule]]\nname = \"icmp\"\nprotocol = \"icmp\"\nrate = 1\nburst = 1\n\n\
         [autoban]\ndrops = 5\nwindow = \"10s\"\nban = \"10m\"\nmax_ban = \"1h\"\n",
    );
    let starved = format!("{base}\n[flood]\nnew_sources_rate = 10\nnew_sources_burst = 10\n");
    [
        ("fixtures POLICY (enforce)", base.to_string()),
        ("fixtures POLICY (monitor)", monitor),
        (
            "aggregation /24 and /48, icmp rule, autoban (enforce)",
            variant,
        ),
        ("fixtures POLICY, [flood] budget of 10 (enforce)", starved),
    ]
    .into_iter()
    .map(|(name, text)| {
        let p = policy::parse(&text)
            .unwrap_or_else(|e| panic!("fuzz policy {name:?} does not parse: {e:?}"))
            .0;
        (name, p)
    })
    .collect()
}

/// Which policy (of [`policies`]) frame `index` of `frames` runs under:
/// the first 65%, the next 15%, the next 12%, the rest.
pub fn phase_of(index: u64, frames: u64) -> usize {
    let f = frames.max(1) as u128;
    let i = index as u128 * 100;
    if i < f * 65 {
        0
    } else if i < f * 80 {
        1
    } else if i < f * 92 {
        2
    } else {
        3
    }
}

// ---------------------------------------------------------------------------
// The run

#[derive(Clone, Debug)]
pub struct Options {
    /// Frames run through the programs and counted (each at least 14
    /// bytes). TC frames the skb test run refuses do not count: frames are
    /// generated (index 0, 1, ...) until this many have run.
    pub frames: u64,
    pub seed: u64,
    /// Every `tc_every`-th frame goes through TC instead of XDP (0: never).
    pub tc_every: u64,
    /// Print progress to stderr every this many frames (0: never).
    pub progress_every: u64,
    /// Stop collecting failures after this many (the run goes on).
    pub max_failures: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            frames: 1_000_000,
            seed: DEFAULT_SEED,
            tc_every: 8,
            progress_every: 0,
            max_failures: 20,
        }
    }
}

pub const DEFAULT_SEED: u64 = 0x0f12_e3a1_1f00_d5ed;

pub fn hook_for(index: u64, tc_every: u64) -> Hook {
    if tc_every > 0 && index % tc_every == tc_every - 1 {
        Hook::Tc
    } else {
        Hook::Xdp
    }
}

fn hook_name(h: Hook) -> &'static str {
    match h {
        Hook::Xdp => "xdp",
        Hook::Tc => "tc",
    }
}

/// One frame that broke a check.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub index: u64,
    pub hook: Hook,
    pub policy: &'static str,
    pub frame: Vec<u8>,
    pub model: Parsed,
    pub problem: String,
}

pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "frame #{} (seed {:#x}, {}, policy: {}): {}",
            self.index,
            self.seed,
            hook_name(self.hook),
            self.policy,
            self.problem
        )?;
        writeln!(f, "  model: {:?}", self.model)?;
        writeln!(f, "  {} bytes: {}", self.frame.len(), hex(&self.frame))?;
        write!(
            f,
            "  replay: cargo xtask fuzz --seed {:#x} --replay {}",
            self.seed, self.index
        )
    }
}

/// What a run saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    /// Frames run (>= 14 bytes), XDP and TC.
    pub xdp_frames: u64,
    pub tc_frames: u64,
    pub bytes: u64,
    /// TC frames the skb test run refused (short IP header); not counted.
    pub tc_refused: u64,
    /// Frames < 14 bytes, one per length and hook, refused as documented.
    pub short_refused: u64,
    /// Per verdict: (packets, bytes) through XDP, and through TC.
    pub xdp_verdicts: Vec<(u64, u64)>,
    pub tc_verdicts: Vec<(u64, u64)>,
    /// Return values seen, per hook.
    pub returns: BTreeMap<(&'static str, u32), u64>,
    pub origins: BTreeMap<Origin, u64>,
    /// The reference parser's malformed reasons.
    pub malformed_reasons: BTreeMap<&'static str, u64>,
    pub features: BTreeMap<&'static str, u64>,
    /// Frames that matched a rule, per rule name.
    pub rule_hits: BTreeMap<String, u64>,
    /// The flood guard over the run: new source prefixes given a bucket,
    /// and first packets of new prefixes refused one.
    pub new_sources_admitted: u64,
    pub new_sources_refused: u64,
    pub elapsed: Duration,
    pub failures: Vec<Failure>,
    /// Failures beyond `max_failures`, not kept.
    pub more_failures: u64,
}

impl Report {
    pub fn frames(&self) -> u64 {
        self.xdp_frames + self.tc_frames
    }

    pub fn ok(&self) -> bool {
        self.failures.is_empty() && self.more_failures == 0
    }

    /// Packets counted per verdict over both hooks.
    pub fn packets(&self, v: Verdict) -> u64 {
        self.xdp_verdicts[v as usize].0 + self.tc_verdicts[v as usize].0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "fuzz: seed {:#x}: {} frames ({} XDP, {} TC), {} bytes, in {:.1} s ({:.0} frames/s)",
            self.seed,
            self.frames(),
            self.xdp_frames,
            self.tc_frames,
            self.bytes,
            secs,
            self.frames() as f64 / secs.max(1e-9)
        )?;
        writeln!(
            f,
            "  {:<14} {:>10} {:>12} {:>10} {:>12}",
            "verdict", "xdp pkts", "xdp bytes", "tc pkts", "tc bytes"
        )?;
        for v in Verdict::ALL {
            let (xp, xb) = self.xdp_verdicts[v as usize];
            let (tp, tb) = self.tc_verdicts[v as usize];
            writeln!(f, "  {:<14} {xp:>10} {xb:>12} {tp:>10} {tb:>12}", v.name())?;
        }
        writeln!(
            f,
            "  TC frames refused by the skb test run (short IP header, nothing counted): {}",
            self.tc_refused
        )?;
        writeln!(
            f,
            "  frames < 14 bytes refused with EINVAL (not in the count): {}",
            self.short_refused
        )?;
        let rv: Vec<String> = self
            .returns
            .iter()
            .map(|((h, r), n)| format!("{h}={r}: {n}"))
            .collect();
        writeln!(f, "  return values: {}", rv.join(", "))?;
        let or: Vec<String> = self
            .origins
            .iter()
            .map(|(o, n)| format!("{o:?}: {n}"))
            .collect();
        writeln!(f, "  frames by origin: {}", or.join(", "))?;
        let rh: Vec<String> = self
            .rule_hits
            .iter()
            .map(|(r, n)| format!("{r}: {n}"))
            .collect();
        writeln!(f, "  rule matches: {}", rh.join(", "))?;
        writeln!(
            f,
            "  new source prefixes: {} given a bucket, {} refused by the flood guard",
            self.new_sources_admitted, self.new_sources_refused
        )?;
        writeln!(f, "  features (frames):")?;
        for (name, n) in &self.features {
            writeln!(f, "    {name:<42} {n:>9}")?;
        }
        writeln!(f, "  malformed, by the reference parser's reason:")?;
        for (why, n) in &self.malformed_reasons {
            writeln!(f, "    {why:<48} {n:>9}")?;
        }
        write!(
            f,
            "  failures: {}",
            self.failures.len() as u64 + self.more_failures
        )?;
        for x in &self.failures {
            write!(f, "\n{x}")?;
        }
        Ok(())
    }
}

/// The per-verdict counters read with one `BPF_MAP_LOOKUP_BATCH` call
/// instead of one lookup per verdict (the per-frame check reads them after
/// every frame; this keeps a million frames to seconds). Falls back to
/// [`Harness::counters`] where the batch call is not available, and is
/// checked against it at the start and end of every policy phase.
struct CounterReader {
    /// The pinned `COUNTERS` map, opened again for its fd.
    map: Option<aya::maps::MapData>,
    cpus: usize,
    keys: Vec<u32>,
    values: Vec<u8>,
}

impl CounterReader {
    fn open(h: &Harness) -> Self {
        let map =
            aya::maps::MapData::from_pin(h.pin_dir.join(firewall_common::maps::COUNTERS)).ok();
        let cpus = aya::util::nr_cpus().unwrap_or(1);
        let n = N_VERDICTS as usize;
        let mut r = CounterReader {
            map,
            cpus,
            keys: vec![0; n],
            values: vec![0; n * cpus * std::mem::size_of::<Counter>()],
        };
        // Use the batch call only if it agrees with the plain lookups.
        if r.batch().ok() != Some(h.counters()) {
            r.map = None;
        }
        r
    }

    fn read(&mut self, h: &Harness) -> Vec<Counter> {
        if self.map.is_some() {
            if let Ok(c) = self.batch() {
                return c;
            }
        }
        h.counters()
    }

    fn batch(&mut self) -> std::io::Result<Vec<Counter>> {
        let Some(map) = &self.map else {
            return Err(std::io::ErrorKind::Unsupported.into());
        };
        let n = N_VERDICTS as usize;
        let mut keys = vec![0u8; n * 4];
        let read = firewall_user::batch::lookup(map, &mut keys, &mut self.values, n)?;
        if read != n {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        for (k, b) in self.keys.iter_mut().zip(keys.chunks(4)) {
            *k = u32::from_ne_bytes(b.try_into().unwrap());
        }
        let sz = std::mem::size_of::<Counter>();
        let mut out = vec![Counter::default(); n];
        for (i, key) in self.keys.iter().enumerate() {
            let k = *key as usize;
            if k >= n {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            for cpu in 0..self.cpus {
                let at = (i * self.cpus + cpu) * sz;
                let b = &self.values[at..at + sz];
                out[k].packets += u64::from_ne_bytes(b[..8].try_into().unwrap());
                out[k].bytes += u64::from_ne_bytes(b[8..].try_into().unwrap());
            }
        }
        Ok(out)
    }
}

fn errno(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

fn rule_totals(h: &Harness, rules: usize) -> Result<Vec<Vec<Counter>>> {
    (0..rules as u32)
        .map(|r| h.maps.rule_totals(r).context("reading rule counters"))
        .collect()
}

/// What one frame did, checked.
struct Outcome {
    verdict: Option<Verdict>,
    refused: bool,
    problems: Vec<String>,
}

/// Run `frame` once through `hook` and check it (counters before it in
/// `before`, updated to after it).
fn run_one(
    h: &mut Harness,
    reader: &mut CounterReader,
    hook: Hook,
    frame: &[u8],
    parsed: &Parsed,
    policy: &Policy,
    before: &mut Vec<Counter>,
) -> Outcome {
    let res = h.run(hook, frame, 1);
    let after = reader.read(h);
    let d = delta(before, &after);
    *before = after;
    let mut problems = Vec::new();
    let moved: Vec<(Verdict, u64, u64)> = Verdict::ALL
        .iter()
        .filter(|v| d[**v as usize] != (0, 0))
        .map(|v| (*v, d[*v as usize].0, d[*v as usize].1))
        .collect();
    let rv = match res {
        Err(e) => {
            let refusal =
                errno(&e) == Some(libc::EINVAL) && hook == Hook::Tc && skb_may_refuse(frame);
            if !refusal {
                problems.push(format!("test run failed: {e} ({:?})", errno(&e)));
            }
            if !moved.is_empty() {
                problems.push(format!(
                    "the test run failed, yet counters moved: {moved:?}"
                ));
            }
            return Outcome {
                verdict: None,
                refused: refusal,
                problems,
            };
        }
        Ok(rv) => rv,
    };
    let (pass, drop) = match hook {
        Hook::Xdp => (XDP_PASS, XDP_DROP),
        Hook::Tc => (TC_ACT_OK, TC_ACT_SHOT),
    };
    let answered = hook == Hook::Xdp && rv == XDP_TX;
    if rv != pass && rv != drop && !answered {
        problems.push(format!(
            "returned {rv}{}, expected {pass} or {drop}",
            if hook == Hook::Xdp && rv == 0 {
                " (XDP_ABORTED)"
            } else {
                ""
            }
        ));
    }
    let verdict = match moved.as_slice() {
        [(v, 1, b)] if *b == frame.len() as u64 => Some(*v),
        _ => {
            problems.push(format!(
                "counters moved by {moved:?} (verdict, packets, bytes); expected one packet of {} bytes under one verdict",
                frame.len()
            ));
            None
        }
    };
    if let Some(v) = verdict {
        if answered != (v == Verdict::Challenged) {
            problems.push(format!(
                "verdict {} but returned {rv} (XDP_TX answers exactly the challenged)",
                v.name()
            ));
        } else if !answered && (rv == drop) != v.drops() {
            problems.push(format!(
                "verdict {} but returned {rv} ({})",
                v.name(),
                if rv == drop { "drop" } else { "pass" }
            ));
        }
        let (allowed, _) = expected(policy, parsed);
        if !allowed.contains(&v) {
            problems.push(format!(
                "verdict {}, expected {}",
                v.name(),
                allowed
                    .iter()
                    .map(|v| v.name())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        }
    }
    Outcome {
        verdict,
        refused: false,
        problems,
    }
}

/// The fuzz run: `opts.frames` frames through a fresh load of the data
/// plane. Failures are collected in the report, not returned as errors;
/// `Err` means the harness itself could not run.
pub fn run(opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let policies = policies();
    let max_rules = policies
        .iter()
        .map(|(_, p)| p.rules.len())
        .max()
        .unwrap_or(0);
    let mut h = Harness::new(&policies[0].1).context("loading the data plane")?;
    let corpus = corpus(opts.seed);
    let mut rep = Report {
        seed: opts.seed,
        xdp_verdicts: vec![(0, 0); N_VERDICTS as usize],
        tc_verdicts: vec![(0, 0); N_VERDICTS as usize],
        ..Default::default()
    };
    let fail = |rep: &mut Report, f: Failure| {
        if rep.failures.len() < opts.max_failures {
            rep.failures.push(f);
        } else {
            rep.more_failures += 1;
        }
    };

    // Frames shorter than Ethernet: refused by both test runs, nothing counted.
    let mut before = h.counters();
    for len in 0..ETH_HLEN {
        let f = vec![0x08u8; len];
        for hook in [Hook::Xdp, Hook::Tc] {
            let r = h.run(hook, &f, 1);
            let after = h.counters();
            let moved = delta(&before, &after).iter().any(|d| *d != (0, 0));
            before = after;
            match r {
                Err(e) if errno(&e) == Some(libc::EINVAL) && !moved => rep.short_refused += 1,
                other => fail(
                    &mut rep,
                    Failure {
                        seed: opts.seed,
                        index: u64::MAX,
                        hook,
                        policy: policies[0].0,
                        frame: f.clone(),
                        model: Parsed::Malformed("shorter than an Ethernet header"),
                        problem: format!(
                            "a {len}-byte frame: expected the kernel's EINVAL refusal and no counting, got {:?}{}",
                            other.map_err(|e| e.to_string()),
                            if moved { " and counters moved" } else { "" }
                        ),
                    },
                ),
            }
        }
    }

    let mut reader = CounterReader::open(&h);
    let run_start = h.counters();
    before = run_start.clone();
    let whole_run = |rep: &mut Report, problem: String| {
        fail(
            rep,
            Failure {
                seed: opts.seed,
                index: u64::MAX,
                hook: Hook::Xdp,
                policy: "all",
                frame: Vec::new(),
                model: Parsed::NotIp,
                problem,
            },
        )
    };
    let rules_start = rule_totals(&h, max_rules)?;
    let stat = |h: &Harness, s: Stat| h.maps.stat(s).context("reading the stats map");
    let admitted_start = stat(&h, Stat::NewSourceAdmitted)?;
    let refused_start = stat(&h, Stat::NewSourceRefused)?;
    // Expected rule counter moves: [rule][verdict] packets, bytes.
    let mut rule_expect = vec![vec![(0u64, 0u64); N_VERDICTS as usize]; max_rules];
    let mut phase = 0;
    let mut i = 0u64;
    while rep.frames() < opts.frames {
        let p = phase_of(i, opts.frames);
        if p != phase {
            let slow = h.counters();
            if slow != before {
                whole_run(
                    &mut rep,
                    format!("counters read in one batch {before:?} disagree with the plain lookups {slow:?}"),
                );
            }
            phase = p;
            h.apply(&policies[p].1)
                .with_context(|| format!("applying fuzz policy {:?}", policies[p].0))?;
            before = h.counters();
        }
        let (name, policy) = (&policies[phase].0, &policies[phase].1);
        let (frame, origin) = frame(opts.seed, i, &corpus);
        let (parsed, feats) = model(&frame);
        let hook = hook_for(i, opts.tc_every);
        let out = run_one(
            &mut h,
            &mut reader,
            hook,
            &frame,
            &parsed,
            policy,
            &mut before,
        );

        *rep.origins.entry(origin).or_default() += 1;
        if out.refused {
            rep.tc_refused += 1;
        } else {
            match hook {
                Hook::Xdp => rep.xdp_frames += 1,
                Hook::Tc => rep.tc_frames += 1,
            }
            rep.bytes += frame.len() as u64;
            for (bit, fname) in feature::NAMES {
                if feats & bit != 0 {
                    *rep.features.entry(fname).or_default() += 1;
                }
            }
            if let Parsed::Malformed(why) = parsed {
                *rep.malformed_reasons.entry(why).or_default() += 1;
            }
        }
        if let Some(v) = out.verdict {
            let slot = match hook {
                Hook::Xdp => &mut rep.xdp_verdicts[v as usize],
                Hook::Tc => &mut rep.tc_verdicts[v as usize],
            };
            slot.0 += 1;
            slot.1 += frame.len() as u64;
            let rv = if v == Verdict::Challenged {
                XDP_TX
            } else {
                hook.action(v.drops())
            };
            *rep.returns.entry((hook_name(hook), rv)).or_default() += 1;
            if let (_, Some(r)) = expected(policy, &parsed) {
                let e = &mut rule_expect[r][v as usize];
                e.0 += 1;
                e.1 += frame.len() as u64;
                *rep.rule_hits
                    .entry(policy.rules[r].name.clone())
                    .or_default() += 1;
            }
        }
        if !out.problems.is_empty() {
            fail(
                &mut rep,
                Failure {
                    seed: opts.seed,
                    index: i,
                    hook,
                    policy: name,
                    frame,
                    model: parsed,
                    problem: out.problems.join("; "),
                },
            );
        }
        i += 1;
        if opts.progress_every > 0 && i.is_multiple_of(opts.progress_every) {
            eprintln!(
                "fuzz: {} / {} frames, {:.1} s, {} failures",
                rep.frames(),
                opts.frames,
                started.elapsed().as_secs_f64(),
                rep.failures.len() as u64 + rep.more_failures
            );
        }
    }

    // The whole run: every frame run was counted once, with its bytes.
    let end = h.counters();
    if end != before {
        whole_run(
            &mut rep,
            format!(
                "counters read in one batch {before:?} disagree with the plain lookups {end:?}"
            ),
        );
    }
    let total = delta(&run_start, &end);
    let (packets, bytes) = total
        .iter()
        .fold((0, 0), |(p, b), (dp, db)| (p + dp, b + db));
    let (frames_run, bytes_run) = (rep.frames(), rep.bytes);
    if packets != frames_run || bytes != bytes_run {
        whole_run(
            &mut rep,
            format!(
                "over the run the counters grew by {packets} packets / {bytes} bytes for {frames_run} frames / {bytes_run} bytes run"
            ),
        );
    }

    rep.new_sources_admitted = stat(&h, Stat::NewSourceAdmitted)? - admitted_start;
    rep.new_sources_refused = stat(&h, Stat::NewSourceRefused)? - refused_start;

    // Rule counters: what the model's rule matches predict, per verdict.
    let rules_end = rule_totals(&h, max_rules)?;
    for r in 0..max_rules {
        let got = delta(&rules_start[r], &rules_end[r]);
        if got != rule_expect[r] {
            let name = policies
                .iter()
                .find_map(|(_, p)| p.rules.get(r).map(|x| x.name.clone()))
                .unwrap_or_default();
            fail(
                &mut rep,
                Failure {
                    seed: opts.seed,
                    index: u64::MAX,
                    hook: Hook::Xdp,
                    policy: "all",
                    frame: Vec::new(),
                    model: Parsed::NotIp,
                    problem: format!(
                        "rule {r} ({name}) counters moved by {got:?} (packets, bytes per verdict), the reference parser's matches predict {:?}",
                        rule_expect[r]
                    ),
                },
            );
        }
    }
    rep.elapsed = started.elapsed();
    Ok(rep)
}

/// Frame `index` of a run (`frames` long, for its policy phase) replayed on
/// a fresh load through both hooks, described for a human.
pub fn replay(seed: u64, frames: u64, index: u64) -> Result<String> {
    let policies = policies();
    let corpus = corpus(seed);
    let (f, origin) = frame(seed, index, &corpus);
    let (parsed, feats) = model(&f);
    let phase = phase_of(index, frames);
    let (name, policy) = (&policies[phase].0, &policies[phase].1);
    let mut out = String::new();
    writeln!(
        out,
        "frame #{index} of seed {seed:#x} ({origin:?}, {} bytes, policy: {name}):\n  {}",
        f.len(),
        hex(&f)
    )?;
    let fnames: Vec<&str> = feature::NAMES
        .iter()
        .filter(|(b, _)| feats & b != 0)
        .map(|(_, n)| *n)
        .collect();
    writeln!(out, "  model: {parsed:?}; features: {}", fnames.join(", "))?;
    let (allowed, rule) = expected(policy, &parsed);
    writeln!(
        out,
        "  expected verdict: {}; rule: {}",
        allowed
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(" or "),
        rule.map(|r| policy.rules[r].name.as_str())
            .unwrap_or("none")
    )?;
    for hook in [Hook::Xdp, Hook::Tc] {
        let mut h = Harness::new(policy).context("loading the data plane")?;
        let mut reader = CounterReader::open(&h);
        let mut before = h.counters();
        let o = run_one(&mut h, &mut reader, hook, &f, &parsed, policy, &mut before);
        writeln!(
            out,
            "  {}: verdict {}{}{}",
            hook_name(hook),
            o.verdict.map(|v| v.name()).unwrap_or("-"),
            if o.refused {
                " (refused by the skb test run)"
            } else {
                ""
            },
            if o.problems.is_empty() {
                String::from(", ok")
            } else {
                format!(", PROBLEMS: {}", o.problems.join("; "))
            }
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn frames_are_deterministic_and_long_enough() {
        let c = corpus(1);
        for i in 0..2000 {
            let (a, oa) = frame(7, i, &c);
            let (b, ob) = frame(7, i, &c);
            assert_eq!((a.clone(), oa), (b, ob));
            assert!(a.len() >= ETH_HLEN && a.len() <= MAX_FRAME);
        }
        assert_ne!(frame(7, 1, &c).0, frame(8, 1, &c).0);
    }

    #[test]
    fn model_agrees_with_the_builder_on_valid_frames() {
        let src: IpAddr = "198.51.100.9".parse().unwrap();
        let f = Frame::ip(src, IpAddr::V4(GW4))
            .qinq(1, 2)
            .udp(1, 53, 4)
            .build();
        assert_eq!(
            model(&f).0,
            Parsed::Ip {
                src,
                proto: 17,
                l4: Some((53, 0))
            }
        );
        let src6: IpAddr = "2001:db8::1".parse().unwrap();
        let f = Frame::ip(src6, IpAddr::V6(GW6))
            .with_ipv6(|h| {
                h.ext = vec![
                    Ipv6Ext::HopByHop(vec![]),
                    Ipv6Ext::Fragment {
                        offset: 0,
                        more: true,
                        id: 1,
                    },
                ]
            })
            .tcp(1, 22, tcp_flags::SYN)
            .build();
        assert_eq!(
            model(&f).0,
            Parsed::Ip {
                src: src6,
                proto: 6,
                l4: Some((22, tcp_flags::SYN))
            }
        );
        let five = Frame::ip(src6, IpAddr::V6(GW6))
            .with_ipv6(|h| h.ext = vec![Ipv6Ext::DestOpts(vec![]); 5])
            .udp(1, 53, 0)
            .build();
        assert_eq!(
            model(&five).0,
            Parsed::Ip {
                src: src6,
                proto: 0,
                l4: None
            }
        );
        let mut three = Frame::ip(src, IpAddr::V4(GW4)).udp(1, 2, 0);
        for _ in 0..3 {
            three = three.vlan(1);
        }
        assert_eq!(
            model(&three.build()).0,
            Parsed::Malformed("three VLAN tags")
        );
    }

    #[test]
    fn every_fixture_malformed_row_is_malformed_to_the_model() {
        for f in fixtures::table() {
            let m = model(&f.frame).0;
            let want_malformed = f.expect.iter().any(|(v, _)| *v == Verdict::Malformed);
            assert_eq!(
                matches!(m, Parsed::Malformed(_)),
                want_malformed,
                "{}: model says {m:?}",
                f.name
            );
        }
    }

    #[test]
    fn phases_split_the_run() {
        assert_eq!(phase_of(0, 100), 0);
        assert_eq!(phase_of(64, 100), 0);
        assert_eq!(phase_of(65, 100), 1);
        assert_eq!(phase_of(80, 100), 2);
        assert_eq!(phase_of(92, 100), 3);
        assert_eq!(phase_of(150, 100), 3);
        assert_eq!(policies().len(), 4);
        assert_eq!(policies()[3].1.flood.new_sources_rate, 10);
        assert!(policies()[1].1.defaults.monitor);
    }
}
