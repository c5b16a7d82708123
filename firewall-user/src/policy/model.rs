//! What a checked policy file is: the normalized [`Policy`] the control
//! layer writes into the maps, and the defaults of every key.

use std::{fmt, str::FromStr, time::Duration};

use firewall_common::maps::{LIST_CAPACITY, SOURCES_CAPACITY};
use ipnet::IpNet;

use super::fleet;

/// Default per-source rate (packets per second).
pub const DEFAULT_RATE: u64 = 100;
/// Default per-source bucket depth (packets).
pub const DEFAULT_BURST: u64 = 200;
/// Default IPv4 aggregation prefix.
pub const DEFAULT_IPV4_PREFIX: u8 = 32;
/// Default IPv6 aggregation prefix.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
/// Default gateway-wide rate of never-seen source prefixes.
pub const DEFAULT_NEW_SOURCES_RATE: u64 = 100_000;
/// Default gateway-wide burst of never-seen source prefixes.
pub const DEFAULT_NEW_SOURCES_BURST: u64 = 200_000;
/// Default gateway-wide rate of SYN challenges: as many answers as a
/// flood of a million SYNs a second asks for (each answer is one small
/// frame, no state), and a bound on the backscatter beyond that.
pub const DEFAULT_SYN_CHALLENGE_RATE: u64 = 1_000_000;
pub const DEFAULT_SYN_CHALLENGE_BURST: u64 = 1_000_000;

/// A validated, normalized policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Allowlist, host bits cleared, duplicates removed, in file order.
    pub allow: Vec<IpNet>,
    /// Blocklist, host bits cleared, duplicates removed, in file order.
    pub block: Vec<IpNet>,
    pub defaults: Defaults,
    /// `[[limit]]` classes, in file order.
    pub limits: Vec<LimitClass>,
    /// `[[rule]]` entries, in file order (rule `i` is rule index `i`).
    pub rules: Vec<Rule>,
    pub flood: Flood,
    /// The `syn_challenge*` keys of `[flood]`.
    pub syn_challenge: SynChallenge,
    pub autoban: Option<Autoban>,
    pub table: Table,
    /// `[crowdsec]`: bouncer and watcher of a CrowdSec local API.
    pub crowdsec: Option<crate::crowdsec::Config>,
    /// `[fleet]`: entries shared with other gateways over NATS.
    pub fleet: Option<fleet::Fleet>,
}

/// `[table]`: sizes of the kernel tables, applied when the data plane is
/// loaded (a pinned data plane of another size is migrated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Table {
    pub max_sources: u32,
    pub max_list_entries: u32,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            max_sources: SOURCES_CAPACITY,
            max_list_entries: LIST_CAPACITY,
        }
    }
}

/// Bounds of `[table]`: below them a gateway forgets sources faster than a
/// token bucket can mean anything; above them one table costs gigabytes.
pub const TABLE_MIN_SOURCES: u32 = 1024;
pub const TABLE_MAX_SOURCES: u32 = 1 << 24;
pub const TABLE_MIN_LIST: u32 = 16;
pub const TABLE_MAX_LIST: u32 = 1 << 24;

impl Default for Policy {
    /// The policy in force when there is no file.
    fn default() -> Self {
        Policy {
            allow: Vec::new(),
            block: Vec::new(),
            defaults: Defaults::default(),
            limits: Vec::new(),
            rules: Vec::new(),
            flood: Flood::default(),
            syn_challenge: SynChallenge::default(),
            autoban: None,
            table: Table::default(),
            crowdsec: None,
            fleet: None,
        }
    }
}

/// `[defaults]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub rate: u64,
    pub burst: u64,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// `mode = "monitor"`.
    pub monitor: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
            ipv4_prefix: DEFAULT_IPV4_PREFIX,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            monitor: false,
        }
    }
}

/// A `[[limit]]` class: sources inside `cidr` get this limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitClass {
    /// Host bits cleared.
    pub cidr: IpNet,
    pub rate: u64,
    pub burst: u64,
}

/// The L4 protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Any,
}

impl Protocol {
    /// The IP protocol number (`Any` is 0, `Icmp` is IPv4 ICMP, 1).
    pub fn number(&self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::Any => 0,
        }
    }

    /// Whether a packet with this IP protocol number (IPv4 protocol or IPv6
    /// next header) matches; `Icmp` matches ICMP (1) and ICMPv6 (58).
    pub fn matches(&self, ip_proto: u8) -> bool {
        match self {
            Protocol::Tcp => ip_proto == 6,
            Protocol::Udp => ip_proto == 17,
            Protocol::Icmp => ip_proto == 1 || ip_proto == 58,
            Protocol::Any => true,
        }
    }

    /// The name used in the policy file.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Any => "any",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = ();
    /// Case-insensitive `tcp`, `udp`, `icmp` or `any`.
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "icmp" => Ok(Protocol::Icmp),
            "any" => Ok(Protocol::Any),
            _ => Err(()),
        }
    }
}

/// A `[[rule]]`: matching packets use their own per-source bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub protocol: Protocol,
    /// Inclusive destination port range; `None`: any port.
    pub dst_port: Option<(u16, u16)>,
    /// TCP only: count only SYN without ACK.
    pub syn_only: bool,
    pub rate: u64,
    pub burst: u64,
}

/// `[flood]`: the gateway-wide budget for never-seen source prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flood {
    pub new_sources_rate: u64,
    pub new_sources_burst: u64,
}

impl Default for Flood {
    fn default() -> Self {
        Flood {
            new_sources_rate: DEFAULT_NEW_SOURCES_RATE,
            new_sources_burst: DEFAULT_NEW_SOURCES_BURST,
        }
    }
}

/// `[flood] syn_challenge*`: a TCP SYN the new-source budget refuses is
/// answered with a challenge (a SYN-ACK carrying a cookie) instead of being
/// dropped; a source that answers it is real and gets a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynChallenge {
    /// `syn_challenge`.
    pub enabled: bool,
    /// `syn_challenge_rate`, `syn_challenge_burst`: challenges sent per
    /// second for the whole gateway (the backscatter bound).
    pub rate: u64,
    pub burst: u64,
}

impl Default for SynChallenge {
    fn default() -> Self {
        SynChallenge {
            enabled: true,
            rate: DEFAULT_SYN_CHALLENGE_RATE,
            burst: DEFAULT_SYN_CHALLENGE_BURST,
        }
    }
}

/// `[autoban]`: repeat offenders go on the blocklist for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autoban {
    /// `rate_limited` drops by one source prefix ...
    pub drops: u64,
    /// ... within this window ...
    pub window: Duration,
    /// ... earn a ban this long, doubled on each repeat ...
    pub ban: Duration,
    /// ... up to this.
    pub max_ban: Duration,
}
