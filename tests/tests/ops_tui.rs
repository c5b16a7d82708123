//! `firewall top --watch` in a real terminal: tmux runs it against a daemon
//! in a sandbox with a flood and a legitimate flow; the test reads the
//! screen (`tmux capture-pane -p`), presses keys (`send-keys`) and checks
//! that every way out (q, Esc, Ctrl-C, SIGTERM, a panic) gives the terminal
//! back: normal screen, cooked mode, exit status.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use testkit::{
    e2e::{ip, json, policy_file, sock},
    firewall_bin, send_udp, FirewallDaemon, Sandbox, UdpSink,
};

/// True when tmux runs here; else SKIP (or, under CI, fail).
fn have_tmux(test: &str) -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let why = "tmux is not installed (`cargo xtask setup` installs it)";
        if testkit::under_ci() {
            panic!("{test} cannot run under CI=true: {why}");
        }
        eprintln!("SKIP {test}: {why}");
    }
    ok
}

/// A private tmux server (its own socket) with one 120x42 pane running
/// `firewall top --watch` through a small script that records how it ended.
struct Tmux {
    socket: String,
    dir: PathBuf,
}

static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Tmux {
    fn start(bin: &Path, pin_dir: &Path, env: &[(&str, &str)]) -> Tmux {
        let id = format!(
            "{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("fw-tui-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let envs: String = env.iter().map(|(k, v)| format!("{k}='{v}' ")).collect();
        let script = format!(
            "#!/bin/sh\nprintf 'before-top\\n'\n{envs}'{bin}' --pin-dir '{pin}' top --watch 1 -n 8\n\
             echo \"top-exit=$?\"\nstty -a > '{dir}/stty.txt'\necho done > '{dir}/done'\nexec sleep 600\n",
            bin = bin.display(),
            pin = pin_dir.display(),
            dir = dir.display(),
        );
        let run = dir.join("run.sh");
        std::fs::write(&run, script).unwrap();
        let t = Tmux {
            socket: format!("fwtui{id}"),
            dir,
        };
        let out = t
            .cmd()
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "top",
                "-x",
                "120",
                "-y",
                "42",
            ])
            .arg(format!("sh {}", run.display()))
            .output()
            .expect("running tmux");
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn capture(&self) -> String {
        let o = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let ok = self
                .cmd()
                .args(["send-keys", "-t", "top", k])
                .status()
                .expect("tmux send-keys")
                .success();
            assert!(ok, "tmux send-keys {k}");
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn display(&self, format: &str) -> String {
        let o = self
            .cmd()
            .args(["display-message", "-p", "-t", "top", format])
            .output()
            .expect("tmux display-message");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn alternate_on(&self) -> bool {
        self.display("#{alternate_on}") == "1"
    }

    /// Waits for a screen satisfying `pred`; panics with the screen if none
    /// comes within `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.capture();
            if pred(&s) {
                return s;
            }
            if Instant::now() >= deadline {
                panic!("timed out waiting for {what}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// After `firewall top` ended: its exit status, and the terminal state.
    fn ended(&self) -> (i32, String) {
        let s = self.wait_for("top to exit", Duration::from_secs(10), |s| {
            s.contains("top-exit=")
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.dir.join("done").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let code = s
            .lines()
            .find_map(|l| l.trim().strip_prefix("top-exit="))
            .and_then(|c| c.trim().parse().ok())
            .expect("exit status");
        (code, s)
    }

    /// The terminal is back: normal screen (with what was there before),
    /// cooked mode with echo, cursor visible.
    fn assert_restored(&self, screen: &str) {
        assert!(
            !self.alternate_on(),
            "still on the alternate screen:\n{screen}"
        );
        assert!(
            screen.contains("before-top"),
            "the screen from before did not come back:\n{screen}"
        );
        assert_eq!(self.display("#{cursor_flag}"), "1", "cursor left hidden");
        let stty = std::fs::read_to_string(self.dir.join("stty.txt")).expect("stty output");
        let words: Vec<&str> = stty.split_whitespace().collect();
        for flag in ["icanon", "echo", "isig"] {
            assert!(
                words.contains(&flag),
                "terminal left in raw mode ({flag} off): {stty}"
            );
        }
    }

    /// The pid of `firewall top` (the child of the pane's shell).
    fn top_pid(&self) -> i32 {
        let shell = self.display("#{pane_pid}");
        let children =
            std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
        children
            .split_whitespace()
            .next()
            .expect("firewall top running")
            .parse()
            .unwrap()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The line of the selected row (the one with the highlight symbol).
fn selected_line(screen: &str) -> Option<&str> {
    screen.lines().find(|l| l.contains("│> "))
}

#[test]
fn top_watch_shows_the_flood_blocks_and_unblocks_and_quits_cleanly() {
    let name = "top_watch_shows_the_flood_blocks_and_unblocks_and_quits_cleanly";
    if !testkit::privileged(name) || !have_tmux(name) {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let policy = policy_file(
        "[defaults]\nrate = 100\nburst = 200\n\n[autoban]\ndrops = 1000\nwindow = \"10s\"\nban = \"10m\"\nmax_ban = \"1h\"\n",
    );
    let fw = FirewallDaemon::on(&sb.gw_ns)
        .iface(&sb.gw_attacker_if)
        .iface(&sb.gw_client_if)
        .config(&policy)
        .start();
    let _sink = UdpSink::bind(&sb.gw_path(), sock("0.0.0.0", 9000));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // A flood from the attacker (rate-limited, then auto-banned) and a
        // legitimate client within its limit, until the test ends.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                send_udp(
                    &sb.attacker_path(),
                    Some(ip("198.51.100.2")),
                    sock("198.51.100.1", 9000),
                    3000,
                    Duration::from_millis(500),
                );
            }
        });
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                send_udp(
                    &sb.client_path(),
                    None,
                    sock("192.0.2.1", 9000),
                    20,
                    Duration::from_millis(500),
                );
            }
        });
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drive_the_view(&fw);
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    });
}

