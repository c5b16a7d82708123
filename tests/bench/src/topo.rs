//! The live-traffic topology: two namespaces joined by one veth pair.
//!
//! ```text
//!   generator ns                          gateway ns
//!   GEN 198.51.100.2/24  <--- veth --->   GW 198.51.100.1/24  (contender here)
//! ```
//!
//! Interface names embed the pid (`fwb<pid>g`, `fwb<pid>t`) so the gateway's
//! NAPI thread (`napi/<GW>-<id>`) can be found among other sandboxes'.
//! Namespace names (`fw<pid>-b<n>-gw`) follow the test kit's convention, so
//! a crashed bench's leftovers are removed by `testkit::cleanup_stale`.
//!
//! Set-up common to every contender: GRO on the gateway's veth (veth then
//! accepts XDP_TX'd frames from its peer even without an XDP program),
//! threaded NAPI for it, and that thread pinned to the gateway CPU while the
//! generator runs on the other one. The gateway has no default route, so
//! ICMP errors for spoofed sources go nowhere, and no UDP listener: what
//! passes every filter ends in the UDP layer as `NoPorts`.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use testkit::{netns_path, nsenter_cmd, output_timeout};

pub const GW_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const GEN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const GW_MAC: [u8; 6] = [0x02, 0xfb, 0, 0, 0, 0x01];
pub const GEN_MAC: [u8; 6] = [0x02, 0xfb, 0, 0, 0, 0x02];

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct Topo {
    pub gen_ns: String,
    pub gw_ns: String,
    pub gen_if: String,
    pub gw_if: String,
    /// Interface indexes, each in its own namespace.
    pub gen_ifindex: u32,
    pub gw_ifindex: u32,
    /// CPU the gateway's NAPI thread is pinned to.
    pub gw_cpu: usize,
    /// The gateway veth's NAPI thread (found by [`Topo::pin_napi`]).
    napi_tid: AtomicI32,
    created: Vec<String>,
}

/// Runs a command (30 s limit), failing with its stderr.
pub use testkit::netns::run_ok as sh;

fn ip(ns: &str, args: &str) -> Result<String> {
    sh(Command::new("ip")
        .args(["-n", ns])
        .args(args.split_whitespace()))
}

fn write_in(ns: &str, path: &str, value: &str) -> Result<()> {
    let (p, v) = (path.to_string(), value.to_string());
    testkit::in_netns(&netns_path(ns), move || std::fs::write(&p, v))
        .with_context(|| format!("writing {path} in {ns}"))
}

impl Topo {
    pub fn new(gw_cpu: usize) -> Result<Topo> {
        let pid = std::process::id();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut t = Topo {
            gen_ns: format!("fw{pid}-b{n}-gen"),
            gw_ns: format!("fw{pid}-b{n}-gw"),
            gen_if: format!("fwb{pid}t{n}"),
            gw_if: format!("fwb{pid}g{n}"),
            gen_ifindex: 0,
            gw_ifindex: 0,
            gw_cpu,
            napi_tid: AtomicI32::new(0),
            created: Vec::new(),
        };
        if t.gw_if.len() > 15 {
            t.gen_if = format!("fwbt{n}");
            t.gw_if = format!("fwbg{n}");
        }
        t.build().context("creating the bench topology")?;
        Ok(t)
    }

