//! Map names: the one place each name is spelled (kernel object, pins, CLI).
//! BPF object names hold at most 15 characters.

/// Two config slots; `ACTIVE` says which one packets use. A writer fills
/// the other slot (and, on reload, the other set of tries) and flips
/// `ACTIVE`: a packet sees the old policy or the new one, never a mix.
pub const CONFIG: &str = "FW_CONFIG";
pub const ACTIVE: &str = "FW_ACTIVE";
pub const COUNTERS: &str = "FW_COUNTERS";
pub const RULE_COUNTERS: &str = "FW_RULE_CNT";
pub const STATS: &str = "FW_STATS";
/// Per-source tables, one per family (IPv4 keys are 8 bytes, IPv6 20).
pub const SOURCES_V4: &str = "FW_SOURCES4";
pub const SOURCES_V6: &str = "FW_SOURCES6";
/// The one per-source table of earlier layouts (unpinned on upgrade).
pub const SOURCES_LEGACY: &str = "FW_SOURCES";
/// `[[limit]]` class limits by slot, per set (`set * LIMIT_SLOTS + slot`).
pub const LIMITS: &str = "FW_LIMITS";
pub const ALLOW_V4: [&str; 2] = ["FW_ALLOW4_0", "FW_ALLOW4_1"];
pub const ALLOW_V6: [&str; 2] = ["FW_ALLOW6_0", "FW_ALLOW6_1"];
pub const BLOCK_V4: [&str; 2] = ["FW_BLOCK4_0", "FW_BLOCK4_1"];
pub const BLOCK_V6: [&str; 2] = ["FW_BLOCK6_0", "FW_BLOCK6_1"];
pub const LIMIT_V4: [&str; 2] = ["FW_LIMIT4_0", "FW_LIMIT4_1"];
pub const LIMIT_V6: [&str; 2] = ["FW_LIMIT6_0", "FW_LIMIT6_1"];
/// Exact hosts (/32, /128) of the allow and block lists: hashes with small
/// keys, looked up before the tries and the per-source table.
pub const ALLOW_HOST_V4: [&str; 2] = ["FW_ALLOWH4_0", "FW_ALLOWH4_1"];
pub const ALLOW_HOST_V6: [&str; 2] = ["FW_ALLOWH6_0", "FW_ALLOWH6_1"];
pub const BLOCK_HOST_V4: [&str; 2] = ["FW_BLOCKH4_0", "FW_BLOCKH4_1"];
pub const BLOCK_HOST_V6: [&str; 2] = ["FW_BLOCKH6_0", "FW_BLOCKH6_1"];
pub const RULES: &str = "FW_RULES";
/// Rule prefilter: per set, one byte per destination port holding the
/// `l4` classes of the rules whose port range covers it.
pub const RULE_PORTS: &str = "FW_RULE_PORTS";
pub const FLOOD: &str = "FW_FLOOD";
pub const EVENTS: &str = "FW_EVENTS";
/// The SYN challenge's keys (`ChallengeKey`), rotated by the controller.
pub const CHALLENGE_KEY: &str = "FW_CHAL_KEY";
/// The challenge program, reached from the XDP program by a tail call.
/// Pinned: a program array no one holds open is emptied by the kernel.
pub const CHALLENGE_PROG: &str = "FW_CHAL_PROG";

/// Every pinned map, for adopt/detach.
pub const ALL: [&str; 34] = [
    CONFIG,
    ACTIVE,
    COUNTERS,
    RULE_COUNTERS,
    STATS,
    SOURCES_V4,
    SOURCES_V6,
    LIMITS,
    ALLOW_V4[0],
    ALLOW_V4[1],
    ALLOW_V6[0],
    ALLOW_V6[1],
    BLOCK_V4[0],
    BLOCK_V4[1],
    BLOCK_V6[0],
    BLOCK_V6[1],
    LIMIT_V4[0],
    LIMIT_V4[1],
    LIMIT_V6[0],
    LIMIT_V6[1],
    ALLOW_HOST_V4[0],
    ALLOW_HOST_V4[1],
    ALLOW_HOST_V6[0],
    ALLOW_HOST_V6[1],
    BLOCK_HOST_V4[0],
    BLOCK_HOST_V4[1],
    BLOCK_HOST_V6[0],
    BLOCK_HOST_V6[1],
    RULES,
    RULE_PORTS,
    FLOOD,
    EVENTS,
    CHALLENGE_KEY,
    CHALLENGE_PROG,
];

/// Maps whose capacity `[table] max_list_entries` sets: every allow/block
/// map (`max_sources` sizes `SOURCES_V4` and `SOURCES_V6`).
pub const LIST_MAPS: [&str; 16] = [
    ALLOW_V4[0],
    ALLOW_V4[1],
    ALLOW_V6[0],
    ALLOW_V6[1],
    BLOCK_V4[0],
    BLOCK_V4[1],
    BLOCK_V6[0],
    BLOCK_V6[1],
    ALLOW_HOST_V4[0],
    ALLOW_HOST_V4[1],
    ALLOW_HOST_V6[0],
    ALLOW_HOST_V6[1],
    BLOCK_HOST_V4[0],
    BLOCK_HOST_V4[1],
    BLOCK_HOST_V6[0],
    BLOCK_HOST_V6[1],
];

/// Program names in the object.
pub const PROG_XDP: &str = "firewall_xdp";
pub const PROG_TC: &str = "firewall_tc";
/// The clock probe (see `FW_CLOCK`), run once by the loader.
pub const PROG_CLOCK: &str = "firewall_clock";
/// The SYN challenge (answers SYNs, checks RSTs), tail-called from XDP.
pub const PROG_CHALLENGE: &str = "firewall_challenge";
pub const CLOCK_PROBE: &str = "FW_CLOCK";

/// Default capacity of each per-source table (LRU: the least recent source
/// is evicted when full); `[table] max_sources` overrides it at load.
pub const SOURCES_CAPACITY: u32 = 131_072;
/// Default capacity of each allow/block map (per address family);
/// `[table] max_list_entries` overrides it at load.
pub const LIST_CAPACITY: u32 = 262_144;
/// Capacity of each limit-class trie (slot 0 of `LIMITS` is not a class).
pub const LIMIT_CAPACITY: u32 = crate::LIMIT_SLOTS - 1;
/// Most `[[rule]]` entries a policy may hold.
pub const MAX_RULES: u32 = 32;
/// Entries of `RULE_PORTS`: a byte per port, per set.
pub const RULE_PORTS_LEN: u32 = 2 * 65_536;
/// Ring buffer size for events (bytes, power of two).
pub const EVENTS_BYTES: u32 = 256 * 1024;
