//! Per-CPU arrays summed over CPUs: the one reader of the data plane's
//! counters (verdicts, rules, stats) for the CLI, the metrics and the
//! fuzzer.
//!
//! The syscalls exchange a per-CPU value as one slot per possible CPU,
//! each the value's size rounded up to 8 bytes.

use std::{io, marker::PhantomData, os::fd::BorrowedFd};

use firewall_common::Counter;

use super::{
    batch::{self, Cursor},
    bpf_cmd, call, elem, ptr, zeroed,
};
use std::os::fd::AsRawFd;

/// CPUs the kernel keeps a slot for in per-CPU maps.
pub fn possible_cpus() -> usize {
    aya::util::nr_cpus().unwrap_or(1)
}

/// Bytes of one CPU's slot for values of `value_size` bytes.
pub fn value_stride(value_size: usize) -> usize {
    value_size.div_ceil(8) * 8
}

/// A value kept per CPU and summed over them.
pub trait PerCpuValue: Copy + Default {
    /// Bytes of the value in the map.
    const SIZE: usize;
    /// The value from its bytes (native order, `SIZE` long).
    fn decode(b: &[u8]) -> Self;
    fn add(&mut self, other: Self);
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl PerCpuValue for u64 {
    const SIZE: usize = 8;
    fn decode(b: &[u8]) -> Self {
        u64_at(b, 0)
    }
    fn add(&mut self, other: Self) {
        *self += other;
    }
}

impl PerCpuValue for Counter {
    const SIZE: usize = std::mem::size_of::<Counter>();
    fn decode(b: &[u8]) -> Self {
        Counter {
            packets: u64_at(b, 0),
            bytes: u64_at(b, 8),
        }
    }
    fn add(&mut self, other: Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// Reads a range of a per-CPU array (`u32` keys) summed over CPUs, with
/// one BPF_MAP_LOOKUP_BATCH (kernel 5.6), or one lookup per entry where
/// the batch call is refused. Keeps its buffers between reads (the
/// fuzzer reads the verdict counters after every frame).
pub struct PerCpuReader<V> {
    cpus: usize,
    keys: Vec<u8>,
    values: Vec<u8>,
    _value: PhantomData<V>,
}

impl<V: PerCpuValue> Default for PerCpuReader<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: PerCpuValue> PerCpuReader<V> {
    pub fn new() -> Self {
        PerCpuReader {
            cpus: possible_cpus(),
            keys: Vec::new(),
            values: Vec::new(),
            _value: PhantomData,
        }
    }

    /// Entries `first .. first + n`, summed over CPUs.
    pub fn read(&mut self, map: BorrowedFd<'_>, first: u32, n: u32) -> io::Result<Vec<V>> {
        // Any failure of the batch call (refused by an older kernel, or an
        // answer that does not add up) leaves the single lookups to decide.
        self.read_batch(map, first, n)
            .or_else(|_| self.read_each(map, first, n))
    }

    /// The same with one BPF_MAP_LOOKUP_BATCH.
    pub fn read_batch(&mut self, map: BorrowedFd<'_>, first: u32, n: u32) -> io::Result<Vec<V>> {
        let count = n as usize;
        if count == 0 {
            return Ok(Vec::new());
        }
        let slot = value_stride(V::SIZE);
        self.keys.resize(count * 4, 0);
        self.values.resize(count * self.cpus * slot, 0);
        let mut cursor = match first {
            0 => Cursor::start(4),
            f => Cursor::after(&(f - 1).to_ne_bytes()),
        };
        let (read, _) =
            batch::lookup_from(map, &mut cursor, &mut self.keys, &mut self.values, count)?;
        if read != count {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut out = vec![V::default(); count];
        for (i, k) in self.keys.chunks(4).enumerate() {
            let key = u32::from_ne_bytes(k.try_into().expect("4 bytes"));
            let Some(at) = key.checked_sub(first).filter(|a| *a < n) else {
                return Err(io::ErrorKind::InvalidData.into());
            };
            let row = &self.values[i * self.cpus * slot..(i + 1) * self.cpus * slot];
            out[at as usize] = sum(row, slot, self.cpus);
        }
        Ok(out)
    }

    /// The same with one BPF_MAP_LOOKUP_ELEM per entry.
    pub fn read_each(&mut self, map: BorrowedFd<'_>, first: u32, n: u32) -> io::Result<Vec<V>> {
        let slot = value_stride(V::SIZE);
        self.values.resize(self.cpus * slot, 0);
        (first..first + n)
            .map(|key| {
                let mut attr = zeroed();
                let a = elem(&mut attr);
                a.map_fd = map.as_raw_fd() as u32;
                a.key = ptr(&key);
                a.__bindgen_anon_1.value = ptr(self.values.as_mut_ptr());
                // SAFETY: the key is a u32 (the array's key) and `values`
                // holds a slot for every possible CPU.
                unsafe { call(bpf_cmd::BPF_MAP_LOOKUP_ELEM, &mut attr) }?;
                Ok(sum(&self.values, slot, self.cpus))
            })
            .collect()
    }
}

fn sum<V: PerCpuValue>(row: &[u8], slot: usize, cpus: usize) -> V {
    let mut total = V::default();
    for cpu in 0..cpus {
        total.add(V::decode(&row[cpu * slot..cpu * slot + V::SIZE]));
    }
    total
}

/// Entries `first .. first + n` of a per-CPU array, summed over CPUs.
pub fn sums<V: PerCpuValue>(map: BorrowedFd<'_>, first: u32, n: u32) -> io::Result<Vec<V>> {
    PerCpuReader::new().read(map, first, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_rounded_to_8_bytes() {
        assert_eq!(value_stride(1), 8);
        assert_eq!(value_stride(8), 8);
        assert_eq!(value_stride(12), 16);
        assert_eq!(value_stride(16), 16);
    }

    #[test]
    fn counters_sum_over_cpus() {
        let mut row = Vec::new();
        for (p, b) in [(1u64, 100u64), (2, 200), (3, 300)] {
            row.extend_from_slice(&p.to_ne_bytes());
            row.extend_from_slice(&b.to_ne_bytes());
        }
        let c: Counter = sum(&row, 16, 3);
        assert_eq!((c.packets, c.bytes), (6, 600));
        let s: u64 = sum(&[7u64.to_ne_bytes(), 5u64.to_ne_bytes()].concat(), 8, 2);
        assert_eq!(s, 12);
    }
}
