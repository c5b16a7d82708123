//! End to end: `[table]` sizes the kernel tables; `status` and the
//! capacity metric show the size; a gateway tracking 300,000 spoofed
//! sources answers `/metrics` without walking its table on the scrape; a
//! restart with a larger size on the pinned data plane keeps the tracked
//! sources and the blocks, and says so in a `migrate` event.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use testkit::{
    e2e::{json, ok, policy_file, sample, scrape, spoofed_flood},
    FirewallDaemon, Sandbox,
};

const PORT: u16 = 9491;

fn table_policy(max_sources: u32) -> PathBuf {
    // A flood budget that admits every spoofed source: this test fills the
    // table on purpose.
    policy_file(&format!(
        "block = [\"203.0.113.9\"]\n[defaults]\nrate = 100\nburst = 50\n\
         [flood]\nnew_sources_rate = 4000000\nnew_sources_burst = 4000000\n\
         [table]\nmax_sources = {max_sources}\nmax_list_entries = 4096\n"
    ))
}

fn blocks(fw: &FirewallDaemon) -> Vec<String> {
    let mut v: Vec<String> = json(fw, &["block", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cidr"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn a_million_source_table_tracks_a_spoofed_flood_and_survives_a_resize() {
    if !testkit::privileged("a_million_source_table_tracks_a_spoofed_flood_and_survives_a_resize") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let small = table_policy(1_000_000);
    let gw = FirewallDaemon::on(&sb.gw_ns).iface(&sb.gw_attacker_if);
    let mut fw = gw.clone().config(&small).metrics(PORT).start();
    let status = json(&fw, &["status", "--json"]);
    assert_eq!(status["tracked_sources_capacity"], 1_000_000, "{status}");
    assert_eq!(
        sample(
            &scrape(&sb.gw_path(), PORT),
            "firewall_tracked_sources_capacity"
        ),
        Some(1_000_000.0)
    );
    ok(&fw, &["block", "add", "198.51.100.77", "--ttl", "1h"]);

    // 300,000 forged sources, each new: every one the gateway saw is tracked.
    let (sent, took) = spoofed_flood(&sb, 300_000, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    let stats = json(&fw, &["stats", "--json"]);
    let admitted = stats["new_sources"]["admitted"].as_u64().unwrap();
    let tracked = json(&fw, &["status", "--json"])["tracked_sources"]
        .as_u64()
        .unwrap();
    println!(
        "sent {sent} spoofed frames in {:.1}s; {admitted} sources admitted, {tracked} tracked",
        took.as_secs_f64()
    );
    assert_eq!(sent, 300_000);
    assert!(
        tracked >= 290_000,
        "only {tracked} of {sent} sources tracked"
    );
    assert_eq!(tracked, admitted, "tracked sources were lost in a 1M table");
    // The scrape reports the background count (refreshed every 2 s).
    let t0 = Instant::now();
    let reported = loop {
        let t = Instant::now();
        let m = scrape(&sb.gw_path(), PORT);
        let scrape_ms = t.elapsed().as_secs_f64() * 1e3;
        let n = sample(&m, "firewall_tracked_sources").unwrap_or(0.0);
        if n as u64 == tracked {
            println!("/metrics with {tracked} tracked sources answered in {scrape_ms:.1} ms");
            break n;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "firewall_tracked_sources stuck at {n}, {tracked} tracked"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(reported as u64, tracked);
    let blocks_before = blocks(&fw);
    assert_eq!(blocks_before, ["198.51.100.77/32", "203.0.113.9/32"]);

    // Restart with a larger table on the same pins: adopted and resized.
    assert!(fw.stop().success());
    let big = table_policy(2_000_000);
    let fw2 = gw
        .config(&big)
        .metrics(PORT)
        .pin_dir(fw.pin_dir())
        .try_start()
        .unwrap();
    let status = json(&fw2, &["status", "--json"]);
    assert_eq!(status["tracked_sources_capacity"], 2_000_000, "{status}");
    assert_eq!(
        status["tracked_sources"].as_u64(),
        Some(tracked),
        "sources lost in the resize"
    );
    assert_eq!(blocks(&fw2), blocks_before, "blocks lost in the restart");
    let migrate = format!(
        "{:?}",
        fw2.events()
            .into_iter()
            .filter(|e| e["event"] == "migrate")
            .collect::<Vec<_>>()
    );
    assert!(
        migrate.contains("FW_SOURCES4") && migrate.contains("capacity 1000000 -> 2000000"),
        "no migrate event for the resize: {migrate}"
    );
    // The start event names the sizes and the clock the program reads.
    let start = fw2
        .events()
        .into_iter()
        .find(|e| e["event"] == "start")
        .unwrap();
    assert_eq!(start["table"]["max_sources"], 2_000_000);
    assert!(
        start["clock"].as_str().unwrap().starts_with("jiffies"),
        "{start}"
    );
    // A bad size is refused by `check` with its line.
    let bad = policy_file("[table]\nmax_sources = 10\n");
    let o = testkit::firewall::cli(fw2.pin_dir(), &["check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("line 2") && err.contains("max_sources"),
        "{err}"
    );
}
