//! Hostile frames through the real program (BPF_PROG_TEST_RUN): the bounded
//! run of the fuzzer in the `fuzz` crate (the long one is `cargo xtask fuzz`).
//!
//! `FUZZ_SEED` and `FUZZ_FRAMES` override the seed and the frame count.

use firewall_common::Verdict;
use fuzz::{self, Options};

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

#[test]
fn two_hundred_thousand_hostile_frames() {
    if !testkit::privileged("two_hundred_thousand_hostile_frames") {
        return;
    }
    let opts = Options {
        frames: env_u64("FUZZ_FRAMES").unwrap_or(200_000),
        seed: env_u64("FUZZ_SEED").unwrap_or(fuzz::DEFAULT_SEED),
        ..Options::default()
    };
    let rep = fuzz::run(&opts).expect("running the fuzzer");
    println!("{rep}");
    assert!(
        rep.ok(),
        "fuzzing found problems (seed {:#x}):\n{rep}",
        opts.seed
    );
    assert_eq!(rep.frames(), opts.frames, "frames run and counted");
    assert_eq!(
        rep.short_refused,
        2 * 14,
        "every frame < 14 bytes is refused"
    );
    // The mix reaches every verdict, both hooks, and the parser's corners.
    for v in Verdict::ALL {
        assert!(rep.packets(v) > 0, "no frame was {}:\n{rep}", v.name());
    }
    assert!(rep.tc_frames > opts.frames / 10, "{rep}");
    assert!(
        rep.new_sources_refused > 0,
        "the flood guard never refused:\n{rep}"
    );
    for (_, name) in fuzz::feature::NAMES {
        assert!(
            rep.features.get(name).copied().unwrap_or(0) > 0,
            "no frame had {name:?}:\n{rep}"
        );
    }
    assert!(rep.malformed_reasons.len() >= 15, "{rep}");
}

/// A failing frame is shrunk against the real program: here "failing" is
/// being `malformed` (a bad IHL behind 200 bytes of UDP payload), and what
/// is left must still be malformed when run on its own, and smaller.
#[test]
fn a_failing_frame_shrinks_to_the_bytes_that_matter() {
    if !testkit::privileged("a_failing_frame_shrinks_to_the_bytes_that_matter") {
        return;
    }
    use std::net::Ipv4Addr;
    use testkit::{harness::Hook, packet::Frame};
    let policy = testkit::fixtures::policy();
    let good = Frame::ipv4(Ipv4Addr::new(198, 51, 100, 9), Ipv4Addr::new(192, 0, 2, 1))
        .udp(4000, 9000, 200)
        .build();
    let mut bad = good.clone();
    bad[14] = 0x44; // version 4, IHL 4: shorter than an IPv4 header.
    let malformed = |o: &fuzz::Outcome| o.verdict == Some(Verdict::Malformed);
    for hook in [Hook::Xdp, Hook::Tc] {
        assert_eq!(
            fuzz::shrink_failure(&policy, hook, &good, malformed),
            None,
            "a well-formed frame has nothing to shrink"
        );
        let small = fuzz::shrink_failure(&policy, hook, &bad, malformed)
            .expect("the bad frame is malformed on a fresh load");
        println!(
            "{hook:?}: {} bytes -> {} bytes: {}",
            bad.len(),
            small.len(),
            fuzz::hex(&small)
        );
        assert!(small.len() < bad.len() / 4, "{}", fuzz::hex(&small));
        let again = fuzz::run_alone(&policy, hook, &small).expect("running the shrunk frame");
        assert_eq!(again.verdict, Some(Verdict::Malformed));
        assert!(again.problems.is_empty(), "{:?}", again.problems);
    }
}
