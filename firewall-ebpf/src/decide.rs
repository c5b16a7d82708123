//! classify -> account -> verdict, shared by the XDP and TC entry points.
#![allow(unsafe_code)]

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_jiffies64, bpf_ktime_get_ns, bpf_map_lookup_elem},
    maps::{lpm_trie::Key, HashMap, LpmTrie},
};
use firewall_common::{
    class, event, flags, gcra_admit, l4, short_generation, Config, Counter, Event, Limit,
    ListEntry, SourceKey, SourceState, Stat, Verdict, FLOOD_EVENTS, FLOOD_NEW_SOURCES, LIMIT_SLOTS,
    N_VERDICTS, PROTO_ANY,
};

use crate::{
    maps::*,
    parse::{parse, Frame, Packet},
};

pub(crate) const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
pub(crate) const NO_RULE: u32 = u32::MAX;

/// The verdict for one frame, counted exactly once. `answer`: the attach
/// point can answer a frame (XDP_TX), so SYNs may be challenged; a
/// `Challenged` verdict is not counted here but by the challenge program
/// it hands the frame to (see `HANDOFF`).
#[inline(always)]
pub fn decide(data: usize, end: usize, len: u64, answer: bool) -> Verdict {
    let (verdict, rule) = match parse(data, end) {
        Err(_) => (Verdict::Malformed, NO_RULE),
        Ok(Frame::NotIp) => (Verdict::Passed, NO_RULE),
        Ok(Frame::Ip(pkt)) => match active_config() {
            Some(cfg) if cfg.flags & flags::READY != 0 => ip(cfg, &pkt, answer),
            // No policy written yet: nothing to enforce.
            _ => (Verdict::Passed, NO_RULE),
        },
    };
    if verdict == Verdict::Challenged {
        if let Some(h) = HANDOFF.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, see `count`; read by the tail-called
            // challenge program on this CPU within this run.
            unsafe {
                (*h).rule = rule;
                (*h).len = len;
            }
        }
        return verdict;
    }
    count_verdict(verdict, rule, len);
    verdict
}

/// The config packets use now.
#[inline(always)]
pub(crate) fn active_config() -> Option<&'static Config> {
    CONFIG.get(ACTIVE.get(0).copied().unwrap_or(0) & 1)
}

/// Count a verdict, and under its rule when it has one.
#[inline(always)]
pub(crate) fn count_verdict(verdict: Verdict, rule: u32, len: u64) {
    count(&COUNTERS, verdict as u32, len);
    if rule != NO_RULE {
        count(&RULE_COUNTERS, rule * N_VERDICTS + verdict as u32, len);
    }
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
pub(crate) fn stat(s: Stat) {
    if let Some(c) = STATS.get_ptr_mut(s as u32) {
        // SAFETY: per-CPU slot, see `count`.
        unsafe { *c += 1 }
    }
}

/// The program's time, read only on the paths that need it: allowed and
/// blocked known sources never read it. Not cached between reads: a cached
/// "read or not yet" would double the states the verifier explores at
/// every branch, and with jiffies a read is one load.
pub(crate) struct Clock<'a> {
    cfg: &'a Config,
}

impl<'a> Clock<'a> {
    #[inline(always)]
    pub(crate) fn new(cfg: &'a Config) -> Self {
        Clock { cfg }
    }

    /// CLOCK_MONOTONIC nanoseconds. With `tick_ns` set (the loader found
    /// jiffies usable) it is the last tick's time: `bpf_jiffies64` is
    /// inlined into one load where `bpf_ktime_get_ns` is a call costing as
    /// much as a hash lookup.
    #[inline(always)]
    pub(crate) fn get(&mut self) -> u64 {
        if self.cfg.tick_ns != 0 {
            // SAFETY: a helper without arguments or side effects.
            let j = unsafe { bpf_jiffies64() };
            j.wrapping_mul(self.cfg.tick_ns)
                .wrapping_sub(self.cfg.tick_offset_ns)
        } else {
            // SAFETY: as above.
            unsafe { bpf_ktime_get_ns() }
        }
    }
}

/// Write jiffies and CLOCK_MONOTONIC, read back to back, for the loader.
#[inline(always)]
pub fn probe_clock() {
    // SAFETY: helpers without arguments or side effects.
    let (j, ns) = unsafe { (bpf_jiffies64(), bpf_ktime_get_ns()) };
    for (i, v) in [(0u32, j), (1, ns)] {
        if let Some(slot) = CLOCK_PROBE.get_ptr_mut(i) {
            // SAFETY: an array slot of this map, valid for the run; only
            // the loader's test runs write it.
            unsafe { *slot = v }
        }
    }
}

