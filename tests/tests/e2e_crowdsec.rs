//! End to end: the firewall as a CrowdSec bouncer and watcher, against
//! Debian's real `crowdsec` LAPI started by each test (temp config, sqlite
//! database, `-no-cs -no-capi`) inside the sandbox's gateway namespace, and
//! real packets from the attacker namespace. The hostile-input test serves
//! canned answers from a small server of its own instead.

use std::{
    io::{Read, Write},
    net::{IpAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;
use testkit::{
    e2e::{ip, json, ok, policy_file, sample, scrape, sock, verdict},
    in_netns, nsenter_cmd, output_timeout, send_raw, send_udp_burst, DaemonBuilder, FirewallDaemon,
    Sandbox, UdpSink,
};

const LAPI_PORT: u16 = 8080;
const METRICS_PORT: u16 = 9477;
static DIRS: AtomicU32 = AtomicU32::new(0);

/// Runs the test only where it can: root and Debian's crowdsec. Under
/// CI=true a missing piece fails the test instead of skipping it.
fn can_run(test: &str) -> bool {
    if !testkit::privileged(test) {
        return false;
    }
    let found = ["crowdsec", "cscli"].iter().all(|b| {
        Command::new(b)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    match (found, testkit::under_ci()) {
        (true, _) => true,
        (false, true) => {
            panic!("{test}: crowdsec/cscli not installed (cargo xtask setup installs them)")
        }
        (false, false) => {
            eprintln!(
                "SKIP {test}: crowdsec/cscli not installed (cargo xtask setup installs them)"
            );
            false
        }
    }
}

/// A temp directory named like the toolkit's log dirs (`fwlog<pid>-...`),
/// so leftovers of a killed run are cleaned by `testkit::cleanup_stale`.
fn temp_dir(what: &str) -> PathBuf {
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("fwlog{}-{what}{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_secret(path: &Path, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A real CrowdSec LAPI in the gateway namespace on 127.0.0.1:8080. Drop
/// kills it and removes its directory (kept, with its log shown, when the
/// test panics).
struct Lapi {
    dir: PathBuf,
    ns: String,
    child: Option<Child>,
    key: String,
    key_file: PathBuf,
    password_file: PathBuf,
}

const MACHINE: &str = "gw1";

impl Lapi {
    fn start(ns: &str) -> Lapi {
        let dir = temp_dir("lapi");
        for sub in ["data", "hub", "notifications"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let d = dir.display();
        // One database connection: the LAPI records each bouncer pull (a
        // write), and with sqlite a pull during `cscli decisions import`
        // otherwise fails the import with "database is locked" (1.4.6 sets
        // no busy timeout); with one connection the writes queue instead.
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "common:\n  daemonize: false\n  log_media: file\n  log_level: info\n  log_dir: {d}/\n  working_dir: .\n\
                 config_paths:\n  config_dir: {d}/\n  data_dir: {d}/data/\n  simulation_path: {d}/simulation.yaml\n  hub_dir: {d}/hub/\n  index_path: {d}/hub/.index.json\n  notification_dir: {d}/notifications/\n  plugin_dir: /usr/lib/crowdsec/plugins/\n\
                 crowdsec_service:\n  acquisition_path: {d}/acquis.yaml\n\
                 cscli:\n  output: human\n\
                 db_config:\n  log_level: info\n  type: sqlite\n  db_path: {d}/data/crowdsec.db\n  use_wal: true\n  max_open_conns: 1\n\
                 api:\n  client:\n    insecure_skip_verify: false\n    credentials_path: {d}/cscli-credentials.yaml\n  server:\n    log_level: info\n    listen_uri: 127.0.0.1:{LAPI_PORT}\n    profiles_path: {d}/profiles.yaml\n\
                 prometheus:\n  enabled: false\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("profiles.yaml"),
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\ndecisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        )
        .unwrap();
        std::fs::write(dir.join("simulation.yaml"), "simulation: off\n").unwrap();
        std::fs::write(dir.join("acquis.yaml"), "").unwrap();
        let key = format!(
            "{:016x}{:016x}",
            std::process::id() as u64 * 0x9e37_79b9,
            Instant::now().elapsed().as_nanos() as u64 ^ 0x5eed_cafe_f00d
        );
        let password = format!("gw-pass-{}", std::process::id());
        let mut lapi = Lapi {
            key_file: dir.join("bouncer.key"),
            password_file: dir.join("watcher.password"),
            dir,
            ns: ns.to_string(),
            child: None,
            key,
        };
        write_secret(&lapi.key_file, &lapi.key);
        write_secret(&lapi.password_file, &password);
        // Registered in the database directly, before the LAPI runs.
        let creds = lapi.dir.join("cscli-credentials.yaml");
        lapi.cscli(&[
            "machines",
            "add",
            "tester",
            "--password",
            "tester-password-1",
            "-f",
            creds.to_str().unwrap(),
        ]);
        let key = lapi.key.clone();
        lapi.cscli(&["bouncers", "add", "fw-test", "-k", &key]);
        lapi.cscli(&[
            "machines",
            "add",
            MACHINE,
            "--password",
            &password,
            "-f",
            "/dev/null",
        ]);
        lapi.spawn();
        lapi
    }

    fn config(&self) -> String {
        self.dir.join("config.yaml").display().to_string()
    }

    /// Start the LAPI process and wait (at most 30 s) until it accepts.
    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("lapi.out")).unwrap();
        let child = nsenter_cmd(&self.ns, "crowdsec")
            .args(["-c", &self.config(), "-no-cs", "-no-capi"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting crowdsec");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let ns = testkit::netns_path(&self.ns);
        loop {
            let up = in_netns(&ns, || TcpStream::connect(("127.0.0.1", LAPI_PORT)).is_ok());
            if up {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("crowdsec exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the LAPI did not listen within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        let mut s = std::fs::read_to_string(self.dir.join("lapi.out")).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(self.dir.join("crowdsec_api.log")).unwrap_or_default());
        let start = s.len().saturating_sub(3000);
        let start = (start..s.len())
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        s[start..].to_string()
    }

    /// `cscli -c CONFIG ARGS...` in the gateway namespace; must succeed.
    fn cscli(&self, args: &[&str]) -> String {
        let mut cmd = nsenter_cmd(&self.ns, "cscli");
        cmd.args(["-c", &self.config()]).args(args);
        let out = output_timeout(&mut cmd, Duration::from_secs(120)).expect("running cscli");
        assert!(
            out.status.success(),
            "cscli {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every decision `cscli decisions list -o json` shows, with the
    /// alert's machine id added.
    fn decisions(&self) -> Vec<Value> {
        let out = self.cscli(&["decisions", "list", "-o", "json", "-l", "0"]);
        let alerts: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let mut all = Vec::new();
        for a in alerts.as_array().into_iter().flatten() {
            for d in a["decisions"].as_array().into_iter().flatten() {
                let mut d = d.clone();
                d["machine_id"] = a["machine_id"].clone();
                all.push(d);
            }
        }
        all
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: kill(2) on our own, not yet reaped, child.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process does not die of SIGKILL until continued
            // on every kernel; continue it first.
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
        }
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- LAPI log (tail) ---\n{}\n--- kept in {} ---",
                self.log(),
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn crowdsec_policy(lapi_key: &Path, poll: &str, extra: &str, port: u16) -> PathBuf {
    policy_file(&format!(
        "[defaults]\nrate = 1000\nburst = 1000\n{extra}\n[crowdsec]\nlapi_url = \"http://127.0.0.1:{port}\"\napi_key_file = \"{}\"\npoll = \"{poll}\"\n",
        lapi_key.display()
    ))
}

/// The gateway's daemon with `policy` (a restart adds `.pin_dir`).
fn gateway(sb: &Sandbox, policy: &Path) -> DaemonBuilder {
    FirewallDaemon::on(&sb.gw_ns)
        .iface(&sb.gw_attacker_if)
        .config(policy)
        .metrics(METRICS_PORT)
}

/// Datagrams from `src` (an attacker address) that reach the gateway out
/// of a burst of 5.
fn probe(sb: &Sandbox, sink: &UdpSink, src: &str) -> u64 {
    let before = sink.count_from(ip(src));
    let dst = if src.contains(':') {
        sock("2001:db8:2::1", 9000)
    } else {
        sock("198.51.100.1", 9000)
    };
    send_udp_burst(&sb.attacker_path(), Some(ip(src)), dst, 5);
    std::thread::sleep(Duration::from_millis(60));
    sink.count_from(ip(src)) - before
}

/// Time until `cond` holds, polled every 50 ms; `None` after `limit`.
fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    loop {
        if cond() {
            return Some(t.elapsed());
        }
        if t.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn blocked(sb: &Sandbox, sink: &UdpSink, srcs: &[&str]) -> bool {
    srcs.iter().all(|s| probe(sb, sink, s) == 0)
}

fn passing(sb: &Sandbox, sink: &UdpSink, srcs: &[&str]) -> bool {
    srcs.iter().all(|s| probe(sb, sink, s) == 5)
}

fn metric(sb: &Sandbox, series: &str) -> f64 {
    sample(&scrape(&sb.gw_path(), METRICS_PORT), series).unwrap_or(-1.0)
}

fn crowdsec_entries(fw: &FirewallDaemon) -> Vec<String> {
    json(fw, &["block", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["origin"] == "crowdsec")
        .map(|r| r["cidr"].as_str().unwrap().to_string())
        .collect()
}

fn status(fw: &FirewallDaemon) -> Value {
    json(fw, &["crowdsec", "status", "--json"])
}

#[test]
fn cscli_decisions_block_and_unblock_real_packets() {
    if !can_run("cscli_decisions_block_and_unblock_real_packets") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let lapi = Lapi::start(&sb.gw_ns);
    let poll = Duration::from_secs(1);
    let policy = crowdsec_policy(&lapi.key_file, "1s", "", LAPI_PORT);
    let fw = gateway(&sb, &policy).start();
    let sink = UdpSink::bind(&sb.gw_path(), sock("::", 9000));
    let all = [
        "198.51.100.2",
        "198.51.100.3",
        "2001:db8:2::2",
        "2001:db8:2::3",
    ];
    assert!(
        passing(&sb, &sink, &all),
        "traffic passes before any decision"
    );
    let limit = poll + Duration::from_secs(1);
    let mut report = Vec::new();

    // Single addresses, both families: only they are dropped.
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "198.51.100.2",
        "--duration",
        "1h",
    ]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "2001:db8:2::2",
        "--duration",
        "1h",
    ]);
    let t = until(Duration::from_secs(10), || {
        blocked(&sb, &sink, &["198.51.100.2", "2001:db8:2::2"])
    })
    .expect("--ip decisions enforced");
    report.push(format!(
        "cscli decisions add --ip (v4 + v6) -> dropped: {t:?}"
    ));
    assert!(
        t <= limit,
        "--ip enforced after {t:?}, more than poll + 1 s"
    );
    assert!(passing(&sb, &sink, &["198.51.100.3", "2001:db8:2::3"]));
    let mut entries = crowdsec_entries(&fw);
    entries.sort();
    assert_eq!(entries, ["198.51.100.2/32", "2001:db8:2::2/128"]);
    let row = json(&fw, &["block", "list", "--json"])[0].clone();
    assert!(
        row["expires"].is_string(),
        "a decision's entry expires: {row}"
    );
    assert!(
        row["comment"].as_str().unwrap().starts_with("manual 'ban'"),
        "{row}"
    );

    lapi.cscli(&["decisions", "delete", "--ip", "198.51.100.2"]);
    lapi.cscli(&["decisions", "delete", "--ip", "2001:db8:2::2"]);
    let t = until(Duration::from_secs(10), || {
        passing(&sb, &sink, &["198.51.100.2", "2001:db8:2::2"])
    })
    .expect("deleted decisions lifted");
    report.push(format!(
        "cscli decisions delete --ip -> passing again: {t:?}"
    ));
    assert!(t <= limit, "--ip deletion applied after {t:?}");
    assert!(crowdsec_entries(&fw).is_empty());

    // Ranges, both families: every address inside is dropped.
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "198.51.100.0/24",
        "--duration",
        "1h",
    ]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "2001:db8:2::/64",
        "--duration",
        "1h",
    ]);
    let t = until(Duration::from_secs(10), || blocked(&sb, &sink, &all))
        .expect("--range decisions enforced");
    report.push(format!(
        "cscli decisions add --range (v4 + v6) -> dropped: {t:?}"
    ));
    assert!(t <= limit, "--range enforced after {t:?}");
    let mut entries = crowdsec_entries(&fw);
    entries.sort();
    assert_eq!(entries, ["198.51.100.0/24", "2001:db8:2::/64"]);
    lapi.cscli(&["decisions", "delete", "--range", "198.51.100.0/24"]);
    lapi.cscli(&["decisions", "delete", "--range", "2001:db8:2::/64"]);
    let t = until(Duration::from_secs(10), || passing(&sb, &sink, &all))
        .expect("deleted ranges lifted");
    report.push(format!(
        "cscli decisions delete --range -> passing again: {t:?}"
    ));
    assert!(t <= limit, "--range deletion applied after {t:?}");

    // A decision's expiry ends the block by itself.
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "198.51.100.3",
        "--duration",
        "4s",
    ]);
    let added = Instant::now();
    until(Duration::from_secs(10), || {
        blocked(&sb, &sink, &["198.51.100.3"])
    })
    .expect("short decision enforced");
    until(Duration::from_secs(15), || {
        passing(&sb, &sink, &["198.51.100.3"])
    })
    .expect("the block ends when the decision expires");
    let lifted = added.elapsed();
    report.push(format!(
        "--duration 4s decision -> passing again {lifted:?} after cscli"
    ));
    assert!(
        lifted >= Duration::from_secs(3),
        "lifted after {lifted:?}, before its expiry"
    );

    assert!(verdict(&fw, "blocked") > 0);
    assert_eq!(
        metric(&sb, "firewall_crowdsec_decisions_total{result=\"applied\"}"),
        5.0
    );
    // Four deleted by cscli; the expired one counts too when the LAPI
    // reports its expiry before our own clock dropped it (a race of ms).
    let deleted = metric(&sb, "firewall_crowdsec_decisions_total{result=\"deleted\"}");
    assert!((4.0..=5.0).contains(&deleted), "deleted {deleted}");
    assert_eq!(
        metric(&sb, "firewall_crowdsec_decisions_total{result=\"skipped\"}"),
        0.0
    );
    assert_eq!(metric(&sb, "firewall_crowdsec_lapi_up"), 1.0);
    let st = status(&fw);
    assert_eq!(st["configured"], true);
    assert_eq!(st["running"], true);
    assert_eq!(st["reachable"], true);
    assert_eq!(st["decisions"]["applied"], 5);
    let text = ok(&fw, &["crowdsec", "status"]);
    assert!(
        text.contains("reachable") && text.contains("5 applied"),
        "{text}"
    );
    // The key is never written anywhere we produce.
    for out in [fw.stdout(), fw.stderr(), st.to_string(), text] {
        assert!(!out.contains(&lapi.key), "the bouncer key leaked: {out}");
    }
    for line in &report {
        println!("{line}");
    }
}

#[test]
fn an_auto_ban_is_pushed_as_an_alert_and_not_looped_back() {
    if !can_run("an_auto_ban_is_pushed_as_an_alert_and_not_looped_back") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let mut lapi = Lapi::start(&sb.gw_ns);
    let policy = policy_file(&format!(
        "[defaults]\nrate = 50\nburst = 10\n[autoban]\ndrops = 100\nwindow = \"5s\"\nban = \"1m\"\nmax_ban = \"1h\"\n\
         [crowdsec]\nlapi_url = \"http://127.0.0.1:{LAPI_PORT}\"\napi_key_file = \"{}\"\npoll = \"1s\"\npush = true\nmachine_id = \"{MACHINE}\"\npassword_file = \"{}\"\n",
        lapi.key_file.display(),
        lapi.password_file.display()
    ));
    let fw = gateway(&sb, &policy).start();
    // A real flood: 1000 datagrams a second for 1 s against 50/s.
    testkit::send_udp(
        &sb.attacker_path(),
        Some(ip("198.51.100.2")),
        sock("198.51.100.1", 9000),
        1000,
        Duration::from_secs(1),
    );
    fw.wait_for_event(Duration::from_secs(5), |e| e["event"] == "ban")
        .expect("the flood is auto-banned");
    let mut seen = None;
    let t = until(Duration::from_secs(15), || {
        seen = lapi
            .decisions()
            .into_iter()
            .find(|d| d["value"] == "198.51.100.2");
        seen.is_some()
    })
    .expect("the auto-ban reaches the LAPI");
    let d = seen.unwrap();
    println!("auto-ban -> visible in cscli decisions list: {t:?}: {d}");
    assert_eq!(d["scenario"], "firewall/autoban");
    assert_eq!(d["origin"], "crowdsec");
    assert_eq!(d["type"], "ban");
    assert_eq!(d["scope"], "Ip");
    assert_eq!(d["machine_id"], MACHINE);
    let left = d["duration"].as_str().unwrap();
    assert!(left.contains('m') || left.ends_with('s'), "{left}");
    // The decision comes back through the stream and is recognised: the
    // entry stays our auto-ban, not a duplicate of origin crowdsec.
    let back = until(Duration::from_secs(10), || {
        status(&fw)["decisions"]["skipped_by_reason"]["own"] == 1
    });
    let status = status(&fw);
    assert!(back.is_some(), "our decision not recognised: {status}");
    // A few more polls change nothing.
    std::thread::sleep(Duration::from_secs(3));
    let status = json(&fw, &["crowdsec", "status", "--json"]);
    assert_eq!(
        status["decisions"]["skipped_by_reason"]["own"], 1,
        "{status}"
    );
    assert_eq!(status["decisions"]["applied"], 0, "{status}");
    assert_eq!(status["alerts"]["pushed"], 1, "{status}");
    assert_eq!(status["alerts"]["pending"], 0, "{status}");
    let list = json(&fw, &["block", "list", "--json"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["cidr"], "198.51.100.2/32");
    assert_eq!(rows[0]["origin"], "autoban");
    assert_eq!(metric(&sb, "firewall_crowdsec_alerts_pushed_total"), 1.0);
    let events = fw.events();
    assert!(
        events.iter().any(|e| e["event"] == "crowdsec_push"),
        "{events:?}"
    );

    // With the LAPI down, a second ban waits in the outbox and is sent once
    // the LAPI is back.
    lapi.kill();
    testkit::send_udp(
        &sb.attacker_path(),
        Some(ip("198.51.100.3")),
        sock("198.51.100.1", 9000),
        1000,
        Duration::from_secs(1),
    );
    fw.wait_for_event(Duration::from_secs(5), |e| {
        e["event"] == "ban" && e["prefix"] == "198.51.100.3/32"
    })
    .expect("the second flood is auto-banned");
    until(Duration::from_secs(20), || {
        let s = json(&fw, &["crowdsec", "status", "--json"]);
        s["alerts"]["pending"] == 1 && s["reachable"] == false
    })
    .expect("the alert waits while the LAPI is down");
    assert_eq!(metric(&sb, "firewall_crowdsec_alerts_pending"), 1.0);
    lapi.spawn();
    let sent = until(Duration::from_secs(90), || {
        lapi.decisions()
            .iter()
            .any(|d| d["value"] == "198.51.100.3" && d["scenario"] == "firewall/autoban")
    })
    .expect("the queued alert reaches the LAPI after its restart");
    println!("alert queued during the outage -> in the LAPI {sent:?} after its restart");
    until(Duration::from_secs(10), || {
        json(&fw, &["crowdsec", "status", "--json"])["alerts"]["pushed"] == 2
    })
    .expect("two alerts pushed in all");
    let status = json(&fw, &["crowdsec", "status", "--json"]);
    assert_eq!(status["alerts"]["pending"], 0, "{status}");
    assert_eq!(status["decisions"]["applied"], 0, "{status}");
    let pw = std::fs::read_to_string(&lapi.password_file).unwrap();
    assert!(!fw.stdout().contains(pw.trim()) && !fw.stderr().contains(pw.trim()));
}

#[test]
fn twenty_thousand_imported_decisions_are_enforced() {
    if !can_run("twenty_thousand_imported_decisions_are_enforced") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let lapi = Lapi::start(&sb.gw_ns);
    let policy = crowdsec_policy(&lapi.key_file, "1s", "", LAPI_PORT);
    let fw = gateway(&sb, &policy).start();
    const N: u32 = 20_000;
    // 100.64.0.0 upwards: one address each.
    let addr = |i: u32| std::net::Ipv4Addr::from(0x6440_0000 + i);
    let mut csv = String::from("duration,scope,value\n");
    for i in 0..N {
        csv.push_str(&format!("2h,ip,{}\n", addr(i)));
    }
    let file = lapi.dir.join("import.csv");
    std::fs::write(&file, csv).unwrap();
    let t0 = Instant::now();
    lapi.cscli(&["decisions", "import", "-i", file.to_str().unwrap()]);
    let import = t0.elapsed();
    let entries = || {
        json(&fw, &["status", "--json"])["blocklist_entries"]
            .as_u64()
            .unwrap_or(0)
    };
    let enforce = until(Duration::from_secs(60), || entries() >= N as u64)
        .unwrap_or_else(|| panic!("{} of {N} entries after 60 s", entries()));
    let applies: Vec<f64> = fw
        .events()
        .iter()
        .filter(|e| e["event"] == "crowdsec_pull" && e["applied"].as_u64().unwrap_or(0) > 0)
        .map(|e| e["apply_ms"].as_f64().unwrap())
        .collect();
    let resyncs: Vec<Value> = fw
        .events()
        .iter()
        .filter(|e| e["event"] == "crowdsec_pull" && e["startup"] == true)
        .map(|e| serde_json::json!({"reason": e["reason"], "written": e["written"]}))
        .collect();
    println!("full pulls: {resyncs:?}");
    println!(
        "cscli decisions import of {N}: {import:?}; from its end to all {N} in the blocklist: {enforce:?}; from cscli start: {:?}; daemon's map writes per pull (ms): {applies:?}",
        t0.elapsed()
    );
    assert_eq!(crowdsec_entries(&fw).len(), N as usize);
    // First, middle and last decisions drop real packets.
    let frames: Vec<Vec<u8>> = [0, N / 2, N - 1]
        .iter()
        .map(|i| {
            sb.attacker_frame(IpAddr::V4(addr(*i)), ip("198.51.100.1"))
                .udp(1, 9000, 10)
                .build()
        })
        .collect();
    let before = verdict(&fw, "blocked");
    send_raw(&sb.attacker_path(), &sb.attacker_if, &frames, None);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(verdict(&fw, "blocked") - before, 3);
    assert_eq!(
        metric(&sb, "firewall_crowdsec_decisions_total{result=\"applied\"}"),
        N as f64
    );
    assert_eq!(
        metric(&sb, "firewall_blocklist_entries{origin=\"crowdsec\"}"),
        N as f64
    );
    // And all of them lifted at once.
    let t2 = Instant::now();
    lapi.cscli(&["decisions", "delete", "--all"]);
    let cscli_del = t2.elapsed();
    let lifted = until(Duration::from_secs(60), || entries() == 0)
        .unwrap_or_else(|| panic!("{} entries left 60 s after delete --all", entries()));
    println!("cscli decisions delete --all: {cscli_del:?}; then all {N} gone from the blocklist in {lifted:?}");
    assert_eq!(
        metric(&sb, "firewall_crowdsec_decisions_total{result=\"deleted\"}"),
        N as f64
    );
}

#[test]
fn a_startup_pull_of_100000_decisions_and_a_restart_resync() {
    if !can_run("a_startup_pull_of_100000_decisions_and_a_restart_resync") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let lapi = Lapi::start(&sb.gw_ns);
    const N: u32 = 100_000;
    let addr = |i: u32| std::net::Ipv4Addr::from(0x6440_0000 + i);
    let mut csv = String::from("duration,scope,value\n");
    for i in 0..N {
        csv.push_str(&format!("4h,ip,{}\n", addr(i)));
    }
    let file = lapi.dir.join("import.csv");
    std::fs::write(&file, csv).unwrap();
    let t = Instant::now();
    lapi.cscli(&["decisions", "import", "-i", file.to_str().unwrap()]);
    println!("cscli decisions import of {N}: {:?}", t.elapsed());

    // The firewall starts with all of them waiting in the LAPI.
    let policy = crowdsec_policy(&lapi.key_file, "1s", "", LAPI_PORT);
    let started = Instant::now();
    let mut fw = gateway(&sb, &policy).start();
    let entries = |fw: &FirewallDaemon| {
        json(fw, &["status", "--json"])["blocklist_entries"]
            .as_u64()
            .unwrap_or(0)
    };
    let all_in = until(Duration::from_secs(90), || entries(&fw) >= N as u64)
        .unwrap_or_else(|| panic!("{} of {N} entries after 90 s", entries(&fw)));
    let pull = fw
        .wait_for_event(Duration::from_secs(5), |e| {
            e["event"] == "crowdsec_pull" && e["startup"] == true && e["written"] == N
        })
        .expect("one startup pull wrote them all");
    let apply_ms = pull["apply_ms"].as_f64().unwrap();
    println!(
        "startup pull of {N}: daemon start -> all enforced {:?} (after ready: {all_in:?}); answer received -> maps written: {apply_ms:.0} ms",
        started.elapsed()
    );
    assert!(
        apply_ms < 2000.0,
        "{N} decisions took {apply_ms} ms to write"
    );
    let probe_frames = |ids: &[u32]| -> Vec<Vec<u8>> {
        ids.iter()
            .map(|i| {
                sb.attacker_frame(IpAddr::V4(addr(*i)), ip("198.51.100.1"))
                    .udp(1, 9000, 10)
                    .build()
            })
            .collect()
    };
    let before = verdict(&fw, "blocked");
    send_raw(
        &sb.attacker_path(),
        &sb.attacker_if,
        &probe_frames(&[0, N / 2, N - 1]),
        None,
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(verdict(&fw, "blocked") - before, 3);

    // The controller stops (the data plane keeps enforcing); a decision is
    // deleted meanwhile; the next controller resyncs: that one entry goes,
    // nothing is rewritten or counted twice.
    let pin = fw.pin_dir().to_path_buf();
    fw.stop();
    lapi.cscli(&["decisions", "delete", "--ip", &addr(7).to_string()]);
    let fw2 = gateway(&sb, &policy)
        .pin_dir(&pin)
        .try_start()
        .expect("a second controller adopts the data plane");
    let resync = fw2
        .wait_for_event(Duration::from_secs(60), |e| {
            e["event"] == "crowdsec_pull" && e["startup"] == true
        })
        .expect("the new controller's startup pull");
    println!("restart resync: {resync}");
    assert_eq!(resync["written"], 0, "{resync}");
    assert_eq!(resync["removed"], 1, "{resync}");
    assert_eq!(entries(&fw2), N as u64 - 1);
    let before = verdict(&fw2, "blocked");
    send_raw(
        &sb.attacker_path(),
        &sb.attacker_if,
        &probe_frames(&[7, 8]),
        None,
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        verdict(&fw2, "blocked") - before,
        1,
        "only the kept decision blocks"
    );
    drop(fw2);
    drop(fw);
}

#[test]
fn reloads_start_and_stop_the_bouncer() {
    if !can_run("reloads_start_and_stop_the_bouncer") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let lapi = Lapi::start(&sb.gw_ns);
    let policy = policy_file("[defaults]\nrate = 1000\nburst = 1000\n");
    let fw = gateway(&sb, &policy).start();
    let sink = UdpSink::bind(&sb.gw_path(), sock("::", 9000));
    assert_eq!(status(&fw)["configured"], false);
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "198.51.100.2",
        "--duration",
        "1h",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        passing(&sb, &sink, &["198.51.100.2"]),
        "no [crowdsec], no bouncer"
    );
    // The section added: the bouncer starts with a full pull.
    let with = crowdsec_policy(&lapi.key_file, "1s", "", LAPI_PORT);
    std::fs::copy(&with, &policy).unwrap();
    fw.wait_for_event(Duration::from_secs(5), |e| e["event"] == "crowdsec_start")
        .expect("crowdsec_start after the reload");
    until(Duration::from_secs(10), || {
        blocked(&sb, &sink, &["198.51.100.2"])
    })
    .expect("the decision made before the reload is enforced");
    assert_eq!(status(&fw)["configured"], true);
    // The section removed: the bouncer stops; its entries stay until they
    // expire, and new decisions are not pulled.
    std::fs::write(&policy, "[defaults]\nrate = 1000\nburst = 1000\n").unwrap();
    fw.wait_for_event(Duration::from_secs(5), |e| e["event"] == "crowdsec_stop")
        .expect("crowdsec_stop after the reload");
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "198.51.100.3",
        "--duration",
        "1h",
    ]);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(blocked(&sb, &sink, &["198.51.100.2"]));
    assert!(passing(&sb, &sink, &["198.51.100.3"]));
    assert_eq!(status(&fw)["configured"], false);
    let m = scrape(&sb.gw_path(), METRICS_PORT);
    assert!(
        !m.contains("firewall_crowdsec_lapi_up"),
        "series exported without [crowdsec]"
    );
    // Broken section: the reload is rejected and names the problem.
    std::fs::write(
        &policy,
        "[crowdsec]\nlapi_url = \"https://127.0.0.1:8080\"\napi_key_file = \"/k\"\n",
    )
    .unwrap();
    let ev = fw
        .wait_for_event(Duration::from_secs(5), |e| {
            e["event"] == "reload" && e["result"] == "error"
        })
        .expect("reload error");
    assert!(
        ev["errors"].to_string().contains("https is not supported"),
        "{ev}"
    );
}

#[test]
fn lapi_outage_keeps_enforcement_and_deltas_resume() {
    if !can_run("lapi_outage_keeps_enforcement_and_deltas_resume") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let mut lapi = Lapi::start(&sb.gw_ns);
    let policy = crowdsec_policy(&lapi.key_file, "1s", "", LAPI_PORT);
    let mut fw = gateway(&sb, &policy).start();
    let sink = UdpSink::bind(&sb.gw_path(), sock("::", 9000));
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "198.51.100.2",
        "--duration",
        "1h",
    ]);
    until(Duration::from_secs(10), || {
        blocked(&sb, &sink, &["198.51.100.2"])
    })
    .expect("decision enforced");

    // Frozen: connections are accepted by the kernel but never answered.
    lapi.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    let down = until(Duration::from_secs(30), || {
        assert!(
            blocked(&sb, &sink, &["198.51.100.2"]),
            "enforcement changed during the outage"
        );
        assert!(passing(&sb, &sink, &["198.51.100.3"]));
        status(&fw)["reachable"] == false
    })
    .expect("the LAPI is reported unreachable");
    println!(
        "SIGSTOP -> reported unreachable after {down:?} (request timeout); enforcement unchanged"
    );
    assert!(fw.is_running());
    assert_eq!(metric(&sb, "firewall_crowdsec_lapi_up"), 0.0);
    lapi.signal(libc::SIGCONT);
    let up = until(Duration::from_secs(90), || status(&fw)["reachable"] == true)
        .expect("reachable again after SIGCONT");
    println!(
        "SIGCONT -> reachable again after {up:?} (outage {:?})",
        frozen.elapsed()
    );

    // Killed and restarted on the same database.
    lapi.kill();
    let down_at = Instant::now();
    until(Duration::from_secs(30), || {
        status(&fw)["reachable"] == false
    })
    .expect("the killed LAPI is reported unreachable");
    assert!(blocked(&sb, &sink, &["198.51.100.2"]));
    std::thread::sleep(Duration::from_secs(3));
    lapi.spawn();
    lapi.cscli(&["decisions", "delete", "--ip", "198.51.100.2"]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "198.51.100.3",
        "--duration",
        "1h",
    ]);
    let down_for = down_at.elapsed();
    let resumed = until(Duration::from_secs(90), || {
        probe(&sb, &sink, "198.51.100.3") == 0 && probe(&sb, &sink, "198.51.100.2") == 5
    })
    .expect("deltas resume after the restart");
    println!(
        "LAPI killed, restarted {down_for:?} later, one decision deleted and one added -> both enforced {resumed:?} after cscli (retry backoff included)"
    );
    assert_eq!(crowdsec_entries(&fw), ["198.51.100.3/32"]);
    // Nothing lost, nothing counted twice across the resyncs.
    assert_eq!(
        metric(&sb, "firewall_crowdsec_decisions_total{result=\"applied\"}"),
        2.0
    );
    assert_eq!(
        metric(&sb, "firewall_crowdsec_decisions_total{result=\"deleted\"}"),
        1.0
    );
    assert!(metric(&sb, "firewall_crowdsec_errors_total") >= 2.0);
    let ev = fw.events();
    let states: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event"] == "crowdsec_lapi")
        .map(|e| &e["state"])
        .collect();
    println!("crowdsec_lapi events: {states:?}");
    assert!(
        states.len() >= 4,
        "down/up transitions logged once each: {states:?}"
    );
    assert!(
        states.len() <= 12,
        "retries are not logged one by one: {states:?}"
    );
    assert!(fw.is_running());
    fw.stop();
}

/// Canned HTTP answers, one per request, the last repeated; records each
/// request's path and `X-Api-Key`.
struct Hostile {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Hostile {
    fn start(ns_path: &str, port: u16, answers: Vec<(u16, String)>) -> Hostile {
        let listener = in_netns(ns_path, || TcpListener::bind(("127.0.0.1", port)))
            .expect("binding the hostile server");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (st, sn) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 65536 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                let key = text
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("x-api-key")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let n = {
                    let mut s = sn.lock().unwrap();
                    s.push((path, key));
                    s.len() - 1
                };
                let (code, body) = &answers[n.min(answers.len() - 1)];
                let head = format!(
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(body.as_bytes());
            }
        });
        Hostile {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn hostile_lapi_answers_are_rejected_or_skipped() {
    if !testkit::privileged("hostile_lapi_answers_are_rejected_or_skipped") {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let dir = temp_dir("hostile");
    let key_file = dir.join("bouncer.key");
    write_secret(&key_file, "hostile-test-key-0123456789");
    let dec = |id: u32, kind: &str, scope: &str, value: &str, duration: &str| {
        format!(
            r#"{{"duration":"{duration}","id":{id},"origin":"cscli","scenario":"test","scope":"{scope}","type":"{kind}","value":"{value}"}}"#
        )
    };
    // One good decision (198.51.100.3) and six absurd ones, all for .2.
    let full = format!(
        r#"{{"deleted":null,"new":[{}]}}"#,
        [
            dec(1, "ban", "Ip", "198.51.100.3", "1h"),
            dec(2, "ban", "Range", "0.0.0.0/0", "1h"),
            dec(3, "ban", "Ip", "198.51.100.2", "-4h"),
            dec(4, "ban", "Ip", "198.51.100.2", "876000h"),
            dec(5, "ban", "Ip", "198.51.100.300", "1h"),
            dec(6, "ban", "Country", "FR", "1h"),
            dec(7, "captcha", "Ip", "198.51.100.2", "1h"),
        ]
        .join(",")
    );
    let answers = vec![
        (200, full.clone()),
        // Truncated JSON.
        (
            200,
            r#"{"new":[{"id":8,"type":"ban","scope":"Ip","value":"198.51"#.to_string(),
        ),
        // Not JSON at all.
        (200, "<html><body>502 Bad Gateway</body></html>".to_string()),
        // A good decision for .2 next to one with a wrong type: all or nothing.
        (
            200,
            format!(
                r#"{{"deleted":null,"new":[{},{{"id":10,"type":"ban","scope":"Ip","value":198,"duration":"1h","origin":"x"}}]}}"#,
                dec(9, "ban", "Ip", "198.51.100.2", "1h")
            ),
        ),
        // After a rejection the bouncer resyncs with a full pull.
        (200, full.clone()),
        (200, r#"{"deleted":null,"new":null}"#.to_string()),
        // A delta whose ids skip one (8): a decision may have been missed,
        // so a full pull follows at once.
        (
            200,
            format!(
                r#"{{"deleted":null,"new":[{}]}}"#,
                dec(9, "ban", "Ip", "203.0.113.9", "1h")
            ),
        ),
        (
            200,
            full.replace(
                r#""new":["#,
                &format!(r#""new":[{},"#, dec(9, "ban", "Ip", "203.0.113.9", "1h")),
            ),
        ),
        (200, r#"{"deleted":null,"new":null}"#.to_string()),
    ];
    let port = 18080;
    let server = Hostile::start(&sb.gw_path(), port, answers);
    let policy = crowdsec_policy(&key_file, "500ms", "", port);
    let mut fw = gateway(&sb, &policy).start();
    let sink = UdpSink::bind(&sb.gw_path(), sock("::", 9000));
    until(Duration::from_secs(30), || server.requests().len() >= 9)
        .expect("the bouncer keeps polling through bad answers");
    std::thread::sleep(Duration::from_millis(300));
    assert!(fw.is_running());
    let reqs = server.requests();
    println!(
        "requests: {:?}",
        reqs.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    assert!(reqs.iter().all(|(_, k)| k == "hostile-test-key-0123456789"));
    let startup: Vec<bool> = reqs
        .iter()
        .map(|(p, _)| p.contains("startup=true"))
        .collect();
    assert_eq!(
        &startup[..8],
        [true, false, true, true, true, false, false, true]
    );
    // Only the good decisions are in force.
    assert_eq!(crowdsec_entries(&fw), ["198.51.100.3/32", "203.0.113.9/32"]);
    assert_eq!(probe(&sb, &sink, "198.51.100.3"), 0);
    assert_eq!(
        probe(&sb, &sink, "198.51.100.2"),
        5,
        "part of a rejected answer was applied"
    );
    let m = scrape(&sb.gw_path(), METRICS_PORT);
    let get = |s: &str| sample(&m, s).unwrap_or(-1.0);
    assert_eq!(
        get("firewall_crowdsec_decisions_total{result=\"applied\"}"),
        2.0
    );
    // Skipped once each, though two full pulls listed them.
    assert_eq!(
        get("firewall_crowdsec_decisions_total{result=\"skipped\"}"),
        6.0
    );
    assert_eq!(get("firewall_crowdsec_rejected_answers_total"), 3.0);
    let ev = fw.events();
    let rejected: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event"] == "crowdsec_rejected")
        .collect();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(rejected.iter().all(|e| e["applied"] == 0));
    let skipped = ev
        .iter()
        .find(|e| e["event"] == "crowdsec_skipped")
        .expect("a crowdsec_skipped event");
    for reason in ["range", "duration", "address", "scope", "type"] {
        assert!(
            skipped["reasons"][reason].as_u64().unwrap_or(0) >= 1,
            "no {reason} in {skipped}"
        );
    }
    assert_eq!(skipped["reasons"]["duration"], 2);
    let st = status(&fw);
    assert_eq!(st["rejected_answers"], 3);
    assert_eq!(st["decisions"]["skipped_by_reason"]["duration"], 2);
    assert_eq!(
        ev.iter()
            .filter(|e| e["event"] == "crowdsec_skipped")
            .count(),
        1
    );
    for out in [fw.stdout(), fw.stderr(), st.to_string()] {
        assert!(
            !out.contains("hostile-test-key-0123456789"),
            "key leaked: {out}"
        );
    }
    drop(fw);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
