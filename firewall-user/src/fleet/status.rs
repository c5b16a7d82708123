//! What the fleet worker tells the metrics endpoint (shared counters) and
//! `firewall fleet status` (a JSON file next to the controller's state,
//! since the CLI is another process).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use anyhow::Result;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        counter::ConstCounter,
        gauge::ConstGauge,
        histogram::{exponential_buckets, Histogram},
        MetricType,
    },
    registry::Registry,
};
use serde::{Deserialize, Serialize};

use super::codec::Skip;

/// Counters shared by the worker (writer) and the metrics collector.
#[derive(Debug)]
pub struct Stats {
    /// A `[fleet]` section is in force (metrics are exported only then).
    pub enabled: AtomicBool,
    pub connected: AtomicBool,
    pub received: AtomicU64,
    pub published: AtomicU64,
    pub outbox: AtomicU64,
    pub last_revision: AtomicU64,
    /// Entries received, by the origin they had on the gateway that sent them.
    pub received_by_origin: Mutex<BTreeMap<String, u64>>,
    pub skipped: Mutex<BTreeMap<Skip, u64>>,
    pub outbox_dropped: AtomicU64,
    pub propagation: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            enabled: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            received: AtomicU64::new(0),
            published: AtomicU64::new(0),
            outbox: AtomicU64::new(0),
            last_revision: AtomicU64::new(0),
            received_by_origin: Mutex::default(),
            skipped: Mutex::default(),
            outbox_dropped: AtomicU64::new(0),
            // 1 ms to about 16 s.
            propagation: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        }
    }
}

impl Stats {
    pub fn received_from(&self, origin: &str) {
        self.received.fetch_add(1, Ordering::Relaxed);
        // Origins are remote text: only the known names become labels.
        let known = firewall_common::Origin::ALL
            .iter()
            .any(|o| o.name() == origin);
        let label = if known { origin } else { "other" };
        *lock(&self.received_by_origin)
            .entry(label.to_string())
            .or_default() += 1;
    }

    pub fn skip(&self, why: Skip) {
        *lock(&self.skipped).entry(why).or_default() += 1;
    }

    /// Register the fleet metrics (exported only while `[fleet]` is on).
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register_collector(Box::new(FleetCollector(self.clone())));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
struct FleetCollector(Arc<Stats>);

impl Collector for FleetCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        if !s.enabled.load(Ordering::Relaxed) {
            return Ok(());
        }
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gauge = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
            ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
        };
        let counter = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64| {
            ConstCounter::new(v).encode(enc.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)
        };
        gauge(
            &mut enc,
            "firewall_fleet_connected",
            "1 while connected to the NATS servers of [fleet].",
            s.connected.load(Ordering::Relaxed) as i64,
        )?;
        counter(
            &mut enc,
            "firewall_fleet_entries_received",
            "Entries from other gateways applied to the blocklist.",
            n(&s.received),
        )?;
        counter(
            &mut enc,
            "firewall_fleet_entries_published",
            "Local entries (and their removals) written to the bucket.",
            n(&s.published),
        )?;
        gauge(
            &mut enc,
            "firewall_fleet_outbox",
            "Entries waiting for the bus.",
            n(&s.outbox) as i64,
        )?;
        counter(
            &mut enc,
            "firewall_fleet_outbox_dropped",
            "Entries dropped from a full outbox (oldest first).",
            n(&s.outbox_dropped),
        )?;
        s.propagation.encode(enc.encode_descriptor(
            "firewall_fleet_propagation_seconds",
            "From an entry's creation on another gateway to its application here.",
            None,
            MetricType::Histogram,
        )?)?;
        let skipped = lock(&s.skipped).clone();
        let mut m = enc.encode_descriptor(
            "firewall_fleet_entries_skipped",
            "Entries from the bucket refused as invalid, by reason.",
            None,
            MetricType::Counter,
        )?;
        for why in Skip::ALL {
            ConstCounter::new(skipped.get(&why).copied().unwrap_or(0))
                .encode(m.encode_family(&[("reason", why.name())])?)?;
        }
        Ok(())
    }
}

/// `firewall fleet status --json`.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Report {
    pub connected: bool,
    /// The server connected to, else the configured list.
    pub server: String,
    pub servers: Vec<String>,
    pub bucket: String,
    pub name: String,
    pub share: Vec<String>,
    pub received: BTreeMap<String, u64>,
    pub received_total: u64,
    pub published: u64,
    pub skipped: BTreeMap<String, u64>,
    pub outbox: u64,
    pub last_revision: u64,
    /// When the connection last went up or down (RFC 3339).
    pub since: Option<String>,
    pub pid: u32,
    /// Set by the CLI when the controller that wrote this is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Report {
    pub fn fill(&mut self, s: &Stats) {
        self.connected = s.connected.load(Ordering::Relaxed);
        self.received = lock(&s.received_by_origin).clone();
        self.received_total = s.received.load(Ordering::Relaxed);
        self.published = s.published.load(Ordering::Relaxed);
        self.skipped = lock(&s.skipped)
            .iter()
            .map(|(k, v)| (k.name().to_string(), *v))
            .collect();
        self.outbox = s.outbox.load(Ordering::Relaxed);
        self.last_revision = s.last_revision.load(Ordering::Relaxed);
    }
}

pub fn path(pin_dir: &Path) -> PathBuf {
    crate::state::path(pin_dir).with_extension("fleet-status.json")
}

pub fn write(pin_dir: &Path, r: &Report) -> Result<()> {
    let p = path(pin_dir);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = p.with_extension("tmp-fleet");
    std::fs::write(&tmp, serde_json::to_vec_pretty(r)?)?;
    std::fs::rename(tmp, p)?;
    Ok(())
}

/// `firewall fleet status [--json]`.
pub fn run(pin_dir: &Path, json: bool) -> Result<()> {
    let p = path(pin_dir);
    let mut r: Report = match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| anyhow::anyhow!("{} is not a fleet status file: {e}", p.display()))?,
        Err(_) => anyhow::bail!(
            "no fleet status for {}: is `firewall run` running with a [fleet] section in its policy?",
            pin_dir.display()
        ),
    };
    if !crate::state::alive(r.pid) {
        r.connected = false;
        r.note = Some(format!(
            "the controller (pid {}) is not running; figures are from when it stopped",
            r.pid
        ));
    }
    if json {
        return crate::commands::print_json(&r);
    }
    println!(
        "fleet:     {} ({})",
        if r.connected {
            "connected"
        } else {
            "disconnected"
        },
        r.server
    );
    println!("gateway:   {}", r.name);
    println!("bucket:    {}", r.bucket);
    println!("shares:    {}", r.share.join(", "));
    let by: Vec<String> = r.received.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "received:  {} ({})",
        r.received_total,
        if by.is_empty() {
            "none".into()
        } else {
            by.join(", ")
        }
    );
    println!("published: {}", r.published);
    let skipped: u64 = r.skipped.values().sum();
    println!("skipped:   {skipped}");
    println!("outbox:    {} waiting", r.outbox);
    println!("revision:  {}", r.last_revision);
    if let Some(n) = &r.note {
        println!("note:      {n}");
    }
    Ok(())
}
