//! Traffic inside namespaces: UDP senders and a counting UDP receiver, raw
//! AF_PACKET injection (VLAN tags, spoofed sources) and capture.
//!
//! Every loop here is bounded by a count or a deadline.

use crate::netns::{in_netns, netns_path};
use crate::packet::VlanTag;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::ffi::CString;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest a sink or capture thread lives if nobody stops it.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
const POLL: Duration = Duration::from_millis(20);

fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: setsockopt with a valid pointer to an int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Big receive buffer so bursts are not dropped by the socket:
/// SO_RCVBUFFORCE (root), else SO_RCVBUF.
fn big_rcvbuf(fd: RawFd, bytes: i32) {
    const SO_RCVBUFFORCE: i32 = 33;
    if set_int_opt(fd, libc::SOL_SOCKET, SO_RCVBUFFORCE, bytes).is_err() {
        let _ = set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes);
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
        || e.raw_os_error() == Some(libc::ENOBUFS)
}

// ---------------------------------------------------------------------------
// Pacing

/// Spreads `total` sends over time at `rate` per second, in small batches,
/// never past `deadline`.
pub(crate) struct Pacer {
    start: Instant,
    rate: Option<u64>,
    total: u64,
    issued: u64,
    deadline: Instant,
}

impl Pacer {
    pub(crate) fn new(rate: Option<u64>, total: u64, deadline: Instant) -> Self {
        Pacer {
            start: Instant::now(),
            rate: rate.filter(|r| *r > 0),
            total,
            issued: 0,
            deadline,
        }
    }

    /// How many to send now (sleeping until at least one is due), or None
    /// when done or past the deadline.
    pub(crate) fn next_batch(&mut self) -> Option<u64> {
        // Bounded: each iteration either returns or sleeps until the next
        // send is due, and the deadline ends it.
        for _ in 0..10_000_000u64 {
            let now = Instant::now();
            if self.issued >= self.total || now >= self.deadline {
                return None;
            }
            let Some(rate) = self.rate else {
                let n = (self.total - self.issued).min(64);
                self.issued += n;
                return Some(n);
            };
            let elapsed = now.duration_since(self.start).as_nanos();
            let due = ((elapsed * u128::from(rate) / 1_000_000_000) as u64 + 1).min(self.total);
            if due > self.issued {
                let n = (due - self.issued).min(256);
                self.issued += n;
                return Some(n);
            }
            let next_ns = u128::from(self.issued) * 1_000_000_000 / u128::from(rate);
            let next = self.start + Duration::from_nanos(next_ns as u64);
            let wait = next.min(self.deadline).saturating_duration_since(now);
            if wait > Duration::from_micros(200) {
                std::thread::sleep(wait);
            } else if !wait.is_zero() {
                std::thread::yield_now();
            }
        }
        None
    }
}

fn total_for(rate_pps: u64, duration: Duration) -> u64 {
    (rate_pps as f64 * duration.as_secs_f64()).round() as u64
}

/// The hard stop for a paced run of `duration`: a little slack for a
/// sender that falls behind, then it gives up.
fn deadline_for(duration: Duration) -> Instant {
    Instant::now() + duration + (duration / 10).max(Duration::from_millis(250))
}

// ---------------------------------------------------------------------------
// UDP

fn udp_socket_in(ns_path: &str, bind: SocketAddr) -> Result<UdpSocket> {
    in_netns(ns_path, move || UdpSocket::bind(bind))
        .with_context(|| format!("bind UDP {bind} in {ns_path}"))
}

