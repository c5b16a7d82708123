//! End to end: `[table]` sizes the kernel tables; `status`, `top` and the
//! capacity metric show the size; a new size on an adopted, pinned data
//! plane migrates the tracked sources and says so in an event.

use std::{net::IpAddr, time::Duration};

use tests::{
    e2e::{json, policy_file, sample, scrape},
    send_udp, FirewallDaemon, Sandbox,
};

fn table_policy(max_sources: u32) -> std::path::PathBuf {
    policy_file(&format!(
        "[defaults]\nrate = 100\nburst = 50\n\n[table]\nmax_sources = {max_sources}\nmax_list_entries = 4096\n"
    ))
}

#[test]
fn table_sizes_apply_and_migrate_on_adoption() {
    if !tests::privileged("table_sizes_apply_and_migrate_on_adoption") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let port = 9491;
    let addr = format!("127.0.0.1:{port}");
    let small = table_policy(2048);
    let args = |p: &std::path::Path| {
        vec![
            "--iface".to_string(),
            sb.gw_attacker_if.clone(),
            "--config".into(),
            p.display().to_string(),
            "--metrics-addr".into(),
            addr.clone(),
        ]
    };
    let a1 = args(&small);
    let a1: Vec<&str> = a1.iter().map(String::as_str).collect();
    let mut fw = FirewallDaemon::start(&sb.gw_ns, &a1);
    let status = json(&fw, &["status", "--json"]);
    assert_eq!(status["tracked_sources_capacity"], 2048);
    let metrics = scrape(&sb.gw_path(), port);
    assert_eq!(
        sample(&metrics, "firewall_tracked_sources_capacity"),
        Some(2048.0)
    );
    // Three sources get tracked.
    for (src, dst) in [
        ("198.51.100.2", "198.51.100.1"),
        ("198.51.100.3", "198.51.100.1"),
        ("2001:db8:2::2", "2001:db8:2::1"),
    ] {
        let dst: IpAddr = dst.parse().unwrap();
        send_udp(
            &sb.attacker_path(),
            Some(src.parse::<IpAddr>().unwrap()),
            std::net::SocketAddr::new(dst, 9000),
            100,
            Duration::from_millis(200),
        );
    }
    let status = json(&fw, &["status", "--json"]);
    assert_eq!(status["tracked_sources"], 3, "{status}");

    // Restart with a bigger table on the same pins: the data plane is
    // adopted, the table re-created at the new size with its sources.
    assert!(fw.stop().success());
    let big = table_policy(8192);
    let a2 = args(&big);
    let a2: Vec<&str> = a2.iter().map(String::as_str).collect();
    let fw2 = FirewallDaemon::spawn(
        &tests::firewall::firewall_bin(),
        &sb.gw_ns,
        fw.pin_dir(),
        &a2,
    )
    .unwrap();
    let status = json(&fw2, &["status", "--json"]);
    assert_eq!(status["tracked_sources_capacity"], 8192, "{status}");
    assert_eq!(
        status["tracked_sources"], 3,
        "sources lost in the resize: {status}"
    );
    let migrate: Vec<_> = fw2
        .events()
        .into_iter()
        .filter(|e| e["event"] == "migrate")
        .collect();
    let text = format!("{migrate:?}");
    assert!(
        text.contains("FW_SOURCES") && text.contains("capacity 2048 -> 8192"),
        "no migrate event for the resize: {text}"
    );
    // The start event names the sizes and the clock the program reads.
    let start = fw2
        .events()
        .into_iter()
        .find(|e| e["event"] == "start")
        .unwrap();
    assert_eq!(start["table"]["max_sources"], 8192);
    assert!(
        start["clock"].as_str().unwrap().starts_with("jiffies"),
        "{start}"
    );
    // A bad size is refused by `check` with its line.
    let bad = policy_file("[table]\nmax_sources = 10\n");
    let o = tests::firewall::cli(fw2.pin_dir(), &["check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("line 2") && err.contains("max_sources"),
        "{err}"
    );
}