    fn build(&mut self) -> Result<()> {
        let (gen, gw) = (self.gen_ns.clone(), self.gw_ns.clone());
        for ns in [&gen, &gw] {
            sh(Command::new("ip").args(["netns", "add", ns]))?;
            self.created.push(ns.clone());
            // No IPv6 chatter (router solicitations, MLD) on the link.
            write_in(ns, "/proc/sys/net/ipv6/conf/all/disable_ipv6", "1")?;
            write_in(ns, "/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")?;
        }
        for scope in ["all", "default"] {
            write_in(
                &gw,
                &format!("/proc/sys/net/ipv4/conf/{scope}/rp_filter"),
                "0",
            )?;
        }
        let mac = testkit::packet::mac_to_string;
        ip(
            &gw,
            &format!(
                "link add {} address {} type veth peer name {} address {} netns {gen}",
                self.gw_if,
                mac(&GW_MAC),
                self.gen_if,
                mac(&GEN_MAC)
            ),
        )?;
        ip(&gw, &format!("addr add {GW_IP}/24 dev {}", self.gw_if))?;
        ip(&gen, &format!("addr add {GEN_IP}/24 dev {}", self.gen_if))?;
        for (ns, i) in [(&gw, &self.gw_if), (&gen, &self.gen_if)] {
            ip(ns, "link set lo up")?;
            ip(ns, &format!("link set {i} up"))?;
        }
        // Static neighbours: no ARP on the link.
        ip(
            &gw,
            &format!(
                "neigh replace {GEN_IP} lladdr {} dev {} nud permanent",
                mac(&GEN_MAC),
                self.gw_if
            ),
        )?;
        sh(nsenter_cmd(&gw, "ethtool").args(["-K", &self.gw_if, "gro", "on"]))?;
        // /sys shows the namespace that mounted it: `ip netns exec` remounts it.
        sh(Command::new("ip").args([
            "netns",
            "exec",
            &gw,
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{}/threaded", self.gw_if),
        ]))?;
        self.gen_ifindex = testkit::if_index(&netns_path(&gen), &self.gen_if)?;
        self.gw_ifindex = testkit::if_index(&netns_path(&gw), &self.gw_if)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = ip(&gw, &format!("-o link show dev {}", self.gw_if))?;
            if out.contains("LOWER_UP") {
                break;
            }
            if Instant::now() >= deadline {
                bail!("{} has no carrier after 5 s", self.gw_if);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.pin_napi()?;
        Ok(())
    }

    /// Finds the gateway veth's NAPI thread and pins it to `gw_cpu`.
    /// Returns its tid.
    pub fn pin_napi(&self) -> Result<i32> {
        let want = format!("napi/{}-", self.gw_if);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut found = None;
            if let Ok(rd) = std::fs::read_dir("/proc") {
                for e in rd.flatten().take(1_000_000) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let Ok(pid) = name.parse::<i32>() else {
                        continue;
                    };
                    let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                    if comm.trim_end().starts_with(&want) {
                        found = Some(pid);
                        break;
                    }
                }
            }
            if let Some(pid) = found {
                if !crate::sys::pin_task(pid, self.gw_cpu) {
                    bail!("cannot pin the NAPI thread {pid} to CPU {}", self.gw_cpu);
                }
                self.napi_tid.store(pid, Ordering::Relaxed);
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                bail!("no threaded NAPI thread for {} (want {want}*)", self.gw_if);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The NAPI thread found by the last [`Topo::pin_napi`] (0: none yet).
    pub fn napi_tid(&self) -> i32 {
        self.napi_tid.load(Ordering::Relaxed)
    }

    /// `ethtool -S` of an interface in a namespace, as name -> value.
    fn ethtool_stats(ns: &str, ifname: &str) -> Result<HashMap<String, u64>> {
        let out = sh(nsenter_cmd(ns, "ethtool").args(["-S", ifname]))?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_string(), v.trim().parse().ok()?))
            })
            .collect())
    }

    /// Every counter a live run reads, at one moment.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let tid = self.napi_tid.load(Ordering::Relaxed);
        let t0 = Instant::now();
        // The NAPI thread's time is read around the gateway's frame count,
        // so that the two describe the same moment.
        let n0 = napi_ns(tid);
        let gw = Self::ethtool_stats(&self.gw_ns, &self.gw_if)?;
        let n1 = napi_ns(tid);
        let gen = Self::ethtool_stats(&self.gen_ns, &self.gen_if)?;
        let snmp = testkit::in_netns(&netns_path(&self.gw_ns), || {
            std::fs::read_to_string("/proc/thread-self/net/snmp")
        })
        .context("reading the gateway's /proc/net/snmp")?;
        let cpu = cpu_ticks(self.gw_cpu);
        let t1 = Instant::now();
        let sum = |m: &HashMap<String, u64>, suffix: &str| -> u64 {
            m.iter()
                .filter(|(k, _)| k.starts_with("rx_queue_") && k.ends_with(suffix))
                .map(|(_, v)| *v)
                .sum()
        };
        let sum_tx = |m: &HashMap<String, u64>, suffix: &str| -> u64 {
            m.iter()
                .filter(|(k, _)| k.starts_with("tx_queue_") && k.ends_with(suffix))
                .map(|(_, v)| *v)
                .sum()
        };
        let udp = snmp_row(&snmp, "Udp:");
        Ok(Snapshot {
            at: t0 + (t1 - t0) / 2,
            rx: sum(&gw, "_xdp_packets"),
            sent: sum_tx(&gen, "_xdp_xmit"),
            send_errors: sum_tx(&gen, "_xdp_xmit_errors"),
            udp_in: ["InDatagrams", "NoPorts", "InErrors"]
                .iter()
                .map(|k| udp.get(*k).copied().unwrap_or(0))
                .sum(),
            cpu_busy: cpu.0,
            cpu_total: cpu.1,
            napi_ns: n0 + n1.saturating_sub(n0) / 2,
        })
    }
}

/// `/proc/net/snmp` has a header line and a value line per protocol.
fn snmp_row(text: &str, proto: &str) -> HashMap<String, u64> {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(proto)).collect();
    if lines.len() < 2 {
        return HashMap::new();
    }
    lines[0]
        .split_whitespace()
        .skip(1)
        .zip(lines[1].split_whitespace().skip(1))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// (busy, total) ticks of one CPU from /proc/stat.
pub fn cpu_ticks(cpu: usize) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let tag = format!("cpu{cpu} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&tag)) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// Counters at one moment (see [`Topo::snapshot`]).
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    pub at: Instant,
    /// Frames the gateway veth took off its ring (processed at the gateway).
    pub rx: u64,
    /// Frames the generator's veth handed to the gateway's ring ...
    pub sent: u64,
    /// ... and those it could not (ring full: the gateway was saturated).
    pub send_errors: u64,
    /// UDP datagrams that reached the gateway's UDP layer (passed every filter).
    pub udp_in: u64,
    pub cpu_busy: u64,
    pub cpu_total: u64,
    /// Time the gateway's NAPI thread has spent on a CPU (ns): all of the
    /// gateway's packet processing runs in it.
    pub napi_ns: u64,
}

/// On-CPU time of a thread (first field of `/proc/TID/schedstat`, ns).
fn napi_ns(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

impl Drop for Topo {
    fn drop(&mut self) {
        for ns in self.created.drain(..).rev() {
            let r = output_timeout(
                Command::new("ip").args(["netns", "del", &ns]),
                Duration::from_secs(10),
            );
            if !matches!(&r, Ok(o) if o.status.success()) {
                eprintln!("warning: ip netns del {ns} failed");
            }
        }
    }
}
