//! Live throughput over veth: a BPF_PROG_TEST_RUN live-frames generator
//! transmits 64-byte UDP frames (60 bytes + FCS on a wire) from the
//! generator namespace into the gateway namespace, where one contender at a
//! time is installed. Every contender is measured the same way, from the
//! gateway veth's and the gateway's own counters (see [`Topo::snapshot`]).

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::contenders::{self, Installed, Kind};
use super::policy::LIVE_BLOCKED;
use super::profile::Perf;
use super::sys;
use super::topo::{Snapshot, Topo, GEN_MAC, GW_IP, GW_MAC};
use super::{median, Cfg};
use testkit::packet::Frame;

pub const ONE_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const MANY_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 16, 0);
pub const MANY: usize = 1000;
pub const SPOOF_BASE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0);
pub const SPOOF_POOL: u32 = 1 << 24;

/// Frames per BPF_PROG_TEST_RUN call of the generator, and per batch.
const CHUNK: u32 = 1 << 18;
const BATCH: u32 = 64;

#[derive(Clone, Debug)]
pub struct Scenario {
    pub key: &'static str,
    pub name: &'static str,
    pub base: Ipv4Addr,
    pub pool: u32,
    /// Seconds of traffic before measuring: long enough for the sources'
    /// bursts to be spent, so the window shows the steady state.
    pub warmup: f64,
}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            key: "one_source",
            name: "1 source over its limit",
            base: ONE_SOURCE,
            pool: 1,
            warmup: 0.0,
        },
        Scenario {
            key: "many_sources",
            name: "1,000 sources over their limits",
            base: MANY_BASE,
            pool: MANY as u32,
            // 1,000 bursts of 200 packets (200,000 packets) to spend, while
            // 100,000 packets/s are refilled: at 165,000 frames/s, 3 s.
            warmup: 3.0,
        },
        Scenario {
            key: "spoofed",
            name: "random spoofed sources (10.0.0.0/8)",
            base: SPOOF_BASE,
            pool: SPOOF_POOL,
            // The firewall's new-source budget starts with a burst of
            // 200,000 (its default [flood]): spend it first.
            warmup: 2.0,
        },
        Scenario {
            key: "blocklisted",
            name: "1 blocklisted source",
            base: LIVE_BLOCKED,
            pool: 1,
            warmup: 0.0,
        },
    ]
}

/// The template frame: 60 bytes, UDP checksum 0 (the generator may change
/// the source address; the IPv4 header checksum it recomputes).
pub fn template(src: Ipv4Addr) -> Vec<u8> {
    let mut f = Frame::ip(IpAddr::V4(src), IpAddr::V4(GW_IP))
        .macs(GW_MAC, GEN_MAC)
        .udp(40000, 9, 18)
        .build();
    assert_eq!(f.len(), 60);
    f[14 + 20 + 6] = 0;
    f[14 + 20 + 7] = 0;
    f
}

/// A loaded generator program with its frame.
pub struct Generator {
    pub prog: Arc<OwnedFd>,
    pub frame: Arc<Vec<u8>>,
    pub warmup: f64,
}

impl Generator {
    pub fn new(base: Ipv4Addr, pool: u32, warmup: f64) -> Result<Generator> {
        Ok(Generator {
            prog: Arc::new(sys::load_generator(u32::from(base), pool)?),
            frame: Arc::new(template(base)),
            warmup,
        })
    }
}

/// A running generator; stops (and is joined) on drop.
struct Running {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<u64>>>,
}

