//! The bouncer and watcher loop, on its own thread: pull every `poll`,
//! push pending alerts, back off while the LAPI fails. It only writes the
//! maps (under the shared write lock) when a whole answer has validated;
//! the data plane never waits on it.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use serde_json::json;

use super::{
    api::{Failure, Lapi},
    bouncer::Bouncer,
    config::{read_secret, Config},
    status::{self, Counters, Status},
    watcher::{Ban, Outbox},
};
use crate::{clock::rfc3339, control::Control, daemon::events::EventLog};

/// Longest wait between retries while the LAPI fails.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A full pull this often, whatever happens: the LAPI's deltas can miss a
/// decision committed while a pull reads (see `bouncer`).
const RESYNC_EVERY: Duration = Duration::from_secs(300);
/// After a delta that brought decisions (a burst, maybe still being
/// written), a full pull follows, at most this often.
const SETTLE_EVERY: Duration = Duration::from_secs(30);

pub struct Worker {
    pub pin_dir: PathBuf,
    pub cfg: Config,
    pub log: Arc<EventLog>,
    pub counters: Arc<crate::daemon::metrics::DaemonCounters>,
    pub stop: Arc<AtomicBool>,
    pub bans: Receiver<Ban>,
}

/// Retry delay after `failures` failures in a row: poll, doubled each
/// time, capped.
fn backoff(poll: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(10);
    poll.saturating_mul(factor)
        .clamp(poll, MAX_BACKOFF.max(poll))
}

struct Loop {
    w: Worker,
    lapi: Lapi,
    control: Option<Control>,
    bouncer: Bouncer,
    outbox: Outbox,
    status: Status,
    /// Next pull must be a full one (start, or after anything went wrong:
    /// the LAPI may have moved our delta cursor past an answer we lost).
    startup: bool,
    /// When the next full pull is due anyway, and why.
    resync_at: Instant,
    resync_why: &'static str,
    last_full: Instant,
    pull_failures: u32,
    push_failures: u32,
    next_pull: Instant,
    next_push: Instant,
    token: Option<String>,
}

fn c(w: &Worker) -> &Counters {
    &w.counters.crowdsec
}

