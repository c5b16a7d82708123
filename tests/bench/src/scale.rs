//! Scale: bulk import, reload of a large policy, and the spoofed flood
//! against a per-source table pre-filled to 10 %, 100 % and 1000 % of its
//! capacity. (Memory per tracked source is read in [`super::micro`], from
//! the loaded object's map.)

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

use firewall_common::{class, maps::SOURCES_CAPACITY, short_generation, SourceKey4, SourceState};
use firewall_user::control::Control;

use super::contenders::TempDir;
use super::live::{self, Generator, SPOOF_BASE};
use super::policy as pol;
use super::topo::Topo;
use super::{median, Cfg};
use testkit::FirewallDaemon;

fn start(topo: &Topo, config: &std::path::Path) -> Result<FirewallDaemon> {
    let c = config.display().to_string();
    FirewallDaemon::try_start(&topo.gw_ns, &["--iface", &topo.gw_if, "--config", &c])
}

pub fn run(cfg: &Cfg) -> Result<Value> {
    let topo = Topo::new(cfg.gw_cpu)?;
    let tmp = TempDir::new("scale")?;
    let live_policy = tmp.0.join("live.toml");
    std::fs::write(&live_policy, pol::live())?;
    let scale_policy = tmp.0.join("scale.toml");
    std::fs::write(&scale_policy, pol::scale())?;

    // Import of 100,000 entries into a running firewall.
    eprintln!("bench: scale: import");
    let n_import = 100_000;
    let list = tmp.0.join("drop.txt");
    std::fs::write(&list, pol::import_file(n_import, 0))?;
    let list_s = list.display().to_string();
    let mut import_s = Vec::new();
    let mut import_out = String::new();
    for _ in 0..cfg.scale_reps {
        let d = start(&topo, &live_policy)?;
        let t = Instant::now();
        let o = d.cli(&["block", "import", &list_s]);
        let secs = t.elapsed().as_secs_f64();
        if !o.status.success() {
            bail!(
                "firewall block import failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        import_out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let listed = d.cli(&["block", "list", "--json"]);
        let n = count_entries(&String::from_utf8_lossy(&listed.stdout));
        if n < n_import {
            bail!("after importing {n_import} entries, block list shows {n}");
        }
        import_s.push(secs);
    }

    // Reload (SIGHUP) of a policy with 10,000 block entries, replacing
    // another 10,000.
    eprintln!("bench: scale: reload");
    let n_reload = 10_000;
    let file = tmp.0.join("reload.toml");
    std::fs::write(&file, pol::reload(n_reload, 0))?;
    let mut reload_s = Vec::new();
    {
        let mut d = start(&topo, &file)?;
        for rep in 0..cfg.scale_reps.max(3) {
            let salt = (rep as u32 + 1) * 20_000;
            std::fs::write(&file, pol::reload(n_reload, salt))?;
            let seen = reloads(&d);
            let t = Instant::now();
            d.signal(libc::SIGHUP)?;
            let ev = wait_reload(&d, seen, Duration::from_secs(60))?;
            let secs = t.elapsed().as_secs_f64();
            if ev["result"] != "ok" {
                bail!("reload failed: {ev}");
            }
            reload_s.push(secs);
        }
    }

    // `firewall check` of a file with 100,000 allow and 100,000 block
    // entries: what a reload parses before it applies anything.
    eprintln!("bench: scale: check of a large policy file");
    let n_check = 100_000;
    let large = tmp.0.join("large.toml");
    std::fs::write(&large, pol::large_lists(n_check))?;
    let mut check_s = Vec::new();
    for _ in 0..cfg.scale_reps.max(3) {
        let t = Instant::now();
        let o = std::process::Command::new(testkit::firewall_bin())
            .arg("check")
            .arg(&large)
            .output()?;
        check_s.push(t.elapsed().as_secs_f64());
        if !o.status.success() {
            bail!(
                "firewall check failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }

    // `/metrics` with a million tracked sources: the count is kept by a
    // background walk, so a scrape must not grow with the table.
    eprintln!("bench: scale: /metrics with many tracked sources");
    let n_metrics: u32 = if cfg.quick { 100_000 } else { 1_000_000 };
    let big = tmp.0.join("big.toml");
    std::fs::write(
        &big,
        format!(
            "{}\n[table]\nmax_sources = {}\n",
            pol::scale(),
            n_metrics.next_power_of_two()
        ),
    )?;
    let metrics = {
        let d = start(&topo, &big)?;
        let t = Instant::now();
        let inserted = fill_batched(&d, n_metrics)?;
        let fill_s = t.elapsed().as_secs_f64();
        // The background count catches up within its period.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut tracked = 0.0;
        while Instant::now() < deadline {
            let m = testkit::e2e::scrape(&format!("/run/netns/{}", topo.gw_ns), 9477);
            tracked = testkit::e2e::sample(&m, "firewall_tracked_sources").unwrap_or(0.0);
            if tracked >= n_metrics as f64 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut scrape_ms = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let m = testkit::e2e::scrape(&format!("/run/netns/{}", topo.gw_ns), 9477);
            scrape_ms.push(t.elapsed().as_secs_f64() * 1e3);
            if testkit::e2e::sample(&m, "firewall_tracked_sources").is_none() {
                bail!("/metrics has no firewall_tracked_sources");
            }
        }
        json!({
            "tracked_sources": n_metrics, "inserted": inserted, "fill_seconds": fill_s,
            "tracked_reported": tracked, "scrape_ms": scrape_ms,
            "median_scrape_ms": median(&scrape_ms),
        })
    };

    // The spoofed flood with the table pre-filled.
    let mut prefill = Vec::new();
    for pct in [10u64, 100, 1000] {
        eprintln!("bench: scale: spoofed flood, table at {pct} %");
        let pool = (SOURCES_CAPACITY as u64 * pct / 100) as u32;
        let d = start(&topo, &scale_policy)?;
        let (inserted, present) = fill(&d, pool.min(SOURCES_CAPACITY))?;
        let gen = Generator::new(SPOOF_BASE, pool, 2.0)?;
        let before = stats(&d);
        let mut w = live::measure_reps(&topo, &gen, cfg)?;
        let after = stats(&d);
        if pct == 1000 {
            let ids = live::program_ids_of(&topo, &d);
            w["profile"] = live::profile(&topo, &gen, cfg, &ids)
                .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
        }
        let entries_after = Control::open(d.pin_dir())?.count_sources()?;
        prefill.push(json!({
            "percent": pct, "pool": pool, "prefilled": inserted,
            "entries_before": present, "entries_after": entries_after,
            "result": w, "verdicts_delta": delta(&before, &after),
        }));
    }

    Ok(json!({
        "import": {
            "entries": n_import, "seconds": import_s, "median_seconds": median(&import_s),
            "output": import_out,
        },
        "reload": {
            "entries": n_reload, "seconds": reload_s, "median_seconds": median(&reload_s),
        },
        "check": {
            "entries_per_list": n_check, "seconds": check_s, "median_seconds": median(&check_s),
        },
        "prefill": prefill,
        "metrics": metrics,
        "prefill_policy": pol::scale(),
        "capacity": SOURCES_CAPACITY,
    }))
}

fn count_entries(json_text: &str) -> usize {
    let v: Value = serde_json::from_str(json_text).unwrap_or(Value::Null);
    match &v {
        Value::Array(a) => a.len(),
        Value::Object(m) => m
            .values()
            .filter_map(|x| x.as_array())
            .map(|a| a.len())
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}

fn reloads(d: &FirewallDaemon) -> usize {
    d.events()
        .iter()
        .filter(|e| e["event"] == "reload" && e["reason"] == "SIGHUP")
        .count()
}

/// Waits (polling every 2 ms) for SIGHUP reload event number `seen + 1`.
fn wait_reload(d: &FirewallDaemon, seen: usize, timeout: Duration) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let evs: Vec<Value> = d
            .events()
            .into_iter()
            .filter(|e| e["event"] == "reload" && e["reason"] == "SIGHUP")
            .collect();
        if evs.len() > seen {
            return Ok(evs[seen].clone());
        }
        if Instant::now() >= deadline {
            bail!("no reload event within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Pre-fills the per-source table with `n` sources of the spoofed pool
/// (10.0.0.0 + i), each with an empty bucket under the current limit, as
/// if it had been flooding already. Returns (inserted, entries present).
fn fill(d: &FirewallDaemon, n: u32) -> Result<(u32, usize)> {
    let control = Control::open(d.pin_dir())?;
    let cfg = control.config()?;
    // The table the program fills with traffic, written directly: a
    // gateway's state, not a control-plane change.
    let mut sources: aya::maps::HashMap<_, SourceKey4, SourceState> =
        aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(
            d.pin_dir().join(firewall_common::maps::SOURCES_V4),
        )?)?
        .try_into()?;
    let now = firewall_user::clock::mono_ns();
    let base = u32::from(SPOOF_BASE);
    let mut inserted = 0;
    // An empty bucket: full again one bucket depth from now.
    let l = cfg.default_limit;
    let tat = (now << firewall_common::bucket::GCRA_SHIFT) + l.gcra_tau() + l.gcra_t();
    for i in 0..n {
        let key = SourceKey4 {
            addr: (base + i).to_be_bytes(),
            rule: 0,
            _pad: [0; 3],
        };
        let st = SourceState {
            tat,
            packets: 1,
            generation: short_generation(cfg.generation),
            class_slot: SourceState::pack(class::LIMITED, 0),
            ..Default::default()
        };
        sources
            .insert(key, st, 0)
            .context("pre-filling the per-source table")?;
        inserted += 1;
    }
    let present = control.count_sources()?;
    Ok((inserted, present))
}

/// Fills the IPv4 table with `n` tracked sources (10.0.0.0 + i) with
/// batched updates: as the table of a gateway that has seen them.
fn fill_batched(d: &FirewallDaemon, n: u32) -> Result<u32> {
    let cfg = Control::open(d.pin_dir())?.config()?;
    let st = SourceState {
        packets: 1,
        generation: short_generation(cfg.generation),
        class_slot: SourceState::pack(class::LIMITED, 0),
        ..Default::default()
    };
    let data = aya::maps::MapData::from_pin(d.pin_dir().join(firewall_common::maps::SOURCES_V4))?;
    let base = u32::from(SPOOF_BASE);
    let value = pod(&st);
    let mut done = 0;
    for chunk_start in (0..n).step_by(50_000) {
        let end = (chunk_start + 50_000).min(n);
        let mut keys = Vec::with_capacity((end - chunk_start) as usize * 8);
        let mut vals = Vec::with_capacity((end - chunk_start) as usize * value.len());
        for i in chunk_start..end {
            keys.extend_from_slice(&(base + i).to_be_bytes());
            keys.extend_from_slice(&[0; 4]);
            vals.extend_from_slice(&value);
        }
        firewall_user::bpf_sys::batch::update(&data, &keys, &vals, (end - chunk_start) as usize)
            .context("batch-filling the per-source table")?;
        done = end;
    }
    Ok(done)
}

/// The bytes of a per-source value as the kernel stores it.
fn pod(st: &SourceState) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&st.tat.to_ne_bytes());
    v.extend_from_slice(&st.drop_tat.to_ne_bytes());
    v.extend_from_slice(&st.packets.to_ne_bytes());
    v.extend_from_slice(&st.drops.to_ne_bytes());
    v.extend_from_slice(&st.generation.to_ne_bytes());
    v.extend_from_slice(&st.class_slot.to_ne_bytes());
    assert_eq!(v.len(), std::mem::size_of::<SourceState>());
    v
}

fn stats(d: &FirewallDaemon) -> Value {
    let o = d.cli(&["stats", "--json"]);
    serde_json::from_str(&String::from_utf8_lossy(&o.stdout)).unwrap_or(Value::Null)
}

fn delta(a: &Value, b: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(m) = b["verdicts"].as_object() {
        for (k, v) in m {
            let p1 = v["packets"].as_u64().unwrap_or(0);
            let p0 = a["verdicts"][k]["packets"].as_u64().unwrap_or(0);
            out.insert(k.clone(), json!(p1.saturating_sub(p0)));
        }
    }
    Value::Object(out)
}
