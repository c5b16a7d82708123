//! The program's clock (bpf_ktime_get_ns is CLOCK_MONOTONIC) and wall time.

use std::time::{Duration, SystemTime};

/// Longest TTL or ban: expiry times are monotonic nanoseconds in a u64,
/// so a limit well inside that keeps `now + ttl` from wrapping.
pub const MAX_TTL: Duration = Duration::from_secs(3650 * 86_400);

/// Monotonic expiry time `ttl` from now.
pub fn expiry_after(ttl: Duration) -> u64 {
    mono_ns().saturating_add(ttl.min(MAX_TTL).as_nanos() as u64)
}

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