fn drive_the_view(fw: &FirewallDaemon) {
    let t = Tmux::start(&firewall_bin(), fw.pin_dir(), &[]);
    t.wait_for(
        "the flood, its ban and two rate samples",
        Duration::from_secs(30),
        |s| {
            s.contains("198.51.100.2/32")
                && s.contains("192.0.2.2/32")
                && s.contains("autoban")
                && !s.contains(&format!("{:<14}{:>10}", "rate_limited", "-"))
        },
    );
    // A few more samples, so the sparklines have some history.
    std::thread::sleep(Duration::from_secs(4));
    let screen = t.capture();
    assert!(t.alternate_on(), "top --watch runs on the alternate screen");
    println!("--- firewall top --watch (tmux capture-pane -p, 120x42) ---\n{screen}--- end ---");
    for v in [
        "passed",
        "allowed",
        "blocked",
        "rate_limited",
        "would_drop",
        "malformed",
    ] {
        assert!(screen.contains(v), "verdict {v} missing:\n{screen}");
    }
    assert!(screen.contains("sort: drops") && screen.contains("by drops"));
    assert!(
        screen.contains("gw-a (xdp)"),
        "attachments shown:\n{screen}"
    );
    assert!(screen.contains("sources "), "occupancy shown:\n{screen}");
    // The flood's row: most drops, so first, and banned.
    let flood = screen
        .lines()
        .find(|l| l.contains("198.51.100.2/32") && l.contains("│>"))
        .unwrap_or_else(|| panic!("the flood is not the selected first row:\n{screen}"));
    assert!(flood.contains("autoban"), "ban state on the row: {flood}");

    // Sort by packets and back; pause and resume.
    t.keys(&["s"]);
    t.wait_for("sort by packets", Duration::from_secs(5), |s| {
        s.contains("sort: packets") && s.contains("by packets")
    });
    t.keys(&["s", "p"]);
    t.wait_for("pause", Duration::from_secs(5), |s| {
        s.contains("PAUSED") && s.contains("sort: drops")
    });
    t.keys(&["p"]);
    t.wait_for("resume", Duration::from_secs(5), |s| !s.contains("PAUSED"));

    // Select the client's row, block it, check with the CLI, unblock it.
    let mut found = false;
    for _ in 0..10 {
        let s = t.capture();
        if selected_line(&s).is_some_and(|l| l.contains("192.0.2.2/32")) {
            found = true;
            break;
        }
        t.keys(&["Down"]);
    }
    assert!(found, "could not select the client:\n{}", t.capture());
    t.keys(&["b"]);
    t.wait_for("the block prompt", Duration::from_secs(5), |s| {
        s.contains("Block 192.0.2.2/32 (manual, no expiry)? [y/N]")
    });
    t.keys(&["y"]);
    let s = t.wait_for("the block", Duration::from_secs(5), |s| {
        s.contains("blocked 192.0.2.2/32 (manual)")
    });
    println!("--- after b, y ---\n{s}--- end ---");
    let list = json(fw, &["block", "list", "--json"]);
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["cidr"] == "192.0.2.2/32")
        .unwrap_or_else(|| panic!("not in the blocklist: {list}"));
    assert_eq!(entry["origin"], "manual");
    assert_eq!(entry["comment"], "firewall top");
    // n cancels.
    t.keys(&["u"]);
    t.wait_for("the unblock prompt", Duration::from_secs(5), |s| {
        s.contains("Unblock 192.0.2.2/32 (manual)? [y/N]")
    });
    t.keys(&["n"]);
    t.wait_for("cancelled", Duration::from_secs(5), |s| {
        s.contains("cancelled")
    });
    assert!(json(fw, &["block", "list", "--json"])
        .to_string()
        .contains("192.0.2.2/32"));
    t.keys(&["u"]);
    t.wait_for("the unblock prompt", Duration::from_secs(5), |s| {
        s.contains("Unblock 192.0.2.2/32 (manual)? [y/N]")
    });
    t.keys(&["y"]);
    t.wait_for("the unblock", Duration::from_secs(5), |s| {
        s.contains("unblocked 192.0.2.2/32")
    });
    assert!(!json(fw, &["block", "list", "--json"])
        .to_string()
        .contains("192.0.2.2/32"));

    // q quits and gives the terminal back.
    t.keys(&["q"]);
    let (code, s) = t.ended();
    println!("--- after q ---\n{s}--- end ---");
    assert_eq!(code, 0, "{s}");
    t.assert_restored(&s);
}

