//! Typed handles to every pinned map: each map name is spelled once, in
//! `firewall_common::maps`, and opened here.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, IterableMap, Map, MapData, PerCpuArray,
};
use firewall_common::{
    maps::{self as names, MAX_RULES},
    AddrV4, AddrV6, Config, Counter, Limit, LimitEntry, ListEntry, Rule, SourceKey, SourceKey4,
    SourceKey6, SourceState, LIMIT_SLOTS,
};

use crate::bpf_sys::percpu;

/// The allow or block list of one address family: prefixes in a trie...
pub(super) type V4List = LpmTrie<MapData, AddrV4, ListEntry>;
pub(super) type V6List = LpmTrie<MapData, AddrV6, ListEntry>;
/// ... and exact hosts (/32, /128) in a hash keyed by the address.
pub(super) type V4Hosts = HashMap<MapData, AddrV4, ListEntry>;
pub(super) type V6Hosts = HashMap<MapData, AddrV6, ListEntry>;

/// Every map of the data plane, opened from the pin directory.
///
/// The tries and rules exist twice (set 0 and 1) and the config has a slot
/// per set; `active` names the set packets use. Between reloads both sets
/// hold the same entries: run-time edits write both. Changes to the config
/// are written to the inactive slot and published by flipping `active`, so
/// a packet never reads a half-written config; a reload stages its lists
/// in the inactive set the same way. Writers serialise on `write_lock`,
/// taken by `Control::write` and only there.
pub(super) struct Maps {
    pub(super) dir: PathBuf,
    pub(super) config: Array<MapData, Config>,
    pub(super) active: Array<MapData, u32>,
    pub(super) counters: PerCpuArray<MapData, Counter>,
    pub(super) rule_counters: PerCpuArray<MapData, Counter>,
    pub(super) stats: PerCpuArray<MapData, u64>,
    pub(super) sources_v4: HashMap<MapData, SourceKey4, SourceState>,
    pub(super) sources_v6: HashMap<MapData, SourceKey6, SourceState>,
    /// `[[limit]]` class limits by slot, per set (`set * LIMIT_SLOTS + slot`).
    pub(super) limits: Array<MapData, Limit>,
    pub(super) allow_v4: [V4List; 2],
    pub(super) allow_v6: [V6List; 2],
    pub(super) block_v4: [V4List; 2],
    pub(super) block_v6: [V6List; 2],
    pub(super) allow_host_v4: [V4Hosts; 2],
    pub(super) allow_host_v6: [V6Hosts; 2],
    pub(super) block_host_v4: [V4Hosts; 2],
    pub(super) block_host_v6: [V6Hosts; 2],
    pub(super) limit_v4: [LpmTrie<MapData, AddrV4, LimitEntry>; 2],
    pub(super) limit_v6: [LpmTrie<MapData, AddrV6, LimitEntry>; 2],
    pub(super) rules: Array<MapData, Rule>,
    pub(super) rule_ports: Array<MapData, u8>,
}

fn open(dir: &Path, name: &str) -> Result<Map> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "no firewall data plane at {} (is `firewall run` started with this --pin-dir?)",
            path.display()
        )
    })?;
    Map::from_map_data(data).with_context(|| format!("opening map {name}"))
}

macro_rules! typed {
    ($dir:expr, $name:expr) => {
        open($dir, $name)?
            .try_into()
            .with_context(|| format!("map {} has an unexpected type or layout", $name))?
    };
}

impl Maps {
    pub(super) fn open(dir: &Path) -> Result<Self> {
        Ok(Maps {
            dir: dir.to_path_buf(),
            config: typed!(dir, names::CONFIG),
            active: typed!(dir, names::ACTIVE),
            counters: typed!(dir, names::COUNTERS),
            rule_counters: typed!(dir, names::RULE_COUNTERS),
            stats: typed!(dir, names::STATS),
            sources_v4: typed!(dir, names::SOURCES_V4),
            sources_v6: typed!(dir, names::SOURCES_V6),
            limits: typed!(dir, names::LIMITS),
            allow_v4: [
                typed!(dir, names::ALLOW_V4[0]),
                typed!(dir, names::ALLOW_V4[1]),
            ],
            allow_v6: [
                typed!(dir, names::ALLOW_V6[0]),
                typed!(dir, names::ALLOW_V6[1]),
            ],
            block_v4: [
                typed!(dir, names::BLOCK_V4[0]),
                typed!(dir, names::BLOCK_V4[1]),
            ],
            block_v6: [
                typed!(dir, names::BLOCK_V6[0]),
                typed!(dir, names::BLOCK_V6[1]),
            ],
            limit_v4: [
                typed!(dir, names::LIMIT_V4[0]),
                typed!(dir, names::LIMIT_V4[1]),
            ],
            limit_v6: [
                typed!(dir, names::LIMIT_V6[0]),
                typed!(dir, names::LIMIT_V6[1]),
            ],
            allow_host_v4: [
                typed!(dir, names::ALLOW_HOST_V4[0]),
                typed!(dir, names::ALLOW_HOST_V4[1]),
            ],
            allow_host_v6: [
                typed!(dir, names::ALLOW_HOST_V6[0]),
                typed!(dir, names::ALLOW_HOST_V6[1]),
            ],
            block_host_v4: [
                typed!(dir, names::BLOCK_HOST_V4[0]),
                typed!(dir, names::BLOCK_HOST_V4[1]),
            ],
            block_host_v6: [
                typed!(dir, names::BLOCK_HOST_V6[0]),
                typed!(dir, names::BLOCK_HOST_V6[1]),
            ],
            rules: typed!(dir, names::RULES),
            rule_ports: typed!(dir, names::RULE_PORTS),
        })
    }

