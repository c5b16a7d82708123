//! Map definitions. Names equal those in `firewall_common::maps` (the
//! controller opens each by that name). All are pinned by name, so a new
//! load under the same pin directory reuses them: state outlives programs.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use firewall_common::{
    maps::{
        EVENTS_BYTES, LIMIT_CAPACITY, LIST_CAPACITY, MAX_RULES, RULE_PORTS_LEN, SOURCES_CAPACITY,
    },
    AddrV4, AddrV6, Bucket, ChallengeKey, Config, Counter, Handoff, Limit, LimitEntry, ListEntry,
    Rule, SourceKey4, SourceKey6, SourceState, LIMIT_SLOTS, N_STATS, N_VERDICTS,
};

#[map(name = "FW_CONFIG")]
pub static CONFIG: Array<Config> = Array::pinned(2, 0);

#[map(name = "FW_ACTIVE")]
pub static ACTIVE: Array<u32> = Array::pinned(1, 0);

#[map(name = "FW_COUNTERS")]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(N_VERDICTS, 0);

#[map(name = "FW_RULE_CNT")]
pub static RULE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_RULES * N_VERDICTS, 0);

#[map(name = "FW_STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::pinned(N_STATS, 0);

#[map(name = "FW_SOURCES4")]
pub static SOURCES_V4: LruHashMap<SourceKey4, SourceState> =
    LruHashMap::pinned(SOURCES_CAPACITY, 0);

#[map(name = "FW_SOURCES6")]
pub static SOURCES_V6: LruHashMap<SourceKey6, SourceState> =
    LruHashMap::pinned(SOURCES_CAPACITY, 0);

/// `[[limit]]` class limits, by the slot their trie entry names, per set.
#[map(name = "FW_LIMITS")]
pub static LIMITS: Array<Limit> = Array::pinned(2 * LIMIT_SLOTS, 0);

#[map(name = "FW_ALLOW4_0")]
pub static ALLOW_V4_0: LpmTrie<AddrV4, ListEntry> = LpmTrie::pinned(LIST_CAPACITY, 0);

#[map(name = "FW_ALLOW4_1")]
pub static ALLOW_V4_1: LpmTrie<AddrV4, ListEntry> = LpmTrie::pinned(LIST_CAPACITY, 0);

#[map(name = "FW_ALLOW6_0")]
pub static ALLOW_V6_0: LpmTrie<AddrV6, ListEntry> = LpmTrie::pinned(LIST_CAPACITY, 0);

#[map(name = "FW_ALLOW6_1")]
pub static ALLOW_V6_1: LpmTrie<AddrV6, ListEntry> = LpmTrie::pinned(LIST_CAPACITY, 0);

#[map(name = "FW_BLOCK4_0")]
pub static BLOCK_V4_0: LpmTrie<AddrV4, ListEntry> = LpmTrie::pinned(LIST_CAPACITY, 0);

#[map(name = "FW_BLOCK4_1")]
pub static BLOCK_V4_1: LpmTrie<AddrV4, ListEntry> = LpmTrie::pinned(LIST_CAPACITY, 0);

#[map(name = "FW_BLOCK6_0")]
pub static BLOCK_V6_0: LpmTrie<AddrV6, ListEntry> = LpmTrie::pinned(LIST_CAPACITY, 0);

#[map(name = "FW_BLOCK6_1")]
pub static BLOCK_V6_1: LpmTrie<AddrV6, ListEntry> = LpmTrie::pinned(LIST_CAPACITY, 0);

#[map(name = "FW_LIMIT4_0")]
pub static LIMIT_V4_0: LpmTrie<AddrV4, LimitEntry> = LpmTrie::pinned(LIMIT_CAPACITY, 0);

#[map(name = "FW_LIMIT4_1")]
pub static LIMIT_V4_1: LpmTrie<AddrV4, LimitEntry> = LpmTrie::pinned(LIMIT_CAPACITY, 0);

#[map(name = "FW_LIMIT6_0")]
pub static LIMIT_V6_0: LpmTrie<AddrV6, LimitEntry> = LpmTrie::pinned(LIMIT_CAPACITY, 0);

#[map(name = "FW_LIMIT6_1")]
pub static LIMIT_V6_1: LpmTrie<AddrV6, LimitEntry> = LpmTrie::pinned(LIMIT_CAPACITY, 0);

