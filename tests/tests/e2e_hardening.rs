//! End to end: TC mode, enforcement that outlives the controller, in-place
//! upgrades, and a spoofed-source flood of a million addresses.

use std::time::Duration;

use testkit::{
    e2e::{ip, json, policy_file, sock, spoofed_flood, verdict, within, Flows},
    send_udp, variant_bin, FirewallDaemon, Sandbox, UdpSink,
};

const POLICY: &str = "block = [\"198.51.100.3\"]\n[defaults]\nrate = 100\nburst = 50\n";

#[test]
fn tc_mode_enforces_the_same_policy() {
    if !testkit::privileged("tc_mode_enforces_the_same_policy") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let policy = policy_file(POLICY);
    let fw = FirewallDaemon::on(&sb.gw_ns)
        .gateway_ifaces(&sb)
        .config(&policy)
        .args(&["--mode", "tc"])
        .start();
    let status = json(&fw, &["status", "--json"]);
    let modes: Vec<_> = status["attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["mode"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(modes, ["tc", "tc"], "{status}");
    assert!(status["attached"][0]["program_id"].as_u64().is_some());
    let sink = UdpSink::bind(&sb.gw_path(), sock("0.0.0.0", 9000));
    let t = Duration::from_secs(2);
    let attacker = sb.attacker_path();
    let sent = Flows::start(
        &[
            (&attacker, "198.51.100.2", sock("198.51.100.1", 9000), 500),
            (&attacker, "198.51.100.3", sock("198.51.100.1", 9000), 200),
        ],
        t,
    )
    .join();
    let (limited_sent, blocked_sent) = (sent[0], sent[1]);
    sink.settle(Duration::from_millis(300), Duration::from_secs(3));
    let c = sink.counts();
    println!(
        "tc: limited sent {limited_sent} got {}; blocked sent {blocked_sent} got {}",
        c.from(ip("198.51.100.2")),
        c.from(ip("198.51.100.3"))
    );
    assert!(within(c.from(ip("198.51.100.2")), 250.0, 10.0));
    assert_eq!(c.from(ip("198.51.100.3")), 0);
    assert_eq!(verdict(&fw, "blocked"), blocked_sent);
}

#[test]
fn kill_9_during_a_flood_keeps_enforcing_and_a_restart_adopts_the_buckets() {
    if !testkit::privileged(
        "kill_9_during_a_flood_keeps_enforcing_and_a_restart_adopts_the_buckets",
    ) {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let policy = policy_file(POLICY);
    let gw = FirewallDaemon::on(&sb.gw_ns)
        .gateway_ifaces(&sb)
        .config(&policy);
    let mut fw = gw.start();
    let sink = UdpSink::bind(&sb.gw_path(), sock("0.0.0.0", 9000));
    let attacker = sb.attacker_path();
    let t = Duration::from_secs(4);
    let flows = Flows::start(
        &[
            (&attacker, "198.51.100.2", sock("198.51.100.1", 9000), 1000),
            (&attacker, "198.51.100.3", sock("198.51.100.1", 9000), 200),
        ],
        t,
    );
    std::thread::sleep(Duration::from_secs(1));
    fw.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    let fw2 = gw.pin_dir(fw.pin_dir()).try_start().expect("restart");
    let sent = flows.join();
    let (flood_sent, blocked_sent) = (sent[0], sent[1]);
    sink.settle(Duration::from_millis(300), Duration::from_secs(3));
    let c = sink.counts();
    let through = c.from(ip("198.51.100.2"));
    // One bucket all along: burst + rate * 4 s. A bucket restarted from full
    // on restart would add another burst (50).
    println!("flood: sent {flood_sent}, through {through} (expected 450); blocked: sent {blocked_sent}, through {}", c.from(ip("198.51.100.3")));
    assert!(within(through, 450.0, 8.0), "{through} through");
    assert_eq!(
        c.from(ip("198.51.100.3")),
        0,
        "the blocked source got through while the controller was dead"
    );
    assert_eq!(
        verdict(&fw2, "blocked"),
        blocked_sent,
        "counters did not survive the restart"
    );
    let attach: Vec<_> = fw2
        .events()
        .into_iter()
        .filter(|e| e["event"] == "attach")
        .collect();
    assert!(attach.iter().all(|e| e["replaced"] == true), "{attach:?}");
}

#[test]
fn an_upgraded_binary_replaces_the_program_with_no_unfiltered_window() {
    if !testkit::privileged("an_upgraded_binary_replaces_the_program_with_no_unfiltered_window") {
        return;
    }
    let Some(variant) = variant_bin("upgrade test") else {
        return;
    };
    // The kernel counts each program's runs while this descriptor is open
    // (BPF_ENABLE_STATS): that is how the test tells the programs apart.
    let _run_stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let sb = Sandbox::new().unwrap();
    let policy =
        policy_file("block = [\"198.51.100.3\"]\n[defaults]\nrate = 100000\nburst = 100000\n");
    let gw = FirewallDaemon::on(&sb.gw_ns)
        .gateway_ifaces(&sb)
        .config(&policy);
    let mut old = gw.start();
    let id_before = json(&old, &["status", "--json"])["attached"][0]["program_id"]
        .as_u64()
        .unwrap();
    let sink = UdpSink::bind(&sb.gw_path(), sock("0.0.0.0", 9000));
    let (client, attacker) = (sb.client_path(), sb.attacker_path());
    let t = Duration::from_secs(3);
    let flows = Flows::start(
        &[
            (&client, "192.0.2.2", sock("192.0.2.1", 9000), 500),
            (&attacker, "198.51.100.3", sock("198.51.100.1", 9000), 500),
        ],
        t,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(old.stop().success());
    let new = gw
        .bin(&variant)
        .pin_dir(old.pin_dir())
        .try_start()
        .expect("upgraded daemon");
    let sent = flows.join();
    let (client_sent, blocked_sent) = (sent[0], sent[1]);
    sink.settle(Duration::from_millis(300), Duration::from_secs(3));
    let c = sink.counts();
    let stats = json(&new, &["stats", "--json"]);
    let total = stats["totals"]["packets"].as_u64().unwrap();
    let id_after = json(&new, &["status", "--json"])["attached"][0]["program_id"]
        .as_u64()
        .unwrap();
    // Every frame runs the attached program once (both links share it).
    let variant_packets = program_runs(id_after);
    println!(
        "client sent {client_sent} got {}; blocked sent {blocked_sent}, counted {}, got {}; new program handled {variant_packets} of {total}; program {id_before} -> {id_after}",
        c.from(ip("192.0.2.2")), stats["verdicts"]["blocked"]["packets"], c.from(ip("198.51.100.3"))
    );
    assert_ne!(id_before, id_after, "the program was not replaced");
    assert!(
        variant_packets > 0 && variant_packets < total,
        "both programs must have handled part of the traffic"
    );
    // No window without a program: every packet of the blocked source was
    // counted as blocked by one program or the other, none reached the host.
    assert_eq!(c.from(ip("198.51.100.3")), 0);
    assert_eq!(
        stats["verdicts"]["blocked"]["packets"].as_u64().unwrap(),
        blocked_sent
    );
    assert_eq!(
        c.from(ip("192.0.2.2")),
        client_sent,
        "the client lost packets during the upgrade"
    );
    let attach: Vec<_> = new
        .events()
        .into_iter()
        .filter(|e| e["event"] == "attach")
        .collect();
    assert!(attach.iter().all(|e| e["replaced"] == true));
}

/// How many times the kernel ran program `id` while run statistics were on.
fn program_runs(id: u64) -> u64 {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| u64::from(p.id()) == id)
        .unwrap_or_else(|| panic!("program {id} is not loaded"))
        .run_count()
}

/// Frames from `n` distinct spoofed sources (100.64.0.0 upwards), written
/// into one buffer in turn: the UDP checksum is zero (optional in IPv4),
/// the IP header checksum is recomputed.
#[test]
fn a_spoofed_flood_of_a_million_sources_is_cut_to_the_new_source_budget() {
    if !testkit::privileged("a_spoofed_flood_of_a_million_sources_is_cut_to_the_new_source_budget")
    {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let policy = policy_file("[defaults]\nrate = 100\nburst = 200\n[flood]\nnew_sources_rate = 1000\nnew_sources_burst = 2000\n");
    let fw = FirewallDaemon::on(&sb.gw_ns)
        .gateway_ifaces(&sb)
        .config(&policy)
        .start();
    let sink = UdpSink::bind(&sb.gw_path(), sock("0.0.0.0", 9000));
    let client = sb.client_path();
    // The legitimate source starts first (it is a known source before the
    // flood) and stays within its limit throughout.
    let ((spoofed_sent, took), client_sent) = std::thread::scope(|s| {
        let c = s.spawn(|| {
            send_udp(
                &client,
                Some(ip("192.0.2.2")),
                sock("192.0.2.1", 9000),
                50,
                Duration::from_secs(8),
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        let f = spoofed_flood(&sb, 1_000_000, Duration::from_secs(60));
        (f, c.join().unwrap())
    });
    sink.settle(Duration::from_millis(500), Duration::from_secs(5));
    let c = sink.counts();
    let legit = c.from(ip("192.0.2.2"));
    let spoofed_through = c.total - legit;
    let secs = took.as_secs_f64();
    let bound = 2000.0 + 1000.0 * secs;
    let stats = json(&fw, &["stats", "--json"]);
    let status = json(&fw, &["status", "--json"]);
    println!(
        "spoofed: sent {spoofed_sent} from distinct sources in {secs:.1}s, {spoofed_through} through (bound {bound:.0}); refused {}; client sent {client_sent} got {legit}; tracked {} of {}",
        stats["new_sources"]["refused"], status["tracked_sources"], status["tracked_sources_capacity"]
    );
    assert!(
        spoofed_sent >= 1_000_000,
        "only {spoofed_sent} spoofed frames sent"
    );
    assert_eq!(
        legit, client_sent,
        "the legitimate source lost packets its limit admits"
    );
    assert!(
        (spoofed_through as f64) <= bound,
        "{spoofed_through} spoofed packets passed, bound {bound:.0}"
    );
    assert!(spoofed_through > 0, "the budget admitted nothing");
    let tracked = status["tracked_sources"].as_u64().unwrap();
    assert!(tracked <= status["tracked_sources_capacity"].as_u64().unwrap());
    assert!(
        tracked as f64 <= bound + 10.0,
        "{tracked} sources tracked: refused sources must not take entries"
    );
    assert!(stats["new_sources"]["refused"].as_u64().unwrap() >= spoofed_sent - bound as u64);
}
