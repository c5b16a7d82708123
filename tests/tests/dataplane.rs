//! Behaviour of the real program over time and across policy changes,
//! through BPF_PROG_TEST_RUN (packet in, verdict and counters out).

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use firewall_common::{Bucket, Limit, Origin, Verdict};
use firewall_user::{clock::mono_ns, commands::limits, control::List, policy};
use testkit::{
    harness::{Harness, Hook},
    packet::Frame,
};

fn udp_from(src: [u8; 4]) -> Vec<u8> {
    Frame::ip(
        IpAddr::V4(Ipv4Addr::from(src)),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
    )
    .udp(40000, 9000, 18)
    .build()
}

fn harness(toml: &str) -> Harness {
    Harness::new(&policy::parse(toml).expect("valid policy").0).expect("loading the data plane")
}

/// Float reference: the textbook token bucket.
fn reference(rate: f64, burst: f64, arrivals: &[u64]) -> u64 {
    let mut tokens = burst;
    let mut last = arrivals[0];
    let mut admitted = 0;
    for &t in arrivals {
        tokens = (tokens + t.saturating_sub(last) as f64 * rate / 1e9).min(burst);
        last = last.max(t);
        if tokens >= 1.0 {
            tokens -= 1.0;
            admitted += 1;
        }
    }
    admitted
}

#[test]
fn timed_sequence_matches_the_reference_model() {
    if !testkit::privileged("timed_sequence_matches_the_reference_model") {
        return;
    }
    let (rate, burst) = (200u64, 10u64);
    let mut h = harness(&format!("[defaults]\nrate = {rate}\nburst = {burst}\n"));
    let frame = udp_from([198, 51, 100, 7]);
    // Bursts of 0..=7 packets separated by 2..=14 ms: sometimes under the
    // rate, sometimes far over it. Every packet's time is taken around its
    // own test run, so the model sees (almost) the kernel's clock.
    let mut arrivals = Vec::new();
    let mut admitted = 0u64;
    let mut stamps_err = 0u64;
    for round in 0..120u64 {
        for _ in 0..(round * 7 % 8) {
            let t0 = mono_ns();
            let rv = h.run(Hook::Xdp, &frame, 1).expect("test run");
            let t1 = mono_ns();
            arrivals.push((t0 + t1) / 2);
            stamps_err = stamps_err.max(t1 - t0);
            admitted += (rv == testkit::harness::XDP_PASS) as u64;
        }
        std::thread::sleep(Duration::from_millis(2 + round * 5 % 13));
    }
    let model_float = reference(rate as f64, burst as f64, &arrivals);
    let limit = Limit::new(rate, burst).unwrap();
    let fixed = |times: &mut dyn Iterator<Item = u64>| {
        let times: Vec<u64> = times.collect();
        let mut b = Bucket::full(&limit, times[0]);
        times.iter().filter(|t| b.admit(&limit, **t)).count() as u64
    };
    let model_fixed = fixed(&mut arrivals.iter().copied());
    let span = (arrivals[arrivals.len() - 1] - arrivals[0]) as f64 / 1e9;
    let cfg = h.maps.config().unwrap();
    println!(
        "{} packets over {span:.2}s: kernel admitted {admitted}, fixed-point model {model_fixed}, float model {model_float} (timestamp uncertainty {stamps_err} ns, clock {})",
        arrivals.len(),
        firewall_user::tick::Tick::of(&cfg).describe()
    );
    assert_eq!(h.packets(Verdict::Passed), admitted);
    assert_eq!(
        h.packets(Verdict::RateLimited),
        arrivals.len() as u64 - admitted
    );
    assert!(
        admitted < arrivals.len() as u64,
        "the sequence must exceed the rate to test anything"
    );
    if cfg.tick_ns == 0 {
        // Timestamps are known to within a few microseconds; at 200/s a
        // token takes 5 ms, so the kernel and the models may differ by a
        // token or two.
        assert!(
            admitted.abs_diff(model_fixed) <= 2,
            "kernel {admitted} vs model {model_fixed}"
        );
        assert!(
            admitted.abs_diff(model_float) <= 2,
            "kernel {admitted} vs float model {model_float}"
        );
    } else {
        // The program's time is CLOCK_MONOTONIC rounded down to the last
        // tick, with the tick's phase known to within a tick: the same
        // fixed-point bucket fed with tick-rounded times, over the phases a
        // tick allows, must bracket the kernel to within a token.
        let tick = cfg.tick_ns;
        let models: Vec<u64> = (0..16)
            .map(|k| {
                let phase = cfg.tick_offset_ns + tick * k / 16;
                fixed(&mut arrivals.iter().map(|t| (t + phase) / tick * tick - phase))
            })
            .collect();
        let (lo, hi) = (*models.iter().min().unwrap(), *models.iter().max().unwrap());
        println!("tick-rounded models over one tick of phase: {lo}..={hi}");
        assert!(
            admitted + 1 >= lo && admitted <= hi + 1,
            "kernel {admitted} outside the tick models {lo}..={hi}"
        );
    }
    assert!(admitted as f64 <= burst as f64 + rate as f64 * span + 1.0);
}

