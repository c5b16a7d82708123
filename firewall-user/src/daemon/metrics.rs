//! Prometheus metrics: read from the pinned maps at each scrape, encoded by
//! prometheus-client, served on a small HTTP endpoint.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use anyhow::{Context, Result};
use firewall_common::Stat;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::{
    control::{read::Count, Control},
    loader,
};

/// Counters the daemon itself keeps.
#[derive(Debug, Default)]
pub struct DaemonCounters {
    pub reloads_ok: AtomicU64,
    pub reloads_error: AtomicU64,
    pub bans: AtomicU64,
    /// Source prefixes in the per-source table, counted in the background
    /// (`count_tracked`): a scrape never walks the table.
    pub tracked_sources: AtomicU64,
    /// `[crowdsec]`: exported while a section is in force.
    pub crowdsec: crate::crowdsec::status::Counters,
}

/// Keep `DaemonCounters::tracked_sources` fresh: a batched walk of the
/// table every few seconds, off the scrape path.
pub fn count_tracked(pin_dir: PathBuf, daemon: Arc<DaemonCounters>) {
    std::thread::Builder::new()
        .name("count-sources".into())
        .spawn(move || loop {
            if let Ok(n) = Control::open(&pin_dir).and_then(|c| c.count_sources()) {
                daemon.tracked_sources.store(n as u64, Ordering::Relaxed);
            }
            std::thread::sleep(std::time::Duration::from_secs(2));
        })
        .expect("spawning the source counter");
}

