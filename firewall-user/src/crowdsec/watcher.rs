//! Our auto-bans as CrowdSec alerts, so the LAPI's other bouncers enforce
//! them too; and how we recognise them when they come back.
//!
//! Each ban becomes one alert carrying one `ban` decision with origin
//! `crowdsec` (what a local agent's detections carry, so `cscli decisions
//! list` shows it without `--all`) and a scenario under `firewall/`. When
//! the LAPI is away the alerts wait in a bounded queue (oldest dropped
//! first, counted) and are sent later with the time the ban has left.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use serde_json::{json, Value};

use crate::clock::{mono_ns, rfc3339};

/// Scenario of a ban by the default or class limit; a `[[rule]]`'s ban is
/// `firewall/autoban-<rule>`.
pub const SCENARIO: &str = "firewall/autoban";
/// Alerts kept while the LAPI is unreachable.
pub const MAX_PENDING: usize = 10_000;
/// Alerts per `POST /v1/alerts`.
pub const BATCH: usize = 100;

/// An auto-ban, as the daemon reports it.
#[derive(Debug, Clone)]
pub struct Ban {
    pub net: IpNet,
    pub src: IpAddr,
    pub rule: Option<String>,
    pub ttl: Duration,
    pub drops: u64,
    pub window: Duration,
    pub at: SystemTime,
    /// Monotonic expiry of the ban (the clock of the blocklist).
    pub expires_ns: u64,
}

impl Ban {
    pub fn scenario(&self) -> String {
        match &self.rule {
            Some(r) => format!("{SCENARIO}-{r}"),
            None => SCENARIO.to_string(),
        }
    }

    /// What is left of the ban now, if anything worth sending.
    fn remaining(&self, now_ns: u64) -> Option<Duration> {
        let left = Duration::from_nanos(self.expires_ns.saturating_sub(now_ns));
        (left >= Duration::from_secs(1)).then_some(left)
    }
}

/// The alert for one ban, `None` once the ban is (nearly) over.
pub fn alert(machine_id: &str, ban: &Ban, now_ns: u64) -> Option<Value> {
    let left = ban.remaining(now_ns)?;
    let host = ban.net.prefix_len() == ban.net.max_prefix_len();
    let (scope, value) = if host {
        ("Ip", ban.net.addr().to_string())
    } else {
        ("Range", ban.net.to_string())
    };
    let mut source = json!({"scope": scope, "value": value});
    if host {
        source["ip"] = json!(value);
    } else {
        source["range"] = json!(value);
    }
    let at = rfc3339(ban.at);
    let scenario = ban.scenario();
    Some(json!({
        "scenario": scenario,
        "scenario_hash": "",
        "scenario_version": "",
        "message": format!(
            "firewall {machine_id}: {} rate-limited drops within {} from {} ({}); banned for {}",
            ban.drops,
            humantime::format_duration(ban.window),
            ban.net,
            ban.src,
            humantime::format_duration(ban.ttl),
        ),
        "events_count": ban.drops.min(i32::MAX as u64),
        "events": [],
        "capacity": ban.drops.min(i32::MAX as u64),
        "leakspeed": format!("{}s", ban.window.as_secs()),
        "simulated": false,
        "start_at": at,
        "stop_at": at,
        "source": source,
        "decisions": [{
            "origin": "crowdsec",
            "type": "ban",
            "scope": scope,
            "value": value,
            "duration": format!("{}s", left.as_secs()),
            "scenario": scenario,
        }],
    }))
}

/// Bans waiting to be sent, and the ones sent (to recognise them when the
/// stream brings them back).
#[derive(Default)]
pub struct Outbox {
    pending: VecDeque<Ban>,
    /// Prefix -> monotonic expiry of our ban.
    ours: HashMap<IpNet, u64>,
    pub dropped: u64,
    pub expired: u64,
}

