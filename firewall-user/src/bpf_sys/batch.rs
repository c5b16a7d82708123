//! Bulk map access with BPF_MAP_UPDATE_BATCH / BPF_MAP_LOOKUP_BATCH: one
//! syscall per chunk of entries instead of one per entry.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use aya::maps::MapData;

use super::{batch_attr, bpf_cmd, call, ptr, zeroed};

/// Insert `count` entries whose keys and values are packed back to back.
/// Kernels without batch support for the map type answer EINVAL or
/// ENOTSUPP; the caller then falls back to single updates.
pub fn update(map: &MapData, keys: &[u8], values: &[u8], count: usize) -> io::Result<()> {
    assert!(count == 0 || (keys.len().is_multiple_of(count) && values.len().is_multiple_of(count)));
    let mut attr = zeroed();
    let a = batch_attr(&mut attr);
    a.map_fd = map.fd().as_fd().as_raw_fd() as u32;
    a.keys = ptr(keys.as_ptr());
    a.values = ptr(values.as_ptr());
    a.count = count as u32;
    // SAFETY: `keys` and `values` hold `count` packed keys and values (the
    // callers size them from the map's types) and outlive the call.
    unsafe { call(bpf_cmd::BPF_MAP_UPDATE_BATCH, &mut attr) }.map(|_| ())
}

/// Where a batched walk resumes: the kernel's opaque position (a bucket
/// index for hashes, the previous key for arrays), at most a key long.
pub struct Cursor {
    token: Vec<u8>,
    started: bool,
}

impl Cursor {
    /// From the start of a map with keys of `key_size` bytes.
    pub fn start(key_size: usize) -> Cursor {
        Cursor {
            token: vec![0; key_size.max(8)],
            started: false,
        }
    }

    /// Resume after `key` (arrays: the entry after index `key`).
    pub fn after(key: &[u8]) -> Cursor {
        let mut token = key.to_vec();
        token.resize(key.len().max(8), 0);
        Cursor {
            token,
            started: true,
        }
    }
}

/// Read up to `count` entries from `cursor` into `keys` and `values` (each
/// sized for `count` entries: per-CPU values take one slot per CPU) and
/// advance the cursor. Returns how many were read and whether the end of
/// the map came first (not an error).
pub fn lookup_from(
    map: BorrowedFd<'_>,
    cursor: &mut Cursor,
    keys: &mut [u8],
    values: &mut [u8],
    count: usize,
) -> io::Result<(usize, bool)> {
    assert!(count > 0 && keys.len().is_multiple_of(count) && values.len().is_multiple_of(count));
    let mut out = vec![0u8; cursor.token.len()];
    let mut attr = zeroed();
    let a = batch_attr(&mut attr);
    a.map_fd = map.as_raw_fd() as u32;
    a.in_batch = if cursor.started {
        ptr(cursor.token.as_ptr())
    } else {
        0
    };
    a.out_batch = ptr(out.as_mut_ptr());
    a.keys = ptr(keys.as_mut_ptr());
    a.values = ptr(values.as_mut_ptr());
    a.count = count as u32;
    // SAFETY: `keys` and `values` hold `count` entries of the map's sizes;
    // the batch tokens are at least a key long (the kernel copies a key or
    // a u32 there).
    let r = unsafe { call(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr) };
    let read = batch_attr(&mut attr).count as usize;
    cursor.token = out;
    cursor.started = true;
    match r {
        Ok(_) => Ok((read, false)),
        // ENOENT: the end of the map came first; `count` says what was read.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok((read, true)),
        Err(e) => Err(e),
    }
}

/// Read up to `count` entries from the start of the map; see [`lookup_from`].
pub fn lookup(
    map: &MapData,
    keys: &mut [u8],
    values: &mut [u8],
    count: usize,
) -> io::Result<usize> {
    let mut cursor = Cursor::start(keys.len() / count.max(1));
    lookup_from(map.fd().as_fd(), &mut cursor, keys, values, count).map(|(n, _)| n)
}

/// Count a hash map's entries, walking it in batches (one syscall per
/// batch instead of one per key). `key_size` and `value_size` are the
/// map's (per-CPU maps are not supported here).
pub fn count(map: &MapData, key_size: usize, value_size: usize) -> io::Result<usize> {
    const CHUNK: usize = 8192;
    let mut keys = vec![0u8; key_size * CHUNK];
    let mut values = vec![0u8; value_size.div_ceil(8) * 8 * CHUNK];
    let mut cursor = Cursor::start(key_size);
    let mut total = 0;
    loop {
        let (n, end) = lookup_from(map.fd().as_fd(), &mut cursor, &mut keys, &mut values, CHUNK)?;
        total += n;
        if end {
            return Ok(total);
        }
    }
}
