//! The SYN challenge from the controller's side: the challenge program is
//! put in its slot at load, and the cookie key is rotated every epoch
//! (`firewall_common::challenge`), the previous key staying valid for one
//! more epoch so that a challenge sent just before a rotation still counts.

use std::{
    io::Read,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::{
    maps::{Array, Map, MapData, ProgramArray},
    programs::Xdp,
    Ebpf,
};
use firewall_common::{
    challenge::EPOCH_SECS,
    maps::{CHALLENGE_KEY, CHALLENGE_PROG, PROG_CHALLENGE},
    ChallengeKey,
};

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

/// Start a new epoch with a fresh random key; the current key becomes the
/// previous one. Returns the new epoch.
pub fn rotate(pin_dir: &Path) -> Result<u32> {
    let path = pin_dir.join(CHALLENGE_KEY);
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening the challenge key at {}", path.display()))?;
    let mut map: Array<MapData, ChallengeKey> = Map::from_map_data(data)?.try_into()?;
    let mut k = map.get(&0, 0)?;
    // Epoch 0 means "no key": the data plane challenges nothing until the
    // first rotation.
    let epoch = match k.epoch.wrapping_add(1) {
        0 => 1,
        e => e,
    };
    k.keys[(epoch & 1) as usize] = random_key()?;
    k.epoch = epoch;
    map.set(0, k, 0)?;
    Ok(epoch)
}

fn random_key() -> Result<[u64; 2]> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom for the challenge key")?;
    let (lo, hi) = b.split_at(8);
    Ok([
        u64::from_le_bytes(lo.try_into()?),
        u64::from_le_bytes(hi.try_into()?),
    ])
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
    pub fn tick(&mut self, pin_dir: &Path) -> Result<()> {
        if Instant::now() < self.next {
            return Ok(());
        }
        self.next = Instant::now() + Duration::from_secs(EPOCH_SECS);
        rotate(pin_dir).map(|_| ())
    }
}
