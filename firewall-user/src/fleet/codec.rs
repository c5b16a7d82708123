//! The bucket's schema: one key per blocked prefix, one JSON value.
//!
//! Keys may only use `[-/_=.a-zA-Z0-9]`, so the prefix is written as its
//! CIDR with IPv6's `:` turned into `-` (`2001:db8::/32` is
//! `2001-db8--/32`); IPv4 needs no change. The value is what other tools
//! may write too: `{"cidr", "origin", "gateway", "reason", "created_at",
//! "expires_at"}`, times in RFC 3339, `expires_at` null for no expiry.
//!
//! Everything read from the bucket is untrusted: [`check`] turns a key and
//! value into a [`Remote`] entry or names why it must be skipped.

use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Longest value accepted (and the bucket's `max_value_size`): a record
/// is under 300 bytes, anything much bigger is not one.
pub const MAX_VALUE: usize = 4096;
/// Longest gateway name or reason kept.
const MAX_TEXT: usize = 128;

/// The JSON value of a key.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub cidr: String,
    pub origin: String,
    pub gateway: String,
    #[serde(default)]
    pub reason: Option<String>,
    pub created_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// A valid entry from the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub net: IpNet,
    pub origin: String,
    pub gateway: String,
    pub reason: String,
    pub created_at: SystemTime,
    pub expires_at: Option<SystemTime>,
}

/// What an entry is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Shortest IPv4 prefix accepted (a /8 floor refuses /7 and wider).
    pub min_prefix_v4: u8,
    pub min_prefix_v6: u8,
    /// An `expires_at` further ahead than this is refused.
    pub max_ttl: Duration,
}

/// Why an entry was not applied; `name` is the metric label and event field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    BadKey,
    TooLarge,
    NotJson,
    BadCidr,
    KeyMismatch,
    PrefixTooShort,
    BadTime,
    Expired,
    ExpiryTooFar,
    BadText,
}

impl Skip {
    pub const ALL: [Skip; 10] = [
        Skip::BadKey,
        Skip::TooLarge,
        Skip::NotJson,
        Skip::BadCidr,
        Skip::KeyMismatch,
        Skip::PrefixTooShort,
        Skip::BadTime,
        Skip::Expired,
        Skip::ExpiryTooFar,
        Skip::BadText,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Skip::BadKey => "bad_key",
            Skip::TooLarge => "too_large",
            Skip::NotJson => "not_json",
            Skip::BadCidr => "bad_cidr",
            Skip::KeyMismatch => "key_mismatch",
            Skip::PrefixTooShort => "prefix_too_short",
            Skip::BadTime => "bad_time",
            Skip::Expired => "expired",
            Skip::ExpiryTooFar => "expiry_too_far",
            Skip::BadText => "bad_text",
        }
    }
}

/// The bucket key of a prefix (host bits cleared).
pub fn key_of(net: &IpNet) -> String {
    net.trunc().to_string().replace(':', "-")
}

/// The prefix a key stands for; only canonical keys (as [`key_of`] writes
/// them) are accepted, so one prefix has exactly one key.
pub fn net_of_key(key: &str) -> Option<IpNet> {
    if key.len() > 64 {
        return None;
    }
    let net: IpNet = key.replace('-', ":").parse().ok()?;
    (key_of(&net) == key).then_some(net)
}

/// RFC 3339 with milliseconds, UTC.
pub fn time_text(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// RFC 3339 in UTC (`Z` or `+00:00`); other offsets are refused rather
/// than guessed.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let utc = s
        .strip_suffix("+00:00")
        .map(|b| format!("{b}Z"))
        .unwrap_or_else(|| s.replace('z', "Z"));
    humantime::parse_rfc3339(&utc).ok()
}

fn clean_text(s: &str) -> Option<String> {
    (s.len() <= MAX_TEXT && !s.chars().any(char::is_control)).then(|| s.to_string())
}

