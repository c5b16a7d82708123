//! Maps the product does not create, made through aya's own map creation:
//! the older layouts the upgrade test pins before starting the daemon, and
//! the bench's baseline table. Read and written as bytes through the
//! product's [`RawMap`].

use aya::maps::MapData;
use aya_obj::{
    maps::{bpf_map_def, LegacyMap, PinningType},
    EbpfSectionKind, Map,
};
use firewall_user::bpf_sys::{RawMap, Shape};

/// A new, unpinned map of `shape` named `name` (the kernel keeps 15 bytes).
pub fn map(shape: Shape, name: &str) -> std::io::Result<RawMap> {
    let def = bpf_map_def {
        map_type: shape.map_type,
        key_size: shape.key_size,
        value_size: shape.value_size,
        max_entries: shape.max_entries,
        map_flags: shape.flags,
        id: 0,
        pinning: PinningType::None,
    };
    let obj = Map::Legacy(LegacyMap {
        def,
        inner_def: None,
        section_index: 0,
        section_kind: EbpfSectionKind::Maps,
        symbol_index: None,
        data: Vec::new(),
    });
    let name = &name[..name.len().min(15)];
    let data = MapData::create(obj, name, None).map_err(std::io::Error::other)?;
    RawMap::from_map_data(data)
}
