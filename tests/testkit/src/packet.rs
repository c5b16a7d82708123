//! Frame builders for raw-socket injection and BPF_PROG_TEST_RUN fixtures.
//!
//! Two layers:
//! - small free functions (`eth`, `eth_vlan`, `ipv4_udp`, `ipv6_tcp`, ...) for the
//!   common, well-formed cases;
//! - [`Frame`], a builder whose every header field can be overridden, for
//!   malformed and unusual packets (bad IHL, short total length, fragments,
//!   IPv4 options, IPv6 extension headers, one or two VLAN tags, truncation).
//!
//! Everything the builder does not override is filled in correctly: lengths,
//! the IPv4 header checksum and the UDP/TCP/ICMP checksums (with the pseudo
//! header), so a frame built without overrides is accepted by the kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A MAC address.
pub type Mac = [u8; 6];

pub const BROADCAST_MAC: Mac = [0xff; 6];

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_LLDP: u16 = 0x88cc;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_NONE: u8 = 59;

/// TCP flag bits (the low byte of the flags field).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// IPv4 "don't fragment" and "more fragments" bits for [`Ipv4::flags`].
pub const IPV4_DF: u8 = 0b010;
pub const IPV4_MF: u8 = 0b001;

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn mac_to_string(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in mac.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(mac)
}

// ---------------------------------------------------------------------------
// Checksums

/// Adds 16-bit big-endian words of `data` to `acc` (odd trailing byte padded).
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum16(data, 0))
}

/// Checksum of an upper-layer segment including the pseudo header of `src`/`dst`
/// (both IPv4 or both IPv6).
pub fn l4_checksum(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> u16 {
    let mut acc = 0u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
            acc = sum16(&[0, protocol], acc);
            acc = sum16(&(segment.len() as u16).to_be_bytes(), acc);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
            acc = sum16(&(segment.len() as u32).to_be_bytes(), acc);
            acc = sum16(&[0, 0, 0, protocol], acc);
        }
        _ => panic!("l4_checksum: mixed address families {src} / {dst}"),
    }
    fold(sum16(segment, acc))
}

// ---------------------------------------------------------------------------
// Ethernet and VLAN

/// One 802.1Q (TPID 0x8100) or 802.1ad (TPID 0x88a8) tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    pub tpid: u16,
    /// PCP (3 bits), DEI (1 bit), VID (12 bits).
    pub tci: u16,
}

impl VlanTag {
    pub fn vid(&self) -> u16 {
        self.tci & 0x0fff
    }
    /// Sets the priority code point (0..=7).
    pub fn with_pcp(mut self, pcp: u8) -> Self {
        self.tci = (self.tci & 0x1fff) | (u16::from(pcp & 7) << 13);
        self
    }
    pub fn bytes(&self) -> [u8; 4] {
        let t = self.tpid.to_be_bytes();
        let c = self.tci.to_be_bytes();
        [t[0], t[1], c[0], c[1]]
    }
}

/// A VLAN tag with TPID `tpid` (0x8100 or 0x88a8) and VLAN id `vid`.
pub fn vlan_tag(tpid: u16, vid: u16) -> VlanTag {
    VlanTag {
        tpid,
        tci: vid & 0x0fff,
    }
}

/// An untagged Ethernet II frame.
pub fn eth(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    eth_vlan(dst, src, &[], ethertype, payload)
}

