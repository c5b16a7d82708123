//! Frame fuzzing through the real data plane (BPF_PROG_TEST_RUN).
//!
//! Every frame is derived from `(seed, index)` alone, so any failure replays
//! (`cargo xtask fuzz --seed S --replay INDEX`). A frame that fails on its
//! own is shrunk to the smallest one that still fails ([`shrink`],
//! [`shrink_failure`]): the first failures of a run in its report, any
//! frame in a replay. The modules: [`rng`], [`generator`] and [`mutator`] make
//! the frames, [`model`] says what the data plane must make of them,
//! [`runner`] runs and checks them. A frame is one of:
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

pub mod generator;
pub mod model;
pub mod mutator;
pub mod rng;
pub mod runner;
pub mod shrink;

pub use generator::{corpus, frame, structured, Origin};
pub use model::{expected, feature, model, skb_may_refuse, Parsed};
pub use mutator::mutate;
pub use rng::Rng;
pub use runner::{
    hex, hook_for, phase_of, policies, replay, run, run_alone, shrink_failure, Failure, Options,
    Outcome, Report, DEFAULT_SEED,
};

/// The longest frame generated (well inside what both test runs accept).
pub const MAX_FRAME: usize = 1600;
/// The shortest frame the kernel test-runs.
pub const ETH_HLEN: usize = 14;
