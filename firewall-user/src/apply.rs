//! Writes a policy into the maps: file entries follow the file, run-time
//! entries (manual, import, autoban) are left alone, and one generation bump
//! at the end makes every tracked source re-classify.

use std::collections::HashSet;

use anyhow::{Context, Result};
use firewall_common::{
    flags, maps::MAX_RULES, Limit, LimitEntry, ListEntry, Origin, Rule as KRule, PROTO_ANY,
};
use ipnet::IpNet;

use crate::{
    lists::List,
    maps::Maps,
    policy::{Policy, Protocol},
};

/// A first-drop event for a source is sent again only after this quiet time.
pub const EVENT_QUIET_NS: u64 = 10_000_000_000;
/// Per-CPU cap on first-drop events: rate per second and burst.
pub const EVENT_RATE: u64 = 200;
pub const EVENT_BURST: u64 = 1000;

fn limit(rate: u64, burst: u64) -> Result<Limit> {
    Limit::new(rate, burst).map_err(|e| anyhow::anyhow!("rate {rate} burst {burst}: {e:?}"))
}

/// The `[flood]` budget is gateway-wide; each CPU enforces its share, so
/// no lock is taken on the packet path.
pub fn per_cpu_share(total: u64, cpus: u64) -> u64 {
    total.div_ceil(cpus.max(1)).max(1)
}

pub fn apply(maps: &mut Maps, policy: &Policy) -> Result<()> {
    sync_list(maps, List::Allow, &policy.allow)?;
    sync_list(maps, List::Block, &policy.block)?;
    sync_limits(maps, policy)?;
    write_rules(maps, policy)?;
    let mut cfg = maps.config()?;
    let cpus = aya::util::nr_cpus().map_err(|(m, e)| anyhow::anyhow!("{m}: {e}"))? as u64;
    let d = &policy.defaults;
    cfg.ipv4_prefix = d.ipv4_prefix;
    cfg.ipv6_prefix = d.ipv6_prefix;
    cfg.rule_count = policy.rules.len() as u8;
    cfg.file_default = limit(d.rate, d.burst)?;
    cfg.default_limit = if cfg.manual_default.is_set() {
        cfg.manual_default
    } else {
        cfg.file_default
    };
    cfg.flood_limit = limit(
        per_cpu_share(policy.flood.new_sources_rate, cpus),
        per_cpu_share(policy.flood.new_sources_burst, cpus),
    )?;
    cfg.event_limit = limit(EVENT_RATE, EVENT_BURST)?;
    cfg.event_quiet_ns = EVENT_QUIET_NS;
    cfg.flags &= !(flags::MONITOR | flags::AUTOBAN);
    if d.monitor {
        cfg.flags |= flags::MONITOR;
    }
    if let Some(ab) = &policy.autoban {
        cfg.flags |= flags::AUTOBAN;
        cfg.autoban_drops = ab.drops.min(u32::MAX as u64) as u32;
        cfg.autoban_window_ns = ab.window.as_nanos() as u64;
    }
    cfg.flags |= flags::READY;
    maps.set_config(&cfg)?;
    refresh_flags(maps)
}

/// Recompute the "trie is non-empty" and cache flags from the tries, then
/// bump the generation. Every writer (reload, CLI, expiry) ends with this.
pub fn refresh_flags(maps: &mut Maps) -> Result<()> {
    let allow = maps.list_all(List::Allow)?;
    let block = maps.list_all(List::Block)?;
    let limits = maps.limit_all()?;
    let cfg = maps.config()?;
    let has =
        |l: &[(IpNet, ListEntry)], v4: bool| l.iter().any(|(n, _)| matches!(n, IpNet::V4(_)) == v4);
    let finer = allow.iter().chain(block.iter()).any(|(n, _)| match n {
        IpNet::V4(n) => n.prefix_len() > cfg.ipv4_prefix,
        IpNet::V6(n) => n.prefix_len() > cfg.ipv6_prefix,
    });
    let mut f = cfg.flags
        & !(flags::ALLOW_V4
            | flags::ALLOW_V6
            | flags::BLOCK_V4
            | flags::BLOCK_V6
            | flags::LIMIT_V4
            | flags::LIMIT_V6
            | flags::NO_LIST_CACHE);
    for (set, flag) in [
        (has(&allow, true), flags::ALLOW_V4),
        (has(&allow, false), flags::ALLOW_V6),
        (has(&block, true), flags::BLOCK_V4),
        (has(&block, false), flags::BLOCK_V6),
        (
            limits.iter().any(|(n, _)| matches!(n, IpNet::V4(_))),
            flags::LIMIT_V4,
        ),
        (
            limits.iter().any(|(n, _)| matches!(n, IpNet::V6(_))),
            flags::LIMIT_V6,
        ),
        (finer, flags::NO_LIST_CACHE),
    ] {
        if set {
            f |= flag;
        }
    }
    maps.bump(|c| c.flags = f)?;
    Ok(())
}

