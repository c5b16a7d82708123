//! The publishing side: local changes found by a scan, queued in the
//! outbox, and sent when the bus is up.

use std::{
    collections::BTreeMap,
    sync::atomic::Ordering,
    time::{Duration, Instant, SystemTime},
};

use async_nats::jetstream::kv;
use serde_json::json;
use tokio::time::timeout;

use super::{Worker, REQUEST};
use crate::{
    clock::wall_of,
    fleet::{
        codec::{time_text, Record},
        local,
        outbox::{Op, Seen},
    },
};

impl Worker {
    /// Compare the shared local entries with what was last seen and queue
    /// the differences: new or changed ones as puts, gone ones as deletes.
    pub(super) fn scan(&mut self) {
        self.last_scan = Instant::now();
        let now = match local::shared(&self.control, &self.cfg.share) {
            Ok(n) => n,
            Err(e) => return eprintln!("error: fleet: reading the blocklist: {e:#}"),
        };
        let mut seen = BTreeMap::new();
        let mut dropped = 0;
        for (key, e) in &now {
            let net = &e.net;
            let s = Seen {
                origin: e.origin as u8,
                expires_ns: e.expires_ns.unwrap_or(0),
            };
            seen.insert(key.clone(), s);
            if self.outbox.seen().get(key) == Some(&s) {
                continue;
            }
            let origin = e.origin.name();
            let (reason, at) = self.hints.remove(net).unwrap_or_else(|| {
                let c = e.comment.clone();
                (
                    if c.is_empty() { origin.to_string() } else { c },
                    SystemTime::now(),
                )
            });
            let rec = Record {
                cidr: net.to_string(),
                origin: origin.to_string(),
                gateway: self.cfg.name.clone(),
                reason: Some(reason),
                created_at: time_text(at),
                expires_at: e.expires_ns.map(|x| time_text(wall_of(x))),
            };
            dropped += self.outbox.push(key.clone(), Op::Put(rec));
        }
        let gone: Vec<String> = self
            .outbox
            .seen()
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            dropped += self.outbox.push(key, Op::Delete);
        }
        self.outbox.set_seen(seen);
        if dropped > 0 {
            self.stats
                .outbox_dropped
                .fetch_add(dropped, Ordering::Relaxed);
            self.log.emit(
                "fleet_outbox_full",
                json!({"dropped": dropped, "max": self.cfg.outbox}),
            );
        }
        self.hints.clear();
        self.save();
    }

    /// Send what waits, in order, until the bus fails; the rest waits.
    pub(super) async fn flush(&mut self) {
        let Some(kv) = self.kv.clone() else {
            return;
        };
        if !self.connected {
            return;
        }
        while let Some((key, op)) = self.outbox.front().cloned() {
            let sent = match &op {
                Op::Put(rec) => {
                    let body = serde_json::to_vec(rec).unwrap_or_default();
                    matches!(timeout(REQUEST, kv.put(&key, body.into())).await, Ok(Ok(_)))
                }
                Op::Delete => self.delete_own(&kv, &key).await,
            };
            if !sent {
                self.retry_at = Instant::now() + Duration::from_secs(1);
                break;
            }
            self.outbox.pop();
            self.stats.published.fetch_add(1, Ordering::Relaxed);
        }
        self.save();
    }

    /// Delete a key only while it holds this gateway's entry: another
    /// gateway may have written the same prefix since.
    pub(super) async fn delete_own(&self, kv: &kv::Store, key: &str) -> bool {
        let current = match timeout(REQUEST, kv.entry(key)).await {
            Ok(Ok(c)) => c,
            _ => return false,
        };
        let Some(e) = current.filter(|e| e.operation == kv::Operation::Put) else {
            return true; // Already gone.
        };
        let ours =
            serde_json::from_slice::<Record>(&e.value).is_ok_and(|r| r.gateway == self.cfg.name);
        if !ours {
            return true;
        }
        match timeout(REQUEST, kv.delete_expect_revision(key, Some(e.revision))).await {
            Ok(Ok(())) => true,
            // Rewritten in between: no longer ours to delete.
            Ok(Err(err)) => err.kind() == kv::DeleteErrorKind::WrongLastRevision,
            Err(_) => false,
        }
    }
}
