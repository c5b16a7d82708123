//! End to end: the SYN challenge with real tools. nginx on the gateway,
//! hping3 SYN floods with random sources on every CPU, the gateway's veths
//! polling in their own kernel threads as NIC queues do, and curl clients
//! that were never seen before: with the challenge they connect during the
//! flood; without it, they lose in proportion to the flood. Also: a real
//! client fetches a file through the challenge over IPv4 and IPv6.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use testkit::{
    e2e::{json, policy_file, sample, scrape, top_row},
    web::{self, Fetch, Nginx},
    FirewallDaemon, Sandbox, GW_ATTACKER_V4, GW_CLIENT_V4, GW_CLIENT_V6,
};

/// One test at a time: floods take every CPU.
static SERIAL: Mutex<()> = Mutex::new(());

const CLIENTS: u8 = 40;
const KNOWN_FETCHES: usize = 20;
const FLOOD_SECS: u64 = 10;
const CONNECT_WITHIN: Duration = Duration::from_secs(3);
/// The known client's fetches may wait for one SYN retransmission: a frame
/// lost while this machine's two CPUs run the flood is no verdict of the
/// firewall's (which the test checks separately: none of its packets is
/// dropped).
const KNOWN_WITHIN: Duration = Duration::from_secs(5);
/// Known-client fetches a phase may lose to this machine rather than to the
/// firewall: with both CPUs flooding, a veth queue of the clients' link
/// can stay full for seconds (about one run in eight lost one fetch). The
/// firewall's part is checked exactly: it drops none of the known client's
/// packets.
const KNOWN_LOST_TO_THE_MACHINE: usize = 1;

fn flood_policy(challenge: bool, rate: u64) -> String {
    format!(
        "[defaults]\nrate = 1000\nburst = 2000\n\
         [flood]\nnew_sources_rate = 1000\nnew_sources_burst = 10\n\
         syn_challenge = {challenge}\nsyn_challenge_rate = {rate}\nsyn_challenge_burst = {rate}\n"
    )
}

