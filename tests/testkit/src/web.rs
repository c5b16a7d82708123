//! Real TCP services and clients for the end-to-end tests: nginx serving a
//! directory inside a namespace, curl fetching from it, hping3 flooding it.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::netns::{nsenter_cmd, output_timeout};

/// nginx in a namespace, listening on port 80 (IPv4 and IPv6); stopped and
/// its files removed on drop.
pub struct Nginx {
    child: Option<Child>,
    dir: PathBuf,
}

impl Nginx {
    /// Serve `files` (name, content) from a fresh directory in `ns`.
    pub fn start(ns: &str, files: &[(&str, &[u8])]) -> Result<Nginx> {
        let dir = std::env::temp_dir().join(format!("fw-nginx-{}", crate::unique_id()));
        let root = dir.join("www");
        std::fs::create_dir_all(&root)?;
        for (name, body) in files {
            std::fs::write(root.join(name), body)?;
        }
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\nuser root;\n\
                 pid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n\
                 proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n\
                 uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
                 server {{\n    listen 80 backlog=4096;\n    listen [::]:80 backlog=4096;\n\
                 root {d}/www;\n  }}\n}}\n",
                d = dir.display()
            ),
        )?;
        let mut cmd = nsenter_cmd(ns, "nginx");
        cmd.args(["-p", &dir.display().to_string(), "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .context("starting nginx (installed by `cargo xtask setup`)")?;
        let mut n = Nginx {
            child: Some(child),
            dir,
        };
        n.wait_listening(ns)?;
        Ok(n)
    }

    fn wait_listening(&mut self, ns: &str) -> Result<()> {
        for _ in 0..100 {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                bail!("nginx exited with {status}: {log}");
            }
            let out = output_timeout(
                nsenter_cmd(ns, "ss").args(["-Htln", "sport = :80"]),
                Duration::from_secs(5),
            )?;
            if String::from_utf8_lossy(&out.stdout).lines().count() >= 2 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("nginx did not listen on port 80 within 5 s")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What one curl run saw.
#[derive(Clone, Debug)]
pub struct Fetch {
    /// HTTP status; 0 when no connection was made.
    pub status: u16,
    /// Seconds from start until the TCP connection was established.
    pub connect_s: f64,
    pub bytes: u64,
}

/// `curl` from `src` (an address of `ns`) to `url`, giving up on the
/// connection after `connect_timeout`; the body goes to `out` if given.
pub fn fetch(
    ns: &str,
    src: IpAddr,
    url: &str,
    connect_timeout: Duration,
    out: Option<&Path>,
) -> Result<Fetch> {
    let mut cmd = nsenter_cmd(ns, "curl");
    cmd.args([
        "-s",
        "-g",
        "--interface",
        &src.to_string(),
        "--connect-timeout",
        &format!("{:.1}", connect_timeout.as_secs_f64()),
        "-m",
        &format!("{:.1}", connect_timeout.as_secs_f64() + 10.0),
        "-w",
        "%{http_code} %{time_connect} %{size_download}",
        "-o",
    ])
    .arg(out.map(|p| p.as_os_str()).unwrap_or("/dev/null".as_ref()))
    .arg(url);
    let o = output_timeout(&mut cmd, connect_timeout + Duration::from_secs(15))
        .context("running curl")?;
    let s = String::from_utf8_lossy(&o.stdout);
    let mut f = s.split_whitespace();
    let status = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let connect_s: f64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let bytes = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Fetch {
        status,
        // curl reports 0 when it never connected.
        connect_s: if status == 0 {
            f64::INFINITY
        } else {
            connect_s
        },
        bytes,
    })
}

/// A URL for `addr` port 80.
pub fn url(addr: IpAddr, path: &str) -> String {
    match addr {
        IpAddr::V4(a) => format!("http://{a}/{path}"),
        IpAddr::V6(a) => format!("http://[{a}]/{path}"),
    }
}

/// `hping3 -S --flood --rand-source` at `dst` port 80 from `ns`, one per
/// CPU (pinned), for `secs` seconds; the forged SYNs they sent in all.
/// The flood stands for other machines: it runs at the lowest priority and
/// takes the CPU time that the gateway's threads and the clients leave.
pub fn syn_flood(ns: &str, dst: IpAddr, secs: u64) -> Result<u64> {
    hping(ns, &["-S", "-p", "80", "--flood"], dst, secs, 19)
}

/// `hping3 --rand-source ARGS DST` from `ns`, one per CPU (pinned, so that
/// every CPU's share of the per-CPU budgets sees it) at priority `nice`,
/// for `secs` seconds; the packets they sent in all.
pub fn hping(ns: &str, args: &[&str], dst: IpAddr, secs: u64, nice: u8) -> Result<u64> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut children = Vec::new();
    for cpu in 0..cpus {
        let mut cmd = nsenter_cmd(ns, "timeout");
        cmd.args([
            "-s",
            "INT",
            &secs.to_string(),
            "nice",
            "-n",
            &nice.to_string(),
        ])
        .args(["taskset", "-c"])
        .arg(cpu.to_string())
        .args(["hping3", "--rand-source", "-q"])
        .args(args)
        .arg(dst.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        children.push(cmd.spawn().context("starting hping3")?);
    }
    let mut sent = 0;
    for c in children {
        let o = c.wait_with_output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // "N packets tramitted, M packets received" (sic).
        let n = text
            .lines()
            .find(|l| l.contains("packets tr"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .with_context(|| format!("no packet count in hping3's output: {text}"))?;
        sent += n;
    }
    Ok(sent)
}

/// TCP segments the namespace's stack received so far (`Tcp: InSegs`).
pub fn tcp_in_segs(ns: &str) -> Result<u64> {
    let o = output_timeout(
        nsenter_cmd(ns, "cat").arg("/proc/net/snmp"),
        Duration::from_secs(5),
    )?;
    let text = String::from_utf8_lossy(&o.stdout);
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next(), tcp.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no Tcp lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InSegs")
        .and_then(|(_, v)| v.parse().ok())
        .context("no Tcp InSegs in /proc/net/snmp")
}

/// An interface's counters in namespace `ns` (`ip -s -j link`'s stats64).
fn link_stats(ns: &str, ifname: &str) -> Result<serde_json::Value> {
    let o = output_timeout(
        Command::new("ip").args(["-n", ns, "-s", "-j", "link", "show", ifname]),
        Duration::from_secs(5),
    )?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    Ok(v[0]["stats64"].clone())
}

/// Frames received by an interface of namespace `ns` so far.
pub fn rx_packets(ns: &str, ifname: &str) -> Result<u64> {
    link_stats(ns, ifname)?["rx"]["packets"]
        .as_u64()
        .context("no rx packets in `ip -s -j link`")
}

/// Frames an interface of namespace `ns` dropped so far, received and
/// sent (for a veth: its peer's queue was full, or an XDP_TX failed).
pub fn dropped(ns: &str, ifname: &str) -> Result<u64> {
    let s = link_stats(ns, ifname)?;
    let n = |dir: &str| {
        s[dir]["dropped"]
            .as_u64()
            .context("no drop count in `ip -s -j link`")
    };
    Ok(n("rx")? + n("tx")?)
}

/// Let an interface poll in its own kernel thread, as a NIC queue does
/// (`/sys/class/net/IF/threaded`; /sys is remounted in a private mount
/// namespace so that it shows `ns`'s interfaces).
pub fn napi_threaded(ns: &str, ifname: &str) -> Result<()> {
    let script = format!(
        "mount -t sysfs sysfs /sys && echo 1 > /sys/class/net/{ifname}/threaded \
         && cat /sys/class/net/{ifname}/threaded"
    );
    let o = output_timeout(
        nsenter_cmd(ns, "unshare").args(["-m", "sh", "-c", &script]),
        Duration::from_secs(5),
    )?;
    if String::from_utf8_lossy(&o.stdout).trim() != "1" {
        bail!(
            "threaded NAPI on {ifname}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}

/// An XDP program on the far end of a veth: a veth hands XDP_TX frames
/// to its peer only when the peer runs XDP itself (on a NIC the answer
/// simply leaves by the wire). The product's clock probe serves: it
/// returns XDP_PASS and touches only its own unpinned map. Detached when
/// dropped.
pub struct PeerXdp {
    _ebpf: aya::Ebpf,
    pin_dir: PathBuf,
}

impl PeerXdp {
    pub fn attach(ns: &str, ifname: &str) -> Result<PeerXdp> {
        use aya::programs::{Xdp, XdpMode};
        use firewall_common::maps::PROG_CLOCK;
        // The object's pinned maps go to a private directory, not the
        // default one.
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/fwpeer{}", crate::unique_id()));
        std::fs::create_dir_all(&pin_dir)?;
        let ifname = ifname.to_string();
        let dir = pin_dir.clone();
        let ebpf = crate::netns::in_netns(ns, move || -> Result<aya::Ebpf> {
            let mut ebpf = aya::EbpfLoader::new()
                .default_map_pin_directory(&dir)
                .load(firewall_user::loader::object())?;
            let prog: &mut Xdp = ebpf
                .program_mut(PROG_CLOCK)
                .context("no clock probe in the object")?
                .try_into()?;
            prog.load()?;
            prog.attach(&ifname, XdpMode::Driver)
                .with_context(|| format!("attaching XDP to {ifname}"))?;
            Ok(ebpf)
        });
        match ebpf {
            Ok(e) => Ok(PeerXdp { _ebpf: e, pin_dir }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&pin_dir);
                Err(e)
            }
        }
    }
}

impl Drop for PeerXdp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}
