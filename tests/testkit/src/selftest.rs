//! Tests of the toolkit itself (no firewall binary needed). The privileged
//! ones run as root and skip elsewhere (fail under CI=true).

use crate::packet::{self, ETH_P_8021AD, ETH_P_8021Q};
use crate::*;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

fn ns_exists(name: &str) -> bool {
    Path::new(&netns_path(name)).exists()
}

#[test]
fn sandbox_udp_client_to_gw_and_cleanup() {
    if !privileged("sandbox_udp_client_to_gw_and_cleanup") {
        return;
    }
    let sb = Sandbox::new().expect("sandbox");
    let names: Vec<String> = sb.namespaces().iter().map(|s| s.to_string()).collect();
    assert!(names.iter().all(|n| ns_exists(n)));

    let sink = UdpSink::bind(&sb.gw_path(), SocketAddr::new(GW_CLIENT_V4.into(), 0));
    let t = Instant::now();
    let sent = send_udp(
        &sb.client_path(),
        None,
        sink.addr(),
        2000,
        Duration::from_millis(500),
    );
    let took = t.elapsed();
    assert_eq!(sent, 1000);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "pacing: 1000 at 2000 pps took {took:?}"
    );
    let counts = sink.stop();
    assert!(counts.total >= 990, "received {} of {sent}", counts.total);
    assert_eq!(counts.from(CLIENT_V4.into()), counts.total);

    drop(sb);
    for n in &names {
        assert!(!ns_exists(n), "namespace {n} still exists after drop");
    }
}

#[test]
fn sandbox_drop_cleans_up_on_panic() {
    if !privileged("sandbox_drop_cleans_up_on_panic") {
        return;
    }
    let r = std::panic::catch_unwind(|| {
        let sb = Sandbox::new().expect("sandbox");
        let names: Vec<String> = sb.namespaces().iter().map(|s| s.to_string()).collect();
        std::panic::panic_any(names);
    });
    let names = *r.unwrap_err().downcast::<Vec<String>>().unwrap();
    assert_eq!(names.len(), 3);
    for n in &names {
        assert!(!ns_exists(n), "namespace {n} survived a panic");
    }
}

#[test]
fn sandbox_ipv6_secondary_addresses_and_burst() {
    if !privileged("sandbox_ipv6_secondary_addresses_and_burst") {
        return;
    }
    let sb = Sandbox::new().expect("sandbox");
    let sink6 = UdpSink::bind(&sb.gw_path(), SocketAddr::new(GW_ATTACKER_V6.into(), 9006));
    let sink4 = UdpSink::bind(&sb.gw_path(), SocketAddr::new(GW_ATTACKER_V4.into(), 9004));
    let a = sb.attacker_path();
    assert_eq!(
        send_udp_burst(&a, Some(ATTACKER_V6.into()), sink6.addr(), 300),
        300
    );
    assert_eq!(
        send_udp_burst(&a, Some(ATTACKER2_V6.into()), sink6.addr(), 200),
        200
    );
    assert_eq!(
        send_udp_burst(&a, Some(ATTACKER2_V4.into()), sink4.addr(), 100),
        100
    );
    // The client reaches the gateway over IPv6 too.
    let sink_c6 = UdpSink::bind(&sb.gw_path(), SocketAddr::new(GW_CLIENT_V6.into(), 9007));
    assert_eq!(
        send_udp_burst(&sb.client_path(), None, sink_c6.addr(), 50),
        50
    );

    let c6 = sink6.stop();
    let c4 = sink4.stop();
    let cc = sink_c6.stop();
    assert_eq!(c6.from(ATTACKER_V6.into()), 300);
    assert_eq!(c6.from(ATTACKER2_V6.into()), 200);
    assert_eq!(c4.from(ATTACKER2_V4.into()), 100);
    assert_eq!(c4.from(ATTACKER_V4.into()), 0);
    assert_eq!(cc.from(CLIENT_V6.into()), 50);
}

