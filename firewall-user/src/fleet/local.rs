//! The fleet's side of the local blocklist: which local entries are shared,
//! and how entries from other gateways go in, through the same writer (and
//! the same lock) as the CLI. Blocking: runs on the fleet thread only.

use std::{collections::BTreeMap, time::SystemTime};

use anyhow::Result;
use ipnet::IpNet;

use super::codec::{key_of, Remote};
use crate::{
    clock::{expiry_after, mono_ns},
    control::{read::ListRow, Control, List, Origin},
};

/// The entries of the shared origins in force now, by bucket key.
pub fn shared(control: &Control, share: &[Origin]) -> Result<BTreeMap<String, ListRow>> {
    let now = mono_ns();
    Ok(control
        .list_entries(List::Block)?
        .into_iter()
        .filter(|r| share.contains(&r.origin))
        .filter(|r| r.live(now))
        .map(|r| (key_of(&r.net), r))
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
pub fn apply(control: &mut Control, r: &Remote, now: SystemTime) -> Result<Applied> {
    let mut w = control.write()?;
    // Checked to be in the future; a few ms may have passed since.
    let ttl = r.expires_at.map(|t| {
        t.duration_since(now)
            .unwrap_or_default()
            .max(std::time::Duration::from_millis(1))
    });
    let expires_ns = ttl.map(expiry_after).unwrap_or(0);
    let how = match w.list_entry(List::Block, &r.net)? {
        Some(e) if e.origin != Origin::Fleet => return Ok(Applied::LocalWins),
        // Within a second: the same entry seen again.
        Some(e)
            if e.expires_ns.unwrap_or(0).abs_diff(expires_ns) < 1_000_000_000
                && e.expires_ns.is_none() == (expires_ns == 0) =>
        {
            return Ok(Applied::Unchanged)
        }
        Some(_) => Applied::Updated,
        None => Applied::New,
    };
    let comment = format!("fleet:{}", r.gateway);
    w.add(List::Block, &[r.net], Origin::Fleet, ttl, Some(&comment))?;
    Ok(how)
}

/// Remove a fleet entry (deleted in the bucket); local entries stay.
pub fn remove(control: &mut Control, net: &IpNet) -> Result<bool> {
    let mut w = control.write()?;
    match w.list_entry(List::Block, net)? {
        Some(e) if e.origin == Origin::Fleet => {
            w.end(List::Block, &[e])?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Every fleet entry, for reconciling after a full replay of the bucket.
pub fn fleet_entries(control: &Control) -> Result<Vec<IpNet>> {
    Ok(control
        .list_entries(List::Block)?
        .into_iter()
        .filter(|r| r.origin == Origin::Fleet)
        .map(|r| r.net)
        .collect())
}
