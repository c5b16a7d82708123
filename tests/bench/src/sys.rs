//! The bench's programs that are not part of the product (the two
//! baselines, the XDP_DROP contender and the traffic generator),
//! hand-assembled from instructions, and its thread and process chores
//! (CPU pinning, interrupts, fdinfo).
//!
//! Why hand-assembled: the baselines must not be added to the product's
//! eBPF object, and a dozen instructions do not need a toolchain. The
//! `bpf(2)` calls themselves (load, test run, link) are the product's
//! `firewall_user::bpf_sys`, on the kernel's own `union bpf_attr`.

use anyhow::{anyhow, Context, Result};
use firewall_user::bpf_sys::{
    self, bpf_attach_type, bpf_insn, bpf_map_type, bpf_prog_type, RawMap, Shape, TestRun,
};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = aya_obj::generated::BPF_F_TEST_XDP_LIVE_FRAMES;
pub const XDP_FLAGS_DRV_MODE: u32 = aya_obj::generated::XDP_FLAGS_DRV_MODE;
const BPF_PSEUDO_MAP_FD: u8 = aya_obj::generated::BPF_PSEUDO_MAP_FD as u8;

// Helper ids (`enum bpf_func_id`).
const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_KTIME_GET_NS: i32 = 5;
const FN_GET_PRANDOM_U32: i32 = 7;

// `enum xdp_action`.
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;
pub const XDP_TX: i32 = 3;

/// `struct bpf_insn`.
pub type Insn = bpf_insn;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    bpf_insn {
        code,
        _bitfield_align_1: [],
        _bitfield_1: bpf_insn::new_bitfield_1(dst, src),
        off,
        imm,
    }
}

/// The few instruction forms the bench programs need.
mod asm {
    use super::{insn, Insn};
    /// `dst = imm` (64-bit).
    pub fn mov64_imm(dst: u8, imm: i32) -> Insn {
        insn(0xb7, dst, 0, 0, imm)
    }
    /// `dst = src` (64-bit).
    pub fn mov64_reg(dst: u8, src: u8) -> Insn {
        insn(0xbf, dst, src, 0, 0)
    }
    /// `dst += imm` (64-bit).
    pub fn add64_imm(dst: u8, imm: i32) -> Insn {
        insn(0x07, dst, 0, 0, imm)
    }
    /// `dst += src` (64-bit).
    pub fn add64_reg(dst: u8, src: u8) -> Insn {
        insn(0x0f, dst, src, 0, 0)
    }
    /// `dst >>= imm` (64-bit, logical).
    pub fn rsh64_imm(dst: u8, imm: i32) -> Insn {
        insn(0x77, dst, 0, 0, imm)
    }
    /// `dst &= imm` (64-bit).
    pub fn and64_imm(dst: u8, imm: i32) -> Insn {
        insn(0x57, dst, 0, 0, imm)
    }
    /// `dst ^= imm` (64-bit).
    pub fn xor64_imm(dst: u8, imm: i32) -> Insn {
        insn(0xa7, dst, 0, 0, imm)
    }
    /// `w_dst %= imm` (32-bit, unsigned).
    pub fn mod32_imm(dst: u8, imm: i32) -> Insn {
        insn(0x94, dst, 0, 0, imm)
    }
    /// `w_dst += imm` (32-bit, wraps: any u32 constant works).
    pub fn add32_imm(dst: u8, imm: i32) -> Insn {
        insn(0x04, dst, 0, 0, imm)
    }
    /// `dst = htobe32(dst)`.
    pub fn be32(dst: u8) -> Insn {
        insn(0xdc, dst, 0, 0, 32)
    }
    /// `dst = *(u32 *)(src + off)`.
    pub fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x61, dst, src, off, 0)
    }
    /// `dst = *(u16 *)(src + off)`.
    pub fn ldx_h(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x69, dst, src, off, 0)
    }
    /// `*(u32 *)(dst + off) = src`.
    pub fn stx_w(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x63, dst, src, off, 0)
    }
    /// `*(u16 *)(dst + off) = src`.
    pub fn stx_h(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x6b, dst, src, off, 0)
    }
    /// `*(u32 *)(dst + off) = imm`.
    pub fn st_w(dst: u8, off: i16, imm: i32) -> Insn {
        insn(0x62, dst, 0, off, imm)
    }
    /// `if dst > src goto +off` (unsigned).
    pub fn jgt_reg(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x2d, dst, src, off, 0)
    }
    pub fn call(helper: i32) -> Insn {
        insn(0x85, 0, 0, 0, helper)
    }
    pub fn exit() -> Insn {
        insn(0x95, 0, 0, 0, 0)
    }
}

