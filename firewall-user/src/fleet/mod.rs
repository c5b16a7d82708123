//! `[fleet]`: blocklist entries shared by every gateway through a NATS
//! JetStream key-value bucket (docs/fleet.md).
//!
//! The controller starts a [`Fleet`] when the policy has a `[fleet]`
//! section and tells it about its auto-bans; the rest (manual entries made
//! by the CLI, deletes, expiries) the worker finds in the pinned maps. The
//! worker runs on its own thread: the controller only ever hands it a
//! message, and the data plane does not know it exists.

pub mod codec;
pub mod local;
pub mod outbox;
pub mod status;
pub mod worker;

use std::{
    path::Path,
    sync::{atomic::Ordering, Arc},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;
use ipnet::IpNet;
use tokio::sync::{mpsc, watch};

use crate::{daemon::events::EventLog, policy::fleet::Fleet as Config};
pub use status::Stats;
use worker::{Ban, Worker};

pub struct Fleet {
    config: Config,
    bans: mpsc::UnboundedSender<Ban>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Fleet {
    pub fn start(
        config: Config,
        pin_dir: &Path,
        log: Arc<EventLog>,
        stats: Arc<Stats>,
    ) -> Result<Fleet> {
        let worker = Worker::new(config.clone(), pin_dir.to_path_buf(), log, stats.clone())?;
        let (bans, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        stats.enabled.store(true, Ordering::Relaxed);
        let thread = std::thread::Builder::new()
            .name("fleet".into())
            .spawn(move || rt.block_on(worker.run(rx, stopped)))?;
        Ok(Fleet {
            config,
            bans,
            stop,
            thread: Some(thread),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A local auto-ban was just made: publish it now.
    pub fn banned(&self, net: IpNet, reason: String) {
        // The worker's end goes only when it stops; then nothing is lost
        // either, the next controller's scan finds the ban in the maps.
        let _ = self.bans.send(Ban {
            net,
            reason,
            at: SystemTime::now(),
        });
    }

    /// Stop the worker (it saves the outbox); waits a little, never for the bus.
    pub fn stop(mut self, stats: &Stats) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(3);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        stats.enabled.store(false, Ordering::Relaxed);
        stats.connected.store(false, Ordering::Relaxed);
    }
}

/// Bring the running worker in line with the policy's `[fleet]`: start,
/// stop, or restart it when the section changed (on start and reloads).
pub fn sync(
    running: &mut Option<Fleet>,
    wanted: Option<&Config>,
    pin_dir: &Path,
    log: &Arc<EventLog>,
    stats: &Arc<Stats>,
) {
    if running.as_ref().map(Fleet::config) == wanted {
        return;
    }
    if let Some(f) = running.take() {
        f.stop(stats);
        if wanted.is_none() {
            // `fleet status` should not show a worker that is gone for good.
            let _ = std::fs::remove_file(status::path(pin_dir));
        }
    }
    if let Some(cfg) = wanted {
        match Fleet::start(cfg.clone(), pin_dir, log.clone(), stats.clone()) {
            Ok(f) => *running = Some(f),
            Err(e) => eprintln!("error: fleet: cannot start: {e:#}; entries are not shared"),
        }
    }
}
