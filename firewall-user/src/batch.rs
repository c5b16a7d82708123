//! Bulk map access with BPF_MAP_UPDATE_BATCH / BPF_MAP_LOOKUP_BATCH: one
//! syscall per chunk of entries instead of one per entry.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::MapData;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Issue one batch command; the kernel writes back `attr.count`.
fn batch(cmd: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: `attr` is the kernel's batch layout, zero-filled apart from the
    // fields the callers set; the key and value buffers it points to hold
    // `count` packed keys and values of the map's sizes (checked by the
    // callers) and outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Insert `count` entries whose keys and values are packed back to back.
/// Kernels without batch support for the map type answer EINVAL or
/// ENOTSUPP; the caller then falls back to single updates.
pub fn update(map: &MapData, keys: &[u8], values: &[u8], count: usize) -> std::io::Result<()> {
    assert!(count == 0 || (keys.len().is_multiple_of(count) && values.len().is_multiple_of(count)));
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: count as u32,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..Default::default()
    };
    batch(BPF_MAP_UPDATE_BATCH, &mut attr)
}

/// Read up to `count` entries from the start of the map into `keys` and
/// `values` (each sized for `count` entries: per-CPU values take one slot
/// per CPU). Returns how many were read; reaching the end of the map is
/// not an error.
pub fn lookup(
    map: &MapData,
    keys: &mut [u8],
    values: &mut [u8],
    count: usize,
) -> std::io::Result<usize> {
    assert!(count > 0 && keys.len().is_multiple_of(count) && values.len().is_multiple_of(count));
    let mut out_batch = 0u64;
    let mut attr = BatchAttr {
        out_batch: &mut out_batch as *mut u64 as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: count as u32,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..Default::default()
    };
    match batch(BPF_MAP_LOOKUP_BATCH, &mut attr) {
        Ok(()) => Ok(attr.count as usize),
        // ENOENT: the end of the map came first; `count` says what was read.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(attr.count as usize),
        Err(e) => Err(e),
    }
}

/// Count a hash map's entries, walking it in batches of `chunk` (one
/// syscall per batch instead of one per key). `key_size` and `value_size`
/// are the map's (per-CPU maps are not supported here).
pub fn count(map: &MapData, key_size: usize, value_size: usize) -> std::io::Result<usize> {
    const CHUNK: usize = 8192;
    let mut keys = vec![0u8; key_size * CHUNK];
    let mut values = vec![0u8; value_size.div_ceil(8) * 8 * CHUNK];
    let (mut in_batch, mut out_batch) = (0u64, 0u64);
    let mut total = 0;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            // The first call starts at the beginning (no in_batch token).
            in_batch: if first {
                0
            } else {
                &mut in_batch as *mut u64 as u64
            },
            out_batch: &mut out_batch as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            ..Default::default()
        };
        match batch(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(()) => total += attr.count as usize,
            // ENOENT: the end of the map; `count` says what this call read.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Ok(total + attr.count as usize)
            }
            Err(e) => return Err(e),
        }
        in_batch = out_batch;
        first = false;
    }
}
