//! Writes a policy into the maps: file entries follow the file, run-time
//! entries (manual, import, autoban) are left alone, and one generation bump
//! at the end makes every tracked source re-classify.

use std::collections::HashSet;

use anyhow::{Context, Result};
use firewall_common::{
    flags, l4, maps::MAX_RULES, Limit, LimitEntry, ListEntry, Origin, Rule as KRule, PROTO_ANY,
};
use ipnet::IpNet;

use super::{
    lists::{is_host, List},
    maps::Maps,
};
use crate::policy::{Policy, Protocol};

/// A first-drop event for a source is sent again only after this quiet time.
pub const EVENT_QUIET_NS: u64 = 10_000_000_000;
/// Per-CPU cap on first-drop events: rate per second and burst.
pub const EVENT_RATE: u64 = 200;
pub const EVENT_BURST: u64 = 1000;

/// Nanoseconds in the units of the per-source drop score (2^16 ns), capped
/// where the score's wrapping arithmetic stays meaningful (about a day).
fn drop_units(ns: u64) -> u32 {
    (ns >> 16).min(i32::MAX as u64 / 2) as u32
}

fn limit(rate: u64, burst: u64) -> Result<Limit> {
    Limit::new(rate, burst).map_err(|e| anyhow::anyhow!("rate {rate} burst {burst}: {e:?}"))
}

/// The `[flood]` budget is gateway-wide; each CPU enforces its share, so
/// no lock is taken on the packet path.
pub fn per_cpu_share(total: u64, cpus: u64) -> u64 {
    total.div_ceil(cpus.max(1)).max(1)
}

/// Apply a whole policy atomically: stage the lists, limit classes, rules
/// and config in the inactive set, flip, then bring the other set in line.
pub(super) fn apply(maps: &mut Maps, policy: &Policy) -> Result<()> {
    let allow = desired_list(maps, List::Allow, &policy.allow)?;
    let block = desired_list(maps, List::Block, &policy.block)?;
    let limits = desired_limits(maps, policy)?;
    let cpus = aya::util::nr_cpus().map_err(|(m, e)| anyhow::anyhow!("{m}: {e}"))? as u64;
    let d = &policy.defaults;
    let file_default = limit(d.rate, d.burst)?;
    let flood_limit = limit(
        per_cpu_share(policy.flood.new_sources_rate, cpus),
        per_cpu_share(policy.flood.new_sources_burst, cpus),
    )?;
    let challenge_limit = limit(
        per_cpu_share(policy.syn_challenge.rate, cpus),
        per_cpu_share(policy.syn_challenge.burst, cpus),
    )?;
    let event_limit = limit(EVENT_RATE, EVENT_BURST)?;
    let list_flags = content_flags(&allow, &block, &limits, d.ipv4_prefix, d.ipv6_prefix);
    let (rule_any_port, rule_ports) = rule_prefilter(policy);

    let active = maps.active_set()?;
    let next = 1 - active;
    stage(maps, next, &allow, &block, &limits)?;
    write_rules(maps, next, policy)?;
    write_rule_ports(maps, next, &rule_ports)?;
    maps.publish(|cfg| {
        cfg.rule_any_port = rule_any_port;
        cfg.ipv4_prefix = d.ipv4_prefix;
        cfg.ipv6_prefix = d.ipv6_prefix;
        cfg.rule_count = policy.rules.len() as u8;
        cfg.file_default = file_default;
        cfg.default_limit = if cfg.manual_default.is_set() {
            cfg.manual_default
        } else {
            file_default
        };
        cfg.flood_limit = flood_limit;
        cfg.event_limit = event_limit;
        cfg.event_quiet_ns = EVENT_QUIET_NS;
        cfg.flags = list_flags | flags::READY;
        if d.monitor {
            cfg.flags |= flags::MONITOR;
        }
        if policy.syn_challenge.enabled {
            cfg.flags |= flags::SYN_CHALLENGE;
        }
        cfg.challenge_limit = challenge_limit;
        cfg.drop_quiet = drop_units(EVENT_QUIET_NS);
        cfg.drop_inc = 1;
        cfg.drop_window = 0;
        if let Some(ab) = &policy.autoban {
            cfg.flags |= flags::AUTOBAN;
            cfg.autoban_drops = ab.drops.min(u32::MAX as u64) as u32;
            cfg.autoban_window_ns = ab.window.as_nanos() as u64;
            // Each drop adds window/drops to a score that decays with time:
            // `drops` drops within `window` bring it to the window.
            cfg.drop_window = drop_units(cfg.autoban_window_ns);
            cfg.drop_inc = (cfg.drop_window / cfg.autoban_drops.max(1)).max(1);
        }
    })?;
    // Packets now use `next`; the old set is brought in line so that both
    // hold the same entries again.
    stage(maps, active, &allow, &block, &limits)?;
    write_rules(maps, active, policy)?;
    write_rule_ports(maps, active, &rule_ports)
}