#[test]
fn flood_guard_caps_new_sources_and_spares_known_ones() {
    if !testkit::privileged("flood_guard_caps_new_sources_and_spares_known_ones") {
        return;
    }
    let cpus = aya::util::nr_cpus().unwrap() as u64;
    // Each CPU gets an equal share of the budget; the harness runs on one CPU.
    let share = 5;
    let mut h = harness(&format!(
        "block = [\"203.0.113.0/24\"]\n[defaults]\nrate = 1000\nburst = 100\n[flood]\nnew_sources_rate = {}\nnew_sources_burst = {}\n",
        cpus, share * cpus
    ));
    let known = udp_from([198, 51, 100, 2]);
    assert_eq!(
        h.run(Hook::Xdp, &known, 1).unwrap(),
        testkit::harness::XDP_PASS
    );
    // A spoofed flood: every packet from a new address.
    let mut passed = 0;
    for i in 0..200u32 {
        let b = (i + 1000).to_be_bytes();
        if h.run(Hook::Xdp, &udp_from([10, b[1], b[2], b[3]]), 1)
            .unwrap()
            == testkit::harness::XDP_PASS
        {
            passed += 1;
        }
    }
    // The share (minus the known source's admission) plus at most a token
    // refilled at 1/s during the loop.
    assert!(
        (share - 1..=share + 1).contains(&passed),
        "{passed} spoofed sources passed"
    );
    let stats = firewall_user::commands::stats::read(&h.maps).unwrap();
    assert_eq!(stats.new_sources.refused, 200 - passed);
    // The known source keeps its own bucket.
    for _ in 0..50 {
        assert_eq!(
            h.run(Hook::Xdp, &known, 1).unwrap(),
            testkit::harness::XDP_PASS
        );
    }
    // Blocklist decisions do not depend on the budget.
    for i in 0..20u8 {
        assert_eq!(
            h.run(Hook::Xdp, &udp_from([203, 0, 113, i]), 1).unwrap(),
            testkit::harness::XDP_DROP
        );
    }
    assert_eq!(h.packets(Verdict::Blocked), 20);
    // Refused sources got no bucket: the table holds the admitted ones only.
    let tracked = h.maps.count_sources().unwrap() as u64;
    assert!(tracked <= share + 1, "{tracked} entries");
}

