//! A three-namespace sandbox: a client and an attacker, each joined to the
//! gateway by a veth pair.
//!
//! ```text
//!  client ns                     gateway ns                     attacker ns
//!  c-gw 192.0.2.2/24     <-> gw-c 192.0.2.1/24
//!       2001:db8:1::2/64          2001:db8:1::1/64
//!                                gw-a 198.51.100.1/24    <-> a-gw 198.51.100.2/24, .3/24
//!                                     2001:db8:2::1/64            2001:db8:2::2/64, ::3/64
//! ```
//!
//! Interface names are the same in every sandbox (each lives in its own
//! namespace); namespace names are unique: `fw<pid>-<n>-gw`, `-client`,
//! `-attacker`. The gateway does not forward: traffic is addressed to the
//! gateway's own addresses and received locally. Reverse-path filtering is
//! off on the gateway, so raw frames with spoofed sources reach local sockets.

use crate::netns::{mac_address, netns_path, run_ok, sysctl_in};
use crate::packet::{Frame, Mac};
use anyhow::{bail, Context, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::{Duration, Instant};

/// Namespace names start with this, then `<pid>-<n>-`.
pub const NS_PREFIX: &str = "fw";

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const GW_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const ATTACKER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Secondary attacker address (same /24).
pub const ATTACKER2_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
pub const GW_ATTACKER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
pub const GW_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const ATTACKER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
/// Secondary attacker address (same /64).
pub const ATTACKER2_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 3);
pub const GW_ATTACKER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);

/// Fixed, locally administered MACs (set at creation, checked by ioctl).
pub const GW_CLIENT_MAC: Mac = [0x02, 0xf0, 0, 0, 0x01, 0x01];
pub const CLIENT_MAC: Mac = [0x02, 0xf0, 0, 0, 0x01, 0x02];
pub const GW_ATTACKER_MAC: Mac = [0x02, 0xf0, 0, 0, 0x02, 0x01];
pub const ATTACKER_MAC: Mac = [0x02, 0xf0, 0, 0, 0x02, 0x02];

/// The sandbox; dropping it deletes the namespaces (and so the veths), also
/// when the test panics.
#[derive(Debug)]
pub struct Sandbox {
    /// `<pid>-<n>`, unique on this machine while the process lives.
    pub id: String,
    pub gw_ns: String,
    pub client_ns: String,
    pub attacker_ns: String,
    /// Gateway side of the client link (`gw-c`).
    pub gw_client_if: String,
    /// Gateway side of the attacker link (`gw-a`).
    pub gw_attacker_if: String,
    /// Client side of the client link (`c-gw`).
    pub client_if: String,
    /// Attacker side of the attacker link (`a-gw`).
    pub attacker_if: String,
    pub gw_client_mac: Mac,
    pub gw_attacker_mac: Mac,
    pub client_mac: Mac,
    pub attacker_mac: Mac,
    /// Namespaces created so far (deleted on drop).
    created: Vec<String>,
}

fn ip(ns: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["-n", ns]);
    c
}

fn ip_ok(ns: &str, args: &str) -> Result<()> {
    run_ok(ip(ns).args(args.split_whitespace()))?;
    Ok(())
}

impl Sandbox {
    /// Creates the namespaces, veth pairs and addresses, brings everything up
    /// and waits (at most 5 s) until the links have carrier.
    pub fn new() -> Result<Sandbox> {
        let id = crate::unique_id();
        let base = format!("{NS_PREFIX}{id}");
        let mut sb = Sandbox {
            gw_ns: format!("{base}-gw"),
            client_ns: format!("{base}-client"),
            attacker_ns: format!("{base}-attacker"),
            id,
            gw_client_if: "gw-c".into(),
            gw_attacker_if: "gw-a".into(),
            client_if: "c-gw".into(),
            attacker_if: "a-gw".into(),
            gw_client_mac: GW_CLIENT_MAC,
            gw_attacker_mac: GW_ATTACKER_MAC,
            client_mac: CLIENT_MAC,
            attacker_mac: ATTACKER_MAC,
            created: Vec::new(),
        };
        // On any error below, `sb` is dropped and removes what exists.
        sb.build().context("creating the namespace sandbox")?;
        Ok(sb)
    }