    /// The set packets use now (0 or 1).
    pub(super) fn active_set(&self) -> Result<usize> {
        Ok(self.active.get(&0, 0)? as usize & 1)
    }

    /// The config packets use now.
    pub(super) fn config(&self) -> Result<Config> {
        Ok(self.config.get(&(self.active_set()? as u32), 0)?)
    }

    /// Publish `cfg` with a new generation, so that every tracked source
    /// re-classifies on its next packet: written to the inactive slot, with
    /// the active slot's rules copied along, then made active. The caller
    /// holds `write_lock`; both sets of tries hold the same entries.
    pub(super) fn bump(&mut self, f: impl FnOnce(&mut Config)) -> Result<Config> {
        self.copy_rules_to_inactive()?;
        self.publish(f)
    }

    /// Like `bump`, for changes that no cached classification depends on
    /// (exact-host flags, the controller's expiry hint): tracked sources
    /// keep their cached class.
    pub(super) fn touch(&mut self, f: impl FnOnce(&mut Config)) -> Result<Config> {
        self.copy_rules_to_inactive()?;
        self.write_config(f, false)
    }

    /// The rules of the active set, copied to the other. (Their port
    /// prefilter is written to both sets by every apply, see `apply`.)
    fn copy_rules_to_inactive(&mut self) -> Result<()> {
        let active = self.active_set()? as u32;
        for i in 0..MAX_RULES {
            let r = self.rules.get(&(active * MAX_RULES + i), 0)?;
            self.rules.set((1 - active) * MAX_RULES + i, r, 0)?;
        }
        Ok(())
    }

    /// Write the config to the inactive slot with a new generation and
    /// flip `active` to it.
    pub(super) fn publish(&mut self, f: impl FnOnce(&mut Config)) -> Result<Config> {
        self.write_config(f, true)
    }

    fn write_config(&mut self, f: impl FnOnce(&mut Config), bump: bool) -> Result<Config> {
        let active = self.active_set()?;
        let next = 1 - active;
        let mut cfg = self.config()?;
        f(&mut cfg);
        let mut wrapped = false;
        if bump {
            cfg.generation = cfg.generation.wrapping_add(1);
            // Tracked sources keep the low 16 bits: once they come round
            // again, an entry left untouched since could pass as current.
            wrapped = firewall_common::short_generation(cfg.generation) == 0;
        }
        cfg.set = next as u8;
        cfg.writes = cfg.writes.wrapping_add(1);
        self.config.set(next as u32, cfg, 0)?;
        self.active.set(0, next as u32, 0)?;
        if wrapped {
            self.clear_sources()?;
        }
        Ok(cfg)
    }

    /// Names of the rules in force, in order.
    pub(super) fn rule_names(&self) -> Result<Vec<String>> {
        let set = self.active_set()? as u32;
        let cfg = self.config()?;
        (0..cfg.rule_count as u32)
            .map(|i| {
                Ok(crate::text::unfixed(
                    &self.rules.get(&(set * MAX_RULES + i), 0)?.name,
                ))
            })
            .collect()
    }