/// An Ethernet frame with `tags` (outermost first) before `ethertype`.
pub fn eth_vlan(dst: Mac, src: Mac, tags: &[VlanTag], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * tags.len() + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for t in tags {
        f.extend_from_slice(&t.bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

// ---------------------------------------------------------------------------
// Layer 3

/// An IPv4 header; every field can be overridden. `None` means "compute it".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    pub version: u8,
    /// Header length in 32-bit words; default `(20 + options) / 4`.
    pub ihl: Option<u8>,
    pub tos: u8,
    /// Default: header plus payload length.
    pub total_len: Option<u16>,
    pub id: u16,
    /// 3 bits: [`IPV4_DF`], [`IPV4_MF`].
    pub flags: u8,
    /// Fragment offset in 8-byte units (13 bits).
    pub frag_offset: u16,
    pub ttl: u8,
    /// Default: from the transport layer.
    pub protocol: Option<u8>,
    /// Default: the correct header checksum.
    pub checksum: Option<u16>,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Raw option bytes; padded with zeros (EOL) to a multiple of 4.
    pub options: Vec<u8>,
}

impl Ipv4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Ipv4 {
            version: 4,
            ihl: None,
            tos: 0,
            total_len: None,
            id: 0,
            flags: IPV4_DF,
            frag_offset: 0,
            ttl: 64,
            protocol: None,
            checksum: None,
            src,
            dst,
            options: Vec::new(),
        }
    }

    /// The header bytes for a payload of `payload_len` bytes whose protocol is
    /// `default_protocol` (unless overridden).
    pub fn header(&self, payload_len: usize, default_protocol: u8) -> Vec<u8> {
        let mut opts = self.options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let hlen = 20 + opts.len();
        let ihl = self.ihl.unwrap_or((hlen / 4) as u8);
        let total = self
            .total_len
            .unwrap_or_else(|| (hlen + payload_len).min(0xffff) as u16);
        let frag = (u16::from(self.flags & 7) << 13) | (self.frag_offset & 0x1fff);
        let mut h = Vec::with_capacity(hlen);
        h.push((self.version << 4) | (ihl & 0x0f));
        h.push(self.tos);
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&self.id.to_be_bytes());
        h.extend_from_slice(&frag.to_be_bytes());
        h.push(self.ttl);
        h.push(self.protocol.unwrap_or(default_protocol));
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&opts);
        let csum = self.checksum.unwrap_or_else(|| checksum(&h));
        h[10..12].copy_from_slice(&csum.to_be_bytes());
        h
    }
}

/// An IPv6 extension header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipv6Ext {
    /// Hop-by-hop options (type 0); data padded with Pad1 to a multiple of 8.
    HopByHop(Vec<u8>),
    /// Routing header (type 43): data starts with routing type, segments left.
    Routing(Vec<u8>),
    /// Fragment header (type 44). `offset` in 8-byte units.
    Fragment { offset: u16, more: bool, id: u32 },
    /// Destination options (type 60).
    DestOpts(Vec<u8>),
}

impl Ipv6Ext {
    pub fn header_type(&self) -> u8 {
        match self {
            Ipv6Ext::HopByHop(_) => 0,
            Ipv6Ext::Routing(_) => 43,
            Ipv6Ext::Fragment { .. } => 44,
            Ipv6Ext::DestOpts(_) => 60,
        }
    }

    fn encode(&self, next_header: u8) -> Vec<u8> {
        match self {
            Ipv6Ext::Fragment { offset, more, id } => {
                let fo = ((offset & 0x1fff) << 3) | u16::from(*more);
                let mut v = vec![next_header, 0];
                v.extend_from_slice(&fo.to_be_bytes());
                v.extend_from_slice(&id.to_be_bytes());
                v
            }
            Ipv6Ext::HopByHop(d) | Ipv6Ext::Routing(d) | Ipv6Ext::DestOpts(d) => {
                let mut v = vec![next_header, 0];
                v.extend_from_slice(d);
                while !v.len().is_multiple_of(8) || v.len() < 8 {
                    v.push(0);
                }
                v[1] = (v.len() / 8 - 1) as u8;
                v
            }
        }
    }
}

/// An IPv6 header with optional extension headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    pub version: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
    /// Default: extension headers plus upper-layer length.
    pub payload_len: Option<u16>,
    /// Default: the first extension header's type, else the transport protocol.
    pub next_header: Option<u8>,
    pub hop_limit: u8,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// Extension headers in order; each one's next-header field is filled in.
    pub ext: Vec<Ipv6Ext>,
}

