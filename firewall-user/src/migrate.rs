//! Moving pinned state across a change of map layout (an upgrade whose
//! object defines a map differently from the pinned one).
//!
//! Before the load, every pinned map whose type, key size, value size or
//! capacity differs from the object's definition is read out and unpinned,
//! so the loader creates it anew instead of mixing layouts. After the load
//! the entries are written back where that is sound: same map type and key
//! size, values converted by keeping the bytes both layouts share and
//! zero-filling the rest (fields are only ever appended, and zero means
//! "unset" for every field). Anything else is reported as not migrated.

use std::path::Path;

use anyhow::{Context, Result};
use firewall_common::maps::{self as names, MAX_RULES};

use crate::bpf_sys::{bpf_map_type, RawMap, Shape};

const RINGBUF: u32 = bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32;

/// A pinned map set aside for the load.
pub struct Pending {
    name: String,
    old: Shape,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What happened, for the event log.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub migrated: Vec<String>,
    pub not_migrated: Vec<String>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.migrated.is_empty() && self.not_migrated.is_empty()
    }
}

/// Set aside the pinned maps the object defines differently; `sizes`
/// overrides the object's capacities (the policy's `[table]`).
pub fn prepare(pin_dir: &Path, object: &[u8], sizes: &[(&str, u32)]) -> Result<Vec<Pending>> {
    let obj = aya_obj::Object::parse(object).context("parsing the data-plane object")?;
    let mut pending = Vec::new();
    // The one per-source table of earlier layouts: its entries have no
    // place in the per-family tables' compact state; their sources start
    // again with a full bucket. Reported by `finish`.
    let legacy = pin_dir.join(names::SOURCES_LEGACY);
    if legacy.exists() {
        let old = RawMap::open_pinned(&legacy).context("opening the old per-source table")?;
        let entries = old.entries()?;
        std::fs::remove_file(&legacy).with_context(|| format!("unpinning {}", legacy.display()))?;
        pending.push(Pending {
            name: names::SOURCES_LEGACY.to_string(),
            old: old.shape,
            entries,
        });
    }
    for name in names::ALL {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let def = obj
            .maps
            .get(name)
            .with_context(|| format!("map {name} missing from the object"))?;
        let want = Shape {
            map_type: def.map_type(),
            key_size: def.key_size(),
            value_size: def.value_size(),
            max_entries: sizes
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| *s)
                .unwrap_or(def.max_entries()),
            flags: def.map_flags(),
        };
        let old = RawMap::open_pinned(&path).with_context(|| format!("opening pinned {name}"))?;
        let same = (
            old.shape.map_type,
            old.shape.key_size,
            old.shape.value_size,
            old.shape.max_entries,
        ) == (
            want.map_type,
            want.key_size,
            want.value_size,
            want.max_entries,
        );
        if same {
            continue;
        }
        let entries = if old.shape.map_type == RINGBUF {
            Vec::new()
        } else {
            old.entries()?
        };
        std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
        pending.push(Pending {
            name: name.to_string(),
            old: old.shape,
            entries,
        });
    }
    Ok(pending)
}

/// Convert one value: shared bytes kept, new bytes zero; per-CPU values
/// (`new_len` covers every CPU) slot by slot.
fn convert(value: &[u8], old: &Shape, new: &Shape, new_len: usize) -> Vec<u8> {
    let mut out = vec![0u8; new_len];
    if new.percpu() {
        let (os, ns) = (
            (old.value_size as usize).div_ceil(8) * 8,
            (new.value_size as usize).div_ceil(8) * 8,
        );
        let n = old.value_size.min(new.value_size) as usize;
        for (src, dst) in value.chunks(os).zip(out.chunks_mut(ns)) {
            dst[..n].copy_from_slice(&src[..n]);
        }
    } else {
        let n = value.len().min(out.len());
        out[..n].copy_from_slice(&value[..n]);
    }
    out
}