fn unspecified_like(dst: &SocketAddr) -> IpAddr {
    match dst {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

fn payload(seq: u64) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(b"fw-test!");
    p
}

/// Sends one datagram, retrying briefly on a full queue. True if sent.
fn send_one(sock: &UdpSocket, buf: &[u8], dst: SocketAddr) -> bool {
    for attempt in 0..200 {
        match sock.send_to(buf, dst) {
            Ok(_) => return true,
            Err(e) if is_transient(&e) => {
                if attempt > 10 {
                    std::thread::sleep(Duration::from_micros(100));
                } else {
                    std::thread::yield_now();
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// Sends UDP datagrams from the namespace at `ns_path` to `dst` at
/// `rate_pps` for `duration` (rate x duration datagrams of 32 bytes), bound
/// to `src` if given (e.g. the attacker's secondary address). Paced by
/// sleeping; stops by itself shortly after `duration` even if behind.
/// Returns how many were sent. Panics if the socket cannot be set up.
pub fn send_udp(
    ns_path: &str,
    src: Option<IpAddr>,
    dst: SocketAddr,
    rate_pps: u64,
    duration: Duration,
) -> u64 {
    let total = total_for(rate_pps, duration);
    send_udp_paced(
        ns_path,
        src,
        dst,
        Some(rate_pps),
        total,
        deadline_for(duration),
    )
}

/// Sends `count` datagrams as fast as possible (at most 60 s). Returns how
/// many were sent.
pub fn send_udp_burst(ns_path: &str, src: Option<IpAddr>, dst: SocketAddr, count: u64) -> u64 {
    send_udp_paced(
        ns_path,
        src,
        dst,
        None,
        count,
        Instant::now() + Duration::from_secs(60),
    )
}

fn send_udp_paced(
    ns_path: &str,
    src: Option<IpAddr>,
    dst: SocketAddr,
    rate: Option<u64>,
    total: u64,
    deadline: Instant,
) -> u64 {
    let bind = SocketAddr::new(src.unwrap_or_else(|| unspecified_like(&dst)), 0);
    let sock = udp_socket_in(ns_path, bind).unwrap_or_else(|e| panic!("send_udp: {e:#}"));
    let mut pacer = Pacer::new(rate, total, deadline);
    let mut seq = 0u64;
    let mut sent = 0u64;
    while let Some(n) = pacer.next_batch() {
        for _ in 0..n {
            if send_one(&sock, &payload(seq), dst) {
                sent += 1;
            }
            seq += 1;
        }
    }
    sent
}

struct SinkShared {
    total: AtomicU64,
    bytes: AtomicU64,
    by_src: Mutex<HashMap<IpAddr, u64>>,
}

/// What a [`UdpSink`] received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkCounts {
    pub total: u64,
    pub bytes: u64,
    /// Datagrams per source address (IPv4-mapped addresses shown as IPv4).
    pub by_src: HashMap<IpAddr, u64>,
}

impl SinkCounts {
    pub fn from(&self, ip: IpAddr) -> u64 {
        self.by_src.get(&ip).copied().unwrap_or(0)
    }
}

/// A UDP receiver in a namespace that counts datagrams, in total and per
/// source address, on its own thread. Stops on [`UdpSink::stop`] or drop.
pub struct UdpSink {
    addr: SocketAddr,
    shared: Arc<SinkShared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpSink {
    /// Binds `addr` (port 0 picks one; see [`UdpSink::addr`]) in the
    /// namespace. Panics on failure.
    pub fn bind(ns_path: &str, addr: SocketAddr) -> UdpSink {
        Self::try_bind(ns_path, addr).unwrap_or_else(|e| panic!("UdpSink::bind: {e:#}"))
    }

    pub fn try_bind(ns_path: &str, addr: SocketAddr) -> Result<UdpSink> {
        let sock = udp_socket_in(&netns_path(ns_path), addr)?;
        big_rcvbuf(sock.as_raw_fd(), 8 << 20);
        sock.set_read_timeout(Some(POLL))?;
        let addr = sock.local_addr()?;
        let shared = Arc::new(SinkShared {
            total: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            by_src: Mutex::new(HashMap::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("udp-sink-{addr}"))
            .spawn(move || sink_loop(sock, sh, st))?;
        Ok(UdpSink {
            addr,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (with the real port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn count(&self) -> u64 {
        self.shared.total.load(Ordering::Relaxed)
    }

    pub fn count_from(&self, ip: IpAddr) -> u64 {
        let ip = ip.to_canonical();
        self.shared
            .by_src
            .lock()
            .unwrap()
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }

    /// A snapshot of the counts.
    pub fn counts(&self) -> SinkCounts {
        SinkCounts {
            total: self.count(),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            by_src: self.shared.by_src.lock().unwrap().clone(),
        }
    }

    /// Waits until at least `n` datagrams arrived. False on timeout.
    pub fn wait_for(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.count() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Waits until nothing new arrived for `quiet` (at most `timeout`);
    /// returns the count.
    pub fn settle(&self, quiet: Duration, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut last = self.count();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            let c = self.count();
            if c != last {
                last = c;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        last
    }

    /// Lets in-flight datagrams land (quiet 100 ms, at most 2 s), stops the
    /// receiver and returns the final counts.
    pub fn stop(mut self) -> SinkCounts {
        self.settle(Duration::from_millis(100), Duration::from_secs(2));
        self.shutdown();
        self.counts()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn sink_loop(sock: UdpSocket, sh: Arc<SinkShared>, stop: Arc<AtomicBool>) {
    let born = Instant::now();
    let mut buf = vec![0u8; 65536];
    let record = |n: usize, from: SocketAddr| {
        sh.total.fetch_add(1, Ordering::Relaxed);
        sh.bytes.fetch_add(n as u64, Ordering::Relaxed);
        *sh.by_src
            .lock()
            .unwrap()
            .entry(from.ip().to_canonical())
            .or_insert(0) += 1;
    };
    while !stop.load(Ordering::Relaxed) && born.elapsed() < MAX_LIFETIME {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => record(n, from),
            Err(e) if is_transient(&e) || e.kind() == ErrorKind::TimedOut => {}
            Err(_) => std::thread::sleep(POLL),
        }
    }
    // Drain what is already queued.
    let _ = sock.set_nonblocking(true);
    for _ in 0..1_000_000 {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => record(n, from),
            Err(_) => break,
        }
    }
}

// ---------------------------------------------------------------------------
// Raw frames

const ETH_P_ALL: u16 = 0x0003;

/// An AF_PACKET SOCK_RAW socket bound to one interface of a namespace, for
/// sending hand-built frames (VLAN tags, spoofed sources, malformed headers).
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
    ifname: String,
}

fn packet_socket_in(ns_path: &str, ifname: &str, protocol: u16) -> Result<(OwnedFd, i32)> {
    let name = CString::new(ifname)?;
    let r = in_netns(ns_path, move || -> std::io::Result<(OwnedFd, i32)> {
        // SAFETY: valid C string.
        let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if idx == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Protocol 0: receive nothing until bound (no frames from other
        // interfaces sneak in before bind).
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if protocol != 0 {
            // SAFETY: zeroed sockaddr_ll is valid; bind reads its size.
            let rc = unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = protocol.to_be();
                sll.sll_ifindex = idx as i32;
                libc::bind(
                    fd.as_raw_fd(),
                    &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok((fd, idx as i32))
    });
    r.with_context(|| format!("AF_PACKET socket on {ifname} in {ns_path}"))
}

impl RawSocket {
    pub fn open(ns_path: &str, ifname: &str) -> Result<RawSocket> {
        let (fd, ifindex) = packet_socket_in(&netns_path(ns_path), ifname, 0)?;
        Ok(RawSocket {
            fd,
            ifindex,
            ifname: ifname.to_string(),
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Sends one complete Ethernet frame (retrying briefly on a full queue).
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: zeroed sockaddr_ll is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        if frame.len() >= 6 {
            sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        }
        let mut last = None;
        for attempt in 0..200 {
            // SAFETY: buffer and address are valid for the given lengths.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr() as *const libc::c_void,
                    frame.len(),
                    0,
                    &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if rc >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if !is_transient(&e) {
                return Err(e);
            }
            last = Some(e);
            if attempt > 10 {
                std::thread::sleep(Duration::from_micros(100));
            } else {
                std::thread::yield_now();
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::from(ErrorKind::WouldBlock)))
    }

    /// Sends `total` frames cycling through `frames`, at `rate_pps` if given
    /// (else as fast as possible), stopping after `max_duration` regardless.
    /// Returns how many were sent.
    pub fn send_many(
        &self,
        frames: &[Vec<u8>],
        total: u64,
        rate_pps: Option<u64>,
        max_duration: Duration,
    ) -> u64 {
        if frames.is_empty() {
            return 0;
        }
        let mut pacer = Pacer::new(rate_pps, total, Instant::now() + max_duration);
        let mut i = 0usize;
        let mut sent = 0;
        while let Some(n) = pacer.next_batch() {
            for _ in 0..n {
                if self.send(&frames[i % frames.len()]).is_ok() {
                    sent += 1;
                }
                i += 1;
            }
        }
        sent
    }
}

/// Sends each frame once, in order, out of `ifname` in the namespace, at
/// `rate_pps` if given (else as fast as possible). Returns how many were
/// sent. Panics if the socket cannot be opened.
pub fn send_raw(ns_path: &str, ifname: &str, frames: &[Vec<u8>], rate_pps: Option<u64>) -> u64 {
    let s = RawSocket::open(ns_path, ifname).unwrap_or_else(|e| panic!("send_raw: {e:#}"));
    let max = match rate_pps {
        Some(r) if r > 0 => deadline_for(Duration::from_secs_f64(frames.len() as f64 / r as f64))
            .saturating_duration_since(Instant::now()),
        _ => Duration::from_secs(60),
    };
    s.send_many(frames, frames.len() as u64, rate_pps, max)
}

/// A frame seen by a [`Capture`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    /// The frame as on the wire: a VLAN tag the kernel had taken off into
    /// metadata is put back.
    pub data: Vec<u8>,
    /// That offloaded (outermost) tag, if there was one.
    pub offloaded_tag: Option<VlanTag>,
    /// PACKET_HOST, PACKET_BROADCAST, PACKET_OTHERHOST, ... (never OUTGOING).
    pub pkttype: u8,
}

/// Captures frames arriving on an interface of a namespace (AF_PACKET,
/// ETH_P_ALL; outgoing frames are skipped). On a gateway interface with the
/// firewall attached, it sees what XDP passed. Keeps up to 100,000 frames;
/// counts all.
pub struct Capture {
    frames: Arc<Mutex<Vec<CapturedFrame>>>,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const CAPTURE_KEEP: usize = 100_000;

impl Capture {
    /// Panics on failure.
    pub fn open(ns_path: &str, ifname: &str) -> Capture {
        Self::try_open(ns_path, ifname).unwrap_or_else(|e| panic!("Capture::open: {e:#}"))
    }

    pub fn try_open(ns_path: &str, ifname: &str) -> Result<Capture> {
        let (fd, _) = packet_socket_in(&netns_path(ns_path), ifname, ETH_P_ALL)?;
        const SOL_PACKET: i32 = 263;
        const PACKET_AUXDATA: i32 = 8;
        set_int_opt(fd.as_raw_fd(), SOL_PACKET, PACKET_AUXDATA, 1)?;
        big_rcvbuf(fd.as_raw_fd(), 8 << 20);
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: POLL.as_micros() as _,
        };
        // SAFETY: valid timeval pointer and size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        }
        let frames = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, c, s) = (frames.clone(), count.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("capture-{ifname}"))
            .spawn(move || capture_loop(fd, f, c, s))?;
        Ok(Capture {
            frames,
            count,
            stop,
            thread: Some(thread),
        })
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// A copy of the kept frames.
    pub fn frames(&self) -> Vec<CapturedFrame> {
        self.frames.lock().unwrap().clone()
    }

    /// How many kept frames satisfy `pred` (given the on-wire bytes).
    pub fn count_matching(&self, pred: impl Fn(&[u8]) -> bool) -> usize {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|f| pred(&f.data))
            .count()
    }

    /// Waits until at least `n` kept frames satisfy `pred`. False on timeout.
    pub fn wait_for(&self, n: usize, timeout: Duration, pred: impl Fn(&[u8]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count_matching(&pred) >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops capturing and returns the kept frames.
    pub fn stop(mut self) -> Vec<CapturedFrame> {
        self.shutdown();
        std::mem::take(&mut *self.frames.lock().unwrap())
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

fn capture_loop(
    fd: OwnedFd,
    frames: Arc<Mutex<Vec<CapturedFrame>>>,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
    const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
    const SOL_PACKET: i32 = 263;
    const PACKET_AUXDATA: i32 = 8;
    const PACKET_OUTGOING: u8 = 4;
    let born = Instant::now();
    let mut buf = vec![0u8; 65536];
    let mut control = [0u64; 32];
    while !stop.load(Ordering::Relaxed) && born.elapsed() < MAX_LIFETIME {
        // SAFETY: all pointers in msghdr point at live buffers of the stated
        // sizes; CMSG_* walk the control buffer the kernel filled in.
        let (n, sll, aux) = unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = &mut sll as *mut libc::sockaddr_ll as *mut libc::c_void;
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            let n = libc::recvmsg(fd.as_raw_fd(), &mut msg, 0);
            if n < 0 {
                continue; // timeout (EAGAIN) or EINTR: check stop, go on
            }
            let mut aux = None;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            let mut guard = 0;
            while !c.is_null() && guard < 16 {
                if (*c).cmsg_level == SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                    aux = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(c) as *const TpacketAuxdata
                    ));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
                guard += 1;
            }
            (n as usize, sll, aux)
        };
        if sll.sll_pkttype == PACKET_OUTGOING {
            continue;
        }
        let mut data = buf[..n.min(buf.len())].to_vec();
        let mut tag = None;
        if let Some(a) = aux {
            if a.tp_status & TP_STATUS_VLAN_VALID != 0 && data.len() >= 12 {
                let tpid = if a.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                    a.tp_vlan_tpid
                } else {
                    crate::packet::ETH_P_8021Q
                };
                let t = VlanTag {
                    tpid,
                    tci: a.tp_vlan_tci,
                };
                data.splice(12..12, t.bytes());
                tag = Some(t);
            }
        }
        count.fetch_add(1, Ordering::Relaxed);
        let mut kept = frames.lock().unwrap();
        if kept.len() < CAPTURE_KEEP {
            kept.push(CapturedFrame {
                data,
                offloaded_tag: tag,
                pkttype: sll.sll_pkttype,
            });
        }
    }
}