impl Ipv6 {
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Ipv6 {
            version: 6,
            traffic_class: 0,
            flow_label: 0,
            payload_len: None,
            next_header: None,
            hop_limit: 64,
            src,
            dst,
            ext: Vec::new(),
        }
    }

    /// The fixed header plus extension headers, for an upper-layer payload of
    /// `upper_len` bytes with protocol `upper_protocol`.
    pub fn header(&self, upper_len: usize, upper_protocol: u8) -> Vec<u8> {
        let mut exts = Vec::new();
        for (i, e) in self.ext.iter().enumerate() {
            let nh = self
                .ext
                .get(i + 1)
                .map(Ipv6Ext::header_type)
                .unwrap_or(upper_protocol);
            exts.extend_from_slice(&e.encode(nh));
        }
        let first = self
            .ext
            .first()
            .map(Ipv6Ext::header_type)
            .unwrap_or(upper_protocol);
        let plen = self
            .payload_len
            .unwrap_or_else(|| (exts.len() + upper_len).min(0xffff) as u16);
        let vtf = (u32::from(self.version) << 28)
            | (u32::from(self.traffic_class) << 20)
            | (self.flow_label & 0xfffff);
        let mut h = Vec::with_capacity(40 + exts.len());
        h.extend_from_slice(&vtf.to_be_bytes());
        h.extend_from_slice(&plen.to_be_bytes());
        h.push(self.next_header.unwrap_or(first));
        h.push(self.hop_limit);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&exts);
        h
    }
}

/// What follows the Ethernet header (and tags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L3 {
    Ipv4(Ipv4),
    Ipv6(Ipv6),
    /// Anything else (ARP, LLDP, garbage): `bytes` after the ethertype.
    Raw {
        ethertype: u16,
        bytes: Vec<u8>,
    },
}

// ---------------------------------------------------------------------------
// Layer 4

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Udp {
    pub sport: u16,
    pub dport: u16,
    /// Default: 8 + payload.
    pub length: Option<u16>,
    /// Default: the correct checksum (`Some(0)` means "no checksum" on IPv4).
    pub checksum: Option<u16>,
    pub payload: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// Header length in 32-bit words; default `(20 + options) / 4`.
    pub data_offset: Option<u8>,
    pub flags: u8,
    pub window: u16,
    pub checksum: Option<u16>,
    pub urgent: u16,
    /// Raw option bytes, padded with zeros to a multiple of 4.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

/// ICMP (on IPv4) or ICMPv6 (on IPv6), chosen by the network layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Icmp {
    pub icmp_type: u8,
    pub code: u8,
    pub checksum: Option<u16>,
    /// The 4 bytes after the checksum (id and sequence for echo).
    pub rest: [u8; 4],
    pub payload: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    None,
    Udp(Udp),
    Tcp(Tcp),
    Icmp(Icmp),
    /// Arbitrary bytes with IP protocol number `protocol`.
    Raw {
        protocol: u8,
        bytes: Vec<u8>,
    },
}

impl L4 {
    fn protocol(&self, v6: bool) -> u8 {
        match self {
            L4::None => IPPROTO_NONE,
            L4::Udp(_) => IPPROTO_UDP,
            L4::Tcp(_) => IPPROTO_TCP,
            L4::Icmp(_) if v6 => IPPROTO_ICMPV6,
            L4::Icmp(_) => IPPROTO_ICMP,
            L4::Raw { protocol, .. } => *protocol,
        }
    }

