//! End to end: `[fleet]` with a real nats-server (JetStream, file store in a
//! temp dir) in a hub namespace, bridged to three gateway namespaces, each
//! with its own `firewall run` and pin directory, and an attacker on the
//! same bridge. Real packets, real bans, a real outage.
//! The topology is `testkit::fleet`'s.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use serde_json::{json, Value};
use testkit::{
    e2e::{json, ok, policy_file, sample, scrape},
    fleet::{gateway_policy, gw_ip, src, FleetNet, NatsServer, CONTROL, HUB},
    in_netns, netns_path, send_udp, FirewallDaemon, UdpSink,
};

const BUCKET: &str = "bans";

/// Runs `f` against the bucket from the hub namespace, as any other NATS
/// client (an operator's tool, another product) would.
fn bus<T: Send>(
    hub: &str,
    f: impl FnOnce(
            async_nats::Client,
            async_nats::jetstream::kv::Store,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
        + Send,
) -> T {
    in_netns(&netns_path(hub), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = async_nats::connect(format!("nats://{HUB}:4222"))
                .await
                .expect("test client connects");
            let js = async_nats::jetstream::new(client.clone());
            let kv = js
                .get_key_value(BUCKET)
                .await
                .expect("the gateways made the bucket");
            f(client, kv).await
        })
    })
}

fn record(cidr: &str, gateway: &str, expires_in: Option<Duration>) -> Vec<u8> {
    let now = SystemTime::now();
    serde_json::to_vec(&json!({
        "cidr": cidr, "origin": "manual", "gateway": gateway, "reason": "test",
        "created_at": humantime::format_rfc3339_millis(now).to_string(),
        "expires_at": expires_in.map(|d| humantime::format_rfc3339_seconds(now + d).to_string()),
    }))
    .unwrap()
}

fn policy(name: &str) -> PathBuf {
    policy_file(&gateway_policy(name, BUCKET))
}

fn start_gw(ns: &str, policy: &Path, pin: Option<&Path>) -> FirewallDaemon {
    let gw = FirewallDaemon::on(ns)
        .iface("hub")
        .config(policy)
        .metrics(9477);
    match pin {
        None => gw.start(),
        Some(p) => gw.pin_dir(p).try_start().expect("restart"),
    }
}

