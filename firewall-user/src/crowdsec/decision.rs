//! The LAPI's decision stream and what we accept from it.
//!
//! Two levels of bad input, handled differently:
//! - an answer that is not the documented shape (not JSON, `new` not an
//!   array, a `value` that is a number...) fails to deserialize and is
//!   rejected whole by the caller: nothing of it is applied;
//! - a well-formed decision with an absurd value (a /0 range, a duration of
//!   centuries or below zero, an address that does not parse) is skipped
//!   alone, with its reason counted.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
use serde::Deserialize;

use super::duration;
use crate::clock::MAX_TTL;

/// `GET /v1/decisions/stream`. Both lists may be `null`.
#[derive(Debug, Deserialize)]
pub struct Stream {
    #[serde(default)]
    pub new: Option<Vec<Decision>>,
    #[serde(default)]
    pub deleted: Option<Vec<Decision>>,
}

/// One decision as the LAPI sends it (unknown fields, such as the `uuid`
/// of later versions, are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Decision {
    pub id: i64,
    #[serde(default)]
    pub origin: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub scope: String,
    pub value: String,
    pub duration: String,
    #[serde(default)]
    pub scenario: String,
    #[serde(default)]
    pub simulated: bool,
}

/// Widest ranges taken from CrowdSec: anything wider is a mistake or an
/// attack on the bouncer (a /0 would cut the gateway off), not a decision.
pub const MIN_PREFIX_V4: u8 = 8;
pub const MIN_PREFIX_V6: u8 = 16;

/// Why a decision was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// Not `ban` (captcha, throttle...): nothing an XDP drop can enforce.
    Type,
    /// Not `Ip` or `Range` (Country, AS, Username...).
    Scope,
    /// Simulation mode: CrowdSec itself says not to enforce it.
    Simulated,
    /// The value is not an address or CIDR of its scope.
    Address,
    /// A range wider than /8 (IPv4) or /16 (IPv6).
    Range,
    /// Not a Go duration, not positive, or longer than `clock::MAX_TTL`.
    Duration,
    /// Our own auto-ban coming back through the stream.
    Own,
}

impl Skip {
    pub const ALL: [Skip; 7] = [
        Skip::Type,
        Skip::Scope,
        Skip::Simulated,
        Skip::Address,
        Skip::Range,
        Skip::Duration,
        Skip::Own,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Skip::Type => "type",
            Skip::Scope => "scope",
            Skip::Simulated => "simulated",
            Skip::Address => "address",
            Skip::Range => "range",
            Skip::Duration => "duration",
            Skip::Own => "own",
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) means the IPv4
/// address: the data plane sees such a source as IPv4.
fn unmap(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net {
        if let Some(v4) = n.addr().to_ipv4_mapped() {
            if n.prefix_len() >= 96 {
                return IpNet::new(IpAddr::V4(v4), n.prefix_len() - 96).unwrap_or(net);
            }
        }
    }
    net
}

/// The prefix a `ban` decision targets, host bits cleared.
pub fn target(d: &Decision) -> Result<IpNet, Skip> {
    let value = d.value.trim();
    let net = if d.scope.eq_ignore_ascii_case("ip") {
        value
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| Skip::Address)?
    } else if d.scope.eq_ignore_ascii_case("range") {
        value.parse::<IpNet>().map_err(|_| Skip::Address)?.trunc()
    } else {
        return Err(Skip::Scope);
    };
    let net = unmap(net);
    let min = match net {
        IpNet::V4(_) => MIN_PREFIX_V4,
        IpNet::V6(_) => MIN_PREFIX_V6,
    };
    if net.prefix_len() < min {
        return Err(Skip::Range);
    }
    Ok(net)
}

