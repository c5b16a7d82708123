//! The fleet worker: one thread with its own runtime and its own map
//! handles, so that nothing the bus does (slow, stalled, gone) can hold up
//! the controller's loop, let alone the data plane, which never sees it.
//!
//! It keeps three things going: a watch on the bucket (entries of the
//! other gateways onto the local blocklist), a scan of the local blocklist
//! (entries of the shared origins, and their removals, into the outbox),
//! and the outbox drained into the bucket whenever the bus is up.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{anyhow, Context, Result};
use async_nats::{
    connection::State,
    jetstream::{self, kv},
    Client, ConnectOptions, ServerAddr,
};
use futures_util::StreamExt;
use ipnet::IpNet;
use serde_json::json;
use tokio::{
    sync::{mpsc, watch},
    time::timeout,
};

use super::{
    codec::{self, net_of_key, time_text, Limits, Record, Skip},
    local::{self, Applied},
    outbox::{Op, Outbox, Seen},
    status::{self, Report, Stats},
};
use crate::{clock::wall_of, daemon::events::EventLog, maps::Maps, policy::fleet::Fleet};

/// How long one request to the bus may take before it counts as failed.
const REQUEST: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(250);
/// Scan the blocklist at least this often even if nothing bumped the
/// config generation.
const RESCAN: Duration = Duration::from_secs(5);
/// At most this many skipped-entry lines per window; the rest are counted.
const SKIP_LINES: u32 = 20;
const SKIP_WINDOW: Duration = Duration::from_secs(10);

/// A local ban, told by the controller the moment it is made, so that its
/// reason and time travel with it.
#[derive(Debug)]
pub struct Ban {
    pub net: IpNet,
    pub reason: String,
    pub at: SystemTime,
}

pub struct Worker {
    cfg: Fleet,
    pin_dir: PathBuf,
    log: Arc<EventLog>,
    stats: Arc<Stats>,
    limits: Limits,
    maps: Maps,
    outbox: Outbox,
    hints: HashMap<IpNet, (String, SystemTime)>,
    kv: Option<kv::Store>,
    watch: Option<kv::Watch>,
    /// Keys of live remote entries seen during a full replay; `None` when
    /// not replaying.
    replay: Option<HashSet<IpNet>>,
    replayed_once: bool,
    last_revision: u64,
    connected: bool,
    retry_at: Instant,
    last_generation: Option<u32>,
    last_scan: Instant,
    report: Report,
    skip_window: (Instant, u32, u64),
}

impl Worker {
    pub fn new(
        cfg: Fleet,
        pin_dir: PathBuf,
        log: Arc<EventLog>,
        stats: Arc<Stats>,
    ) -> Result<Self> {
        let maps = Maps::open(&pin_dir)?;
        let outbox = Outbox::load(Outbox::path(&pin_dir), cfg.outbox);
        let report = Report {
            server: cfg.servers.join(","),
            servers: cfg.servers.clone(),
            bucket: cfg.bucket.clone(),
            name: cfg.name.clone(),
            share: cfg.share.iter().map(|o| o.name().to_string()).collect(),
            pid: std::process::id(),
            ..Default::default()
        };
        Ok(Worker {
            limits: Limits {
                min_prefix_v4: cfg.min_prefix_v4,
                min_prefix_v6: cfg.min_prefix_v6,
                max_ttl: cfg.max_ttl,
            },
            cfg,
            pin_dir,
            log,
            stats,
            maps,
            outbox,
            hints: HashMap::new(),
            kv: None,
            watch: None,
            replay: None,
            replayed_once: false,
            last_revision: 0,
            connected: false,
            retry_at: Instant::now(),
            last_generation: None,
            last_scan: Instant::now(),
            report,
            skip_window: (Instant::now(), 0, 0),
        })
    }