/// Decision for an IP packet, and the rule whose counters it also goes to.
#[inline(always)]
fn ip(cfg: &Config, pkt: &Packet, answer: bool) -> (Verdict, u32) {
    let rule = match_rule(cfg, pkt);
    let mut clock = Clock::new(cfg);
    let v = match blocked_host(cfg, pkt, rule, &mut clock) {
        Some(v) => v,
        None if allow_hosts_per_packet(cfg, pkt) && allowed_host(cfg, pkt, &mut clock) => {
            Verdict::Allowed
        }
        None => limit_or_list(cfg, pkt, rule, &mut clock, answer),
    };
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
pub(crate) fn match_rule(cfg: &Config, pkt: &Packet) -> u32 {
    if cfg.rule_count == 0 || !rule_may_match(cfg, pkt) {
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

/// The prefilter: whether some rule covers the packet's L4 class (and,
/// for rules with ports, its destination port). O(1): one array load.
#[inline(always)]
fn rule_may_match(cfg: &Config, pkt: &Packet) -> bool {
    let c = l4::class(pkt.proto);
    if cfg.rule_any_port & c != 0 {
        return true;
    }
    if !pkt.has_l4 {
        return false;
    }
    let idx = (cfg.set as u32 & 1) * 65_536 + pkt.dst_port as u32;
    matches!(RULE_PORTS.get(idx), Some(b) if *b & c != 0)
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
pub(crate) fn source_key(cfg: &Config, pkt: &Packet, rule: u32) -> SourceKey {
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
pub(crate) struct Class {
    pub(crate) class: u8,
    /// The `[[limit]]` class's slot in `LIMITS`; 0: the rule's or default.
    pub(crate) slot: u16,
    block_expires_ns: u64,
    /// The matching list entry had never been hit before.
    first_hit: bool,
}

/// A list entry that matched.
struct Hit {
    /// When it expires (0 = never).
    expires_ns: u64,
    /// Its first hit ever: the one that reports a drop for it.
    first: bool,
}

/// Allowlist, blocklist, then the limit: rule, most specific class, default.
#[inline(always)]
pub(crate) fn classify(
    cfg: &Config,
    pkt: &Packet,
    key: &SourceKey,
    rule: u32,
    clock: &mut Clock,
    lists: bool,
) -> Class {
    let mut c = Class {
        class: class::LIMITED,
        slot: 0,
        block_expires_ns: 0,
        first_hit: false,
    };
    // An allowed host whose address is the whole source prefix is cached
    // with the source like any list decision.
    if !allow_hosts_per_packet(cfg, pkt) && allowed_host(cfg, pkt, clock) {
        c.class = class::ALLOWED;
        return c;
    }
    if lists {
        if list_match(cfg, pkt, clock, true).is_some() {
            c.class = class::ALLOWED;
            return c;
        }
        if let Some(hit) = list_match(cfg, pkt, clock, false) {
            c.class = class::BLOCKED;
            c.block_expires_ns = hit.expires_ns;
            c.first_hit = hit.first;
            return c;
        }
    }
    // A rule's bucket uses the rule's limit (`limit_of`); otherwise the most
    // specific class, found once here and cached as its slot.
    if rule == NO_RULE {
        if pkt.family == 4 && cfg.flags & flags::LIMIT_V4 != 0 {
            let k = Key::new(32, [key.addr[0], key.addr[1], key.addr[2], key.addr[3]]);
            let trie = if cfg.set == 0 {
                &LIMIT_V4_0
            } else {
                &LIMIT_V4_1
            };
            if let Some(e) = trie.get(&k) {
                c.slot = e.slot;
            }
        } else if pkt.family == 6 && cfg.flags & flags::LIMIT_V6 != 0 {
            let trie = if cfg.set == 0 {
                &LIMIT_V6_0
            } else {
                &LIMIT_V6_1
            };
            if let Some(e) = trie.get(&Key::new(128, key.addr)) {
                c.slot = e.slot;
            }
        }
    }
    c
}

/// The limit of a tracked source: its class's slot in `LIMITS`, else its
/// rule's, else the default. Array lookups, inlined by the verifier.
#[inline(always)]
fn limit_of(cfg: &Config, key: &SourceKey, slot: u16) -> Limit {
    if slot != 0 {
        let idx = (cfg.set as u32 & 1) * LIMIT_SLOTS + slot as u32;
        if let Some(l) = LIMITS.get(idx) {
            return *l;
        }
    } else if key.rule != 0 {
        if let Some(r) = RULES.get(rule_slot(cfg, key.rule as u32 - 1)) {
            return r.limit;
        }
    }
    cfg.default_limit
}

/// Look the packet's source up in the allow (`allow`) or block tries
/// (prefixes; exact hosts are in the host hashes, see `exact_host`).
#[inline(always)]
fn list_match(cfg: &Config, pkt: &Packet, clock: &mut Clock, allow: bool) -> Option<Hit> {
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
    entry_hit(entry, clock)
}

/// Count a hit on a list entry unless it has expired (the controller
/// removes expired entries; until then the program ignores them). Only an
/// entry with an expiry reads the clock.
#[inline(always)]
fn entry_hit(entry: *mut ListEntry, clock: &mut Clock) -> Option<Hit> {
    if entry.is_null() {
        return None;
    }
    // SAFETY: non-null pointers from bpf_map_lookup_elem point at the
    // entry's value, valid for this run. The hit count is not atomic: two
    // CPUs hitting it at once may count one hit, fine for a statistic.
    let e = unsafe { &mut *entry };
    if e.expires_ns != 0 && clock.get() >= e.expires_ns {
        return None;
    }
    let first = e.hits == 0;
    e.hits += 1;
    Some(Hit {
        expires_ns: e.expires_ns,
        first,
    })
}

/// Blocked exact hosts (/32, /128): one hash lookup with the address as
/// key, before the tries and the per-source table, so a blocked host costs
/// what it costs xdp-filter and never takes a slot in the source table. The
/// allowlist still wins: the allow hosts and, when an allowed prefix covers
/// some blocked host, the allow trie are asked on a hit.
#[inline(always)]
fn blocked_host(cfg: &Config, pkt: &Packet, rule: u32, clock: &mut Clock) -> Option<Verdict> {
    let (block_flag, allow_over) = if pkt.family == 4 {
        (flags::BLOCK_HOST_V4, flags::ALLOW_OVER_BLOCK_V4)
    } else {
        (flags::BLOCK_HOST_V6, flags::ALLOW_OVER_BLOCK_V6)
    };
    if cfg.flags & block_flag == 0 {
        return None;
    }
    let e = host_entry(cfg, pkt, false);
    let hit = entry_hit(e, clock)?;
    if allowed_host(cfg, pkt, clock)
        || (cfg.flags & allow_over != 0 && list_match(cfg, pkt, clock, true).is_some())
    {
        return Some(Verdict::Allowed);
    }
    if hit.first {
        let key = source_key(cfg, pkt, rule);
        emit(
            cfg,
            &key,
            pkt,
            clock.get(),
            event::FIRST_DROP,
            Verdict::Blocked,
        );
    }
    Some(Verdict::Blocked)
}

/// Whether the source is an allowed exact host. Known sources have this
/// cached in their class (allow-host changes bump the generation); it is
/// asked per packet only where a host is narrower than the aggregation
/// prefix (`allow_hosts_per_packet`).
#[inline(always)]
fn allowed_host(cfg: &Config, pkt: &Packet, clock: &mut Clock) -> bool {
    let flag = if pkt.family == 4 {
        flags::ALLOW_HOST_V4
    } else {
        flags::ALLOW_HOST_V6
    };
    if cfg.flags & flag == 0 {
        return false;
    }
    entry_hit(host_entry(cfg, pkt, true), clock).is_some()
}

/// An allowed host inside a wider aggregation prefix cannot be cached for
/// the prefix: its packets are checked one by one.
#[inline(always)]
fn allow_hosts_per_packet(cfg: &Config, pkt: &Packet) -> bool {
    if pkt.family == 4 {
        cfg.ipv4_prefix < 32
    } else {
        cfg.ipv6_prefix < 128
    }
}

/// The packet's source in the allow (`allow`) or block host hash of the
/// config's set; null when it is not there.
#[inline(always)]
fn host_entry(cfg: &Config, pkt: &Packet, allow: bool) -> *mut ListEntry {
    let s1 = cfg.set & 1 != 0;
    if pkt.family == 4 {
        let map = match (allow, s1) {
            (true, false) => &ALLOW_HOST_V4_0,
            (true, true) => &ALLOW_HOST_V4_1,
            (false, false) => &BLOCK_HOST_V4_0,
            (false, true) => &BLOCK_HOST_V4_1,
        };
        host_v4(map, pkt)
    } else {
        let map = match (allow, s1) {
            (true, false) => &ALLOW_HOST_V6_0,
            (true, true) => &ALLOW_HOST_V6_1,
            (false, false) => &BLOCK_HOST_V6_0,
            (false, true) => &BLOCK_HOST_V6_1,
        };
        host_v6(map, pkt)
    }
}

#[inline(always)]
fn host_v4(map: &HashMap<[u8; 4], ListEntry>, pkt: &Packet) -> *mut ListEntry {
    map.get_ptr_mut(&[pkt.src[0], pkt.src[1], pkt.src[2], pkt.src[3]])
        .unwrap_or(core::ptr::null_mut())
}

#[inline(always)]
fn host_v6(map: &HashMap<[u8; 16], ListEntry>, pkt: &Packet) -> *mut ListEntry {
    map.get_ptr_mut(&pkt.src).unwrap_or(core::ptr::null_mut())
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

/// The per-source state of `key` in its family's table.
#[inline(always)]
fn source(key: &SourceKey) -> Option<*mut SourceState> {
    if key.family == 4 {
        SOURCES_V4.get_ptr_mut(&key.v4())
    } else {
        SOURCES_V6.get_ptr_mut(&key.v6())
    }
}

#[inline(always)]
pub(crate) fn track(key: &SourceKey, st: &SourceState) -> bool {
    if key.family == 4 {
        SOURCES_V4.insert(&key.v4(), st, 0).is_ok()
    } else {
        SOURCES_V6.insert(&key.v6(), st, 0).is_ok()
    }
}

#[inline(always)]
fn limit_or_list(
    cfg: &Config,
    pkt: &Packet,
    rule: u32,
    clock: &mut Clock,
    answer: bool,
) -> Verdict {
    // Prefixes narrower than the aggregation prefix cannot be cached per
    // prefix: decide them per packet, before the per-source table.
    let no_cache = if pkt.family == 4 {
        flags::NO_LIST_CACHE_V4
    } else {
        flags::NO_LIST_CACHE_V6
    };
    let cache_lists = cfg.flags & no_cache == 0;
    if !cache_lists {
        if list_match(cfg, pkt, clock, true).is_some() {
            return Verdict::Allowed;
        }
        if let Some(hit) = list_match(cfg, pkt, clock, false) {
            if hit.first {
                let key = source_key(cfg, pkt, rule);
                emit(
                    cfg,
                    &key,
                    pkt,
                    clock.get(),
                    event::FIRST_DROP,
                    Verdict::Blocked,
                );
            }
            return Verdict::Blocked;
        }
    }
    let key = source_key(cfg, pkt, rule);
    let generation = short_generation(cfg.generation);
    if let Some(st) = source(&key) {
        // SAFETY: the LRU value stays valid for this run; updating it in
        // place avoids the bucket lock a map update takes. Concurrent
        // updates from other CPUs may race; the worst case is a token
        // counted twice, which a rate limiter can afford.
        let st = unsafe { &mut *st };
        let stale = st.generation != generation
            || (st.class() == class::BLOCKED && st.tat != 0 && clock.get() >= st.tat);
        if stale {
            let c = classify(cfg, pkt, &key, rule, clock, cache_lists);
            if c.class == class::BLOCKED && st.class() != class::BLOCKED {
                // Reported once, when the source becomes blocked: a blocked
                // source's packets read no clock for a quiet period.
                emit(
                    cfg,
                    &key,
                    pkt,
                    clock.get(),
                    event::FIRST_DROP,
                    Verdict::Blocked,
                );
            }
            if c.class == class::BLOCKED {
                st.tat = c.block_expires_ns;
            } else if st.class() == class::BLOCKED {
                // Unblocked: it starts again with a full bucket.
                st.tat = 0;
            }
            st.class_slot = SourceState::pack(c.class, c.slot);
            st.generation = generation;
        }
        st.packets = st.packets.wrapping_add(1);
        match st.class() {
            class::ALLOWED => return Verdict::Allowed,
            class::BLOCKED => {
                st.drops = st.drops.wrapping_add(1);
                return Verdict::Blocked;
            }
            _ => {}
        }
        let limit = limit_of(cfg, &key, st.slot());
        if gcra_admit(&mut st.tat, &limit, clock.get()) {
            return Verdict::Passed;
        }
        dropped(cfg, st, &key, pkt, clock.get(), Verdict::RateLimited);
        return Verdict::RateLimited;
    }

    // A prefix not seen before (or evicted). Its allow/block decision does
    // not depend on the flood budget, and a blocked one takes no slot.
    let c = classify(cfg, pkt, &key, rule, clock, cache_lists);
    if c.class == class::BLOCKED {
        if c.first_hit {
            emit(
                cfg,
                &key,
                pkt,
                clock.get(),
                event::FIRST_DROP,
                Verdict::Blocked,
            );
        }
        return Verdict::Blocked;
    }
    let now = clock.get();
    // The gateway-wide guard: a spoofed flood makes every packet a new
    // source; only so many may start a bucket (or be cached) per second.
    if !admit_bucket(FLOOD_NEW_SOURCES, &cfg.flood_limit, now) {
        stat(Stat::NewSourceRefused);
        if c.class == class::ALLOWED {
            return Verdict::Allowed;
        }
        if answer {
            if let Some(v) = challenge(cfg, pkt, now) {
                return v;
            }
        }
        return Verdict::RateLimited;
    }
    let mut st = SourceState {
        // A new source starts with a full bucket.
        tat: 0,
        drop_tat: 0,
        packets: 1,
        drops: 0,
        generation,
        class_slot: SourceState::pack(c.class, c.slot),
    };
    let v = if c.class == class::ALLOWED {
        Verdict::Allowed
    } else if gcra_admit(&mut st.tat, &limit_of(cfg, &key, c.slot), now) {
        Verdict::Passed
    } else {
        Verdict::RateLimited
    };
    if v == Verdict::RateLimited {
        dropped(cfg, &mut st, &key, pkt, now, v);
    }
    if track(&key, &st) {
        stat(Stat::NewSourceAdmitted);
    }
    v
}

/// A source the new-source budget refused may prove it is real: its SYN
/// is answered with a challenge, within the answer budget, and its RST is
/// checked against the cookie. Both go to the challenge program (a tail
/// call: its code is verified apart from this program's many paths).
#[inline(always)]
fn challenge(cfg: &Config, pkt: &Packet, now: u64) -> Option<Verdict> {
    if cfg.flags & (flags::SYN_CHALLENGE | flags::MONITOR) != flags::SYN_CHALLENGE
        || !pkt.has_l4
        || pkt.proto != 6
    {
        return None;
    }
    let action = if pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN {
        let spent = match CHALLENGE_BUDGET.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, see `count`.
            Some(b) => unsafe { (*b).admit(&cfg.challenge_limit, now) },
            None => false,
        };
        if !spent {
            stat(Stat::ChallengeRefused);
            return None;
        }
        firewall_common::challenge::ANSWER
    } else if pkt.tcp_flags & TCP_RST != 0 {
        firewall_common::challenge::CHECK
    } else {
        return None;
    };
    let h = HANDOFF.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, see `count`.
    unsafe { (*h).action = action };
    Some(Verdict::Challenged)
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

/// Account a rate-limited drop in the source's decaying drop score: each
/// drop adds `drop_inc` (the autoban window over its drop count) to a time
/// that decays with the clock, so the score crossing the window means
/// `drops` drops within about `window`: the source is reported for a ban,
/// once. A drop when the score had decayed for the quiet time is reported
/// as a first drop.
#[inline(always)]
fn dropped(
    cfg: &Config,
    st: &mut SourceState,
    key: &SourceKey,
    pkt: &Packet,
    now: u64,
    v: Verdict,
) {
    st.drops = st.drops.wrapping_add(1);
    let now_u = (now >> 16) as u32;
    // Ahead of now (a pending score) or behind it (decayed); the wrapping
    // difference is meaningful within about a day either way, and a value
    // no score can reach means state from long ago: decayed.
    let ahead = st.drop_tat.wrapping_sub(now_u) as i32;
    let ceiling = cfg.drop_window.saturating_add(cfg.drop_inc) as i32;
    let (base, quiet) = if ahead > 0 && ahead <= ceiling {
        (st.drop_tat, false)
    } else {
        let behind = if ahead > ceiling { i32::MAX } else { -ahead };
        (now_u, st.drops == 1 || behind >= cfg.drop_quiet as i32)
    };
    // The score saturates one increment past the window, so that anything
    // further ahead can only be stale state.
    let next = if base.wrapping_sub(now_u) >= cfg.drop_window {
        now_u.wrapping_add(ceiling as u32)
    } else {
        base.wrapping_add(cfg.drop_inc)
    };
    st.drop_tat = next;
    if quiet {
        emit(cfg, key, pkt, now, event::FIRST_DROP, v);
    }
    if cfg.flags & flags::AUTOBAN != 0 && cfg.drop_window != 0 {
        let before = base.wrapping_sub(now_u);
        let after = next.wrapping_sub(now_u);
        if before < cfg.drop_window && after >= cfg.drop_window {
            emit_event(key, pkt, now, event::AUTOBAN, Verdict::RateLimited);
        }
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