/// A new decision to enforce: its prefix and how long it holds.
pub fn accept(d: &Decision) -> Result<(IpNet, Duration), Skip> {
    if !d.kind.eq_ignore_ascii_case("ban") {
        return Err(Skip::Type);
    }
    let net = target(d)?;
    if d.simulated {
        return Err(Skip::Simulated);
    }
    let ns = duration::parse(d.duration.trim()).map_err(|_| Skip::Duration)?;
    if ns <= 0 || ns > MAX_TTL.as_nanos() as i128 {
        return Err(Skip::Duration);
    }
    Ok((net, Duration::from_nanos(ns as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(kind: &str, scope: &str, value: &str, duration: &str) -> Decision {
        Decision {
            id: 1,
            origin: "cscli".into(),
            kind: kind.into(),
            scope: scope.into(),
            value: value.into(),
            duration: duration.into(),
            scenario: "manual".into(),
            simulated: false,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn ip_and_range_bans_in_both_families() {
        let ok = |x: Decision| accept(&x).unwrap();
        assert_eq!(
            ok(d("ban", "Ip", "198.51.100.2", "59.5s")),
            (net("198.51.100.2/32"), Duration::from_millis(59_500))
        );
        assert_eq!(
            ok(d("ban", "Range", "2001:db8:2::/64", "1h")).0,
            net("2001:db8:2::/64")
        );
        assert_eq!(
            ok(d("ban", "ip", "2001:db8::1", "1s")).0,
            net("2001:db8::1/128")
        );
        // Host bits in a range are cleared; mapped IPv4 becomes IPv4.
        assert_eq!(
            ok(d("Ban", "range", "198.51.100.7/24", "1s")).0,
            net("198.51.100.0/24")
        );
        assert_eq!(
            ok(d("ban", "Ip", "::ffff:198.51.100.9", "1s")).0,
            net("198.51.100.9/32")
        );
        assert_eq!(
            ok(d("ban", "Range", "10.0.0.0/8", "1s")).0,
            net("10.0.0.0/8")
        );
    }

    #[test]
    fn absurd_values_are_skipped_with_their_reason() {
        let cases = [
            (d("captcha", "Ip", "198.51.100.2", "1h"), Skip::Type),
            (d("ban", "Country", "FR", "1h"), Skip::Scope),
            (d("ban", "AS", "1234", "1h"), Skip::Scope),
            (d("ban", "Ip", "198.51.100.300", "1h"), Skip::Address),
            (d("ban", "Ip", "198.51.100.0/24", "1h"), Skip::Address),
            (d("ban", "Ip", "", "1h"), Skip::Address),
            (d("ban", "Range", "0.0.0.0/0", "1h"), Skip::Range),
            (d("ban", "Range", "::/0", "1h"), Skip::Range),
            (d("ban", "Range", "10.0.0.0/7", "1h"), Skip::Range),
            (d("ban", "Range", "2001::/15", "1h"), Skip::Range),
            (d("ban", "Range", "198.51.100.0/33", "1h"), Skip::Address),
            (d("ban", "Ip", "198.51.100.2", "-4h"), Skip::Duration),
            (d("ban", "Ip", "198.51.100.2", "0s"), Skip::Duration),
            (d("ban", "Ip", "198.51.100.2", "876000h"), Skip::Duration),
            (d("ban", "Ip", "198.51.100.2", "2562048h"), Skip::Duration),
            (d("ban", "Ip", "198.51.100.2", "forever"), Skip::Duration),
            (d("ban", "Ip", "198.51.100.2", "4d"), Skip::Duration),
        ];
        for (dec, why) in cases {
            assert_eq!(accept(&dec), Err(why), "{dec:?}");
        }
        let mut sim = d("ban", "Ip", "198.51.100.2", "1h");
        sim.simulated = true;
        assert_eq!(accept(&sim), Err(Skip::Simulated));
    }

    #[test]
    fn wrong_types_fail_the_whole_answer() {
        for bad in [
            r#"{"new": "x", "deleted": null}"#,
            r#"{"new": [{"id": 1, "type": "ban", "scope": "Ip", "value": 5, "duration": "1h"}]}"#,
            r#"{"new": [{"id": "1", "type": "ban", "scope": "Ip", "value": "1.2.3.4", "duration": "1h"}]}"#,
            r#"{"new": [{"id": 1, "type": "ban", "scope": "Ip", "value": "1.2.3.4"}]}"#,
            r#"[1, 2]"#,
            r#"{"new": [{"id": 1"#,
        ] {
            assert!(serde_json::from_str::<Stream>(bad).is_err(), "{bad}");
        }
        let s: Stream = serde_json::from_str(r#"{"deleted":null,"new":null}"#).unwrap();
        assert!(s.new.is_none() && s.deleted.is_none());
    }
}
