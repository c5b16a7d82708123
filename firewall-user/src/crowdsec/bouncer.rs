//! Decisions into the blocklist: what CrowdSec wants blocked, kept per
//! prefix with the ids that hold it, written in batches.
//!
//! Rules (written down in docs/crowdsec.md):
//! - A prefix may be held by several decisions; it stays blocked until the
//!   last one is deleted or expires, with the longest expiry.
//! - CrowdSec never overrides a local entry. A prefix already on the
//!   blocklist by the policy file, by hand, by an import, an auto-ban or
//!   the fleet keeps that entry; the decision is "shadowed" and written
//!   only if the local entry goes away while the decision still holds.
//!   Deleting a decision removes only entries whose origin is `crowdsec`.
//! - A startup pull is the whole truth: entries of origin `crowdsec` that it
//!   does not hold are removed (deleted while we were away), so a restart
//!   or a resync after an outage loses and duplicates nothing.
//! - Everything is validated before the first map write; one answer is one
//!   batch under the write lock.
//! - A skipped decision is counted once, however many full pulls see it.
//! - The LAPI (1.4) picks deltas by creation time, so a decision committed
//!   while a pull reads can fall between two deltas. Decision ids are
//!   sequential: a hole in the ids a delta brings is reported (`gap`) so
//!   the worker resyncs with a full pull.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Result;
use ipnet::IpNet;
use serde_json::{json, Value};

use super::{
    decision::{accept, target, Skip, Stream},
    watcher::Outbox,
};
use crate::{
    clock::mono_ns,
    control::{read::ListRow, write::Put, List, Origin, Writer},
};

/// Expiries closer than this are the same: no rewrite.
const SAME_EXPIRY_NS: u64 = 1_000_000_000;
/// Skipped decisions shown in the event, per answer.
const EXAMPLES: usize = 5;

#[derive(Debug, Default)]
struct Held {
    /// Decision id and its monotonic expiry.
    ids: Vec<(i64, u64)>,
    /// Held behind a local entry of another origin.
    shadowed: bool,
    scenario: String,
}

impl Held {
    fn expiry(&self) -> u64 {
        self.ids.iter().map(|(_, e)| *e).max().unwrap_or(0)
    }
}

/// What one answer did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// New ban decisions taken (written, or held behind a local entry).
    pub applied: u64,
    /// Decisions deleted (or gone from a startup pull) that we held.
    pub deleted: u64,
    pub skipped: BTreeMap<Skip, u64>,
    /// A few skipped decisions, for the event.
    pub examples: Vec<Value>,
    /// Map entries written and removed.
    pub written: usize,
    pub removed: usize,
    /// New decisions in the answer (valid or not).
    pub new: usize,
    /// Ids missing between the highest seen before and this answer's.
    pub gap: bool,
}

impl Outcome {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    fn skip(&mut self, why: Skip, id: i64, scope: &str, value: &str, duration: &str) {
        *self.skipped.entry(why).or_default() += 1;
        if self.examples.len() < EXAMPLES && why != Skip::Own {
            // The value is the LAPI's text: shorten it, it may be hostile.
            let short = |s: &str| s.chars().take(64).collect::<String>();
            self.examples.push(json!({
                "id": id, "reason": why.name(), "scope": short(scope),
                "value": short(value), "duration": short(duration),
            }));
        }
    }
}

/// A decision that passed validation.
struct New {
    id: i64,
    net: IpNet,
    expires_ns: u64,
    scenario: String,
}

#[derive(Default)]
pub struct Bouncer {
    held: HashMap<IpNet, Held>,
    /// Ids of the skipped decisions still listed by the LAPI.
    skipped: HashSet<i64>,
    /// Highest decision id seen (0: none yet).
    max_id: i64,
}

/// An entry's expiry in monotonic ns, 0 for never (as decisions count).
fn expiry_ns(e: &ListRow) -> u64 {
    e.expires_ns.unwrap_or(0)
}

fn is_crowdsec(e: &ListRow) -> bool {
    e.origin == Origin::Crowdsec
}

/// The map writes one answer produces, applied together.
#[derive(Default)]
struct Batch {
    put: Vec<Put>,
    remove: Vec<ListRow>,
}