fn sync_list(maps: &mut Maps, list: List, wanted: &[IpNet]) -> Result<()> {
    let wanted: HashSet<IpNet> = wanted.iter().copied().collect();
    let current = maps.list_all(list)?;
    let mut present = HashSet::new();
    for (net, mut e) in current {
        present.insert(net);
        let in_file = wanted.contains(&net) as u8;
        if e.origin == Origin::Config as u8 {
            if in_file == 0 {
                maps.list_del(list, &net)?;
            }
        } else if e.in_file != in_file {
            e.in_file = in_file;
            maps.list_put(list, &net, e)?;
        }
    }
    for net in wanted.difference(&present) {
        let e = ListEntry {
            origin: Origin::Config as u8,
            in_file: 1,
            ..Default::default()
        };
        maps.list_put(list, net, e)
            .with_context(|| format!("adding {net} to the {} list", list.name()))?;
    }
    Ok(())
}

fn sync_limits(maps: &mut Maps, policy: &Policy) -> Result<()> {
    let mut wanted = std::collections::HashMap::new();
    for c in &policy.limits {
        wanted.insert(c.cidr, limit(c.rate, c.burst)?);
    }
    for (net, mut e) in maps.limit_all()? {
        let file = wanted.remove(&net);
        if e.origin == Origin::Config as u8 {
            match file {
                None => {
                    maps.limit_del(&net)?;
                }
                Some(l) if l != e.limit => {
                    e.limit = l;
                    e.file_limit = l;
                    maps.limit_put(&net, e)?;
                }
                Some(_) => {}
            }
        } else {
            let f = file.unwrap_or_default();
            if e.file_limit != f {
                e.file_limit = f;
                maps.limit_put(&net, e)?;
            }
        }
    }
    for (net, l) in wanted {
        let e = LimitEntry {
            limit: l,
            file_limit: l,
            origin: Origin::Config as u8,
            ..Default::default()
        };
        maps.limit_put(&net, e)?;
    }
    Ok(())
}

fn write_rules(maps: &mut Maps, policy: &Policy) -> Result<()> {
    for i in 0..MAX_RULES {
        let r = match policy.rules.get(i as usize) {
            None => KRule::default(),
            Some(r) => {
                let (lo, hi) = r.dst_port.unwrap_or((0, 0));
                KRule {
                    limit: limit(r.rate, r.burst)?,
                    protocol: match r.protocol {
                        Protocol::Any => PROTO_ANY,
                        ref p => p.number(),
                    },
                    syn_only: r.syn_only as u8,
                    port_lo: lo,
                    port_hi: hi,
                    has_port: r.dst_port.is_some() as u8,
                    _pad: 0,
                    name: crate::text::fixed(&r.name),
                }
            }
        };
        maps.rules.set(i, r, 0)?;
    }
    Ok(())
}

/// After adding entries to `list`: set the flags they need without
/// scanning the tries (adds never clear a flag), then bump the generation.
pub fn note_added(maps: &mut Maps, list: List, nets: &[IpNet]) -> Result<()> {
    let cfg = maps.config()?;
    let (f4, f6) = match list {
        List::Allow => (flags::ALLOW_V4, flags::ALLOW_V6),
        List::Block => (flags::BLOCK_V4, flags::BLOCK_V6),
    };
    let mut f = cfg.flags;
    for net in nets {
        let finer = match net {
            IpNet::V4(n) => {
                f |= f4;
                n.prefix_len() > cfg.ipv4_prefix
            }
            IpNet::V6(n) => {
                f |= f6;
                n.prefix_len() > cfg.ipv6_prefix
            }
        };
        if finer {
            f |= flags::NO_LIST_CACHE;
        }
    }
    maps.bump(|c| c.flags = f)?;
    Ok(())
}
