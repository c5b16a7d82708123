//! classify -> account -> verdict, shared by the XDP and TC entry points.
#![allow(unsafe_code)]

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_ktime_get_ns, bpf_map_lookup_elem},
    maps::{lpm_trie::Key, LpmTrie},
};
use firewall_common::{
    class, event, flags, Bucket, Config, Counter, Event, Limit, ListEntry, SourceKey, SourceState,
    Stat, Verdict, FLOOD_EVENTS, FLOOD_NEW_SOURCES, N_VERDICTS, PROTO_ANY,
};

use crate::{
    maps::*,
    parse::{parse, Frame, Packet},
};

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const NO_RULE: u32 = u32::MAX;

/// The verdict for one frame, counted exactly once.
#[inline(always)]
pub fn decide(data: usize, end: usize, len: u64) -> Verdict {
    let (verdict, rule) = match parse(data, end) {
        Err(_) => (Verdict::Malformed, NO_RULE),
        Ok(Frame::NotIp) => (Verdict::Passed, NO_RULE),
        Ok(Frame::Ip(pkt)) => match CONFIG.get(ACTIVE.get(0).copied().unwrap_or(0) & 1) {
            Some(cfg) if cfg.flags & flags::READY != 0 => ip(cfg, &pkt),
            // No policy written yet: nothing to enforce.
            _ => (Verdict::Passed, NO_RULE),
        },
    };
    #[cfg(feature = "upgrade-variant")]
    stat(Stat::VariantPackets);
    count(&COUNTERS, verdict as u32, len);
    if rule != NO_RULE {
        count(&RULE_COUNTERS, rule * N_VERDICTS + verdict as u32, len);
    }
    verdict
}

#[inline(always)]
fn count(map: &aya_ebpf::maps::PerCpuArray<Counter>, idx: u32, len: u64) {
    if let Some(c) = map.get_ptr_mut(idx) {
        // SAFETY: a per-CPU slot: only this CPU writes it, and the program
        // is not preempted while running.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

#[inline(always)]
fn stat(s: Stat) {
    if let Some(c) = STATS.get_ptr_mut(s as u32) {
        // SAFETY: per-CPU slot, see `count`.
        unsafe { *c += 1 }
    }
}

/// Decision for an IP packet, and the rule whose counters it also goes to.
#[inline(always)]
fn ip(cfg: &Config, pkt: &Packet) -> (Verdict, u32) {
    let rule = match_rule(cfg, pkt);
    let v = limit_or_list(cfg, pkt, rule);
    let v = if cfg.flags & flags::MONITOR != 0
        && (v == Verdict::Blocked || v == Verdict::RateLimited)
    {
        Verdict::WouldDrop
    } else {
        v
    };
    (v, rule)
}

/// The first `[[rule]]` the packet matches, as an index the verifier
/// cannot see (see `SCRATCH`).
#[inline(always)]
fn match_rule(cfg: &Config, pkt: &Packet) -> u32 {
    if cfg.rule_count == 0 {
        return NO_RULE;
    }
    let Some(slot) = SCRATCH.get_ptr_mut(0) else {
        return NO_RULE;
    };
    // SAFETY: per-CPU slot, see `count`; written and read in this run.
    unsafe {
        core::ptr::write_volatile(slot, first_rule(cfg, pkt));
        let rule = core::ptr::read_volatile(slot);
        if rule < firewall_common::maps::MAX_RULES {
            rule
        } else {
            NO_RULE
        }
    }
}

#[inline(always)]
fn first_rule(cfg: &Config, pkt: &Packet) -> u32 {
    let n = cfg.rule_count as u32;
    for i in 0..firewall_common::maps::MAX_RULES {
        if i >= n {
            break;
        }
        let Some(r) = RULES.get(rule_slot(cfg, i)) else {
            break;
        };
        if r.protocol != PROTO_ANY && r.protocol != pkt.proto {
            // ICMP rules cover ICMPv6 too.
            if !(r.protocol == 1 && pkt.proto == 58) {
                continue;
            }
        }
        if r.has_port != 0 && (!pkt.has_l4 || pkt.dst_port < r.port_lo || pkt.dst_port > r.port_hi)
        {
            continue;
        }
        if r.syn_only != 0 && (!pkt.has_l4 || pkt.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN) {
            continue;
        }
        return i;
    }
    NO_RULE
}

/// Index in `RULES` of rule `i` of this config's slot.
#[inline(always)]
fn rule_slot(cfg: &Config, i: u32) -> u32 {
    (cfg.set as u32 & 1) * firewall_common::maps::MAX_RULES + i
}

/// The source aggregated to its prefix, keyed by rule.
#[inline(always)]
fn source_key(cfg: &Config, pkt: &Packet, rule: u32) -> SourceKey {
    let mut key = SourceKey {
        addr: [0; 16],
        family: pkt.family,
        rule: if rule == NO_RULE { 0 } else { rule as u8 + 1 },
        _pad: [0; 2],
    };
    if pkt.family == 4 {
        let a = u32::from_be_bytes([pkt.src[0], pkt.src[1], pkt.src[2], pkt.src[3]]);
        let masked = a & mask32(cfg.ipv4_prefix);
        key.addr[..4].copy_from_slice(&masked.to_be_bytes());
    } else {
        let p = cfg.ipv6_prefix;
        let mut hi = [0u8; 8];
        let mut lo = [0u8; 8];
        hi.copy_from_slice(&pkt.src[..8]);
        lo.copy_from_slice(&pkt.src[8..]);
        let hi = u64::from_be_bytes(hi) & mask64(p);
        let lo = u64::from_be_bytes(lo) & mask64(p.saturating_sub(64));
        key.addr[..8].copy_from_slice(&hi.to_be_bytes());
        key.addr[8..].copy_from_slice(&lo.to_be_bytes());
    }
    key
}

#[inline(always)]
fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else if prefix >= 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - prefix)
    }
}