impl Batch {
    fn put(&mut self, net: IpNet, old: Option<ListRow>, expires_ns: u64, scenario: &str) {
        self.put.push(Put {
            net,
            expires_ns,
            comment: scenario.to_string(),
            previous: old,
        });
    }

    fn commit(self, w: &mut Writer, out: &mut Outcome) -> Result<()> {
        w.put_many(List::Block, Origin::Crowdsec, &self.put)?;
        out.written = self.put.len();
        w.end(List::Block, &self.remove)?;
        out.removed = self.remove.len();
        Ok(())
    }
}

impl Bouncer {
    /// Prefixes CrowdSec currently holds.
    pub fn active(&self) -> usize {
        self.held.len()
    }

    /// Of those, held behind a local entry.
    pub fn shadowed(&self) -> usize {
        self.held.values().filter(|h| h.shadowed).count()
    }

    /// Validate an answer, then apply it in one batch. The caller holds the
    /// write lock. On error the maps may be partly written: the caller
    /// resyncs with a startup pull, which repairs both sides.
    pub fn apply(
        &mut self,
        w: &mut Writer,
        stream: Stream,
        startup: bool,
        outbox: &Outbox,
    ) -> Result<Outcome> {
        let now = mono_ns();
        let mut out = Outcome::default();
        let ids: Vec<i64> = [&stream.new, &stream.deleted]
            .into_iter()
            .flatten()
            .flatten()
            .map(|d| d.id)
            .collect();
        out.gap = !startup && self.hole(&ids);
        self.max_id = ids.iter().copied().fold(self.max_id, i64::max);
        let new = stream.new.unwrap_or_default();
        out.new = new.len();
        let mut skipped = if startup {
            HashSet::new()
        } else {
            std::mem::take(&mut self.skipped)
        };
        let mut news = Vec::new();
        for d in new {
            let why = match accept(&d) {
                Ok((net, _)) if outbox.is_ours(&net, &d.scenario) => Skip::Own,
                Ok((net, ttl)) => {
                    news.push(New {
                        id: d.id,
                        net,
                        expires_ns: now.saturating_add(ttl.as_nanos() as u64),
                        scenario: d.scenario,
                    });
                    continue;
                }
                Err(why) => why,
            };
            if skipped.insert(d.id) && !self.skipped.contains(&d.id) {
                out.skip(why, d.id, &d.scope, &d.value, &d.duration);
            }
        }
        self.skipped = skipped;
        // A deletion is matched by prefix and id; one we cannot read cannot
        // match anything we hold, so it is ignored.
        let dels: Vec<(i64, IpNet)> = stream
            .deleted
            .unwrap_or_default()
            .iter()
            .filter(|d| d.kind.eq_ignore_ascii_case("ban"))
            .filter_map(|d| target(d).ok().map(|n| (d.id, n)))
            .collect();
        let mut batch = Batch::default();
        if startup {
            self.resync(w, news, now, &mut out, &mut batch)?;
        } else {
            self.delta(w, news, dels, now, &mut out, &mut batch)?;
        }
        batch.commit(w, &mut out)?;
        Ok(out)
    }

    /// Whether the ids above the highest seen so far leave a hole.
    fn hole(&self, ids: &[i64]) -> bool {
        if self.max_id == 0 {
            return false;
        }
        let mut above: Vec<i64> = ids.iter().copied().filter(|i| *i > self.max_id).collect();
        above.sort_unstable();
        above.dedup();
        match above.last() {
            Some(top) => (top - self.max_id) as usize != above.len(),
            None => false,
        }
    }

