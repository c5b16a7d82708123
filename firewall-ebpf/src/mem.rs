//! Bounds-checked packet access: the only place that touches packet memory.
#![allow(unsafe_code)]

/// A pointer to a `T` at `start + off`, if the whole `T` lies before `end`.
/// The comparison is the one the verifier needs to see before any access.
#[inline(always)]
pub fn ptr_at<T>(start: usize, end: usize, off: usize) -> Option<*const T> {
    let p = start + off;
    if p + core::mem::size_of::<T>() > end {
        return None;
    }
    Some(p as *const T)
}

/// Read a `T` (unaligned) at `start + off`.
#[inline(always)]
pub fn read<T: Copy>(start: usize, end: usize, off: usize) -> Option<T> {
    let p = ptr_at::<T>(start, end, off)?;
    // SAFETY: `ptr_at` checked that the `size_of::<T>()` bytes at `p` lie
    // within the packet [start, end); packet data has no alignment guarantee,
    // hence the unaligned read. T is plain bytes/integers.
    Some(unsafe { core::ptr::read_unaligned(p) })
}

/// Write a `T` (unaligned) at `start + off`, if it lies before `end`.
#[inline(always)]
pub fn write<T: Copy>(start: usize, end: usize, off: usize, v: T) -> Option<()> {
    let p = ptr_at::<T>(start, end, off)? as *mut T;
    // SAFETY: as in `read`: the bytes lie within the packet, which the XDP
    // program may rewrite in place (only the challenge program does).
    unsafe { core::ptr::write_unaligned(p, v) };
    Some(())
}
