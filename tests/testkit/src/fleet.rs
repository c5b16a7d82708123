//! A fleet of gateways for `[fleet]`: a hub namespace with a bridge and a
//! nats-server (JetStream, file store in a temp dir), gateway namespaces
//! and an attacker namespace on that bridge. Used by
//! tests/tests/e2e_fleet.rs and `cargo xtask demo --fleet`.
//!
//! ```text
//!   hub ns: br0 10.77.0.1/24, nats-server -js
//!     |-- gw1 ns: hub 10.77.0.11   (firewall run --iface hub)
//!     |-- gw2 ns: hub 10.77.0.12   ...
//!     '-- att ns: hub 10.77.0.100, .101-.160 (sources to ban)
//! ```

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::netns::{in_netns, netns_path, nsenter_cmd, run_ok};

/// The hub's address: the bridge, where nats-server listens (port 4222).
pub const HUB: &str = "10.77.0.1";
/// The attacker namespace's first address (never banned by the tests).
pub const CONTROL: &str = "10.77.0.100";

/// Gateway `i`'s address (0-based: gw1 is 10.77.0.11).
pub fn gw_ip(i: usize) -> String {
    format!("10.77.0.{}", 11 + i)
}

/// An attacker address, 10.77.0.101 to .160.
pub fn src(n: u8) -> String {
    assert!((100..=160).contains(&n), "attacker addresses are .100-.160");
    format!("10.77.0.{n}")
}

fn ip(ns: &str, args: &str) -> Result<()> {
    run_ok(
        Command::new("ip")
            .args(["-n", ns])
            .args(args.split_whitespace()),
    )?;
    Ok(())
}

/// The namespaces and links; dropping it deletes the namespaces.
pub struct FleetNet {
    pub hub: String,
    pub gws: Vec<String>,
    pub att: String,
    created: Vec<String>,
}

impl FleetNet {
    pub fn new(gateways: usize) -> Result<FleetNet> {
        // `fw<pid>-...`: crate::cleanup_stale removes leftovers of dead runs.
        let base = format!("{}{}-fleet", crate::sandbox::NS_PREFIX, crate::unique_id());
        let mut net = FleetNet {
            hub: format!("{base}-hub"),
            gws: (1..=gateways).map(|i| format!("{base}-gw{i}")).collect(),
            att: format!("{base}-att"),
            created: Vec::new(),
        };
        net.build().context("creating the fleet namespaces")?;
        Ok(net)
    }

    fn build(&mut self) -> Result<()> {
        let names: Vec<String> = [self.hub.clone(), self.att.clone()]
            .into_iter()
            .chain(self.gws.clone())
            .collect();
        for ns in &names {
            run_ok(Command::new("ip").args(["netns", "add", ns]))?;
            self.created.push(ns.clone());
            ip(ns, "link set lo up")?;
        }
        let hub = self.hub.clone();
        ip(&hub, "link add br0 type bridge")?;
        ip(&hub, &format!("addr add {HUB}/24 dev br0"))?;
        ip(&hub, "link set br0 up")?;
        let mut legs: Vec<(String, String)> = self
            .gws
            .iter()
            .enumerate()
            .map(|(i, g)| (g.clone(), gw_ip(i)))
            .collect();
        legs.push((self.att.clone(), CONTROL.to_string()));
        for (i, (ns, addr)) in legs.iter().enumerate() {
            ip(
                &hub,
                &format!("link add h{i} type veth peer name hub netns {ns}"),
            )?;
            ip(&hub, &format!("link set h{i} master br0"))?;
            ip(&hub, &format!("link set h{i} up"))?;
            ip(ns, &format!("addr add {addr}/24 dev hub"))?;
            ip(ns, "link set hub up")?;
            // Sources the gateway never routed to are still received.
            for scope in ["all", "default", "hub"] {
                let p = format!("/proc/sys/net/ipv4/conf/{scope}/rp_filter");
                in_netns(&netns_path(ns), move || std::fs::write(p, "0"))
                    .with_context(|| format!("rp_filter in {ns}"))?;
            }
        }
        for n in 101..=160u8 {
            ip(&self.att, &format!("addr add {}/24 dev hub", src(n)))?;
        }
        Ok(())
    }
}

impl Drop for FleetNet {
    fn drop(&mut self) {
        for ns in self.created.drain(..).rev() {
            let _ = crate::netns::output_timeout(
                Command::new("ip").args(["netns", "del", &ns]),
                Duration::from_secs(10),
            );
        }
    }
}

/// nats-server with JetStream in the hub namespace, its store in `dir`;
/// killed (and `dir` removed) on drop.
pub struct NatsServer {
    hub: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start(hub: &str, dir: &Path) -> Result<NatsServer> {
        let mut n = NatsServer {
            hub: hub.to_string(),
            dir: dir.to_path_buf(),
            child: None,
        };
        n.restart()?;
        Ok(n)
    }

    /// Start the server again (after [`NatsServer::kill`]) on the same store.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        std::fs::create_dir_all(&self.dir)?;
        let log = std::fs::File::create(self.dir.join("nats.log"))?;
        let child = nsenter_cmd(&self.hub, "nats-server")
            .args(["-js", "-sd"])
            .arg(self.dir.join("store"))
            .args(["-a", HUB, "-p", "4222"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context(
                "starting nats-server (apt-get install nats-server; `cargo xtask setup` does)",
            )?;
        self.child = Some(child);
        let hub = netns_path(&self.hub);
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = format!("{HUB}:4222").parse()?;
        while !in_netns(&hub, || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        }) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                bail!(
                    "nats-server exited ({status}): {}",
                    std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
                );
            }
            if Instant::now() >= deadline {
                bail!("nats-server is not listening on {HUB}:4222 after 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Send a signal (SIGSTOP to stall it, SIGCONT to resume).
    pub fn signal(&self, sig: i32) -> Result<()> {
        let pid = self
            .child
            .as_ref()
            .context("nats-server is not running")?
            .id();
        // Our own child, not yet reaped: the pid is still its.
        crate::send_signal(pid, sig).with_context(|| format!("kill({pid}, {sig})"))
    }

    /// SIGKILL (works on a stopped server too) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A gateway's policy: `[fleet]` on the hub's server, an auto-ban that a
/// flood of a few hundred packets earns, and the hub allowed (the bus
/// crosses the protected interface here).
pub fn gateway_policy(name: &str, bucket: &str) -> String {
    format!(
        r#"allow = ["{HUB}/32"]

[defaults]
rate = 100
burst = 50

[autoban]
drops = 50
window = "5s"
ban = "1h"
max_ban = "2h"

[fleet]
servers = ["nats://{HUB}:4222"]
name = "{name}"
bucket = "{bucket}"
"#
    )
}