#[derive(Debug)]
struct FirewallCollector {
    pin_dir: PathBuf,
    daemon: Arc<DaemonCounters>,
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, String)>, u64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            return ConstCounter::new(*v).encode(m);
        }
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, String)>, i64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            return ConstGauge::new(*v).encode(m);
        }
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for FirewallCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let d = &self.daemon;
        let load = |o: &AtomicU64| o.load(Ordering::Relaxed);
        counter(
            &mut enc,
            "firewall_policy_reloads",
            "Policy reloads by result.",
            &[
                (vec![("result", "ok".into())], load(&d.reloads_ok)),
                (vec![("result", "error".into())], load(&d.reloads_error)),
            ],
        )?;
        counter(
            &mut enc,
            "firewall_bans",
            "Auto-bans issued.",
            &[(vec![], load(&d.bans))],
        )?;
        let cs = &d.crowdsec;
        if cs.enabled.load(Ordering::Relaxed) {
            counter(
                &mut enc,
                "firewall_crowdsec_decisions",
                "CrowdSec decisions by result: applied, deleted, skipped (invalid, unsupported or our own).",
                &[
                    (vec![("result", "applied".into())], load(&cs.applied)),
                    (vec![("result", "deleted".into())], load(&cs.deleted)),
                    (vec![("result", "skipped".into())], load(&cs.skipped)),
                ],
            )?;
            counter(
                &mut enc,
                "firewall_crowdsec_alerts_pushed",
                "Auto-bans sent to the CrowdSec LAPI as alerts.",
                &[(vec![], load(&cs.alerts_pushed))],
            )?;
            counter(
                &mut enc,
                "firewall_crowdsec_rejected_answers",
                "LAPI answers rejected whole as malformed.",
                &[(vec![], load(&cs.rejected))],
            )?;
            counter(
                &mut enc,
                "firewall_crowdsec_errors",
                "Failed LAPI pulls and pushes (unreachable, refused, HTTP errors).",
                &[(vec![], load(&cs.errors))],
            )?;
            gauge(
                &mut enc,
                "firewall_crowdsec_lapi_up",
                "1 while the CrowdSec LAPI answered the last call.",
                &[(vec![], cs.lapi_up.load(Ordering::Relaxed) as i64)],
            )?;
            gauge(
                &mut enc,
                "firewall_crowdsec_alerts_pending",
                "Alerts waiting for the LAPI.",
                &[(vec![], load(&cs.alerts_pending) as i64)],
            )?;
        }
        let attached: Vec<_> = loader::attachments(&self.pin_dir)
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                (
                    vec![
                        ("iface", a.iface.clone()),
                        ("mode", a.mode.name().to_string()),
                    ],
                    1,
                )
            })
            .collect();
        gauge(
            &mut enc,
            "firewall_attached",
            "1 for each interface the data plane is attached to.",
            &attached,
        )?;
        // The data plane may be gone (detached): export what the daemon knows.
        let Ok(control) = Control::open(&self.pin_dir) else {
            return Ok(());
        };
        if let Ok(s) = control.counters() {
            let rows = |f: fn(&Count) -> u64| -> Vec<_> {
                s.verdicts
                    .iter()
                    .map(|(v, c)| (vec![("verdict", v.name().to_string())], f(&c)))
                    .collect()
            };
            counter(
                &mut enc,
                "firewall_packets",
                "Packets by verdict.",
                &rows(|c| c.packets),
            )?;
            counter(
                &mut enc,
                "firewall_bytes",
                "Bytes by verdict.",
                &rows(|c| c.bytes),
            )?;
            // By rule name, then verdict name, as before: one series per
            // name even if two rules share it.
            let mut by_name = std::collections::BTreeMap::new();
            for r in &s.rules {
                let by: std::collections::BTreeMap<&str, u64> = r
                    .verdicts
                    .iter()
                    .map(|(v, c)| (v.name(), c.packets))
                    .collect();
                by_name.insert(r.name.clone(), by);
            }
            let mut per_rule = Vec::new();
            for (rule, by) in &by_name {
                for (v, packets) in by {
                    per_rule.push((
                        vec![("rule", rule.clone()), ("verdict", v.to_string())],
                        *packets,
                    ));
                }
            }
            counter(
                &mut enc,
                "firewall_rule_packets",
                "Packets matching each [[rule]], by verdict.",
                &per_rule,
            )?;
            counter(
                &mut enc,
                "firewall_new_sources_admitted",
                "Source prefixes given a bucket.",
                &[(vec![], s.stats.get(Stat::NewSourceAdmitted))],
            )?;
            counter(
                &mut enc,
                "firewall_new_sources_refused",
                "Packets of unseen prefixes refused by the [flood] guard.",
                &[(vec![], s.stats.get(Stat::NewSourceRefused))],
            )?;
            counter(
                &mut enc,
                "firewall_challenges",
                "SYN challenges by result: sent (answered from XDP), passed (the source answered: it got a bucket), failed (a RST without the cookie), refused (answer budget spent or frame unanswerable).",
                &Stat::CHALLENGES
                    .iter()
                    .map(|(stat, r)| (vec![("result", r.to_string())], s.stats.get(*stat)))
                    .collect::<Vec<_>>(),
            )?;
            counter(
                &mut enc,
                "firewall_events_lost",
                "Kernel events lost to a full ring buffer.",
                &[(vec![], s.stats.get(Stat::EventsLost))],
            )?;
        }
        let tracked = d.tracked_sources.load(Ordering::Relaxed) as i64;
        gauge(
            &mut enc,
            "firewall_tracked_sources",
            "Source prefixes in the per-source table.",
            &[(vec![], tracked)],
        )?;
        gauge(
            &mut enc,
            "firewall_tracked_sources_capacity",
            "Capacity of the per-source table.",
            &[(vec![], control.sources_capacity().unwrap_or(0) as i64)],
        )?;
        let by_origin = control
            .blocklist_by_origin()
            .unwrap_or(firewall_common::Origin::ALL.map(|o| (o, 0)));
        let rows: Vec<_> = by_origin
            .iter()
            .map(|(o, n)| (vec![("origin", o.name().to_string())], *n as i64))
            .collect();
        gauge(
            &mut enc,
            "firewall_blocklist_entries",
            "Blocklist entries by origin.",
            &rows,
        )
    }
}

pub fn registry(pin_dir: PathBuf, daemon: Arc<DaemonCounters>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(FirewallCollector { pin_dir, daemon }));
    r
}

/// Serve `GET /metrics` (anything else: 404) until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) -> Result<()> {
    loop {
        let (mut sock, _) = listener
            .accept()
            .await
            .context("accepting a metrics connection")?;
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("");
            let (status, ctype, body) = if req.starts_with("GET ")
                && (path == "/metrics" || path.starts_with("/metrics?"))
            {
                // Map reads block: keep them off the async workers.
                let body = tokio::task::spawn_blocking(move || {
                    let mut s = String::new();
                    prometheus_client::encoding::text::encode(&mut s, &registry).map(|_| s)
                })
                .await;
                match body {
                    Ok(Ok(s)) => (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        s,
                    ),
                    _ => (
                        "500 Internal Server Error",
                        "text/plain",
                        "encoding failed\n".into(),
                    ),
                }
            } else {
                ("404 Not Found", "text/plain", "try /metrics\n".into())
            };
            let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
