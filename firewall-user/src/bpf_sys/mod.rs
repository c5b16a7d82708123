//! Every raw `bpf(2)` call of the project, on the kernel's own layouts.
//!
//! aya covers loading, attaching and typed map access; what it does not
//! cover is here: byte-level access to maps whose layout the typed
//! accessors no longer describe (migrations), batch operations, per-CPU
//! sums read in one call, and the few program commands the tests and the
//! bench issue on programs that are not part of the data plane
//! (BPF_PROG_LOAD of hand-assembled instructions, BPF_PROG_TEST_RUN with
//! live frames, BPF_LINK_CREATE).
//!
//! `union bpf_attr`, the command numbers and the map types come from
//! aya's generated bindings of `include/uapi/linux/bpf.h`
//! (`aya_obj::generated`), so no offset or magic number is written here.
//! The unsafe code is this file's [`call`] and the union accesses next to
//! it; the submodules build on them with safe signatures.
#![allow(unsafe_code)]

pub mod batch;
mod map;
pub mod percpu;
mod prog;

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd, RawFd},
};

pub use aya_obj::generated::{bpf_attach_type, bpf_cmd, bpf_insn, bpf_map_type, bpf_prog_type};
use aya_obj::generated::{
    bpf_attr, bpf_attr__bindgen_ty_14 as LinkCreateAttr, bpf_attr__bindgen_ty_2 as ElemAttr,
    bpf_attr__bindgen_ty_3 as BatchAttr, bpf_attr__bindgen_ty_4 as ProgLoadAttr,
    bpf_attr__bindgen_ty_7 as TestRunAttr,
};

pub use map::{RawMap, Shape};
pub use percpu::{possible_cpus, value_stride, PerCpuReader, PerCpuValue};
pub use prog::{prog_load, test_run, xdp_link, TestRun, TestRunOutput};

/// A zeroed `union bpf_attr`. The kernel rejects nonzero bytes past the
/// fields of a command, so every call starts from this and sets fields one
/// by one (never by assigning a whole struct, whose padding is undefined).
fn zeroed() -> bpf_attr {
    // SAFETY: `bpf_attr` is a union of structs of integers and integer
    // arrays: all-zero bytes are a valid value of every member.
    unsafe { std::mem::zeroed() }
}

/// The members of `union bpf_attr` used here, borrowed for writing and
/// reading back. Each is a struct of plain integers, so whichever member
/// was written last, reading any of them yields valid (if meaningless)
/// integers: the unions accesses below cannot produce invalid values.
fn elem(attr: &mut bpf_attr) -> &mut ElemAttr {
    // SAFETY: see above; all members are plain integers.
    unsafe { &mut attr.__bindgen_anon_2 }
}

fn batch_attr(attr: &mut bpf_attr) -> &mut BatchAttr {
    // SAFETY: as in `elem`.
    unsafe { &mut attr.batch }
}

fn prog_load_attr(attr: &mut bpf_attr) -> &mut ProgLoadAttr {
    // SAFETY: as in `elem`.
    unsafe { &mut attr.__bindgen_anon_3 }
}

fn test_run_attr(attr: &mut bpf_attr) -> &mut TestRunAttr {
    // SAFETY: as in `elem`.
    unsafe { &mut attr.test }
}

fn link_create_attr(attr: &mut bpf_attr) -> &mut LinkCreateAttr {
    // SAFETY: as in `elem`.
    unsafe { &mut attr.link_create }
}

/// Issue one `bpf(cmd, attr)`.
///
/// # Safety
///
/// Every pointer stored in `attr` for `cmd` must point at a live buffer at
/// least as large as the kernel will read or write there (given the map's
/// key and value sizes, or the lengths stored next to the pointer), and
/// must stay valid for the duration of the call.
unsafe fn call(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: `attr` is a whole `union bpf_attr` of the size passed; the
    // caller vouches for the buffers it points at.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The descriptor a successful BPF_PROG_LOAD or BPF_LINK_CREATE returned.
fn owned_fd(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us; nothing else
    // owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// A pointer as the kernel's `__u64` fields take it.
fn ptr<T>(p: *const T) -> u64 {
    p as usize as u64
}
