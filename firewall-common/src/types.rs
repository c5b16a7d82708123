//! Map keys and values. Sizes are asserted at compile time: a change here
//! is a change of the pinned layout.

use crate::bucket::{Bucket, Limit};

/// The one verdict each packet gets, as an index into the counter arrays.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed = 0,
    Allowed = 1,
    Blocked = 2,
    RateLimited = 3,
    WouldDrop = 4,
    Malformed = 5,
}

pub const N_VERDICTS: u32 = 6;

impl Verdict {
    pub const ALL: [Verdict; N_VERDICTS as usize] = [
        Verdict::Passed,
        Verdict::Allowed,
        Verdict::Blocked,
        Verdict::RateLimited,
        Verdict::WouldDrop,
        Verdict::Malformed,
    ];

    /// The name used by the CLI, metrics and events.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Allowed => "allowed",
            Verdict::Blocked => "blocked",
            Verdict::RateLimited => "rate_limited",
            Verdict::WouldDrop => "would_drop",
            Verdict::Malformed => "malformed",
        }
    }

    pub const fn drops(self) -> bool {
        matches!(
            self,
            Verdict::Blocked | Verdict::RateLimited | Verdict::Malformed
        )
    }
}

/// Packets and bytes, one slot per verdict per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Indices into the per-CPU `STATS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug)]
pub enum Stat {
    /// Source prefixes given a bucket (LRU inserts).
    NewSourceAdmitted = 0,
    /// First packets of unknown prefixes refused by the flood guard.
    NewSourceRefused = 1,
    /// Events lost because the ring buffer was full.
    EventsLost = 2,
    /// Packets handled by a program built with the `upgrade-variant`
    /// feature (zero in normal builds): shows which object is running.
    VariantPackets = 3,
}
pub const N_STATS: u32 = 4;

/// Slots of the per-CPU `FLOOD` bucket array.
pub const FLOOD_NEW_SOURCES: u32 = 0;
pub const FLOOD_EVENTS: u32 = 1;

/// Config flags.
pub mod flags {
    pub const ALLOW_V4: u32 = 1 << 0;
    pub const ALLOW_V6: u32 = 1 << 1;
    pub const BLOCK_V4: u32 = 1 << 2;
    pub const BLOCK_V6: u32 = 1 << 3;
    pub const LIMIT_V4: u32 = 1 << 4;
    pub const LIMIT_V6: u32 = 1 << 5;
    /// Count would-be drops as `would_drop` and pass them.
    pub const MONITOR: u32 = 1 << 6;
    /// Some IPv4 allow/block entry is narrower than the aggregation prefix,
    /// so a decision cached for the prefix could be wrong: look up every
    /// IPv4 packet. `_V6` likewise.
    pub const NO_LIST_CACHE_V4: u32 = 1 << 7;
    pub const NO_LIST_CACHE_V6: u32 = 1 << 10;
    /// Autoban is configured: report sources crossing the drop threshold.
    pub const AUTOBAN: u32 = 1 << 8;
    /// The controller has written a policy (the program passes all until then).
    pub const READY: u32 = 1 << 9;
    /// The exact-host hash of that list and family has entries.
    pub const ALLOW_HOST_V4: u32 = 1 << 11;
    pub const ALLOW_HOST_V6: u32 = 1 << 12;
    pub const BLOCK_HOST_V4: u32 = 1 << 13;
    pub const BLOCK_HOST_V6: u32 = 1 << 14;
    /// Some allowlist prefix covers a blocked exact host of that family: a
    /// host-hash block hit must ask the allow trie first (allow wins).
    pub const ALLOW_OVER_BLOCK_V4: u32 = 1 << 15;
    pub const ALLOW_OVER_BLOCK_V6: u32 = 1 << 16;
}

/// L4 classes of the rule prefilter: one bit each, so that a packet whose
/// class and destination port no rule covers skips the rule loop.
pub mod l4 {
    pub const TCP: u8 = 1 << 0;
    pub const UDP: u8 = 1 << 1;
    pub const ICMP: u8 = 1 << 2;
    pub const OTHER: u8 = 1 << 3;
    pub const ALL: u8 = TCP | UDP | ICMP | OTHER;

    /// The class of an IP protocol number (ICMP rules cover ICMPv6 too).
    #[inline(always)]
    pub const fn class(proto: u8) -> u8 {
        match proto {
            6 => TCP,
            17 => UDP,
            1 | 58 => ICMP,
            _ => OTHER,
        }
    }
}

/// The whole run-time policy that is not a list: slot 0 of `CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Bumped on every change; per-source state caches its classification
    /// under the generation it was made in.
    pub generation: u32,
    pub flags: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub rule_count: u8,
    /// Which set of tries this config goes with (its own slot index).
    pub set: u8,
    pub _pad: [u8; 4],
    pub default_limit: Limit,
    /// Per-CPU share of the gateway-wide budget for new source prefixes.
    pub flood_limit: Limit,
    /// Rate-limited drops within `autoban_window_ns` that report a source.
    pub autoban_drops: u32,
    pub _pad2: u32,
    pub autoban_window_ns: u64,
    /// A source's drop is reported again only after this long without drops.
    pub event_quiet_ns: u64,
    /// Per-CPU cap on first-drop events, whatever the number of sources.
    pub event_limit: Limit,
    /// The policy file's default and the CLI's (`manual`, unset = zero);
    /// `default_limit` is the manual one when set. Not read by the program.
    pub file_default: Limit,
    pub manual_default: Limit,
    /// Earliest expiry among list entries (0 = none): the controller scans
    /// the lists only once it has passed. Not read by the program, and
    /// written without a new generation (it changes no decision).
    pub next_expiry_ns: u64,
    /// Nanoseconds per jiffy when the program reads its time from
    /// `bpf_jiffies64` (which the verifier inlines into one load); 0 = the
    /// program calls `bpf_ktime_get_ns`. Set by the loader after probing.
    pub tick_ns: u64,
    /// `jiffies * tick_ns - tick_offset_ns` is CLOCK_MONOTONIC time rounded
    /// down to the last tick, so every stored time stays in one clock.
    pub tick_offset_ns: u64,
    /// Rule prefilter: the `l4` classes some rule without a port condition
    /// matches (ported rules are in `RULE_PORTS`).
    pub rule_any_port: u8,
    pub _pad3: [u8; 7],
}