    fn build(&mut self) -> Result<()> {
        let (gw, cl, at) = (
            self.gw_ns.clone(),
            self.client_ns.clone(),
            self.attacker_ns.clone(),
        );
        for ns in [&gw, &cl, &at] {
            run_ok(Command::new("ip").args(["netns", "add", ns]))?;
            self.created.push(ns.clone());
        }
        for ns in [&gw, &cl, &at] {
            let p = netns_path(ns);
            // No DAD (addresses usable at once), no router discovery noise.
            for scope in ["all", "default"] {
                sysctl_in(&p, &format!("net/ipv6/conf/{scope}/accept_dad"), "0")?;
                sysctl_in(&p, &format!("net/ipv6/conf/{scope}/accept_ra"), "0")?;
                sysctl_in(
                    &p,
                    &format!("net/ipv6/conf/{scope}/router_solicitations"),
                    "0",
                )?;
            }
        }
        let gp = netns_path(&gw);
        for scope in ["all", "default"] {
            // Received locally, never forwarded; spoofed sources not filtered.
            sysctl_in(&gp, &format!("net/ipv4/conf/{scope}/rp_filter"), "0")?;
            sysctl_in(&gp, &format!("net/ipv6/conf/{scope}/forwarding"), "0")?;
        }
        sysctl_in(&gp, "net/ipv4/ip_forward", "0")?;

        let mac = crate::packet::mac_to_string;
        ip_ok(
            &gw,
            &format!(
                "link add {} address {} type veth peer name {} address {} netns {cl}",
                self.gw_client_if,
                mac(&self.gw_client_mac),
                self.client_if,
                mac(&self.client_mac)
            ),
        )?;
        ip_ok(
            &gw,
            &format!(
                "link add {} address {} type veth peer name {} address {} netns {at}",
                self.gw_attacker_if,
                mac(&self.gw_attacker_mac),
                self.attacker_if,
                mac(&self.attacker_mac)
            ),
        )?;

        let (gc, ga, c, a) = (
            &self.gw_client_if,
            &self.gw_attacker_if,
            &self.client_if,
            &self.attacker_if,
        );
        ip_ok(&gw, &format!("addr add {GW_CLIENT_V4}/24 dev {gc}"))?;
        ip_ok(&gw, &format!("addr add {GW_CLIENT_V6}/64 dev {gc} nodad"))?;
        ip_ok(&gw, &format!("addr add {GW_ATTACKER_V4}/24 dev {ga}"))?;
        ip_ok(&gw, &format!("addr add {GW_ATTACKER_V6}/64 dev {ga} nodad"))?;
        ip_ok(&cl, &format!("addr add {CLIENT_V4}/24 dev {c}"))?;
        ip_ok(&cl, &format!("addr add {CLIENT_V6}/64 dev {c} nodad"))?;
        ip_ok(&at, &format!("addr add {ATTACKER_V4}/24 dev {a}"))?;
        ip_ok(&at, &format!("addr add {ATTACKER2_V4}/24 dev {a}"))?;
        ip_ok(&at, &format!("addr add {ATTACKER_V6}/64 dev {a} nodad"))?;
        ip_ok(&at, &format!("addr add {ATTACKER2_V6}/64 dev {a} nodad"))?;
        for (ns, ifs) in [(&gw, vec![gc, ga]), (&cl, vec![c]), (&at, vec![a])] {
            ip_ok(ns, "link set lo up")?;
            for i in ifs {
                ip_ok(ns, &format!("link set {i} up"))?;
            }
        }
        ip_ok(&cl, &format!("route add default via {GW_CLIENT_V4}"))?;
        ip_ok(&cl, &format!("-6 route add default via {GW_CLIENT_V6}"))?;
        ip_ok(&at, &format!("route add default via {GW_ATTACKER_V4}"))?;
        ip_ok(&at, &format!("-6 route add default via {GW_ATTACKER_V6}"))?;

        let deadline = Instant::now() + Duration::from_secs(5);
        for (ns, ifname) in [(&gw, gc), (&gw, ga), (&cl, c), (&at, a)] {
            loop {
                let out = run_ok(ip(ns).args(["-o", "link", "show", "dev", ifname]))?;
                if out.contains("LOWER_UP") {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("{ifname} in {ns} has no carrier after 5 s: {out}");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        for (ns, ifname, want) in [
            (&gw, gc, self.gw_client_mac),
            (&gw, ga, self.gw_attacker_mac),
            (&cl, c, self.client_mac),
            (&at, a, self.attacker_mac),
        ] {
            let got = mac_address(&netns_path(ns), ifname)?;
            if got != want {
                bail!("{ifname} in {ns} has MAC {got:02x?}, expected {want:02x?}");
            }
        }
        Ok(())
    }

    /// `/run/netns/<gw_ns>`.
    pub fn gw_path(&self) -> String {
        netns_path(&self.gw_ns)
    }
    pub fn client_path(&self) -> String {
        netns_path(&self.client_ns)
    }
    pub fn attacker_path(&self) -> String {
        netns_path(&self.attacker_ns)
    }

    /// The three namespace names: gateway, client, attacker.
    pub fn namespaces(&self) -> [&str; 3] {
        [&self.gw_ns, &self.client_ns, &self.attacker_ns]
    }

    /// A frame from the client's MAC to the gateway's `gw-c` MAC, for
    /// [`crate::send_raw`] on `client_if`.
    pub fn client_frame(&self, src: IpAddr, dst: IpAddr) -> Frame {
        Frame::ip(src, dst).macs(self.gw_client_mac, self.client_mac)
    }

    /// A frame from the attacker's MAC to the gateway's `gw-a` MAC, for
    /// [`crate::send_raw`] on `attacker_if` (any source address: spoofing).
    pub fn attacker_frame(&self, src: IpAddr, dst: IpAddr) -> Frame {
        Frame::ip(src, dst).macs(self.gw_attacker_mac, self.attacker_mac)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for ns in self.created.drain(..).rev() {
            let r = crate::netns::output_timeout(
                Command::new("ip").args(["netns", "del", &ns]),
                Duration::from_secs(10),
            );
            match r {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "warning: ip netns del {ns}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("warning: ip netns del {ns}: {e}"),
            }
        }
    }
}