/// The rule prefilter: the L4 classes some rule without a port condition
/// matches, and per destination port the classes of the rules covering it.
/// A packet outside both skips the rule loop.
fn rule_prefilter(policy: &Policy) -> (u8, Vec<u8>) {
    let mut any_port = 0u8;
    let mut ports = vec![0u8; 65_536];
    for r in &policy.rules {
        let classes = match r.protocol {
            Protocol::Any => l4::ALL,
            ref p => l4::class(p.number()),
        };
        match r.dst_port {
            None => any_port |= classes,
            Some((lo, hi)) => {
                for b in &mut ports[lo as usize..=hi as usize] {
                    *b |= classes;
                }
            }
        }
    }
    (any_port, ports)
}

/// Write the port prefilter of set `set` (one batch where the kernel has
/// batch updates for arrays).
fn write_rule_ports(maps: &mut Maps, set: usize, ports: &[u8]) -> Result<()> {
    let base = set as u32 * 65_536;
    let keys: Vec<u8> = (0..ports.len() as u32)
        .flat_map(|p| (base + p).to_ne_bytes())
        .collect();
    let map = aya::maps::MapData::from_pin(maps.dir.join(firewall_common::maps::RULE_PORTS))?;
    if crate::bpf_sys::batch::update(&map, &keys, ports, ports.len()).is_ok() {
        return Ok(());
    }
    for (p, b) in ports.iter().enumerate() {
        maps.rule_ports.set(base + p as u32, *b, 0)?;
    }
    Ok(())
}

type Entries<E> = Vec<(IpNet, E)>;

/// Flags that follow from the lists' content.
fn content_flags(
    allow: &Entries<ListEntry>,
    block: &Entries<ListEntry>,
    limits: &Entries<LimitEntry>,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
) -> u32 {
    let fam = |n: &IpNet, f4: u32, f6: u32| if matches!(n, IpNet::V4(_)) { f4 } else { f6 };
    let mut f = 0;
    for (n, _) in allow {
        f |= if is_host(n) {
            fam(n, flags::ALLOW_HOST_V4, flags::ALLOW_HOST_V6)
        } else {
            fam(n, flags::ALLOW_V4, flags::ALLOW_V6)
        };
    }
    for (n, _) in block {
        f |= if is_host(n) {
            fam(n, flags::BLOCK_HOST_V4, flags::BLOCK_HOST_V6)
        } else {
            fam(n, flags::BLOCK_V4, flags::BLOCK_V6)
        };
    }
    for (n, _) in limits {
        f |= fam(n, flags::LIMIT_V4, flags::LIMIT_V6);
    }
    for (n, _) in allow.iter().chain(block.iter()) {
        f |= no_cache_flag(n, ipv4_prefix, ipv6_prefix);
    }
    let allow_prefixes: Vec<&IpNet> = allow
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !is_host(n))
        .collect();
    for (n, _) in block.iter().filter(|(n, _)| is_host(n)) {
        if allow_prefixes.iter().any(|a| a.contains(n)) {
            f |= fam(n, flags::ALLOW_OVER_BLOCK_V4, flags::ALLOW_OVER_BLOCK_V6);
        }
    }
    f
}

/// The flag that turns off per-prefix caching of list decisions when `net`
/// is narrower than the aggregation prefix of its family. Exact hosts are
/// looked up before the cache, so they never need it.
fn no_cache_flag(net: &IpNet, ipv4_prefix: u8, ipv6_prefix: u8) -> u32 {
    match net {
        _ if is_host(net) => 0,
        IpNet::V4(n) if n.prefix_len() > ipv4_prefix => flags::NO_LIST_CACHE_V4,
        IpNet::V6(n) if n.prefix_len() > ipv6_prefix => flags::NO_LIST_CACHE_V6,
        _ => 0,
    }
}