/// A BPF_MAP_TYPE_HASH.
pub fn hash_map_create(key_size: u32, value_size: u32, max_entries: u32) -> Result<RawMap> {
    let shape = Shape {
        map_type: bpf_map_type::BPF_MAP_TYPE_HASH as u32,
        key_size,
        value_size,
        max_entries,
        flags: 0,
    };
    testkit::stage::map(shape, "fwb_base").context("bpf(BPF_MAP_CREATE)")
}

/// Loads an XDP program; on rejection the error carries the verifier log.
fn prog_load(name: &str, insns: &[Insn]) -> Result<OwnedFd> {
    bpf_sys::prog_load(
        bpf_prog_type::BPF_PROG_TYPE_XDP,
        bpf_attach_type::BPF_XDP,
        name,
        insns,
    )
    .map_err(|(e, log)| anyhow!("bpf(BPF_PROG_LOAD) of {name}: {e}\n{log}"))
}

/// Baseline 1: `r0 = XDP_PASS; exit`.
pub fn load_pass() -> Result<OwnedFd> {
    prog_load("fwb_pass", &[asm::mov64_imm(0, XDP_PASS), asm::exit()])
}

/// A reference point (not a baseline for the ratios): one
/// `bpf_ktime_get_ns` call, the clock read the product makes per IP packet.
pub fn load_ktime() -> Result<OwnedFd> {
    prog_load(
        "fwb_ktime",
        &[
            asm::call(FN_KTIME_GET_NS),
            asm::mov64_imm(0, XDP_PASS),
            asm::exit(),
        ],
    )
}

/// `r0 = action; exit`: the XDP_DROP contender.
pub fn load_return(name: &str, action: i32) -> Result<OwnedFd> {
    prog_load(name, &[asm::mov64_imm(0, action), asm::exit()])
}

/// Baseline 2: one `bpf_map_lookup_elem` in `map` (a hash with 20-byte
/// keys, like the product's `SourceKey`) with `key` built on the stack,
/// result ignored, then XDP_PASS.
pub fn load_lookup(map: BorrowedFd<'_>, key: &[u8; 20]) -> Result<OwnedFd> {
    let w = |i: usize| i32::from_ne_bytes(key[i * 4..i * 4 + 4].try_into().unwrap());
    let fd = map.as_raw_fd();
    let prog = [
        // The key at r10-24 .. r10-4 (five 32-bit stores).
        asm::st_w(10, -24, w(0)),
        asm::st_w(10, -20, w(1)),
        asm::st_w(10, -16, w(2)),
        asm::st_w(10, -12, w(3)),
        asm::st_w(10, -8, w(4)),
        // r2 = &key
        asm::mov64_reg(2, 10),
        asm::add64_imm(2, -24),
        // r1 = map (ld_imm64 with BPF_PSEUDO_MAP_FD: two instruction slots)
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, fd),
        insn(0, 0, 0, 0, 0),
        asm::call(FN_MAP_LOOKUP_ELEM),
        asm::mov64_imm(0, XDP_PASS),
        asm::exit(),
    ];
    prog_load("fwb_lookup", &prog)
}

/// The traffic generator (run with live frames): transmits every frame
/// back out of its ingress interface (XDP_TX). With `pool > 1` it first
/// rewrites the IPv4 source of the Ethernet/IPv4 frame to
/// `base + prandom() % pool` and recomputes the IPv4 header checksum (the
/// gateway's stack drops frames with a bad one); the UDP checksum must be
/// 0 (none) in the template frame.
pub fn load_generator(base: u32, pool: u32) -> Result<OwnedFd> {
    use asm::*;
    let mut p = Vec::new();
    if pool > 1 {
        p.push(mov64_reg(6, 1)); // r6 = ctx
        p.push(call(FN_GET_PRANDOM_U32)); // r0 = random
        p.push(mod32_imm(0, pool as i32));
        p.push(add32_imm(0, base as i32));
        p.push(be32(0));
        p.push(ldx_w(2, 6, 0)); // r2 = ctx->data
        p.push(ldx_w(3, 6, 4)); // r3 = ctx->data_end
        p.push(mov64_reg(4, 2));
        p.push(add64_imm(4, 34)); // Ethernet 14 + IPv4 20
        let skip_at = p.len();
        p.push(jgt_reg(4, 3, 0)); // patched below: to the XDP_TX
        p.push(stx_w(2, 0, 14 + 12)); // ip->saddr
                                      // Ones' complement sum of the header words except the checksum
                                      // (at 14 + 10). Byte order does not matter for this sum as long as
                                      // the result is stored back the way the words were loaded.
        p.push(mov64_imm(5, 0));
        for off in (14..34).step_by(2) {
            if off == 24 {
                continue;
            }
            p.push(ldx_h(4, 2, off as i16));
            p.push(add64_reg(5, 4));
        }
        for _ in 0..2 {
            p.push(mov64_reg(4, 5));
            p.push(rsh64_imm(4, 16));
            p.push(and64_imm(5, 0xffff));
            p.push(add64_reg(5, 4));
        }
        p.push(xor64_imm(5, 0xffff));
        p.push(stx_h(2, 5, 24));
        let target = p.len();
        p[skip_at].off = (target - skip_at - 1) as i16;
    }
    p.push(mov64_imm(0, XDP_TX));
    p.push(exit());
    prog_load("fwb_gen", &p)
}

