//! What the worker tells metrics (counters) and `firewall crowdsec status`
//! (a small JSON file beside the controller's state file).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::{
    control::{Control, List, Origin},
    state,
};

/// Counters for `/metrics`; they live in `DaemonCounters`, so they keep
/// counting across reloads that restart the worker.
#[derive(Debug, Default)]
pub struct Counters {
    /// A `[crowdsec]` section is in force (the series are exported).
    pub enabled: AtomicBool,
    pub lapi_up: AtomicBool,
    pub applied: AtomicU64,
    pub deleted: AtomicU64,
    pub skipped: AtomicU64,
    pub alerts_pushed: AtomicU64,
    pub alerts_pending: AtomicU64,
    pub alerts_dropped: AtomicU64,
    /// Answers rejected whole (malformed).
    pub rejected: AtomicU64,
    /// Failed pulls and pushes (unreachable, refused, HTTP errors).
    pub errors: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Decisions {
    pub applied: u64,
    pub deleted: u64,
    pub skipped: u64,
    pub skipped_by_reason: BTreeMap<String, u64>,
    /// Prefixes CrowdSec holds now, and how many of them sit behind a
    /// local entry of another origin.
    pub active: usize,
    pub shadowed: usize,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Alerts {
    pub push: bool,
    pub machine_id: Option<String>,
    pub pushed: u64,
    pub pending: usize,
    pub dropped: u64,
    pub expired: u64,
    pub last_push: Option<String>,
}

/// The status file. Written by the worker after each pull or push.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub lapi_url: String,
    pub poll_secs: f64,
    pub reachable: bool,
    pub last_pull: Option<String>,
    pub last_pull_ok: bool,
    pub last_startup_pull: Option<String>,
    /// Milliseconds from the answer's arrival to the maps being written.
    pub last_apply_ms: Option<f64>,
    pub last_error: Option<String>,
    pub rejected_answers: u64,
    pub decisions: Decisions,
    pub alerts: Alerts,
}

pub fn path(pin_dir: &Path) -> PathBuf {
    state::path(pin_dir).with_extension("crowdsec.json")
}

pub fn write(pin_dir: &Path, s: &Status) -> Result<()> {
    let p = path(pin_dir);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(s)?)?;
    std::fs::rename(tmp, p)?;
    Ok(())
}

pub fn remove(pin_dir: &Path) {
    let _ = std::fs::remove_file(path(pin_dir));
}

fn read(pin_dir: &Path) -> Option<Status> {
    serde_json::from_slice(&std::fs::read(path(pin_dir)).ok()?).ok()
}

#[derive(Serialize)]
struct Report {
    configured: bool,
    /// The controller that writes the status is alive.
    running: bool,
    #[serde(flatten)]
    status: Option<Status>,
    /// Live blocklist entries of origin `crowdsec`, counted in the maps.
    #[serde(skip_serializing_if = "Option::is_none")]
    blocklist_entries: Option<usize>,
}

/// `firewall crowdsec status [--json]`.
pub fn run(pin_dir: &Path, json: bool) -> Result<()> {
    let status = read(pin_dir);
    let running = status.as_ref().is_some_and(|s| state::alive(s.pid));
    let entries = Control::open(pin_dir).ok().and_then(|c| {
        let live = c.list(List::Block).ok()?;
        Some(live.iter().filter(|r| r.origin == Origin::Crowdsec).count())
    });
    let report = Report {
        configured: status.is_some(),
        running,
        status,
        blocklist_entries: entries,
    };
    if json {
        return crate::commands::print_json(&report);
    }
    let Some(s) = &report.status else {
        println!("crowdsec: not configured (no [crowdsec] section in the policy of a running `firewall run`)");
        if let Some(n) = entries.filter(|n| *n > 0) {
            println!("blocklist entries of origin crowdsec: {n}");
        }
        return Ok(());
    };
    let or_never = |o: &Option<String>| o.clone().unwrap_or_else(|| "never".into());
    println!(
        "crowdsec LAPI {}: {}{}",
        s.lapi_url,
        if s.reachable {
            "reachable"
        } else {
            "unreachable"
        },
        if running {
            ""
        } else {
            " (controller not running: last known state)"
        }
    );
    println!(
        "last pull:       {} ({}), poll every {}s",
        or_never(&s.last_pull),
        if s.last_pull_ok { "ok" } else { "failed" },
        s.poll_secs
    );
    if let Some(e) = &s.last_error {
        println!("last error:      {e}");
    }
    let d = &s.decisions;
    println!(
        "decisions:       {} applied, {} deleted, {} skipped; {} prefixes held ({} behind local entries)",
        d.applied, d.deleted, d.skipped, d.active, d.shadowed
    );
    if !d.skipped_by_reason.is_empty() {
        let reasons: Vec<String> = d
            .skipped_by_reason
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("skipped by:      {}", reasons.join(", "));
    }
    println!("rejected answers: {}", s.rejected_answers);
    if let Some(n) = entries {
        println!("blocklist entries of origin crowdsec: {n}");
    }
    let a = &s.alerts;
    if a.push {
        println!(
            "alerts:          {} pushed as {}, {} pending, {} dropped (queue full), {} expired before sending; last push {}",
            a.pushed,
            a.machine_id.as_deref().unwrap_or("?"),
            a.pending,
            a.dropped,
            a.expired,
            or_never(&a.last_push)
        );
    } else {
        println!("alerts:          not pushed (push = false)");
    }
    Ok(())
}