/// Rewrite the policy file and wait for the daemon's reload.
fn reload(fw: &FirewallDaemon, path: &Path, toml: &str) {
    let before = reloads(fw);
    std::fs::write(path, toml).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(fw) == before {
        assert!(Instant::now() < deadline, "no reload event within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let last = fw
        .events()
        .into_iter()
        .rfind(|e| e["event"] == "reload")
        .unwrap();
    assert_eq!(last["result"], "ok", "reload failed: {last}");
}

fn reloads(fw: &FirewallDaemon) -> usize {
    fw.events()
        .iter()
        .filter(|e| e["event"] == "reload")
        .count()
}

fn challenges(fw: &FirewallDaemon) -> [u64; 4] {
    let s = json(fw, &["stats", "--json"]);
    ["sent", "passed", "failed", "refused"].map(|r| {
        s["challenges"][r]
            .as_u64()
            .unwrap_or_else(|| panic!("no challenges.{r} in stats --json: {s}"))
    })
}

fn add_addresses(sb: &Sandbox, addrs: &[IpAddr]) {
    for a in addrs {
        let (cidr, extra) = match a {
            IpAddr::V4(_) => (format!("{a}/24"), None),
            IpAddr::V6(_) => (format!("{a}/64"), Some("nodad")),
        };
        let mut cmd = std::process::Command::new("ip");
        cmd.args([
            "-n",
            &sb.client_ns,
            "addr",
            "add",
            &cidr,
            "dev",
            &sb.client_if,
        ]);
        if let Some(x) = extra {
            cmd.arg(x);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "ip addr add {cidr}: {o:?}");
    }
}

/// What one flood phase showed.
struct Phase {
    forged: u64,
    /// TCP segments the gateway's stack took during the phase.
    stack_segments: u64,
    new_clients: Vec<Fetch>,
    known: Vec<Fetch>,
    challenges: [u64; 4],
    /// Frames the veths of the clients' link dropped during the phase.
    client_link_drops: u64,
}

impl Phase {
    fn answered(&self) -> usize {
        self.new_clients
            .iter()
            .filter(|f| f.status == 200 && f.connect_s <= CONNECT_WITHIN.as_secs_f64())
            .count()
    }

    fn median_connect(&self) -> f64 {
        let mut t: Vec<f64> = self.new_clients.iter().map(|f| f.connect_s).collect();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    }

    fn report(&self, name: &str) {
        println!(
            "{name}: {} of {CLIENTS} new clients answered within {CONNECT_WITHIN:?} \
             (median connect {:.3} s); known client {} of {KNOWN_FETCHES} within {KNOWN_WITHIN:?}; \
             {} forged SYNs, {} TCP segments reached the gateway's stack ({:.3} %); \
             challenges sent {} passed {} failed {} refused {}; the clients' link's veths dropped {}",
            self.answered(),
            self.median_connect(),
            self.known.iter().filter(|f| f.status == 200).count(),
            self.forged,
            self.stack_segments,
            100.0 * self.stack_segments as f64 / self.forged.max(1) as f64,
            self.challenges[0],
            self.challenges[1],
            self.challenges[2],
            self.challenges[3],
            self.client_link_drops,
        );
    }
}

/// Flood for `FLOOD_SECS`; after one second, `CLIENTS` new clients from
/// `clients` connect, one every 50 ms, while the known client fetches again
/// and again.
fn phase(sb: &Sandbox, fw: &FirewallDaemon, clients: &[IpAddr]) -> Phase {
    let segs_before = web::tcp_in_segs(&sb.gw_ns).unwrap();
    let ch_before = challenges(fw);
    let link_drops = || {
        web::dropped(&sb.client_ns, &sb.client_if).unwrap()
            + web::dropped(&sb.gw_ns, &sb.gw_client_if).unwrap()
    };
    let drops_before = link_drops();
    let ns = sb.attacker_ns.clone();
    let flood =
        std::thread::spawn(move || web::syn_flood(&ns, IpAddr::V4(GW_ATTACKER_V4), FLOOD_SECS));
    // Forged sources on the clients' link too (UDP, about 1,000/s per CPU,
    // dropped by XDP): the budget is per CPU, and the clients' link is
    // polled by a thread of its own, so this keeps the budget spent wherever
    // the clients' frames are handled.
    let ns = sb.client_ns.clone();
    let trickle = std::thread::spawn(move || {
        web::hping(
            &ns,
            &["--udp", "-p", "9", "-i", "u1000"],
            IpAddr::V4(GW_CLIENT_V4),
            FLOOD_SECS,
            0,
        )
    });
    std::thread::sleep(Duration::from_secs(1));
    let url = web::url(IpAddr::V4(GW_CLIENT_V4), "index.html");
    // New clients arrive one every 50 ms, as independent machines would
    // (40 processes started at once on the test's two CPUs would starve the
    // gateway's threads for a moment).
    let new: Vec<_> = clients
        .iter()
        .map(|&a| {
            let (ns, url) = (sb.client_ns.clone(), url.clone());
            let h =
                std::thread::spawn(move || web::fetch(&ns, a, &url, CONNECT_WITHIN, None).unwrap());
            std::thread::sleep(Duration::from_millis(50));
            h
        })
        .collect();
    let (ns, u) = (sb.client_ns.clone(), url.clone());
    let known = std::thread::spawn(move || {
        (0..KNOWN_FETCHES)
            .map(|_| {
                let f = web::fetch(&ns, IpAddr::V4(testkit::CLIENT_V4), &u, KNOWN_WITHIN, None)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(200));
                f
            })
            .collect::<Vec<_>>()
    });
    let new_clients = new.into_iter().map(|h| h.join().unwrap()).collect();
    let known = known.join().unwrap();
    let forged = flood.join().unwrap().expect("hping3 flood");
    trickle
        .join()
        .unwrap()
        .expect("hping3 on the clients' link");
    // Let the last frames drain before the counters are read.
    std::thread::sleep(Duration::from_millis(500));
    let ch_after = challenges(fw);
    Phase {
        forged,
        stack_segments: web::tcp_in_segs(&sb.gw_ns).unwrap() - segs_before,
        new_clients,
        known,
        challenges: [0, 1, 2, 3].map(|i| ch_after[i] - ch_before[i]),
        client_link_drops: link_drops() - drops_before,
    }
}

fn v4_clients(first: u8) -> Vec<IpAddr> {
    (0..CLIENTS)
        .map(|i| IpAddr::V4(Ipv4Addr::new(192, 0, 2, first + i)))
        .collect()
}

#[test]
fn new_clients_connect_through_a_spoofed_syn_flood() {
    if !testkit::privileged("new_clients_connect_through_a_spoofed_syn_flood") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new().unwrap();
    let (without, with) = (v4_clients(100), v4_clients(150));
    add_addresses(&sb, &without);
    add_addresses(&sb, &with);
    // The clients' end runs XDP, so that the veth hands it XDP_TX answers.
    // The attacker's end does not (yet): answers to forged sources end at
    // the gateway's veth, as they would leave a NIC for nowhere, instead of
    // costing this machine a TCP stack's work per frame.
    let _client_xdp = web::PeerXdp::attach(&sb.client_ns, &sb.client_if).unwrap();
    let _nginx = Nginx::start(&sb.gw_ns, &[("index.html", b"hello\n")]).unwrap();
    let policy = policy_file(&flood_policy(false, 1_000_000));
    let port = 9493;
    let mut fw = FirewallDaemon::on(&sb.gw_ns)
        .gateway_ifaces(&sb)
        .config(&policy)
        .metrics(port)
        .start();
    for ifname in [&sb.gw_client_if, &sb.gw_attacker_if] {
        web::napi_threaded(&sb.gw_ns, ifname).unwrap();
    }
    // The known client: seen before the flood.
    let url = web::url(IpAddr::V4(GW_CLIENT_V4), "index.html");
    let first = web::fetch(
        &sb.client_ns,
        IpAddr::V4(testkit::CLIENT_V4),
        &url,
        CONNECT_WITHIN,
        None,
    )
    .unwrap();
    assert_eq!(
        first.status, 200,
        "the known client before the flood: {first:?}"
    );

    let off = phase(&sb, &fw, &without);
    off.report("without the challenge");
    reload(&fw, &policy, &flood_policy(true, 1_000_000));
    let on = phase(&sb, &fw, &with);
    on.report("with the challenge");

    let answered = on.answered();
    assert!(
        answered * 100 >= CLIENTS as usize * 95,
        "with the challenge only {answered} of {CLIENTS} new clients connected within {CONNECT_WITHIN:?}: {:?}",
        on.new_clients
    );
    // Clients the budget happened to admit need no challenge; the rest
    // must have passed one.
    assert!(
        on.challenges[1] > 0,
        "{answered} clients connected and no challenge passed"
    );
    assert!(
        on.forged > 100_000,
        "the flood sent only {} SYNs",
        on.forged
    );
    assert!(
        on.stack_segments * 100 < on.forged,
        "{} TCP segments reached the stack for {} forged SYNs (1 % allowed)",
        on.stack_segments,
        on.forged
    );
    for (name, p) in [("without", &off), ("with", &on)] {
        let ok = p.known.iter().filter(|f| f.status == 200).count();
        assert!(
            ok + KNOWN_LOST_TO_THE_MACHINE >= KNOWN_FETCHES,
            "{name} the challenge, the known client got {ok} of {KNOWN_FETCHES}: {:?}",
            p.known
        );
    }
    let known =
        top_row(&fw, &format!("{}/32", testkit::CLIENT_V4)).expect("the known client is tracked");
    assert_eq!(
        known["drops"], 0,
        "the known client lost packets to the firewall: {known}"
    );

    // A small answer budget bounds the backscatter: what goes back to the
    // attacker's link stays within rate * time + burst.
    let rate = 2000u64;
    reload(&fw, &policy, &flood_policy(true, rate));
    let _attacker_xdp = web::PeerXdp::attach(&sb.attacker_ns, &sb.attacker_if).unwrap();
    let rx_before = web::rx_packets(&sb.attacker_ns, &sb.attacker_if).unwrap();
    let ch_before = challenges(&fw);
    let t = Instant::now();
    let forged = web::syn_flood(&sb.attacker_ns, IpAddr::V4(GW_ATTACKER_V4), 3).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let secs = t.elapsed().as_secs_f64();
    let ch = challenges(&fw);
    let rx = web::rx_packets(&sb.attacker_ns, &sb.attacker_if).unwrap() - rx_before;
    let (sent, refused) = (ch[0] - ch_before[0], ch[3] - ch_before[3]);
    // Each CPU holds its share of the burst: the bound is per gateway.
    let bound = rate as f64 * secs + rate as f64;
    println!(
        "budget {rate}/s: {forged} forged SYNs in {secs:.1} s, {sent} answered, {refused} refused, \
         {rx} frames reached the attacker's link (bound {bound:.0})"
    );
    assert!(
        sent as f64 <= bound,
        "{sent} answers over the bound {bound:.0}"
    );
    assert!(
        rx as f64 <= bound + 100.0,
        "{rx} frames reached the attacker's link, bound {bound:.0}"
    );
    assert!(
        refused > 0,
        "a {forged}-SYN flood never met the {rate}/s budget"
    );
    let m = scrape(&sb.gw_path(), port);
    assert_eq!(
        sample(&m, "firewall_challenges_total{result=\"sent\"}"),
        Some(ch[0] as f64),
        "{m}"
    );
    assert!(
        sample(&m, "firewall_packets_total{verdict=\"challenged\"}").unwrap_or(0.0) >= ch[0] as f64,
        "challenged verdicts on /metrics: {m}"
    );
    fw.stop();
}

/// A client from a fresh address fetches a file through the challenge,
/// over IPv4 and IPv6, while spoofed sources keep the new-source budget
/// spent on every CPU.
#[test]
fn a_new_client_fetches_a_file_through_the_challenge() {
    if !testkit::privileged("a_new_client_fetches_a_file_through_the_challenge") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new().unwrap();
    let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 60));
    let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x60));
    add_addresses(&sb, &[v4, v6]);
    let _peer = web::PeerXdp::attach(&sb.client_ns, &sb.client_if).unwrap();
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let _nginx = Nginx::start(&sb.gw_ns, &[("file.bin", &body)]).unwrap();
    // Every address is its own source (ipv6_prefix 128): the client's
    // other addresses, seen before, do not vouch for the new ones.
    let policy = policy_file(
        "[defaults]\nrate = 100000\nburst = 100000\nipv6_prefix = 128\n\
         [flood]\nnew_sources_rate = 1\nnew_sources_burst = 1\nsyn_challenge = true\n",
    );
    let port = 9494;
    let mut fw = FirewallDaemon::on(&sb.gw_ns)
        .gateway_ifaces(&sb)
        .config(&policy)
        .metrics(port)
        .start();
    // The client learns the gateway's addresses first (its own primary
    // addresses: the new ones never resolve anything themselves).
    let warm = [IpAddr::V4(GW_CLIENT_V4), IpAddr::V6(GW_CLIENT_V6)];
    for (src, dst) in [
        (testkit::CLIENT_V4.into(), warm[0]),
        (testkit::CLIENT_V6.into(), warm[1]),
    ] {
        let f = web::fetch(
            &sb.client_ns,
            src,
            &web::url(dst, "file.bin"),
            CONNECT_WITHIN,
            None,
        )
        .unwrap();
        assert_eq!(f.status, 200, "warm-up from {src}: {f:?}");
    }
    let before = challenges(&fw);
    let client_ns = sb.client_ns.clone();
    // Spoofed UDP at 1000/s per CPU from the client's link: every CPU's
    // new-source budget (1/s) stays spent while the client connects.
    let drain = std::thread::spawn(move || {
        web::hping(
            &client_ns,
            &["--udp", "-p", "9", "-i", "u1000"],
            IpAddr::V4(GW_CLIENT_V4),
            8,
            0,
        )
    });
    std::thread::sleep(Duration::from_secs(1));
    let dir = policy.parent().unwrap().to_path_buf();
    let mut got: Vec<(IpAddr, Fetch, PathBuf)> = Vec::new();
    for (src, dst) in [(v4, warm[0]), (v6, warm[1])] {
        let out = dir.join(format!("{}.bin", got.len()));
        let f = web::fetch(
            &sb.client_ns,
            src,
            &web::url(dst, "file.bin"),
            Duration::from_secs(5),
            Some(&out),
        )
        .unwrap();
        got.push((src, f, out));
    }
    drain.join().unwrap().expect("hping3 drain");
    let after = challenges(&fw);
    println!("stats: {}", json(&fw, &["stats", "--json"]));
    for (src, f, out) in &got {
        println!("{src}: {f:?}");
        assert_eq!(f.status, 200, "{src} through the challenge: {f:?}");
        assert!(
            std::fs::read(out).unwrap() == body,
            "{src}: the file arrived altered"
        );
    }
    println!(
        "challenges (sent, passed, failed, refused) moved by {:?}",
        [0, 1, 2, 3].map(|i| after[i] - before[i])
    );
    assert!(
        after[0] - before[0] >= 2,
        "fewer than two challenges sent: {before:?} -> {after:?}"
    );
    assert!(
        after[1] - before[1] >= 2,
        "fewer than two challenges passed: {before:?} -> {after:?}"
    );
    let m = scrape(&sb.gw_path(), port);
    assert!(
        sample(&m, "firewall_challenges_total{result=\"passed\"}").unwrap_or(0.0) >= 2.0,
        "{m}"
    );
    fw.stop();
}