#[inline(always)]
fn mask64(prefix: u8) -> u64 {
    if prefix == 0 {
        0
    } else if prefix >= 64 {
        u64::MAX
    } else {
        u64::MAX << (64 - prefix)
    }
}

/// Result of looking a source up in the policy.
struct Class {
    class: u8,
    limit: Limit,
    block_expires_ns: u64,
}

/// Allowlist, blocklist, then the limit: rule, most specific class, default.
#[inline(always)]
fn classify(
    cfg: &Config,
    pkt: &Packet,
    key: &SourceKey,
    rule: u32,
    now: u64,
    lists: bool,
) -> Class {
    if lists {
        if list_match(cfg, pkt, now, true).is_some() {
            return Class {
                class: class::ALLOWED,
                limit: Limit::default(),
                block_expires_ns: 0,
            };
        }
        if let Some(expires) = list_match(cfg, pkt, now, false) {
            return Class {
                class: class::BLOCKED,
                limit: Limit::default(),
                block_expires_ns: expires,
            };
        }
    }
    let mut limit = cfg.default_limit;
    if rule != NO_RULE {
        if let Some(r) = RULES.get(rule_slot(cfg, rule)) {
            limit = r.limit;
        }
    } else if pkt.family == 4 && cfg.flags & flags::LIMIT_V4 != 0 {
        let k = Key::new(32, [key.addr[0], key.addr[1], key.addr[2], key.addr[3]]);
        let trie = if cfg.set == 0 {
            &LIMIT_V4_0
        } else {
            &LIMIT_V4_1
        };
        if let Some(e) = trie.get(&k) {
            limit = e.limit;
        }
    } else if pkt.family == 6 && cfg.flags & flags::LIMIT_V6 != 0 {
        let trie = if cfg.set == 0 {
            &LIMIT_V6_0
        } else {
            &LIMIT_V6_1
        };
        if let Some(e) = trie.get(&Key::new(128, key.addr)) {
            limit = e.limit;
        }
    }
    Class {
        class: class::LIMITED,
        limit,
        block_expires_ns: 0,
    }
}