#[test]
fn in_netns_is_thread_local_and_reads_macs() {
    if !privileged("in_netns_is_thread_local_and_reads_macs") {
        return;
    }
    let sb = Sandbox::new().expect("sandbox");
    assert!(if_index(&sb.gw_path(), &sb.gw_client_if).is_ok());
    assert!(if_index(&sb.gw_path(), &sb.client_if).is_err());
    assert!(if_index(&sb.client_path(), &sb.client_if).is_ok());
    assert_eq!(mac_address(&sb.gw_path(), "gw-a").unwrap(), GW_ATTACKER_MAC);
    // Our own thread is still in the original namespace.
    let host_has_gw_c = std::fs::read_to_string("/proc/self/net/dev")
        .unwrap()
        .contains("gw-c:");
    assert!(!host_has_gw_c);
    // The gateway does not forward.
    assert_eq!(
        sysctl_get(&sb.gw_path(), "net/ipv4/ip_forward").unwrap(),
        "0"
    );
    assert_eq!(
        sysctl_get(&sb.gw_path(), "net/ipv4/conf/gw-a/rp_filter").unwrap(),
        "0"
    );

    // nsenter keeps host mounts and enters the namespace.
    let out = output_timeout(
        nsenter_cmd(&sb.gw_ns, "ip").args(["-o", "addr", "show"]),
        Duration::from_secs(10),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("192.0.2.1/24") && text.contains("2001:db8:2::1/64"),
        "{text}"
    );
}

#[test]
fn raw_frames_with_spoofed_sources_reach_gateway_sockets() {
    if !privileged("raw_frames_with_spoofed_sources_reach_gateway_sockets") {
        return;
    }
    let sb = Sandbox::new().expect("sandbox");
    let sink4 = UdpSink::bind(&sb.gw_path(), SocketAddr::new(GW_ATTACKER_V4.into(), 9100));
    let sink6 = UdpSink::bind(&sb.gw_path(), SocketAddr::new(GW_ATTACKER_V6.into(), 9106));
    let spoofed4: IpAddr = "203.0.113.7".parse().unwrap();
    let spoofed6: IpAddr = "2001:db8:bad::7".parse().unwrap();
    let mut frames = Vec::new();
    for i in 0..20u16 {
        frames.push(
            sb.attacker_frame(spoofed4, GW_ATTACKER_V4.into())
                .udp(1000 + i, 9100, 40)
                .build(),
        );
        frames.push(
            sb.attacker_frame(spoofed6, GW_ATTACKER_V6.into())
                .udp(1000 + i, 9106, 40)
                .build(),
        );
    }
    // A frame with a broken UDP checksum must be dropped by the kernel:
    // evidence that the good ones were checked and accepted.
    frames.push(
        sb.attacker_frame(spoofed4, GW_ATTACKER_V4.into())
            .udp(1, 9100, 40)
            .with_l4(|l4| {
                if let packet::L4::Udp(u) = l4 {
                    u.checksum = Some(0x1234)
                }
            })
            .build(),
    );
    assert_eq!(
        send_raw(&sb.attacker_path(), &sb.attacker_if, &frames, Some(5000)),
        41
    );
    let c4 = sink4.stop();
    let c6 = sink6.stop();
    assert_eq!(c4.from(spoofed4), 20, "{c4:?}");
    assert_eq!(c6.from(spoofed6), 20, "{c6:?}");
}

#[test]
fn raw_vlan_frames_arrive_tagged_on_gateway() {
    if !privileged("raw_vlan_frames_arrive_tagged_on_gateway") {
        return;
    }
    let sb = Sandbox::new().expect("sandbox");
    let cap = Capture::open(&sb.gw_path(), &sb.gw_attacker_if);
    let marker = b"vlan-marker-1234";
    let base = sb
        .attacker_frame(ATTACKER_V4.into(), GW_ATTACKER_V4.into())
        .udp_payload(5555, 9200, marker);
    let single = base.clone().vlan(42).build();
    let double = base.clone().qinq(100, 42).build();
    let mut frames = vec![single.clone(); 10];
    frames.extend(vec![double.clone(); 5]);
    assert_eq!(
        send_raw(&sb.attacker_path(), &sb.attacker_if, &frames, None),
        15
    );

    let has_marker = |f: &[u8]| f.windows(marker.len()).any(|w| w == marker);
    assert!(
        cap.wait_for(15, Duration::from_secs(5), has_marker),
        "captured {} frames",
        cap.count()
    );
    let got = cap.stop();
    let tagged: Vec<_> = got.into_iter().filter(|f| has_marker(&f.data)).collect();
    assert_eq!(tagged.iter().filter(|f| f.data == single).count(), 10);
    assert_eq!(tagged.iter().filter(|f| f.data == double).count(), 5);
    let outer: Vec<u16> = tagged
        .iter()
        .filter_map(|f| f.offloaded_tag.map(|t| t.tpid))
        .collect();
    assert!(outer.iter().filter(|t| **t == ETH_P_8021Q).count() == 10);
    assert!(outer.iter().filter(|t| **t == ETH_P_8021AD).count() == 5);
}

