//! The read side: typed snapshots of the pinned maps for the CLI, the
//! daemon, the metrics and the live view, which only render them. Readers
//! never take the writers' lock.

use std::path::PathBuf;

use anyhow::Result;
use firewall_common::{
    class, flags, gcra_tokens, Config, Counter, ListEntry, SourceKey, SourceState, Stat, Verdict,
    N_STATS, N_VERDICTS,
};
use ipnet::IpNet;
use serde::Serialize;

use super::{lists::List, maps::Maps, origin, Control, Origin};
use crate::{addr::key_net, clock::mono_ns, loader, state, tick::Tick};

/// Packets and bytes.
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

impl std::ops::AddAssign for Count {
    fn add_assign(&mut self, o: Count) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

/// Packets and bytes per verdict, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdicts([Count; N_VERDICTS as usize]);

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts([Count::default(); N_VERDICTS as usize])
    }
}

impl Verdicts {
    pub fn get(&self, v: Verdict) -> Count {
        self.0[v as usize]
    }

    /// Every verdict with its count, in `Verdict::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = (Verdict, Count)> + '_ {
        Verdict::ALL.into_iter().map(|v| (v, self.get(v)))
    }

    /// All verdicts together.
    pub fn total(&self) -> Count {
        let mut t = Count::default();
        self.iter().for_each(|(_, c)| t += c);
        t
    }

    /// The verdicts that drop the packet, together.
    pub fn dropped(&self) -> Count {
        let mut t = Count::default();
        self.iter()
            .filter(|(v, _)| v.drops())
            .for_each(|(_, c)| t += c);
        t
    }
}

/// The counters of one `[[rule]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleCounts {
    pub name: String,
    pub verdicts: Verdicts,
}

/// The data plane's own statistics (the `STATS` array), by [`Stat`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats([u64; N_STATS as usize]);

impl Stats {
    pub fn get(&self, s: Stat) -> u64 {
        self.0[s as usize]
    }
}

/// Every counter of the data plane at one reading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub verdicts: Verdicts,
    /// The rules in force, in order.
    pub rules: Vec<RuleCounts>,
    pub stats: Stats,
}

/// An allow or block list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListRow {
    pub net: IpNet,
    pub origin: Origin,
    /// CLOCK_MONOTONIC nanoseconds after which the entry no longer
    /// matches; `None`: never.
    pub expires_ns: Option<u64>,
    /// Whole seconds left at the reading (rounded up).
    pub expires_in_secs: Option<u64>,
    /// Source classifications the entry decided.
    pub hits: u64,
    pub comment: String,
    /// The policy file lists this prefix too: ending a run-time entry
    /// hands it back to the file.
    pub in_file: bool,
}

impl ListRow {
    pub(super) fn of(net: IpNet, e: &ListEntry, now: u64) -> ListRow {
        let expires_ns = (e.expires_ns != 0).then_some(e.expires_ns);
        ListRow {
            net,
            origin: origin::of_byte(e.origin),
            expires_ns,
            expires_in_secs: expires_ns.map(|x| x.saturating_sub(now).div_ceil(1_000_000_000)),
            hits: e.hits,
            comment: crate::text::unfixed(&e.comment),
            in_file: e.in_file != 0,
        }
    }

    /// Whether the entry still matches at `now` (monotonic ns).
    pub fn live(&self, now: u64) -> bool {
        self.expires_ns.is_none_or(|x| x > now)
    }
}

/// A limit: the default (no prefix) or a class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitRow {
    /// `None` for the default limit.
    pub net: Option<IpNet>,
    pub rate: u64,
    pub burst: u64,
    pub origin: Origin,
}

/// How the program classified a tracked source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Limited,
    Allowed,
    Blocked,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Limited => "limited",
            Class::Allowed => "allowed",
            Class::Blocked => "blocked",
        }
    }
}

/// A tracked source prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub net: IpNet,
    /// The `[[rule]]` whose bucket this is, if any.
    pub rule: Option<String>,
    pub packets: u64,
    pub drops: u64,
    /// Whole tokens in the bucket now (limited sources only).
    pub tokens: u64,
    pub class: Class,
}

/// What the top sources are ranked by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Most dropped packets first, then most packets.
    Drops,
    /// Most packets first, then most drops.
    Packets,
}

/// The top sources and how many are tracked in all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Top {
    pub tracked: usize,
    pub sources: Vec<Source>,
}

