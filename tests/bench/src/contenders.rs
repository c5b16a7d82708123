//! The contenders of the live runs, each installed on the gateway veth by
//! a guard whose drop removes it (also on error or panic): this firewall
//! (XDP native and TC), nftables, iptables hashlimit (nf_tables and legacy
//! backends), xdp-filter and a bare XDP_DROP program.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;

use super::policy::{self as pol, LIVE_BLOCKED, LIVE_BURST, LIVE_RATE};
use super::sys;
use super::topo::{sh, Topo};
use testkit::{nsenter_cmd, FirewallDaemon};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    FwXdp,
    FwTc,
    Nft,
    IptablesNft,
    IptablesLegacy,
    XdpFilter,
    XdpDrop,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::FwXdp,
        Kind::FwTc,
        Kind::Nft,
        Kind::IptablesNft,
        Kind::IptablesLegacy,
        Kind::XdpFilter,
        Kind::XdpDrop,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Kind::FwXdp => "firewall_xdp",
            Kind::FwTc => "firewall_tc",
            Kind::Nft => "nftables",
            Kind::IptablesNft => "iptables_nft",
            Kind::IptablesLegacy => "iptables_legacy",
            Kind::XdpFilter => "xdp_filter",
            Kind::XdpDrop => "xdp_drop",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::FwXdp => "this firewall, XDP native",
            Kind::FwTc => "this firewall, TC (tcx ingress)",
            Kind::Nft => "nftables netdev ingress, per-source dynamic set + limit",
            Kind::IptablesNft => "iptables raw hashlimit srcip (nf_tables backend)",
            Kind::IptablesLegacy => "iptables-legacy raw hashlimit srcip",
            Kind::XdpFilter => "xdp-filter (blocklist only), XDP native",
            Kind::XdpDrop => "XDP_DROP baseline (drops everything)",
        }
    }

    /// Whether this contender has anything to say about a scenario.
    pub fn applies(self, scenario: &str) -> bool {
        match self {
            // A blocklist of exact addresses cannot cover random sources.
            Kind::XdpFilter => scenario != "spoofed",
            _ => true,
        }
    }
}

/// An installed contender. Dropping it uninstalls it.
pub struct Installed {
    pub kind: Kind,
    /// What exactly was configured (shown in the report).
    pub config: String,
    /// BPF programs doing the work on the gateway (for the profile pass).
    pub prog_ids: Vec<u32>,
    daemon: Option<FirewallDaemon>,
    undo: Vec<Command>,
    _fds: Vec<OwnedFd>,
    _tmp: Option<TempDir>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            if let Err(e) = d.cleanup() {
                eprintln!("warning: {}: {e:#}", self.kind.key());
            }
        }
        for mut c in self.undo.drain(..).rev() {
            if let Err(e) = sh(&mut c) {
                eprintln!("warning: undoing {}: {e:#}", self.kind.key());
            }
        }
    }
}

/// A private directory under $TMPDIR, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!(
            "{}{}-{tag}{}",
            testkit::firewall::LOG_PREFIX,
            std::process::id(),
            super::next_id()
        ));
        std::fs::create_dir_all(&p).with_context(|| format!("mkdir {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn in_gw(topo: &Topo, prog: &str) -> Command {
    nsenter_cmd(&topo.gw_ns, prog)
}

/// The XDP program ids attached to the gateway interface (`ip -j -d link`).
pub fn attached_xdp_ids(topo: &Topo) -> Vec<u32> {
    let out = sh(Command::new("ip").args([
        "-n",
        &topo.gw_ns,
        "-j",
        "-d",
        "link",
        "show",
        "dev",
        &topo.gw_if,
    ]))
    .unwrap_or_default();
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let mut ids = Vec::new();
    fn walk(v: &Value, under_xdp: bool, ids: &mut Vec<u32>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let inside = under_xdp || k == "xdp";
                    if inside && k == "id" {
                        if let Some(id) = x.as_u64() {
                            ids.push(id as u32);
                        }
                    }
                    walk(x, inside, ids);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, under_xdp, ids)),
            _ => {}
        }
    }
    walk(&v, false, &mut ids);
    ids.sort();
    ids.dedup();
    ids
}