#[test]
fn cleanup_stale_removes_dead_owners_only() {
    if !privileged("cleanup_stale_removes_dead_owners_only") {
        return;
    }
    // A pid that just died.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!("{NS_PREFIX}{dead}-0-gw");
    let live = format!("{NS_PREFIX}{}-999999-gw", std::process::id());
    for n in [&stale, &live] {
        let o = output_timeout(
            std::process::Command::new("ip").args(["netns", "add", n]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(o.status.success(), "{o:?}");
    }
    let removed = cleanup_stale();
    let stale_gone = !ns_exists(&stale);
    let live_kept = ns_exists(&live);
    let _ = output_timeout(
        std::process::Command::new("ip").args(["netns", "del", &live]),
        Duration::from_secs(10),
    );
    assert!(stale_gone && removed.contains(&stale), "{removed:?}");
    assert!(live_kept, "namespace of a live process was removed");
}

/// A stand-in for `firewall`: prints the start/attach events, creates the
/// pin dir, stops on SIGTERM; `detach` removes the pin dir and leaves a mark.
fn fake_firewall(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("firewall");
    let mark = dir.join("detached");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
pin="$2"; cmd="$3"
case "$cmd" in
run)
  trap 'echo "{{\"event\":\"stop\"}}"; exit 0' TERM
  mkdir -p "$pin"
  echo "not json"
  echo '{{"ts":"x","event":"start"}}'
  for a in "$@"; do
    [ "$a" = "--iface" ] && echo '{{"ts":"x","event":"attach","iface":"i"}}'
  done
  i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done ;;
detach) rmdir "$pin"; touch "{mark}" ;;
stats) echo "passed 1" ;;
*) echo "error: unknown $cmd" >&2; exit 2 ;;
esac
"#,
            mark = mark.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn daemon_driver_with_fake_binary() {
    if !privileged("daemon_driver_with_fake_binary") {
        return;
    }
    let sb = Sandbox::new().expect("sandbox");
    let dir = std::env::temp_dir().join(format!("fwfake{}", crate::unique_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = fake_firewall(&dir);
    let pin = unique_pin_dir();
    let mut d = FirewallDaemon::spawn(
        &bin,
        &sb.gw_ns,
        &pin,
        &["--iface", &sb.gw_client_if, "--iface", &sb.gw_attacker_if],
    )
    .expect("fake daemon ready");
    assert!(d.is_running());
    assert!(pin.exists());
    let ev = d.events();
    assert_eq!(
        ev.iter().filter(|e| e["event"] == "attach").count(),
        2,
        "{ev:?}"
    );
    let o = d.cli(&["stats"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "passed 1");
    let status = d.stop();
    assert!(status.success(), "{status:?}");
    assert!(d
        .wait_for_event(Duration::from_secs(1), |e| e["event"] == "stop")
        .is_some());
    drop(d);
    assert!(!pin.exists(), "pin dir left behind");
    assert!(dir.join("detached").exists(), "detach was not run");

    // A daemon that exits at once fails start with its stderr.
    let bad = dir.join("bad");
    std::fs::write(
        &bad,
        "#!/bin/sh\necho 'error: no such interface' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = FirewallDaemon::spawn(&bad, &sb.gw_ns, &unique_pin_dir(), &["--iface", "x"])
        .err()
        .expect("must fail");
    assert!(format!("{err:#}").contains("no such interface"), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn firewall_bin_honours_env() {
    // Only reads the variable when set by the harness; just check the fallback shape.
    if std::env::var_os("FIREWALL_BIN").is_none() {
        let p = firewall_bin();
        assert!(p.ends_with("firewall"), "{}", p.display());
    }
}

#[test]
fn pacer_is_bounded_and_paced() {
    let t = Instant::now();
    let mut p = traffic::Pacer::new(Some(1000), 100, Instant::now() + Duration::from_secs(5));
    let mut n = 0;
    while let Some(b) = p.next_batch() {
        n += b;
    }
    assert_eq!(n, 100);
    let e = t.elapsed();
    assert!(
        e >= Duration::from_millis(95) && e < Duration::from_secs(1),
        "{e:?}"
    );
    // The deadline wins over the count.
    let t = Instant::now();
    let mut p = traffic::Pacer::new(
        Some(10),
        1_000_000,
        Instant::now() + Duration::from_millis(200),
    );
    let mut n = 0;
    while let Some(b) = p.next_batch() {
        n += b;
    }
    assert!(n <= 3, "{n}");
    assert!(t.elapsed() < Duration::from_millis(400));
}
