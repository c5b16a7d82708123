//! Allow/block list and limit-class entries over the pinned LPM tries,
//! with both address families behind one `IpNet` interface.

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

fn missing(r: Result<(), MapError>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

fn found<V>(r: Result<V, MapError>) -> Result<Option<V>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

impl Maps {
    /// The entry for exactly `net` (not a covering prefix).
    pub fn list_get(&self, list: List, net: &IpNet) -> Result<Option<ListEntry>> {
        let p = net.prefix_len();
        let e = match (list, net) {
            (List::Allow, IpNet::V4(_)) => {
                found(self.allow_v4.get(&key_v4(p, v4_bytes(net).unwrap()), 0))?
            }
            (List::Block, IpNet::V4(_)) => {
                found(self.block_v4.get(&key_v4(p, v4_bytes(net).unwrap()), 0))?
            }
            (List::Allow, IpNet::V6(_)) => {
                found(self.allow_v6.get(&key_v6(p, v6_bytes(net).unwrap()), 0))?
            }
            (List::Block, IpNet::V6(_)) => {
                found(self.block_v6.get(&key_v6(p, v6_bytes(net).unwrap()), 0))?
            }
        };
        Ok(e.filter(|e| e.prefix_len == p))
    }

    pub fn list_put(&mut self, list: List, net: &IpNet, mut entry: ListEntry) -> Result<()> {
        let p = net.prefix_len();
        entry.prefix_len = p;
        match (list, net) {
            (List::Allow, IpNet::V4(_)) => {
                self.allow_v4
                    .insert(&key_v4(p, v4_bytes(net).unwrap()), entry, 0)?
            }
            (List::Block, IpNet::V4(_)) => {
                self.block_v4
                    .insert(&key_v4(p, v4_bytes(net).unwrap()), entry, 0)?
            }
            (List::Allow, IpNet::V6(_)) => {
                self.allow_v6
                    .insert(&key_v6(p, v6_bytes(net).unwrap()), entry, 0)?
            }
            (List::Block, IpNet::V6(_)) => {
                self.block_v6
                    .insert(&key_v6(p, v6_bytes(net).unwrap()), entry, 0)?
            }
        }
        Ok(())
    }

    /// Remove exactly `net`; false if it was not there.
    pub fn list_del(&mut self, list: List, net: &IpNet) -> Result<bool> {
        let p = net.prefix_len();
        missing(match (list, net) {
            (List::Allow, IpNet::V4(_)) => self.allow_v4.remove(&key_v4(p, v4_bytes(net).unwrap())),
            (List::Block, IpNet::V4(_)) => self.block_v4.remove(&key_v4(p, v4_bytes(net).unwrap())),
            (List::Allow, IpNet::V6(_)) => self.allow_v6.remove(&key_v6(p, v6_bytes(net).unwrap())),
            (List::Block, IpNet::V6(_)) => self.block_v6.remove(&key_v6(p, v6_bytes(net).unwrap())),
        })
    }

    /// Every entry of a list, both families.
    pub fn list_all(&self, list: List) -> Result<Vec<(IpNet, ListEntry)>> {
        let (v4, v6) = match list {
            List::Allow => (&self.allow_v4, &self.allow_v6),
            List::Block => (&self.block_v4, &self.block_v6),
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

    pub fn limit_get(&self, net: &IpNet) -> Result<Option<LimitEntry>> {
        let p = net.prefix_len();
        let e = match net {
            IpNet::V4(_) => found(self.limit_v4.get(&key_v4(p, v4_bytes(net).unwrap()), 0))?,
            IpNet::V6(_) => found(self.limit_v6.get(&key_v6(p, v6_bytes(net).unwrap()), 0))?,
        };
        Ok(e.filter(|e| e.prefix_len == p))
    }

    pub fn limit_put(&mut self, net: &IpNet, mut entry: LimitEntry) -> Result<()> {
        let p = net.prefix_len();
        entry.prefix_len = p;
        match net {
            IpNet::V4(_) => self
                .limit_v4
                .insert(&key_v4(p, v4_bytes(net).unwrap()), entry, 0)?,
            IpNet::V6(_) => self
                .limit_v6
                .insert(&key_v6(p, v6_bytes(net).unwrap()), entry, 0)?,
        }
        Ok(())
    }

    pub fn limit_del(&mut self, net: &IpNet) -> Result<bool> {
        let p = net.prefix_len();
        missing(match net {
            IpNet::V4(_) => self.limit_v4.remove(&key_v4(p, v4_bytes(net).unwrap())),
            IpNet::V6(_) => self.limit_v6.remove(&key_v6(p, v6_bytes(net).unwrap())),
        })
    }

    pub fn limit_all(&self) -> Result<Vec<(IpNet, LimitEntry)>> {
        let mut out = Vec::new();
        for item in self.limit_v4.iter() {
            let (k, v) = item?;
            out.push((IpNet::new(k.data().into(), k.prefix_len() as u8)?, v));
        }
        for item in self.limit_v6.iter() {
            let (k, v) = item?;
            out.push((IpNet::new(k.data().into(), k.prefix_len() as u8)?, v));
        }
        Ok(out)
    }
}
