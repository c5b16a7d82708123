//! The data plane's clock, chosen at load time.
//!
//! `bpf_ktime_get_ns` is a helper call that costs about as much as a hash
//! lookup on these machines; `bpf_jiffies64` (Linux 5.6) is inlined by the
//! verifier into one memory load when the program is JIT-compiled. The
//! program refills token buckets per tick either way; what the kernel
//! offers is learned here by running a tiny probe program twice through
//! BPF_PROG_TEST_RUN and comparing jiffies with CLOCK_MONOTONIC.

use std::time::Duration;

use anyhow::{Context, Result};
use aya::{
    maps::Array,
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use firewall_common::{maps as names, Config};
use serde::Serialize;

/// The clock the program reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "clock", rename_all = "lowercase")]
pub enum Tick {
    /// `bpf_jiffies64`, `hz` ticks a second.
    Jiffies { hz: u32, tick_ns: u64, offset_ns: u64 },
    /// `bpf_ktime_get_ns`: no usable jiffies.
    Ktime,
}

impl Tick {
    /// Write the choice into a config (see `Config::tick_ns`).
    pub fn set(self, cfg: &mut Config) {
        match self {
            Tick::Jiffies {
                tick_ns, offset_ns, ..
            } => {
                cfg.tick_ns = tick_ns;
                cfg.tick_offset_ns = offset_ns;
            }
            Tick::Ktime => {
                cfg.tick_ns = 0;
                cfg.tick_offset_ns = 0;
            }
        }
    }

    /// What a config says, for `status`.
    pub fn of(cfg: &Config) -> Tick {
        match cfg.tick_ns {
            0 => Tick::Ktime,
            t => Tick::Jiffies {
                hz: (1_000_000_000 / t) as u32,
                tick_ns: t,
                offset_ns: cfg.tick_offset_ns,
            },
        }
    }

    /// "jiffies (HZ=250)" or "ktime".
    pub fn describe(self) -> String {
        match self {
            Tick::Jiffies { hz, .. } => format!("jiffies (HZ={hz})"),
            Tick::Ktime => "ktime".to_string(),
        }
    }
}

/// The running kernel's HZ from its build configuration, or 100 (the
/// coarsest tick in common use) when that cannot be read: for the
/// `firewall check` warning about buckets shallower than a tick.
pub fn kernel_hz() -> u64 {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    std::fs::read_to_string(format!("/boot/config-{}", release.trim()))
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("CONFIG_HZ="))
                .and_then(|v| v.trim().parse().ok())
        })
        .filter(|hz: &u64| (24..=10_000).contains(hz))
        .unwrap_or(100)
}

/// HZ values Linux is configured with across architectures.
const KERNEL_HZ: [u64; 12] = [24, 32, 48, 64, 100, 128, 200, 250, 256, 300, 500, 1000];

/// The kernel's tick length for `hz`, as the kernel computes it (TICK_NSEC).
pub fn tick_ns(hz: u64) -> u64 {
    (1_000_000_000 + hz / 2) / hz
}

/// Derive the clock from two probe samples (jiffies, monotonic ns). The
/// offset makes `jiffies * tick_ns - offset` trail CLOCK_MONOTONIC by at
/// most one tick and never run ahead of it (an expiry never fires early).
pub fn from_samples(a: (u64, u64), b: (u64, u64)) -> Option<Tick> {
    let (dj, dns) = (b.0.checked_sub(a.0)?, b.1.checked_sub(a.1)?);
    if dj == 0 || dns == 0 {
        return None;
    }
    // A short sample is off by up to a tick: snap to the HZ values kernels
    // are built with; samples far from all of them are not jiffies.
    let measured = (dj as f64) * 1e9 / dns as f64;
    let hz = KERNEL_HZ
        .iter()
        .copied()
        .min_by(|a, b| {
            let d = |h: u64| (h as f64 - measured).abs() / h as f64;
            d(*a).total_cmp(&d(*b))
        })
        .filter(|h| (*h as f64 - measured).abs() / (*h as f64) < 0.15)?;
    let tick = tick_ns(hz);
    let offset = (b.0.checked_mul(tick)?).checked_add(tick)?.checked_sub(b.1)?;
    Some(Tick::Jiffies {
        hz: hz as u32,
        tick_ns: tick,
        offset_ns: offset,
    })
}

/// Run the probe program and read what it wrote.
fn sample(ebpf: &mut Ebpf) -> Result<(u64, u64)> {
    let frame = [0u8; 64];
    let prog: &mut Xdp = ebpf
        .program_mut(names::PROG_CLOCK)
        .context("no clock probe in the object")?
        .try_into()?;
    prog.test_run(TestRunOptions {
        data_in: Some(&frame),
        ..Default::default()
    })?;
    let map: Array<_, u64> = Array::try_from(
        ebpf.map(names::CLOCK_PROBE)
            .context("no clock probe map in the object")?,
    )?;
    Ok((map.get(&0, 0)?, map.get(&1, 0)?))
}

/// Load and run the probe; `Ktime` when the kernel refuses it (no
/// `bpf_jiffies64`) or the samples make no sense.
pub fn probe(ebpf: &mut Ebpf) -> Tick {
    let loaded = ebpf
        .program_mut(names::PROG_CLOCK)
        .and_then(|p| <&mut Xdp>::try_from(p).ok())
        .map(|p| p.load().is_ok())
        .unwrap_or(false);
    if !loaded {
        return Tick::Ktime;
    }
    let Ok(a) = sample(ebpf) else {
        return Tick::Ktime;
    };
    // Long enough for several ticks at HZ=100, short enough for a start.
    std::thread::sleep(Duration::from_millis(80));
    let Ok(b) = sample(ebpf) else {
        return Tick::Ktime;
    };
    from_samples(a, b).unwrap_or(Tick::Ktime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hz_and_offset_from_samples() {
        // HZ=250: 4 ms a tick; 15 ticks in 60.5 ms (one short of 248/s).
        let a = (4_294_900_000u64, 1_000_000_000u64);
        let b = (a.0 + 15, a.1 + 60_500_000);
        let Some(Tick::Jiffies {
            hz,
            tick_ns,
            offset_ns,
        }) = from_samples(a, b)
        else {
            panic!("not jiffies");
        };
        assert_eq!((hz, tick_ns), (250, 4_000_000));
        // At the second sample the program's time trails monotonic by one tick.
        assert_eq!(b.0 * tick_ns - offset_ns, b.1 - tick_ns);
    }

    #[test]
    fn nonsense_samples_fall_back() {
        assert_eq!(from_samples((10, 100), (10, 200)), None);
        assert_eq!(from_samples((10, 100), (5, 200)), None);
        // A million "ticks" a second is no jiffies counter.
        assert_eq!(from_samples((0, 0), (1_000_000, 1_000_000_000)), None);
    }

    #[test]
    fn kernel_tick_lengths() {
        assert_eq!(tick_ns(100), 10_000_000);
        assert_eq!(tick_ns(300), 3_333_333);
        assert_eq!(tick_ns(1000), 1_000_000);
    }
}
