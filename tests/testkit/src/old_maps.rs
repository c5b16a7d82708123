//! Maps of a layout the firewall no longer uses, created and pinned as an
//! older version would have left them, so that a test can upgrade over
//! them. Creation goes through aya (the shipped binary only ever opens
//! such maps, it never creates them).

use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::MapData;
use firewall_user::rawmap::{RawMap, Shape};

/// Creates a map of `shape` named `name`, pins it at `path` and returns it
/// opened from the pin (entries are then written with [`RawMap::update`]).
pub fn create_pinned(shape: Shape, name: &str, path: &Path) -> Result<RawMap> {
    let def = aya_obj::Map::new_from_params(
        shape.map_type,
        shape.key_size,
        shape.value_size,
        shape.max_entries,
        shape.flags,
    );
    let map = MapData::create(def, name, None).with_context(|| format!("creating {name}"))?;
    map.pin(path)
        .with_context(|| format!("pinning {name} at {}", path.display()))?;
    RawMap::open_pinned(path).with_context(|| format!("opening {}", path.display()))
}
