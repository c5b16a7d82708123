//! Packaging: the Debian package (`cargo xtask package`), the systemd unit
//! (`packaging/firewall.service`), sd_notify readiness, completions and man
//! pages.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc,
    time::{Duration, Instant},
};

use testkit::{e2e::link_details, firewall_bin, unique_pin_dir, FirewallDaemon, Sandbox};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn fresh_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "fw-{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The unit's `Key=value` lines (continuations are not used in the file).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_string())
        .collect()
}

fn unit_text() -> String {
    std::fs::read_to_string(repo().join("packaging/firewall.service")).unwrap()
}

/// A man page, plain or gzipped, as text.
fn man_text(p: &Path) -> String {
    if p.extension().is_some_and(|e| e == "gz") {
        run(Command::new("gzip").arg("-dc").arg(p))
    } else {
        std::fs::read_to_string(p).unwrap()
    }
}

fn find_man(dir: &Path, page: &str) -> Option<PathBuf> {
    [page.to_string(), format!("{page}.gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
}

#[test]
fn the_package_installs_what_it_should() {
    let Some(deb) = std::env::var_os("FIREWALL_DEB").filter(|d| !d.is_empty()) else {
        let why = "FIREWALL_DEB is not set (`cargo xtask test` builds the package and sets it; or `cargo xtask package` and FIREWALL_DEB=target/debian/firewall_*.deb)";
        if testkit::under_ci() {
            panic!("the_package_installs_what_it_should cannot run under CI=true: {why}");
        }
        eprintln!("SKIP the_package_installs_what_it_should: {why}");
        return;
    };
    let deb = repo().join(deb); // a relative path is from the workspace root
    assert!(deb.exists(), "{} does not exist", deb.display());
    let root = fresh_dir("deb-root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let control = fresh_dir("deb-control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    println!("{}:\n{listing}", deb.display());

    // The binary runs and validates the shipped default policy.
    let bin = root.join("usr/sbin/firewall");
    let version = run(Command::new(&bin).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("firewall {}", env!("CARGO_PKG_VERSION"))
    );
    let policy = root.join("etc/firewall/policy.toml");
    let check = run(Command::new(&bin).arg("check").arg(&policy));
    assert!(check.contains("valid"), "{check}");
    let text = std::fs::read_to_string(&policy).unwrap();
    assert!(
        text.lines().any(|l| l.trim() == "mode = \"monitor\""),
        "the default policy starts in monitor mode"
    );

    // The unit, as in the repository, and the options file it reads.
    let unit = ["lib/systemd/system", "usr/lib/systemd/system"]
        .iter()
        .map(|d| root.join(d).join("firewall.service"))
        .find(|p| p.exists())
        .expect("firewall.service in the package");
    assert_eq!(std::fs::read_to_string(&unit).unwrap(), unit_text());
    let defaults = std::fs::read_to_string(root.join("etc/default/firewall")).unwrap();
    assert!(defaults.contains("FIREWALL_IFACES=") && defaults.contains("FIREWALL_OPTS="));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    for f in ["/etc/firewall/policy.toml", "/etc/default/firewall"] {
        assert!(
            conffiles.lines().any(|l| l == f),
            "{f} not a conffile: {conffiles}"
        );
    }
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("deb-systemd-helper"), "{postinst}");

    // Dashboards and alerts, byte for byte.
    for (shipped, src) in [
        (
            "usr/share/firewall/dashboards/firewall.json",
            "dashboards/firewall.json",
        ),
        ("usr/share/firewall/alerts.yml", "dashboards/alerts.yml"),
    ] {
        assert_eq!(
            std::fs::read(root.join(shipped)).unwrap(),
            std::fs::read(repo().join(src)).unwrap(),
            "{shipped}"
        );
    }
    for doc in ["architecture.md", "operations.md"] {
        assert!(
            root.join("usr/share/doc/firewall").join(doc).exists(),
            "{doc}"
        );
    }

    // Completions for bash, zsh and fish; bash loads its script.
    let bash = root.join("usr/share/bash-completion/completions/firewall");
    let zsh = root.join("usr/share/zsh/vendor-completions/_firewall");
    let fish = root.join("usr/share/fish/vendor_completions.d/firewall.fish");
    for p in [&bash, &zsh, &fish] {
        let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            s.contains("firewall") && s.contains("block"),
            "{}",
            p.display()
        );
    }
    let complete = run(Command::new("bash").arg("-c").arg(format!(
        "source '{}' && complete -p firewall",
        bash.display()
    )));
    assert!(complete.contains("firewall"), "{complete}");

    // Man pages: the command and its subcommands.
    let man1 = root.join("usr/share/man/man1");
    for page in [
        "firewall.1",
        "firewall-run.1",
        "firewall-top.1",
        "firewall-block-add.1",
    ] {
        let p = find_man(&man1, page).unwrap_or_else(|| panic!("no man page {page}"));
        let t = man_text(&p);
        assert!(t.contains(".TH"), "{page} is not roff");
    }
    assert!(man_text(&find_man(&man1, "firewall-top.1").unwrap()).contains("watch"));

    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&control);
}