    /// Serialise writers (CLI commands, the daemon's reloads, expiry and
    /// bans) on one pin directory. Released when the file is dropped.
    pub(super) fn write_lock(&self) -> Result<std::fs::File> {
        let path = crate::state::path(&self.dir).with_extension("lock");
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening lock {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own; blocks until granted.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
        if rc != 0 {
            anyhow::bail!(
                "locking {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(f)
    }

    /// Counters per verdict, summed over CPUs.
    pub(super) fn verdict_totals(&self) -> Result<Vec<Counter>> {
        Ok(percpu::sums(
            fd(&self.counters),
            0,
            firewall_common::N_VERDICTS,
        )?)
    }

    /// Counters of rule `i` per verdict, summed over CPUs.
    pub(super) fn rule_totals(&self, rule: u32) -> Result<Vec<Counter>> {
        let n = firewall_common::N_VERDICTS;
        Ok(percpu::sums(fd(&self.rule_counters), rule * n, n)?)
    }

    /// Source prefixes in the per-source tables: a batched walk (about as
    /// long as a memory copy of the tables), falling back to key by key.
    pub(super) fn count_sources(&self) -> Result<usize> {
        let count = |name: &str, key: usize, fallback: &dyn Fn() -> usize| -> Result<usize> {
            let data = MapData::from_pin(self.dir.join(name))?;
            Ok(
                crate::bpf_sys::batch::count(&data, key, std::mem::size_of::<SourceState>())
                    .unwrap_or_else(|_| fallback()),
            )
        };
        Ok(count(
            names::SOURCES_V4,
            std::mem::size_of::<SourceKey4>(),
            &|| self.sources_v4.keys().filter(|k| k.is_ok()).count(),
        )? + count(
            names::SOURCES_V6,
            std::mem::size_of::<SourceKey6>(),
            &|| self.sources_v6.keys().filter(|k| k.is_ok()).count(),
        )?)
    }

    /// Every tracked source, both families (entries evicted meanwhile are
    /// skipped).
    pub(super) fn sources(&self) -> Vec<(SourceKey, SourceState)> {
        let v4 = self
            .sources_v4
            .iter()
            .flatten()
            .map(|(k, s)| (SourceKey::from_v4(&k), s));
        let v6 = self
            .sources_v6
            .iter()
            .flatten()
            .map(|(k, s)| (SourceKey::from_v6(&k), s));
        v4.chain(v6).collect()
    }

    /// The tracked state of one source, if any.
    pub(super) fn source(&self, key: &SourceKey) -> Option<SourceState> {
        if key.family == 4 {
            self.sources_v4.get(&key.v4(), 0).ok()
        } else {
            self.sources_v6.get(&key.v6(), 0).ok()
        }
    }

    /// Forget every tracked source (they start again with a full bucket).
    pub(super) fn clear_sources(&mut self) -> Result<()> {
        let k4: Vec<SourceKey4> = self.sources_v4.keys().flatten().collect();
        for k in k4 {
            let _ = self.sources_v4.remove(&k);
        }
        let k6: Vec<SourceKey6> = self.sources_v6.keys().flatten().collect();
        for k in k6 {
            let _ = self.sources_v6.remove(&k);
        }
        Ok(())
    }

    /// The limit a tracked source is held to, as the program finds it.
    pub(super) fn limit_of(&self, key: &SourceKey, st: &SourceState) -> Result<Limit> {
        let cfg = self.config()?;
        let set = cfg.set as u32 & 1;
        if st.slot() != 0 {
            return Ok(self
                .limits
                .get(&(set * LIMIT_SLOTS + st.slot() as u32), 0)?);
        }
        if key.rule != 0 {
            return Ok(self
                .rules
                .get(&(set * MAX_RULES + key.rule as u32 - 1), 0)?
                .limit);
        }
        Ok(cfg.default_limit)
    }

    /// Capacity of each per-source table, as loaded (`[table] max_sources`).
    pub(super) fn sources_capacity(&self) -> Result<u32> {
        let data = MapData::from_pin(self.dir.join(names::SOURCES_V4))?;
        Ok(data.info()?.max_entries())
    }

    pub(super) fn stat(&self, s: firewall_common::Stat) -> Result<u64> {
        self.stat_at(s as u32)
    }

    /// The statistic in slot `i`, summed over CPUs.
    pub(super) fn stat_at(&self, i: u32) -> Result<u64> {
        Ok(percpu::sums(fd(&self.stats), i, 1)?[0])
    }
}

/// The descriptor of a typed map, for the raw per-CPU reader.
fn fd<K: aya::Pod, V>(map: &impl IterableMap<K, V>) -> std::os::fd::BorrowedFd<'_> {
    use std::os::fd::AsFd;
    map.map().fd().as_fd()
}

/// LPM key helpers.
pub(super) fn key_v4(prefix: u8, addr: AddrV4) -> Key<AddrV4> {
    Key::new(prefix as u32, addr)
}

pub(super) fn key_v6(prefix: u8, addr: AddrV6) -> Key<AddrV6> {
    Key::new(prefix as u32, addr)
}
