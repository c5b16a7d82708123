//! The write side: [`Writer`], the only way to change the maps.
//!
//! A writer holds the pin directory's lock (an `flock` on a file beside the
//! controller's state) from [`Control::write`] until it is dropped, so the
//! CLI, the daemon's reloads, expiry and bans, the live view and the fleet
//! and CrowdSec workers never interleave their changes. Each method leaves
//! the maps consistent: entries in both sets, content flags and the
//! generation (so tracked sources re-classify) brought up to date.

use std::{fs::File, time::Duration};

use anyhow::{Context, Result};
use firewall_common::{Limit, LimitEntry, ListEntry};
use ipnet::IpNet;

use super::{
    apply::{apply, note_added, refresh_flags, touches_cache},
    lists::List,
    maps::Maps,
    read::{self, ListRow},
    Control, Origin,
};
use crate::{clock::expiry_after, error::bad, policy::Policy, text::fixed, tick::Tick};

/// Entries per batch syscall for bulk loads.
const CHUNK: usize = 10_000;

/// Exclusive access to the maps for as long as it lives.
pub struct Writer<'a> {
    maps: &'a mut Maps,
    _lock: File,
}

impl Control {
    /// Take the writers' lock of this pin directory (waiting for it).
    pub fn write(&mut self) -> Result<Writer<'_>> {
        let lock = self.maps.write_lock()?;
        Ok(Writer {
            maps: &mut self.maps,
            _lock: lock,
        })
    }
}

/// One entry of a bulk put ([`Writer::put_many`]).
#[derive(Clone, Debug)]
pub struct Put {
    pub net: IpNet,
    /// Monotonic ns; 0 = never.
    pub expires_ns: u64,
    pub comment: String,
    /// The entry it replaces, if any: its hits and its place in the
    /// policy file carry over.
    pub previous: Option<ListRow>,
}

/// What [`Writer::import`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Imported {
    pub added: usize,
    /// Already listed by hand or by the policy file: left as they are.
    pub kept: usize,
}

/// An entry [`Writer::expire`] removed.
#[derive(Clone, Debug)]
pub struct Expired {
    pub list: List,
    pub row: ListRow,
}

fn entry(origin: Origin, expires_ns: u64, comment: &str, previous: Option<&ListRow>) -> ListEntry {
    ListEntry {
        expires_ns,
        hits: previous.map(|o| o.hits).unwrap_or(0),
        origin: origin as u8,
        in_file: previous.is_some_and(|o| o.in_file) as u8,
        comment: fixed(comment),
        ..Default::default()
    }
}

