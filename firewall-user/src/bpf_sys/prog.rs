//! Program commands for programs outside the data plane's object: the
//! bench's baselines and traffic generator are a dozen hand-assembled
//! instructions each, loaded, run (BPF_PROG_TEST_RUN, live frames
//! included) and attached here. The data plane itself goes through aya.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, OwnedFd},
};

use super::{
    bpf_attach_type, bpf_cmd, bpf_insn, bpf_prog_type, call, link_create_attr, owned_fd,
    prog_load_attr, ptr, test_run_attr, zeroed,
};

/// Load a program; on rejection the error carries the verifier's log.
pub fn prog_load(
    prog_type: bpf_prog_type,
    expected_attach: bpf_attach_type,
    name: &str,
    insns: &[bpf_insn],
) -> Result<OwnedFd, (io::Error, String)> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = zeroed();
    let a = prog_load_attr(&mut attr);
    a.prog_type = prog_type as u32;
    a.insn_cnt = insns.len() as u32;
    a.insns = ptr(insns.as_ptr());
    a.license = ptr(license.as_ptr());
    a.log_level = 1;
    a.log_size = log.len() as u32;
    a.log_buf = ptr(log.as_mut_ptr());
    a.expected_attach_type = expected_attach as u32;
    // The kernel keeps 15 bytes and a NUL.
    for (d, s) in a.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    // SAFETY: `insns` holds `insn_cnt` instructions, `license` is
    // NUL-terminated and `log` is `log_size` bytes long.
    match unsafe { call(bpf_cmd::BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => Ok(owned_fd(fd)),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err((e, String::from_utf8_lossy(&log[..end]).into_owned()))
        }
    }
}

/// One BPF_PROG_TEST_RUN.
#[derive(Default)]
pub struct TestRun<'a> {
    pub data_in: &'a [u8],
    /// Where the frame as the program left it goes, if wanted.
    pub data_out: Option<&'a mut [u8]>,
    /// The program's context (`struct xdp_md` for XDP), if any.
    pub ctx_in: Option<&'a [u8]>,
    pub repeat: u32,
    /// `BPF_F_TEST_XDP_LIVE_FRAMES` and the like.
    pub flags: u32,
    /// Frames per batch with live frames (0: the kernel's default).
    pub batch_size: u32,
}

/// What one BPF_PROG_TEST_RUN returned.
#[derive(Clone, Copy, Debug)]
pub struct TestRunOutput {
    pub retval: u32,
    /// The kernel's average duration per repetition, in ns.
    pub duration_ns: u32,
    /// Bytes written to `data_out`.
    pub data_size_out: u32,
}

pub fn test_run(prog: BorrowedFd<'_>, run: TestRun<'_>) -> io::Result<TestRunOutput> {
    let mut attr = zeroed();
    let a = test_run_attr(&mut attr);
    a.prog_fd = prog.as_raw_fd() as u32;
    a.data_size_in = run.data_in.len() as u32;
    a.data_in = ptr(run.data_in.as_ptr());
    if let Some(out) = run.data_out {
        a.data_size_out = out.len() as u32;
        a.data_out = ptr(out.as_mut_ptr());
    }
    if let Some(ctx) = run.ctx_in {
        a.ctx_size_in = ctx.len() as u32;
        a.ctx_in = ptr(ctx.as_ptr());
    }
    a.repeat = run.repeat.max(1);
    a.flags = run.flags;
    a.batch_size = run.batch_size;
    // SAFETY: each pointer is paired with its buffer's length; the output
    // buffer is writable and the kernel writes no more than its size.
    unsafe { call(bpf_cmd::BPF_PROG_TEST_RUN, &mut attr) }?;
    let a = test_run_attr(&mut attr);
    Ok(TestRunOutput {
        retval: a.retval,
        duration_ns: a.duration,
        data_size_out: a.data_size_out,
    })
}

/// Attach an XDP program to `ifindex` (of the caller's network namespace)
/// through a bpf_link with `xdp_flags`; closing the returned fd detaches it.
pub fn xdp_link(prog: BorrowedFd<'_>, ifindex: u32, xdp_flags: u32) -> io::Result<OwnedFd> {
    let mut attr = zeroed();
    let a = link_create_attr(&mut attr);
    a.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    a.__bindgen_anon_2.target_ifindex = ifindex;
    a.attach_type = bpf_attach_type::BPF_XDP as u32;
    a.flags = xdp_flags;
    // SAFETY: BPF_LINK_CREATE for XDP takes no pointers.
    unsafe { call(bpf_cmd::BPF_LINK_CREATE, &mut attr) }.map(owned_fd)
}
