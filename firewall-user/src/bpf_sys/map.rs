//! Byte-level access to any map: for migrating pinned maps whose layout
//! the typed accessors no longer describe.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::Path,
};

use aya::maps::MapData;

use super::{bpf_cmd, bpf_map_type, call, elem, percpu, ptr, zeroed};

/// What a map is, from the kernel (`struct bpf_map_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// A `bpf_map_type`, as the kernel reports it.
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl Shape {
    /// Whether values are per CPU (value buffers then hold one per CPU).
    pub fn percpu(&self) -> bool {
        [
            bpf_map_type::BPF_MAP_TYPE_PERCPU_HASH,
            bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY,
            bpf_map_type::BPF_MAP_TYPE_LRU_PERCPU_HASH,
        ]
        .iter()
        .any(|t| *t as u32 == self.map_type)
    }

    pub fn is(&self, t: bpf_map_type) -> bool {
        self.map_type == t as u32
    }
}

/// A map read and written as bytes.
pub struct RawMap {
    map: MapData,
    pub shape: Shape,
}

impl RawMap {
    pub fn open_pinned(path: &Path) -> io::Result<RawMap> {
        RawMap::from_map_data(MapData::from_pin(path).map_err(io::Error::other)?)
    }

    /// Wrap a map aya opened or created.
    pub fn from_map_data(map: MapData) -> io::Result<RawMap> {
        let info = map.info().map_err(io::Error::other)?;
        let shape = Shape {
            map_type: info.map_type().map_err(io::Error::other)? as u32,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        };
        Ok(RawMap { map, shape })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }

    pub fn pin(&self, path: &Path) -> io::Result<()> {
        self.map.pin(path).map_err(io::Error::other)
    }

    /// Bytes of one value as the syscalls exchange it (per CPU: each CPU's
    /// value rounded up to 8 bytes).
    pub fn value_len(&self) -> usize {
        if self.shape.percpu() {
            percpu::value_stride(self.shape.value_size as usize) * percpu::possible_cpus()
        } else {
            self.shape.value_size as usize
        }
    }

    /// Every (key, value) pair.
    pub fn entries(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut key: Option<Vec<u8>> = None;
        while let Some(next) = self.next_key(key.as_deref())? {
            // None: deleted (or evicted) while we walked; skip it.
            if let Some(value) = self.lookup(&next)? {
                out.push((next.clone(), value));
            }
            key = Some(next);
            if out.len() > 16 * 1024 * 1024 {
                break;
            }
        }
        Ok(out)
    }

    /// The key after `key` (the first with `None`); `None` at the end.
    pub fn next_key(&self, key: Option<&[u8]>) -> io::Result<Option<Vec<u8>>> {
        let ks = self.shape.key_size as usize;
        if let Some(k) = key {
            assert_eq!(k.len(), ks);
        }
        let mut next = vec![0u8; ks];
        let mut attr = zeroed();
        let a = elem(&mut attr);
        a.map_fd = self.fd().as_raw_fd() as u32;
        a.key = key.map(|k| ptr(k.as_ptr())).unwrap_or(0);
        a.__bindgen_anon_1.next_key = ptr(next.as_mut_ptr());
        // SAFETY: `key` (if any) and `next` hold the map's key size.
        match unsafe { call(bpf_cmd::BPF_MAP_GET_NEXT_KEY, &mut attr) } {
            Ok(_) => Ok(Some(next)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The value under `key` (`value_len` bytes), `None` if absent.
    pub fn lookup(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        assert_eq!(key.len(), self.shape.key_size as usize);
        let mut value = vec![0u8; self.value_len()];
        let mut attr = zeroed();
        let a = elem(&mut attr);
        a.map_fd = self.fd().as_raw_fd() as u32;
        a.key = ptr(key.as_ptr());
        a.__bindgen_anon_1.value = ptr(value.as_mut_ptr());
        // SAFETY: `key` holds the key size, `value` the value length the
        // kernel copies out (all CPUs for a per-CPU map).
        match unsafe { call(bpf_cmd::BPF_MAP_LOOKUP_ELEM, &mut attr) } {
            Ok(_) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        assert_eq!(key.len(), self.shape.key_size as usize);
        assert_eq!(value.len(), self.value_len());
        let mut attr = zeroed();
        let a = elem(&mut attr);
        a.map_fd = self.fd().as_raw_fd() as u32;
        a.key = ptr(key.as_ptr());
        a.__bindgen_anon_1.value = ptr(value.as_ptr());
        // SAFETY: `key` and `value` hold the sizes the kernel reads.
        unsafe { call(bpf_cmd::BPF_MAP_UPDATE_ELEM, &mut attr) }.map(|_| ())
    }

    pub fn delete(&self, key: &[u8]) -> io::Result<()> {
        assert_eq!(key.len(), self.shape.key_size as usize);
        let mut attr = zeroed();
        let a = elem(&mut attr);
        a.map_fd = self.fd().as_raw_fd() as u32;
        a.key = ptr(key.as_ptr());
        // SAFETY: `key` holds the map's key size.
        unsafe { call(bpf_cmd::BPF_MAP_DELETE_ELEM, &mut attr) }.map(|_| ())
    }
}
