//! The fleet's side of the local blocklist, through the same API (and the
//! same write lock) as the CLI. Blocking: runs on the fleet thread only.

use std::{collections::BTreeMap, time::SystemTime};

use anyhow::Result;
use firewall_common::{ListEntry, Origin};
use ipnet::IpNet;

use super::codec::{key_of, Remote};
use crate::{apply::refresh_flags, clock::mono_ns, commands::lists, lists::List, maps::Maps};

/// The entries of the shared origins in force now, by bucket key.
pub fn shared(maps: &Maps, share: &[Origin]) -> Result<BTreeMap<String, (IpNet, ListEntry)>> {
    let now = mono_ns();
    Ok(maps
        .list_all(List::Block)?
        .into_iter()
        .filter(|(_, e)| share.iter().any(|o| *o as u8 == e.origin))
        .filter(|(_, e)| e.expires_ns == 0 || e.expires_ns > now)
        .map(|(n, e)| (key_of(&n), (n, e)))
        .collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    New,
    Updated,
    /// Already there with this expiry (a replay after a reconnect).
    Unchanged,
    /// A local entry (by hand, file, import, auto-ban) covers exactly this
    /// prefix: the local decision stands.
    LocalWins,
}

/// Put a remote entry on the blocklist with origin `fleet` and what is
/// left of its lifetime.
pub fn apply(maps: &mut Maps, r: &Remote, now: SystemTime) -> Result<Applied> {
    let _lock = maps.write_lock()?;
    // Checked to be in the future; a few ms may have passed since.
    let ttl = r.expires_at.map(|t| {
        t.duration_since(now)
            .unwrap_or_default()
            .max(std::time::Duration::from_millis(1))
    });
    let expires_ns = ttl.map(crate::clock::expiry_after).unwrap_or(0);
    let old = maps.list_get(List::Block, &r.net)?;
    let how = match old {
        Some(e) if e.origin != Origin::Fleet as u8 => return Ok(Applied::LocalWins),
        // Within a second: the same entry seen again.
        Some(e)
            if e.expires_ns.abs_diff(expires_ns) < 1_000_000_000
                && (e.expires_ns == 0) == (expires_ns == 0) =>
        {
            return Ok(Applied::Unchanged)
        }
        Some(_) => Applied::Updated,
        None => Applied::New,
    };
    let comment = format!("fleet:{}", r.gateway);
    lists::add(
        maps,
        List::Block,
        &[r.net],
        Origin::Fleet,
        ttl,
        Some(&comment),
    )?;
    Ok(how)
}

/// Remove a fleet entry (deleted in the bucket); local entries stay.
pub fn remove(maps: &mut Maps, net: &IpNet) -> Result<bool> {
    let _lock = maps.write_lock()?;
    match maps.list_get(List::Block, net)? {
        Some(e) if e.origin == Origin::Fleet as u8 => {
            lists::end_runtime_entry(maps, List::Block, net, &e)?;
            refresh_flags(maps, crate::apply::touches_cache(List::Block, &[*net]))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Every fleet entry, for reconciling after a full replay of the bucket.
pub fn fleet_entries(maps: &Maps) -> Result<Vec<IpNet>> {
    Ok(maps
        .list_all(List::Block)?
        .into_iter()
        .filter(|(_, e)| e.origin == Origin::Fleet as u8)
        .map(|(n, _)| n)
        .collect())
}