/// An interface the data plane is attached to.
#[derive(Clone, Debug)]
pub struct Attached {
    pub iface: String,
    pub mode: loader::Mode,
    pub program_id: Option<u32>,
}

/// What `firewall status` shows.
#[derive(Clone, Debug)]
pub struct Status {
    pub pin_dir: PathBuf,
    pub attached: Vec<Attached>,
    pub monitor: bool,
    pub generation: u32,
    /// What the running (or last) controller wrote about itself.
    pub controller: Option<state::DaemonState>,
    pub controller_running: bool,
    pub tracked_sources: usize,
    pub tracked_sources_capacity: u32,
    /// The clock the program reads.
    pub clock: Tick,
    pub blocklist_entries: usize,
    pub allowlist_entries: usize,
    pub limit_classes: usize,
}

/// Every entry of `list` in the active set, expired ones included.
pub(super) fn list_entries(maps: &Maps, list: List) -> Result<Vec<ListRow>> {
    let now = mono_ns();
    Ok(maps
        .list_all(list)?
        .into_iter()
        .map(|(n, e)| ListRow::of(n, &e, now))
        .collect())
}

pub(super) fn list_entry(maps: &Maps, list: List, net: &IpNet) -> Result<Option<ListRow>> {
    Ok(maps
        .list_get(list, net)?
        .map(|e| ListRow::of(*net, &e, mono_ns())))
}

impl Control {
    /// The config packets use now (the data plane's ABI type).
    pub fn config(&self) -> Result<Config> {
        self.maps.config()
    }

    /// Names of the rules in force, in order.
    pub fn rule_names(&self) -> Result<Vec<String>> {
        self.maps.rule_names()
    }

    /// Packets and bytes per verdict.
    pub fn verdicts(&self) -> Result<Verdicts> {
        let all = self.maps.verdict_totals()?;
        let mut out = Verdicts::default();
        for v in Verdict::ALL {
            out.0[v as usize] = all[v as usize].into();
        }
        Ok(out)
    }

    /// Packets and bytes per verdict of the `i`-th rule.
    pub fn rule_verdicts(&self, i: u32) -> Result<Verdicts> {
        let all = self.maps.rule_totals(i)?;
        let mut out = Verdicts::default();
        for v in Verdict::ALL {
            out.0[v as usize] = all[v as usize].into();
        }
        Ok(out)
    }

    /// One of the data plane's statistics.
    pub fn stat(&self, s: Stat) -> Result<u64> {
        self.maps.stat(s)
    }

    /// Every statistic of the data plane.
    pub fn stats(&self) -> Result<Stats> {
        let mut out = Stats::default();
        for (i, v) in out.0.iter_mut().enumerate() {
            *v = self.maps.stat_at(i as u32)?;
        }
        Ok(out)
    }

