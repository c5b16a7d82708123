//! BPF_PROG_TEST_RUN harness: the real data-plane object, loaded into the
//! running kernel with its maps pinned in a private directory, the policy
//! written by the controller's own `apply`, and packets run through the XDP
//! or TC program one call at a time.

use std::path::PathBuf;

use anyhow::{Context, Result};
use aya::{
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp},
    Ebpf,
};
use firewall_common::{maps as names, Counter, Verdict, N_VERDICTS};
use firewall_user::{control::Control, loader, policy::Policy};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;

/// Which attach point a packet is run through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    /// The program's return value for a verdict that passes or drops.
    pub fn action(self, drops: bool) -> u32 {
        match (self, drops) {
            (Hook::Xdp, false) => XDP_PASS,
            (Hook::Xdp, true) => XDP_DROP,
            (Hook::Tc, false) => TC_ACT_OK,
            (Hook::Tc, true) => TC_ACT_SHOT,
        }
    }
}

pub struct Harness {
    pub pin_dir: PathBuf,
    ebpf: Ebpf,
    /// The loaded object's maps, through the product's control layer.
    pub maps: Control,
}

impl Harness {
    /// Load the object into a fresh pin directory and apply `policy`.
    pub fn new(policy: &Policy) -> Result<Self> {
        pin_to_one_cpu();
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/fwfix-{}", crate::unique_id()));
        loader::ensure_bpffs(&pin_dir)?;
        let loaded = loader::load(&pin_dir, &policy.table)?;
        let ebpf = loaded.ebpf;
        let mut maps = Control::open(&pin_dir)?;
        {
            let mut w = maps.write()?;
            w.set_tick(loaded.tick)?;
            w.rotate_challenge_key()?;
            w.apply(policy).context("applying the fixture policy")?;
        }
        Ok(Harness {
            pin_dir,
            ebpf,
            maps,
        })
    }

    /// Run `frame` `repeat` times; the program's return value (of the last run).
    pub fn run(&mut self, hook: Hook, frame: &[u8], repeat: u32) -> Result<u32, ProgramError> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat: repeat.max(1),
            ..Default::default()
        };
        Ok(self.test_run(hook, opts)?.return_value)
    }

    /// Run `frame` once; the return value and the frame as the program
    /// left it (rewritten by an XDP_TX answer, for instance).
    pub fn run_out(&mut self, hook: Hook, frame: &[u8]) -> Result<(u32, Vec<u8>), ProgramError> {
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let r = self.test_run(hook, opts)?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    fn test_run(
        &mut self,
        hook: Hook,
        opts: TestRunOptions<'_>,
    ) -> Result<TestRunResult, ProgramError> {
        match hook {
            Hook::Xdp => {
                let p: &mut Xdp = self.ebpf.program_mut(names::PROG_XDP).unwrap().try_into()?;
                p.test_run(opts)
            }
            Hook::Tc => {
                let p: &mut SchedClassifier =
                    self.ebpf.program_mut(names::PROG_TC).unwrap().try_into()?;
                p.test_run(opts)
            }
        }
    }

    /// A data-plane statistic, summed over CPUs.
    pub fn stat(&self, s: firewall_common::Stat) -> u64 {
        self.maps.stat(s).expect("reading a statistic")
    }

    /// Counters per verdict, summed over CPUs.
    pub fn counters(&self) -> Vec<Counter> {
        by_verdict(&self.maps.verdicts().expect("reading counters"))
    }

    /// Counters of rule `rule` per verdict, summed over CPUs.
    pub fn rule_counters(&self, rule: u32) -> Result<Vec<Counter>> {
        Ok(by_verdict(&self.maps.rule_verdicts(rule)?))
    }

    pub fn packets(&self, v: Verdict) -> u64 {
        self.counters()[v as usize].packets
    }

    /// Apply another policy to the loaded program (as a reload would).
    pub fn apply(&mut self, policy: &Policy) -> Result<()> {
        self.maps.write()?.apply(policy)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Nothing is attached: detach only unpins the maps.
        let _ = loader::detach(&self.pin_dir, None);
    }
}

/// Per-CPU state (buckets of the flood guard) must not move between CPUs in
/// the middle of a fixture: run the calling thread on one CPU.
fn pin_to_one_cpu() {
    let mut set = rustix::thread::CpuSet::new();
    set.set(0);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// Difference of two counter snapshots, per verdict: (packets, bytes).
pub fn delta(before: &[Counter], after: &[Counter]) -> Vec<(u64, u64)> {
    (0..N_VERDICTS as usize)
        .map(|i| {
            (
                after[i].packets - before[i].packets,
                after[i].bytes - before[i].bytes,
            )
        })
        .collect()
}

/// A typed snapshot as one `Counter` per verdict, in `Verdict::ALL` order.
fn by_verdict(v: &firewall_user::control::read::Verdicts) -> Vec<Counter> {
    Verdict::ALL
        .iter()
        .map(|x| {
            let c = v.get(*x);
            Counter {
                packets: c.packets,
                bytes: c.bytes,
            }
        })
        .collect()
}
