//! The receiving side: the bucket watched, its entries checked and applied.

use std::{
    collections::HashSet,
    sync::atomic::Ordering,
    time::{Instant, SystemTime},
};

use anyhow::{anyhow, Context, Result};
use async_nats::jetstream::{self, kv};
use ipnet::IpNet;
use serde_json::json;
use tokio::time::timeout;

use super::{Worker, REQUEST, SKIP_LINES, SKIP_WINDOW};
use crate::fleet::{
    codec::{self, net_of_key, time_text, Skip},
    local::{self, Applied},
};

impl Worker {
    /// Open the bucket (created when missing) and watch it: everything
    /// from the start the first time, then from the last revision seen.
    pub(super) async fn open(&mut self, js: &jetstream::Context) -> Result<()> {
        if self.kv.is_none() {
            let bucket = self.cfg.bucket.clone();
            let kv = match timeout(REQUEST, js.get_key_value(&bucket)).await {
                Ok(Ok(kv)) => kv,
                _ => {
                    // create_key_value first asks for the account's limits,
                    // in a form nats-server 2.9 does not answer; make the
                    // bucket's stream as it would, then open it.
                    timeout(REQUEST, js.get_or_create_stream(bucket_stream(&bucket)))
                        .await
                        .map_err(|_| anyhow!("creating bucket {bucket}: timed out"))?
                        .with_context(|| format!("creating bucket {bucket}"))?;
                    timeout(REQUEST, js.get_key_value(&bucket))
                        .await
                        .map_err(|_| anyhow!("opening bucket {bucket}: timed out"))?
                        .with_context(|| format!("opening bucket {bucket}"))?
                }
            };
            self.kv = Some(kv);
        }
        let kv = self.kv.as_ref().expect("just set");
        let mut stream = kv.stream.clone();
        let state = timeout(REQUEST, stream.info())
            .await
            .map_err(|_| anyhow!("reading bucket state: timed out"))?
            .context("reading bucket state")?
            .state
            .clone();
        // A bucket that went back in time was recreated: start over.
        let full = !self.replayed_once || state.last_sequence < self.last_revision;
        let w = if full {
            timeout(REQUEST, kv.watch_with_history(">")).await
        } else {
            timeout(REQUEST, kv.watch_all_from_revision(self.last_revision + 1)).await
        }
        .map_err(|_| anyhow!("watching the bucket: timed out"))?
        .context("watching the bucket")?;
        self.watch = Some(w);
        if full {
            self.replay = Some(HashSet::new());
            if state.messages == 0 {
                self.replay_done();
            }
        }
        Ok(())
    }

    pub(super) fn entry(&mut self, e: kv::Entry) {
        self.last_revision = self.last_revision.max(e.revision);
        self.stats
            .last_revision
            .store(self.last_revision, Ordering::Relaxed);
        let catch_up = self.replay.is_some();
        match e.operation {
            kv::Operation::Put => self.put(&e.key, &e.value, e.revision, catch_up),
            kv::Operation::Delete | kv::Operation::Purge => match net_of_key(&e.key) {
                Some(net) => match local::remove(&mut self.control, &net) {
                    Ok(true) => self.log.emit(
                        "fleet_remove",
                        json!({"prefix": net.to_string(), "revision": e.revision}),
                    ),
                    Ok(false) => {}
                    Err(err) => eprintln!("error: fleet: removing {net}: {err:#}"),
                },
                None => self.skipped(&e.key, Skip::BadKey),
            },
        }
        if catch_up && e.delta == 0 {
            self.replay_done();
        }
    }

    pub(super) fn put(&mut self, key: &str, value: &[u8], revision: u64, catch_up: bool) {
        let now = SystemTime::now();
        let r = match codec::check(key, value, now, &self.limits) {
            Ok(r) => r,
            Err(why) => return self.skipped(key, why),
        };
        if r.gateway == self.cfg.name {
            return; // Our own entry coming back.
        }
        if let Some(live) = &mut self.replay {
            live.insert(r.net);
        }
        match local::apply(&mut self.control, &r, now) {
            Ok(how @ (Applied::New | Applied::Updated)) => {
                self.stats.received_from(&r.origin);
                let age = now.duration_since(r.created_at).unwrap_or_default();
                if !catch_up {
                    self.stats.propagation.observe(age.as_secs_f64());
                }
                self.log.emit(
                    "fleet_apply",
                    json!({"prefix": r.net.to_string(), "gateway": r.gateway, "origin": r.origin,
                           "reason": r.reason, "created_at": time_text(r.created_at),
                           "applied_at": time_text(now), "propagation_ms": age.as_millis() as u64,
                           "expires_at": r.expires_at.map(time_text), "revision": revision,
                           "update": how == Applied::Updated, "catch_up": catch_up}),
                );
            }
            Ok(Applied::Unchanged | Applied::LocalWins) => {}
            Err(err) => eprintln!("error: fleet: applying {}: {err:#}", r.net),
        }
    }

    /// The full replay is over: fleet entries the bucket no longer has
    /// (deleted while this gateway was away) go.
    pub(super) fn replay_done(&mut self) {
        let Some(live) = self.replay.take() else {
            return;
        };
        self.replayed_once = true;
        let stale: Vec<IpNet> = local::fleet_entries(&self.control)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| !live.contains(n))
            .collect();
        for net in &stale {
            if let Ok(true) = local::remove(&mut self.control, net) {
                self.log.emit(
                    "fleet_remove",
                    json!({"prefix": net.to_string(), "reason": "not in the bucket"}),
                );
            }
        }
        self.log.emit(
            "fleet_synced",
            json!({"bucket": self.cfg.bucket, "entries": live.len(), "removed": stale.len(), "revision": self.last_revision}),
        );
    }

    pub(super) fn skipped(&mut self, key: &str, why: Skip) {
        self.stats.skip(why);
        let (_, lines, suppressed) = &mut self.skip_window;
        if *lines < SKIP_LINES {
            *lines += 1;
            // The key is remote text: shown escaped and cut short.
            let shown: String = key.escape_default().take(80).collect();
            self.log
                .emit("fleet_skip", json!({"key": shown, "reason": why.name()}));
        } else {
            *suppressed += 1;
        }
    }

    pub(super) fn roll_skip_window(&mut self) {
        let (start, _, suppressed) = self.skip_window;
        if start.elapsed() < SKIP_WINDOW {
            return;
        }
        if suppressed > 0 {
            self.log.emit("fleet_skip", json!({"suppressed": suppressed, "note": "more entries skipped; see firewall_fleet_entries_skipped_total"}));
        }
        self.skip_window = (Instant::now(), 0, 0);
    }
}

/// The stream behind a key-value bucket, as `create_key_value` makes it:
/// one message per key (history 1), deletes as markers, direct gets.
fn bucket_stream(bucket: &str) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("firewall: blocklist entries shared by the gateways".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_message_size: codec::MAX_VALUE as i32,
        storage: jetstream::stream::StorageType::File,
        num_replicas: 1,
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    }
}
