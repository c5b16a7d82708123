//! Typed handles to every pinned map: each map name is spelled once, in
//! `firewall_common::maps`, and opened here.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, Map, MapData, PerCpuArray,
};
use firewall_common::{
    maps as names, AddrV4, AddrV6, Config, Counter, LimitEntry, ListEntry, Rule, SourceKey,
    SourceState,
};

/// The allow or block list of one address family.
pub type V4List = LpmTrie<MapData, AddrV4, ListEntry>;
pub type V6List = LpmTrie<MapData, AddrV6, ListEntry>;

/// Every map of the data plane, opened from the pin directory.
pub struct Maps {
    pub dir: PathBuf,
    pub config: Array<MapData, Config>,
    pub counters: PerCpuArray<MapData, Counter>,
    pub rule_counters: PerCpuArray<MapData, Counter>,
    pub stats: PerCpuArray<MapData, u64>,
    pub sources: HashMap<MapData, SourceKey, SourceState>,
    pub allow_v4: V4List,
    pub allow_v6: V6List,
    pub block_v4: V4List,
    pub block_v6: V6List,
    pub limit_v4: LpmTrie<MapData, AddrV4, LimitEntry>,
    pub limit_v6: LpmTrie<MapData, AddrV6, LimitEntry>,
    pub rules: Array<MapData, Rule>,
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
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Maps {
            dir: dir.to_path_buf(),
            config: typed!(dir, names::CONFIG),
            counters: typed!(dir, names::COUNTERS),
            rule_counters: typed!(dir, names::RULE_COUNTERS),
            stats: typed!(dir, names::STATS),
            sources: typed!(dir, names::SOURCES),
            allow_v4: typed!(dir, names::ALLOW_V4),
            allow_v6: typed!(dir, names::ALLOW_V6),
            block_v4: typed!(dir, names::BLOCK_V4),
            block_v6: typed!(dir, names::BLOCK_V6),
            limit_v4: typed!(dir, names::LIMIT_V4),
            limit_v6: typed!(dir, names::LIMIT_V6),
            rules: typed!(dir, names::RULES),
        })
    }

    pub fn config(&self) -> Result<Config> {
        Ok(self.config.get(&0, 0)?)
    }

    pub fn set_config(&mut self, cfg: &Config) -> Result<()> {
        Ok(self.config.set(0, cfg, 0)?)
    }

    /// Read-modify-write of the config with a new generation, so that every
    /// tracked source re-classifies on its next packet.
    pub fn bump(&mut self, f: impl FnOnce(&mut Config)) -> Result<Config> {
        let mut cfg = self.config()?;
        f(&mut cfg);
        cfg.generation = cfg.generation.wrapping_add(1);
        self.set_config(&cfg)?;
        Ok(cfg)
    }

    /// Counters per verdict, summed over CPUs.
    pub fn verdict_totals(&self) -> Result<Vec<Counter>> {
        sum_counters(&self.counters, firewall_common::N_VERDICTS)
    }

    /// Counters of rule `i` per verdict, summed over CPUs.
    pub fn rule_totals(&self, rule: u32) -> Result<Vec<Counter>> {
        let n = firewall_common::N_VERDICTS;
        (0..n)
            .map(|v| {
                let per_cpu = self.rule_counters.get(&(rule * n + v), 0)?;
                Ok(per_cpu.iter().fold(Counter::default(), add))
            })
            .collect()
    }

    pub fn stat(&self, s: firewall_common::Stat) -> Result<u64> {
        Ok(self.stats.get(&(s as u32), 0)?.iter().sum())
    }
}

fn add(a: Counter, b: &Counter) -> Counter {
    Counter {
        packets: a.packets + b.packets,
        bytes: a.bytes + b.bytes,
    }
}

fn sum_counters(map: &PerCpuArray<MapData, Counter>, n: u32) -> Result<Vec<Counter>> {
    (0..n)
        .map(|i| Ok(map.get(&i, 0)?.iter().fold(Counter::default(), add)))
        .collect()
}

/// LPM key helpers.
pub fn key_v4(prefix: u8, addr: AddrV4) -> Key<AddrV4> {
    Key::new(prefix as u32, addr)
}

pub fn key_v6(prefix: u8, addr: AddrV6) -> Key<AddrV6> {
    Key::new(prefix as u32, addr)
}
