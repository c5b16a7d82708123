//! The SYN challenge: the program the XDP program tail-calls for a TCP
//! frame from a source the new-source budget refused (see `HANDOFF`).
//!
//! A SYN is answered in place with a SYN-ACK whose acknowledgment number is
//! the flow's cookie (`firewall_common::challenge`) and sent back out of
//! the interface it came in on (XDP_TX). A RST whose sequence number is the
//! cookie of the current or the previous epoch proves the source is real:
//! its prefix gets a bucket, outside the new-source budget, keyed as the
//! client's next SYN will be.
#![allow(unsafe_code)]

use aya_ebpf::{bindings::xdp_action, helpers::bpf_get_prandom_u32, programs::XdpContext};
use firewall_common::{
    challenge::{cookie, Flow, ANSWER, CHECK},
    class, short_generation, ChallengeKey, SourceState, Stat, Verdict,
};

use crate::{
    decide::{self, count_verdict, stat, Clock, TCP_SYN},
    maps::{CHALLENGE_KEY, CHALLENGE_PROG, HANDOFF},
    mem::{read, write},
    parse::{parse, Frame, Packet, IPPROTO_TCP, IPV6_HLEN},
};

const TCP_SYN_ACK: u8 = 0x12;
/// TTL / hop limit of an answer.
const TTL: u8 = 64;
/// IPv4 option "no operation": what an answer's options are rewritten to
/// (echoing a source route or a timestamp request would be wrong).
const IPOPT_NOP: u8 = 1;
const TCP_HLEN: usize = 20;

/// Why a frame gets no answer.
struct Unanswerable;

/// Entry of the challenge program.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let Some(h) = HANDOFF.get(0).copied() else {
        return xdp_action::XDP_DROP;
    };
    let (verdict, action) = match h.action {
        ANSWER => match answer(ctx) {
            Ok(()) => {
                stat(Stat::ChallengeSent);
                (Verdict::Challenged, xdp_action::XDP_TX)
            }
            Err(Unanswerable) => {
                stat(Stat::ChallengeRefused);
                (Verdict::RateLimited, xdp_action::XDP_DROP)
            }
        },
        CHECK if check(ctx) => {
            stat(Stat::ChallengePassed);
            // The RST itself goes on to the host, which has no connection
            // for it and ignores it.
            (Verdict::Passed, xdp_action::XDP_PASS)
        }
        _ => {
            stat(Stat::ChallengeFailed);
            (Verdict::RateLimited, xdp_action::XDP_DROP)
        }
    };
    count_verdict(verdict, h.rule, h.len);
    action
}

/// Jump to the challenge program; returns only if its slot is empty.
#[inline(always)]
pub fn enter(ctx: &XdpContext) {
    // SAFETY: a tail call replaces this program's run; nothing of ours
    // needs dropping, and on failure control simply comes back.
    unsafe { CHALLENGE_PROG.tail_call(ctx, 0) };
}

/// The XDP program's fallback when the tail call fails (no challenge
/// program in the slot): the frame is dropped as the budget said.
#[inline(always)]
pub fn unanswered() {
    if let Some(h) = HANDOFF.get(0).copied() {
        if h.action == ANSWER {
            stat(Stat::ChallengeRefused);
        }
        count_verdict(Verdict::RateLimited, h.rule, h.len);
    }
}

/// The current key, if the controller has written one.
#[inline(always)]
fn key() -> Option<ChallengeKey> {
    match CHALLENGE_KEY.get(0) {
        Some(k) if k.epoch != 0 => Some(*k),
        _ => None,
    }
}

/// The frame's TCP flow: addresses and ports as the client sent them, and
/// the L3/L4 offsets bounded for the verifier (parse wrote them through
/// the stack, which loses their range).
struct Located {
    flow: Flow,
    l3: usize,
    l4: usize,
    pkt: Packet,
}

