//! Map keys and values. Sizes are asserted at compile time: a change here
//! is a change of the pinned layout.

use crate::bucket::Limit;

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
    /// A TCP SYN the new-source budget refused, answered from the data
    /// plane with a challenge (XDP only).
    Challenged = 6,
}

pub const N_VERDICTS: u32 = 7;

impl Verdict {
    pub const ALL: [Verdict; N_VERDICTS as usize] = [
        Verdict::Passed,
        Verdict::Allowed,
        Verdict::Blocked,
        Verdict::RateLimited,
        Verdict::WouldDrop,
        Verdict::Malformed,
        Verdict::Challenged,
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
            Verdict::Challenged => "challenged",
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
    // Index 3 is unused: the indices are part of the pinned ABI (an
    // upgrade adopts the `STATS` array as it finds it), so it stays free
    // rather than renumber the challenge counters.
    /// SYN challenges answered (XDP_TX).
    ChallengeSent = 4,
    /// Challenges answered by the source (a RST carrying the cookie): its
    /// prefix was given a bucket outside the new-source budget.
    ChallengePassed = 5,
    /// RSTs from unvalidated sources during a flood whose sequence number
    /// was no valid cookie: dropped.
    ChallengeFailed = 6,
    /// SYNs not challenged: the answer budget was spent, or the frame
    /// cannot be answered (IPv6 extension headers, no key yet).
    ChallengeRefused = 7,
}
pub const N_STATS: u32 = 8;

impl Stat {
    /// The `firewall_challenges_total{result}` label of a challenge stat.
    pub const CHALLENGES: [(Stat, &'static str); 4] = [
        (Stat::ChallengeSent, "sent"),
        (Stat::ChallengePassed, "passed"),
        (Stat::ChallengeFailed, "failed"),
        (Stat::ChallengeRefused, "refused"),
    ];
}

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
    /// `[flood] syn_challenge`: a TCP SYN the new-source budget refuses is
    /// answered with a challenge instead of dropped.
    pub const SYN_CHALLENGE: u32 = 1 << 17;
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
    /// Drop score (in units of 2^16 ns, see `SourceState::drop_tat`): what
    /// one rate-limited drop adds (`window / drops` with `[autoban]`, else
    /// 1), the autoban window (0 = off) and the quiet time before a
    /// source's next drop is reported.
    pub drop_inc: u32,
    pub drop_window: u32,
    pub drop_quiet: u32,
    /// Counts every config write, with or without a new generation: what
    /// mirrors the lists (the fleet publisher) notices exact-host changes
    /// by it. Not read by the program.
    pub writes: u32,
    /// Per-CPU share of `[flood] syn_challenge_rate/burst`: answers sent.
    pub challenge_limit: Limit,
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
    /// Where the class's limit is in `LIMITS` (1..LIMIT_SLOTS): tracked
    /// sources cache the slot, not the limit.
    pub slot: u16,
    pub _pad: [u8; 4],
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

/// A source prefix (host bits zeroed) and the rule whose bucket it is
/// (0 = the default/class bucket, i+1 = rule i), both families in one
/// shape: what events carry and the controller displays. The tables
/// themselves are keyed by the smaller `SourceKey4` / `SourceKey6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub addr: [u8; 16],
    /// 4 or 6.
    pub family: u8,
    pub rule: u8,
    pub _pad: [u8; 2],
}

/// Key of the IPv4 per-source table: 8 bytes, the smallest a hash key
/// rounds to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey4 {
    pub addr: [u8; 4],
    pub rule: u8,
    pub _pad: [u8; 3],
}

/// Key of the IPv6 per-source table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey6 {
    pub addr: [u8; 16],
    pub rule: u8,
    pub _pad: [u8; 3],
}

impl SourceKey {
    pub fn from_v4(k: &SourceKey4) -> Self {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&k.addr);
        SourceKey {
            addr,
            family: 4,
            rule: k.rule,
            _pad: [0; 2],
        }
    }

    pub fn from_v6(k: &SourceKey6) -> Self {
        SourceKey {
            addr: k.addr,
            family: 6,
            rule: k.rule,
            _pad: [0; 2],
        }
    }

    pub fn v4(&self) -> SourceKey4 {
        SourceKey4 {
            addr: [self.addr[0], self.addr[1], self.addr[2], self.addr[3]],
            rule: self.rule,
            _pad: [0; 3],
        }
    }

    pub fn v6(&self) -> SourceKey6 {
        SourceKey6 {
            addr: self.addr,
            rule: self.rule,
            _pad: [0; 3],
        }
    }
}

/// Cached classification of a source (the top two bits of
/// `SourceState::class_slot`).
pub mod class {
    pub const LIMITED: u8 = 0;
    pub const ALLOWED: u8 = 1;
    pub const BLOCKED: u8 = 2;
}

/// Bits of `SourceState::class_slot` that hold the limit slot.
pub const SLOT_BITS: u16 = 14;
/// Limit slots: 0 is the default (or rule) limit, `1..LIMIT_SLOTS` the
/// `[[limit]]` classes' entries in `LIMITS`.
pub const LIMIT_SLOTS: u32 = 1 << SLOT_BITS;

/// Per-source state: 24 bytes, so that with an 8-byte IPv4 key and the
/// kernel's LRU element header an IPv4 source costs 96 bytes, and the
/// fields a packet touches share one cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    /// GCRA: when the bucket is full again (`bucket::gcra_*`), in 1/16 ns
    /// of the program's clock. For a cached `BLOCKED` class: when the
    /// matching block expires (ns, 0 = never).
    pub tat: u64,
    /// Decaying drop score (`drop_score`): when the recent drops will have
    /// decayed, in units of 2^16 ns, wrapping.
    pub drop_tat: u32,
    /// Packets and drops (wrapping), for `top`.
    pub packets: u32,
    pub drops: u32,
    /// Low 16 bits of the config generation the class was computed under.
    pub generation: u16,
    /// Class (top 2 bits) and limit slot (low `SLOT_BITS` bits).
    pub class_slot: u16,
}

impl SourceState {
    #[inline(always)]
    pub const fn pack(class: u8, slot: u16) -> u16 {
        ((class as u16) << SLOT_BITS) | (slot & ((1 << SLOT_BITS) - 1))
    }

    #[inline(always)]
    pub const fn class(&self) -> u8 {
        (self.class_slot >> SLOT_BITS) as u8
    }

    #[inline(always)]
    pub const fn slot(&self) -> u16 {
        self.class_slot & ((1 << SLOT_BITS) - 1)
    }
}

/// The generation as the per-source state keeps it.
#[inline(always)]
pub const fn short_generation(g: u32) -> u16 {
    g as u16
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
    assert!(core::mem::size_of::<Config>() == 184);
    assert!(core::mem::size_of::<crate::ChallengeKey>() == 40);
    assert!(core::mem::size_of::<crate::Handoff>() == 16);
    assert!(core::mem::size_of::<ListEntry>() == 56);
    assert!(core::mem::size_of::<LimitEntry>() == 40);
    assert!(core::mem::size_of::<Rule>() == 56);
    assert!(core::mem::size_of::<SourceKey>() == 20);
    assert!(core::mem::size_of::<SourceKey4>() == 8);
    assert!(core::mem::size_of::<SourceKey6>() == 20);
    assert!(core::mem::size_of::<SourceState>() == 24);
    assert!(core::mem::size_of::<Event>() == 48);
};
