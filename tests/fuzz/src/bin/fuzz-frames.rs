//! `fuzz-frames`: the frame fuzzer of the `fuzz` crate as a program (what
//! `cargo xtask fuzz` runs). Needs root and bpffs at /sys/fs/bpf.
//!
//! ```text
//! fuzz-frames [--frames N] [--seed S] [--tc-every K] [--replay INDEX]
//! ```
//!
//! Prints the report (counts per verdict, return values, coverage, every
//! failure with its frame in hex and how to replay it); exits 0 only when
//! nothing failed. `--replay INDEX` runs frame INDEX of the run with that
//! seed and frame count (the count picks its policy), explains it and,
//! when it fails on a fresh data plane, shrinks it.

use std::process::ExitCode;

use fuzz::{self, Options};

const USAGE: &str =
    "usage: fuzz-frames [--frames N] [--seed S] [--tc-every K] [--replay INDEX]\n  \
     N: frames to run (default 1000000); S: seed, decimal or 0x-hex;\n  \
     K: every K-th frame goes through TC (default 8, 0 = none)";

fn number(flag: &str, v: Option<String>) -> Result<u64, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
    let t = v.trim().replace('_', "");
    let r = match t.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| format!("invalid {flag} '{v}': expected a non-negative integer\n{USAGE}"))
}

fn main() -> ExitCode {
    let mut opts = Options {
        progress_every: 100_000,
        ..Options::default()
    };
    let mut replay = None;
    let mut args = std::env::args().skip(1);
    let parsed: Result<(), String> = (|| {
        while let Some(a) = args.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) => (f.to_string(), Some(v.to_string())),
                None => (a.clone(), None),
            };
            let mut value = || inline.clone().or_else(|| args.next());
            match flag.as_str() {
                "--frames" => opts.frames = number("--frames", value())?,
                "--seed" => opts.seed = number("--seed", value())?,
                "--tc-every" => opts.tc_every = number("--tc-every", value())?,
                "--replay" => replay = Some(number("--replay", value())?),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
            }
        }
        Ok(())
    })();
    if let Err(e) = parsed {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Some(reason) = testkit::privilege_problem() {
        eprintln!("error: cannot run the data plane here: {reason}");
        return ExitCode::from(1);
    }
    if let Some(index) = replay {
        return match fuzz::replay(opts.seed, opts.frames, index) {
            Ok(s) => {
                print!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    eprintln!(
        "fuzz: {} frames, seed {:#x}, every {} through TC",
        opts.frames,
        opts.seed,
        if opts.tc_every == 0 {
            "none".to_string()
        } else {
            format!("{}th", opts.tc_every)
        }
    );
    match fuzz::run(&opts) {
        Ok(rep) => {
            println!("{rep}");
            if rep.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
