//! End to end: the real `firewall run` on the gateway namespace, real
//! packets from the client and attacker namespaces over veth.

use std::time::Duration;

use testkit::{
    e2e::{ip, link_details, ok, sock, top_row, verdict, within, Flows},
    send_raw, send_udp, FirewallDaemon, Sandbox, UdpSink,
};

const POLICY: &str = r#"
allow = ["192.0.2.2"]
block = ["198.51.100.3"]

[defaults]
rate = 100
burst = 50
"#;

#[test]
fn blocked_limited_and_allowed_sources() {
    if !testkit::privileged("blocked_limited_and_allowed_sources") {
        return;
    }
    let sb = Sandbox::new().expect("sandbox");
    let fw = FirewallDaemon::on(&sb.gw_ns)
        .gateway_ifaces(&sb)
        .policy(POLICY)
        .start();
    let sink = UdpSink::bind(&sb.gw_path(), sock("0.0.0.0", 9000));
    let attacker = sb.attacker_path();
    let client = sb.client_path();
    let t = Duration::from_secs(2);
    // 5x the rate for two seconds from a limited, a blocked and an
    // allowlisted source at once.
    let sent = Flows::start(
        &[
            (&attacker, "198.51.100.2", sock("198.51.100.1", 9000), 500),
            (&attacker, "198.51.100.3", sock("198.51.100.1", 9000), 500),
            (&client, "192.0.2.2", sock("192.0.2.1", 9000), 500),
        ],
        t,
    )
    .join();
    let (limited_sent, blocked_sent, allowed_sent) = (sent[0], sent[1], sent[2]);
    sink.settle(Duration::from_millis(300), Duration::from_secs(3));
    let got = sink.counts();
    let limited = got.from(ip("198.51.100.2"));
    let expected = 50.0 + 100.0 * 2.0;
    println!("limited: sent {limited_sent} got {limited} (expected {expected}); blocked: sent {blocked_sent} got {}; allowed: sent {allowed_sent} got {}",
        got.from(ip("198.51.100.3")), got.from(ip("192.0.2.2")));
    assert!(limited_sent >= 900, "sender fell behind: {limited_sent}");
    assert!(
        within(limited, expected, 10.0),
        "limited source got {limited} through, expected {expected} +-10%"
    );
    assert_eq!(
        got.from(ip("198.51.100.3")),
        0,
        "a blocklisted source got through"
    );
    assert!(blocked_sent > 900);
    assert_eq!(
        got.from(ip("192.0.2.2")),
        allowed_sent,
        "the allowlisted source lost packets"
    );
    // The counters tell the same story.
    assert!(verdict(&fw, "blocked") >= blocked_sent);
    assert!(verdict(&fw, "allowed") >= allowed_sent);
    let row = top_row(&fw, "198.51.100.2/32").expect("limited source in top");
    assert_eq!(
        row["drops"].as_u64().unwrap(),
        limited_sent - limited,
        "top drops vs what the sink missed"
    );
}

#[test]
fn ipv6_sources_in_one_64_share_a_bucket() {
    if !testkit::privileged("ipv6_sources_in_one_64_share_a_bucket") {
        return;
    }
    let sb = Sandbox::new().expect("sandbox");
    let _fw = FirewallDaemon::on(&sb.gw_ns)
        .gateway_ifaces(&sb)
        .policy(POLICY)
        .start();
    let sink = UdpSink::bind(&sb.gw_path(), sock("::", 9000));
    let attacker = sb.attacker_path();
    let t = Duration::from_secs(2);
    // Two addresses of one /64, each at 2.5x the rate: 5x together.
    let sent: u64 = Flows::start(
        &[
            (&attacker, "2001:db8:2::2", sock("2001:db8:2::1", 9000), 250),
            (&attacker, "2001:db8:2::3", sock("2001:db8:2::1", 9000), 250),
        ],
        t,
    )
    .join()
    .iter()
    .sum();
    sink.settle(Duration::from_millis(300), Duration::from_secs(3));
    let c = sink.counts();
    let together = c.from(ip("2001:db8:2::2")) + c.from(ip("2001:db8:2::3"));
    println!(
        "sent {sent}, received {together} ({} + {})",
        c.from(ip("2001:db8:2::2")),
        c.from(ip("2001:db8:2::3"))
    );
    // Separate buckets would let about twice as much through.
    assert!(
        within(together, 250.0, 10.0),
        "the /64 got {together} through, expected 250 +-10%"
    );
}