    /// The segment bytes, checksummed for `src`/`dst` (None for non-IP).
    fn encode(&self, addrs: Option<(IpAddr, IpAddr)>) -> Vec<u8> {
        let v6 = matches!(addrs, Some((IpAddr::V6(_), _)));
        let proto = self.protocol(v6);
        let csum = |seg: &[u8]| match addrs {
            Some((s, d)) => l4_checksum(s, d, proto, seg),
            None => 0,
        };
        match self {
            L4::None => Vec::new(),
            L4::Raw { bytes, .. } => bytes.clone(),
            L4::Udp(u) => {
                let len = u
                    .length
                    .unwrap_or_else(|| (8 + u.payload.len()).min(0xffff) as u16);
                let mut s = Vec::with_capacity(8 + u.payload.len());
                s.extend_from_slice(&u.sport.to_be_bytes());
                s.extend_from_slice(&u.dport.to_be_bytes());
                s.extend_from_slice(&len.to_be_bytes());
                s.extend_from_slice(&[0, 0]);
                s.extend_from_slice(&u.payload);
                let c = u.checksum.unwrap_or_else(|| match csum(&s) {
                    0 => 0xffff, // 0 means "none" in UDP
                    c => c,
                });
                s[6..8].copy_from_slice(&c.to_be_bytes());
                s
            }
            L4::Tcp(t) => {
                let mut opts = t.options.clone();
                while !opts.len().is_multiple_of(4) {
                    opts.push(0);
                }
                let doff = t.data_offset.unwrap_or(((20 + opts.len()) / 4) as u8);
                let mut s = Vec::with_capacity(20 + opts.len() + t.payload.len());
                s.extend_from_slice(&t.sport.to_be_bytes());
                s.extend_from_slice(&t.dport.to_be_bytes());
                s.extend_from_slice(&t.seq.to_be_bytes());
                s.extend_from_slice(&t.ack.to_be_bytes());
                s.push((doff & 0x0f) << 4);
                s.push(t.flags);
                s.extend_from_slice(&t.window.to_be_bytes());
                s.extend_from_slice(&[0, 0]);
                s.extend_from_slice(&t.urgent.to_be_bytes());
                s.extend_from_slice(&opts);
                s.extend_from_slice(&t.payload);
                let c = t.checksum.unwrap_or_else(|| csum(&s));
                s[16..18].copy_from_slice(&c.to_be_bytes());
                s
            }
            L4::Icmp(i) => {
                let mut s = vec![i.icmp_type, i.code, 0, 0];
                s.extend_from_slice(&i.rest);
                s.extend_from_slice(&i.payload);
                // ICMPv4 has no pseudo header; ICMPv6 does.
                let c = i
                    .checksum
                    .unwrap_or_else(|| if v6 { csum(&s) } else { checksum(&s) });
                s[2..4].copy_from_slice(&c.to_be_bytes());
                s
            }
        }
    }
}

/// Deterministic payload filler: `0, 1, 2, ...` wrapping.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

// ---------------------------------------------------------------------------
// The builder

/// A whole Ethernet frame; build with [`Frame::build`].
///
/// ```
/// use testkit::packet::*;
/// let f = Frame::ipv4("192.0.2.2".parse().unwrap(), "192.0.2.1".parse().unwrap())
///     .qinq(100, 10)
///     .udp(4000, 53, 32)
///     .build();
/// assert_eq!(&f[12..14], &[0x88, 0xa8]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    /// Outermost first (0, 1 or 2 in practice; more are allowed).
    pub tags: Vec<VlanTag>,
    /// Overrides the ethertype after the tags (default from `l3`).
    pub ethertype: Option<u16>,
    pub l3: L3,
    pub l4: L4,
    /// Cut the finished frame to this many bytes.
    pub truncate: Option<usize>,
    /// Pad the finished frame with zeros to at least this many bytes
    /// (e.g. 60, the Ethernet minimum without FCS).
    pub pad_to: Option<usize>,
}

/// Default MACs (locally administered) when none are set.
pub const DEFAULT_DST_MAC: Mac = [0x02, 0, 0, 0, 0xff, 0x01];
pub const DEFAULT_SRC_MAC: Mac = [0x02, 0, 0, 0, 0xff, 0x02];