/// Rule counters are laid out `rule * verdicts + verdict`: when a verdict
/// is added, each rule's counters move to their rule's new stride.
fn rule_counter_key(key: &[u8], old: &Shape, new: &Shape) -> Vec<u8> {
    let (Ok(idx), old_stride, new_stride) = (
        <[u8; 4]>::try_from(key).map(u32::from_ne_bytes),
        old.max_entries / MAX_RULES,
        new.max_entries / MAX_RULES,
    ) else {
        return key.to_vec();
    };
    if old_stride == 0 || new_stride < old_stride {
        return key.to_vec();
    }
    ((idx / old_stride) * new_stride + idx % old_stride)
        .to_ne_bytes()
        .to_vec()
}

/// Write the set-aside entries into the freshly created maps.
pub fn finish(pin_dir: &Path, pending: Vec<Pending>) -> Report {
    let mut report = Report::default();
    for p in pending {
        let n = p.entries.len();
        if p.name == names::SOURCES_LEGACY {
            report.not_migrated.push(format!(
                "{}: {n} tracked sources start again with a full bucket (now one table per address family, {} and {})",
                p.name,
                names::SOURCES_V4,
                names::SOURCES_V6
            ));
            continue;
        }
        let new = match RawMap::open_pinned(&pin_dir.join(&p.name)) {
            Ok(m) => m,
            Err(e) => {
                report
                    .not_migrated
                    .push(format!("{}: {n} entries lost: {e}", p.name));
                continue;
            }
        };
        if p.old.map_type != new.shape.map_type || p.old.key_size != new.shape.key_size {
            report.not_migrated.push(format!(
                "{}: {n} entries lost: the map's type or key changed (type {} -> {}, key {} -> {} bytes)",
                p.name, p.old.map_type, new.shape.map_type, p.old.key_size, new.shape.key_size
            ));
            continue;
        }
        let mut ok = 0;
        let mut failed = 0;
        for (k, v) in &p.entries {
            let k = if p.name == names::RULE_COUNTERS {
                rule_counter_key(k, &p.old, &new.shape)
            } else {
                k.clone()
            };
            match new.update(&k, &convert(v, &p.old, &new.shape, new.value_len())) {
                Ok(()) => ok += 1,
                Err(_) => failed += 1,
            }
        }
        report.migrated.push(format!(
            "{}: {ok} of {n} entries (value {} -> {} bytes, capacity {} -> {})",
            p.name,
            p.old.value_size,
            new.shape.value_size,
            p.old.max_entries,
            new.shape.max_entries
        ));
        if failed > 0 {
            report.not_migrated.push(format!(
                "{}: {failed} entries did not fit the new map",
                p.name
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(map_type: u32, value_size: u32) -> Shape {
        Shape {
            map_type,
            key_size: 4,
            value_size,
            max_entries: 1,
            flags: 0,
        }
    }

    #[test]
    fn rule_counters_move_to_the_new_stride() {
        let old = Shape {
            max_entries: MAX_RULES * 6,
            ..shape(6, 16)
        };
        let new = Shape {
            max_entries: MAX_RULES * 7,
            ..shape(6, 16)
        };
        // Rule 2, verdict 5 (malformed) stays rule 2, verdict 5.
        let k = rule_counter_key(&(2u32 * 6 + 5).to_ne_bytes(), &old, &new);
        assert_eq!(k, (2u32 * 7 + 5).to_ne_bytes());
        let k = rule_counter_key(&0u32.to_ne_bytes(), &old, &new);
        assert_eq!(k, 0u32.to_ne_bytes());
    }

    #[test]
    fn values_keep_shared_bytes_and_zero_the_rest() {
        let grown = convert(&[1, 2, 3, 4], &shape(1, 4), &shape(1, 8), 8);
        assert_eq!(grown, [1, 2, 3, 4, 0, 0, 0, 0]);
        let shrunk = convert(&[1, 2, 3, 4, 5, 6], &shape(1, 6), &shape(1, 2), 2);
        assert_eq!(shrunk, [1, 2]);
    }

    #[test]
    fn per_cpu_values_convert_slot_by_slot() {
        // Two CPUs; 8-byte values become 16-byte values.
        let old: Vec<u8> = (1..=16).collect();
        let new = convert(&old, &shape(6, 8), &shape(6, 16), 32);
        assert_eq!(&new[..8], &old[..8]);
        assert_eq!(&new[8..16], &[0; 8]);
        assert_eq!(&new[16..24], &old[8..16]);
        assert_eq!(&new[24..], &[0; 8]);
    }
}