/// Exact hosts: allocated per entry (no preallocation), so an empty or
/// short list costs no memory whatever its capacity.
const NO_PREALLOC: u32 = 1;

#[map(name = "FW_ALLOWH4_0")]
pub static ALLOW_HOST_V4_0: HashMap<AddrV4, ListEntry> =
    HashMap::pinned(LIST_CAPACITY, NO_PREALLOC);

#[map(name = "FW_ALLOWH4_1")]
pub static ALLOW_HOST_V4_1: HashMap<AddrV4, ListEntry> =
    HashMap::pinned(LIST_CAPACITY, NO_PREALLOC);

#[map(name = "FW_ALLOWH6_0")]
pub static ALLOW_HOST_V6_0: HashMap<AddrV6, ListEntry> =
    HashMap::pinned(LIST_CAPACITY, NO_PREALLOC);

#[map(name = "FW_ALLOWH6_1")]
pub static ALLOW_HOST_V6_1: HashMap<AddrV6, ListEntry> =
    HashMap::pinned(LIST_CAPACITY, NO_PREALLOC);

#[map(name = "FW_BLOCKH4_0")]
pub static BLOCK_HOST_V4_0: HashMap<AddrV4, ListEntry> =
    HashMap::pinned(LIST_CAPACITY, NO_PREALLOC);

#[map(name = "FW_BLOCKH4_1")]
pub static BLOCK_HOST_V4_1: HashMap<AddrV4, ListEntry> =
    HashMap::pinned(LIST_CAPACITY, NO_PREALLOC);

#[map(name = "FW_BLOCKH6_0")]
pub static BLOCK_HOST_V6_0: HashMap<AddrV6, ListEntry> =
    HashMap::pinned(LIST_CAPACITY, NO_PREALLOC);

#[map(name = "FW_BLOCKH6_1")]
pub static BLOCK_HOST_V6_1: HashMap<AddrV6, ListEntry> =
    HashMap::pinned(LIST_CAPACITY, NO_PREALLOC);

/// Rule prefilter of set `s` at `s * 65536 + port`: `l4` class bits.
#[map(name = "FW_RULE_PORTS")]
pub static RULE_PORTS: Array<u8> = Array::pinned(RULE_PORTS_LEN, 0);

/// Rules of config slot `s` are at `s * MAX_RULES ..`.
#[map(name = "FW_RULES")]
pub static RULES: Array<Rule> = Array::pinned(2 * MAX_RULES, 0);

/// Per-CPU buckets: new-source admissions and event emission.
#[map(name = "FW_FLOOD")]
pub static FLOOD: PerCpuArray<Bucket> = PerCpuArray::pinned(2, 0);

#[map(name = "FW_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

/// Per-CPU scratch slot. A value read back from a map is opaque to the
/// verifier: passing the matched rule's index through it keeps the verifier
/// from exploring the rest of the program once per possible index.
#[map(name = "FW_SCRATCH")]
pub static SCRATCH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The SYN challenge's keys, written by the controller (see
/// `firewall_common::challenge`).
#[map(name = "FW_CHAL_KEY")]
pub static CHALLENGE_KEY: Array<ChallengeKey> = Array::pinned(1, 0);

/// Slot 0: the challenge program. Pinned, so that it stays filled while
/// the program runs without a controller.
#[map(name = "FW_CHAL_PROG")]
pub static CHALLENGE_PROG: ProgramArray = ProgramArray::pinned(1, 0);

/// Per-CPU bucket of challenge answers (`Config::challenge_limit`).
#[map(name = "FW_CHAL_BUDGET")]
pub static CHALLENGE_BUDGET: PerCpuArray<Bucket> = PerCpuArray::with_max_entries(1, 0);

/// What the XDP program hands to the challenge program, per CPU: a tail
/// call keeps the registers and stack of neither side.
#[map(name = "FW_HANDOFF")]
pub static HANDOFF: PerCpuArray<Handoff> = PerCpuArray::with_max_entries(1, 0);

/// The clock probe's output: jiffies and CLOCK_MONOTONIC ns, read together.
/// Not pinned: only the loader that ran the probe reads it.
#[map(name = "FW_CLOCK")]
pub static CLOCK_PROBE: Array<u64> = Array::with_max_entries(2, 0);