impl Worker {
    pub fn run(self) {
        let lapi = Lapi::new(&self.cfg.lapi_url);
        let status = Status {
            pid: std::process::id(),
            lapi_url: self.cfg.lapi_url.clone(),
            poll_secs: self.cfg.poll.as_secs_f64(),
            alerts: status::Alerts {
                push: self.cfg.push,
                machine_id: self.cfg.machine_id.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        c(&self).enabled.store(true, Ordering::Relaxed);
        let now = Instant::now();
        let mut l = Loop {
            w: self,
            lapi,
            control: None,
            bouncer: Bouncer::default(),
            outbox: Outbox::default(),
            status,
            startup: true,
            resync_at: now + RESYNC_EVERY,
            resync_why: "periodic",
            last_full: now,
            pull_failures: 0,
            push_failures: 0,
            next_pull: now,
            next_push: now,
            token: None,
        };
        l.run();
    }
}

impl Loop {
    fn run(&mut self) {
        loop {
            let now = Instant::now();
            let mut due = self.next_pull;
            if self.w.cfg.push && !self.outbox.is_empty() {
                due = due.min(self.next_push);
            }
            match self.w.bans.recv_timeout(due.saturating_duration_since(now)) {
                Ok(b) => self.queue(b),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(b) = self.w.bans.try_recv() {
                self.queue(b);
            }
            if self.w.stop.load(Ordering::Relaxed) {
                return;
            }
            let now = Instant::now();
            if now >= self.next_pull {
                self.pull();
            }
            if self.w.stop.load(Ordering::Relaxed) {
                return;
            }
            if self.w.cfg.push && !self.outbox.is_empty() && Instant::now() >= self.next_push {
                self.push();
            }
            self.publish();
        }
    }

    fn queue(&mut self, b: Ban) {
        if self.w.cfg.push {
            self.outbox.push(b);
        }
    }

    /// Up/down transitions are events; retries in between are not.
    fn reachable(&mut self, up: bool, error: Option<String>) {
        if up != self.status.reachable || (!up && self.status.last_error.is_none()) {
            let mut ev =
                json!({"state": if up { "up" } else { "down" }, "lapi_url": self.w.cfg.lapi_url});
            if let Some(e) = &error {
                ev["error"] = json!(e);
            }
            self.w.log.emit("crowdsec_lapi", ev);
        }
        self.status.reachable = up;
        c(&self.w).lapi_up.store(up, Ordering::Relaxed);
        if let Some(e) = error {
            self.status.last_error = Some(e);
        }
    }

    /// A pull that applied nothing: resync fully, later.
    fn retry_pull(&mut self) {
        self.pull_failures += 1;
        self.startup = true;
        self.status.last_pull_ok = false;
        self.next_pull = Instant::now() + backoff(self.w.cfg.poll, self.pull_failures);
    }

    fn fail_pull(&mut self, why: String) {
        Counters::add(&c(&self.w).errors, 1);
        self.retry_pull();
        self.reachable(false, Some(why));
    }

    fn pull(&mut self) {
        let why = if self.startup {
            if self.status.last_startup_pull.is_none() {
                "start"
            } else {
                "retry"
            }
        } else {
            self.resync_why
        };
        let startup = self.startup || Instant::now() >= self.resync_at;
        self.status.last_pull = Some(rfc3339(SystemTime::now()));
        let key = match read_secret(&self.w.cfg.api_key_file, "api key") {
            Ok(k) => k,
            Err(e) => return self.fail_pull(format!("{e:#}")),
        };
        let answer = self.lapi.stream(&key, startup);
        // Stopped by a reload while the call ran: leave everything to the
        // new worker, not even a "down" event.
        if self.w.stop.load(Ordering::Relaxed) {
            return;
        }
        let stream = match answer {
            Ok(s) => s,
            Err(Failure::Malformed { why, bytes }) => {
                // Reachable, but nothing of this answer is applied.
                Counters::add(&c(&self.w).rejected, 1);
                self.status.rejected_answers += 1;
                self.w.log.emit(
                    "crowdsec_rejected",
                    json!({"reason": why, "bytes": bytes, "startup": startup, "applied": 0}),
                );
                self.retry_pull();
                self.status.last_error = Some(format!("answer rejected: {why}"));
                return;
            }
            Err(e) => return self.fail_pull(e.to_string()),
        };
        let received = Instant::now();
        if self.control.is_none() {
            match Control::open(&self.w.pin_dir) {
                Ok(m) => self.control = Some(m),
                Err(e) => return self.fail_pull(format!("opening the maps: {e:#}")),
            }
        }
        let control = self.control.as_mut().expect("opened above");
        let result = control.write().and_then(|mut w| {
            // A reload may have stopped this worker while it waited.
            if self.w.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            self.bouncer
                .apply(&mut w, stream, startup, &self.outbox)
                .map(Some)
        });
        let out = match result {
            Ok(Some(out)) => out,
            Ok(None) => return,
            Err(e) => {
                self.w.log.emit(
                    "crowdsec_error",
                    json!({"error": format!("applying decisions: {e:#}")}),
                );
                return self.fail_pull(format!("applying decisions: {e:#}"));
            }
        };
        let took = received.elapsed();
        let counters = c(&self.w);
        Counters::add(&counters.applied, out.applied);
        Counters::add(&counters.deleted, out.deleted);
        Counters::add(&counters.skipped, out.skipped_total());
        let d = &mut self.status.decisions;
        d.applied += out.applied;
        d.deleted += out.deleted;
        d.skipped += out.skipped_total();
        for (k, v) in &out.skipped {
            *d.skipped_by_reason.entry(k.name().to_string()).or_default() += v;
        }
        d.active = self.bouncer.active();
        d.shadowed = self.bouncer.shadowed();
        self.status.last_apply_ms = Some(took.as_secs_f64() * 1000.0);
        if startup {
            self.status.last_startup_pull = self.status.last_pull.clone();
        }
        if out.applied + out.deleted > 0 || out.written + out.removed > 0 || startup {
            let mut ev = json!({"startup": startup, "applied": out.applied, "deleted": out.deleted,
                       "skipped": out.skipped_total(), "written": out.written,
                       "removed": out.removed, "active": self.bouncer.active(),
                       "apply_ms": took.as_secs_f64() * 1000.0});
            if startup {
                ev["reason"] = json!(why);
            }
            self.w.log.emit("crowdsec_pull", ev);
        }
        let now = Instant::now();
        if startup {
            self.last_full = now;
            self.resync_at = now + RESYNC_EVERY;
            self.resync_why = "periodic";
        } else if out.gap {
            self.resync_at = now;
            self.resync_why = "gap";
        } else if out.new > 0 {
            let settle = (now + 2 * self.w.cfg.poll).max(self.last_full + SETTLE_EVERY);
            if settle < self.resync_at {
                self.resync_at = settle;
                self.resync_why = "settle";
            }
        }
        let skipped_real: u64 = out
            .skipped
            .iter()
            .filter(|(k, _)| **k != super::decision::Skip::Own)
            .map(|(_, v)| v)
            .sum();
        if skipped_real > 0 {
            let reasons: serde_json::Map<String, serde_json::Value> = out
                .skipped
                .iter()
                .map(|(k, v)| (k.name().to_string(), json!(v)))
                .collect();
            self.w.log.emit(
                "crowdsec_skipped",
                json!({"count": skipped_real, "reasons": reasons, "examples": out.examples}),
            );
        }
        self.startup = false;
        self.pull_failures = 0;
        self.status.last_pull_ok = true;
        self.status.last_error = None;
        self.reachable(true, None);
        self.next_pull = Instant::now() + self.w.cfg.poll;
        self.outbox.prune();
    }

    /// Alerts stay queued; retry later. Only a LAPI that did not answer
    /// counts as down: a refused login (wrong password) is the watcher's
    /// problem, logged once per run of failures, while the bouncer may be
    /// pulling fine.
    fn fail_push(&mut self, failure: Failure) {
        self.push_failures += 1;
        Counters::add(&c(&self.w).errors, 1);
        self.next_push = Instant::now() + backoff(self.w.cfg.poll, self.push_failures);
        let why = failure.to_string();
        match failure {
            Failure::Unreachable(_) => self.reachable(false, Some(why)),
            _ => {
                if self.push_failures == 1 {
                    self.w
                        .log
                        .emit("crowdsec_error", json!({"api": "watcher", "error": why}));
                }
                self.status.last_error = Some(why);
            }
        }
    }

    fn push(&mut self) {
        let machine = self.w.cfg.machine_id.clone().unwrap_or_default();
        // A 401 may mean the token expired (1 h): log in again once.
        for attempt in 0..2 {
            let token = match self.token.clone() {
                Some(t) => t,
                None => {
                    let Some(pw_file) = self.w.cfg.password_file.clone() else {
                        return self
                            .fail_push(Failure::Refused("push = true needs password_file".into()));
                    };
                    let pw = match read_secret(&pw_file, "password") {
                        Ok(p) => p,
                        Err(e) => return self.fail_push(Failure::Refused(format!("{e:#}"))),
                    };
                    match self.lapi.login(&machine, &pw) {
                        Ok(t) => {
                            self.token = Some(t.clone());
                            t
                        }
                        Err(e) => return self.fail_push(e),
                    }
                }
            };
            while !self.outbox.is_empty() {
                let (alerts, n) = self.outbox.next_batch(&machine);
                if alerts.is_empty() {
                    self.outbox.sent(n);
                    continue;
                }
                match self.lapi.post_alerts(&token, &alerts) {
                    Ok(()) => {
                        self.outbox.sent(n);
                        Counters::add(&c(&self.w).alerts_pushed, alerts.len() as u64);
                        self.status.alerts.pushed += alerts.len() as u64;
                        self.status.alerts.last_push = Some(rfc3339(SystemTime::now()));
                        let nets: Vec<&serde_json::Value> =
                            alerts.iter().map(|a| &a["decisions"][0]["value"]).collect();
                        self.w.log.emit(
                            "crowdsec_push",
                            json!({"alerts": alerts.len(), "values": nets}),
                        );
                    }
                    Err(Failure::Refused(why)) if attempt == 0 => {
                        self.token = None;
                        self.status.last_error = Some(why);
                        break;
                    }
                    Err(e) => {
                        self.token = None;
                        return self.fail_push(e);
                    }
                }
            }
            if self.outbox.is_empty() {
                break;
            }
        }
        if !self.outbox.is_empty() {
            return self.fail_push(Failure::Refused(
                "alerts refused after a fresh login".into(),
            ));
        }
        self.push_failures = 0;
    }

    /// Counters and the status file.
    fn publish(&mut self) {
        let counters = c(&self.w);
        counters
            .alerts_pending
            .store(self.outbox.len() as u64, Ordering::Relaxed);
        counters
            .alerts_dropped
            .store(self.outbox.dropped, Ordering::Relaxed);
        let a = &mut self.status.alerts;
        a.pending = self.outbox.len();
        a.dropped = self.outbox.dropped;
        a.expired = self.outbox.expired;
        if let Err(e) = status::write(&self.w.pin_dir, &self.status) {
            eprintln!("warning: writing the crowdsec status: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_poll_up_to_a_minute() {
        let p = Duration::from_secs(2);
        let secs: Vec<u64> = (1..=8).map(|n| backoff(p, n).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(Duration::from_secs(120), 3).as_secs(), 120);
    }
}