#[test]
fn every_way_out_of_top_watch_restores_the_terminal() {
    let name = "every_way_out_of_top_watch_restores_the_terminal";
    if !testkit::privileged(name) || !have_tmux(name) {
        return;
    }
    let sb = Sandbox::new().unwrap();
    let fw = FirewallDaemon::start(&sb.gw_ns, &["--iface", &sb.gw_attacker_if]);
    let ready = |t: &Tmux| {
        t.wait_for("the view", Duration::from_secs(15), |s| {
            s.contains("rate_limited") && s.contains("q quit")
        });
        assert!(t.alternate_on());
    };
    for (how, keys) in [("Esc", vec!["Escape"]), ("Ctrl-C", vec!["C-c"])] {
        let t = Tmux::start(&firewall_bin(), fw.pin_dir(), &[]);
        ready(&t);
        t.keys(&keys);
        let (code, s) = t.ended();
        assert_eq!(code, 0, "{how}: {s}");
        t.assert_restored(&s);
        println!("{how}: exit 0, terminal restored");
    }
    // SIGTERM: caught, the loop ends, the terminal is restored.
    let t = Tmux::start(&firewall_bin(), fw.pin_dir(), &[]);
    ready(&t);
    let pid = t.top_pid();
    // SAFETY: kill(2) on the pid of the `firewall top` this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let (code, s) = t.ended();
    assert_eq!(code, 0, "SIGTERM: {s}");
    t.assert_restored(&s);
    println!("SIGTERM: exit 0, terminal restored");
    // A panic: the hook restores the terminal before the message, which
    // lands on the normal screen. The panic key is a test hook, built only
    // into the test variant of the binary.
    let Some(variant) = testkit::variant_bin("top --watch panic case") else {
        return;
    };
    let t = Tmux::start(&variant, fw.pin_dir(), &[("FIREWALL_TOP_PANIC_KEY", "!")]);
    ready(&t);
    t.keys(&["!"]);
    let (code, s) = t.ended();
    assert_eq!(code, 101, "a panic exits with 101: {s}");
    assert!(
        s.contains("FIREWALL_TOP_PANIC_KEY"),
        "panic message shown: {s}"
    );
    t.assert_restored(&s);
    println!("panic: exit 101, message on the normal screen, terminal restored");
}

#[test]
fn top_watch_needs_a_terminal_and_a_data_plane() {
    // Not privileged: no daemon needed for these refusals.
    let dir = std::env::temp_dir().join(format!("fw-no-pins-{}", std::process::id()));
    let out = testkit::cli(&dir, &["top", "--watch"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error:") && err.contains("needs a terminal"),
        "{err}"
    );
    let out = testkit::cli(&dir, &["top", "--watch", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--watch and --json conflict: {out:?}"
    );
}