impl Frame {
    fn with_l3(l3: L3) -> Self {
        Frame {
            dst_mac: DEFAULT_DST_MAC,
            src_mac: DEFAULT_SRC_MAC,
            tags: Vec::new(),
            ethertype: None,
            l3,
            l4: L4::None,
            truncate: None,
            pad_to: None,
        }
    }

    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Self::with_l3(L3::Ipv4(Ipv4::new(src, dst)))
    }

    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Self::with_l3(L3::Ipv6(Ipv6::new(src, dst)))
    }

    /// IPv4 or IPv6 by the addresses. Panics on mixed families.
    pub fn ip(src: IpAddr, dst: IpAddr) -> Self {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Self::ipv4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => Self::ipv6(s, d),
            _ => panic!("Frame::ip: mixed address families {src} / {dst}"),
        }
    }

    /// A non-IP frame: `bytes` after `ethertype`.
    pub fn raw(ethertype: u16, bytes: Vec<u8>) -> Self {
        Self::with_l3(L3::Raw { ethertype, bytes })
    }

    /// A broadcast ARP request "who has `target_ip`, tell `sender_ip`".
    pub fn arp_request(sender_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Self {
        let mut b = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
        b.extend_from_slice(&sender_mac);
        b.extend_from_slice(&sender_ip.octets());
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&target_ip.octets());
        Self::raw(ETH_P_ARP, b).macs(BROADCAST_MAC, sender_mac)
    }

    pub fn macs(mut self, dst: Mac, src: Mac) -> Self {
        self.dst_mac = dst;
        self.src_mac = src;
        self
    }

    /// Appends a tag (call outermost first).
    pub fn tag(mut self, tpid: u16, vid: u16) -> Self {
        self.tags.push(vlan_tag(tpid, vid));
        self
    }

    /// Appends an 802.1Q (0x8100) tag.
    pub fn vlan(self, vid: u16) -> Self {
        self.tag(ETH_P_8021Q, vid)
    }

    /// Outer 802.1ad (0x88a8) tag and inner 802.1Q tag.
    pub fn qinq(self, outer_vid: u16, inner_vid: u16) -> Self {
        self.tag(ETH_P_8021AD, outer_vid)
            .tag(ETH_P_8021Q, inner_vid)
    }

    pub fn ethertype(mut self, ethertype: u16) -> Self {
        self.ethertype = Some(ethertype);
        self
    }

    /// UDP with a `payload_len`-byte pattern payload.
    pub fn udp(self, sport: u16, dport: u16, payload_len: usize) -> Self {
        self.udp_payload(sport, dport, &pattern(payload_len))
    }

    pub fn udp_payload(mut self, sport: u16, dport: u16, payload: &[u8]) -> Self {
        self.l4 = L4::Udp(Udp {
            sport,
            dport,
            length: None,
            checksum: None,
            payload: payload.to_vec(),
        });
        self
    }

    /// A TCP segment with `flags` (see [`tcp_flags`]) and no payload.
    pub fn tcp(mut self, sport: u16, dport: u16, flags: u8) -> Self {
        self.l4 = L4::Tcp(Tcp {
            sport,
            dport,
            seq: 1,
            ack: if flags & tcp_flags::ACK != 0 { 1 } else { 0 },
            data_offset: None,
            flags,
            window: 65535,
            checksum: None,
            urgent: 0,
            options: Vec::new(),
            payload: Vec::new(),
        });
        self
    }

    /// ICMP (IPv4) or ICMPv6 (IPv6) message with type/code and no body.
    pub fn icmp(mut self, icmp_type: u8, code: u8) -> Self {
        self.l4 = L4::Icmp(Icmp {
            icmp_type,
            code,
            checksum: None,
            rest: [0; 4],
            payload: Vec::new(),
        });
        self
    }

    /// Echo request (type 8 on IPv4, 128 on IPv6) with a 32-byte payload.
    pub fn icmp_echo(mut self, id: u16, seq: u16) -> Self {
        let t = if matches!(self.l3, L3::Ipv6(_)) {
            128
        } else {
            8
        };
        let i = id.to_be_bytes();
        let s = seq.to_be_bytes();
        self.l4 = L4::Icmp(Icmp {
            icmp_type: t,
            code: 0,
            checksum: None,
            rest: [i[0], i[1], s[0], s[1]],
            payload: pattern(32),
        });
        self
    }

    /// Arbitrary transport bytes with IP protocol `protocol`.
    pub fn l4_raw(mut self, protocol: u8, bytes: Vec<u8>) -> Self {
        self.l4 = L4::Raw { protocol, bytes };
        self
    }

    /// Edits the IPv4 header. Panics if this is not an IPv4 frame.
    pub fn with_ipv4(mut self, f: impl FnOnce(&mut Ipv4)) -> Self {
        match &mut self.l3 {
            L3::Ipv4(h) => f(h),
            other => panic!("with_ipv4 on a non-IPv4 frame: {other:?}"),
        }
        self
    }

    /// Edits the IPv6 header. Panics if this is not an IPv6 frame.
    pub fn with_ipv6(mut self, f: impl FnOnce(&mut Ipv6)) -> Self {
        match &mut self.l3 {
            L3::Ipv6(h) => f(h),
            other => panic!("with_ipv6 on a non-IPv6 frame: {other:?}"),
        }
        self
    }

    /// Edits the transport layer (e.g. to override a checksum or a length).
    pub fn with_l4(mut self, f: impl FnOnce(&mut L4)) -> Self {
        f(&mut self.l4);
        self
    }

    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate = Some(len);
        self
    }

    pub fn pad_to(mut self, len: usize) -> Self {
        self.pad_to = Some(len);
        self
    }

    /// The source address of the IP layer, if any.
    pub fn src_ip(&self) -> Option<IpAddr> {
        match &self.l3 {
            L3::Ipv4(h) => Some(h.src.into()),
            L3::Ipv6(h) => Some(h.src.into()),
            L3::Raw { .. } => None,
        }
    }

    /// The ethertype after the tags.
    pub fn inner_ethertype(&self) -> u16 {
        self.ethertype.unwrap_or(match &self.l3 {
            L3::Ipv4(_) => ETH_P_IP,
            L3::Ipv6(_) => ETH_P_IPV6,
            L3::Raw { ethertype, .. } => *ethertype,
        })
    }

    /// Everything after the ethertype: the IP packet (or raw bytes).
    pub fn l3_bytes(&self) -> Vec<u8> {
        match &self.l3 {
            L3::Ipv4(h) => {
                let seg = self.l4.encode(Some((h.src.into(), h.dst.into())));
                let mut p = h.header(seg.len(), self.l4.protocol(false));
                p.extend_from_slice(&seg);
                p
            }
            L3::Ipv6(h) => {
                let seg = self.l4.encode(Some((h.src.into(), h.dst.into())));
                let mut p = h.header(seg.len(), self.l4.protocol(true));
                p.extend_from_slice(&seg);
                p
            }
            L3::Raw { bytes, .. } => {
                let mut p = bytes.clone();
                p.extend_from_slice(&self.l4.encode(None));
                p
            }
        }
    }

    /// The finished frame bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut f = eth_vlan(
            self.dst_mac,
            self.src_mac,
            &self.tags,
            self.inner_ethertype(),
            &self.l3_bytes(),
        );
        if let Some(n) = self.pad_to {
            if f.len() < n {
                f.resize(n, 0);
            }
        }
        if let Some(n) = self.truncate {
            f.truncate(n);
        }
        f
    }
}