#[test]
fn policy_changes_apply_to_tracked_sources_on_their_next_packet() {
    if !testkit::privileged("policy_changes_apply_to_tracked_sources_on_their_next_packet") {
        return;
    }
    let mut h = harness("[defaults]\nrate = 1\nburst = 3\n");
    let f = udp_from([198, 51, 100, 9]);
    let net = "198.51.100.9/32".parse().unwrap();
    assert_eq!(h.run(Hook::Xdp, &f, 1).unwrap(), testkit::harness::XDP_PASS);
    // Block it: the cached classification is dropped by the generation bump.
    h.maps
        .write()
        .unwrap()
        .add(List::Block, &[net], Origin::Manual, None, None)
        .unwrap();
    assert_eq!(h.run(Hook::Xdp, &f, 1).unwrap(), testkit::harness::XDP_DROP);
    assert_eq!(h.packets(Verdict::Blocked), 1);
    h.maps.write().unwrap().delete(List::Block, &[net]).unwrap();
    assert_eq!(h.run(Hook::Xdp, &f, 1).unwrap(), testkit::harness::XDP_PASS);
    // At 1/s the bucket is nearly empty. A class of 1000/s applies from the
    // next packet on (from an empty bucket, as a source over its old limit
    // has none left): 20 packets at 500/s pass, where the old limit would
    // pass one.
    limits::set(&mut h.maps, Some("198.51.100.0/24"), 1000, 50).unwrap();
    let before = h.packets(Verdict::Passed);
    for _ in 0..21 {
        h.run(Hook::Xdp, &f, 1).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        h.packets(Verdict::Passed) - before >= 19,
        "new class limit not applied"
    );
    // Allowlisting bypasses the (now empty) bucket.
    h.maps
        .write()
        .unwrap()
        .add(
            List::Allow,
            &["198.51.100.0/24".parse().unwrap()],
            Origin::Manual,
            None,
            None,
        )
        .unwrap();
    for _ in 0..100 {
        assert_eq!(h.run(Hook::Xdp, &f, 1).unwrap(), testkit::harness::XDP_PASS);
    }
    assert_eq!(h.packets(Verdict::Allowed), 100);
}

#[test]
fn expired_blocks_stop_matching_at_once() {
    if !testkit::privileged("expired_blocks_stop_matching_at_once") {
        return;
    }
    let mut h = harness("");
    let f = udp_from([203, 0, 113, 50]);
    let net = "203.0.113.50/32".parse().unwrap();
    let ttl = Duration::from_millis(300);
    h.maps
        .write()
        .unwrap()
        .add(List::Block, &[net], Origin::Manual, Some(ttl), None)
        .unwrap();
    assert_eq!(h.run(Hook::Xdp, &f, 1).unwrap(), testkit::harness::XDP_DROP);
    std::thread::sleep(Duration::from_millis(350));
    // The program checks the expiry itself: no controller involved.
    assert_eq!(h.run(Hook::Xdp, &f, 1).unwrap(), testkit::harness::XDP_PASS);
    assert_eq!(
        (h.packets(Verdict::Blocked), h.packets(Verdict::Passed)),
        (1, 1)
    );
}

#[test]
fn entries_narrower_than_the_aggregation_prefix_are_exact() {
    if !testkit::privileged("entries_narrower_than_the_aggregation_prefix_are_exact") {
        return;
    }
    // Sources aggregate to /24, yet a /32 and a /28 block must hit only
    // their addresses.
    let mut h = harness(
        "block = [\"198.51.100.66\", \"198.51.100.128/28\"]\n[defaults]\nipv4_prefix = 24\nrate = 1000\nburst = 1000\n",
    );
    // The exact host sits in the host hash, looked up before the cache; the
    // /28 makes IPv4 give up the per-prefix cache. IPv6 keeps it.
    let f = h.maps.config().unwrap().flags;
    assert_ne!(f & firewall_common::flags::BLOCK_HOST_V4, 0);
    assert_ne!(f & firewall_common::flags::NO_LIST_CACHE_V4, 0);
    assert_eq!(f & firewall_common::flags::NO_LIST_CACHE_V6, 0);
    for _ in 0..3 {
        for (last, action) in [
            (65, testkit::harness::XDP_PASS),
            (66, testkit::harness::XDP_DROP),
            (130, testkit::harness::XDP_DROP),
            (150, testkit::harness::XDP_PASS),
        ] {
            assert_eq!(
                h.run(Hook::Xdp, &udp_from([198, 51, 100, last]), 1)
                    .unwrap(),
                action,
                "198.51.100.{last}"
            );
        }
    }
}

