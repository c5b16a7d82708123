//! The SYN challenge from the controller's side: the challenge program is
//! put in its slot at load, and the cookie key is rotated every epoch
//! (`firewall_common::challenge`; the write itself is the control layer's,
//! `Writer::rotate_challenge_key`), the previous key staying valid for one
//! more epoch so that a challenge sent just before a rotation still counts.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::{maps::ProgramArray, programs::Xdp, Ebpf};
use firewall_common::{
    challenge::EPOCH_SECS,
    maps::{CHALLENGE_PROG, PROG_CHALLENGE},
};

use crate::control::Control;

/// Load the challenge program and put it where the XDP program's tail call
/// finds it.
pub fn install(ebpf: &mut Ebpf) -> Result<()> {
    let prog: &mut Xdp = ebpf
        .program_mut(PROG_CHALLENGE)
        .with_context(|| format!("program {PROG_CHALLENGE} missing from the object"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("the kernel verifier rejected {PROG_CHALLENGE}"))?;
    let fd = prog.fd()?.try_clone()?;
    let mut slots: ProgramArray<_> = ebpf
        .map_mut(CHALLENGE_PROG)
        .with_context(|| format!("map {CHALLENGE_PROG} missing from the object"))?
        .try_into()?;
    slots
        .set(0, &fd, 0)
        .context("putting the challenge program in its slot")?;
    Ok(())
}

/// The daemon's clock for rotations.
pub struct Rotation {
    next: Instant,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            next: Instant::now() + Duration::from_secs(EPOCH_SECS),
        }
    }
}

impl Rotation {
    /// Rotate when the epoch is over.
    pub fn tick(&mut self, control: &mut Control) -> Result<()> {
        if Instant::now() < self.next {
            return Ok(());
        }
        self.next = Instant::now() + Duration::from_secs(EPOCH_SECS);
        control.write()?.rotate_challenge_key().map(|_| ())
    }
}
