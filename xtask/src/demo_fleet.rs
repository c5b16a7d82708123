//! `cargo xtask demo --fleet`: three gateways and one nats-server in
//! namespaces; a flood auto-banned on gw1 is dropped by gw2 and gw3 too.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use testkit::fleet::{gateway_policy, gw_ip, src, FleetNet, NatsServer, CONTROL};
use testkit::{netns_path, send_udp, FirewallDaemon, UdpSink};

use crate::demo::{check_interrupt, TempDir};

const BUCKET: &str = "firewall-bans";

fn fleet_status(fw: &FirewallDaemon) -> Value {
    let o = fw.cli(&["fleet", "status", "--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// Datagrams from `from` that reach gateway `i` in `secs` at `pps`.
fn through(net: &FleetNet, i: usize, from: &str, pps: u64, secs: f64) -> Result<(u64, u64)> {
    let to: SocketAddr = format!("{}:7000", gw_ip(i)).parse()?;
    let sink = UdpSink::try_bind(&netns_path(&net.gws[i]), to)?;
    let from: IpAddr = from.parse()?;
    let sent = send_udp(
        &netns_path(&net.att),
        Some(from),
        to,
        pps,
        Duration::from_secs_f64(secs),
    );
    sink.settle(Duration::from_millis(200), Duration::from_secs(3));
    Ok((sent, sink.count_from(from)))
}

pub fn demo(bin: &std::path::Path) -> Result<()> {
    let nats_ok = std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !nats_ok {
        bail!("nats-server not found: `cargo xtask setup` installs it");
    }
    println!("\n== a hub namespace with nats-server (JetStream), three gateways and an attacker on one bridge ==");
    let net = FleetNet::new(3)?;
    let tmp = TempDir(std::env::temp_dir().join(format!("fw-fleet-demo-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0)?;
    let _nats = NatsServer::start(&net.hub, &tmp.0.join("nats"))?;
    println!("  nats-server -js on 10.77.0.1:4222 ({})", net.hub);
    let mut gws = Vec::new();
    for (i, ns) in net.gws.iter().enumerate() {
        let policy = tmp.0.join(format!("gw{}.toml", i + 1));
        std::fs::write(&policy, gateway_policy(&format!("gw{}", i + 1), BUCKET))?;
        let p = policy.display().to_string();
        let args = ["--iface", "hub", "--config", p.as_str()];
        let fw = FirewallDaemon::spawn(bin, ns, &testkit::unique_pin_dir(), &args)
            .with_context(|| format!("starting the firewall on gw{}", i + 1))?;
        println!(
            "  gw{} {} ({ns}): firewall run --iface hub",
            i + 1,
            gw_ip(i)
        );
        gws.push(fw);
    }
    println!(
        "\n== policy of gw1 ==\n{}",
        gateway_policy("gw1", BUCKET).trim_end()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gws.iter().all(|g| fleet_status(g)["connected"] == true) {
        check_interrupt()?;
        if Instant::now() > deadline {
            bail!("the gateways did not connect to nats-server within 10 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("\n  all three connected to the bus");

    let attacker = src(101);
    let prefix = format!("{attacker}/32");
    println!("\n== {attacker} floods gw1 (5,000 packets/s for 1 s) ==");
    let (sent, got) = through(&net, 0, &attacker, 5000, 1.0)?;
    println!("  gw1 received {got} of {sent}");
    let ban = gws[0]
        .wait_for_event(Duration::from_secs(5), |e| {
            e["event"] == "ban" && e["prefix"] == prefix.as_str()
        })
        .context("gw1 did not ban the flood")?;
    println!("  gw1: {ban}");
    for (i, g) in gws.iter().enumerate().skip(1) {
        let ev = g
            .wait_for_event(Duration::from_secs(5), |e| {
                e["event"] == "fleet_apply" && e["prefix"] == prefix.as_str()
            })
            .with_context(|| format!("the ban did not reach gw{}", i + 1))?;
        println!(
            "  gw{}: applied from {} after {} ms",
            i + 1,
            ev["gateway"],
            ev["propagation_ms"]
        );
    }
    check_interrupt()?;

    println!("\n== the same source now tries gw2 and gw3, a client ({CONTROL}) too ==");
    println!("{:<30} {:>8} {:>10}", "flow", "sent", "received");
    let mut ok = true;
    for i in 1..3 {
        let (sent, got) = through(&net, i, &attacker, 1000, 1.0)?;
        println!(
            "{:<30} {sent:>8} {got:>10}",
            format!("{attacker} -> gw{}", i + 1)
        );
        ok &= got == 0;
        let (sent, got) = through(&net, i, CONTROL, 50, 1.0)?;
        println!(
            "{:<30} {sent:>8} {got:>10}",
            format!("{CONTROL} -> gw{}", i + 1)
        );
        ok &= got * 100 >= sent * 95;
    }
    println!("\n== firewall fleet status on gw2 ==");
    print!(
        "{}",
        String::from_utf8_lossy(&gws[1].cli(&["fleet", "status"]).stdout)
    );
    println!("\n== firewall block list on gw3 ==");
    print!(
        "{}",
        String::from_utf8_lossy(&gws[2].cli(&["block", "list"]).stdout)
    );

    println!("\n== stopping the daemons, detaching, removing the namespaces ==");
    drop(gws);
    println!(
        "\nflood banned on gw1 and dropped by gw2 and gw3, client served: {}",
        if ok { "yes" } else { "NO" }
    );
    if !ok {
        bail!("the fleet demo did not show the expected result (see the table above)");
    }
    Ok(())
}
