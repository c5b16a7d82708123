//! `firewall status`.

use anyhow::Result;
use serde::Serialize;

use crate::control::{self, Control};

#[derive(Serialize)]
pub struct Attached {
    pub iface: String,
    pub mode: &'static str,
    pub program_id: Option<u32>,
}

#[derive(Serialize)]
pub struct Status {
    pub pin_dir: String,
    pub attached: Vec<Attached>,
    /// "enforce" or "monitor".
    pub enforcement: &'static str,
    pub policy_file: Option<String>,
    pub generation: u32,
    pub controller_pid: Option<u32>,
    pub controller_running: bool,
    pub tracked_sources: usize,
    pub tracked_sources_capacity: u32,
    /// The clock the program reads: "jiffies (HZ=N)" or "ktime".
    pub clock: String,
    pub blocklist_entries: usize,
    pub allowlist_entries: usize,
    pub limit_classes: usize,
}

impl From<control::read::Status> for Status {
    fn from(s: control::read::Status) -> Self {
        Status {
            pin_dir: s.pin_dir.display().to_string(),
            attached: s
                .attached
                .into_iter()
                .map(|a| Attached {
                    iface: a.iface,
                    mode: a.mode.name(),
                    program_id: a.program_id,
                })
                .collect(),
            enforcement: if s.monitor { "monitor" } else { "enforce" },
            policy_file: s
                .controller
                .as_ref()
                .and_then(|d| d.config.as_ref().map(|c| c.display().to_string())),
            generation: s.generation,
            controller_pid: s.controller.as_ref().map(|d| d.pid),
            controller_running: s.controller_running,
            tracked_sources: s.tracked_sources,
            tracked_sources_capacity: s.tracked_sources_capacity,
            clock: s.clock.describe(),
            blocklist_entries: s.blocklist_entries,
            allowlist_entries: s.allowlist_entries,
            limit_classes: s.limit_classes,
        }
    }
}

pub fn run(control: &Control, json: bool) -> Result<()> {
    let s = Status::from(control.status()?);
    if json {
        return super::print_json(&s);
    }
    println!("pin dir:      {}", s.pin_dir);
    for a in &s.attached {
        println!(
            "attached:     {} ({}, program {})",
            a.iface,
            a.mode,
            a.program_id
                .map(|i| i.to_string())
                .unwrap_or_else(|| "?".into())
        );
    }
    if s.attached.is_empty() {
        println!("attached:     none");
    }
    println!("enforcement:  {}", s.enforcement);
    println!(
        "policy:       {} (generation {})",
        s.policy_file.as_deref().unwrap_or("built-in defaults"),
        s.generation
    );
    println!(
        "controller:   {}",
        match (s.controller_pid, s.controller_running) {
            (Some(p), true) => format!("running (pid {p})"),
            _ => "not running (the data plane keeps enforcing)".into(),
        }
    );
    println!(
        "sources:      {} / {} tracked",
        s.tracked_sources, s.tracked_sources_capacity
    );
    println!("clock:        {}", s.clock);
    println!(
        "lists:        {} blocked, {} allowed, {} limit classes",
        s.blocklist_entries, s.allowlist_entries, s.limit_classes
    );
    Ok(())
}