/// Check a put from the bucket. `now` is this gateway's wall clock.
pub fn check(key: &str, value: &[u8], now: SystemTime, limits: &Limits) -> Result<Remote, Skip> {
    let key_net = net_of_key(key).ok_or(Skip::BadKey)?;
    if value.len() > MAX_VALUE {
        return Err(Skip::TooLarge);
    }
    let r: Record = serde_json::from_slice(value).map_err(|_| Skip::NotJson)?;
    let (net, host_bits) = crate::addr::parse_cidr(&r.cidr).map_err(|_| Skip::BadCidr)?;
    if host_bits {
        return Err(Skip::BadCidr);
    }
    if net != key_net {
        return Err(Skip::KeyMismatch);
    }
    let floor = match net {
        IpNet::V4(_) => limits.min_prefix_v4,
        IpNet::V6(_) => limits.min_prefix_v6,
    };
    // Never /0, whatever the floor says.
    if net.prefix_len() < floor.max(1) {
        return Err(Skip::PrefixTooShort);
    }
    let created_at = parse_time(&r.created_at).ok_or(Skip::BadTime)?;
    let expires_at = match &r.expires_at {
        None => None,
        Some(s) => Some(parse_time(s).ok_or(Skip::BadTime)?),
    };
    if let Some(exp) = expires_at {
        if exp <= now {
            return Err(Skip::Expired);
        }
        if exp.duration_since(now).unwrap_or_default() > limits.max_ttl {
            return Err(Skip::ExpiryTooFar);
        }
    }
    let (Some(gateway), Some(origin)) = (clean_text(&r.gateway), clean_text(&r.origin)) else {
        return Err(Skip::BadText);
    };
    if gateway.is_empty() {
        return Err(Skip::BadText);
    }
    let reason = clean_text(r.reason.as_deref().unwrap_or("")).ok_or(Skip::BadText)?;
    Ok(Remote {
        net,
        origin,
        gateway,
        reason,
        created_at,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        min_prefix_v4: 8,
        min_prefix_v6: 32,
        max_ttl: Duration::from_secs(30 * 86_400),
    };

    fn value(cidr: &str, expires_at: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "cidr": cidr, "origin": "autoban", "gateway": "gw1", "reason": "flood",
            "created_at": "2026-01-01T00:00:00.250Z", "expires_at": expires_at,
        }))
        .unwrap()
    }

    fn now() -> SystemTime {
        parse_time("2026-01-01T00:00:01Z").unwrap()
    }

    #[test]
    fn keys_use_only_the_nats_alphabet_and_round_trip() {
        for s in [
            "203.0.113.7/32",
            "10.0.0.0/8",
            "2001:db8::/32",
            "::1/128",
            "2001:db8:0:1::/64",
        ] {
            let net: IpNet = s.parse().unwrap();
            let k = key_of(&net);
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b)),
                "{k}"
            );
            assert!(!k.starts_with('.') && !k.ends_with('.'), "{k}");
            assert_eq!(net_of_key(&k), Some(net), "{k}");
        }
        assert_eq!(key_of(&"2001:db8::/32".parse().unwrap()), "2001-db8--/32");
        // Non-canonical spellings of a prefix are not keys.
        for bad in ["10.0.0.1/8", "2001-0db8--/32", "junk", "", "10.0.0.0/33"] {
            assert_eq!(net_of_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_good_value_parses() {
        let r = check(
            "203.0.113.7/32",
            &value("203.0.113.7/32", Some("2026-01-01T00:10:00Z")),
            now(),
            &LIMITS,
        )
        .unwrap();
        assert_eq!(r.net.to_string(), "203.0.113.7/32");
        assert_eq!(r.gateway, "gw1");
        assert_eq!(r.origin, "autoban");
        assert_eq!(
            r.expires_at.unwrap().duration_since(now()).unwrap(),
            Duration::from_secs(599)
        );
        // No expiry, and +00:00 instead of Z.
        let v = br#"{"cidr":"2001:db8:bad::/48","origin":"manual","gateway":"x","created_at":"2026-01-01T00:00:00+00:00","expires_at":null}"#;
        let r = check("2001-db8-bad--/48", v, now(), &LIMITS).unwrap();
        assert_eq!(r.expires_at, None);
        assert_eq!(r.reason, "");
    }

    #[test]
    fn hostile_values_are_named() {
        let k = "203.0.113.7/32";
        let cases: Vec<(&str, Vec<u8>, Skip)> = vec![
            (k, b"not json".to_vec(), Skip::NotJson),
            (k, b"{}".to_vec(), Skip::NotJson),
            (k, vec![b' '; MAX_VALUE + 1], Skip::TooLarge),
            (k, value("203.0.113.300/32", None), Skip::BadCidr),
            (k, value("203.0.113.8/32", None), Skip::KeyMismatch),
            ("0.0.0.0/0", value("0.0.0.0/0", None), Skip::PrefixTooShort),
            (
                "10.0.0.0/7",
                value("10.0.0.0/7", None),
                Skip::PrefixTooShort,
            ),
            ("--/0", value("::/0", None), Skip::PrefixTooShort),
            (
                "2001-db8--/31",
                value("2001:db8::/31", None),
                Skip::PrefixTooShort,
            ),
            (k, value(k, Some("2025-12-31T23:00:00Z")), Skip::Expired),
            (
                k,
                value(k, Some("9999-12-31T23:59:59Z")),
                Skip::ExpiryTooFar,
            ),
            (k, value(k, Some("tomorrow")), Skip::BadTime),
            (
                k,
                value(k, Some("2026-01-01T02:00:00+02:00")),
                Skip::BadTime,
            ),
            ("a.b", value(k, None), Skip::BadKey),
        ];
        for (key, v, want) in cases {
            assert_eq!(
                check(key, &v, now(), &LIMITS),
                Err(want),
                "{key} {}",
                String::from_utf8_lossy(&v)
            );
        }
        let ctl = br#"{"cidr":"203.0.113.7/32","origin":"manual","gateway":"gw\u0007","created_at":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(check(k, ctl, now(), &LIMITS), Err(Skip::BadText));
        // The floor is a floor: /8 itself is fine.
        assert!(check("10.0.0.0/8", &value("10.0.0.0/8", None), now(), &LIMITS).is_ok());
    }
}