#[inline(always)]
fn locate(data: usize, end: usize) -> Result<Located, Unanswerable> {
    let Ok(Frame::Ip(pkt)) = parse(data, end) else {
        return Err(Unanswerable);
    };
    if !pkt.has_l4 || pkt.proto != IPPROTO_TCP {
        return Err(Unanswerable);
    }
    // At most two VLAN tags: the IP header starts by byte 22.
    let l3 = pkt.l3 as usize & 0x1f;
    let mut flow = Flow {
        family: pkt.family,
        src: pkt.src,
        dst: [0; 16],
        src_port: 0,
        dst_port: pkt.dst_port,
    };
    let l4 = if pkt.family == 4 {
        let vihl: u8 = read(data, end, l3).ok_or(Unanswerable)?;
        let dst: [u8; 4] = read(data, end, l3 + 16).ok_or(Unanswerable)?;
        flow.dst[..4].copy_from_slice(&dst);
        l3 + ((vihl & 0x0f) as usize) * 4
    } else {
        // Extension headers would have to be echoed or dropped; an answer
        // is only built for a SYN right behind the IPv6 header.
        if pkt.l4 as usize != pkt.l3 as usize + IPV6_HLEN {
            return Err(Unanswerable);
        }
        flow.dst = read(data, end, l3 + 24).ok_or(Unanswerable)?;
        l3 + IPV6_HLEN
    };
    let ports: [u8; 2] = read(data, end, l4).ok_or(Unanswerable)?;
    flow.src_port = u16::from_be_bytes(ports);
    Ok(Located { flow, l3, l4, pkt })
}

/// Rewrite the SYN into its challenge: MACs, addresses and ports swapped,
/// VLAN tags kept, SYN-ACK with ack = cookie, no options, no payload.
/// A function of its own (and `check` another): each gets its own stack
/// frame, where inlined both would share one over the verifier's limit of
/// 512 bytes for a chain of calls.
#[inline(never)]
fn answer(ctx: &XdpContext) -> Result<(), Unanswerable> {
    let key = key().ok_or(Unanswerable)?;
    let (data, end) = (ctx.data(), ctx.data_end());
    let at = locate(data, end)?;
    let (l3, l4, flow) = (at.l3, at.l4, at.flow);
    // Equal to ISN+1 once in 2^32 SYNs: that client then takes the answer
    // for a handshake, its ACK meets no connection, and it tries again.
    let ack = cookie(key.key(key.epoch), key.epoch, &flow);

    let mac: [u8; 12] = read(data, end, 0).ok_or(Unanswerable)?;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&mac[6..]);
    swapped[6..].copy_from_slice(&mac[..6]);
    write(data, end, 0, swapped).ok_or(Unanswerable)?;

    // Pseudo-header sum for the TCP checksum: addresses (swapped: the sum
    // does not care), protocol and TCP length.
    let mut pseudo = IPPROTO_TCP as u64 + TCP_HLEN as u64;
    if flow.family == 4 {
        let ihl = l4 - l3;
        let mut hdr = [0u8; 20];
        hdr[0] = 0x40 | (ihl / 4) as u8;
        hdr[2..4].copy_from_slice(&((ihl + TCP_HLEN) as u16).to_be_bytes());
        hdr[6] = 0x40; // DF
        hdr[8] = TTL;
        hdr[9] = IPPROTO_TCP;
        hdr[12..16].copy_from_slice(&flow.dst[..4]);
        hdr[16..20].copy_from_slice(&flow.src[..4]);
        let options = (ihl - 20) as u64 / 2 * u16::from_be_bytes([IPOPT_NOP, IPOPT_NOP]) as u64;
        let csum = checksum(sum(&hdr) + options);
        hdr[10..12].copy_from_slice(&csum.to_be_bytes());
        write(data, end, l3, hdr).ok_or(Unanswerable)?;
        for i in 0..40 {
            if 20 + i >= ihl {
                break;
            }
            write(data, end, l3 + 20 + i, IPOPT_NOP).ok_or(Unanswerable)?;
        }
        pseudo += sum(&hdr[12..20]);
    } else {
        let mut hdr = [0u8; IPV6_HLEN];
        hdr[0] = 0x60;
        hdr[4..6].copy_from_slice(&(TCP_HLEN as u16).to_be_bytes());
        hdr[6] = IPPROTO_TCP;
        hdr[7] = TTL;
        hdr[8..24].copy_from_slice(&flow.dst);
        hdr[24..40].copy_from_slice(&flow.src);
        write(data, end, l3, hdr).ok_or(Unanswerable)?;
        pseudo += sum(&hdr[8..40]);
    }

    let mut tcp = [0u8; TCP_HLEN];
    tcp[0..2].copy_from_slice(&flow.dst_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&flow.src_port.to_be_bytes());
    // SAFETY: a helper without arguments or side effects.
    let seq = unsafe { bpf_get_prandom_u32() };
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = ((TCP_HLEN / 4) as u8) << 4;
    tcp[13] = TCP_SYN_ACK;
    tcp[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    let csum = checksum(pseudo + sum(&tcp));
    tcp[16..18].copy_from_slice(&csum.to_be_bytes());
    write(data, end, l4, tcp).ok_or(Unanswerable)?;

    // Options and payload of the SYN go: the answer ends after its header.
    let keep = (l4 + TCP_HLEN) as i32;
    let len = (end - data) as i32;
    if len > keep {
        // SAFETY: shrinks the frame this program owns; no packet pointer
        // is used after the call.
        let r = unsafe { aya_ebpf::helpers::bpf_xdp_adjust_tail(ctx.ctx, keep - len) };
        if r != 0 {
            return Err(Unanswerable);
        }
    }
    Ok(())
}