impl Outbox {
    pub fn push(&mut self, ban: Ban) {
        let e = self.ours.entry(ban.net).or_insert(0);
        *e = (*e).max(ban.expires_ns);
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
            self.dropped += 1;
        }
        self.pending.push_back(ban);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next batch of alerts (bans already over are dropped and counted)
    /// and how many bans they cover.
    pub fn next_batch(&mut self, machine_id: &str) -> (Vec<Value>, usize) {
        let now = mono_ns();
        let mut out = Vec::new();
        let mut taken = 0;
        while out.len() < BATCH {
            let Some(ban) = self.pending.get(taken) else {
                break;
            };
            taken += 1;
            match alert(machine_id, ban, now) {
                Some(a) => out.push(a),
                None => self.expired += 1,
            }
        }
        (out, taken)
    }

    /// The first `n` bans were delivered (or were over).
    pub fn sent(&mut self, n: usize) {
        self.pending.drain(..n.min(self.pending.len()));
    }

    /// A decision of ours coming back: one of our scenarios for a prefix we
    /// banned and whose ban still runs.
    pub fn is_ours(&self, net: &IpNet, scenario: &str) -> bool {
        scenario.starts_with(SCENARIO) && self.ours.get(net).is_some_and(|exp| *exp > mono_ns())
    }

    /// Forget bans that are over.
    pub fn prune(&mut self) {
        let now = mono_ns();
        self.ours.retain(|_, exp| *exp > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(net: &str, ttl_secs: u64) -> Ban {
        Ban {
            net: net.parse().unwrap(),
            src: "198.51.100.2".parse().unwrap(),
            rule: None,
            ttl: Duration::from_secs(ttl_secs),
            drops: 100,
            window: Duration::from_secs(5),
            at: SystemTime::now(),
            expires_ns: mono_ns() + ttl_secs * 1_000_000_000,
        }
    }

    #[test]
    fn an_alert_carries_one_ban_decision_with_what_is_left() {
        let b = ban("198.51.100.2/32", 600);
        let a = alert("gw1", &b, mono_ns() + 100 * 1_000_000_000).unwrap();
        let d = &a["decisions"][0];
        assert_eq!(d["type"], "ban");
        assert_eq!(d["scope"], "Ip");
        assert_eq!(d["value"], "198.51.100.2");
        assert_eq!(d["origin"], "crowdsec");
        assert_eq!(d["scenario"], SCENARIO);
        let left = d["duration"].as_str().unwrap();
        assert!(left == "499s" || left == "500s", "{left}");
        assert_eq!(a["source"]["ip"], "198.51.100.2");
        let mut r = ban("2001:db8:2::/64", 60);
        r.rule = Some("ssh-syn".into());
        let a = alert("gw1", &r, mono_ns()).unwrap();
        assert_eq!(a["decisions"][0]["scope"], "Range");
        assert_eq!(a["decisions"][0]["value"], "2001:db8:2::/64");
        assert_eq!(a["scenario"], "firewall/autoban-ssh-syn");
        // Over: nothing to send.
        assert!(alert("gw1", &r, mono_ns() + 61 * 1_000_000_000).is_none());
    }

    #[test]
    fn the_outbox_is_bounded_and_recognises_our_decisions() {
        let mut o = Outbox::default();
        for i in 0..(MAX_PENDING + 5) {
            let n = format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255);
            o.push(ban(&n, 60));
        }
        assert_eq!(o.len(), MAX_PENDING);
        assert_eq!(o.dropped, 5);
        let (batch, n) = o.next_batch("gw1");
        assert_eq!((batch.len(), n), (BATCH, BATCH));
        o.sent(n);
        assert_eq!(o.len(), MAX_PENDING - BATCH);
        let net: IpNet = "10.0.0.7/32".parse().unwrap();
        assert!(o.is_ours(&net, "firewall/autoban"));
        assert!(!o.is_ours(&net, "crowdsecurity/ssh-bf"));
        assert!(!o.is_ours(&"10.200.0.1/32".parse().unwrap(), "firewall/autoban"));
    }
}