#[test]
fn monitor_mode_counts_would_drop_and_passes() {
    if !testkit::privileged("monitor_mode_counts_would_drop_and_passes") {
        return;
    }
    let mut h = harness(
        "block = [\"203.0.113.0/24\"]\n[defaults]\nrate = 1\nburst = 1\nmode = \"monitor\"\n",
    );
    for hook in [Hook::Xdp, Hook::Tc] {
        assert_eq!(
            h.run(hook, &udp_from([203, 0, 113, 1]), 1).unwrap(),
            hook.action(false)
        );
    }
    let f = udp_from([198, 51, 100, 3]);
    for _ in 0..5 {
        assert_eq!(h.run(Hook::Xdp, &f, 1).unwrap(), testkit::harness::XDP_PASS);
    }
    assert_eq!(h.packets(Verdict::WouldDrop), 2 + 4);
    assert_eq!(h.packets(Verdict::Passed), 1);
    assert_eq!(
        h.packets(Verdict::Blocked) + h.packets(Verdict::RateLimited),
        0
    );
}

#[test]
fn blocked_and_refused_new_sources_take_no_slot() {
    if !testkit::privileged("blocked_and_refused_new_sources_take_no_slot") {
        return;
    }
    let mut h = harness(
        "block = [\"203.0.113.0/24\", \"203.0.114.9\"]\n[flood]\nnew_sources_rate = 1\nnew_sources_burst = 1\n",
    );
    let tracked = |h: &Harness| h.maps.count_sources().expect("counting sources");
    // Blocked by the exact-host hash and by the trie: no slot either way,
    // and the flood budget is not spent on them.
    for last in 1..=20 {
        assert_eq!(
            h.run(Hook::Xdp, &udp_from([203, 0, 113, last]), 1).unwrap(),
            testkit::harness::XDP_DROP
        );
    }
    for _ in 0..5 {
        assert_eq!(
            h.run(Hook::Xdp, &udp_from([203, 0, 114, 9]), 1).unwrap(),
            testkit::harness::XDP_DROP
        );
    }
    assert_eq!(tracked(&h), 0, "blocked sources took slots");
    assert_eq!(h.packets(Verdict::Blocked), 25);
    // The budget of one new source a second (per CPU) is still whole: the
    // first new source gets a bucket, the next ones are refused, slotless.
    assert_eq!(
        h.run(Hook::Xdp, &udp_from([198, 51, 100, 30]), 1).unwrap(),
        testkit::harness::XDP_PASS
    );
    for last in 31..40 {
        assert_eq!(
            h.run(Hook::Xdp, &udp_from([198, 51, 100, last]), 1)
                .unwrap(),
            testkit::harness::XDP_DROP
        );
    }
    assert_eq!(tracked(&h), 1);
    assert_eq!(
        h.maps
            .stat(firewall_common::Stat::NewSourceRefused)
            .unwrap(),
        9
    );
}

