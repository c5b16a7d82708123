//! Allow/block list and limit-class entries over the pinned maps, with both
//! address families behind one `IpNet` interface. List entries for exact
//! hosts (/32, /128) live in hashes keyed by the address, prefixes in LPM
//! tries; callers never see the difference. Reads use the active set;
//! run-time writes go to both sets (see `Maps`); `*_in` take an explicit set
//! for a reload's staging.

use anyhow::Result;
use aya::maps::MapError;
use firewall_common::{LimitEntry, ListEntry};
use ipnet::IpNet;

use super::maps::{key_v4, key_v6, Maps};
use crate::addr::{v4_bytes, v6_bytes};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    Allow,
    Block,
}

impl List {
    pub fn name(self) -> &'static str {
        match self {
            List::Allow => "allow",
            List::Block => "block",
        }
    }
}

/// The bytes of a map value, as the kernel stores it.
fn pod_bytes(e: &ListEntry) -> &[u8] {
    // SAFETY: ListEntry is #[repr(C)] plain data with explicit padding
    // fields (its size is asserted in firewall-common): every byte is
    // initialised.
    #[allow(unsafe_code)]
    unsafe {
        std::slice::from_raw_parts(
            e as *const ListEntry as *const u8,
            std::mem::size_of::<ListEntry>(),
        )
    }
}

fn is_missing(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn removed(r: Result<(), MapError>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if is_missing(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn found<V>(r: Result<V, MapError>) -> Result<Option<V>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Dispatch on address family: `$v4`/`$v6` are the tries of one set, `$k`
/// the key built for the family.
macro_rules! by_family {
    ($net:expr, $v4:expr, $v6:expr, |$t:ident, $k:ident| $body:expr) => {{
        let p = $net.prefix_len();
        match $net {
            IpNet::V4(_) => {
                let $t = $v4;
                let $k = key_v4(p, v4_bytes($net).expect("v4"));
                $body
            }
            IpNet::V6(_) => {
                let $t = $v6;
                let $k = key_v6(p, v6_bytes($net).expect("v6"));
                $body
            }
        }
    }};
}

/// The `LIMITS` slots of one set's classes.
#[derive(Default)]
pub(super) struct Slots {
    by_net: std::collections::HashMap<IpNet, u16>,
}

impl Slots {
    /// The prefix's slot, or the lowest free one (slot 0 is not a class's).
    fn slot_for(&mut self, net: &IpNet) -> Result<u16> {
        if let Some(s) = self.by_net.get(net).filter(|s| **s != 0) {
            return Ok(*s);
        }
        let taken: std::collections::HashSet<u16> = self.by_net.values().copied().collect();
        let slot = (1..firewall_common::LIMIT_SLOTS as u16)
            .find(|s| !taken.contains(s))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no room for another limit class: at most {} fit",
                    firewall_common::maps::LIMIT_CAPACITY
                )
            })?;
        self.by_net.insert(*net, slot);
        Ok(slot)
    }

    /// Forget a removed class's slot.
    pub(super) fn free(&mut self, net: &IpNet) {
        self.by_net.remove(net);
    }
}

/// Every entry of an IPv4 and an IPv6 trie.
fn trie_entries(
    v4: &super::maps::V4List,
    v6: &super::maps::V6List,
) -> Result<Vec<(IpNet, ListEntry)>> {
    let mut out = Vec::new();
    for item in v4.iter() {
        let (k, v) = item?;
        out.push((IpNet::new(k.data().into(), k.prefix_len() as u8)?, v));
    }
    for item in v6.iter() {
        let (k, v) = item?;
        out.push((IpNet::new(k.data().into(), k.prefix_len() as u8)?, v));
    }
    Ok(out)
}

