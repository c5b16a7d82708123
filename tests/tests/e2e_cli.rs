//! End to end: every command of docs/reference.md against a running gateway, the
//! shape of its output, and the events the daemon writes.

use std::time::Duration;

use testkit::{
    e2e::{ip, json, ok, policy_file, sock, stderr, verdict},
    firewall_bin, nsenter_cmd, output_timeout, send_udp, FirewallDaemon, Sandbox, UdpSink,
};

const POLICY: &str = r#"
block = ["203.0.113.0/24"]
[defaults]
rate = 50
burst = 10
[[limit]]
cidr = "198.51.100.128/25"
rate = 500
burst = 500
"#;

fn through(sb: &Sandbox, sink: &UdpSink, src: &str, n: u64) -> u64 {
    let before = sink.count_from(ip(src));
    send_udp(
        &sb.attacker_path(),
        Some(ip(src)),
        sock("198.51.100.1", 9000),
        n * 2,
        Duration::from_millis(500),
    );
    sink.settle(Duration::from_millis(200), Duration::from_secs(2));
    sink.count_from(ip(src)) - before
}

#[test]
fn lists_and_limits_from_the_cli_follow_the_contract() {
    if !testkit::privileged("lists_and_limits_from_the_cli_follow_the_contract") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let fw = FirewallDaemon::on(&sb.gw_ns)
        .iface(&sb.gw_attacker_if)
        .policy(POLICY)
        .start();
    let sink = UdpSink::bind(&sb.gw_path(), sock("0.0.0.0", 9000));
    // Allowlisted: no limit at all.
    ok(
        &fw,
        &[
            "allow",
            "add",
            "198.51.100.2",
            "--comment",
            "monitoring host",
        ],
    );
    let allow = json(&fw, &["allow", "list", "--json"]);
    assert_eq!(
        (allow[0]["cidr"].as_str(), allow[0]["origin"].as_str()),
        (Some("198.51.100.2/32"), Some("manual"))
    );
    assert_eq!(through(&sb, &sink, "198.51.100.2", 400), 400);
    ok(&fw, &["allow", "del", "198.51.100.2"]);
    assert!(
        through(&sb, &sink, "198.51.100.2", 400) < 100,
        "still allowed after del"
    );
    // A file entry cannot be deleted from the CLI; a manual entry over it
    // wins, and deleting that hands the prefix back to the file.
    let out = fw.cli(&["block", "del", "203.0.113.0/24"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("comes from the policy file"));
    ok(&fw, &["block", "add", "203.0.113.0/24", "--ttl", "1h"]);
    let b = json(&fw, &["block", "list", "--json"]);
    assert_eq!(b[0]["origin"], "manual");
    assert!(b[0]["expires_in_secs"].as_u64().unwrap() > 3500);
    ok(&fw, &["block", "del", "203.0.113.0/24"]);
    let b = json(&fw, &["block", "list", "--json"]);
    assert_eq!(
        (b[0]["origin"].as_str(), b[0].get("expires")),
        (Some("config"), None)
    );
    // Limit classes: the file's, a manual one, and deleting it.
    ok(
        &fw,
        &[
            "limit",
            "set",
            "--cidr",
            "198.51.100.0/28",
            "--rate",
            "1000",
            "--burst",
            "1000",
        ],
    );
    let l = json(&fw, &["limit", "list", "--json"]);
    let rows: Vec<(String, String)> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["cidr"].as_str().unwrap().to_string(),
                r["origin"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("default".into(), "config".into()),
            ("198.51.100.0/28".into(), "manual".into()),
            ("198.51.100.128/25".into(), "config".into())
        ]
    );
    assert_eq!(
        through(&sb, &sink, "198.51.100.3", 300),
        300,
        "the manual class did not apply"
    );
    ok(&fw, &["limit", "del", "--cidr", "198.51.100.0/28"]);
    let out = fw.cli(&["limit", "del", "--cidr", "198.51.100.128/25"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Human tables exist too.
    let table = ok(&fw, &["block", "list"]);
    assert!(
        table.contains("203.0.113.0/24") && table.contains("config"),
        "{table}"
    );
}

#[test]
fn status_stats_and_top_report_the_running_gateway() {
    if !testkit::privileged("status_stats_and_top_report_the_running_gateway") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let policy = policy_file(POLICY);
    let fw = FirewallDaemon::on(&sb.gw_ns)
        .iface(&sb.gw_attacker_if)
        .config(&policy)
        .start();
    let sink = UdpSink::bind(&sb.gw_path(), sock("0.0.0.0", 9000));
    through(&sb, &sink, "198.51.100.2", 500);
    through(&sb, &sink, "198.51.100.3", 20);
    let s = json(&fw, &["status", "--json"]);
    assert_eq!(s["attached"][0]["iface"], sb.gw_attacker_if.as_str());
    assert_eq!(s["attached"][0]["mode"], "xdp");
    assert_eq!(s["enforcement"], "enforce");
    assert_eq!(s["controller_running"], true);
    assert!(s["policy_file"].as_str().unwrap().ends_with("policy.toml"));
    assert_eq!(
        (s["blocklist_entries"].as_u64(), s["limit_classes"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(s["tracked_sources"].as_u64().unwrap() >= 2);
    let text = ok(&fw, &["status"]);
    assert!(
        text.contains("running (pid") && text.contains(&sb.gw_attacker_if),
        "{text}"
    );
    // stats: verdicts with packets and bytes.
    let st = json(&fw, &["stats", "--json"]);
    for v in [
        "passed",
        "allowed",
        "blocked",
        "rate_limited",
        "would_drop",
        "malformed",
    ] {
        assert!(
            st["verdicts"][v]["packets"].is_u64() && st["verdicts"][v]["bytes"].is_u64(),
            "{v}"
        );
    }
    assert!(st["verdicts"]["rate_limited"]["packets"].as_u64().unwrap() > 0);
    // top: the flooding source first.
    let top = json(&fw, &["top", "-n", "1", "--json"]);
    assert_eq!(top.as_array().unwrap().len(), 1);
    assert_eq!(top[0]["prefix"], "198.51.100.2/32");
    assert!(top[0]["drops"].as_u64().unwrap() > 400);
    assert!(top[0]["tokens"].is_u64());
    // stats --watch keeps printing until stopped.
    let mut cmd = nsenter_cmd(&sb.gw_ns, firewall_bin());
    cmd.arg("--pin-dir")
        .arg(fw.pin_dir())
        .args(["stats", "--json", "--watch", "1"]);
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let docs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each --watch line is one JSON document"))
        .collect();
    assert!(docs.len() >= 2, "{} documents in 2.5 s", docs.len());
}

#[test]
fn events_are_json_lines_for_the_whole_life_of_the_daemon() {
    if !testkit::privileged("events_are_json_lines_for_the_whole_life_of_the_daemon") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let mut fw = FirewallDaemon::on(&sb.gw_ns)
        .iface(&sb.gw_attacker_if)
        .policy(POLICY)
        .start();
    let _sink = UdpSink::bind(&sb.gw_path(), sock("0.0.0.0", 9000));
    send_udp(
        &sb.attacker_path(),
        Some(ip("198.51.100.2")),
        sock("198.51.100.1", 9000),
        400,
        Duration::from_millis(500),
    );
    // A detach from the CLI while the daemon runs: it says so and exits.
    let out = testkit::cli_in(&sb.gw_ns, fw.pin_dir(), &["detach"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stop = fw
        .wait_for_event(Duration::from_secs(5), |e| e["event"] == "stop")
        .expect("stop event");
    assert_eq!(stop["data_plane"], "detached");
    assert!(fw.stop().success());
    let events = fw.events();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for k in ["attach", "start", "drop", "detach", "stop"] {
        assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
    }
    for e in &events {
        let ts = e["ts"].as_str().expect("ts");
        assert!(
            humantime::parse_rfc3339(ts).is_ok(),
            "ts {ts} is not RFC 3339"
        );
    }
    // One drop line per source after a quiet period, not one per packet.
    let drops: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "drop" && e["src"] == "198.51.100.2")
        .collect();
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert_eq!(
        (drops[0]["prefix"].as_str(), drops[0]["verdict"].as_str()),
        (Some("198.51.100.2/32"), Some("rate_limited"))
    );
}

#[test]
fn monitor_mode_passes_what_it_would_drop() {
    if !testkit::privileged("monitor_mode_passes_what_it_would_drop") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let fw = FirewallDaemon::on(&sb.gw_ns)
        .iface(&sb.gw_attacker_if)
        .policy(POLICY)
        .args(&["--monitor"])
        .start();
    let sink = UdpSink::bind(&sb.gw_path(), sock("0.0.0.0", 9000));
    assert_eq!(through(&sb, &sink, "198.51.100.2", 300), 300);
    // A blocklisted (spoofed) source: counted, yet passed to the host.
    let frame = sb
        .attacker_frame(ip("203.0.113.9"), ip("198.51.100.1"))
        .udp(40000, 9000, 18)
        .build();
    testkit::send_raw(
        &sb.attacker_path(),
        &sb.attacker_if,
        &vec![frame; 50],
        Some(500),
    );
    sink.settle(Duration::from_millis(200), Duration::from_secs(2));
    assert_eq!(sink.count_from(ip("203.0.113.9")), 50);
    let would = verdict(&fw, "would_drop");
    // 300 sent at 50/s burst 10 over 0.5 s: at least 250 over the limit.
    assert!(would >= 250 + 50, "would_drop {would}");
    assert_eq!(verdict(&fw, "rate_limited") + verdict(&fw, "blocked"), 0);
    assert_eq!(json(&fw, &["status", "--json"])["enforcement"], "monitor");
    let drop = fw
        .wait_for_event(Duration::from_secs(3), |e| e["event"] == "drop")
        .expect("drop event");
    assert_eq!(drop["monitor"], true);
}

#[test]
fn an_invalid_policy_at_start_is_refused_and_nothing_is_attached() {
    if !testkit::privileged("an_invalid_policy_at_start_is_refused_and_nothing_is_attached") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let policy = policy_file("[defaults]\nrate = -5\n");
    let pin = testkit::unique_pin_dir();
    let mut cmd = nsenter_cmd(&sb.gw_ns, firewall_bin());
    cmd.arg("--pin-dir").arg(&pin).args([
        "run",
        "--iface",
        &sb.gw_attacker_if,
        "--config",
        policy.to_str().unwrap(),
    ]);
    let out = output_timeout(&mut cmd, Duration::from_secs(30)).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("line 2") && stderr(&out).contains("rate"),
        "{}",
        stderr(&out)
    );
    assert!(!pin.exists(), "pins created for a refused policy");
    let out = output_timeout(
        nsenter_cmd(&sb.gw_ns, firewall_bin())
            .arg("--pin-dir")
            .arg(&pin)
            .args(["run", "--iface", "no-such-if0"]),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).starts_with("error:") && stderr(&out).contains("no-such-if0"),
        "{}",
        stderr(&out)
    );
    let _ = testkit::cli(&pin, &["detach"]);
}

#[test]
fn a_second_controller_on_the_same_pins_is_refused() {
    if !testkit::privileged("a_second_controller_on_the_same_pins_is_refused") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let fw = FirewallDaemon::on(&sb.gw_ns)
        .iface(&sb.gw_attacker_if)
        .policy(POLICY)
        .start();
    let mut cmd = nsenter_cmd(&sb.gw_ns, firewall_bin());
    cmd.arg("--pin-dir").arg(fw.pin_dir()).args([
        "run",
        "--iface",
        &sb.gw_attacker_if,
        "--metrics-addr",
        "127.0.0.1:19478",
    ]);
    let out = output_timeout(&mut cmd, Duration::from_secs(30)).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("already manages"), "{}", stderr(&out));
    assert_eq!(json(&fw, &["status", "--json"])["controller_running"], true);
}