#[test]
fn blocked_hosts_and_the_expiry_hint_keep_the_generation() {
    if !testkit::privileged("blocked_hosts_and_the_expiry_hint_keep_the_generation") {
        return;
    }
    let mut h = harness("");
    let generation = |h: &Harness| h.maps.config().unwrap().generation;
    let g0 = generation(&h);
    // Exact hosts are looked up before the per-source cache...
    let host = vec!["203.0.113.5/32".parse().unwrap()];
    h.maps
        .write()
        .unwrap()
        .add(
            List::Block,
            &host,
            Origin::Manual,
            Some(Duration::from_secs(60)),
            None,
        )
        .unwrap();
    assert_eq!(generation(&h), g0, "a host entry bumped the generation");
    // ... and the controller's expiry hint is bookkeeping.
    h.maps.write().unwrap().set_expiry_hint(1).unwrap();
    assert_eq!(generation(&h), g0, "the expiry hint bumped the generation");
    assert_eq!(
        h.run(Hook::Xdp, &udp_from([203, 0, 113, 5]), 1).unwrap(),
        testkit::harness::XDP_DROP
    );
    // A prefix is cached per source: it needs a new generation.
    let prefix = vec!["203.0.113.0/24".parse().unwrap()];
    h.maps
        .write()
        .unwrap()
        .add(List::Block, &prefix, Origin::Manual, None, None)
        .unwrap();
    assert_eq!(generation(&h), g0 + 1);
    h.maps.write().unwrap().delete(List::Block, &host).unwrap();
    assert_eq!(
        generation(&h),
        g0 + 1,
        "deleting a host bumped the generation"
    );
    // The host is gone but its prefix still blocks it.
    assert_eq!(
        h.run(Hook::Xdp, &udp_from([203, 0, 113, 5]), 1).unwrap(),
        testkit::harness::XDP_DROP
    );
    // An allowed host is cached with its source: adding or removing one
    // takes a new generation, and the tracked source follows at once.
    let src = [198, 51, 100, 44];
    for _ in 0..5 {
        h.run(Hook::Xdp, &udp_from(src), 1).unwrap();
    }
    let allowed_before = h.packets(Verdict::Allowed);
    let me = vec!["198.51.100.44/32".parse().unwrap()];
    h.maps
        .write()
        .unwrap()
        .add(List::Allow, &me, Origin::Manual, None, None)
        .unwrap();
    assert_eq!(generation(&h), g0 + 2);
    for _ in 0..300 {
        assert_eq!(
            h.run(Hook::Xdp, &udp_from(src), 1).unwrap(),
            testkit::harness::XDP_PASS
        );
    }
    assert_eq!(h.packets(Verdict::Allowed) - allowed_before, 300);
    h.maps.write().unwrap().delete(List::Allow, &me).unwrap();
    assert_eq!(generation(&h), g0 + 3);
    // Back under the default limit (burst 200 at 100/s): the flood is cut.
    let limited_before = h.packets(Verdict::RateLimited);
    for _ in 0..300 {
        h.run(Hook::Xdp, &udp_from(src), 1).unwrap();
    }
    assert!(h.packets(Verdict::RateLimited) > limited_before);
}

#[test]
fn the_program_reads_jiffies_where_the_kernel_has_them() {
    if !testkit::privileged("the_program_reads_jiffies_where_the_kernel_has_them") {
        return;
    }
    // Every supported kernel (5.10+) has bpf_jiffies64; the loader must
    // have found it and a plausible HZ.
    let h = harness("");
    let cfg = h.maps.config().unwrap();
    let tick = firewall_user::tick::Tick::of(&cfg);
    println!("clock: {}", tick.describe());
    let firewall_user::tick::Tick::Jiffies { hz, .. } = tick else {
        panic!("the loader fell back to ktime on a kernel with jiffies");
    };
    assert!((24..=1000).contains(&hz), "HZ {hz}");
    // The program's time (a new source's bucket is stamped with it: `tat`
    // is its time plus one token) trails CLOCK_MONOTONIC by at most two
    // ticks and never runs ahead of it.
    let mut h = h;
    let t = cfg.default_limit.gcra_t();
    for i in 0..20u8 {
        let src = [198, 51, 100, 100 + i];
        let t0 = mono_ns();
        h.run(Hook::Xdp, &udp_from(src), 1).unwrap();
        let t1 = mono_ns();
        let mut key = firewall_common::SourceKey {
            family: 4,
            ..Default::default()
        };
        key.addr[..4].copy_from_slice(&src);
        let tat = h.maps.source(&key).expect("tracked").tat;
        let stamped = (tat - t) >> firewall_common::bucket::GCRA_SHIFT;
        assert!(
            stamped <= t1 && stamped + 2 * cfg.tick_ns >= t0,
            "program time {stamped} vs monotonic {t0}..{t1} (tick {} ns)",
            cfg.tick_ns
        );
        std::thread::sleep(Duration::from_millis(3));
    }
}
