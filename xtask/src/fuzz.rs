//! `cargo xtask fuzz`: a million (or more) random and mutated frames through
//! the real XDP and TC programs with BPF_PROG_TEST_RUN, every one checked
//! (see `tests/fuzz/src/lib.rs`). Runs the `fuzz` crate's `fuzz-frames` program.

use crate::util::{cargo, is_root, run};
use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Frames to run (each at least 14 bytes; 1 in 8 goes through TC).
    #[arg(long, default_value_t = 1_000_000)]
    frames: u64,
    /// PRNG seed, decimal or 0x-hex (failures print the one to replay with).
    #[arg(long, value_parser = parse_u64)]
    seed: Option<u64>,
    /// Every K-th frame goes through TC instead of XDP (0: XDP only).
    #[arg(long, value_name = "K")]
    tc_every: Option<u64>,
    /// Run and explain only frame INDEX of the run (same --seed and --frames).
    #[arg(long, value_name = "INDEX")]
    replay: Option<u64>,
    /// Skip `cargo xtask setup`.
    #[arg(long)]
    no_setup: bool,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    match t.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    }
    .map_err(|_| format!("'{s}' is not a non-negative integer (decimal or 0x-hex)"))
}

pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    if !is_root() {
        bail!(
            "fuzzing runs the data plane with BPF_PROG_TEST_RUN, which needs root: run it as root"
        );
    }
    let mut bin_args = vec!["--frames".to_string(), args.frames.to_string()];
    if let Some(s) = args.seed {
        bin_args.extend(["--seed".into(), format!("{s:#x}")]);
    }
    if let Some(k) = args.tc_every {
        bin_args.extend(["--tc-every".into(), k.to_string()]);
    }
    if let Some(i) = args.replay {
        bin_args.extend(["--replay".into(), i.to_string()]);
    }
    let fuzz = move || {
        run(cargo()
            .args([
                "run",
                "--release",
                "-p",
                "fuzz",
                "--bin",
                "fuzz-frames",
                "--",
            ])
            .args(&bin_args))
    };
    let mut steps = Vec::new();
    if !args.no_setup {
        steps.push(crate::Step::new("setup", crate::setup::setup));
    }
    steps.push(crate::Step::new(
        format!("fuzz {} frames (release)", args.frames),
        fuzz,
    ));
    crate::run_steps(&steps)
}

#[cfg(test)]
mod unit {
    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(super::parse_u64("42"), Ok(42));
        assert_eq!(super::parse_u64("0x2a"), Ok(42));
        assert_eq!(super::parse_u64("1_000"), Ok(1000));
        assert!(super::parse_u64("-1").unwrap_err().contains("'-1'"));
    }
}