/// Whether `net` is one address: such entries go to the host hashes.
pub(super) fn is_host(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// The maps of one list, set and address family, picked for an entry.
macro_rules! pick {
    ($self:expr, $set:expr, $list:expr, $net:expr, $($mut:ident)?,
     trie |$t:ident, $tk:ident| $trie:expr, host |$h:ident, $hk:ident| $host:expr) => {{
        let s = $set;
        let p = $net.prefix_len();
        let host = is_host($net);
        match ($list, $net) {
            (List::Allow, IpNet::V4(n)) if host => { let $h = &$($mut)? $self.allow_host_v4[s]; let $hk = n.addr().octets(); $host }
            (List::Block, IpNet::V4(n)) if host => { let $h = &$($mut)? $self.block_host_v4[s]; let $hk = n.addr().octets(); $host }
            (List::Allow, IpNet::V6(n)) if host => { let $h = &$($mut)? $self.allow_host_v6[s]; let $hk = n.addr().octets(); $host }
            (List::Block, IpNet::V6(n)) if host => { let $h = &$($mut)? $self.block_host_v6[s]; let $hk = n.addr().octets(); $host }
            (List::Allow, IpNet::V4(_)) => { let $t = &$($mut)? $self.allow_v4[s]; let $tk = key_v4(p, v4_bytes($net).expect("v4")); $trie }
            (List::Block, IpNet::V4(_)) => { let $t = &$($mut)? $self.block_v4[s]; let $tk = key_v4(p, v4_bytes($net).expect("v4")); $trie }
            (List::Allow, IpNet::V6(_)) => { let $t = &$($mut)? $self.allow_v6[s]; let $tk = key_v6(p, v6_bytes($net).expect("v6")); $trie }
            (List::Block, IpNet::V6(_)) => { let $t = &$($mut)? $self.block_v6[s]; let $tk = key_v6(p, v6_bytes($net).expect("v6")); $trie }
        }
    }};
}

impl Maps {
    /// The entry for exactly `net` (not a covering prefix) in set `set`.
    pub(super) fn list_get_in(
        &self,
        set: usize,
        list: List,
        net: &IpNet,
    ) -> Result<Option<ListEntry>> {
        let e = pick!(self, set, list, net, ,
            trie |t, k| found(t.get(&k, 0))?,
            host |h, k| found(h.get(&k, 0))?);
        Ok(e.filter(|e| e.prefix_len == net.prefix_len()))
    }

    pub(super) fn list_get(&self, list: List, net: &IpNet) -> Result<Option<ListEntry>> {
        self.list_get_in(self.active_set()?, list, net)
    }

    pub(super) fn list_put_in(
        &mut self,
        set: usize,
        list: List,
        net: &IpNet,
        mut entry: ListEntry,
    ) -> Result<()> {
        entry.prefix_len = net.prefix_len();
        pick!(
            self,
            set,
            list,
            net,
            mut,
            trie | t,
            k | t.insert(&k, entry, 0)?,
            host | h,
            k | h.insert(k, entry, 0)?
        );
        Ok(())
    }

    /// Insert into both sets.
    pub(super) fn list_put(&mut self, list: List, net: &IpNet, entry: ListEntry) -> Result<()> {
        for set in [0, 1] {
            self.list_put_in(set, list, net, entry)?;
        }
        Ok(())
    }

    pub(super) fn list_del_in(&mut self, set: usize, list: List, net: &IpNet) -> Result<bool> {
        pick!(
            self,
            set,
            list,
            net,
            mut,
            trie | t,
            k | removed(t.remove(&k)),
            host | h,
            k | removed(h.remove(&k))
        )
    }

    /// Remove exactly `net` from both sets; false if it was not there.
    pub(super) fn list_del(&mut self, list: List, net: &IpNet) -> Result<bool> {
        let a = self.list_del_in(0, list, net)?;
        let b = self.list_del_in(1, list, net)?;
        Ok(a || b)
    }

    /// Every entry of a list in set `set`, both families, hosts and prefixes.
    pub(super) fn list_all_in(&self, set: usize, list: List) -> Result<Vec<(IpNet, ListEntry)>> {
        let (v4, v6, h4, h6) = match list {
            List::Allow => (
                &self.allow_v4[set],
                &self.allow_v6[set],
                &self.allow_host_v4[set],
                &self.allow_host_v6[set],
            ),
            List::Block => (
                &self.block_v4[set],
                &self.block_v6[set],
                &self.block_host_v4[set],
                &self.block_host_v6[set],
            ),
        };
        let mut out = trie_entries(v4, v6)?;
        for item in h4.iter() {
            let (k, v) = item?;
            out.push((IpNet::new(k.into(), 32)?, v));
        }
        for item in h6.iter() {
            let (k, v) = item?;
            out.push((IpNet::new(k.into(), 128)?, v));
        }
        Ok(out)
    }

    pub(super) fn list_all(&self, list: List) -> Result<Vec<(IpNet, ListEntry)>> {
        self.list_all_in(self.active_set()?, list)
    }

    /// Insert many entries into both sets, in batches of `chunk`; `progress`
    /// is told how many are done after each batch.
    pub(super) fn list_put_many(
        &mut self,
        list: List,
        entries: &[(IpNet, ListEntry)],
        chunk: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<()> {
        use firewall_common::maps as names;
        // Target maps, per set: v4 trie, v6 trie, v4 hosts, v6 hosts.
        let targets = |set: usize| match list {
            List::Allow => [
                names::ALLOW_V4[set],
                names::ALLOW_V6[set],
                names::ALLOW_HOST_V4[set],
                names::ALLOW_HOST_V6[set],
            ],
            List::Block => [
                names::BLOCK_V4[set],
                names::BLOCK_V6[set],
                names::BLOCK_HOST_V4[set],
                names::BLOCK_HOST_V6[set],
            ],
        };
        let target_of = |net: &IpNet| match (net, is_host(net)) {
            (IpNet::V4(_), false) => 0,
            (IpNet::V6(_), false) => 1,
            (IpNet::V4(_), true) => 2,
            (IpNet::V6(_), true) => 3,
        };
        let mut done = 0;
        for part in entries.chunks(chunk.max(1)) {
            let mut keys: [Vec<u8>; 4] = Default::default();
            let mut vals: [Vec<u8>; 4] = Default::default();
            let mut counts = [0usize; 4];
            for (net, e) in part {
                let mut e = *e;
                e.prefix_len = net.prefix_len();
                let t = target_of(net);
                // Keys as the kernel packs them: a trie key is the prefix
                // length, then the address; a host key the address alone.
                if t < 2 {
                    keys[t].extend_from_slice(&(net.prefix_len() as u32).to_ne_bytes());
                }
                match net {
                    IpNet::V4(n) => keys[t].extend_from_slice(&n.addr().octets()),
                    IpNet::V6(n) => keys[t].extend_from_slice(&n.addr().octets()),
                }
                vals[t].extend_from_slice(pod_bytes(&e));
                counts[t] += 1;
            }
            for set in [0, 1] {
                for (t, name) in targets(set).into_iter().enumerate() {
                    if counts[t] == 0 {
                        continue;
                    }
                    let map = aya::maps::MapData::from_pin(self.dir.join(name))?;
                    if crate::bpf_sys::batch::update(&map, &keys[t], &vals[t], counts[t]).is_err() {
                        // No batch support for this map type here: one by one.
                        for (net, e) in part.iter().filter(|(n, _)| target_of(n) == t) {
                            self.list_put_in(set, list, net, *e)?;
                        }
                    }
                }
            }
            done += part.len();
            progress(done);
        }
        Ok(())
    }

    /// Exact hosts that an older layout kept in the tries move to the host
    /// hashes, where lookups and the CLI look for them.
    pub(super) fn move_hosts_out_of_tries(&mut self) -> Result<usize> {
        let mut moved = 0;
        for set in [0, 1] {
            for list in [List::Allow, List::Block] {
                let (v4, v6) = match list {
                    List::Allow => (&self.allow_v4[set], &self.allow_v6[set]),
                    List::Block => (&self.block_v4[set], &self.block_v6[set]),
                };
                let hosts = trie_entries(v4, v6)?;
                for (net, e) in hosts.into_iter().filter(|(n, _)| is_host(n)) {
                    match net {
                        IpNet::V4(_) => {
                            let t = match list {
                                List::Allow => &mut self.allow_v4[set],
                                List::Block => &mut self.block_v4[set],
                            };
                            t.remove(&key_v4(32, v4_bytes(&net).expect("v4")))?;
                        }
                        IpNet::V6(_) => {
                            let t = match list {
                                List::Allow => &mut self.allow_v6[set],
                                List::Block => &mut self.block_v6[set],
                            };
                            t.remove(&key_v6(128, v6_bytes(&net).expect("v6")))?;
                        }
                    }
                    self.list_put_in(set, list, &net, e)?;
                    moved += 1;
                }
            }
        }
        Ok(moved)
    }

    /// Entries migrated from a layout without `prefix_len` get it from their
    /// key again (exact lookups depend on it).
    pub(super) fn repair_prefix_lens(&mut self) -> Result<()> {
        for set in [0, 1] {
            for list in [List::Allow, List::Block] {
                for (net, e) in self.list_all_in(set, list)? {
                    if e.prefix_len != net.prefix_len() {
                        self.list_put_in(set, list, &net, e)?;
                    }
                }
            }
            for (net, e) in self.limit_all_in(set)? {
                if e.prefix_len != net.prefix_len() {
                    self.limit_put_in(set, &net, e)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn limit_get(&self, net: &IpNet) -> Result<Option<LimitEntry>> {
        let set = self.active_set()?;
        let e = by_family!(net, &self.limit_v4[set], &self.limit_v6[set], |t, k| found(
            t.get(&k, 0)
        )?);
        Ok(e.filter(|e| e.prefix_len == net.prefix_len()))
    }

    /// Insert a class into set `set`, giving it a slot in `LIMITS` (its
    /// old one if the prefix had one) and writing its limit there.
    pub(super) fn limit_put_in(
        &mut self,
        set: usize,
        net: &IpNet,
        entry: LimitEntry,
    ) -> Result<()> {
        let mut slots = self.limit_slots_in(set)?;
        self.limit_put_slotted(set, net, entry, &mut slots)
    }

    /// Which slot each class of set `set` has.
    pub(super) fn limit_slots_in(&self, set: usize) -> Result<Slots> {
        let mut s = Slots::default();
        for (net, e) in self.limit_all_in(set)? {
            s.by_net.insert(net, e.slot);
        }
        Ok(s)
    }

    /// `limit_put_in` with the set's slots already read (for many puts).
    pub(super) fn limit_put_slotted(
        &mut self,
        set: usize,
        net: &IpNet,
        mut entry: LimitEntry,
        slots: &mut Slots,
    ) -> Result<()> {
        entry.prefix_len = net.prefix_len();
        entry.slot = slots.slot_for(net)?;
        // The limit goes in first: a packet that finds the entry finds it.
        self.limits.set(
            set as u32 * firewall_common::LIMIT_SLOTS + entry.slot as u32,
            entry.limit,
            0,
        )?;
        by_family!(
            net,
            &mut self.limit_v4[set],
            &mut self.limit_v6[set],
            |t, k| t.insert(&k, entry, 0)?
        );
        Ok(())
    }

    /// Insert into both sets.
    pub(super) fn limit_put(&mut self, net: &IpNet, entry: LimitEntry) -> Result<()> {
        for set in [0, 1] {
            self.limit_put_in(set, net, entry)?;
        }
        Ok(())
    }

    pub(super) fn limit_del_in(&mut self, set: usize, net: &IpNet) -> Result<bool> {
        by_family!(
            net,
            &mut self.limit_v4[set],
            &mut self.limit_v6[set],
            |t, k| removed(t.remove(&k))
        )
    }

    pub(super) fn limit_del(&mut self, net: &IpNet) -> Result<bool> {
        let a = self.limit_del_in(0, net)?;
        let b = self.limit_del_in(1, net)?;
        Ok(a || b)
    }

    pub(super) fn limit_all_in(&self, set: usize) -> Result<Vec<(IpNet, LimitEntry)>> {
        let mut out = Vec::new();
        for item in self.limit_v4[set].iter() {
            let (k, v) = item?;
            out.push((IpNet::new(k.data().into(), k.prefix_len() as u8)?, v));
        }
        for item in self.limit_v6[set].iter() {
            let (k, v) = item?;
            out.push((IpNet::new(k.data().into(), k.prefix_len() as u8)?, v));
        }
        Ok(out)
    }

    pub(super) fn limit_all(&self) -> Result<Vec<(IpNet, LimitEntry)>> {
        self.limit_all_in(self.active_set()?)
    }
}
