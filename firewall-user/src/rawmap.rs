//! Byte-level access to any map by fd: for migrating pinned maps whose
//! layout the typed accessors no longer describe.
#![allow(unsafe_code)]

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// Map types whose values are per CPU (value buffers hold one per CPU).
const PERCPU_TYPES: [u32; 3] = [
    5,  /* percpu hash */
    6,  /* percpu array */
    10, /* lru percpu hash */
];

fn sys(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<i64> {
    // SAFETY: `attr` is a zeroed 128-byte bpf_attr with the command's
    // fields set by the caller; pointers in it refer to live buffers of the
    // sizes the kernel will use (the map's own key and value sizes).
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128usize) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// What a map is, from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl Shape {
    pub fn percpu(&self) -> bool {
        PERCPU_TYPES.contains(&self.map_type)
    }
}

pub struct RawMap {
    fd: OwnedFd,
    pub shape: Shape,
}

fn possible_cpus() -> usize {
    aya::util::nr_cpus().unwrap_or(1)
}

impl RawMap {
    pub fn open_pinned(path: &Path) -> io::Result<RawMap> {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        let mut attr = [0u64; 16];
        attr[0] = c.as_ptr() as u64;
        let fd = sys(BPF_OBJ_GET, &mut attr)?;
        // SAFETY: BPF_OBJ_GET returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let shape = info(&fd)?;
        Ok(RawMap { fd, shape })
    }

    /// Bytes of one value as the syscalls exchange it (per CPU: each CPU's
    /// value rounded up to 8 bytes).
    pub fn value_len(&self) -> usize {
        if self.shape.percpu() {
            (self.shape.value_size as usize).div_ceil(8) * 8 * possible_cpus()
        } else {
            self.shape.value_size as usize
        }
    }

    /// Every (key, value) pair.
    pub fn entries(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let ks = self.shape.key_size as usize;
        let mut out = Vec::new();
        let mut key: Option<Vec<u8>> = None;
        let mut next = vec![0u8; ks];
        loop {
            let mut attr = [0u64; 16];
            attr[0] = self.fd.as_raw_fd() as u64;
            attr[1] = key.as_ref().map(|k| k.as_ptr() as u64).unwrap_or(0);
            attr[2] = next.as_mut_ptr() as u64;
            match sys(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                Err(e) => return Err(e),
            }
            let mut value = vec![0u8; self.value_len()];
            let mut attr = [0u64; 16];
            attr[0] = self.fd.as_raw_fd() as u64;
            attr[1] = next.as_ptr() as u64;
            attr[2] = value.as_mut_ptr() as u64;
            match sys(BPF_MAP_LOOKUP_ELEM, &mut attr) {
                Ok(_) => out.push((next.clone(), value)),
                // Deleted (or evicted) while we walked: skip it.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
            key = Some(next.clone());
            if out.len() > 16 * 1024 * 1024 {
                break;
            }
        }
        Ok(out)
    }

    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        assert_eq!(key.len(), self.shape.key_size as usize);
        assert_eq!(value.len(), self.value_len());
        let mut attr = [0u64; 16];
        attr[0] = self.fd.as_raw_fd() as u64;
        attr[1] = key.as_ptr() as u64;
        attr[2] = value.as_ptr() as u64;
        sys(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
    }
}

/// `struct bpf_map_info`: type, id, key_size, value_size, max_entries, flags.
fn info(fd: &OwnedFd) -> io::Result<Shape> {
    let mut buf = [0u32; 32];
    let mut attr = [0u64; 16];
    attr[0] = fd.as_raw_fd() as u64 | ((std::mem::size_of_val(&buf) as u64) << 32);
    attr[1] = buf.as_mut_ptr() as u64;
    sys(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(Shape {
        map_type: buf[0],
        key_size: buf[2],
        value_size: buf[3],
        max_entries: buf[4],
        flags: buf[5],
    })
}
