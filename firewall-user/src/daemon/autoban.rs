//! Auto-bans: the kernel reports a source prefix crossing `drops` within
//! `window`; it is blocked for `ban`, doubled per repeat up to `max_ban`.
//! The repeat count decays after `max_ban` without a ban.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use ipnet::IpNet;

use crate::policy::Autoban;

#[derive(Default)]
pub struct Strikes {
    seen: HashMap<IpNet, (u32, Instant)>,
}

impl Strikes {
    /// Record a ban of `net` now and return its duration.
    pub fn ban(&mut self, cfg: &Autoban, net: IpNet, now: Instant) -> Duration {
        let (count, last) = self.seen.get(&net).copied().unwrap_or((0, now));
        let count = if count > 0 && now.duration_since(last) > cfg.max_ban + ban_len(cfg, count - 1)
        {
            0
        } else {
            count
        };
        self.seen.insert(net, (count + 1, now));
        ban_len(cfg, count)
    }

    /// Forget offenders quiet for longer than `max_ban` after their ban.
    pub fn decay(&mut self, cfg: &Autoban, now: Instant) {
        self.seen
            .retain(|_, (n, last)| now.duration_since(*last) <= cfg.max_ban + ban_len(cfg, *n - 1));
    }
}

/// `ban * 2^repeats`, capped at `max_ban`.
pub fn ban_len(cfg: &Autoban, repeats: u32) -> Duration {
    let factor = 1u32.checked_shl(repeats.min(31)).unwrap_or(u32::MAX);
    cfg.ban
        .checked_mul(factor)
        .unwrap_or(cfg.max_ban)
        .min(cfg.max_ban)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Autoban {
        Autoban {
            drops: 10,
            window: Duration::from_secs(10),
            ban: Duration::from_secs(600),
            max_ban: Duration::from_secs(3600),
        }
    }

    #[test]
    fn doubles_up_to_the_cap_and_decays() {
        let c = cfg();
        let net: IpNet = "198.51.100.0/24".parse().unwrap();
        let mut s = Strikes::default();
        let t0 = Instant::now();
        let secs: Vec<u64> = (0..5)
            .map(|i| s.ban(&c, net, t0 + Duration::from_secs(i)).as_secs())
            .collect();
        assert_eq!(secs, [600, 1200, 2400, 3600, 3600]);
        // Quiet for longer than the last ban plus max_ban: back to the start.
        let later = t0 + Duration::from_secs(4 + 3600 + 3600 + 1);
        assert_eq!(s.ban(&c, net, later).as_secs(), 600);
        s.decay(&c, later + Duration::from_secs(600 + 3600 + 1));
        assert!(s.seen.is_empty());
    }
}
