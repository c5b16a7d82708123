//! `firewall stats`: counters per verdict and per rule.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;
use firewall_common::{Counter, Stat, Verdict};
use serde::Serialize;

use crate::maps::Maps;

#[derive(Serialize, Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

impl From<Counter> for Count {
    fn from(c: Counter) -> Self {
        Count {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

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
    /// Packets handled by an `upgrade-variant` build (test builds only).
    pub variant_packets: u64,
}

/// Read every counter from the pinned maps.
pub fn read(maps: &Maps) -> Result<Stats> {
    let totals = maps.verdict_totals()?;
    let mut verdicts = BTreeMap::new();
    let mut t = Totals {
        packets: 0,
        bytes: 0,
        dropped_packets: 0,
        dropped_bytes: 0,
    };
    for v in Verdict::ALL {
        let c = totals[v as usize];
        verdicts.insert(v.name(), Count::from(c));
        t.packets += c.packets;
        t.bytes += c.bytes;
        if v.drops() {
            t.dropped_packets += c.packets;
            t.dropped_bytes += c.bytes;
        }
    }
    let mut rules = BTreeMap::new();
    for (i, name) in maps.rule_names()?.into_iter().enumerate() {
        let per = maps.rule_totals(i as u32)?;
        let by_verdict = Verdict::ALL
            .iter()
            .map(|v| (v.name(), Count::from(per[*v as usize])))
            .collect();
        rules.insert(name, by_verdict);
    }
    let mut challenges = BTreeMap::new();
    for (stat, result) in Stat::CHALLENGES {
        challenges.insert(result, maps.stat(stat)?);
    }
    Ok(Stats {
        challenges,
        verdicts,
        rules,
        totals: t,
        new_sources: NewSources {
            admitted: maps.stat(Stat::NewSourceAdmitted)?,
            refused: maps.stat(Stat::NewSourceRefused)?,
            events_lost: maps.stat(Stat::EventsLost)?,
            variant_packets: maps.stat(Stat::VariantPackets)?,
        },
    })
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

pub fn run(maps: &Maps, json: bool, watch: Option<u64>) -> Result<()> {
    let Some(secs) = watch else {
        let s = read(maps)?;
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
        let s = read(maps)?;
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
