//! `firewall stats`: counters per verdict and per rule.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;
use firewall_common::{Stat, Verdict};
use serde::Serialize;

use crate::control::{
    read::{Count, Counters},
    Control,
};

#[derive(Serialize, Debug)]
pub struct Stats {
    pub verdicts: BTreeMap<&'static str, Count>,
    pub rules: BTreeMap<String, BTreeMap<&'static str, Count>>,
    pub totals: Totals,
    pub new_sources: NewSources,
    /// SYN challenges by result (`sent`, `passed`, `failed`, `refused`).
    pub challenges: BTreeMap<&'static str, u64>,
}

#[derive(Serialize, Debug)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
}

#[derive(Serialize, Debug)]
pub struct NewSources {
    pub admitted: u64,
    pub refused: u64,
    pub events_lost: u64,
}

impl From<&Counters> for Stats {
    fn from(c: &Counters) -> Self {
        let verdicts = c.verdicts.iter().map(|(v, n)| (v.name(), n)).collect();
        let rules = c
            .rules
            .iter()
            .map(|r| {
                let by = r.verdicts.iter().map(|(v, n)| (v.name(), n)).collect();
                (r.name.clone(), by)
            })
            .collect();
        let (total, dropped) = (c.verdicts.total(), c.verdicts.dropped());
        Stats {
            verdicts,
            rules,
            totals: Totals {
                packets: total.packets,
                bytes: total.bytes,
                dropped_packets: dropped.packets,
                dropped_bytes: dropped.bytes,
            },
            new_sources: NewSources {
                admitted: c.stats.get(Stat::NewSourceAdmitted),
                refused: c.stats.get(Stat::NewSourceRefused),
                events_lost: c.stats.get(Stat::EventsLost),
            },
            challenges: Stat::CHALLENGES
                .iter()
                .map(|(stat, result)| (*result, c.stats.get(*stat)))
                .collect(),
        }
    }
}

/// Read every counter from the pinned maps, as `stats` shows them.
pub fn read(control: &Control) -> Result<Stats> {
    Ok(Stats::from(&control.counters()?))
}

fn print_table(s: &Stats, prev: Option<(&Stats, f64)>) {
    let rate = |name: &str, now: u64, f: fn(&Stats, &str) -> u64| match prev {
        Some((p, secs)) if secs > 0.0 => format!("{:>12.0}/s", (now - f(p, name)) as f64 / secs),
        _ => String::new(),
    };
    println!(
        "{:<14} {:>14} {:>16} {}",
        "verdict",
        "packets",
        "bytes",
        if prev.is_some() { "   packets/s" } else { "" }
    );
    for v in Verdict::ALL {
        let c = s.verdicts[v.name()];
        println!(
            "{:<14} {:>14} {:>16} {}",
            v.name(),
            c.packets,
            c.bytes,
            rate(v.name(), c.packets, |s, n| s.verdicts[n].packets)
        );
    }
    println!(
        "{:<14} {:>14} {:>16}",
        "total", s.totals.packets, s.totals.bytes
    );
    for (rule, per) in &s.rules {
        let line: Vec<String> = per
            .iter()
            .filter(|(_, c)| c.packets > 0)
            .map(|(v, c)| format!("{v}={}", c.packets))
            .collect();
        println!(
            "rule {rule:<20} {}",
            if line.is_empty() {
                "-".into()
            } else {
                line.join(" ")
            }
        );
    }
    println!(
        "new sources: admitted {} refused {} (events lost {})",
        s.new_sources.admitted, s.new_sources.refused, s.new_sources.events_lost
    );
    if s.challenges.values().any(|n| *n > 0) {
        let line: Vec<String> = Stat::CHALLENGES
            .iter()
            .map(|(_, r)| format!("{r} {}", s.challenges[r]))
            .collect();
        println!("syn challenges: {}", line.join(" "));
    }
}

pub fn run(control: &Control, json: bool, watch: Option<u64>) -> Result<()> {
    let Some(secs) = watch else {
        let s = read(control)?;
        return if json {
            super::print_json(&s)
        } else {
            print_table(&s, None);
            Ok(())
        };
    };
    let secs = secs.max(1);
    let mut prev: Option<(Stats, std::time::Instant)> = None;
    loop {
        let s = read(control)?;
        if json {
            println!("{}", serde_json::to_string(&s)?);
        } else {
            let p = prev.as_ref().map(|(p, t)| (p, t.elapsed().as_secs_f64()));
            print_table(&s, p);
            println!();
        }
        prev = Some((s, std::time::Instant::now()));
        std::thread::sleep(Duration::from_secs(secs));
    }
}
