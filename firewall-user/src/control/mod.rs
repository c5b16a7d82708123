//! The control layer: the one way into and out of the pinned maps.
//!
//! The flow the project documents (policy and CLI -> maps -> program ->
//! counters and events -> daemon -> metrics and logs) is this module's
//! place in the crate: the CLI commands, the daemon, its metrics, the live
//! view and the fleet and CrowdSec workers all go through it, and none of
//! them through another.
//!
//! - [`write`]: the [`Writer`] guard, the only way to change the maps. It
//!   takes the writers' lock of the pin directory when it is made and
//!   releases it when dropped; every change to the lists, limits, flags,
//!   expiry hint, the policy and the SYN challenge's key goes through its
//!   methods.
//! - [`read`]: typed snapshots (counters per verdict and per rule, the
//!   data plane's statistics, list and limit rows, tracked sources,
//!   status) read without the lock: the kernel updates the maps
//!   concurrently anyway, and writers publish through the active-set flip.
//! - [`origin`]: where an entry came from, as an enum.
//! - `maps`, `lists` and `apply`: the typed map handles, the list and
//!   limit entries over both address families, and the policy writer;
//!   private to this layer.

pub mod apply;
mod challenge_key;
mod lists;
mod maps;
pub mod origin;
pub mod read;
pub mod write;

use std::path::Path;

use anyhow::Result;

pub use lists::List;
pub use origin::Origin;
pub use write::Writer;

/// The pinned maps of one data plane. Reading takes `&self`; changing
/// them takes a [`Writer`] from [`Control::write`].
pub struct Control {
    maps: maps::Maps,
}

impl Control {
    /// Open the maps pinned under `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self> {
        Ok(Control {
            maps: maps::Maps::open(pin_dir)?,
        })
    }

    /// The pin directory the maps were opened from.
    pub fn pin_dir(&self) -> &Path {
        &self.maps.dir
    }
}