/// What one BPF_PROG_TEST_RUN returned.
#[derive(Clone, Copy, Debug)]
pub struct RunResult {
    pub retval: u32,
    /// The kernel's average duration per repetition, in ns.
    pub duration_ns: u32,
}

/// BPF_PROG_TEST_RUN: `data` run `repeat` times (average time per run in
/// the result). `ctx` is an optional `struct xdp_md`; `flags`/`batch` for
/// live frames.
pub fn test_run(
    prog: BorrowedFd<'_>,
    data: &[u8],
    repeat: u32,
    ctx: Option<&[u8]>,
    flags: u32,
    batch: u32,
) -> std::io::Result<RunResult> {
    let r = bpf_sys::test_run(
        prog,
        TestRun {
            data_in: data,
            ctx_in: ctx,
            repeat,
            flags,
            batch_size: batch,
            ..Default::default()
        },
    )?;
    Ok(RunResult {
        retval: r.retval,
        duration_ns: r.duration_ns,
    })
}

/// One BPF_PROG_TEST_RUN of `data` (no repeat), returning the program's
/// return value and the frame as the program left it.
#[cfg(test)]
pub fn test_run_out(prog: BorrowedFd<'_>, data: &[u8]) -> std::io::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; data.len() + 256];
    let r = bpf_sys::test_run(
        prog,
        TestRun {
            data_in: data,
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        },
    )?;
    out.truncate(r.data_size_out as usize);
    Ok((r.retval, out))
}

/// `struct xdp_md` for a live-frames run: data 0, data_end = frame length,
/// ingress_ifindex (resolved in the caller's network namespace).
pub fn xdp_md(frame_len: usize, ingress_ifindex: u32) -> [u8; 24] {
    let mut c = [0u8; 24];
    c[4..8].copy_from_slice(&(frame_len as u32).to_ne_bytes());
    c[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    c
}

/// Attaches an XDP program to `ifindex` (of the caller's network namespace)
/// through a bpf_link in native mode; closing the returned fd detaches it.
pub fn xdp_link(prog: BorrowedFd<'_>, ifindex: u32) -> Result<OwnedFd> {
    bpf_sys::xdp_link(prog, ifindex, XDP_FLAGS_DRV_MODE).context("bpf(BPF_LINK_CREATE) for XDP")
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// SIGINT and SIGTERM set a flag ([`interrupted`]) instead of killing the
/// process, so the bench stops at its next check and its guards clean up.
pub fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// Runs the calling thread on `cpu` only.
pub fn pin_thread(cpu: usize) {
    pin_task(0, cpu);
}

/// Runs task `tid` (0: the calling thread) on `cpu` only. Best effort.
pub fn pin_task(tid: i32, cpu: usize) -> bool {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(rustix::process::Pid::from_raw(tid), &set).is_ok()
}

/// Lets the calling thread run on every CPU again.
pub fn unpin_thread() {
    let mut set = rustix::thread::CpuSet::new();
    for c in 0..crate::ncpus() {
        set.set(c);
    }
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// `key: value` lines of `/proc/self/fdinfo/FD` (a BPF map or program
/// shows `memlock`, `max_entries`, `run_time_ns`, `run_cnt`...).
pub fn fdinfo(fd: BorrowedFd<'_>) -> Vec<(String, String)> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

pub fn fdinfo_u64(fd: BorrowedFd<'_>, key: &str) -> Option<u64> {
    fdinfo(fd)
        .into_iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
}