/// Look the packet's source up in the allow (`allow`) or block list.
/// Returns the matching entry's expiry (0 = never), if it matches and has
/// not expired.
#[inline(always)]
fn list_match(cfg: &Config, pkt: &Packet, now: u64, allow: bool) -> Option<u64> {
    let entry: *mut ListEntry = if pkt.family == 4 {
        let flag = if allow {
            flags::ALLOW_V4
        } else {
            flags::BLOCK_V4
        };
        if cfg.flags & flag == 0 {
            return None;
        }
        let k = Key::new(32, [pkt.src[0], pkt.src[1], pkt.src[2], pkt.src[3]]);
        if allow {
            lookup_mut(
                if cfg.set == 0 {
                    &ALLOW_V4_0
                } else {
                    &ALLOW_V4_1
                },
                &k,
            )
        } else {
            lookup_mut(
                if cfg.set == 0 {
                    &BLOCK_V4_0
                } else {
                    &BLOCK_V4_1
                },
                &k,
            )
        }
    } else {
        let flag = if allow {
            flags::ALLOW_V6
        } else {
            flags::BLOCK_V6
        };
        if cfg.flags & flag == 0 {
            return None;
        }
        let k = Key::new(128, pkt.src);
        if allow {
            lookup_mut(
                if cfg.set == 0 {
                    &ALLOW_V6_0
                } else {
                    &ALLOW_V6_1
                },
                &k,
            )
        } else {
            lookup_mut(
                if cfg.set == 0 {
                    &BLOCK_V6_0
                } else {
                    &BLOCK_V6_1
                },
                &k,
            )
        }
    };
    if entry.is_null() {
        return None;
    }
    // SAFETY: non-null pointers from bpf_map_lookup_elem point at the
    // entry's value, valid for this run. The hit count is not atomic: two
    // CPUs classifying at once may count one hit, fine for a statistic.
    let e = unsafe { &mut *entry };
    if e.expires_ns != 0 && now >= e.expires_ns {
        return None;
    }
    e.hits += 1;
    Some(e.expires_ns)
}

/// A writable pointer to a trie value (aya's `LpmTrie::get` hands out `&V`).
#[inline(always)]
fn lookup_mut<K, V>(map: &LpmTrie<K, V>, key: &Key<K>) -> *mut V {
    // SAFETY: `LpmTrie` is a transparent wrapper of the map definition the
    // loader relocates, which is what the helper takes as its map argument.
    unsafe {
        bpf_map_lookup_elem(
            map as *const _ as *mut c_void,
            key as *const _ as *const c_void,
        ) as *mut V
    }
}

#[inline(always)]
fn verdict_of(class: u8) -> Option<Verdict> {
    match class {
        class::ALLOWED => Some(Verdict::Allowed),
        class::BLOCKED => Some(Verdict::Blocked),
        _ => None,
    }
}

