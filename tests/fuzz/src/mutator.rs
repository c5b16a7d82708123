//! Mutations of a frame aimed at its headers: bit flips, interesting
//! values at header fields, byte insertion and deletion, truncation,
//! extension, VLAN tag insertion and removal, splices with another frame.

use testkit::packet;

use crate::generator::tpid;
use crate::rng::Rng;
use crate::MAX_FRAME;

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

pub(crate) fn be16(f: &[u8], off: usize) -> Option<u16> {
    f.get(off..off + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
}

pub(crate) fn put16(f: &mut [u8], off: usize, v: u16) {
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
