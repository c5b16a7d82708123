//! Frames to run: structured frames from the packet builder with random
//! choices, mutations of a corpus, and random bytes behind an interesting
//! ethertype; [`frame`] picks among them for frame `index` of a run.

use std::net::{Ipv4Addr, Ipv6Addr};

use testkit::{
    fixtures,
    packet::{self, tcp_flags, Frame, Ipv6Ext, L4},
};

use crate::mutator::{mutate, put16};
use crate::rng::{mix, Rng};
use crate::{ETH_HLEN, MAX_FRAME};

pub(crate) const GW4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub(crate) const GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

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

pub(crate) fn tpid(rng: &mut Rng) -> u16 {
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
}