/// Flags that follow from list content (see `content_flags`).
const CONTENT: u32 = flags::ALLOW_V4
    | flags::ALLOW_V6
    | flags::BLOCK_V4
    | flags::BLOCK_V6
    | flags::LIMIT_V4
    | flags::LIMIT_V6
    | flags::NO_LIST_CACHE_V4
    | flags::NO_LIST_CACHE_V6
    | flags::ALLOW_HOST_V4
    | flags::ALLOW_HOST_V6
    | flags::BLOCK_HOST_V4
    | flags::BLOCK_HOST_V6
    | flags::ALLOW_OVER_BLOCK_V4
    | flags::ALLOW_OVER_BLOCK_V6;

/// Whether a change to these entries of `list` can change a cached
/// classification: prefixes are cached per source, and so is an allowed
/// host; blocked hosts are looked up before the cache and need no new
/// generation.
pub(super) fn touches_cache(list: List, nets: &[IpNet]) -> bool {
    list == List::Allow || nets.iter().any(|n| !is_host(n))
}

/// Recompute the content flags from the active maps and publish them, with
/// a new generation when `bump` (cached classifications may have changed:
/// see `touches_cache`), after run-time deletions and expiry.
pub(super) fn refresh_flags(maps: &mut Maps, bump: bool) -> Result<()> {
    let allow = maps.list_all(List::Allow)?;
    let block = maps.list_all(List::Block)?;
    let limits = maps.limit_all()?;
    let cfg = maps.config()?;
    let f = content_flags(&allow, &block, &limits, cfg.ipv4_prefix, cfg.ipv6_prefix);
    let set = |c: &mut firewall_common::Config| c.flags = (c.flags & !CONTENT) | f;
    if bump {
        maps.bump(set)?;
    } else {
        maps.touch(set)?;
    }
    Ok(())
}

/// The list after the reload: run-time entries stay (noting whether the file
/// lists them too), file entries follow the file.
fn desired_list(maps: &Maps, list: List, wanted: &[IpNet]) -> Result<Entries<ListEntry>> {
    let wanted: HashSet<IpNet> = wanted.iter().copied().collect();
    let mut out = Vec::new();
    let mut present = HashSet::new();
    for (net, mut e) in maps.list_all(list)? {
        let in_file = wanted.contains(&net);
        if e.origin == Origin::Config as u8 && !in_file {
            continue;
        }
        present.insert(net);
        e.in_file = in_file as u8;
        out.push((net, e));
    }
    for net in wanted.difference(&present) {
        let e = ListEntry {
            origin: Origin::Config as u8,
            in_file: 1,
            ..Default::default()
        };
        out.push((*net, e));
    }
    Ok(out)
}

fn desired_limits(maps: &Maps, policy: &Policy) -> Result<Entries<LimitEntry>> {
    let mut wanted = std::collections::HashMap::new();
    for c in &policy.limits {
        wanted.insert(c.cidr, limit(c.rate, c.burst)?);
    }
    let mut out = Vec::new();
    for (net, mut e) in maps.limit_all()? {
        let file = wanted.remove(&net);
        if e.origin == Origin::Config as u8 {
            let Some(l) = file else { continue };
            e.limit = l;
            e.file_limit = l;
        } else {
            e.file_limit = file.unwrap_or_default();
        }
        out.push((net, e));
    }
    for (net, l) in wanted {
        let e = LimitEntry {
            limit: l,
            file_limit: l,
            origin: Origin::Config as u8,
            ..Default::default()
        };
        out.push((net, e));
    }
    Ok(out)
}