    /// A startup pull: the whole set replaces what we held.
    fn resync(
        &mut self,
        w: &Writer,
        news: Vec<New>,
        now: u64,
        out: &mut Outcome,
        batch: &mut Batch,
    ) -> Result<()> {
        let mut held: HashMap<IpNet, Held> = HashMap::with_capacity(news.len());
        for n in news {
            let known = self
                .held
                .get(&n.net)
                .is_some_and(|h| h.ids.iter().any(|(id, _)| *id == n.id));
            if !known {
                out.applied += 1;
            }
            let h = held.entry(n.net).or_default();
            h.ids.retain(|(id, _)| *id != n.id);
            h.ids.push((n.id, n.expires_ns));
            h.scenario = n.scenario;
        }
        for (net, h) in &self.held {
            let kept = held.get(net);
            out.deleted += h
                .ids
                .iter()
                .filter(|(id, _)| !kept.is_some_and(|k| k.ids.iter().any(|(i, _)| i == id)))
                .count() as u64;
        }
        let actual: HashMap<IpNet, ListRow> = w
            .list_entries(List::Block)?
            .into_iter()
            .map(|r| (r.net, r))
            .collect();
        for (net, h) in held.iter_mut() {
            let exp = h.expiry();
            match actual.get(net) {
                Some(e) if e.live(now) && !is_crowdsec(e) => h.shadowed = true,
                Some(e) if is_crowdsec(e) && expiry_ns(e).abs_diff(exp) < SAME_EXPIRY_NS => {}
                old => batch.put(*net, old.cloned(), exp, &h.scenario),
            }
        }
        for (net, e) in actual {
            if is_crowdsec(&e) && !held.contains_key(&net) {
                batch.remove.push(e);
            }
        }
        self.held = held;
        Ok(())
    }

    /// Deltas: deletions and new decisions, then the prefixes they touch.
    fn delta(
        &mut self,
        w: &Writer,
        news: Vec<New>,
        dels: Vec<(i64, IpNet)>,
        now: u64,
        out: &mut Outcome,
        batch: &mut Batch,
    ) -> Result<()> {
        let mut touched: HashSet<IpNet> = HashSet::new();
        for (id, net) in dels {
            if let Some(h) = self.held.get_mut(&net) {
                let before = h.ids.len();
                h.ids.retain(|(i, _)| *i != id);
                if h.ids.len() < before {
                    out.deleted += 1;
                    touched.insert(net);
                }
            }
        }
        for n in news {
            let h = self.held.entry(n.net).or_default();
            if !h.ids.iter().any(|(id, _)| *id == n.id) {
                out.applied += 1;
            }
            h.ids.retain(|(id, _)| *id != n.id);
            h.ids.push((n.id, n.expires_ns));
            h.scenario = n.scenario;
            touched.insert(n.net);
        }
        // Shadowed prefixes are looked at again each time: their local
        // entry may have expired or been deleted.
        touched.extend(
            self.held
                .iter()
                .filter(|(_, h)| h.shadowed)
                .map(|(n, _)| *n),
        );
        for net in touched {
            let old = w.list_entry(List::Block, &net)?;
            let Some(h) = self.held.get_mut(&net) else {
                continue;
            };
            h.ids.retain(|(_, e)| *e > now);
            if h.ids.is_empty() {
                self.held.remove(&net);
                if let Some(e) = old.filter(is_crowdsec) {
                    batch.remove.push(e);
                }
                continue;
            }
            let exp = h.expiry();
            h.shadowed = false;
            match old {
                Some(e) if e.live(now) && !is_crowdsec(&e) => h.shadowed = true,
                Some(e) if is_crowdsec(&e) && expiry_ns(&e).abs_diff(exp) < SAME_EXPIRY_NS => {}
                old => batch.put(net, old, exp, &h.scenario),
            }
        }
        // Expired decisions: the daemon's expiry removes their entries.
        self.held.retain(|_, h| h.expiry() > now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Bouncer;

    #[test]
    fn a_hole_in_the_ids_is_a_gap() {
        let fresh = Bouncer::default();
        assert!(!fresh.hole(&[40, 90]), "nothing seen yet: no reference");
        let b = Bouncer {
            max_id: 10,
            ..Default::default()
        };
        assert!(!b.hole(&[]));
        assert!(!b.hole(&[11, 12]));
        assert!(!b.hole(&[13, 11, 12, 12]));
        assert!(!b.hole(&[3, 7]), "old ids (deletions) do not count");
        assert!(b.hole(&[12]));
        assert!(b.hole(&[11, 13]));
        assert!(b.hole(&[5, 12, 14, 13]));
    }
}