/// The scenarios' over-limit sources, which xdp-filter (a blocklist) blocks.
pub fn xdp_filter_sources() -> Vec<std::net::Ipv4Addr> {
    let mut v = vec![LIVE_BLOCKED, super::live::ONE_SOURCE];
    let base = u32::from(super::live::MANY_BASE);
    v.extend((0..super::live::MANY as u32).map(|i| std::net::Ipv4Addr::from(base + i)));
    v
}

pub fn install(kind: Kind, topo: &Topo) -> Result<Installed> {
    let mut inst = Installed {
        kind,
        config: String::new(),
        prog_ids: Vec::new(),
        daemon: None,
        undo: Vec::new(),
        _fds: Vec::new(),
        _tmp: None,
    };
    let gw = topo.gw_if.clone();
    match kind {
        Kind::FwXdp | Kind::FwTc => {
            let tmp = TempDir::new("policy")?;
            let file = tmp.0.join("policy.toml");
            let text = pol::live();
            std::fs::write(&file, &text)?;
            let mode = if kind == Kind::FwXdp { "xdp" } else { "tc" };
            let file_s = file.display().to_string();
            let d = FirewallDaemon::try_start(
                &topo.gw_ns,
                &["--iface", &gw, "--config", &file_s, "--mode", mode],
            )?;
            let attach = d
                .events()
                .into_iter()
                .find(|e| e["event"] == "attach")
                .map(|e| e["mode"].as_str().unwrap_or("?").to_string())
                .unwrap_or_default();
            if attach != mode {
                bail!("firewall attached in mode {attach:?}, wanted {mode}");
            }
            let status = d.cli(&["status", "--json"]);
            inst.prog_ids = program_ids_from_status(&String::from_utf8_lossy(&status.stdout));
            if inst.prog_ids.is_empty() && kind == Kind::FwXdp {
                inst.prog_ids = attached_xdp_ids(topo);
            }
            inst.config = format!(
                "`firewall run --iface GW --mode {mode} --config policy.toml` with `{}`",
                text.trim().replace('\n', " ")
            );
            inst.daemon = Some(d);
            inst._tmp = Some(tmp);
        }
        Kind::Nft => {
            let rules = format!(
                "table netdev fwbench {{\n\
                 \x20 set meter4 {{ type ipv4_addr; size {cap}; flags dynamic,timeout; timeout 60s; }}\n\
                 \x20 chain ingress {{\n\
                 \x20   type filter hook ingress device \"{gw}\" priority -500; policy accept;\n\
                 \x20   ip saddr {LIVE_BLOCKED} drop\n\
                 \x20   update @meter4 {{ ip saddr limit rate over {LIVE_RATE}/second burst {LIVE_BURST} packets }} drop\n\
                 \x20 }}\n\
                 }}\n",
                cap = firewall_common::maps::SOURCES_CAPACITY
            );
            let tmp = TempDir::new("nft")?;
            let file = tmp.0.join("rules.nft");
            std::fs::write(&file, &rules)?;
            // `nft -f` applies the whole file or nothing.
            let mut del = in_gw(topo, "nft");
            del.args(["delete", "table", "netdev", "fwbench"]);
            sh(in_gw(topo, "nft").arg("-f").arg(&file)).context("loading the nft rules")?;
            inst.undo.push(del);
            inst.config = rules.replace(&gw, "GW");
            inst._tmp = Some(tmp);
        }
        Kind::IptablesNft | Kind::IptablesLegacy => {
            let bin = if kind == Kind::IptablesNft {
                "iptables-nft"
            } else {
                "iptables-legacy"
            };
            let rate = format!("{LIVE_RATE}/sec");
            let burst = LIVE_BURST.to_string();
            let cap = firewall_common::maps::SOURCES_CAPACITY.to_string();
            let blocked = LIVE_BLOCKED.to_string();
            let specs: Vec<Vec<String>> = vec![
                ["-i", &gw, "-s", &blocked, "-j", "DROP"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                [
                    "-i",
                    &gw,
                    "-m",
                    "hashlimit",
                    "--hashlimit-name",
                    "fwbench",
                    "--hashlimit-mode",
                    "srcip",
                    "--hashlimit-above",
                    &rate,
                    "--hashlimit-burst",
                    &burst,
                    "--hashlimit-htable-size",
                    &cap,
                    "--hashlimit-htable-max",
                    &cap,
                    "--hashlimit-htable-expire",
                    "60000",
                    "-j",
                    "DROP",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ];
            let mut shown = Vec::new();
            for spec in &specs {
                let mut del = in_gw(topo, bin);
                del.args(["-w", "-t", "raw", "-D", "PREROUTING"]).args(spec);
                sh(in_gw(topo, bin)
                    .args(["-w", "-t", "raw", "-A", "PREROUTING"])
                    .args(spec))
                .with_context(|| format!("{bin} -A"))?;
                inst.undo.push(del);
                shown.push(
                    format!("{bin} -t raw -A PREROUTING {}", spec.join(" ")).replace(&gw, "GW"),
                );
            }
            inst.config = shown.join("\n");
        }
        Kind::XdpFilter => {
            // xdp-filter keeps one set of maps for the whole host: never
            // share it with an xdp-filter someone else runs.
            if std::path::Path::new("/sys/fs/bpf/xdp-filter").exists() {
                bail!("xdp-filter is already loaded on this host (/sys/fs/bpf/xdp-filter exists)");
            }
            let mut unload = in_gw(topo, "xdp-filter");
            unload.args(["unload", &gw]);
            sh(in_gw(topo, "xdp-filter").args([
                "load",
                "--mode",
                "native",
                "--features",
                "ipv4,ipv6",
                "--policy",
                "allow",
                &gw,
            ]))
            .context("xdp-filter load")?;
            inst.undo.push(unload);
            let srcs = xdp_filter_sources();
            for a in &srcs {
                sh(in_gw(topo, "xdp-filter").args(["ip", "--mode", "src", &a.to_string()]))
                    .context("xdp-filter ip")?;
            }
            inst.prog_ids = attached_xdp_ids(topo);
            inst.config = format!(
                "`xdp-filter load --mode native --features ipv4,ipv6 --policy allow GW`, then \
                 `xdp-filter ip --mode src ADDR` for the {} scenario sources (the blocked one, \
                 the single flooder and the 1,000 flooders)",
                srcs.len()
            );
        }
        Kind::XdpDrop => {
            let prog = sys::load_return("fwb_drop", sys::XDP_DROP)?;
            let pfd = prog.try_clone()?;
            let ifindex = topo.gw_ifindex;
            let link = testkit::in_netns(&testkit::netns_path(&topo.gw_ns), move || {
                sys::xdp_link(pfd.as_fd(), ifindex)
            })?;
            inst._fds.push(link);
            if let Some(id) = sys::fdinfo_u64(prog.as_fd(), "prog_id") {
                inst.prog_ids.push(id as u32);
            }
            inst._fds.push(prog);
            inst.config = "`r0 = XDP_DROP; exit`, attached with a native-mode bpf_link".into();
        }
    }
    topo.pin_napi()?;
    Ok(inst)
}

/// Program ids from `firewall status --json` (any `program_id`/`prog_id`
/// number in it).
fn program_ids_from_status(text: &str) -> Vec<u32> {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let mut ids = Vec::new();
    fn walk(v: &Value, ids: &mut Vec<u32>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k.contains("prog") && k.contains("id") {
                        if let Some(id) = x.as_u64() {
                            ids.push(id as u32);
                        }
                    }
                    walk(x, ids);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, ids)),
            _ => {}
        }
    }
    walk(&v, &mut ids);
    ids.sort();
    ids.dedup();
    ids
}

/// The installed tools' versions, for the report.
pub fn versions() -> Vec<(String, String)> {
    let probe = |prog: &str, arg: &str| -> String {
        Command::new(prog)
            .args(arg.split_whitespace())
            .output()
            .ok()
            .map(|o| {
                let s = String::from_utf8_lossy(&o.stdout).to_string()
                    + &String::from_utf8_lossy(&o.stderr);
                s.lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_else(|| "not found".into())
    };
    vec![
        ("nft".into(), probe("nft", "--version")),
        ("iptables-nft".into(), probe("iptables-nft", "-V")),
        ("iptables-legacy".into(), probe("iptables-legacy", "-V")),
        ("xdp-filter".into(), probe("xdp-filter", "load --version")),
        ("ethtool".into(), probe("ethtool", "--version")),
    ]
}
