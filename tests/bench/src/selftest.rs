//! Checks of the bench's own pieces: the generated policies are valid, the
//! hand-assembled programs load and do what they should, the parsers read
//! what the kernel writes.

use super::*;
use std::os::fd::AsFd;

#[test]
fn median_of_odd_and_even() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    assert!(median(&[]).is_nan());
}

#[test]
fn generated_policies_are_valid() {
    use firewall_user::policy::parse;
    for size in [policy::Size::Empty, policy::Size::Large] {
        for (rate, burst) in [(policy::HIGH_RATE, policy::HIGH_RATE), (1, 1)] {
            let (p, _) = parse(&policy::micro(size, rate, burst))
                .unwrap_or_else(|e| panic!("{size:?} {rate}/{burst}: {e:?}"));
            if size == policy::Size::Large {
                assert_eq!(p.block.len(), 10_000);
                assert_eq!(p.allow.len(), 1_000);
                assert_eq!(p.limits.len(), 100);
                assert_eq!(p.rules.len(), 10);
            }
        }
    }
    for text in [
        policy::live(),
        policy::scale(),
        policy::reload(10_000, 40_000),
    ] {
        parse(&text).unwrap_or_else(|e| panic!("{text:.200}: {e:?}"));
    }
}

#[test]
fn measured_sources_are_where_the_plan_says() {
    use firewall_user::policy::parse;
    let (p, _) = parse(&policy::micro(policy::Size::Large, 1, 1)).unwrap();
    let v4 = std::net::IpAddr::V4;
    let allowed = |a| p.allow.iter().any(|n| n.contains(&v4(a)));
    let blocked = |a| p.block.iter().any(|n| n.contains(&v4(a)));
    let classed = |a| p.limits.iter().any(|l| l.cidr.contains(&v4(a)));
    assert!(allowed(policy::ALLOWED_V4));
    assert!(blocked(policy::BLOCKED_V4));
    for a in [policy::KNOWN_V4, policy::NEW_BASE] {
        assert!(!allowed(a) && !blocked(a) && !classed(a), "{a}");
    }
}

#[test]
fn import_file_has_distinct_entries() {
    let text = policy::import_file(1000, 0);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.starts_with('#'))
        .map(|l| l.split(';').next().unwrap().trim())
        .collect();
    let set: std::collections::HashSet<_> = lines.iter().collect();
    assert_eq!(lines.len(), 1000);
    assert_eq!(set.len(), 1000);
}

#[test]
fn template_frame_is_60_bytes_without_udp_checksum() {
    let f = live::template(live::ONE_SOURCE);
    assert_eq!(f.len(), 60);
    assert_eq!(&f[40..42], &[0, 0]);
    assert_eq!(
        testkit::packet::checksum(&f[14..34]),
        0,
        "valid IPv4 header checksum"
    );
}

#[test]
fn cpu_count_is_not_zero() {
    assert!(ncpus() >= 1);
    let (busy, total) = topo::cpu_ticks(0);
    assert!(total >= busy);
}

/// The generator rewrites the source within the pool and keeps the IPv4
/// header checksum valid; the baselines return XDP_PASS.
#[test]
fn hand_assembled_programs_work() {
    if !testkit::privileged("hand_assembled_programs_work") {
        return;
    }
    let base = std::net::Ipv4Addr::new(198, 18, 16, 0);
    let gen = sys::load_generator(u32::from(base), 1000).expect("generator loads");
    let frame = live::template(base);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let (ret, out) = sys::test_run_out(gen.as_fd(), &frame).expect("test run");
        assert_eq!(ret, sys::XDP_TX as u32);
        assert_eq!(out.len(), frame.len());
        let src = u32::from_be_bytes(out[26..30].try_into().unwrap());
        assert!(
            (u32::from(base)..u32::from(base) + 1000).contains(&src),
            "{src:#x}"
        );
        assert_eq!(
            testkit::packet::checksum(&out[14..34]),
            0,
            "IPv4 checksum after rewrite"
        );
        assert_eq!(&out[..24], &frame[..24]);
        assert_eq!(&out[30..], &frame[30..]);
        seen.insert(src);
    }
    assert!(seen.len() > 100, "sources vary: {}", seen.len());

    let single = sys::load_generator(u32::from(base), 1).unwrap();
    let (ret, out) = sys::test_run_out(single.as_fd(), &frame).unwrap();
    assert_eq!((ret, out), (sys::XDP_TX as u32, frame.clone()));

    let b = micro::Baselines::load().expect("baselines load");
    for p in [&b.pass, &b.lookup, &b.ktime] {
        let r = sys::test_run(p.as_fd(), &frame, 1000, None, 0, 0).unwrap();
        assert_eq!(r.retval, sys::XDP_PASS as u32);
    }
    let drop = sys::load_return("fwb_drop", sys::XDP_DROP).unwrap();
    let r = sys::test_run(drop.as_fd(), &frame, 1, None, 0, 0).unwrap();
    assert_eq!(r.retval, sys::XDP_DROP as u32);
}
