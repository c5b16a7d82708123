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
    Jiffies {
        hz: u32,
        tick_ns: u64,
        offset_ns: u64,
    },
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

/// The moment jiffies moved on, as seen by the probe: the new count and
/// the monotonic times of the last sample before it and the first after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub jiffies: u64,
    pub before_ns: u64,
    pub at_ns: u64,
}

/// Derive the clock from two edges some ticks apart. HZ comes from the
/// edges' distance (exact to the probe's sampling step, so 250 and 256 are
/// told apart); the offset makes `jiffies * tick_ns - offset` trail
/// CLOCK_MONOTONIC by at most a tick and never run ahead of it (an expiry
/// never fires early).
pub fn from_edges(a: Edge, b: Edge) -> Option<Tick> {
    let dj = b.jiffies.checked_sub(a.jiffies)?;
    let mid = |e: Edge| (e.before_ns + e.at_ns) / 2;
    let dns = mid(b).checked_sub(mid(a))?;
    if dj == 0 || dns == 0 {
        return None;
    }
    let measured = (dj as f64) * 1e9 / dns as f64;
    let hz = KERNEL_HZ
        .iter()
        .copied()
        .min_by(|x, y| {
            let d = |h: u64| (h as f64 - measured).abs() / h as f64;
            d(*x).total_cmp(&d(*y))
        })
        // Edges a few ticks apart pin HZ to well under 1 %; anything far
        // from every HZ kernels are built with is not a jiffies counter.
        .filter(|h| (*h as f64 - measured).abs() / (*h as f64) < 0.01)?;
    let tick = tick_ns(hz);
    // Jiffies became `b.jiffies` after `b.before_ns`: anchoring that count
    // there keeps the program's time at or behind the monotonic clock.
    let offset = b.jiffies.checked_mul(tick)?.checked_sub(b.before_ns)?;
    Some(Tick::Jiffies {
        hz: hz as u32,
        tick_ns: tick,
        offset_ns: offset,
    })
}

/// Run the probe program and read what it wrote: (jiffies, monotonic ns).
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

/// Sample until jiffies move on between two samples taken close together
/// (a preempted sampler sees an edge it cannot place); at most 250 ms.
fn edge(ebpf: &mut Ebpf) -> Result<Edge> {
    const TIGHT_NS: u64 = 50_000;
    let (mut last_j, mut before) = sample(ebpf)?;
    let deadline = std::time::Instant::now() + Duration::from_millis(250);
    while std::time::Instant::now() < deadline {
        let (j, at) = sample(ebpf)?;
        if j != last_j && at - before <= TIGHT_NS {
            return Ok(Edge {
                jiffies: j,
                before_ns: before,
                at_ns: at,
            });
        }
        (last_j, before) = (j, at);
    }
    anyhow::bail!("no clean jiffies edge within 250 ms")
}

/// Load and run the probe; `Ktime` when the kernel refuses it (no
/// `bpf_jiffies64`) or what it reads makes no sense.
pub fn probe(ebpf: &mut Ebpf) -> Tick {
    let loaded = ebpf
        .program_mut(names::PROG_CLOCK)
        .and_then(|p| <&mut Xdp>::try_from(p).ok())
        .map(|p| p.load().is_ok())
        .unwrap_or(false);
    if !loaded {
        return Tick::Ktime;
    }
    let measure = |ebpf: &mut Ebpf| -> Result<Option<Tick>> {
        let a = edge(ebpf)?;
        // Several ticks at any HZ; the edges make the span exact.
        std::thread::sleep(Duration::from_millis(60));
        let b = edge(ebpf)?;
        Ok(from_edges(a, b))
    };
    // A busy machine can spoil a measurement; a few tries settle it.
    (0..4)
        .find_map(|_| measure(ebpf).ok().flatten())
        .unwrap_or(Tick::Ktime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(jiffies: u64, at_ns: u64) -> Edge {
        Edge {
            jiffies,
            before_ns: at_ns - 2_000,
            at_ns,
        }
    }

    #[test]
    fn hz_and_offset_from_edges() {
        // HZ=250: 4 ms a tick; two edges 17 ticks apart.
        let a = edge(4_294_900_000, 1_000_000_000);
        let b = edge(a.jiffies + 17, a.at_ns + 17 * 4_000_000);
        let Some(Tick::Jiffies {
            hz,
            tick_ns,
            offset_ns,
        }) = from_edges(a, b)
        else {
            panic!("not jiffies");
        };
        assert_eq!((hz, tick_ns), (250, 4_000_000));
        // At the second edge the program's time is the last sample before it.
        assert_eq!(b.jiffies * tick_ns - offset_ns, b.before_ns);
        // 256 Hz is told from 250 Hz.
        let c = edge(a.jiffies + 16, a.at_ns + 16 * super::tick_ns(256));
        assert!(matches!(
            from_edges(a, c),
            Some(Tick::Jiffies { hz: 256, .. })
        ));
    }

    #[test]
    fn nonsense_samples_fall_back() {
        let a = edge(10, 100_000);
        assert_eq!(from_edges(a, edge(10, 200_000)), None);
        assert_eq!(from_edges(a, edge(5, 200_000)), None);
        // A million "ticks" a second is no jiffies counter.
        assert_eq!(from_edges(a, edge(1_000_010, 1_000_100_000)), None);
    }

    #[test]
    fn kernel_tick_lengths() {
        assert_eq!(tick_ns(100), 10_000_000);
        assert_eq!(tick_ns(300), 3_333_333);
        assert_eq!(tick_ns(1000), 1_000_000);
    }
}