    pub async fn run(
        mut self,
        mut bans: mpsc::UnboundedReceiver<Ban>,
        mut stop: watch::Receiver<bool>,
    ) {
        self.stats
            .outbox
            .store(self.outbox.len() as u64, Ordering::Relaxed);
        let client = match connect(&self.cfg).await {
            Ok(c) => c,
            Err(e) => {
                self.log
                    .emit("fleet_error", json!({"error": format!("{e:#}")}));
                eprintln!("error: fleet: {e:#}; entries are not shared");
                return;
            }
        };
        let js = jetstream::new(client.clone());
        self.scan();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                Some(ban) = bans.recv() => {
                    self.hints.insert(ban.net, (ban.reason, ban.at));
                    while let Ok(b) = bans.try_recv() {
                        self.hints.insert(b.net, (b.reason, b.at));
                    }
                    self.scan();
                    self.flush().await;
                }
                _ = tick.tick() => self.housekeeping(&client, &js).await,
                item = next(&mut self.watch) => match item {
                    Some(Ok(entry)) => self.entry(entry),
                    Some(Err(e)) => {
                        self.log.emit("fleet_error", json!({"error": format!("watching {}: {e}", self.cfg.bucket)}));
                        self.watch = None;
                    }
                    None => self.watch = None,
                },
            }
        }
        if let Err(e) = self.outbox.save() {
            eprintln!("error: fleet: saving the outbox: {e:#}");
        }
        self.stats.connected.store(false, Ordering::Relaxed);
        self.write_report();
    }

    async fn housekeeping(&mut self, client: &Client, js: &jetstream::Context) {
        let up = client.connection_state() == State::Connected;
        if up != self.connected {
            self.connected = up;
            self.stats.connected.store(up, Ordering::Relaxed);
            let info = client.server_info();
            let server = format!("{}:{}", info.host, info.port);
            self.report.since = Some(crate::clock::rfc3339(SystemTime::now()));
            if up {
                // Resume the watch on the new connection: a restarted
                // server has forgotten the old consumer.
                self.watch = None;
                self.report.server = server.clone();
                self.log.emit("fleet_connect", json!({"server": server, "bucket": self.cfg.bucket, "name": self.cfg.name, "outbox": self.outbox.len()}));
            } else {
                self.log.emit(
                    "fleet_disconnect",
                    json!({"server": server, "outbox": self.outbox.len()}),
                );
            }
        }
        let generation = self.maps.config().ok().map(|c| c.generation);
        if generation != self.last_generation || self.last_scan.elapsed() >= RESCAN {
            self.last_generation = generation;
            self.scan();
        }
        if up && Instant::now() >= self.retry_at {
            if self.watch.is_none() {
                if let Err(e) = self.open(js).await {
                    self.retry_at = Instant::now() + Duration::from_secs(1);
                    self.log
                        .emit("fleet_error", json!({"error": format!("{e:#}")}));
                }
            }
            self.flush().await;
        }
        self.roll_skip_window();
        self.write_report();
    }

    /// Open the bucket (created when missing) and watch it: everything
    /// from the start the first time, then from the last revision seen.
    async fn open(&mut self, js: &jetstream::Context) -> Result<()> {
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

    fn entry(&mut self, e: kv::Entry) {
        self.last_revision = self.last_revision.max(e.revision);
        self.stats
            .last_revision
            .store(self.last_revision, Ordering::Relaxed);
        let catch_up = self.replay.is_some();
        match e.operation {
            kv::Operation::Put => self.put(&e.key, &e.value, e.revision, catch_up),
            kv::Operation::Delete | kv::Operation::Purge => match net_of_key(&e.key) {
                Some(net) => match local::remove(&mut self.maps, &net) {
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

    fn put(&mut self, key: &str, value: &[u8], revision: u64, catch_up: bool) {
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
        match local::apply(&mut self.maps, &r, now) {
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
    fn replay_done(&mut self) {
        let Some(live) = self.replay.take() else {
            return;
        };
        self.replayed_once = true;
        let stale: Vec<IpNet> = local::fleet_entries(&self.maps)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| !live.contains(n))
            .collect();
        for net in &stale {
            if let Ok(true) = local::remove(&mut self.maps, net) {
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

    fn skipped(&mut self, key: &str, why: Skip) {
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

    fn roll_skip_window(&mut self) {
        let (start, _, suppressed) = self.skip_window;
        if start.elapsed() < SKIP_WINDOW {
            return;
        }
        if suppressed > 0 {
            self.log.emit("fleet_skip", json!({"suppressed": suppressed, "note": "more entries skipped; see firewall_fleet_entries_skipped_total"}));
        }
        self.skip_window = (Instant::now(), 0, 0);
    }

    /// Compare the shared local entries with what was last seen and queue
    /// the differences: new or changed ones as puts, gone ones as deletes.
    fn scan(&mut self) {
        self.last_scan = Instant::now();
        let now = match local::shared(&self.maps, &self.cfg.share) {
            Ok(n) => n,
            Err(e) => return eprintln!("error: fleet: reading the blocklist: {e:#}"),
        };
        let mut seen = BTreeMap::new();
        let mut dropped = 0;
        for (key, (net, e)) in &now {
            let s = Seen {
                origin: e.origin,
                expires_ns: e.expires_ns,
            };
            seen.insert(key.clone(), s);
            if self.outbox.seen().get(key) == Some(&s) {
                continue;
            }
            let origin = firewall_common::Origin::from_u8(e.origin).name();
            let (reason, at) = self.hints.remove(net).unwrap_or_else(|| {
                let c = crate::text::unfixed(&e.comment);
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
                expires_at: (e.expires_ns != 0).then(|| time_text(wall_of(e.expires_ns))),
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
    async fn flush(&mut self) {
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
    async fn delete_own(&self, kv: &kv::Store, key: &str) -> bool {
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

    fn save(&mut self) {
        self.stats
            .outbox
            .store(self.outbox.len() as u64, Ordering::Relaxed);
        if let Err(e) = self.outbox.save() {
            eprintln!("error: fleet: saving the outbox: {e:#}");
        }
    }

    fn write_report(&mut self) {
        self.report.fill(&self.stats);
        if let Err(e) = status::write(&self.pin_dir, &self.report) {
            eprintln!("error: fleet: writing the status: {e:#}");
        }
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

async fn next(w: &mut Option<kv::Watch>) -> Option<Result<kv::Entry, kv::WatcherError>> {
    match w {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

async fn connect(cfg: &Fleet) -> Result<Client> {
    let servers = cfg
        .servers
        .iter()
        .map(|s| {
            s.parse::<ServerAddr>()
                .with_context(|| format!("server {s}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut o = ConnectOptions::new()
        .name(format!("firewall {}", cfg.name))
        // Start even when the bus is down: enforcement never waits for it.
        .retry_on_initial_connect()
        .max_reconnects(None)
        // A stalled server is noticed within a few seconds.
        .ping_interval(Duration::from_secs(1))
        .connection_timeout(REQUEST)
        .request_timeout(Some(REQUEST))
        .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(2000)));
    if let Some(c) = &cfg.creds {
        o = o
            .credentials_file(c)
            .await
            .with_context(|| format!("reading credentials {}", c.display()))?;
    }
    if let Some(ca) = &cfg.tls_ca {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(c), Some(k)) = (&cfg.tls_cert, &cfg.tls_key) {
        o = o
            .add_client_certificate(c.clone(), k.clone())
            .require_tls(true);
    }
    Ok(o.connect(servers).await?)
}
