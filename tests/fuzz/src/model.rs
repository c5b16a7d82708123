//! The reference model: what the data plane must make of a frame (a
//! parser written from the documented rules, independent of the program),
//! and which verdicts a policy allows for it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use firewall_common::Verdict;
use firewall_user::policy::Policy;
use testkit::packet::{self, tcp_flags};

use crate::mutator::be16;
use crate::ETH_HLEN;

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

#[cfg(test)]
mod unit {
    use super::*;
    use crate::generator::{GW4, GW6};
    use testkit::{
        fixtures,
        packet::{Frame, Ipv6Ext},
    };

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
}
