//! The fleet worker: one thread with its own runtime and its own map
//! handles, so that nothing the bus does (slow, stalled, gone) can hold up
//! the controller's loop, let alone the data plane, which never sees it.
//!
//! It keeps three things going: a watch on the bucket (entries of the
//! other gateways onto the local blocklist), a scan of the local blocklist
//! (entries of the shared origins, and their removals, into the outbox),
//! and the outbox drained into the bucket whenever the bus is up.

mod publish;
mod receive;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use async_nats::{
    connection::State,
    jetstream::{self, kv},
    Client, ConnectOptions, ServerAddr,
};
use futures_util::StreamExt;
use ipnet::IpNet;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::{
    codec::Limits,
    outbox::Outbox,
    status::{self, Report, Stats},
};
use crate::{control::Control, daemon::events::EventLog, policy::fleet::Fleet};

/// How long one request to the bus may take before it counts as failed.
const REQUEST: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(250);
/// Scan the blocklist at least this often even if nothing wrote the
/// config.
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
    control: Control,
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
    last_writes: Option<u32>,
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
        let control = Control::open(&pin_dir)?;
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
            control,
            outbox,
            hints: HashMap::new(),
            kv: None,
            watch: None,
            replay: None,
            replayed_once: false,
            last_revision: 0,
            connected: false,
            retry_at: Instant::now(),
            last_writes: None,
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
        // Every list change writes the config (exact hosts without a new
        // generation): its write count says when to look.
        let writes = self.control.config().ok().map(|c| c.writes);
        if writes != self.last_writes || self.last_scan.elapsed() >= RESCAN {
            self.last_writes = writes;
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