// ---------------------------------------------------------------------------
// Shorthands returning the IP packet (no Ethernet header)

/// An IPv4/UDP packet (no Ethernet header) with valid checksums.
pub fn ipv4_udp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload_len: usize,
) -> Vec<u8> {
    Frame::ipv4(src, dst)
        .udp(sport, dport, payload_len)
        .l3_bytes()
}

/// An IPv6/UDP packet (no Ethernet header) with a valid checksum.
pub fn ipv6_udp(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    payload_len: usize,
) -> Vec<u8> {
    Frame::ipv6(src, dst)
        .udp(sport, dport, payload_len)
        .l3_bytes()
}

/// An IPv4/TCP packet (no Ethernet header), e.g. `flags = tcp_flags::SYN`.
pub fn ipv4_tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    Frame::ipv4(src, dst).tcp(sport, dport, flags).l3_bytes()
}

/// An IPv6/TCP packet (no Ethernet header).
pub fn ipv6_tcp(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    Frame::ipv6(src, dst).tcp(sport, dport, flags).l3_bytes()
}

/// An IPv4 ICMP echo request (no Ethernet header).
pub fn ipv4_icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Vec<u8> {
    Frame::ipv4(src, dst).icmp_echo(id, seq).l3_bytes()
}

/// An ICMPv6 echo request (no Ethernet header).
pub fn ipv6_icmp_echo(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16) -> Vec<u8> {
    Frame::ipv6(src, dst).icmp_echo(id, seq).l3_bytes()
}