/// An LPM trie key's data for IPv4/IPv6 (the prefix length precedes it).
pub type AddrV4 = [u8; 4];
pub type AddrV6 = [u8; 16];

/// Where a list entry came from.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Config = 0,
    Manual = 1,
    Import = 2,
    Autoban = 3,
    /// Received from another gateway through the fleet bus (NATS).
    Fleet = 4,
    /// A CrowdSec decision pulled from its local API.
    Crowdsec = 5,
}

impl Origin {
    pub const ALL: [Origin; 6] = [
        Origin::Config,
        Origin::Manual,
        Origin::Import,
        Origin::Autoban,
        Origin::Fleet,
        Origin::Crowdsec,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Manual => "manual",
            Origin::Import => "import",
            Origin::Autoban => "autoban",
            Origin::Fleet => "fleet",
            Origin::Crowdsec => "crowdsec",
        }
    }

    pub const fn from_u8(v: u8) -> Origin {
        match v {
            0 => Origin::Config,
            2 => Origin::Import,
            3 => Origin::Autoban,
            4 => Origin::Fleet,
            5 => Origin::Crowdsec,
            _ => Origin::Manual,
        }
    }
}

/// Value of an allow or block trie entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListEntry {
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) time after which the entry no
    /// longer matches; 0 = never.
    pub expires_ns: u64,
    /// Lookups that matched: one per source classification, since decisions
    /// are cached per source prefix and generation.
    pub hits: u64,
    pub origin: u8,
    /// The policy file lists this prefix too: deleting a run-time entry
    /// hands it back to the file instead of removing it.
    pub in_file: u8,
    /// The key's prefix length: an LPM lookup returns the longest match,
    /// so this tells an exact hit from a covering entry.
    pub prefix_len: u8,
    pub _pad: [u8; 5],
    /// Operator's note (`--comment`), NUL-padded UTF-8.
    pub comment: [u8; 32],
}

/// Value of a `[[limit]]` class trie entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitEntry {
    pub limit: Limit,
    /// The policy file's limit for this prefix, kept while a run-time
    /// (`manual`) entry overrides it; zero when the file has none.
    pub file_limit: Limit,
    pub origin: u8,
    /// The key's prefix length (see `ListEntry::prefix_len`).
    pub prefix_len: u8,
    pub _pad: [u8; 6],
}

/// Match any L4 protocol.
pub const PROTO_ANY: u8 = 0;

/// A `[[rule]]`: packets it matches use their own per-source bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub limit: Limit,
    /// IP protocol number, or `PROTO_ANY`.
    pub protocol: u8,
    /// TCP only: match SYN without ACK.
    pub syn_only: u8,
    pub port_lo: u16,
    pub port_hi: u16,
    /// 0: the rule has no port condition.
    pub has_port: u8,
    pub _pad: u8,
    /// The rule's name (NUL-padded), for counters and events.
    pub name: [u8; 32],
}

/// Per-source table key: a source prefix (host bits zeroed) and the rule
/// whose bucket it is (0 = the default/class bucket, i+1 = rule i).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub addr: [u8; 16],
    /// 4 or 6.
    pub family: u8,
    pub rule: u8,
    pub _pad: [u8; 2],
}

/// Cached classification of a source.
pub mod class {
    pub const LIMITED: u8 = 0;
    pub const ALLOWED: u8 = 1;
    pub const BLOCKED: u8 = 2;
}

/// Per-source state: the bucket, its cached classification and counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    pub bucket: Bucket,
    /// The limit in force, cached under `generation`.
    pub limit: Limit,
    /// For a cached `BLOCKED`: when the matching entry expires (0 = never).
    pub block_expires_ns: u64,
    pub packets: u64,
    pub drops: u64,
    /// Last rate-limited/blocked drop: events fire after a quiet period.
    pub last_drop_ns: u64,
    /// Start of the current autoban window and drops within it.
    pub window_start_ns: u64,
    pub window_drops: u32,
    pub generation: u32,
    pub class: u8,
    pub _pad: [u8; 7],
}

/// Event kinds sent through the `EVENTS` ring buffer.
pub mod event {
    /// First drop of a source after a quiet period.
    pub const FIRST_DROP: u8 = 1;
    /// A source crossed the autoban threshold.
    pub const AUTOBAN: u8 = 2;
}

/// A kernel event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub ts_ns: u64,
    pub key: SourceKey,
    /// The packet's source address (the key holds only its prefix).
    pub src: [u8; 16],
    pub kind: u8,
    /// Verdict index.
    pub verdict: u8,
    pub _pad: [u8; 2],
}

const _: () = {
    assert!(core::mem::size_of::<Counter>() == 16);
    assert!(core::mem::size_of::<Config>() == 152);
    assert!(core::mem::size_of::<ListEntry>() == 56);
    assert!(core::mem::size_of::<LimitEntry>() == 40);
    assert!(core::mem::size_of::<Rule>() == 56);
    assert!(core::mem::size_of::<SourceKey>() == 20);
    assert!(core::mem::size_of::<SourceState>() == 88);
    assert!(core::mem::size_of::<Event>() == 48);
};
