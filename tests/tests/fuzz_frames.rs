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
