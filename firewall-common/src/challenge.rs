//! The SYN challenge's cookie and the state it shares between the
//! controller and the data plane.
//!
//! A SYN from an unvalidated source is answered with a SYN-ACK whose
//! acknowledgment number is `cookie(...)` and deliberately not ISN+1: the
//! client's TCP answers that with a RST whose sequence number is the cookie
//! (RFC 9293, 3.10.7.3). A forged source never sees the SYN-ACK, so it
//! cannot send that RST. The cookie is SipHash-1-3 under a 128-bit key the
//! controller rotates, over the addresses, the ports and the key's epoch
//! (the time slot); the previous epoch's key stays valid for one slot.

/// Keys of the current and the previous epoch: `keys[epoch & 1]` is
/// current. Epoch 0 means no key was written yet: nothing is challenged.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChallengeKey {
    pub epoch: u32,
    pub _pad: u32,
    pub keys: [[u64; 2]; 2],
}

impl ChallengeKey {
    /// The key of `epoch`, if it is the current or the previous one.
    #[inline(always)]
    pub fn key(&self, epoch: u32) -> &[u64; 2] {
        &self.keys[(epoch & 1) as usize]
    }
}

/// What the packet program hands to the challenge program (tail call),
/// in a per-CPU slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handoff {
    /// `ANSWER` or `CHECK`.
    pub action: u32,
    /// The rule whose counters the verdict also goes to (`u32::MAX`: none).
    pub rule: u32,
    /// Bytes counted for the verdict.
    pub len: u64,
}

/// Answer a SYN with a challenge.
pub const ANSWER: u32 = 1;
/// Check a RST against the cookie.
pub const CHECK: u32 = 2;

/// How long an epoch lasts; a cookie is valid for one to two of them.
pub const EPOCH_SECS: u64 = 30;

/// The flow a cookie is bound to, as the client's SYN and RST carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// 4 or 6; IPv4 addresses in the first 4 bytes.
    pub family: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
}

/// The cookie of `flow` under `key` in `epoch`.
#[inline(always)]
pub fn cookie(key: &[u64; 2], epoch: u32, flow: &Flow) -> u32 {
    let ports = (flow.src_port as u64) | ((flow.dst_port as u64) << 16) | ((epoch as u64) << 32);
    let h = if flow.family == 4 {
        let a = u32::from_le_bytes([flow.src[0], flow.src[1], flow.src[2], flow.src[3]]) as u64
            | (u32::from_le_bytes([flow.dst[0], flow.dst[1], flow.dst[2], flow.dst[3]]) as u64)
                << 32;
        sip13(key, &[a, ports], 16)
    } else {
        sip13(
            key,
            &[
                word(&flow.src, 0),
                word(&flow.src, 8),
                word(&flow.dst, 0),
                word(&flow.dst, 8),
                ports,
            ],
            40,
        )
    };
    (h ^ (h >> 32)) as u32
}

#[inline(always)]
fn word(b: &[u8; 16], at: usize) -> u64 {
    u64::from_le_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}

/// SipHash-1-3 of a message of whole little-endian words (`len` bytes).
/// One compression round per word and three to finish: the cookie needs a
/// keyed function an off-path source cannot predict, computed in a few
/// hundred instructions per packet.
#[inline(always)]
pub fn sip13(key: &[u64; 2], words: &[u64], len: u8) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    for &m in words {
        v[3] ^= m;
        round(&mut v);
        v[0] ^= m;
    }
    let b = (len as u64) << 56;
    v[3] ^= b;
    round(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    round(&mut v);
    round(&mut v);
    round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[inline(always)]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    extern crate std;
    use core::hash::Hasher;
    use std::vec::Vec;

    use super::*;

    /// The word-wise SipHash-1-3 agrees with an independent implementation
    /// over the same bytes.
    #[test]
    fn sip13_matches_the_reference() {
        let key = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];
        for n in [2usize, 5] {
            let words: Vec<u64> = (0..n as u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .collect();
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let mut h = siphasher::sip::SipHasher13::new_with_keys(key[0], key[1]);
            h.write(&bytes);
            assert_eq!(
                sip13(&key, &words, bytes.len() as u8),
                h.finish(),
                "{n} words"
            );
        }
    }

    fn flow(family: u8) -> Flow {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src[..4].copy_from_slice(&[10, 0, 0, 1]);
        dst[..4].copy_from_slice(&[10, 0, 0, 2]);
        if family == 6 {
            src = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            dst[15] = 2;
        }
        Flow {
            family,
            src,
            dst,
            src_port: 40000,
            dst_port: 80,
        }
    }

    #[test]
    fn cookie_depends_on_key_epoch_addresses_and_ports() {
        let key = [1, 2];
        for family in [4, 6] {
            let f = flow(family);
            let c = cookie(&key, 7, &f);
            assert_eq!(c, cookie(&key, 7, &f));
            assert_ne!(c, cookie(&[1, 3], 7, &f));
            assert_ne!(c, cookie(&key, 8, &f));
            let mut g = f;
            g.src_port += 1;
            assert_ne!(c, cookie(&key, 7, &g));
            let mut g = f;
            g.dst[3] ^= 1;
            assert_ne!(c, cookie(&key, 7, &g));
        }
    }
}