fn blocked(fw: &FirewallDaemon, cidr: &str) -> Option<Value> {
    json(fw, &["block", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cidr"] == cidr)
        .cloned()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

fn status(fw: &FirewallDaemon) -> Value {
    json(fw, &["fleet", "status", "--json"])
}

/// Datagrams from `from` that reach gateway `i` while sending `n` at 100/s.
fn reach(net: &FleetNet, i: usize, from: &str, n: u64) -> u64 {
    let to: SocketAddr = format!("{}:9000", gw_ip(i)).parse().unwrap();
    let sink = UdpSink::bind(&netns_path(&net.gws[i]), to);
    let from: IpAddr = from.parse().unwrap();
    send_udp(
        &netns_path(&net.att),
        Some(from),
        to,
        100,
        Duration::from_millis(n * 10),
    );
    sink.settle(Duration::from_millis(200), Duration::from_secs(3));
    sink.count_from(from)
}

fn flood(net: &FleetNet, i: usize, from: &str) {
    let to: SocketAddr = format!("{}:9001", gw_ip(i)).parse().unwrap();
    send_udp(
        &netns_path(&net.att),
        Some(from.parse().unwrap()),
        to,
        2000,
        Duration::from_millis(250),
    );
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[test]
fn bans_and_blocks_are_shared_by_every_gateway() {
    if !testkit::privileged("bans_and_blocks_are_shared_by_every_gateway") {
        return;
    }
    let has_nats = Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nats {
        assert!(
            !testkit::under_ci(),
            "nats-server is missing (apt-get install nats-server; `cargo xtask setup` does)"
        );
        eprintln!("SKIP bans_and_blocks_are_shared_by_every_gateway: no nats-server");
        return;
    }
    let net = FleetNet::new(3).unwrap();
    let dir = std::env::temp_dir().join(format!("fwlog{}-nats", std::process::id()));
    let mut nats = NatsServer::start(&net.hub, &dir).unwrap();
    let policies: Vec<PathBuf> = (1..=3).map(|i| policy(&format!("gw{i}"))).collect();
    let mut gws: Vec<FirewallDaemon> = (0..3)
        .map(|i| start_gw(&net.gws[i], &policies[i], None))
        .collect();
    for g in &gws {
        wait_until("every gateway connects", Duration::from_secs(10), || {
            status(g)["connected"] == true
        });
    }
    for g in &gws {
        g.wait_for_event(Duration::from_secs(5), |e| e["event"] == "fleet_synced")
            .expect("initial sync");
    }

    // 1. Auto-bans on gw1 reach gw2 and gw3: 20 of them, timed.
    let mut propagation = Vec::new();
    for n in 101..=120u8 {
        let s = src(n);
        let prefix = format!("{s}/32");
        flood(&net, 0, &s);
        gws[0]
            .wait_for_event(Duration::from_secs(5), |e| {
                e["event"] == "ban" && e["prefix"] == prefix
            })
            .unwrap_or_else(|| panic!("gw1 did not ban {s}"));
        for g in &gws[1..] {
            let ev = g
                .wait_for_event(Duration::from_secs(5), |e| {
                    e["event"] == "fleet_apply" && e["prefix"] == prefix
                })
                .unwrap_or_else(|| panic!("{prefix} did not reach a gateway"));
            assert_eq!(ev["gateway"], "gw1");
            assert_eq!(ev["origin"], "autoban");
            propagation.push(ev["propagation_ms"].as_u64().unwrap());
        }
    }
    propagation.sort_unstable();
    let (p50, p99) = (
        percentile(&propagation, 0.5),
        percentile(&propagation, 0.99),
    );
    println!(
        "propagation of 20 auto-bans from gw1 to gw2 and gw3 (entry created -> applied, {} samples): p50 {p50} ms, p99 {p99} ms, max {} ms",
        propagation.len(),
        propagation.last().unwrap()
    );
    assert!(p99 < 1000, "p99 propagation {p99} ms");
    for (i, g) in gws.iter().enumerate().skip(1) {
        let row = blocked(g, &format!("{}/32", src(101))).expect("fleet entry listed");
        assert_eq!(row["origin"], "fleet");
        assert!(
            row["expires"].is_string(),
            "the ban's expiry travels: {row}"
        );
        assert_eq!(
            reach(&net, i, &src(101), 20),
            0,
            "banned source reached gw{}",
            i + 1
        );
        assert!(
            reach(&net, i, CONTROL, 20) >= 18,
            "the control source is served on gw{}",
            i + 1
        );
    }
    let m = scrape(&netns_path(&net.gws[1]), 9477);
    assert_eq!(sample(&m, "firewall_fleet_connected"), Some(1.0));
    assert_eq!(
        sample(&m, "firewall_fleet_entries_received_total"),
        Some(20.0)
    );
    assert_eq!(
        sample(&m, "firewall_blocklist_entries{origin=\"fleet\"}"),
        Some(20.0)
    );
    assert!(
        m.contains("firewall_fleet_propagation_seconds_count 20"),
        "{m}"
    );
    let s1 = status(&gws[0]);
    assert_eq!(s1["published"], 20, "{s1}");
    assert_eq!(s1["outbox"], 0);

    // 2. block add --ttl on gw2 expires everywhere; block del on gw3
    //    propagates; another client's entry is enforced by all.
    let ttl = format!("{}/32", src(140));
    ok(&gws[1], &["block", "add", &src(140), "--ttl", "3s"]);
    let t = wait_until(
        "a --ttl block reaches gw1 and gw3",
        Duration::from_secs(2),
        || blocked(&gws[0], &ttl).is_some() && blocked(&gws[2], &ttl).is_some(),
    );
    println!("`block add --ttl 3s` on gw2 listed on gw1 and gw3 after {t:?}");
    let t = wait_until(
        "the --ttl block expires everywhere",
        Duration::from_secs(6),
        || gws.iter().all(|g| blocked(g, &ttl).is_none()),
    );
    println!("... and gone from all three {t:?} later");
    let manual = format!("{}/32", src(141));
    ok(
        &gws[2],
        &["block", "add", &src(141), "--comment", "by hand"],
    );
    wait_until(
        "a manual block reaches gw1 and gw2",
        Duration::from_secs(2),
        || blocked(&gws[0], &manual).is_some() && blocked(&gws[1], &manual).is_some(),
    );
    ok(&gws[2], &["block", "del", &src(141)]);
    let t = wait_until("block del propagates", Duration::from_secs(2), || {
        blocked(&gws[0], &manual).is_none() && blocked(&gws[1], &manual).is_none()
    });
    println!("`block del` on gw3 removed on gw1 and gw2 after {t:?}");
    let foreign = format!("{}/32", src(142));
    // And an IPv6 prefix without expiry, under its encoded key.
    let v6 = "2001:db8:bad::/48";
    let puts = vec![
        (
            foreign.clone(),
            record(&foreign, "ops-tool", Some(Duration::from_secs(3600))),
        ),
        (
            "2001-db8-bad--/48".to_string(),
            record(v6, "ops-tool", None),
        ),
    ];
    bus(&net.hub, move |_, kv| {
        Box::pin(async move {
            for (k, v) in puts {
                kv.put(k, v.into()).await.unwrap();
            }
        })
    });
    wait_until(
        "another client's entries are applied by all",
        Duration::from_secs(2),
        || {
            gws.iter()
                .all(|g| blocked(g, &foreign).is_some() && blocked(g, v6).is_some())
        },
    );
    let row = blocked(&gws[0], v6).unwrap();
    assert_eq!(row["origin"], "fleet");
    assert!(row["expires"].is_null(), "no expiry: {row}");
    assert_eq!(row["comment"], "fleet:ops-tool");
    assert_eq!(
        reach(&net, 0, &src(142), 20),
        0,
        "another client's entry enforced"
    );

    // 3. Hostile bucket contents: skipped, counted, nothing applied.
    let hostile: Vec<(String, Vec<u8>)> = vec![
        (format!("{}/32", src(150)), b"not json at all".to_vec()),
        (format!("{}/32", src(151)), br#"{"cidr":"10.77.0.300/32","origin":"manual","gateway":"x","created_at":"2026-01-01T00:00:00Z"}"#.to_vec()),
        ("0.0.0.0/0".into(), record("0.0.0.0/0", "evil", None)),
        (format!("{}/32", src(152)), {
            let mut r: Value = serde_json::from_slice(&record(&format!("{}/32", src(152)), "evil", None)).unwrap();
            r["expires_at"] = json!("9999-12-31T23:59:59Z");
            serde_json::to_vec(&r).unwrap()
        }),
    ];
    let sentinel = format!("{}/32", src(143));
    let sv = record(&sentinel, "ops-tool", Some(Duration::from_secs(3600)));
    let junk = 100_000u64;
    let t0 = Instant::now();
    bus(&net.hub, move |client, kv| {
        Box::pin(async move {
            for (k, v) in hostile {
                kv.put(k, v.into()).await.unwrap();
            }
            // Junk keys, pipelined: a thousand publishes, then their acks
            // (unacknowledged publishes may be dropped by a busy server).
            let js = async_nats::jetstream::new(client);
            for batch in 0..junk / 1000 {
                let mut acks = Vec::with_capacity(1000);
                for i in batch * 1000..(batch + 1) * 1000 {
                    acks.push(
                        js.publish(format!("$KV.{BUCKET}.junk{i}"), "x".into())
                            .await
                            .unwrap(),
                    );
                }
                for a in acks {
                    a.await.expect("junk stored");
                }
            }
            kv.put(sentinel, sv.into()).await.unwrap();
        })
    });
    let sentinel = format!("{}/32", src(143));
    wait_until(
        "every gateway reads past 100,000 junk keys",
        Duration::from_secs(60),
        || gws.iter().all(|g| blocked(g, &sentinel).is_some()),
    );
    println!(
        "100,004 hostile entries written and read past by all three gateways in {:?}",
        t0.elapsed()
    );
    for (i, g) in gws.iter_mut().enumerate() {
        assert!(g.is_running(), "gw{} died", i + 1);
        for bad in [
            format!("{}/32", src(150)),
            format!("{}/32", src(151)),
            "0.0.0.0/0".into(),
            format!("{}/32", src(152)),
        ] {
            assert!(blocked(g, &bad).is_none(), "{bad} applied on gw{}", i + 1);
        }
        // `fleet status` is rewritten every 250 ms: wait for the counts.
        wait_until("the skips are counted", Duration::from_secs(5), || {
            status(g)["skipped"]["bad_key"].as_u64() >= Some(junk)
        });
        let s = status(g);
        let sk = &s["skipped"];
        assert_eq!(sk["not_json"], 1, "{s}");
        assert_eq!(sk["bad_cidr"], 1, "{s}");
        assert_eq!(sk["prefix_too_short"], 1, "{s}");
        assert_eq!(sk["expiry_too_far"], 1, "{s}");
        assert!(sk["bad_key"].as_u64() >= Some(junk), "{s}");
        assert!(g
            .events()
            .iter()
            .any(|e| e["event"] == "fleet_skip" && e["reason"] == "not_json"));
    }
    assert!(
        reach(&net, 1, CONTROL, 20) >= 18,
        "the control source is still served"
    );

    // 4. Outage: the server stalls (SIGSTOP), then dies and comes back.
    nats.signal(libc::SIGSTOP).unwrap();
    let t = wait_until(
        "gateways notice the stalled bus",
        Duration::from_secs(15),
        || gws.iter().all(|g| status(g)["connected"] == false),
    );
    println!("bus stalled (SIGSTOP): every gateway reports disconnected after {t:?}");
    let m = scrape(&netns_path(&net.gws[0]), 9477);
    assert_eq!(sample(&m, "firewall_fleet_connected"), Some(0.0));
    let late = format!("{}/32", src(125));
    flood(&net, 0, &src(125));
    gws[0]
        .wait_for_event(Duration::from_secs(5), |e| {
            e["event"] == "ban" && e["prefix"] == late
        })
        .expect("gw1 bans locally while the bus is down");
    assert_eq!(reach(&net, 0, &src(125), 20), 0, "gw1 enforces its own ban");
    wait_until(
        "the ban waits in gw1's outbox",
        Duration::from_secs(5),
        || status(&gws[0])["outbox"].as_u64() >= Some(1),
    );
    for (i, g) in gws.iter().enumerate().skip(1) {
        assert_eq!(
            reach(&net, i, &src(101), 20),
            0,
            "gw{} keeps enforcing",
            i + 1
        );
        assert!(
            blocked(g, &format!("{}/32", src(120))).is_some(),
            "nothing flushed"
        );
    }
    // gw1 (with its ban waiting in the outbox) and gw3 restart while the
    // bus is down: the outbox survives, gw3 catches up later.
    let mut old = Vec::new();
    for i in [0, 2] {
        let pin = gws[i].pin_dir().to_path_buf();
        gws[i].stop();
        let restarted = start_gw(&net.gws[i], &policies[i], Some(&pin));
        old.push(std::mem::replace(&mut gws[i], restarted));
        // gw1's own ban from the outage, gw3's from the fleet.
        let banned = if i == 0 { src(125) } else { src(101) };
        assert_eq!(
            reach(&net, i, &banned, 20),
            0,
            "restarted gw{} enforces from its pins",
            i + 1
        );
    }
    assert_eq!(
        status(&gws[0])["outbox"],
        1,
        "the outbox survived gw1's restart"
    );
    nats.kill();
    nats.restart().unwrap();
    let back = Instant::now();
    let t = wait_until("gw1's outbox drains", Duration::from_secs(15), || {
        status(&gws[0])["outbox"] == 0 && status(&gws[0])["connected"] == true
    });
    println!("server restarted: gw1 reconnected and drained its outbox in {t:?}");
    for (i, g) in gws.iter().enumerate().skip(1) {
        wait_until("the others catch up", Duration::from_secs(15), || {
            blocked(g, &late).is_some()
        });
        println!(
            "gw{} has the ban made during the outage {:?} after the restart",
            i + 1,
            back.elapsed()
        );
        assert_eq!(reach(&net, i, &src(125), 20), 0);
    }
    assert_eq!(status(&gws[2])["connected"], true);
    let ev = gws[1].events();
    let at = |name: &str| ev.iter().rposition(|e| e["event"] == name);
    assert!(
        at("fleet_disconnect").is_some() && at("fleet_connect") > at("fleet_disconnect"),
        "gw2 logged the disconnect and the reconnect"
    );
    // gw2 stayed up through the outage: it resumed where it was, so every
    // entry was applied exactly once.
    let applied: Vec<String> = gws[1]
        .events()
        .iter()
        .filter(|e| e["event"] == "fleet_apply")
        .map(|e| e["prefix"].as_str().unwrap().to_string())
        .collect();
    let unique: std::collections::BTreeSet<&String> = applied.iter().collect();
    assert_eq!(applied.len(), unique.len(), "applied twice: {applied:?}");
    assert!(unique.contains(&late));
    drop(old);
}
