//! Bulk map updates with BPF_MAP_UPDATE_BATCH: one syscall per chunk of
//! entries instead of one per entry (imports of 100,000+ prefixes).
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::MapData;

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
    // SAFETY: `attr` is the kernel's batch layout, zero-filled apart from the
    // fields set; `keys` and `values` hold `count` packed keys and values of
    // the map's sizes (asserted by the caller's types) and outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
