//! Frame parsing: Ethernet, up to two VLAN tags, IPv4/IPv6, TCP/UDP ports.

use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::mem::read;

const ETH_HLEN: usize = EthHdr::LEN;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
pub(crate) const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
pub(crate) const IPV6_HLEN: usize = Ipv6Hdr::LEN;
/// IPv6 extension headers walked before giving up on finding L4.
const MAX_EXT_HEADERS: usize = 4;

/// Why a frame is `malformed`.
pub struct Malformed;

/// What the decision needs from an IP packet.
#[derive(Clone, Copy)]
pub struct Packet {
    /// 4 or 6.
    pub family: u8,
    /// Source address; IPv4 uses the first 4 bytes.
    pub src: [u8; 16],
    /// L4 protocol, 0 if unknown (beyond the extension headers walked).
    pub proto: u8,
    /// Whether `dst_port`/`tcp_flags` were read (not in later fragments).
    pub has_l4: bool,
    pub dst_port: u16,
    pub tcp_flags: u8,
    /// Offsets of the IP header and of the L4 header (valid with `has_l4`).
    pub l3: u16,
    pub l4: u16,
}

pub enum Frame {
    NotIp,
    Ip(Packet),
}

#[inline(always)]
pub fn parse(data: usize, end: usize) -> Result<Frame, Malformed> {
    let mut proto: u16 = u16::from_be(read(data, end, 12).ok_or(Malformed)?);
    let mut off = ETH_HLEN;
    // 802.1Q / 802.1ad: look through up to two tags.
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = u16::from_be(read(data, end, off + 2).ok_or(Malformed)?);
        off += 4;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = u16::from_be(read(data, end, off + 2).ok_or(Malformed)?);
            off += 4;
            // A third tag is no frame we know how to read; passing it
            // unlimited would be a way around the limits.
            if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
                return Err(Malformed);
            }
        }
    }
    match proto {
        ETH_P_IP => ipv4(data, end, off).map(Frame::Ip),
        ETH_P_IPV6 => ipv6(data, end, off).map(Frame::Ip),
        _ => Ok(Frame::NotIp),
    }
}

#[inline(always)]
fn ipv4(data: usize, end: usize, off: usize) -> Result<Packet, Malformed> {
    // The fixed header must be there whatever IHL says.
    let hdr: Ipv4Hdr = read(data, end, off).ok_or(Malformed)?;
    let vihl = hdr.vihl;
    if vihl >> 4 != 4 {
        return Err(Malformed);
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(Malformed);
    }
    let avail = end - (data + off);
    let tot_len = u16::from_be_bytes(hdr.tot_len) as usize;
    // Total length may be shorter than the frame (Ethernet padding), never
    // longer, and never shorter than the header.
    if ihl > avail || tot_len < ihl || tot_len > avail {
        return Err(Malformed);
    }
    let frag = u16::from_be_bytes(hdr.frags) & 0x1fff;
    let mut pkt = Packet {
        family: 4,
        src: [0; 16],
        proto: hdr.proto,
        has_l4: false,
        dst_port: 0,
        tcp_flags: 0,
        l3: off as u16,
        l4: (off + ihl) as u16,
    };
    pkt.src[..4].copy_from_slice(&hdr.src_addr);
    if frag == 0 {
        l4(data, end, off + ihl, tot_len - ihl, &mut pkt)?;
    }
    Ok(pkt)
}

#[inline(always)]
fn ipv6(data: usize, end: usize, off: usize) -> Result<Packet, Malformed> {
    let hdr: Ipv6Hdr = read(data, end, off).ok_or(Malformed)?;
    if hdr.vcf[0] >> 4 != 6 {
        return Err(Malformed);
    }
    let payload = u16::from_be_bytes(hdr.payload_len) as usize;
    let avail = end - (data + off + IPV6_HLEN);
    if payload > avail {
        return Err(Malformed);
    }
    let mut pkt = Packet {
        family: 6,
        src: [0; 16],
        proto: hdr.next_hdr,
        has_l4: false,
        dst_port: 0,
        tcp_flags: 0,
        l3: off as u16,
        l4: 0,
    };
    pkt.src = hdr.src_addr;
    let mut next = hdr.next_hdr;
    let mut l4_off = off + IPV6_HLEN;
    let mut left = payload;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => {
                let ext: [u8; 2] = read(data, end, l4_off).ok_or(Malformed)?;
                let len = (ext[1] as usize + 1) * 8;
                if len > left {
                    return Err(Malformed);
                }
                next = ext[0];
                l4_off += len;
                left -= len;
            }
            // Fragment header: 8 bytes; only the first fragment has L4.
            44 => {
                let ext: [u8; 4] = read(data, end, l4_off).ok_or(Malformed)?;
                if left < 8 {
                    return Err(Malformed);
                }
                next = ext[0];
                l4_off += 8;
                left -= 8;
                if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
                    pkt.proto = next;
                    return Ok(pkt);
                }
            }
            _ => break,
        }
    }
    pkt.proto = next;
    if matches!(next, 0 | 43 | 60 | 44) {
        // More extension headers than walked: no L4 for rules.
        pkt.proto = 0;
        return Ok(pkt);
    }
    pkt.l4 = l4_off as u16;
    l4(data, end, l4_off, left, &mut pkt)?;
    Ok(pkt)
}

/// Read ports and TCP flags; `len` is what the IP header says follows.
#[inline(always)]
fn l4(data: usize, end: usize, off: usize, len: usize, pkt: &mut Packet) -> Result<(), Malformed> {
    match pkt.proto {
        IPPROTO_TCP => {
            // Raw bytes: one bounds check the verifier can follow for the
            // ports (2..4), data offset (12) and flags (13).
            let tcp: [u8; TcpHdr::LEN] = read(data, end, off).ok_or(Malformed)?;
            let doff = (tcp[12] >> 4) as usize * 4;
            if len < TcpHdr::LEN || doff < TcpHdr::LEN || doff > len {
                return Err(Malformed);
            }
            pkt.dst_port = u16::from_be_bytes([tcp[2], tcp[3]]);
            pkt.tcp_flags = tcp[13];
            pkt.has_l4 = true;
        }
        IPPROTO_UDP => {
            let udp: UdpHdr = read(data, end, off).ok_or(Malformed)?;
            if len < UdpHdr::LEN {
                return Err(Malformed);
            }
            pkt.dst_port = u16::from_be_bytes(udp.dst);
            pkt.has_l4 = true;
        }
        _ => {}
    }
    Ok(())
}
