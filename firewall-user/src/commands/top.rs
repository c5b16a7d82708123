//! `firewall top`: the sources with the most drops.

use anyhow::Result;
use firewall_common::{class, gcra_tokens, SourceKey, SourceState};
use serde::Serialize;

use crate::{addr::key_net, clock::mono_ns, maps::Maps};

#[derive(Serialize, Debug, Clone)]
pub struct Row {
    pub prefix: String,
    /// The `[[rule]]` whose bucket this is, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub packets: u64,
    pub drops: u64,
    /// Whole tokens in the bucket now.
    pub tokens: u64,
    /// limited, allowed or blocked.
    pub state: &'static str,
}

pub fn entries(maps: &Maps) -> Result<Vec<(SourceKey, SourceState)>> {
    // Entries may be evicted while iterating: skip what vanished.
    Ok(maps.sources())
}

/// What `top` ranks sources by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Most dropped packets first, then most packets.
    Drops,
    /// Most packets first, then most drops.
    Packets,
}

pub fn rows(maps: &Maps, n: usize) -> Result<Vec<Row>> {
    rows_of(maps, entries(maps)?, n, Order::Drops)
}

/// The first `n` of `all` (from [`entries`]) in `order`, as rows.
pub fn rows_of(
    maps: &Maps,
    mut all: Vec<(SourceKey, SourceState)>,
    n: usize,
    order: Order,
) -> Result<Vec<Row>> {
    let cfg = maps.config()?;
    let now = mono_ns();
    match order {
        Order::Drops => all.sort_by_key(|(_, s)| std::cmp::Reverse((s.drops, s.packets))),
        Order::Packets => all.sort_by_key(|(_, s)| std::cmp::Reverse((s.packets, s.drops))),
    }
    all.truncate(n);
    let names = maps.rule_names()?;
    Ok(all
        .into_iter()
        .map(|(k, s)| {
            let prefix = if k.family == 4 {
                cfg.ipv4_prefix
            } else {
                cfg.ipv6_prefix
            };
            let tokens = if s.class() == class::LIMITED {
                maps.limit_of(&k, &s)
                    .map(|l| gcra_tokens(s.tat, &l, now))
                    .unwrap_or(0)
            } else {
                0
            };
            Row {
                prefix: key_net(&k, prefix).to_string(),
                rule: (k.rule > 0)
                    .then(|| names.get(k.rule as usize - 1).cloned().unwrap_or_default()),
                packets: s.packets.into(),
                drops: s.drops.into(),
                tokens,
                state: match s.class() {
                    class::ALLOWED => "allowed",
                    class::BLOCKED => "blocked",
                    _ => "limited",
                },
            }
        })
        .collect())
}

pub fn run(maps: &Maps, n: usize, json: bool) -> Result<()> {
    let rows = rows(maps, n)?;
    if json {
        return super::print_json(&rows);
    }
    println!(
        "{:<44} {:<12} {:>12} {:>12} {:>10}  state",
        "prefix", "rule", "packets", "drops", "tokens"
    );
    for r in rows {
        println!(
            "{:<44} {:<12} {:>12} {:>12} {:>10}  {}",
            r.prefix,
            r.rule.as_deref().unwrap_or("-"),
            r.packets,
            r.drops,
            r.tokens,
            r.state
        );
    }
    Ok(())
}
