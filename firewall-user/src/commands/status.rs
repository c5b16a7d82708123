//! `firewall status`.

use anyhow::Result;
use firewall_common::flags;
use serde::Serialize;

use crate::{lists::List, loader, maps::Maps, state};

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

pub fn read(maps: &Maps) -> Result<Status> {
    let cfg = maps.config()?;
    let ids = loader::program_ids(&maps.dir);
    let attached = loader::attachments(&maps.dir)?
        .into_iter()
        .map(|a| {
            let want = if a.mode == loader::Mode::Tc {
                "firewall_tc"
            } else {
                "firewall_xdp"
            };
            Attached {
                program_id: ids.iter().find(|(n, _)| n == want).map(|(_, id)| *id),
                iface: a.iface,
                mode: a.mode.name(),
            }
        })
        .collect();
    let daemon = state::read(&maps.dir);
    Ok(Status {
        pin_dir: maps.dir.display().to_string(),
        attached,
        enforcement: if cfg.flags & flags::MONITOR != 0 {
            "monitor"
        } else {
            "enforce"
        },
        policy_file: daemon
            .as_ref()
            .and_then(|d| d.config.as_ref().map(|c| c.display().to_string())),
        generation: cfg.generation,
        controller_pid: daemon.as_ref().map(|d| d.pid),
        controller_running: daemon.as_ref().is_some_and(|d| state::alive(d.pid)),
        tracked_sources: maps.count_sources()?,
        tracked_sources_capacity: maps.sources_capacity()?,
        clock: crate::tick::Tick::of(&cfg).describe(),
        blocklist_entries: maps.list_all(List::Block)?.len(),
        allowlist_entries: maps.list_all(List::Allow)?.len(),
        limit_classes: maps.limit_all()?.len(),
    })
}

pub fn run(maps: &Maps, json: bool) -> Result<()> {
    let s = read(maps)?;
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