impl Writer<'_> {
    /// The config packets use now, read under the lock.
    pub fn config(&self) -> Result<firewall_common::Config> {
        self.maps.config()
    }

    /// The entry for exactly `net`, read under the lock.
    pub fn list_entry(&self, list: List, net: &IpNet) -> Result<Option<ListRow>> {
        read::list_entry(self.maps, list, net)
    }

    /// Every entry of `list`, expired ones included, read under the lock.
    pub fn list_entries(&self, list: List) -> Result<Vec<ListRow>> {
        read::list_entries(self.maps, list)
    }

    /// Add run-time entries (every origin but `config`), replacing what is
    /// there for exactly those prefixes; `ttl` makes them expire.
    pub fn add(
        &mut self,
        list: List,
        nets: &[IpNet],
        origin: Origin,
        ttl: Option<Duration>,
        comment: Option<&str>,
    ) -> Result<()> {
        let expires_ns = ttl.map(expiry_after).unwrap_or(0);
        for net in nets {
            let old = self.list_entry(list, net)?;
            let e = entry(origin, expires_ns, comment.unwrap_or(""), old.as_ref());
            self.maps
                .list_put(list, net, e)
                .with_context(|| format!("adding {net} to the {} list", list.name()))?;
        }
        note_added(self.maps, list, nets, expires_ns)
    }

    /// Delete run-time entries by hand: every prefix must be listed and not
    /// come from the policy file, or nothing changes.
    pub fn delete(&mut self, list: List, nets: &[IpNet]) -> Result<()> {
        let mut found = Vec::new();
        for net in nets {
            match self.list_entry(list, net)? {
                None => {
                    return Err(bad(format!(
                        "{net} is not in the {} list (see `firewall {} list`)",
                        list.name(),
                        list.name()
                    )))
                }
                Some(e) if super::origin::from_file(e.origin) => {
                    return Err(bad(format!(
                    "{net} comes from the policy file; remove it there (the file's entries follow the file)"
                )))
                }
                Some(e) => found.push(e),
            }
        }
        self.end(list, &found)
    }

    /// End run-time entries (deleted, expired, withdrawn by the fleet or
    /// CrowdSec): where the policy file lists the prefix too, the file's
    /// entry applies again.
    pub fn end(&mut self, list: List, rows: &[ListRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        for r in rows {
            self.end_one(list, r)?;
        }
        let nets: Vec<IpNet> = rows.iter().map(|r| r.net).collect();
        refresh_flags(self.maps, touches_cache(list, &nets))
    }

    fn end_one(&mut self, list: List, r: &ListRow) -> Result<()> {
        if r.in_file {
            let back = ListEntry {
                origin: Origin::Config as u8,
                in_file: 1,
                hits: r.hits,
                ..Default::default()
            };
            self.maps.list_put(list, &r.net, back)
        } else {
            self.maps.list_del(list, &r.net).map(|_| ())
        }
    }

    /// Put many entries of one origin on `list` in batches.
    pub fn put_many(&mut self, list: List, origin: Origin, puts: &[Put]) -> Result<()> {
        if puts.is_empty() {
            return Ok(());
        }
        let entries: Vec<(IpNet, ListEntry)> = puts
            .iter()
            .map(|p| {
                let e = entry(origin, p.expires_ns, &p.comment, p.previous.as_ref());
                (p.net, e)
            })
            .collect();
        self.maps.list_put_many(list, &entries, CHUNK, |_| {})?;
        let nets: Vec<IpNet> = puts.iter().map(|p| p.net).collect();
        let first = puts.iter().map(|p| p.expires_ns).min().unwrap_or(0);
        note_added(self.maps, list, &nets, first)
    }

    /// Bulk-load prefixes onto the blocklist with origin `import`. Entries
    /// by hand, from the file, the fleet or CrowdSec win over an import;
    /// earlier imports and auto-bans are replaced. `progress` is told how
    /// many of how many are written after each batch.
    pub fn import(
        &mut self,
        nets: &[IpNet],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Imported> {
        let existing: std::collections::HashMap<IpNet, ListEntry> =
            self.maps.list_all(List::Block)?.into_iter().collect();
        let mut kept = 0usize;
        let mut seen = std::collections::HashSet::new();
        let mut fresh = Vec::with_capacity(nets.len());
        for net in nets {
            if !seen.insert(*net) {
                continue;
            }
            match existing.get(net) {
                Some(e)
                    if e.origin != Origin::Import as u8 && e.origin != Origin::Autoban as u8 =>
                {
                    kept += 1
                }
                _ => fresh.push(*net),
            }
        }
        let entries: Vec<(IpNet, ListEntry)> = fresh
            .iter()
            .map(|n| (*n, entry(Origin::Import, 0, "", None)))
            .collect();
        let total = entries.len();
        self.maps
            .list_put_many(List::Block, &entries, CHUNK, |done| progress(done, total))?;
        note_added(self.maps, List::Block, &fresh, 0)?;
        Ok(Imported {
            added: entries.len(),
            kept,
        })
    }

    /// Set the manual default limit (`net` = `None`) or a manual class.
    pub fn set_limit(&mut self, net: Option<&IpNet>, limit: Limit) -> Result<()> {
        match net {
            None => {
                self.maps.bump(|c| {
                    c.manual_default = limit;
                    c.default_limit = limit;
                })?;
            }
            Some(net) => {
                let old = self.maps.limit_get(net)?;
                let e = LimitEntry {
                    limit,
                    file_limit: old.map(|o| o.file_limit).unwrap_or_default(),
                    origin: Origin::Manual as u8,
                    ..Default::default()
                };
                self.maps.limit_put(net, e)?;
                refresh_flags(self.maps, true)?;
            }
        }
        Ok(())
    }

    /// Delete the manual default limit (`net` = `None`) or a run-time
    /// class; the file's value applies again where it has one.
    pub fn delete_limit(&mut self, net: Option<&IpNet>) -> Result<()> {
        let Some(net) = net else {
            if !self.maps.config()?.manual_default.is_set() {
                return Err(bad("there is no manual default limit to delete (the policy file's default applies)"));
            }
            self.maps.bump(|c| {
                c.manual_default = Limit::default();
                c.default_limit = c.file_default;
            })?;
            return Ok(());
        };
        match self.maps.limit_get(net)? {
            None => {
                return Err(bad(format!(
                    "there is no limit class for {net} (see `firewall limit list`)"
                )))
            }
            Some(e) if super::origin::from_file(super::origin::of_byte(e.origin)) => {
                return Err(bad(format!(
                    "the limit for {net} comes from the policy file; change it there"
                )))
            }
            Some(e) if e.file_limit.is_set() => {
                let back = LimitEntry {
                    limit: e.file_limit,
                    file_limit: e.file_limit,
                    origin: Origin::Config as u8,
                    ..Default::default()
                };
                self.maps.limit_put(net, back)?;
            }
            Some(_) => {
                self.maps.limit_del(net)?;
            }
        }
        refresh_flags(self.maps, true)
    }

    /// Apply a whole policy atomically (see `apply`): the file's entries
    /// follow the file, run-time entries stay.
    pub fn apply(&mut self, policy: &Policy) -> Result<()> {
        apply(self.maps, policy)
    }

    /// Start a new epoch of the SYN challenge's key; the new epoch.
    pub fn rotate_challenge_key(&mut self) -> Result<u32> {
        super::challenge_key::rotate(&self.maps.dir)
    }

    /// Tell the program which clock it reads.
    pub fn set_tick(&mut self, tick: Tick) -> Result<()> {
        self.maps.touch(|c| tick.set(c))?;
        Ok(())
    }

    /// After a migration from an older layout: entries get their prefix
    /// length from their key again.
    pub fn repair_prefix_lens(&mut self) -> Result<()> {
        self.maps.repair_prefix_lens()
    }

    /// Exact hosts an older layout kept in the tries move to the host
    /// hashes; returns how many moved.
    pub fn move_hosts_out_of_tries(&mut self) -> Result<usize> {
        self.maps.move_hosts_out_of_tries()
    }

    /// Set the controller's hint of the earliest expiry (0: none): the
    /// program ignores it, no new generation.
    pub fn set_expiry_hint(&mut self, ns: u64) -> Result<()> {
        self.maps.touch(|c| c.next_expiry_ns = ns)?;
        Ok(())
    }

    /// Remove the entries of both lists expired at `now` (the program
    /// already ignores them) and note the next expiry; returns what went.
    pub fn expire(&mut self, now: u64) -> Result<Vec<Expired>> {
        let mut earliest = 0u64;
        let mut gone = Vec::new();
        for list in [List::Block, List::Allow] {
            for row in self.list_entries(list)? {
                let Some(at) = row.expires_ns else { continue };
                if at > now {
                    if earliest == 0 || at < earliest {
                        earliest = at;
                    }
                    continue;
                }
                self.end_one(list, &row)?;
                gone.push(Expired { list, row });
            }
        }
        if !gone.is_empty() {
            let bump = gone.iter().any(|x| touches_cache(x.list, &[x.row.net]));
            refresh_flags(self.maps, bump)?;
        }
        self.set_expiry_hint(earliest)?;
        Ok(gone)
    }
}