#[test]
fn completions_and_man_pages_come_from_the_cli() {
    for shell in ["bash", "zsh", "fish"] {
        let s = run(Command::new(firewall_bin()).args(["completions", shell]));
        for word in ["run", "block", "top", "watch", "pin-dir"] {
            assert!(s.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = Command::new(firewall_bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "unknown shell is bad input");
    let dir = fresh_dir("man");
    run(Command::new(firewall_bin())
        .args(["man", "--out-dir"])
        .arg(&dir));
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    println!("{pages:?}");
    for want in [
        "firewall.1",
        "firewall-run.1",
        "firewall-status.1",
        "firewall-top.1",
        "firewall-block-import.1",
        "firewall-limit-set.1",
        "firewall-check.1",
        "firewall-detach.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "no {want}: {pages:?}");
    }
    // Hidden helpers stay out of the pages.
    assert!(!pages
        .iter()
        .any(|p| p.contains("completions") || p == "firewall-man.1"));
    let main = std::fs::read_to_string(dir.join("firewall.1")).unwrap();
    assert!(
        main.contains("firewall\\-run") || main.contains("firewall-run"),
        "{main}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_unit_is_hardened_and_verifies() {
    let unit = unit_text();
    let one = |k: &str| -> String {
        let v = unit_values(&unit, k);
        assert_eq!(v.len(), 1, "{k}= should be set once: {v:?}");
        v[0].clone()
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("ProtectHome"), "yes");
    assert_eq!(one("PrivateTmp"), "yes");
    assert_eq!(one("StandardOutput"), "journal");
    let caps: BTreeSet<String> = one("CapabilityBoundingSet")
        .split_whitespace()
        .map(String::from)
        .collect();
    let want: BTreeSet<String> = [
        "CAP_BPF",
        "CAP_NET_ADMIN",
        "CAP_PERFMON",
        "CAP_SYS_RESOURCE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(caps, want, "only the capabilities the data plane needs");
    let rw: Vec<String> = one("ReadWritePaths")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(rw, ["/sys/fs/bpf", "/run/firewall"]);
    let families = one("RestrictAddressFamilies");
    for f in ["AF_NETLINK", "AF_INET", "AF_INET6", "AF_UNIX"] {
        assert!(families.split_whitespace().any(|x| x == f), "{f}");
    }
    assert!(one("EnvironmentFile").ends_with("/etc/default/firewall"));
    let exec = one("ExecStart");
    assert!(
        exec.starts_with("/usr/sbin/firewall run --config /etc/firewall/policy.toml")
            && exec.contains("$FIREWALL_IFACES"),
        "{exec}"
    );

    // systemd-analyze verify, on a copy whose binary path exists here.
    let have = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("SKIP systemd-analyze verify: systemd-analyze is not installed (Debian package systemd)");
        return;
    }
    let dir = fresh_dir("unit");
    let copy = dir.join("firewall.service");
    let bin = std::fs::canonicalize(firewall_bin()).expect("the firewall binary");
    std::fs::write(
        &copy,
        unit.replace("/usr/sbin/firewall", &bin.display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("systemd-analyze verify: {} {stderr}", out.status);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("firewall.service:"),
        "warnings about the unit: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

use std::collections::BTreeSet;

/// `firewall run` as the unit runs it: only the unit's capabilities (no
/// CAP_SYS_ADMIN, no new privileges) and a `$NOTIFY_SOCKET`. It reports
/// READY=1 only once attached, RELOADING=1/READY=1 around a SIGHUP reload,
/// STOPPING=1 on SIGTERM, exits 0, and leaves the data plane attached.
#[test]
fn daemon_notifies_systemd_with_only_the_units_capabilities() {
    if !testkit::privileged("daemon_notifies_systemd_with_only_the_units_capabilities") {
        return;
    }
    let have_setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(have_setpriv, "setpriv (util-linux) is needed");
    let unit = unit_text();
    let caps: Vec<String> = unit_values(&unit, "CapabilityBoundingSet")[0]
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    let dir = fresh_dir("notify");
    let sock_path = dir.join("notify.sock");
    let rx = UnixDatagram::bind(&sock_path).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // The daemon's command: this environment and these capabilities, then
    // exec (same pid, so signals reach it).
    let wrapper = dir.join("firewall-as-unit");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport NOTIFY_SOCKET='{}'\nexec setpriv --no-new-privs --inh-caps=-all --bounding-set=-all,{} -- '{}' \"$@\"\n",
            sock_path.display(),
            caps.join(","),
            std::fs::canonicalize(firewall_bin()).unwrap().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Collect datagrams with, for each, on how many of the gateway's two
    // interfaces XDP was attached when it arrived.
    let sb = Sandbox::new().unwrap();
    let pin = unique_pin_dir();
    let (tx, msgs) = mpsc::channel::<(String, usize)>();
    let (ns, ifs) = (
        sb.gw_ns.clone(),
        [sb.gw_attacker_if.clone(), sb.gw_client_if.clone()],
    );
    let collector = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(n) = rx.recv(&mut buf) {
                let attached = ifs
                    .iter()
                    .filter(|i| link_details(&ns, i).contains("prog/xdp"))
                    .count();
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = m.contains("STOPPING=1");
                if tx.send((m, attached)).is_err() || done {
                    return;
                }
            }
        }
    });
    let policy = testkit::e2e::policy_file("[defaults]\nrate = 100\nburst = 200\n");
    let mut fw = FirewallDaemon::spawn(
        &wrapper,
        &sb.gw_ns,
        &pin,
        &[
            "--iface",
            &sb.gw_attacker_if,
            "--iface",
            &sb.gw_client_if,
            "--config",
            policy.to_str().unwrap(),
        ],
    )
    .unwrap_or_else(|e| panic!("the daemon with only {caps:?}: {e:#}"));
    let log_dir = fw.log_dir().to_path_buf();
    let next = |what: &str| -> (String, usize) {
        let m = msgs
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| {
                let err = std::fs::read_to_string(log_dir.join("stderr.log")).unwrap_or_default();
                panic!("no {what} notification; stderr:\n{err}")
            });
        println!(
            "NOTIFY {what}: {:?} (interfaces attached when it came: {})",
            m.0, m.1
        );
        m
    };
    let (ready, attached) = next("READY");
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains("STATUS=enforcing on gw-a, gw-c"), "{ready}");
    assert_eq!(
        attached, 2,
        "READY=1 came before both interfaces were attached"
    );
    // It really runs with only those capabilities and no new privileges.
    let proc_status =
        std::fs::read_to_string(format!("/proc/{}/status", fw.pid().unwrap())).unwrap();
    let field = |k: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .unwrap()
            .trim()
            .to_string()
    };
    // CAP_NET_ADMIN 12, CAP_SYS_RESOURCE 24, CAP_PERFMON 38, CAP_BPF 39,
    // within what this process has (a container may lack some).
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let our_bounding = ours
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let mask: u64 = ((1 << 12) | (1 << 24) | (1 << 38) | (1 << 39)) & our_bounding;
    for k in ["CapEff", "CapBnd"] {
        assert_eq!(u64::from_str_radix(&field(k), 16).unwrap(), mask, "{k}");
    }
    assert_eq!(field("NoNewPrivs"), "1");
    let ev = fw.events();
    let pos = |e: &str| ev.iter().position(|x| x["event"] == e);
    assert!(
        pos("attach") < pos("start") && pos("start").is_some(),
        "{ev:?}"
    );
    for ifname in [&sb.gw_attacker_if, &sb.gw_client_if] {
        assert!(link_details(&sb.gw_ns, ifname).contains("xdp"), "{ifname}");
    }
    let status = fw.cli(&["status", "--json"]);
    assert!(status.status.success());

    // systemctl reload = SIGHUP: RELOADING=1 (with the monotonic time), READY=1.
    fw.signal(libc::SIGHUP).unwrap();
    let (reloading, ..) = next("RELOADING");
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(usec > 0);
    let (ready, ..) = next("READY after reload");
    assert!(ready.starts_with("READY=1"), "{ready}");
    fw.wait_for_event(Duration::from_secs(5), |e| {
        e["event"] == "reload" && e["result"] == "ok"
    })
    .expect("reload ok event");

    // systemctl stop = SIGTERM: STOPPING=1, exit 0, data plane stays.
    let exit = fw.stop();
    let (stopping, ..) = next("STOPPING");
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    assert!(
        exit.success(),
        "exit status {exit}; stderr:\n{}",
        fw.stderr()
    );
    assert!(
        link_details(&sb.gw_ns, &sb.gw_attacker_if).contains("xdp"),
        "the data plane stays attached after the controller stops"
    );
    assert!(
        !fw.stderr().contains("cannot notify"),
        "notify errors: {}",
        fw.stderr()
    );
    collector.join().unwrap();
    drop(fw);
    let _ = std::fs::remove_dir_all(&dir);
}
