//! CrowdSec: an XDP bouncer (decisions from the local API into the
//! blocklist, origin `crowdsec`) and a watcher (our auto-bans out as
//! alerts). See docs/crowdsec.md.
//!
//! - `config`: `[crowdsec]` and its secret files
//! - `duration`: Go duration strings, as decisions carry them
//! - `decision`: the stream's shape and what we accept from it
//! - `api`: the HTTP calls
//! - `bouncer`: decisions into the maps, in batches
//! - `watcher`: auto-bans into alerts, the bounded outbox
//! - `worker`: the loop on its own thread (poll, backoff, events)
//! - `status`: counters, the status file, `firewall crowdsec status`

pub mod api;
pub mod bouncer;
pub mod config;
pub mod decision;
pub mod duration;
pub mod status;
pub mod watcher;
pub mod worker;

use std::{
    path::Path,
    sync::{atomic::AtomicBool, mpsc, Arc},
};

pub use config::Config;
pub use watcher::Ban;

use crate::daemon::{events::EventLog, metrics::DaemonCounters};

/// The running worker, owned by the daemon.
pub struct Handle {
    pub cfg: Config,
    bans: mpsc::Sender<Ban>,
    stop: Arc<AtomicBool>,
}

impl Handle {
    /// Start the worker thread for `cfg`.
    pub fn spawn(
        pin_dir: &Path,
        cfg: Config,
        log: Arc<EventLog>,
        counters: Arc<DaemonCounters>,
    ) -> std::io::Result<Handle> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let w = worker::Worker {
            pin_dir: pin_dir.to_path_buf(),
            cfg: cfg.clone(),
            log,
            counters,
            stop: stop.clone(),
            bans: rx,
        };
        std::thread::Builder::new()
            .name("crowdsec".into())
            .spawn(move || w.run())?;
        Ok(Handle {
            cfg,
            bans: tx,
            stop,
        })
    }

    /// Hand an auto-ban to the watcher (queued; never blocks).
    pub fn ban(&self, b: Ban) {
        if self.cfg.push {
            let _ = self.bans.send(b);
        }
    }

    /// Ask the worker to stop. It does not write the maps after this (it
    /// checks under the write lock); an HTTP call in flight runs out on
    /// its own timeout. Entries of origin `crowdsec` stay until they expire.
    pub fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Start, restart or stop the worker so that it runs `want` (the
/// `[crowdsec]` of the policy in force). Called at start and after each
/// reload; an unchanged section leaves the worker alone.
pub fn sync(
    slot: &mut Option<Handle>,
    want: Option<&Config>,
    pin_dir: &Path,
    log: &Arc<EventLog>,
    counters: &Arc<DaemonCounters>,
) {
    if slot.as_ref().map(|h| &h.cfg) == want {
        return;
    }
    if let Some(old) = slot.take() {
        old.stop();
    }
    let Some(cfg) = want else {
        counters
            .crowdsec
            .enabled
            .store(false, std::sync::atomic::Ordering::Relaxed);
        status::remove(pin_dir);
        log.emit("crowdsec_stop", serde_json::json!({}));
        return;
    };
    match Handle::spawn(pin_dir, cfg.clone(), log.clone(), counters.clone()) {
        Ok(h) => {
            log.emit(
                "crowdsec_start",
                serde_json::json!({
                    "lapi_url": cfg.lapi_url, "poll_secs": cfg.poll.as_secs_f64(),
                    "push": cfg.push, "machine_id": cfg.machine_id,
                }),
            );
            *slot = Some(h);
        }
        Err(e) => eprintln!("error: starting the crowdsec worker: {e}"),
    }
}
