//! Per-packet cost through BPF_PROG_TEST_RUN: the product's XDP program on
//! every path, next to two hand-assembled baselines, all measured the same
//! way on one pinned CPU.

use anyhow::{bail, Context, Result};
use aya::{programs::Xdp, Ebpf};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use firewall_common::{maps as names, SourceKey, SourceState};
use firewall_user::{
    bpf_sys::{RawMap, Shape},
    control::Control,
    loader, policy,
};

use super::policy::{self as pol, Size, HIGH_RATE};
use super::profile::Perf;
use super::sys;
use super::{median, Cfg};
use testkit::packet::Frame;

/// The product's object loaded with its maps pinned in a private directory
/// (removed on drop).
pub struct Product {
    pub pin_dir: PathBuf,
    pub ebpf: Ebpf,
    pub maps: Control,
}

impl Product {
    pub fn load() -> Result<Product> {
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/{}{}-bench{}",
            testkit::firewall::PIN_PREFIX,
            std::process::id(),
            super::next_id()
        ));
        loader::ensure_bpffs(&pin_dir)?;
        let loaded = match loader::load(&pin_dir, &Default::default()) {
            Ok(l) => l,
            Err(e) => {
                let _ = loader::detach(&pin_dir, None);
                let _ = std::fs::remove_dir_all(&pin_dir);
                return Err(e);
            }
        };
        let ebpf = loaded.ebpf;
        let mut maps = Control::open(&pin_dir)?;
        // The clock the product gets in production (`firewall run`).
        {
            let mut w = maps.write()?;
            w.set_tick(loaded.tick)?;
            w.rotate_challenge_key()?;
        }
        Ok(Product {
            pin_dir,
            ebpf,
            maps,
        })
    }

    pub fn prog_fd(&self) -> Result<BorrowedFd<'_>> {
        let p: &Xdp = self
            .ebpf
            .program(names::PROG_XDP)
            .context("no XDP program")?
            .try_into()?;
        Ok(p.fd()?.as_fd())
    }

    pub fn apply_text(&mut self, text: &str) -> Result<()> {
        let p = match policy::parse(text) {
            Ok((p, _)) => p,
            Err(problems) => bail!(
                "generated policy is invalid: {}",
                problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        self.maps.write()?.apply(&p)
    }
}

impl Drop for Product {
    fn drop(&mut self) {
        let _ = loader::detach(&self.pin_dir, None);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

const DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn udp4(src: Ipv4Addr) -> Frame {
    Frame::ip(IpAddr::V4(src), IpAddr::V4(DST)).udp(40000, 9, 18)
}

/// The measured paths: name, key, frame.
fn frames() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        (
            "non-IP (ARP) pass",
            "non_ip",
            Frame::arp_request([2, 0, 0, 0, 0, 1], Ipv4Addr::new(192, 0, 2, 2), DST).build(),
        ),
        (
            "known IPv4 source, within limit",
            "known_v4_within",
            udp4(pol::KNOWN_V4).build(),
        ),
        (
            "known IPv4 source, over limit",
            "known_v4_over",
            udp4(pol::KNOWN_V4).build(),
        ),
        (
            "allowlist hit (exact host)",
            "allow_host_hit",
            udp4(pol::ALLOWED_HOST_V4).build(),
        ),
        (
            "blocklist hit (exact host)",
            "block_host_hit",
            udp4(pol::BLOCKED_HOST_V4).build(),
        ),
        (
            "allowlist hit (prefix)",
            "allow_hit",
            udp4(pol::ALLOWED_V4).build(),
        ),
        (
            "blocklist hit (prefix)",
            "block_hit",
            udp4(pol::BLOCKED_V4).build(),
        ),
        (
            "IPv6 known source",
            "known_v6",
            Frame::ip(
                IpAddr::V6(pol::KNOWN_V6),
                "2001:db8:ffff::1".parse().unwrap(),
            )
            .udp(40000, 9, 18)
            .build(),
        ),
        (
            "802.1Q-tagged known IPv4 source",
            "vlan_v4",
            udp4(pol::KNOWN_V4).vlan(100).build(),
        ),
    ]
}

/// The action the product must return on each path.
fn expected_action(key: &str) -> u32 {
    match key {
        "known_v4_over" | "block_hit" | "block_host_hit" => 1, // XDP_DROP
        _ => 2,                                                // XDP_PASS
    }
}

/// One measurement: `runs` runs of `repeat` repetitions; the kernel's
/// average ns per repetition of each run, plus the in-program time from a
/// separate run with BPF run-time statistics on.
struct Measured {
    per_run_ns: Vec<u32>,
    retval: u32,
    in_prog_ns: Option<f64>,
}

fn measure(prog: BorrowedFd<'_>, frame: &[u8], cfg: &Cfg) -> Result<Measured> {
    // Warm-up: the first packet of a known source creates its state.
    sys::test_run(prog, frame, 1000, None, 0, 0).context("BPF_PROG_TEST_RUN")?;
    let mut per_run_ns = Vec::new();
    let mut retval = 0;
    for _ in 0..cfg.micro_runs {
        let r = sys::test_run(prog, frame, cfg.micro_repeat, None, 0, 0)?;
        per_run_ns.push(r.duration_ns);
        retval = r.retval;
    }
    let in_prog_ns = profile(prog, frame, (cfg.micro_repeat / 4).max(10_000));
    Ok(Measured {
        per_run_ns,
        retval,
        in_prog_ns,
    })
}

/// In-program ns per run from `run_time_ns`/`run_cnt` (BPF_ENABLE_STATS
/// held only for this run).
fn profile(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> Option<f64> {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok()?;
    let t0 = sys::fdinfo_u64(prog, "run_time_ns")?;
    let c0 = sys::fdinfo_u64(prog, "run_cnt")?;
    sys::test_run(prog, frame, repeat, None, 0, 0).ok()?;
    let t1 = sys::fdinfo_u64(prog, "run_time_ns")?;
    let c1 = sys::fdinfo_u64(prog, "run_cnt")?;
    (c1 > c0).then(|| (t1 - t0) as f64 / (c1 - c0) as f64)
}

/// Single runs (repeat 1): `frames` one after another, the kernel's
/// duration of each. Used for the new-source path, where every packet must
/// have a source the table has not seen.
fn single_runs(prog: BorrowedFd<'_>, frames: &[Vec<u8>]) -> Result<(Vec<u32>, Vec<u32>)> {
    let mut ns = Vec::with_capacity(frames.len());
    let mut rets = Vec::with_capacity(frames.len());
    for f in frames {
        let r = sys::test_run(prog, f, 1, None, 0, 0)?;
        ns.push(r.duration_ns);
        rets.push(r.retval);
    }
    Ok((ns, rets))
}

fn med_u32(v: &[u32]) -> f64 {
    median(&v.iter().map(|x| *x as f64).collect::<Vec<_>>())
}

fn mean_u32(v: &[u32]) -> f64 {
    v.iter().map(|x| *x as f64).sum::<f64>() / v.len().max(1) as f64
}

/// The two baselines, loaded raw.
pub struct Baselines {
    pub pass: OwnedFd,
    pub lookup: OwnedFd,
    pub ktime: OwnedFd,
    _map: firewall_user::bpf_sys::RawMap,
}

impl Baselines {
    pub fn load() -> Result<Baselines> {
        let key = SourceKey {
            addr: [198, 18, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            family: 4,
            rule: 0,
            _pad: [0; 2],
        };
        let mut kb = [0u8; 20];
        kb[..16].copy_from_slice(&key.addr);
        kb[16] = key.family;
        kb[17] = key.rule;
        let vsize = std::mem::size_of::<SourceState>() as u32;
        let map = sys::hash_map_create(20, vsize, 1024)?;
        map.update(&kb, &vec![0u8; vsize as usize])
            .context("bpf(BPF_MAP_UPDATE_ELEM)")?;
        Ok(Baselines {
            pass: sys::load_pass()?,
            lookup: sys::load_lookup(map.fd(), &kb)?,
            ktime: sys::load_ktime()?,
            _map: map,
        })
    }
}

pub fn run(cfg: &Cfg) -> Result<Value> {
    sys::pin_thread(cfg.gw_cpu);
    let r = run_pinned(cfg);
    sys::unpin_thread();
    r
}

fn run_pinned(cfg: &Cfg) -> Result<Value> {
    let base = Baselines::load().context("loading the baseline programs")?;
    let mut product = Product::load().context("loading the product's object")?;
    let known = udp4(pol::KNOWN_V4).build();

    eprintln!("bench: per-packet: baselines");
    let pass = measure(base.pass.as_fd(), &known, cfg)?;
    let lookup = measure(base.lookup.as_fd(), &known, cfg)?;
    let ktime = measure(base.ktime.as_fd(), &known, cfg)?;
    let pass_ns = med_u32(&pass.per_run_ns);
    let lookup_ns = med_u32(&lookup.per_run_ns);
    // Single-run versions, for the new-source comparison.
    let singles: Vec<Vec<u8>> = (0..cfg.new_sources).map(|_| known.clone()).collect();
    let pass_single = single_runs(base.pass.as_fd(), &singles)?.0;
    let lookup_single = single_runs(base.lookup.as_fd(), &singles)?.0;

    let mut rows = Vec::new();
    let baseline_row = |name: &str, key: &str, m: &Measured| {
        json!({
            "policy": "-", "path": name, "key": key,
            "ns_per_packet": med_u32(&m.per_run_ns),
            "runs_ns": m.per_run_ns, "in_program_ns": m.in_prog_ns,
            "ratio_to_pass": med_u32(&m.per_run_ns) / pass_ns,
            "ratio_to_lookup": med_u32(&m.per_run_ns) / lookup_ns,
        })
    };
    rows.push(baseline_row(
        "baseline: return XDP_PASS",
        "baseline_pass",
        &pass,
    ));
    rows.push(baseline_row(
        "baseline: one hash lookup (20-byte key), XDP_PASS",
        "baseline_lookup",
        &lookup,
    ));
    rows.push(baseline_row(
        "reference: one bpf_ktime_get_ns call, XDP_PASS",
        "reference_ktime",
        &ktime,
    ));

    let mut new_rows = Vec::new();
    let mut perf = Vec::new();
    perf.push(json!({
        "policy": "-", "key": "baseline_lookup",
        "hot_symbols": perf_profile(base.lookup.as_fd(), &known, lookup_ns, cfg.gw_cpu),
    }));
    for size in [Size::Empty, Size::Large] {
        eprintln!("bench: per-packet: {} policy", size.name());
        let t = std::time::Instant::now();
        product.apply_text(&pol::micro(size, HIGH_RATE, HIGH_RATE))?;
        let apply_s = t.elapsed().as_secs_f64();
        for (name, key, frame) in frames() {
            if key == "known_v4_over" {
                // Same source, default limit 1 pps, burst 1: after the
                // first packet every repetition is over the limit.
                product.apply_text(&pol::micro(size, 1, 1))?;
            }
            let prog = product.prog_fd()?;
            let m = measure(prog, &frame, cfg)?;
            if m.retval != expected_action(key) {
                bail!(
                    "{key} under the {} policy returned {} (expected {})",
                    size.name(),
                    m.retval,
                    expected_action(key)
                );
            }
            let ns = med_u32(&m.per_run_ns);
            rows.push(json!({
                "policy": size.name(), "path": name, "key": key,
                "ns_per_packet": ns, "runs_ns": m.per_run_ns,
                "in_program_ns": m.in_prog_ns,
                "ratio_to_pass": ns / pass_ns, "ratio_to_lookup": ns / lookup_ns,
            }));
            if size == Size::Large && PROFILED.contains(&key) {
                perf.push(json!({
                    "policy": size.name(), "key": key,
                    "hot_symbols": perf_profile(prog, &frame, ns, cfg.gw_cpu),
                }));
            }
            if key == "known_v4_over" {
                product.apply_text(&pol::micro(size, HIGH_RATE, HIGH_RATE))?;
            }
        }

        // New sources: one single run per never-seen source, and the known
        // source run singly the same number of times, for comparison.
        let base_ip = u32::from(pol::NEW_BASE) + if size == Size::Large { 1 << 20 } else { 0 };
        let fresh: Vec<Vec<u8>> = (0..cfg.new_sources as u32)
            .map(|i| udp4(Ipv4Addr::from(base_ip + i)).build())
            .collect();
        let prog = product.prog_fd()?;
        let before = table_len(&product);
        let (new_ns, rets) = single_runs(prog, &fresh)?;
        let after = table_len(&product);
        if rets.iter().any(|r| *r != 2) {
            bail!(
                "a new source was not passed under the {} policy",
                size.name()
            );
        }
        let (known_single, _) = single_runs(prog, &singles)?;
        let new_med = med_u32(&new_ns);
        let pass_s = med_u32(&pass_single);
        let lookup_s = med_u32(&lookup_single);
        new_rows.push(json!({
            "policy": size.name(),
            "sources": cfg.new_sources,
            "inserted": after.saturating_sub(before),
            "new_source_median_ns": new_med,
            "new_source_mean_ns": mean_u32(&new_ns),
            "known_source_single_median_ns": med_u32(&known_single),
            "pass_single_median_ns": pass_s,
            "lookup_single_median_ns": lookup_s,
            "ratio_to_pass": new_med / pass_s,
            "ratio_to_lookup": new_med / lookup_s,
            "apply_seconds": apply_s,
        }));
    }
    eprintln!("bench: per-packet: SYN challenges");
    let challenge = challenges(&mut product, cfg, &pass_single)?;
    let mem = memory(&product);
    Ok(json!({
        "challenge": challenge,
        "repeat": cfg.micro_repeat,
        "runs": cfg.micro_runs,
        "cpu": cfg.gw_cpu,
        "baseline_pass_ns": pass_ns,
        "baseline_lookup_ns": lookup_ns,
        "rows": rows,
        "new_source": new_rows,
        "perf": perf,
        "memory": mem,
    }))
}

/// SYNs of never-seen sources during a flood (the new-source budget
/// spent): each is answered with a challenge through the tail call. An
/// answer rewrites the frame in place, which a repeated run would then see
/// instead of the SYN, so each SYN is run once, timed by the kernel like the
/// new-source row; answers per second per core follow from the median.
fn challenges(product: &mut Product, cfg: &Cfg, pass_single: &[u32]) -> Result<Value> {
    product.apply_text(
        "[defaults]\nrate = 1000\nburst = 1000\n[flood]\nnew_sources_rate = 1\n\
         new_sources_burst = 1\nsyn_challenge = true\nsyn_challenge_rate = 100000000\n\
         syn_challenge_burst = 100000000\n",
    )?;
    let prog = product.prog_fd()?;
    // Spend the budget (burst 1): every SYN after this is refused by it.
    let spend = udp4(Ipv4Addr::new(100, 127, 0, 1)).build();
    single_runs(prog, &[spend.clone(), spend])?;
    let base = u32::from(Ipv4Addr::new(100, 96, 0, 0));
    let syns: Vec<Vec<u8>> = (0..cfg.new_sources as u32)
        .map(|i| {
            Frame::ip(IpAddr::V4(Ipv4Addr::from(base + i)), IpAddr::V4(DST))
                .tcp(40000, 443, testkit::packet::tcp_flags::SYN)
                .build()
        })
        .collect();
    let (ns, rets) = single_runs(prog, &syns)?;
    // A token refilled during the run admits one source instead: only the
    // answered SYNs (XDP_TX) are timed.
    let answered: Vec<u32> = ns
        .iter()
        .zip(&rets)
        .filter(|(_, r)| **r == 3)
        .map(|(n, _)| *n)
        .collect();
    if answered.len() * 2 < syns.len() {
        bail!(
            "only {} of {} SYNs were challenged",
            answered.len(),
            syns.len()
        );
    }
    let med = med_u32(&answered);
    let pass_s = med_u32(pass_single);
    Ok(json!({
        "syns": syns.len(),
        "answered": answered.len(),
        "challenge_median_ns": med,
        "challenge_mean_ns": mean_u32(&answered),
        "pass_single_median_ns": pass_s,
        "ratio_to_pass": med / pass_s,
        "answers_per_second_per_core": 1e9 / med,
    }))
}

/// Paths whose targets are checked: profiled with perf (large policy).
const PROFILED: [&str; 4] = ["known_v4_within", "known_v4_over", "allow_hit", "block_hit"];

/// perf's hottest symbols while this thread runs `frame` through `prog`
/// for about a second (`ns`: the measured cost per run).
fn perf_profile(prog: BorrowedFd<'_>, frame: &[u8], ns: f64, cpu: usize) -> Vec<Value> {
    let Some(p) = Perf::start(sys::gettid(), cpu, 0.0, 1.2) else {
        return Vec::new();
    };
    // perf needs a moment to start sampling.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let repeat = (0.9e9 / ns.max(1.0)) as u32;
    let _ = sys::test_run(prog, frame, repeat.clamp(100_000, 50_000_000), None, 0, 0);
    p.finish()
}

/// Entries in the per-source table.
fn table_len(p: &Product) -> u64 {
    p.maps.count_sources().unwrap_or(0) as u64
}

/// Bytes per entry and fixed bytes of a map shaped like the pinned `name`:
/// the kernel's memlock of two fresh maps of that shape, at its size and at
/// twice it (sizes the hash rounds the same way).
fn marginal(p: &Product, name: &str) -> Option<(f64, f64)> {
    let shape = RawMap::open_pinned(&p.pin_dir.join(name)).ok()?.shape;
    let n = shape.max_entries.next_power_of_two();
    let memlock = |entries: u32| {
        let m = testkit::stage::map(
            Shape {
                max_entries: entries,
                ..shape
            },
            "bench_memlock",
        )
        .ok()?;
        sys::fdinfo_u64(m.fd(), "memlock")
    };
    let (one, two) = (memlock(n)?, memlock(2 * n)?);
    let per = two.checked_sub(one)? as f64 / f64::from(n);
    Some((per, one as f64 - per * f64::from(n)))
}

/// Kernel-accounted memory of the per-source table (and of all maps).
fn memory(p: &Product) -> Value {
    let mut maps = Vec::new();
    let mut total = 0u64;
    for name in names::ALL {
        let Ok(data) = aya::maps::MapData::from_pin(p.pin_dir.join(name)) else {
            continue;
        };
        let fd = data.fd().as_fd();
        let memlock = sys::fdinfo_u64(fd, "memlock").unwrap_or(0);
        let max_entries = sys::fdinfo_u64(fd, "max_entries").unwrap_or(0);
        total += memlock;
        maps.push(json!({"map": name, "memlock": memlock, "max_entries": max_entries}));
    }
    let per_source = |name: &str| {
        let m = maps
            .iter()
            .find(|m| m["map"] == name)
            .cloned()
            .unwrap_or(Value::Null);
        let per = match (m["memlock"].as_u64(), m["max_entries"].as_u64()) {
            (Some(mem), Some(n)) if n > 0 => Some(mem as f64 / n as f64),
            _ => None,
        };
        (m, per)
    };
    let (v4, share_v4) = per_source(names::SOURCES_V4);
    let (v6, share_v6) = per_source(names::SOURCES_V6);
    // The memlock of a table divided by its entries also spreads the
    // table's fixed cost (its header, per-CPU LRU lists) over them; what a
    // tracked source costs is the slope, read from two fresh maps of the
    // same shape. The share is kept beside it.
    let slope_v4 = marginal(p, names::SOURCES_V4);
    let slope_v6 = marginal(p, names::SOURCES_V6);
    let (per_v4, per_v6) = (
        slope_v4.map(|(per, _)| per).or(share_v4),
        slope_v6.map(|(per, _)| per).or(share_v6),
    );
    json!({
        "sources_capacity": firewall_common::maps::SOURCES_CAPACITY,
        "sources_memlock": v4["memlock"],
        "sources_v6_memlock": v6["memlock"],
        "bytes_per_tracked_source": per_v4,
        "bytes_per_tracked_source_v6": per_v6,
        "fixed_bytes_per_table": slope_v4.map(|(_, fixed)| fixed),
        "fixed_bytes_per_table_v6": slope_v6.map(|(_, fixed)| fixed),
        "memlock_per_entry": share_v4,
        "memlock_per_entry_v6": share_v6,
        "key_value_bytes": std::mem::size_of::<firewall_common::SourceKey4>() + std::mem::size_of::<SourceState>(),
        "key_value_bytes_v6": std::mem::size_of::<firewall_common::SourceKey6>() + std::mem::size_of::<SourceState>(),
        "all_maps_memlock": total,
        "maps": maps,
    })
}
