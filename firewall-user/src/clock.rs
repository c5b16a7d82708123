//! The program's clock (bpf_ktime_get_ns is CLOCK_MONOTONIC) and wall time.

use std::time::{Duration, SystemTime};

/// Nanoseconds of CLOCK_MONOTONIC, the clock the data plane stamps with.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec we pass.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_MONOTONIC is always available");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall-clock time of a monotonic timestamp, for display.
pub fn wall_of(mono: u64) -> SystemTime {
    let now = mono_ns();
    if mono >= now {
        SystemTime::now() + Duration::from_nanos(mono - now)
    } else {
        SystemTime::now() - Duration::from_nanos(now - mono)
    }
}

/// RFC 3339 timestamp, seconds precision, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