/// Make set `set` hold exactly the given entries (a diff: entries already
/// right are left alone, so a reload costs what changed).
fn stage(
    maps: &mut Maps,
    set: usize,
    allow: &Entries<ListEntry>,
    block: &Entries<ListEntry>,
    limits: &Entries<LimitEntry>,
) -> Result<()> {
    for (list, want) in [(List::Allow, allow), (List::Block, block)] {
        let have: std::collections::HashMap<IpNet, ListEntry> =
            maps.list_all_in(set, list)?.into_iter().collect();
        let keep: HashSet<&IpNet> = want.iter().map(|(n, _)| n).collect();
        for net in have.keys().filter(|n| !keep.contains(n)) {
            maps.list_del_in(set, list, net)?;
        }
        for (net, e) in want {
            if have.get(net) != Some(e) {
                maps.list_put_in(set, list, net, *e)
                    .with_context(|| format!("adding {net} to the {} list", list.name()))?;
            }
        }
    }
    let have: std::collections::HashMap<IpNet, LimitEntry> =
        maps.limit_all_in(set)?.into_iter().collect();
    let keep: HashSet<&IpNet> = limits.iter().map(|(n, _)| n).collect();
    let mut slots = maps.limit_slots_in(set)?;
    for net in have.keys().filter(|n| !keep.contains(n)) {
        maps.limit_del_in(set, net)?;
        slots.free(net);
    }
    for (net, e) in limits {
        // Slots are per set: compare what the class says, not where it is.
        let same = have
            .get(net)
            .is_some_and(|h| LimitEntry { slot: e.slot, ..*h } == *e);
        if !same {
            maps.limit_put_slotted(set, net, *e, &mut slots)?;
        }
    }
    Ok(())
}

fn write_rules(maps: &mut Maps, set: usize, policy: &Policy) -> Result<()> {
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
        maps.rules.set(set as u32 * MAX_RULES + i, r, 0)?;
    }
    Ok(())
}

/// After adding entries to `list`: set the flags they need without
/// scanning the lists (adds never clear a flag; an allow prefix or blocked
/// host that could overlap sets the allow-over-block flag), and bump the
/// generation only when prefixes changed. `expires_ns` (0 = never) moves
/// the controller's next expiry scan earlier.
pub(super) fn note_added(
    maps: &mut Maps,
    list: List,
    nets: &[IpNet],
    expires_ns: u64,
) -> Result<()> {
    let cfg = maps.config()?;
    let fam = |n: &IpNet, f4: u32, f6: u32| if matches!(n, IpNet::V4(_)) { f4 } else { f6 };
    let mut f = cfg.flags;
    for net in nets {
        f |= match (list, is_host(net)) {
            (List::Allow, false) => fam(net, flags::ALLOW_V4, flags::ALLOW_V6),
            (List::Block, false) => fam(net, flags::BLOCK_V4, flags::BLOCK_V6),
            (List::Allow, true) => fam(net, flags::ALLOW_HOST_V4, flags::ALLOW_HOST_V6),
            (List::Block, true) => fam(net, flags::BLOCK_HOST_V4, flags::BLOCK_HOST_V6),
        };
        f |= no_cache_flag(net, cfg.ipv4_prefix, cfg.ipv6_prefix);
    }
    // Allow wins over block: when an allowed prefix may cover a blocked
    // host, the program must ask the allow trie on host-hash block hits.
    let overlap = match list {
        List::Allow => {
            let new_prefixes: Vec<&IpNet> = nets.iter().filter(|n| !is_host(n)).collect();
            !new_prefixes.is_empty()
                && maps
                    .list_all(List::Block)?
                    .iter()
                    .filter(|(n, _)| is_host(n))
                    .any(|(n, _)| new_prefixes.iter().any(|p| p.contains(n)))
        }
        List::Block => {
            let hosts: Vec<&IpNet> = nets.iter().filter(|n| is_host(n)).collect();
            let fams = cfg.flags & (flags::ALLOW_V4 | flags::ALLOW_V6) != 0;
            fams && !hosts.is_empty() && {
                let allow: Vec<IpNet> = maps
                    .list_all(List::Allow)?
                    .into_iter()
                    .map(|(n, _)| n)
                    .filter(|n| !is_host(n))
                    .collect();
                hosts.iter().any(|h| allow.iter().any(|a| a.contains(*h)))
            }
        }
    };
    if overlap {
        f |= flags::ALLOW_OVER_BLOCK_V4 | flags::ALLOW_OVER_BLOCK_V6;
    }
    let update = |c: &mut firewall_common::Config| {
        c.flags = f;
        if expires_ns != 0 && (c.next_expiry_ns == 0 || expires_ns < c.next_expiry_ns) {
            c.next_expiry_ns = expires_ns;
        }
    };
    if touches_cache(list, nets) {
        maps.bump(update)?;
    } else {
        maps.touch(update)?;
    }
    Ok(())
}
