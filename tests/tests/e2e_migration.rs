//! Upgrading over pinned maps of an older layout: what can be carried over
//! is, what cannot is reported, and nothing mixes layouts.

use std::{net::IpAddr, time::Duration};

use firewall_user::bpf_sys::{bpf_map_type, Shape};
use testkit::{
    e2e::{json, policy_file, sock, verdict},
    send_udp, FirewallDaemon, Sandbox, UdpSink,
};

const PERCPU_ARRAY: u32 = bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY as u32;
const LPM_TRIE: u32 = bpf_map_type::BPF_MAP_TYPE_LPM_TRIE as u32;
const HASH: u32 = bpf_map_type::BPF_MAP_TYPE_HASH as u32;
const NO_PREALLOC: u32 = aya_obj::generated::BPF_F_NO_PREALLOC;

#[test]
fn an_older_map_layout_is_migrated_and_the_rest_reported() {
    if !testkit::privileged("an_older_map_layout_is_migrated_and_the_rest_reported") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let pin_dir = testkit::unique_pin_dir();
    std::fs::create_dir_all(&pin_dir).unwrap();
    let cpus = aya::util::nr_cpus().unwrap();
    // An "older version": counters held packets only (8-byte values) ...
    let counters = testkit::stage::map(
        Shape {
            map_type: PERCPU_ARRAY,
            key_size: 4,
            value_size: 8,
            max_entries: 6,
            flags: 0,
        },
        "FW_COUNTERS",
    )
    .unwrap();
    let mut blocked = vec![0u8; 8 * cpus];
    blocked[..8].copy_from_slice(&777u64.to_ne_bytes());
    counters.update(&2u32.to_ne_bytes(), &blocked).unwrap();
    counters.pin(&pin_dir.join("FW_COUNTERS")).unwrap();
    // ... block entries were 24 bytes (expiry, hits, origin) ...
    for set in 0..2 {
        let trie = testkit::stage::map(
            Shape {
                map_type: LPM_TRIE,
                key_size: 8,
                value_size: 24,
                max_entries: 1024,
                flags: NO_PREALLOC,
            },
            "FW_BLOCK4",
        )
        .unwrap();
        let mut key = 32u32.to_ne_bytes().to_vec();
        key.extend_from_slice(&[198, 51, 100, 3]);
        let mut value = vec![0u8; 24];
        value[16] = 1; // origin: manual
        trie.update(&key, &value).unwrap();
        trie.pin(&pin_dir.join(format!("FW_BLOCK4_{set}"))).unwrap();
    }
    // ... and rules lived in a hash map: a different key that cannot move.
    let rules = testkit::stage::map(
        Shape {
            map_type: HASH,
            key_size: 8,
            value_size: 56,
            max_entries: 64,
            flags: 0,
        },
        "FW_RULES",
    )
    .unwrap();
    rules.update(&[0; 8], &[0; 56]).unwrap();
    rules.pin(&pin_dir.join("FW_RULES")).unwrap();
    drop((counters, rules));

    let policy = policy_file("[defaults]\nrate = 1000\nburst = 1000\n");
    let fw = FirewallDaemon::spawn(
        &testkit::firewall_bin(),
        &sb.gw_ns,
        &pin_dir,
        &[
            "--iface",
            &sb.gw_attacker_if,
            "--config",
            policy.to_str().unwrap(),
        ],
    )
    .expect("daemon over old pins");
    let ev = fw
        .events()
        .into_iter()
        .find(|e| e["event"] == "migrate")
        .expect("a migrate event");
    println!("{ev}");
    let migrated = ev["migrated"].to_string();
    assert!(
        migrated.contains("FW_COUNTERS: 1 of 6") || migrated.contains("FW_COUNTERS: 6 of 6"),
        "{migrated}"
    );
    assert!(
        migrated.contains("FW_BLOCK4_0: 1 of 1") && migrated.contains("FW_BLOCK4_1: 1 of 1"),
        "{migrated}"
    );
    let lost = ev["not_migrated"].to_string();
    assert!(lost.contains("FW_RULES: 1 entries lost"), "{lost}");
    assert!(fw.stderr().contains("warning: not migrated: FW_RULES"));
    // The manual block came across and still blocks; the counter continued.
    let list = json(&fw, &["block", "list", "--json"]);
    assert_eq!(
        (list[0]["cidr"].as_str(), list[0]["origin"].as_str()),
        (Some("198.51.100.3/32"), Some("manual"))
    );
    let sink = UdpSink::bind(&sb.gw_path(), sock("0.0.0.0", 9000));
    let sent = send_udp(
        &sb.attacker_path(),
        Some("198.51.100.3".parse::<IpAddr>().unwrap()),
        sock("198.51.100.1", 9000),
        200,
        Duration::from_millis(500),
    );
    sink.settle(Duration::from_millis(200), Duration::from_secs(2));
    assert_eq!(sink.count(), 0);
    assert_eq!(verdict(&fw, "blocked"), 777 + sent);
    drop(fw);
}