#[test]
fn vlan_tagged_flow_is_limited_like_an_untagged_one() {
    if !testkit::privileged("vlan_tagged_flow_is_limited_like_an_untagged_one") {
        return;
    }
    let sb = Sandbox::new().expect("sandbox");
    let fw = FirewallDaemon::on(&sb.gw_ns)
        .gateway_ifaces(&sb)
        .policy(POLICY)
        .start();
    // Raw frames: this kernel has no 802.1Q module, so tagged frames can only
    // be injected. Two sources, 5x the rate for 2 s, one tagged.
    let frame = |src: &str, tagged: bool| {
        let f = sb
            .attacker_frame(ip(src), ip("198.51.100.1"))
            .udp(40000, 9000, 18);
        if tagged {
            f.vlan(42).build()
        } else {
            f.build()
        }
    };
    let tagged = vec![frame("198.51.100.50", true); 1000];
    let untagged = vec![frame("198.51.100.51", false); 1000];
    let attacker = sb.attacker_path();
    std::thread::scope(|s| {
        let n = 1000usize;
        let a = s.spawn(|| send_raw(&attacker, &sb.attacker_if, &tagged, Some(500)));
        let b = s.spawn(|| send_raw(&attacker, &sb.attacker_if, &untagged, Some(500)));
        assert_eq!(a.join().unwrap(), n as u64);
        assert_eq!(b.join().unwrap(), n as u64);
    });
    std::thread::sleep(Duration::from_millis(200));
    let passed = |p: &str| {
        let r = top_row(&fw, p).unwrap_or_else(|| panic!("{p} not tracked"));
        r["packets"].as_u64().unwrap() - r["drops"].as_u64().unwrap()
    };
    let (t, u) = (passed("198.51.100.50/32"), passed("198.51.100.51/32"));
    println!("passed: tagged {t}, untagged {u} (expected 250 each)");
    assert!(within(t, 250.0, 10.0), "tagged flow passed {t}");
    assert!(within(u, 250.0, 10.0), "untagged flow passed {u}");
}

#[test]
fn stopping_the_controller_leaves_enforcement_and_a_restart_adopts_it() {
    if !testkit::privileged("stopping_the_controller_leaves_enforcement_and_a_restart_adopts_it") {
        return;
    }
    let sb = Sandbox::new().expect("sandbox");
    let mut fw = FirewallDaemon::on(&sb.gw_ns)
        .gateway_ifaces(&sb)
        .policy(POLICY)
        .start();
    let sink = UdpSink::bind(&sb.gw_path(), sock("0.0.0.0", 9000));
    let attacker = sb.attacker_path();
    send_udp(
        &attacker,
        Some(ip("198.51.100.2")),
        sock("198.51.100.1", 9000),
        500,
        Duration::from_secs(1),
    );
    let status = fw.stop();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    assert!(fw.events().iter().any(|e| e["event"] == "stop"));
    // Still attached and enforcing with no controller.
    assert!(
        link_details(&sb.gw_ns, &sb.gw_attacker_if).contains("prog/xdp"),
        "detached on exit"
    );
    let before = sink.count();
    send_udp(
        &attacker,
        Some(ip("198.51.100.3")),
        sock("198.51.100.1", 9000),
        500,
        Duration::from_millis(500),
    );
    send_udp(
        &attacker,
        Some(ip("198.51.100.2")),
        sock("198.51.100.1", 9000),
        1000,
        Duration::from_secs(1),
    );
    sink.settle(Duration::from_millis(300), Duration::from_secs(3));
    let c = sink.counts();
    assert_eq!(
        c.from(ip("198.51.100.3")),
        0,
        "blocked source passed while the controller was down"
    );
    let second = c.total - before;
    assert!(
        second <= 150,
        "{second} passed in 1 s at 10x the rate with no controller"
    );
    let dropped = verdict(&fw, "rate_limited");
    // A second `run` adopts the pinned state: counters continue.
    let fw2 = FirewallDaemon::on(&sb.gw_ns)
        .gateway_ifaces(&sb)
        .policy(POLICY)
        .pin_dir(fw.pin_dir())
        .try_start()
        .expect("restart");
    let attach: Vec<_> = fw2
        .events()
        .into_iter()
        .filter(|e| e["event"] == "attach")
        .collect();
    assert_eq!(attach.len(), 2);
    assert!(
        attach.iter().all(|e| e["replaced"] == true),
        "restart re-attached instead of adopting: {attach:?}"
    );
    assert!(
        verdict(&fw2, "rate_limited") >= dropped,
        "counters were reset"
    );
    drop(fw2);
}

#[test]
fn detach_removes_everything() {
    if !testkit::privileged("detach_removes_everything") {
        return;
    }
    let sb = Sandbox::new().expect("sandbox");
    let mut fw = FirewallDaemon::on(&sb.gw_ns)
        .gateway_ifaces(&sb)
        .policy(POLICY)
        .start();
    assert!(link_details(&sb.gw_ns, &sb.gw_client_if).contains("prog/xdp"));
    fw.stop();
    let out = ok(&fw, &["detach"]);
    assert!(
        out.contains(&sb.gw_client_if) && out.contains(&sb.gw_attacker_if),
        "{out}"
    );
    for ifname in [&sb.gw_client_if, &sb.gw_attacker_if] {
        assert!(
            !link_details(&sb.gw_ns, ifname).contains("prog/xdp"),
            "{ifname} still has a program"
        );
    }
    assert!(
        !fw.pin_dir().exists(),
        "pins left in {}",
        fw.pin_dir().display()
    );
    let out = fw.cli(&["stats"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(testkit::e2e::stderr(&out).starts_with("error:"));
}