    /// Every counter: per verdict, per rule, and the statistics.
    pub fn counters(&self) -> Result<Counters> {
        let rules = self
            .rule_names()?
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                Ok(RuleCounts {
                    name,
                    verdicts: self.rule_verdicts(i as u32)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Counters {
            verdicts: self.verdicts()?,
            rules,
            stats: self.stats()?,
        })
    }

    /// The entries of `list` in force, sorted by prefix.
    pub fn list(&self, list: List) -> Result<Vec<ListRow>> {
        let now = mono_ns();
        let mut rows: Vec<ListRow> = list_entries(&self.maps, list)?
            .into_iter()
            .filter(|r| r.live(now))
            .collect();
        rows.sort_by_key(|r| r.net);
        Ok(rows)
    }

    /// Every entry of `list`, expired ones included (the program ignores
    /// them; the controller's expiry removes them).
    pub fn list_entries(&self, list: List) -> Result<Vec<ListRow>> {
        list_entries(&self.maps, list)
    }

    /// The entry for exactly `net` (not a covering prefix), if any.
    pub fn list_entry(&self, list: List, net: &IpNet) -> Result<Option<ListRow>> {
        list_entry(&self.maps, list, net)
    }

    /// Entries of the blocklist in force, per origin (in `Origin::ALL`
    /// order).
    pub fn blocklist_by_origin(&self) -> Result<[(Origin, usize); Origin::ALL.len()]> {
        let mut out = Origin::ALL.map(|o| (o, 0));
        let now = mono_ns();
        for r in list_entries(&self.maps, List::Block)? {
            if r.live(now) {
                out[r.origin as usize].1 += 1;
            }
        }
        Ok(out)
    }

    /// The default limit, then the classes sorted by prefix.
    pub fn limits(&self) -> Result<Vec<LimitRow>> {
        let cfg = self.maps.config()?;
        let d = cfg.default_limit;
        let mut out = vec![LimitRow {
            net: None,
            rate: d.rate(),
            burst: d.burst(),
            origin: if cfg.manual_default.is_set() {
                Origin::Manual
            } else {
                Origin::Config
            },
        }];
        let mut classes = self.maps.limit_all()?;
        classes.sort_by_key(|(n, _)| *n);
        out.extend(classes.into_iter().map(|(n, e)| LimitRow {
            net: Some(n),
            rate: e.limit.rate(),
            burst: e.limit.burst(),
            origin: origin::of_byte(e.origin),
        }));
        Ok(out)
    }

    /// Source prefixes in the per-source tables (a batched walk).
    pub fn count_sources(&self) -> Result<usize> {
        self.maps.count_sources()
    }

    /// Capacity of each per-source table, as loaded.
    pub fn sources_capacity(&self) -> Result<u32> {
        self.maps.sources_capacity()
    }

    /// The tracked state of one source, if any.
    pub fn source(&self, key: &SourceKey) -> Option<SourceState> {
        self.maps.source(key)
    }

    /// The first `n` tracked sources in `order`.
    pub fn top(&self, n: usize, order: Order) -> Result<Top> {
        // Entries may be evicted while iterating: what vanished is skipped.
        let mut all = self.maps.sources();
        let tracked = all.len();
        let cfg = self.maps.config()?;
        let now = mono_ns();
        match order {
            Order::Drops => all.sort_by_key(|(_, s)| std::cmp::Reverse((s.drops, s.packets))),
            Order::Packets => all.sort_by_key(|(_, s)| std::cmp::Reverse((s.packets, s.drops))),
        }
        all.truncate(n);
        let names = self.maps.rule_names()?;
        let sources = all
            .into_iter()
            .map(|(k, s)| {
                let prefix = if k.family == 4 {
                    cfg.ipv4_prefix
                } else {
                    cfg.ipv6_prefix
                };
                let tokens = if s.class() == class::LIMITED {
                    self.maps
                        .limit_of(&k, &s)
                        .map(|l| gcra_tokens(s.tat, &l, now))
                        .unwrap_or(0)
                } else {
                    0
                };
                Source {
                    net: key_net(&k, prefix),
                    rule: (k.rule > 0)
                        .then(|| names.get(k.rule as usize - 1).cloned().unwrap_or_default()),
                    packets: s.packets.into(),
                    drops: s.drops.into(),
                    tokens,
                    class: match s.class() {
                        class::ALLOWED => Class::Allowed,
                        class::BLOCKED => Class::Blocked,
                        _ => Class::Limited,
                    },
                }
            })
            .collect();
        Ok(Top { tracked, sources })
    }

    /// Whether the program counts would-be drops instead of dropping.
    pub fn monitor(&self) -> Result<bool> {
        Ok(self.maps.config()?.flags & flags::MONITOR != 0)
    }

    /// The interfaces the data plane is attached to.
    pub fn attached(&self) -> Result<Vec<loader::Attachment>> {
        loader::attachments(&self.maps.dir)
    }

    /// What `firewall status` shows.
    pub fn status(&self) -> Result<Status> {
        let cfg = self.maps.config()?;
        let ids = loader::program_ids(&self.maps.dir);
        let attached = self
            .attached()?
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
                    mode: a.mode,
                }
            })
            .collect();
        let controller = state::read(&self.maps.dir);
        Ok(Status {
            pin_dir: self.maps.dir.clone(),
            attached,
            monitor: cfg.flags & flags::MONITOR != 0,
            generation: cfg.generation,
            controller_running: controller.as_ref().is_some_and(|d| state::alive(d.pid)),
            controller,
            tracked_sources: self.maps.count_sources()?,
            tracked_sources_capacity: self.maps.sources_capacity()?,
            clock: Tick::of(&cfg),
            blocklist_entries: self.maps.list_all(List::Block)?.len(),
            allowlist_entries: self.maps.list_all(List::Allow)?.len(),
            limit_classes: self.maps.limit_all()?.len(),
        })
    }
}