impl Running {
    fn start(topo: &Topo, gen: &Generator, cpu: usize, limit: Duration) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, prog, frame) = (stop.clone(), gen.prog.clone(), gen.frame.clone());
        let ns = testkit::netns_path(&topo.gen_ns);
        let ifindex = topo.gen_ifindex;
        let handle = std::thread::spawn(move || {
            testkit::in_netns(&ns, move || -> Result<u64> {
                sys::pin_thread(cpu);
                let ctx = sys::xdp_md(frame.len(), ifindex);
                let deadline = Instant::now() + limit;
                let mut frames = 0u64;
                // Bounded by the deadline and by `stop`.
                while !s.load(Ordering::Relaxed) && !sys::interrupted() && Instant::now() < deadline
                {
                    sys::test_run(
                        prog.as_fd(),
                        &frame,
                        CHUNK,
                        Some(&ctx),
                        sys::BPF_F_TEST_XDP_LIVE_FRAMES,
                        BATCH,
                    )
                    .context("live-frames BPF_PROG_TEST_RUN")?;
                    frames += CHUNK as u64;
                }
                Ok(frames)
            })
        });
        Running {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => anyhow::bail!("the generator thread panicked"),
            None => Ok(0),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One measured window.
#[derive(Clone, Debug)]
pub struct Window {
    pub seconds: f64,
    /// Frames processed at the gateway per second.
    pub rx_pps: f64,
    /// Of those, reached the gateway's UDP layer (passed every filter).
    pub passed_pps: f64,
    pub dropped_pps: f64,
    /// What the generator offered, and the share the gateway's ring refused.
    pub offered_pps: f64,
    pub refused_share: f64,
    /// Busy share of the gateway CPU (any task).
    pub gw_cpu_busy: f64,
    /// Share of the window the gateway's NAPI thread was on a CPU.
    pub napi_busy: f64,
    /// NAPI-thread CPU time per processed frame, and the rate one fully
    /// busy gateway core would process at that cost.
    pub ns_per_frame: f64,
    pub capacity_pps: f64,
}

fn window(a: &Snapshot, b: &Snapshot) -> Window {
    let dt = (b.at - a.at).as_secs_f64().max(1e-9);
    let rx = (b.rx - a.rx) as f64;
    let passed = (b.udp_in - a.udp_in) as f64;
    let sent = (b.sent - a.sent) as f64;
    let refused = (b.send_errors - a.send_errors) as f64;
    let ticks = (b.cpu_total - a.cpu_total).max(1) as f64;
    Window {
        seconds: dt,
        rx_pps: rx / dt,
        passed_pps: passed / dt,
        dropped_pps: (rx - passed).max(0.0) / dt,
        offered_pps: (sent + refused) / dt,
        refused_share: if sent + refused > 0.0 {
            refused / (sent + refused)
        } else {
            0.0
        },
        gw_cpu_busy: (b.cpu_busy - a.cpu_busy) as f64 / ticks,
        napi_busy: (b.napi_ns - a.napi_ns) as f64 / 1e9 / dt,
        ns_per_frame: (b.napi_ns - a.napi_ns) as f64 / rx.max(1.0),
        capacity_pps: if b.napi_ns > a.napi_ns {
            rx / ((b.napi_ns - a.napi_ns) as f64 / 1e9)
        } else {
            0.0
        },
    }
}

/// Runs the generator for warm-up + `secs`, measuring the last `secs`.
pub fn measure(topo: &Topo, gen: &Generator, cfg: &Cfg, secs: f64) -> Result<Window> {
    if sys::interrupted() {
        anyhow::bail!("interrupted");
    }
    topo.pin_napi()?;
    let warmup = cfg.warmup.max(gen.warmup);
    let limit = Duration::from_secs_f64(warmup + secs + 10.0);
    let run = Running::start(topo, gen, cfg.gen_cpu, limit);
    std::thread::sleep(Duration::from_secs_f64(warmup));
    let a = topo.snapshot()?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let b = topo.snapshot()?;
    let frames = run.finish()?;
    if frames == 0 {
        anyhow::bail!("the generator sent nothing");
    }
    Ok(window(&a, &b))
}

/// In-program ns per packet of `ids` (and of the generator) over a short
/// run with BPF run-time statistics on.
pub fn profile(topo: &Topo, gen: &Generator, cfg: &Cfg, ids: &[u32]) -> Result<Value> {
    let gen_id = sys::fdinfo_u64(gen.prog.as_fd(), "prog_id").unwrap_or(0) as u32;
    let mut want: Vec<u32> = ids.to_vec();
    want.push(gen_id);
    let read = || -> HashMap<u32, (String, u64, u64)> {
        aya::programs::loaded_programs()
            .filter_map(|p| p.ok())
            .filter(|p| want.contains(&p.id()))
            .map(|p| {
                (
                    p.id(),
                    (
                        p.name_as_str().unwrap_or("?").to_string(),
                        p.run_time().as_nanos() as u64,
                        p.run_count(),
                    ),
                )
            })
            .collect()
    };
    // Pass 1: perf of the gateway thread. perf takes a moment to start:
    // begin a little before the window.
    let perf = Perf::start(
        topo.napi_tid(),
        topo.gw_cpu,
        (cfg.warmup.max(gen.warmup) - 0.4).max(0.0),
        cfg.profile_secs + 0.3,
    );
    measure(topo, gen, cfg, cfg.profile_secs)?;
    let hot = perf.map(|p| p.finish()).unwrap_or_default();
    // Pass 2: BPF run-time statistics (they add two clock reads per
    // program run, hence a pass of their own).
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let before = read();
    let w = measure(topo, gen, cfg, cfg.profile_secs)?;
    let after = read();
    drop(stats);
    let mut progs = Vec::new();
    for (id, (name, t1, c1)) in &after {
        let (t0, c0) = before.get(id).map(|(_, t, c)| (*t, *c)).unwrap_or((0, 0));
        if c1 > &c0 {
            progs.push(json!({
                "id": id, "name": name,
                "role": if *id == gen_id { "generator" } else { "contender" },
                "runs": c1 - c0,
                "ns_per_run": (t1 - t0) as f64 / (c1 - c0) as f64,
            }));
        }
    }
    Ok(json!({
        "capacity_pps_with_stats": w.capacity_pps, "ns_per_frame_with_stats": w.ns_per_frame,
        "programs": progs, "napi_thread_hot_symbols": hot,
    }))
}

/// The XDP program ids attached to the gateway by a firewall daemon.
pub fn program_ids_of(topo: &Topo, _d: &testkit::FirewallDaemon) -> Vec<u32> {
    contenders::attached_xdp_ids(topo)
}

fn window_json(w: &Window) -> Value {
    json!({
        "seconds": w.seconds, "rx_pps": w.rx_pps, "passed_pps": w.passed_pps,
        "dropped_pps": w.dropped_pps, "offered_pps": w.offered_pps,
        "refused_share": w.refused_share, "gw_cpu_busy": w.gw_cpu_busy,
        "napi_busy": w.napi_busy, "ns_per_frame": w.ns_per_frame,
        "capacity_pps": w.capacity_pps,
    })
}

/// Median window (by processed rate) of `reps` windows, with all of them.
pub fn measure_reps(topo: &Topo, gen: &Generator, cfg: &Cfg) -> Result<Value> {
    let mut ws = Vec::new();
    for _ in 0..cfg.live_reps {
        ws.push(measure(topo, gen, cfg, cfg.live_secs)?);
    }
    ws.sort_by(|a, b| a.rx_pps.total_cmp(&b.rx_pps));
    let mid = ws[ws.len() / 2].clone();
    let mut v = window_json(&mid);
    v["reps"] = json!(ws.iter().map(window_json).collect::<Vec<_>>());
    v["rx_pps_median"] = json!(median(&ws.iter().map(|w| w.rx_pps).collect::<Vec<_>>()));
    Ok(v)
}

pub fn run(cfg: &Cfg) -> Result<Value> {
    let topo = Topo::new(cfg.gw_cpu)?;
    let scen = scenarios();
    let gens: Vec<Generator> = scen
        .iter()
        .map(|s| Generator::new(s.base, s.pool, s.warmup))
        .collect::<Result<_>>()
        .context("loading the generator programs")?;

    // Without any contender: what the gateway's stack does alone.
    let mut results = Vec::new();
    let mut contenders_out = Vec::new();
    {
        eprintln!("bench: live: no filter");
        let w = measure_reps(&topo, &gens[0], cfg)?;
        results.push(json!({"contender": "none", "scenario": scen[0].key, "result": w}));
    }
    // Development aid: BENCH_CONTENDERS=key,key limits the contenders.
    let only: Option<Vec<String>> = std::env::var("BENCH_CONTENDERS")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    for kind in Kind::ALL {
        let mut profiled = false;
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|k| k == kind.key()))
        {
            continue;
        }
        eprintln!("bench: live: {}", kind.key());
        let inst: Installed = match contenders::install(kind, &topo) {
            Ok(i) => i,
            // Our own firewall must work; another tool that cannot be set
            // up here is reported as not measured.
            Err(e) if !matches!(kind, Kind::FwXdp | Kind::FwTc) => {
                eprintln!("bench: warning: {} not measured: {e:#}", kind.key());
                contenders_out.push(json!({
                    "key": kind.key(), "name": kind.name(),
                    "error": format!("{e:#}"),
                }));
                continue;
            }
            Err(e) => return Err(e.context(format!("installing {}", kind.key()))),
        };
        contenders_out.push(json!({
            "key": kind.key(), "name": kind.name(), "config": inst.config,
            "prog_ids": inst.prog_ids,
        }));
        for (s, g) in scen.iter().zip(&gens) {
            if !kind.applies(s.key) {
                continue;
            }
            eprintln!("bench: live: {} / {}", kind.key(), s.key);
            let mut w = measure_reps(&topo, g, cfg)?;
            // A profile pass per scenario (quick: the first one only).
            let skip_profile = cfg.quick && profiled;
            if !inst.prog_ids.is_empty() && !skip_profile {
                profiled = true;
                w["profile"] = profile(&topo, g, cfg, &inst.prog_ids)
                    .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
            }
            results.push(json!({"contender": kind.key(), "scenario": s.key, "result": w}));
        }
        drop(inst);
        let left = contenders::attached_xdp_ids(&topo);
        if !left.is_empty() {
            anyhow::bail!("{} left XDP programs {left:?} attached", kind.key());
        }
    }
    Ok(json!({
        "frame_bytes": 60,
        "batch": BATCH,
        "chunk": CHUNK,
        "seconds": cfg.live_secs,
        "warmup": cfg.warmup,
        "reps": cfg.live_reps,
        "gen_cpu": cfg.gen_cpu,
        "gw_cpu": cfg.gw_cpu,
        "scenarios": scen.iter().map(|s| json!({"key": s.key, "name": s.name, "base": s.base.to_string(), "pool": s.pool, "warmup": s.warmup})).collect::<Vec<_>>(),
        "contenders": contenders_out,
        "results": results,
    }))
}