#[inline(always)]
fn limit_or_list(cfg: &Config, pkt: &Packet, rule: u32) -> Verdict {
    let now = unsafe { bpf_ktime_get_ns() };
    // Lists narrower than the aggregation prefix cannot be cached per
    // prefix: decide them per packet, before the per-source table.
    let no_cache = if pkt.family == 4 {
        flags::NO_LIST_CACHE_V4
    } else {
        flags::NO_LIST_CACHE_V6
    };
    let cache_lists = cfg.flags & no_cache == 0;
    if !cache_lists {
        if list_match(cfg, pkt, now, true).is_some() {
            return Verdict::Allowed;
        }
        if list_match(cfg, pkt, now, false).is_some() {
            return Verdict::Blocked;
        }
    }
    let key = source_key(cfg, pkt, rule);
    if let Some(st) = SOURCES.get_ptr_mut(&key) {
        // SAFETY: the LRU value stays valid for this run; updating it in
        // place avoids the bucket lock a map update takes. Concurrent
        // updates from other CPUs may race; the worst case is a token
        // counted twice, which a rate limiter can afford.
        let st = unsafe { &mut *st };
        let stale = st.generation != cfg.generation
            || (st.class == class::BLOCKED
                && st.block_expires_ns != 0
                && now >= st.block_expires_ns);
        if stale {
            let c = classify(cfg, pkt, &key, rule, now, cache_lists);
            st.class = c.class;
            st.limit = c.limit;
            st.block_expires_ns = c.block_expires_ns;
            st.generation = cfg.generation;
        }
        st.packets += 1;
        if let Some(v) = verdict_of(st.class) {
            if v == Verdict::Blocked {
                dropped(cfg, st, &key, pkt, now, v);
            }
            return v;
        }
        let limit = st.limit;
        if st.bucket.admit(&limit, now) {
            return Verdict::Passed;
        }
        dropped(cfg, st, &key, pkt, now, Verdict::RateLimited);
        autoban(cfg, st, &key, pkt, now);
        return Verdict::RateLimited;
    }

    // A prefix not seen before (or evicted).
    let c = classify(cfg, pkt, &key, rule, now, cache_lists);
    let v = verdict_of(c.class);
    // The gateway-wide guard: a spoofed flood makes every packet a new
    // source; only so many may start a bucket (or be cached) per second.
    if !admit_bucket(FLOOD_NEW_SOURCES, &cfg.flood_limit, now) {
        stat(Stat::NewSourceRefused);
        return v.unwrap_or(Verdict::RateLimited);
    }
    let mut st = SourceState {
        bucket: Bucket::full(&c.limit, now),
        limit: c.limit,
        block_expires_ns: c.block_expires_ns,
        packets: 1,
        drops: 0,
        last_drop_ns: 0,
        window_start_ns: now,
        window_drops: 0,
        generation: cfg.generation,
        class: c.class,
        _pad: [0; 7],
    };
    let v = match v {
        Some(v) => v,
        None if st.bucket.admit(&c.limit, now) => Verdict::Passed,
        None => Verdict::RateLimited,
    };
    if v == Verdict::Blocked || v == Verdict::RateLimited {
        st.drops = 1;
        st.last_drop_ns = now;
        emit(cfg, &key, pkt, now, event::FIRST_DROP, v);
    }
    if SOURCES.insert(&key, &st, 0).is_ok() {
        stat(Stat::NewSourceAdmitted);
    }
    v
}

/// Spend a token from a per-CPU bucket in `FLOOD`.
#[inline(always)]
fn admit_bucket(slot: u32, limit: &Limit, now: u64) -> bool {
    match FLOOD.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, see `count`.
        Some(b) => unsafe { (*b).admit(limit, now) },
        None => false,
    }
}

/// Account a drop; report it if the source had been quiet.
#[inline(always)]
fn dropped(
    cfg: &Config,
    st: &mut SourceState,
    key: &SourceKey,
    pkt: &Packet,
    now: u64,
    v: Verdict,
) {
    st.drops += 1;
    let quiet = st.last_drop_ns == 0 || now.saturating_sub(st.last_drop_ns) >= cfg.event_quiet_ns;
    st.last_drop_ns = now;
    if quiet {
        emit(cfg, key, pkt, now, event::FIRST_DROP, v);
    }
}

/// Count rate-limited drops in the window; report the source once when it
/// crosses the autoban threshold (the controller bans it).
#[inline(always)]
fn autoban(cfg: &Config, st: &mut SourceState, key: &SourceKey, pkt: &Packet, now: u64) {
    if cfg.flags & flags::AUTOBAN == 0 {
        return;
    }
    if now.saturating_sub(st.window_start_ns) > cfg.autoban_window_ns {
        st.window_start_ns = now;
        st.window_drops = 0;
    }
    st.window_drops += 1;
    if st.window_drops == cfg.autoban_drops {
        emit_event(key, pkt, now, event::AUTOBAN, Verdict::RateLimited);
    }
}

/// A first-drop event, within the global per-CPU event budget.
#[inline(always)]
fn emit(cfg: &Config, key: &SourceKey, pkt: &Packet, now: u64, kind: u8, v: Verdict) {
    if admit_bucket(FLOOD_EVENTS, &cfg.event_limit, now) {
        emit_event(key, pkt, now, kind, v);
    }
}

#[inline(always)]
fn emit_event(key: &SourceKey, pkt: &Packet, now: u64, kind: u8, v: Verdict) {
    let ev = Event {
        ts_ns: now,
        key: *key,
        src: pkt.src,
        kind,
        verdict: v as u8,
        _pad: [0; 2],
    };
    if EVENTS.output::<Event>(&ev, 0).is_err() {
        stat(Stat::EventsLost);
    }
}
