//! The SYN challenge's key (`FW_CHAL_KEY`): a fresh random key each
//! epoch, the current one kept as the previous (see
//! `firewall_common::challenge`).

use std::{io::Read, path::Path};

use anyhow::{Context, Result};
use aya::maps::{Array, Map, MapData};
use firewall_common::{maps::CHALLENGE_KEY, ChallengeKey};

/// Start a new epoch with a fresh random key; the current key becomes the
/// previous one. Returns the new epoch.
pub(super) fn rotate(pin_dir: &Path) -> Result<u32> {
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
