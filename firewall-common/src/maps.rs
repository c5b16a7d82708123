//! Map names: the one place each name is spelled (kernel object, pins, CLI).
//! BPF object names hold at most 15 characters.

pub const CONFIG: &str = "FW_CONFIG";
pub const COUNTERS: &str = "FW_COUNTERS";
pub const RULE_COUNTERS: &str = "FW_RULE_CNT";
pub const STATS: &str = "FW_STATS";
pub const SOURCES: &str = "FW_SOURCES";
pub const ALLOW_V4: &str = "FW_ALLOW_V4";
pub const ALLOW_V6: &str = "FW_ALLOW_V6";
pub const BLOCK_V4: &str = "FW_BLOCK_V4";
pub const BLOCK_V6: &str = "FW_BLOCK_V6";
pub const LIMIT_V4: &str = "FW_LIMIT_V4";
pub const LIMIT_V6: &str = "FW_LIMIT_V6";
pub const RULES: &str = "FW_RULES";
pub const FLOOD: &str = "FW_FLOOD";
pub const EVENTS: &str = "FW_EVENTS";

/// Every pinned map, for adopt/detach.
pub const ALL: [&str; 14] = [
    CONFIG,
    COUNTERS,
    RULE_COUNTERS,
    STATS,
    SOURCES,
    ALLOW_V4,
    ALLOW_V6,
    BLOCK_V4,
    BLOCK_V6,
    LIMIT_V4,
    LIMIT_V6,
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
