//! Allow/block list and limit-class entries over the pinned LPM tries,
//! with both address families behind one `IpNet` interface. Reads use the
//! active set; run-time writes go to both sets (see `Maps`); `*_in` take an
//! explicit set for a reload's staging.

use anyhow::Result;
use aya::maps::MapError;
use firewall_common::{LimitEntry, ListEntry};
use ipnet::IpNet;

use crate::{
    addr::{v4_bytes, v6_bytes},
    maps::{key_v4, key_v6, Maps},
};

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

impl Maps {
    /// The entry for exactly `net` (not a covering prefix) in set `set`.
    pub fn list_get_in(&self, set: usize, list: List, net: &IpNet) -> Result<Option<ListEntry>> {
        let (v4, v6) = match list {
            List::Allow => (&self.allow_v4[set], &self.allow_v6[set]),
            List::Block => (&self.block_v4[set], &self.block_v6[set]),
        };
        let e = by_family!(net, v4, v6, |t, k| found(t.get(&k, 0))?);
        Ok(e.filter(|e| e.prefix_len == net.prefix_len()))
    }

    pub fn list_get(&self, list: List, net: &IpNet) -> Result<Option<ListEntry>> {
        self.list_get_in(self.active_set()?, list, net)
    }

    pub fn list_put_in(
        &mut self,
        set: usize,
        list: List,
        net: &IpNet,
        mut entry: ListEntry,
    ) -> Result<()> {
        entry.prefix_len = net.prefix_len();
        let (v4, v6) = match list {
            List::Allow => (&mut self.allow_v4[set], &mut self.allow_v6[set]),
            List::Block => (&mut self.block_v4[set], &mut self.block_v6[set]),
        };
        by_family!(net, v4, v6, |t, k| t.insert(&k, entry, 0)?);
        Ok(())
    }

    /// Insert into both sets.
    pub fn list_put(&mut self, list: List, net: &IpNet, entry: ListEntry) -> Result<()> {
        for set in [0, 1] {
            self.list_put_in(set, list, net, entry)?;
        }
        Ok(())
    }

    pub fn list_del_in(&mut self, set: usize, list: List, net: &IpNet) -> Result<bool> {
        let (v4, v6) = match list {
            List::Allow => (&mut self.allow_v4[set], &mut self.allow_v6[set]),
            List::Block => (&mut self.block_v4[set], &mut self.block_v6[set]),
        };
        by_family!(net, v4, v6, |t, k| removed(t.remove(&k)))
    }

    /// Remove exactly `net` from both sets; false if it was not there.
    pub fn list_del(&mut self, list: List, net: &IpNet) -> Result<bool> {
        let a = self.list_del_in(0, list, net)?;
        let b = self.list_del_in(1, list, net)?;
        Ok(a || b)
    }

    /// Every entry of a list in set `set`, both families.
    pub fn list_all_in(&self, set: usize, list: List) -> Result<Vec<(IpNet, ListEntry)>> {
        let (v4, v6) = match list {
            List::Allow => (&self.allow_v4[set], &self.allow_v6[set]),
            List::Block => (&self.block_v4[set], &self.block_v6[set]),
        };
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

    pub fn list_all(&self, list: List) -> Result<Vec<(IpNet, ListEntry)>> {
        self.list_all_in(self.active_set()?, list)
    }

    /// Insert many entries into both sets, in batches of `chunk`; `progress`
    /// is told how many are done after each batch.
    pub fn list_put_many(
        &mut self,
        list: List,
        entries: &[(IpNet, ListEntry)],
        chunk: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<()> {
        use firewall_common::maps as names;
        let (n4, n6) = match list {
            List::Allow => (names::ALLOW_V4, names::ALLOW_V6),
            List::Block => (names::BLOCK_V4, names::BLOCK_V6),
        };
        let mut done = 0;
        for part in entries.chunks(chunk.max(1)) {
            // Keys as the kernel packs them: prefix length, then address.
            let (mut k4, mut v4, mut k6, mut v6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let (mut c4, mut c6) = (0, 0);
            for (net, e) in part {
                let mut e = *e;
                e.prefix_len = net.prefix_len();
                let val = pod_bytes(&e);
                let (keys, vals, count) = match net {
                    IpNet::V4(_) => (&mut k4, &mut v4, &mut c4),
                    IpNet::V6(_) => (&mut k6, &mut v6, &mut c6),
                };
                keys.extend_from_slice(&(net.prefix_len() as u32).to_ne_bytes());
                match net {
                    IpNet::V4(n) => keys.extend_from_slice(&n.addr().octets()),
                    IpNet::V6(n) => keys.extend_from_slice(&n.addr().octets()),
                }
                vals.extend_from_slice(val);
                *count += 1;
            }
            for set in [0, 1] {
                for (name, keys, vals, count) in [(n4[set], &k4, &v4, c4), (n6[set], &k6, &v6, c6)]
                {
                    if count == 0 {
                        continue;
                    }
                    let map = aya::maps::MapData::from_pin(self.dir.join(name))?;
                    if crate::batch::update(&map, keys, vals, count).is_err() {
                        // No batch support for tries on this kernel: one by one.
                        for (net, e) in part
                            .iter()
                            .filter(|(n, _)| matches!(n, IpNet::V4(_)) == (name == n4[set]))
                        {
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

    /// Entries migrated from a layout without `prefix_len` get it from their
    /// key again (exact lookups depend on it).
    pub fn repair_prefix_lens(&mut self) -> Result<()> {
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

    pub fn limit_get(&self, net: &IpNet) -> Result<Option<LimitEntry>> {
        let set = self.active_set()?;
        let e = by_family!(net, &self.limit_v4[set], &self.limit_v6[set], |t, k| found(
            t.get(&k, 0)
        )?);
        Ok(e.filter(|e| e.prefix_len == net.prefix_len()))
    }

    pub fn limit_put_in(&mut self, set: usize, net: &IpNet, mut entry: LimitEntry) -> Result<()> {
        entry.prefix_len = net.prefix_len();
        by_family!(
            net,
            &mut self.limit_v4[set],
            &mut self.limit_v6[set],
            |t, k| t.insert(&k, entry, 0)?
        );
        Ok(())
    }

    /// Insert into both sets.
    pub fn limit_put(&mut self, net: &IpNet, entry: LimitEntry) -> Result<()> {
        for set in [0, 1] {
            self.limit_put_in(set, net, entry)?;
        }
        Ok(())
    }

    pub fn limit_del_in(&mut self, set: usize, net: &IpNet) -> Result<bool> {
        by_family!(
            net,
            &mut self.limit_v4[set],
            &mut self.limit_v6[set],
            |t, k| removed(t.remove(&k))
        )
    }

    pub fn limit_del(&mut self, net: &IpNet) -> Result<bool> {
        let a = self.limit_del_in(0, net)?;
        let b = self.limit_del_in(1, net)?;
        Ok(a || b)
    }

    pub fn limit_all_in(&self, set: usize) -> Result<Vec<(IpNet, LimitEntry)>> {
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

    pub fn limit_all(&self) -> Result<Vec<(IpNet, LimitEntry)>> {
        self.limit_all_in(self.active_set()?)
    }
}