/// Whether the RST carries the cookie of its flow; if so its source prefix
/// is tracked with a fresh bucket.
#[inline(never)]
fn check(ctx: &XdpContext) -> bool {
    let Some(key) = key() else {
        return false;
    };
    let (data, end) = (ctx.data(), ctx.data_end());
    let Ok(at) = locate(data, end) else {
        return false;
    };
    let Some(seq) = read::<[u8; 4]>(data, end, at.l4 + 4) else {
        return false;
    };
    let seq = u32::from_be_bytes(seq);
    let current = cookie(key.key(key.epoch), key.epoch, &at.flow);
    let prev = key.epoch.wrapping_sub(1);
    let valid = seq == current || (prev != 0 && seq == cookie(key.key(prev), prev, &at.flow));
    if !valid {
        return false;
    }
    // Keyed as the client's next SYN will be.
    let mut syn = at.pkt;
    syn.tcp_flags = TCP_SYN;
    admit(&syn)
}

/// Give the prefix of `syn` a bucket (a `syn_only` rule keys its own).
#[inline(always)]
fn admit(syn: &Packet) -> bool {
    let Some(cfg) = decide::active_config() else {
        return false;
    };
    let rule = decide::match_rule(cfg, syn);
    let key = decide::source_key(cfg, syn, rule);
    let mut clock = Clock::new(cfg);
    let c = decide::classify(cfg, syn, &key, rule, &mut clock, false);
    let st = SourceState {
        // A full bucket, like any new source.
        tat: 0,
        drop_tat: 0,
        packets: 0,
        drops: 0,
        generation: short_generation(cfg.generation),
        class_slot: SourceState::pack(
            if c.class == class::ALLOWED {
                class::ALLOWED
            } else {
                class::LIMITED
            },
            c.slot,
        ),
    };
    decide::track(&key, &st)
}

/// One's-complement sum of big-endian 16-bit words (even length).
#[inline(always)]
fn sum(b: &[u8]) -> u64 {
    let mut s = 0u64;
    let mut i = 0;
    while i + 1 < b.len() {
        s += u16::from_be_bytes([b[i], b[i + 1]]) as u64;
        i += 2;
    }
    s
}

#[inline(always)]
fn checksum(mut s: u64) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}
