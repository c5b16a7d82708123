//! What this gateway still owes the bucket, kept in a file so that a
//! controller restart during an outage loses nothing: the writes not yet
//! acknowledged (bounded, oldest dropped first, one per key) and the
//! shared entries last seen in the local maps (to tell what changed).

use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::codec::Record;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Record),
    Delete,
}

/// A local shared entry as last seen: enough to notice a change.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub origin: u8,
    /// CLOCK_MONOTONIC; survives a controller restart, as the maps do.
    pub expires_ns: u64,
}

#[derive(Serialize, Deserialize, Debug, Default)]
struct Saved {
    pending: VecDeque<(String, Op)>,
    seen: BTreeMap<String, Seen>,
}

#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    max: usize,
    saved: Saved,
    dirty: bool,
}

impl Outbox {
    pub fn path(pin_dir: &Path) -> PathBuf {
        crate::state::path(pin_dir).with_extension("fleet-outbox.json")
    }

    /// Load what a previous controller left (nothing if there is no file or
    /// it does not parse: the next scan republishes what is local).
    pub fn load(path: PathBuf, max: usize) -> Outbox {
        let saved = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Outbox {
            path,
            max: max.max(1),
            saved,
            dirty: false,
        }
    }

    pub fn len(&self) -> usize {
        self.saved.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.saved.pending.is_empty()
    }

    /// Queue a write; a newer write of the same key replaces the older one.
    /// Returns how many old writes were dropped to stay within the bound.
    pub fn push(&mut self, key: String, op: Op) -> u64 {
        self.saved.pending.retain(|(k, _)| *k != key);
        self.saved.pending.push_back((key, op));
        self.dirty = true;
        let mut dropped = 0;
        while self.saved.pending.len() > self.max {
            self.saved.pending.pop_front();
            dropped += 1;
        }
        dropped
    }

    pub fn front(&self) -> Option<&(String, Op)> {
        self.saved.pending.front()
    }

    /// The front write was acknowledged (or is moot).
    pub fn pop(&mut self) {
        self.saved.pending.pop_front();
        self.dirty = true;
    }

    pub fn seen(&self) -> &BTreeMap<String, Seen> {
        &self.saved.seen
    }

    pub fn set_seen(&mut self, seen: BTreeMap<String, Seen>) {
        if seen != self.saved.seen {
            self.saved.seen = seen;
            self.dirty = true;
        }
    }

    /// Write the file if anything changed (atomically: temp file, rename).
    pub fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(d) = self.path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = self.path.with_extension("tmp-outbox");
        std::fs::write(&tmp, serde_json::to_vec(&self.saved)?)?;
        std::fs::rename(&tmp, &self.path)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_one_write_per_key_and_survives_a_reload() {
        let dir = std::env::temp_dir().join(format!("fleet-outbox-{}", std::process::id()));
        let path = dir.join("o.json");
        let mut o = Outbox::load(path.clone(), 3);
        assert_eq!(o.push("a".into(), Op::Delete), 0);
        assert_eq!(o.push("b".into(), Op::Delete), 0);
        assert_eq!(o.push("a".into(), Op::Delete), 0);
        assert_eq!(o.len(), 2);
        assert_eq!(o.front().unwrap().0, "b");
        assert_eq!(o.push("c".into(), Op::Delete), 0);
        assert_eq!(o.push("d".into(), Op::Delete), 1);
        o.save().unwrap();
        let again = Outbox::load(path, 3);
        let keys: Vec<_> = again
            .saved
            .pending
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["a", "c", "d"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
