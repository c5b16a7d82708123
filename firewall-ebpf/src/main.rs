//! The data plane: one decision, two attach points (XDP and TC ingress).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

mod challenge;
mod decide;
mod maps;
mod mem;
mod parse;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use firewall_common::Verdict;

/// The clock probe: the loader runs it (BPF_PROG_TEST_RUN) to learn whether
/// `bpf_jiffies64` is there and how jiffies relate to CLOCK_MONOTONIC.
#[xdp]
pub fn firewall_clock(_ctx: XdpContext) -> u32 {
    decide::probe_clock();
    xdp_action::XDP_PASS
}

#[xdp]
pub fn firewall_xdp(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    match decide::decide(data, end, (end - data) as u64, true) {
        Verdict::Challenged => {
            challenge::enter(&ctx);
            // Only reached when the challenge program is not in its slot.
            challenge::unanswered();
            xdp_action::XDP_DROP
        }
        v if v.drops() => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

/// The SYN challenge, reached only by a tail call from `firewall_xdp`.
#[xdp]
pub fn firewall_challenge(ctx: XdpContext) -> u32 {
    challenge::run(&ctx)
}

/// Bytes of headers the parser may read: made linear before parsing.
const HEADERS: u32 = 256;

#[classifier]
pub fn firewall_tc(ctx: TcContext) -> i32 {
    let len = ctx.len();
    // Headers may sit in paged data; the parser reads only linear bytes.
    let want = if len < HEADERS { len } else { HEADERS };
    if ctx.data_end() - ctx.data() < want as usize {
        let _ = ctx.pull_data(want);
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    // TC cannot answer a frame from ingress: no SYN is challenged here.
    match decide::decide(data, end, len as u64, false) {
        Verdict::Blocked | Verdict::RateLimited | Verdict::Malformed => TC_ACT_SHOT,
        _ => TC_ACT_OK,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
