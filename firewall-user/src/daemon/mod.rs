//! `firewall run`: attach, apply the policy, then keep it: reloads, expiry,
//! auto-bans, events and metrics. The data plane never depends on this
//! process: on exit everything stays pinned and enforcing.

pub mod autoban;
pub mod events;
pub mod metrics;
pub mod notify;

use std::{
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use aya::maps::{Map, MapData, RingBuf};
use firewall_common::{event, maps as names, Event, Verdict};
use serde_json::json;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{
    addr::{addr_of, key_net},
    cli::RunArgs,
    clock::{mono_ns, rfc3339},
    control::{Control, List, Origin},
    error::bad,
    fleet, loader,
    policy::{self, Policy},
    state::{self, DaemonState},
};
use events::EventLog;
use metrics::DaemonCounters;

/// Load and validate the policy file: problems are bad input.
pub fn load_policy(path: &Path) -> Result<(Policy, Vec<policy::Problem>)> {
    match policy::load(path) {
        Err(e) => Err(bad(format!("cannot read policy {}: {e:#}", path.display()))),
        Ok(Err(problems)) => Err(bad(format!(
            "{} is not a valid policy:\n{}",
            path.display(),
            problems
                .iter()
                .map(|p| format!("  {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        ))),
        Ok(Ok(p)) => Ok(p),
    }
}

/// The workers a policy section starts: a field of its own so that a
/// reload can sync them while it holds the control layer's writer.
struct Workers {
    /// The CrowdSec worker, while `[crowdsec]` is in force.
    crowdsec: Option<crate::crowdsec::Handle>,
    /// The `[fleet]` worker, while the policy has that section.
    fleet: Option<fleet::Fleet>,
    fleet_stats: Arc<fleet::Stats>,
}

impl Workers {
    /// Start, restart or stop each worker as `policy` asks.
    fn sync(
        &mut self,
        policy: &Policy,
        pin_dir: &Path,
        log: &Arc<EventLog>,
        counters: &Arc<DaemonCounters>,
    ) {
        crate::crowdsec::sync(
            &mut self.crowdsec,
            policy.crowdsec.as_ref(),
            pin_dir,
            log,
            counters,
        );
        fleet::sync(
            &mut self.fleet,
            policy.fleet.as_ref(),
            pin_dir,
            log,
            &self.fleet_stats,
        );
    }

    fn stop(&mut self) {
        if let Some(h) = self.crowdsec.take() {
            h.stop();
        }
        if let Some(f) = self.fleet.take() {
            f.stop(&self.fleet_stats);
        }
    }
}

struct Daemon {
    pin_dir: PathBuf,
    args: RunArgs,
    control: Control,
    log: Arc<EventLog>,
    counters: Arc<DaemonCounters>,
    policy: Policy,
    file_stamp: Option<(SystemTime, u64)>,
    strikes: autoban::Strikes,
    state: DaemonState,
    /// Interfaces attached under the pin directory, to report detaches.
    attached: Vec<loader::Attachment>,
    /// The CrowdSec and fleet workers the policy asks for.
    workers: Workers,
    /// When the SYN challenge's key is next rotated.
    rotation: crate::challenge::Rotation,
    /// The `[table]` sizes the data plane was loaded with: a reload cannot
    /// resize the maps, so other sizes wait for the next start.
    table: crate::policy::Table,
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

pub async fn run(pin_dir: &Path, args: RunArgs) -> Result<()> {
    let (mut policy, warnings) = match &args.config {
        Some(p) => load_policy(p)?,
        None => (Policy::default(), Vec::new()),
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if args.monitor {
        policy.defaults.monitor = true;
    }
    if let Some(other) = state::read(pin_dir) {
        if other.pid != std::process::id() && state::alive(other.pid) {
            return Err(bad(format!(
                "another `firewall run` (pid {}) already manages {}; stop it first (the data plane stays attached)",
                other.pid,
                pin_dir.display()
            )));
        }
    }
    // Bind first: a taken port is reported before anything is attached.
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| {
            bad(format!(
                "cannot listen on --metrics-addr {}: {e}",
                args.metrics_addr
            ))
        })?;
    let log = Arc::new(EventLog::new(args.log_file.as_deref())?);
    loader::ensure_bpffs(pin_dir)?;
    let loader::Loaded {
        mut ebpf,
        migration,
        tick,
    } = loader::load(pin_dir, &policy.table)?;
    let mut control = Control::open(pin_dir)?;
    // The policy goes in before any new attachment, so no packet on a newly
    // attached interface meets an empty policy.
    {
        let mut w = control.write()?;
        if !migration.is_empty() {
            for line in &migration.not_migrated {
                eprintln!("warning: not migrated: {line}");
            }
            w.repair_prefix_lens()?;
            log.emit("migrate", json!(migration));
        }
        let moved = w.move_hosts_out_of_tries()?;
        if moved > 0 {
            log.emit("migrate", json!({"hosts_moved_to_hash": moved}));
        }
        w.set_tick(tick)?;
        w.rotate_challenge_key()?;
        w.apply(&policy).context("applying the policy")?;
    }
    if args.mode == loader::Mode::Tc && policy.syn_challenge.enabled {
        eprintln!(
            "warning: [flood] syn_challenge needs XDP: in tc mode no SYN is challenged, and SYNs \
             beyond the new-source budget are dropped as rate_limited"
        );
    }
    for iface in &args.ifaces {
        let a = loader::attach(&mut ebpf, pin_dir, iface, args.mode)?;
        if a.fell_back {
            eprintln!("warning: {iface} has no native XDP support; attached in generic (skb) mode");
        }
        log.emit(
            "attach",
            json!({"iface": iface, "mode": a.mode.name(), "replaced": a.replaced, "fallback": a.fell_back}),
        );
    }
    let counters = Arc::new(DaemonCounters::default());
    metrics::count_tracked(pin_dir.to_path_buf(), counters.clone());
    counters.reloads_ok.fetch_add(1, Ordering::Relaxed);
    let fleet_stats = Arc::new(fleet::Stats::default());
    let mut registry = metrics::registry(pin_dir.to_path_buf(), counters.clone());
    fleet_stats.register(&mut registry);
    let registry = Arc::new(registry);
    let server = tokio::spawn(metrics::serve(listener, registry));
    let st = DaemonState {
        pid: std::process::id(),
        config: args
            .config
            .as_ref()
            .map(|c| std::fs::canonicalize(c).unwrap_or(c.clone())),
        started: rfc3339(SystemTime::now()),
        metrics_addr: args.metrics_addr.to_string(),
        last_reload: None,
        last_reload_ok: true,
    };
    state::write(pin_dir, &st).context("writing controller state")?;
    let cfg = control.config()?;
    log.emit(
        "start",
        json!({
            "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id(),
            "ifaces": args.ifaces, "mode": args.mode.name(), "pin_dir": pin_dir,
            "config": args.config, "generation": cfg.generation,
            "enforcement": if policy.defaults.monitor { "monitor" } else { "enforce" },
            "metrics_addr": args.metrics_addr.to_string(),
            "clock": tick.describe(),
            "table": policy.table,
        }),
    );
    notify::ready(&args.ifaces, policy.defaults.monitor, cfg.generation);
    let table = policy.table;
    let mut d = Daemon {
        pin_dir: pin_dir.to_path_buf(),
        file_stamp: args.config.as_deref().and_then(stamp),
        args,
        control,
        log,
        counters,
        policy,
        strikes: autoban::Strikes::default(),
        state: st,
        attached: loader::attachments(pin_dir)?,
        workers: Workers {
            crowdsec: None,
            fleet: None,
            fleet_stats,
        },
        rotation: Default::default(),
        table,
    };
    // The program objects are not needed any more: links and maps are pinned.
    drop(ebpf);
    d.workers.sync(&d.policy, &d.pin_dir, &d.log, &d.counters);
    let result = d.main_loop().await;
    d.workers.stop();
    notify::stopping();
    server.abort();
    let data_plane = if d.attached.is_empty() {
        "detached"
    } else {
        "attached"
    };
    d.log.emit(
        "stop",
        json!({"pid": std::process::id(), "data_plane": data_plane}),
    );
    result
}

impl Daemon {
    async fn main_loop(&mut self) -> Result<()> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sighup = signal(SignalKind::hangup())?;
        let ring: RingBuf<MapData> =
            Map::from_map_data(MapData::from_pin(self.pin_dir.join(names::EVENTS))?)?.try_into()?;
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged,
        // for as long as the AsyncFd owns the RingBuf.
        #[allow(unsafe_code)]
        let mut ring =
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(|e| anyhow::anyhow!("polling the event ring buffer: {e}"))?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = sigint.recv() => return Ok(()),
                _ = sigterm.recv() => return Ok(()),
                _ = sighup.recv() => notify::around_reload(|| self.reload("SIGHUP")),
                _ = tick.tick() => {
                    if !self.housekeeping() {
                        return Ok(());
                    }
                }
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    let mut batch = Vec::new();
                    while let Some(item) = guard.get_inner_mut().next() {
                        if item.len() >= std::mem::size_of::<Event>() {
                            // SAFETY: the ring buffer holds `Event`s written by
                            // the program; the length was checked.
                            #[allow(unsafe_code)]
                            batch.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) });
                        }
                    }
                    guard.clear_ready();
                    for ev in batch {
                        self.kernel_event(&ev);
                    }
                }
            }
        }
    }

    /// Periodic work; false once the data plane was detached under us.
    fn housekeeping(&mut self) -> bool {
        let now = loader::attachments(&self.pin_dir).unwrap_or_default();
        for gone in self
            .attached
            .iter()
            .filter(|a| !now.iter().any(|n| n.iface == a.iface))
        {
            self.log.emit(
                "detach",
                json!({"iface": gone.iface, "mode": gone.mode.name()}),
            );
        }
        self.attached = now;
        if self.attached.is_empty() && !self.pin_dir.join(names::CONFIG).exists() {
            eprintln!("the data plane was detached (`firewall detach`); exiting");
            return false;
        }
        if let Some(path) = self.args.config.clone() {
            let now = stamp(&path);
            if now != self.file_stamp {
                self.file_stamp = now;
                self.reload("file changed");
            }
        }
        if let Err(e) = self.expire() {
            eprintln!("error: expiring entries: {e:#}");
        }
        if let Err(e) = self.rotation.tick(&mut self.control) {
            eprintln!("error: rotating the SYN challenge key: {e:#}");
        }
        if let Some(ab) = &self.policy.autoban {
            self.strikes.decay(ab, Instant::now());
        }
        true
    }

    fn reload(&mut self, why: &str) {
        let Some(path) = self.args.config.clone() else {
            self.log.emit(
                "reload",
                json!({"result": "ok", "reason": why, "note": "no policy file; defaults in force"}),
            );
            return;
        };
        self.file_stamp = stamp(&path);
        let mut w = match self.control.write() {
            Ok(w) => w,
            Err(e) => return eprintln!("error: reload: {e:#}"),
        };
        let result = load_policy(&path).and_then(|(mut p, _)| {
            if self.args.monitor {
                p.defaults.monitor = true;
            }
            w.apply(&p)?;
            Ok(p)
        });
        self.state.last_reload = Some(rfc3339(SystemTime::now()));
        match result {
            Ok(p) => {
                self.policy = p;
                // Still under the lock: a worker stopped here writes
                // nothing more (it checks its stop flag once it has the
                // lock).
                self.workers
                    .sync(&self.policy, &self.pin_dir, &self.log, &self.counters);
                self.counters.reloads_ok.fetch_add(1, Ordering::Relaxed);
                self.state.last_reload_ok = true;
                let generation = w.config().map(|c| c.generation).unwrap_or(0);
                let mut ev = json!({"result": "ok", "reason": why, "config": path, "generation": generation});
                if self.policy.table != self.table {
                    eprintln!(
                        "warning: reload: [table] sizes apply at the next start of `firewall run`; in force: max_sources = {}, max_list_entries = {}",
                        self.table.max_sources, self.table.max_list_entries
                    );
                    ev["table_in_force"] = json!(self.table);
                    ev["table_at_next_start"] = json!(self.policy.table);
                }
                self.log.emit("reload", ev);
            }
            Err(e) => {
                self.counters.reloads_error.fetch_add(1, Ordering::Relaxed);
                self.state.last_reload_ok = false;
                let errors: Vec<String> = format!("{e:#}")
                    .lines()
                    .skip(1)
                    .map(|l| l.trim().to_string())
                    .collect();
                eprintln!("error: reload rejected, the policy in force stays: {e:#}");
                self.log.emit(
                    "reload",
                    json!({"result": "error", "reason": why, "config": path, "errors": errors}),
                );
            }
        }
        let _ = state::write(&self.pin_dir, &self.state);
    }

    /// Remove expired blocks and allows (the program already ignores them).
    fn expire(&mut self) -> Result<()> {
        let now = mono_ns();
        // Most ticks have nothing to expire: scan only once the earliest
        // expiry writers noted has passed.
        let next = self.control.config()?.next_expiry_ns;
        if next == 0 || next > now {
            return Ok(());
        }
        for gone in self.control.write()?.expire(now)? {
            let origin = gone.row.origin;
            let name = if origin == Origin::Autoban {
                "unban"
            } else {
                "expire"
            };
            self.log.emit(name, json!({"list": gone.list.name(), "prefix": gone.row.net.to_string(), "origin": origin.name()}));
        }
        Ok(())
    }

    fn kernel_event(&mut self, ev: &Event) {
        let cfg = match self.control.config() {
            Ok(c) => c,
            Err(_) => return,
        };
        let prefix_len = if ev.key.family == 4 {
            cfg.ipv4_prefix
        } else {
            cfg.ipv6_prefix
        };
        let net = key_net(&ev.key, prefix_len);
        let src = addr_of(ev.key.family, &ev.src);
        let verdict = Verdict::ALL
            .get(ev.verdict as usize)
            .map(|v| v.name())
            .unwrap_or("?");
        let rule = (ev.key.rule > 0)
            .then(|| {
                self.control
                    .rule_names()
                    .ok()?
                    .get(ev.key.rule as usize - 1)
                    .cloned()
            })
            .flatten();
        match ev.kind {
            event::FIRST_DROP => {
                let monitor = cfg.flags & firewall_common::flags::MONITOR != 0;
                self.log.emit(
                    "drop",
                    json!({"src": src.to_string(), "prefix": net.to_string(), "verdict": verdict,
                           "rule": rule, "monitor": monitor}),
                );
            }
            event::AUTOBAN => {
                if let Err(e) = self.ban(net, src, rule) {
                    eprintln!("error: banning {net}: {e:#}");
                }
            }
            _ => {}
        }
    }

    fn ban(
        &mut self,
        net: ipnet::IpNet,
        src: std::net::IpAddr,
        rule: Option<String>,
    ) -> Result<()> {
        let Some(ab) = self.policy.autoban.clone() else {
            return Ok(());
        };
        if let Some(e) = self.control.list_entry(List::Block, &net)? {
            if e.origin != Origin::Autoban {
                return Ok(()); // Already blocked for good by hand, file or import.
            }
        }
        let mut w = self.control.write()?;
        let ttl = self.strikes.ban(&ab, net, Instant::now());
        w.add(
            List::Block,
            &[net],
            Origin::Autoban,
            Some(ttl),
            Some("autoban"),
        )?;
        self.counters.bans.fetch_add(1, Ordering::Relaxed);
        let reason = format!(
            "{} rate-limited drops within {}",
            ab.drops,
            humantime::format_duration(ab.window)
        );
        if let Some(cs) = &self.workers.crowdsec {
            cs.ban(crate::crowdsec::Ban {
                net,
                src,
                rule: rule.clone(),
                ttl,
                drops: ab.drops,
                window: ab.window,
                at: SystemTime::now(),
                expires_ns: crate::clock::expiry_after(ttl),
            });
        }
        self.log.emit(
            "ban",
            json!({"src": src.to_string(), "prefix": net.to_string(), "rule": rule,
                   "ttl": humantime::format_duration(ttl).to_string(), "ttl_secs": ttl.as_secs(),
                   "reason": reason}),
        );
        if let Some(f) = &self.workers.fleet {
            f.banned(net, reason);
        }
        Ok(())
    }
}