#[cfg(test)]
mod unit {
    use super::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_header_checksum_matches_known_packet() {
        // The classic example header: 4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7
        let h = Ipv4 {
            total_len: Some(0x73),
            ..Ipv4::new(v4("192.168.0.1"), v4("192.168.0.199"))
        }
        .header(0, IPPROTO_UDP);
        let expected: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(h, expected);
        // A header with a correct checksum sums to zero.
        assert_eq!(checksum(&h), 0);
    }

    #[test]
    fn udp_checksums_verify() {
        let p = ipv4_udp(v4("192.0.2.2"), v4("192.0.2.1"), 1234, 5678, 33);
        assert_eq!(p.len(), 20 + 8 + 33);
        assert_eq!(checksum(&p[..20]), 0);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 61);
        assert_eq!(p[9], IPPROTO_UDP);
        assert_eq!(
            l4_checksum(v4("192.0.2.2").into(), v4("192.0.2.1").into(), 17, &p[20..]),
            0
        );

        let p6 = ipv6_udp(v6("2001:db8:1::2"), v6("2001:db8:1::1"), 1, 2, 10);
        assert_eq!(p6.len(), 40 + 18);
        assert_eq!(u16::from_be_bytes([p6[4], p6[5]]), 18);
        assert_eq!(p6[6], IPPROTO_UDP);
        assert_eq!(
            l4_checksum(
                v6("2001:db8:1::2").into(),
                v6("2001:db8:1::1").into(),
                17,
                &p6[40..]
            ),
            0
        );
    }

    #[test]
    fn tcp_and_icmp() {
        let p = ipv4_tcp(
            v4("198.51.100.2"),
            v4("198.51.100.1"),
            40000,
            22,
            tcp_flags::SYN,
        );
        assert_eq!(p.len(), 40);
        assert_eq!(p[9], IPPROTO_TCP);
        assert_eq!(p[20 + 13], tcp_flags::SYN);
        assert_eq!(p[20 + 12] >> 4, 5);
        assert_eq!(
            l4_checksum(
                v4("198.51.100.2").into(),
                v4("198.51.100.1").into(),
                6,
                &p[20..]
            ),
            0
        );

        let p6 = ipv6_tcp(
            v6("2001:db8:2::2"),
            v6("2001:db8:2::1"),
            1,
            22,
            tcp_flags::SYN | tcp_flags::ACK,
        );
        assert_eq!(p6[40 + 13], 0x12);
        assert_eq!(
            l4_checksum(
                v6("2001:db8:2::2").into(),
                v6("2001:db8:2::1").into(),
                6,
                &p6[40..]
            ),
            0
        );

        let i4 = ipv4_icmp_echo(v4("192.0.2.2"), v4("192.0.2.1"), 7, 1);
        assert_eq!(i4[9], IPPROTO_ICMP);
        assert_eq!(i4[20], 8);
        assert_eq!(checksum(&i4[20..]), 0);

        let i6 = ipv6_icmp_echo(v6("2001:db8:1::2"), v6("2001:db8:1::1"), 7, 1);
        assert_eq!(i6[6], IPPROTO_ICMPV6);
        assert_eq!(i6[40], 128);
        assert_eq!(
            l4_checksum(
                v6("2001:db8:1::2").into(),
                v6("2001:db8:1::1").into(),
                58,
                &i6[40..]
            ),
            0
        );
    }

    #[test]
    fn vlan_layouts() {
        let dst = [1, 2, 3, 4, 5, 6];
        let src = [7, 8, 9, 10, 11, 12];
        let f = Frame::ipv4(v4("192.0.2.2"), v4("192.0.2.1"))
            .macs(dst, src)
            .vlan(10)
            .udp(1, 2, 0)
            .build();
        assert_eq!(&f[..6], &dst);
        assert_eq!(&f[6..12], &src);
        assert_eq!(&f[12..18], &[0x81, 0x00, 0x00, 10, 0x08, 0x00]);
        assert_eq!(f.len(), 18 + 28);

        let q = Frame::ipv6(v6("2001:db8:2::2"), v6("2001:db8:2::1"))
            .qinq(100, 4095)
            .udp(1, 2, 0)
            .build();
        assert_eq!(
            &q[12..22],
            &[0x88, 0xa8, 0x00, 100, 0x81, 0x00, 0x0f, 0xff, 0x86, 0xdd]
        );
        assert_eq!(
            vlan_tag(0x8100, 5).with_pcp(7).bytes(),
            [0x81, 0x00, 0xe0, 5]
        );

        let manual = eth_vlan(
            dst,
            src,
            &[vlan_tag(ETH_P_8021Q, 10)],
            ETH_P_IP,
            &ipv4_udp(v4("192.0.2.2"), v4("192.0.2.1"), 1, 2, 0),
        );
        assert_eq!(manual, f);
    }

    #[test]
    fn overrides_make_malformed_headers() {
        let f = Frame::ipv4(v4("192.0.2.2"), v4("192.0.2.1"))
            .udp(1, 2, 4)
            .with_ipv4(|h| {
                h.ihl = Some(4);
                h.total_len = Some(10);
                h.flags = IPV4_MF;
                h.frag_offset = 3;
            })
            .build();
        let ip = &f[14..];
        assert_eq!(ip[0], 0x44);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 10);
        assert_eq!(u16::from_be_bytes([ip[6], ip[7]]), 0x2003);
        assert_eq!(
            checksum(&ip[..20]),
            0,
            "checksum still computed over the bytes"
        );

        let o = Frame::ipv4(v4("192.0.2.2"), v4("192.0.2.1"))
            .udp(1, 2, 0)
            .with_ipv4(|h| h.options = vec![0x94, 0x04, 0, 0, 1]) // router alert + 1
            .build();
        assert_eq!(o[14], 0x47);
        assert_eq!(checksum(&o[14..14 + 28]), 0);
        assert_eq!(u16::from_be_bytes([o[16], o[17]]), 28 + 8);

        let t = Frame::ipv4(v4("192.0.2.2"), v4("192.0.2.1"))
            .udp(1, 2, 10)
            .truncate(20)
            .build();
        assert_eq!(t.len(), 20);
        let p = Frame::arp_request([2, 0, 0, 0, 0, 1], v4("192.0.2.2"), v4("192.0.2.1"))
            .pad_to(60)
            .build();
        assert_eq!(p.len(), 60);
        assert_eq!(&p[12..14], &[0x08, 0x06]);
    }

    #[test]
    fn ipv6_extension_chain() {
        let f = Frame::ipv6(v6("2001:db8:2::2"), v6("2001:db8:2::1"))
            .with_ipv6(|h| {
                h.ext = vec![
                    Ipv6Ext::HopByHop(vec![]),
                    Ipv6Ext::Fragment {
                        offset: 0,
                        more: true,
                        id: 9,
                    },
                ]
            })
            .udp(1, 2, 8)
            .build();
        let ip = &f[14..];
        assert_eq!(ip[6], 0, "first next header is hop-by-hop");
        assert_eq!(&ip[40..42], &[44, 0], "hbh -> fragment, 8 bytes");
        assert_eq!(ip[48], IPPROTO_UDP, "fragment -> udp");
        assert_eq!(&ip[50..52], &[0, 1], "offset 0, more fragments");
        assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 8 + 8 + 16);
        assert_eq!(
            l4_checksum(
                v6("2001:db8:2::2").into(),
                v6("2001:db8:2::1").into(),
                17,
                &ip[56..]
            ),
            0
        );
    }

    #[test]
    fn mac_parse_roundtrip() {
        let m = [0x02, 0xab, 0, 1, 2, 0xff];
        assert_eq!(parse_mac(&mac_to_string(&m)), Some(m));
        assert_eq!(parse_mac("02:ab:00:01:02"), None);
    }
}
