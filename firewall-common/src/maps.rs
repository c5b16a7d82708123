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
pub const SOURCES: &str = "FW_SOURCES";
pub const ALLOW_V4: [&str; 2] = ["FW_ALLOW4_0", "FW_ALLOW4_1"];
pub const ALLOW_V6: [&str; 2] = ["FW_ALLOW6_0", "FW_ALLOW6_1"];
pub const BLOCK_V4: [&str; 2] = ["FW_BLOCK4_0", "FW_BLOCK4_1"];
pub const BLOCK_V6: [&str; 2] = ["FW_BLOCK6_0", "FW_BLOCK6_1"];
pub const LIMIT_V4: [&str; 2] = ["FW_LIMIT4_0", "FW_LIMIT4_1"];
pub const LIMIT_V6: [&str; 2] = ["FW_LIMIT6_0", "FW_LIMIT6_1"];
pub const RULES: &str = "FW_RULES";
pub const FLOOD: &str = "FW_FLOOD";
pub const EVENTS: &str = "FW_EVENTS";

/// Every pinned map, for adopt/detach.
pub const ALL: [&str; 21] = [
    CONFIG,
    ACTIVE,
    COUNTERS,
    RULE_COUNTERS,
    STATS,
    SOURCES,
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
    RULES,
    FLOOD,
    EVENTS,
];

/// Program names in the object.
pub const PROG_XDP: &str = "firewall_xdp";
pub const PROG_TC: &str = "firewall_tc";

/// Capacity of the per-source table (LRU: the least recent source is
/// evicted when full).
pub const SOURCES_CAPACITY: u32 = 131_072;
/// Capacity of each allow/block trie (per address family).
pub const LIST_CAPACITY: u32 = 262_144;
/// Capacity of each limit-class trie.
pub const LIMIT_CAPACITY: u32 = 16_384;
/// Most `[[rule]]` entries a policy may hold.
pub const MAX_RULES: u32 = 32;
/// Ring buffer size for events (bytes, power of two).
pub const EVENTS_BYTES: u32 = 256 * 1024;
