//! `firewall check`'s validator: every problem named, with its line.

use std::net::IpAddr;
use std::time::Duration;

use firewall_common::maps::LIST_CAPACITY;
use firewall_user::policy::{
    self, Autoban, Defaults, Flood, LimitClass, Policy, Problem, Protocol, Rule, Severity,
};
use ipnet::IpNet;
use proptest::prelude::*;

/// The example policy file of docs/reference.md, without `[table]` and `syn_challenge`.
const EXAMPLE: &str = r#"allow = ["192.0.2.0/24"]                       # top-level keys, before any [table]
block = ["203.0.113.0/24", "2001:db8:bad::/48"]

[defaults]
rate = 100          # packets per second per source prefix
burst = 200         # bucket depth in packets
ipv4_prefix = 32
ipv6_prefix = 64
mode = "enforce"    # or "monitor"

[[limit]]           # a class: sources inside cidr get this limit instead of the default
cidr = "198.51.100.0/24"
rate = 1000
burst = 2000

[[rule]]            # a service rule: matching packets use their own per-source bucket
name = "ssh-syn"
protocol = "tcp"    # tcp | udp | icmp | any
dst_port = 22       # a port or "1000-2000"
syn_only = true     # tcp only: count only SYN without ACK
rate = 5
burst = 10

[flood]             # spoofed-source guard: how fast never-seen source prefixes may
new_sources_rate = 100000   # ... start a bucket, per second, for the whole gateway;
new_sources_burst = 200000  # beyond it their packets are dropped as rate_limited

[autoban]           # optional: repeat offenders go on the blocklist for a while
drops = 1000        # rate_limited drops by one source prefix ...
window = "10s"      # ... within this window
ban = "10m"         # first ban; each repeat doubles it ...
max_ban = "24h"     # ... up to this
"#;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ok(text: &str) -> (Policy, Vec<Problem>) {
    match policy::parse(text) {
        Ok(v) => v,
        Err(problems) => panic!(
            "expected a valid policy, got:\n{}\n--- file ---\n{text}",
            render(&problems)
        ),
    }
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `[[rule]]` tables `from..to` with distinct names.
fn many_rules(n: usize) -> String {
    (1..=n)
        .map(|i| format!("[[rule]]\nname = \"r{i}\"\nrate = 1\nburst = 1\n"))
        .collect()
}

/// A `[crowdsec]` table with these lines.
fn cs(body: &str) -> String {
    format!("[crowdsec]\n{body}")
}

/// One bad file each: (file, expected line, substring of that line's error).
fn bad_files() -> Vec<(String, usize, &'static str)> {
    let s = |x: &str| x.to_string();
    vec![
        // --- TOML syntax ---
        (s("[defaults]\nrate = = 5\n"), 2, "invalid TOML"),
        (s("allow = [\"10.0.0.0/8\"\n\n[defaults]\n"), 3, "invalid TOML"),
        (s("[defaults]\nrate = 1\nrate = 2\n"), 3, "invalid TOML"),
        // --- unknown keys, every table ---
        (s("allowlist = []\n"), 1, "unknown top-level key `allowlist`; valid keys: allow, block, defaults, limit, rule, flood, autoban, table, crowdsec, fleet"),
        (s("[defaults]\nrte = 5\n"), 2, "unknown key `rte` in [defaults]; valid keys: rate, burst, ipv4_prefix, ipv6_prefix, mode (did you mean `rate`?)"),
        (s("[defaults]\nrate = 5\nallow = [\"10.0.0.0/8\"]\n"), 3, "unknown key `allow` in [defaults]; valid keys: rate, burst, ipv4_prefix, ipv6_prefix, mode (top-level keys such as allow and block must come before the first [table])"),
        (s("[flood]\nblock = [\"10.0.0.0/8\"]\n"), 2, "top-level keys such as allow and block must come before the first [table]"),
        (s("[[limit]]\ncidr = \"10.0.0.0/8\"\nrate = 1\nburst = 1\nprefix = 8\n"), 5, "unknown key `prefix` in [[limit]]; valid keys: cidr, rate, burst"),
        (s("[[rule]]\nname = \"x\"\nrate = 1\nburst = 1\nport = 22\n"), 5, "unknown key `port` in [[rule]]; valid keys: name, protocol, dst_port, syn_only, rate, burst"),
        (s("[flood]\nrate = 5\n"), 2, "unknown key `rate` in [flood]; valid keys: new_sources_rate, new_sources_burst"),
        (s("[autoban]\ndrops = 1\nwindow = \"1s\"\nban = \"1m\"\nmax_ban = \"1h\"\nbantime = \"1h\"\n"), 6, "unknown key `bantime` in [autoban]; valid keys: drops, window, ban, max_ban"),
        // --- wrong types / wrong shapes ---
        (s("[defaults]\nrate = \"100\"\n"), 2, "[defaults] rate = \"100\": must be an integer from 1 to 1000000000, not a string"),
        (s("[defaults]\nrate = 1.5\n"), 2, "[defaults] rate = 1.5: must be an integer from 1 to 1000000000, not a float"),
        (s("defaults = 5\n"), 1, "`defaults` must be a table"),
        (s("[[defaults]]\nrate = 5\n"), 1, "write [defaults], not [[defaults]]"),
        (s("[limit]\ncidr = \"10.0.0.0/8\"\nrate = 1\nburst = 1\n"), 1, "`limit` must be an array of tables: write [[limit]] before each entry"),
        (s("[rule]\nname = \"x\"\n"), 1, "write [[rule]] before each entry"),
        (s("allow = \"10.0.0.0/8\"\n"), 1, "allow = \"10.0.0.0/8\": must be an array of strings"),
        (s("block = [\n  \"10.0.0.0/8\",\n  5,\n]\n"), 3, "block entry 5: must be a string"),
        // --- rate and burst, everywhere ---
        (s("\n\n[defaults]\nrate = 0\n"), 4, "[defaults] rate = 0: must be an integer from 1 to 1000000000"),
        (s("[defaults]\nrate = 1000000001\n"), 2, "[defaults] rate = 1000000001: must be an integer from 1 to 1000000000"),
        (s("[defaults]\nburst = 0\n"), 2, "[defaults] burst = 0: must be an integer from 1 to"),
        (s("[defaults]\nburst = -5\n"), 2, "[defaults] burst = -5: must be an integer from 1 to"),
        (s("[defaults]\nrate = 1\nburst = 100000\n"), 3, "[defaults] burst = 100000: must be an integer from 1 to 70368 (the deepest bucket a rate of 1 can hold)"),
        (s("[[limit]]\ncidr = \"10.0.0.0/8\"\nrate = 0\nburst = 1\n"), 3, "[[limit]] rate = 0: must be an integer from 1 to 1000000000"),
        (s("[[rule]]\nname = \"web\"\nrate = 5\nburst = 0\n"), 4, "[[rule]] \"web\": burst = 0: must be an integer from 1 to"),
        (s("[flood]\nnew_sources_rate = 0\n"), 2, "[flood] new_sources_rate = 0: must be an integer from 1 to 1000000000"),
        (s("[flood]\nnew_sources_rate = 1\nnew_sources_burst = 999999999\n"), 3, "[flood] new_sources_burst = 999999999: must be an integer from 1 to 70368"),
        (s("[flood]\nnew_sources_rate = 1\n"), 2, "[flood] new_sources_rate = 1 cannot hold new_sources_burst = 200000 (the default): set new_sources_burst to at most 70368, or raise new_sources_rate"),
        // --- prefixes and mode ---
        (s("[defaults]\nipv4_prefix = 33\n"), 2, "[defaults] ipv4_prefix = 33: must be an integer from 1 to 32"),
        (s("[defaults]\nipv4_prefix = 0\n"), 2, "[defaults] ipv4_prefix = 0: must be an integer from 1 to 32"),
        (s("[defaults]\nipv6_prefix = 129\n"), 2, "[defaults] ipv6_prefix = 129: must be an integer from 1 to 128"),
        (s("[defaults]\nmode = \"block\"\n"), 2, "[defaults] mode = \"block\": must be \"enforce\" or \"monitor\""),
        (s("[defaults]\nmode = true\n"), 2, "[defaults] mode = true: must be \"enforce\" or \"monitor\", not a boolean"),
        // --- CIDRs ---
        (s("allow = [\"10.0.0.300/8\"]\n"), 1, "allow \"10.0.0.300/8\": not an IP address"),
        (s("block = [\"10.0.0.0/33\"]\n"), 1, "block \"10.0.0.0/33\": prefix length 33 is out of range (IPv4 allows 0 to 32)"),
        (s("block = [\"2001:db8::/129\"]\n"), 1, "prefix length 129 is out of range (IPv6 allows 0 to 128)"),
        (s("allow = [\"example.com\"]\n"), 1, "allow \"example.com\": not an IP address; write an IPv4 or IPv6 address or CIDR"),
        (s("[[limit]]\ncidr = \"10.0.0.0/x\"\nrate = 1\nburst = 1\n"), 2, "[[limit]] cidr \"10.0.0.0/x\": prefix length \"x\" is not a number"),
        (s("[[limit]]\ncidr = \"10.0.0.0/8\"\nrate = 1\nburst = 1\n\n[[limit]]\ncidr = \"10.1.2.3/8\"\nrate = 2\nburst = 2\n"), 7, "at line 7 duplicates the [[limit]] for 10.0.0.0/8 at line 2"),
        (s("[[limit]]\ncidr = \"10.0.0.0/8\"\nrate = 1\n"), 1, "[[limit]] is missing key `burst`; required: cidr, rate, burst"),
        (s("[[limit]]\nrate = 1\nburst = 1\n"), 1, "[[limit]] is missing key `cidr`"),
        // --- rules ---
        (s("[[rule]]\nname = \"x\"\nprotocol = \"sctp\"\nrate = 1\nburst = 1\n"), 3, "[[rule]] \"x\": protocol = \"sctp\": must be one of \"tcp\", \"udp\", \"icmp\", \"any\""),
        (s("[[rule]]\nname = \"x\"\nprotocol = \"tcp\"\ndst_port = 0\nrate = 1\nburst = 1\n"), 4, "dst_port = 0: must be a port from 1 to 65535"),
        (s("[[rule]]\nname = \"x\"\nprotocol = \"udp\"\ndst_port = 70000\nrate = 1\nburst = 1\n"), 4, "dst_port = 70000: must be a port from 1 to 65535"),
        (s("[[rule]]\nname = \"x\"\nprotocol = \"tcp\"\ndst_port = \"2000-1000\"\nrate = 1\nburst = 1\n"), 4, "dst_port = \"2000-1000\": reversed range (2000 is above 1000); write \"1000-2000\""),
        (s("[[rule]]\nname = \"x\"\nprotocol = \"tcp\"\ndst_port = \"http\"\nrate = 1\nburst = 1\n"), 4, "dst_port = \"http\": must be a port from 1 to 65535"),
        (s("[[rule]]\nname = \"x\"\nprotocol = \"tcp\"\ndst_port = \"1-70000\"\nrate = 1\nburst = 1\n"), 4, "dst_port = \"1-70000\": must be a port"),
        (s("[[rule]]\nname = \"ping\"\nprotocol = \"icmp\"\ndst_port = 22\nrate = 1\nburst = 1\n"), 4, "[[rule]] \"ping\": dst_port = 22: ports apply only to protocol \"tcp\" or \"udp\", not \"icmp\""),
        (s("[[rule]]\nname = \"all\"\ndst_port = 53\nrate = 1\nburst = 1\n"), 3, "ports apply only to protocol \"tcp\" or \"udp\", not \"any\""),
        (s("[[rule]]\nname = \"dns\"\nprotocol = \"udp\"\nsyn_only = true\nrate = 1\nburst = 1\n"), 4, "[[rule]] \"dns\": syn_only = true: only valid with protocol = \"tcp\", not \"udp\""),
        (s("[[rule]]\nname = \"x\"\nprotocol = \"tcp\"\nsyn_only = \"yes\"\nrate = 1\nburst = 1\n"), 4, "syn_only = \"yes\": must be true or false, not a string"),
        (s("[[rule]]\nprotocol = \"tcp\"\nrate = 1\nburst = 1\n"), 1, "[[rule]] is missing key `name`"),
        (s("[[rule]]\nname = \"x\"\n"), 1, "[[rule]] is missing keys `rate`, `burst`"),
        (s("[[rule]]\nname = \"\"\nrate = 1\nburst = 1\n"), 2, "[[rule]] name = \"\": must not be empty"),
        (s("[[rule]]\nname = 7\nrate = 1\nburst = 1\n"), 2, "[[rule]] name = 7: must be a non-empty string, not an integer"),
        (s("[[rule]]\nname = \"ssh\"\nrate = 1\nburst = 1\n[[rule]]\nname = \"ssh\"\nrate = 2\nburst = 2\n"), 6, "[[rule]] name = \"ssh\" is already used by the rule at line 2"),
        (many_rules(33), 129, "too many [[rule]] entries: 33 defined, at most 32"),
        // --- autoban ---
        (s("[autoban]\ndrops = 10\nwindow = \"10s\"\nban = \"10m\"\n"), 1, "[autoban] is missing key `max_ban`; required: drops, window, ban, max_ban"),
        (s("[autoban]\ndrops = 10\nwindow = \"10x\"\nban = \"10m\"\nmax_ban = \"1h\"\n"), 3, "[autoban] window = \"10x\": not a valid duration"),
        (s("[autoban]\ndrops = 10\nwindow = 10\nban = \"10m\"\nmax_ban = \"1h\"\n"), 3, "[autoban] window = 10: must be a duration such as \"30s\", \"10m\", \"1h\" or \"2d\", not an integer"),
        (s("[autoban]\ndrops = 0\nwindow = \"10s\"\nban = \"10m\"\nmax_ban = \"1h\"\n"), 2, "[autoban] drops = 0: must be an integer from 1 to"),
        (s("[autoban]\ndrops = 5\nwindow = \"0s\"\nban = \"10m\"\nmax_ban = \"1h\"\n"), 3, "[autoban] window = \"0s\": must be longer than 0"),
        (s("[autoban]\ndrops = 5\nwindow = \"10s\"\nban = \"2d\"\nmax_ban = \"1h\"\n"), 4, "[autoban] ban = \"2d\" is longer than max_ban = \"1h\": ban must be at most max_ban"),
        (s("autoban = \"on\"\n"), 1, "`autoban` must be a table"),
        // --- crowdsec ---
        (cs("lapi_url = \"https://127.0.0.1:8080\"\napi_key_file = \"/k\"\n"), 2, "[crowdsec] lapi_url = \"https://127.0.0.1:8080\": https is not supported"),
        (cs("lapi_url = \"127.0.0.1:8080\"\napi_key_file = \"/k\"\n"), 2, "[crowdsec] lapi_url = \"127.0.0.1:8080\": must start with http://"),
        (cs("lapi_url = 8080\napi_key_file = \"/k\"\n"), 2, "[crowdsec] lapi_url = 8080: must be an http:// URL such as \"http://127.0.0.1:8080\", not an integer"),
        (cs("lapi_url = \"http://127.0.0.1:8080\"\n"), 1, "[crowdsec] is missing key `api_key_file`; required: lapi_url, api_key_file"),
        (cs("lapi_url = \"http://127.0.0.1:8080\"\napi_key_file = \"\"\n"), 3, "[crowdsec] api_key_file = \"\": must be the path of a file"),
        (cs("lapi_url = \"http://127.0.0.1:8080\"\napi_key_file = \"/k\"\npoll = \"0s\"\n"), 4, "[crowdsec] poll = \"0s\": must be from \"200ms\" to \"60m\""),
        (cs("lapi_url = \"http://127.0.0.1:8080\"\napi_key_file = \"/k\"\npoll = \"2h\"\n"), 4, "[crowdsec] poll = \"2h\": must be from"),
        (cs("lapi_url = \"http://127.0.0.1:8080\"\napi_key_file = \"/k\"\npoll = \"soon\"\n"), 4, "[crowdsec] poll = \"soon\": not a valid duration"),
        (cs("lapi_url = \"http://127.0.0.1:8080\"\napi_key_file = \"/k\"\npush = \"yes\"\n"), 4, "[crowdsec] push = \"yes\": must be true or false, not a string"),
        (cs("lapi_url = \"http://127.0.0.1:8080\"\napi_key_file = \"/k\"\npush = true\n"), 4, "[crowdsec] push = true needs machine_id and password_file"),
        (cs("lapi_url = \"http://127.0.0.1:8080\"\napi_key_file = \"/k\"\npush = true\nmachine_id = \"gw1\"\n"), 4, "[crowdsec] push = true needs password_file"),
        (cs("lapi_url = \"http://127.0.0.1:8080\"\napi_key_file = \"/k\"\nmachine_id = \"gw 1\"\n"), 4, "[crowdsec] machine_id = \"gw 1\": must be 1 to 128 printable ASCII characters"),
        (cs("lapi_url = \"http://127.0.0.1:8080\"\napi_key = \"abc\"\n"), 3, "unknown key `api_key` in [crowdsec]; valid keys: lapi_url, api_key_file, poll, push, machine_id, password_file"),
        (s("crowdsec = \"on\"\n"), 1, "`crowdsec` must be a table"),
        // --- fleet ---
        (s("[fleet]\nname = \"gw1\"\n"), 1, "[fleet] is missing key `servers`; required: servers"),
        (s("[fleet]\nservers = [\"http://10.0.0.5:4222\"]\n"), 2, "[fleet] servers entry \"http://10.0.0.5:4222\": must be a NATS URL"),
        (s("[fleet]\nservers = \"nats://10.0.0.5\"\n"), 2, "[fleet] servers = \"nats://10.0.0.5\": must be an array of NATS URLs"),
        (s("[fleet]\nservers = [\"nats://a\"]\nshare = [\"fleet\"]\n"), 3, "(entries from the fleet are never published again)"),
        (s("[fleet]\nservers = [\"nats://a\"]\nmin_prefix_v4 = 0\n"), 3, "[fleet] min_prefix_v4 = 0: must be an integer from 1 to 32"),
        (s("[fleet]\nservers = [\"nats://a\"]\nbucket = \"bans.eu\"\n"), 3, "[fleet] bucket = \"bans.eu\": must be a bucket name"),
    ]
}

#[test]
fn every_bad_file_is_rejected_with_the_right_line_and_message() {
    let cases = bad_files();
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for (text, line, needle) in &cases {
        match policy::parse(text) {
            Ok((p, w)) => failures.push(format!(
                "accepted (warnings: {w:?}, policy {p:?}); wanted line {line}: {needle}\n--- file ---\n{text}"
            )),
            Err(problems) => {
                let hit = problems.iter().any(|p| {
                    p.severity == Severity::Error && p.line == *line && p.message.contains(needle)
                });
                if !hit {
                    failures.push(format!(
                        "wanted line {line}: error containing {needle:?}, got:\n{}\n--- file ---\n{text}",
                        render(&problems)
                    ));
                }
                // Every error says which line it is on.
                for p in &problems {
                    assert!(p.line > 0, "no line for {p:?} in\n{text}");
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// The same table through the real binary: `firewall check FILE` exits 2,
/// prints each problem with its line on stderr, and 0 for a good file.
#[test]
fn firewall_check_names_every_problem_and_sets_the_exit_status() {
    let dir = std::env::temp_dir().join(format!("fw-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_firewall");
    let mut failures = Vec::new();
    for (i, (text, line, needle)) in bad_files().iter().enumerate() {
        let f = dir.join(format!("bad-{i}.toml"));
        std::fs::write(&f, text).unwrap();
        let out = std::process::Command::new(bin)
            .arg("check")
            .arg(&f)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("line {line}: error: ");
        let hit = err.lines().any(|l| l.contains(&want) && l.contains(needle));
        if out.status.code() != Some(2) || !hit || !out.stdout.is_empty() {
            failures.push(format!(
                "case {i}: status {:?}, wanted `{want}...{needle}` in:\n{err}",
                out.status.code()
            ));
        }
    }
    for good in ["tests/policies/example.toml", "../packaging/policy.toml"] {
        let out = std::process::Command::new(bin)
            .arg("check")
            .arg(good)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{good}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    }
    let missing = std::process::Command::new(bin)
        .args(["check", "/nonexistent/policy.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr)
        .starts_with("error: cannot read /nonexistent/policy.toml"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn all_problems_are_reported_not_just_the_first() {
    let text = "\
allow = [\"10.0.0.0/8\", \"300.0.0.0/8\"]

[defaults]
rate = 0
colour = \"blue\"

[[rule]]
name = \"dns\"
protocol = \"udp\"
syn_only = true
rate = 5
burst = 10
";
    let problems = policy::parse(text).unwrap_err();
    let errors: Vec<&Problem> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .collect();
    assert_eq!(errors.len(), 4, "{}", render(&problems));
    let lines: Vec<usize> = errors.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![1, 4, 5, 10], "sorted by line");
    assert!(errors[0].message.contains("300.0.0.0/8"));
    assert!(errors[1].message.contains("rate = 0"));
    assert!(errors[2].message.contains("colour"));
    assert!(errors[3].message.contains("syn_only"));
}

#[test]
fn three_distinct_errors_are_all_reported() {
    let text = "[defaults]\nrate = 0\nmode = \"loud\"\n\n[flood]\nnew_sources_burst = 0\n";
    let problems = policy::parse(text).unwrap_err();
    assert_eq!(problems.len(), 3, "{}", render(&problems));
    assert_eq!(
        problems.iter().map(|p| p.line).collect::<Vec<_>>(),
        vec![2, 3, 6]
    );
    assert!(problems.iter().all(|p| p.severity == Severity::Error));
}

#[test]
fn problems_display_with_line_and_severity() {
    let problems = policy::parse("\n\n\n[defaults]\nrate = 0\n").unwrap_err();
    assert_eq!(
        problems[0].to_string(),
        "line 5: error: [defaults] rate = 0: must be an integer from 1 to 1000000000"
    );
    let (_, warnings) = ok("\n\nallow = [\"10.0.0.1/8\"]\n");
    assert_eq!(
        warnings[0].to_string(),
        "line 3: warning: allow \"10.0.0.1/8\" has host bits set; it is read as 10.0.0.0/8"
    );
}

#[test]
fn the_contract_example_parses_to_the_expected_policy() {
    let (p, warnings) = ok(EXAMPLE);
    assert!(warnings.is_empty(), "{}", render(&warnings));
    assert_eq!(p.allow, vec![net("192.0.2.0/24")]);
    assert_eq!(
        p.block,
        vec![net("203.0.113.0/24"), net("2001:db8:bad::/48")]
    );
    assert_eq!(
        p.defaults,
        Defaults {
            rate: 100,
            burst: 200,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            monitor: false
        }
    );
    assert_eq!(
        p.limits,
        vec![LimitClass {
            cidr: net("198.51.100.0/24"),
            rate: 1000,
            burst: 2000
        }]
    );
    assert_eq!(
        p.rules,
        vec![Rule {
            name: "ssh-syn".into(),
            protocol: Protocol::Tcp,
            dst_port: Some((22, 22)),
            syn_only: true,
            rate: 5,
            burst: 10
        }]
    );
    assert_eq!(
        p.flood,
        Flood {
            new_sources_rate: 100_000,
            new_sources_burst: 200_000
        }
    );
    assert_eq!(
        p.autoban,
        Some(Autoban {
            drops: 1000,
            window: Duration::from_secs(10),
            ban: Duration::from_secs(600),
            max_ban: Duration::from_secs(86_400),
        })
    );
}

#[test]
fn an_empty_file_is_the_default_policy() {
    for text in ["", "\n\n", "# nothing here\n   \n"] {
        let (p, w) = ok(text);
        assert!(w.is_empty());
        assert_eq!(p, Policy::default());
    }
    let d = Policy::default();
    assert_eq!((d.defaults.rate, d.defaults.burst), (100, 200));
    assert_eq!((d.defaults.ipv4_prefix, d.defaults.ipv6_prefix), (32, 64));
    assert!(!d.defaults.monitor);
    assert_eq!(
        (d.flood.new_sources_rate, d.flood.new_sources_burst),
        (100_000, 200_000)
    );
    assert!(d.autoban.is_none() && d.allow.is_empty() && d.rules.is_empty());
}

#[test]
fn partial_tables_keep_the_other_defaults() {
    let (p, _) = ok("[defaults]\nrate = 7\nmode = \"monitor\"\n[flood]\nnew_sources_rate = 50\n");
    assert_eq!(p.defaults.rate, 7);
    assert_eq!(p.defaults.burst, 200);
    assert!(p.defaults.monitor);
    assert_eq!(p.flood.new_sources_rate, 50);
    assert_eq!(p.flood.new_sources_burst, 200_000);
}

#[test]
fn bare_addresses_are_host_prefixes() {
    let (p, w) = ok("allow = [\"203.0.113.7\", \"2001:db8::1\"]\n[[limit]]\ncidr = \"198.51.100.9\"\nrate = 1\nburst = 1\n");
    assert!(w.is_empty(), "{}", render(&w));
    assert_eq!(p.allow, vec![net("203.0.113.7/32"), net("2001:db8::1/128")]);
    assert_eq!(p.limits[0].cidr, net("198.51.100.9/32"));
}

#[test]
fn ipv6_everywhere() {
    let (p, w) = ok(r#"
allow = ["2001:db8:1::/48"]
block = ["2001:db8:bad::/48", "::1"]
[defaults]
ipv6_prefix = 56
[[limit]]
cidr = "2001:db8:2::/64"
rate = 10
burst = 20
"#);
    assert!(w.is_empty(), "{}", render(&w));
    assert_eq!(p.block[1], net("::1/128"));
    assert_eq!(p.defaults.ipv6_prefix, 56);
    assert_eq!(p.limits[0].cidr, net("2001:db8:2::/64"));
}

#[test]
fn port_ranges_and_protocols() {
    let (p, w) = ok(r#"
[[rule]]
name = "web"
protocol = "tcp"
dst_port = "8000-8080"
rate = 50
burst = 100
[[rule]]
name = "dns"
protocol = "udp"
dst_port = "53"
rate = 20
burst = 40
[[rule]]
name = "ping"
protocol = "icmp"
rate = 1
burst = 5
[[rule]]
name = "everything"
rate = 1000
burst = 2000
"#);
    assert!(w.is_empty(), "{}", render(&w));
    type Row<'a> = (&'a str, Protocol, Option<(u16, u16)>);
    let r: Vec<Row> = p
        .rules
        .iter()
        .map(|r| (r.name.as_str(), r.protocol, r.dst_port))
        .collect();
    assert_eq!(
        r,
        vec![
            ("web", Protocol::Tcp, Some((8000, 8080))),
            ("dns", Protocol::Udp, Some((53, 53))),
            ("ping", Protocol::Icmp, None),
            ("everything", Protocol::Any, None),
        ]
    );
    assert!(p.rules.iter().all(|r| !r.syn_only));
    assert_eq!(Protocol::Tcp.number(), 6);
    assert_eq!(Protocol::Udp.number(), 17);
    assert_eq!(Protocol::Icmp.number(), 1);
    assert_eq!(Protocol::Any.number(), 0);
    assert!(Protocol::Icmp.matches(1) && Protocol::Icmp.matches(58));
    assert!(!Protocol::Icmp.matches(6));
    assert!(Protocol::Any.matches(132) && Protocol::Tcp.matches(6) && !Protocol::Udp.matches(6));
}

#[test]
fn exactly_max_rules_is_fine() {
    let (p, _) = ok(&many_rules(32));
    assert_eq!(p.rules.len(), 32);
    assert_eq!(p.rules[31].name, "r32");
}

#[test]
fn host_bits_are_a_warning_and_the_value_is_normalized() {
    let text =
        "allow = [\"10.0.0.1/8\"]\n[[limit]]\ncidr = \"2001:db8::5/64\"\nrate = 1\nburst = 1\n";
    let (p, w) = ok(text);
    assert_eq!(p.allow, vec![net("10.0.0.0/8")]);
    assert_eq!(p.limits[0].cidr, net("2001:db8::/64"));
    assert_eq!(w.len(), 2, "{}", render(&w));
    assert!(w.iter().all(|p| p.severity == Severity::Warning));
    assert_eq!((w[0].line, w[1].line), (1, 3));
    assert!(w[0].message.contains("10.0.0.1/8") && w[0].message.contains("10.0.0.0/8"));
}

#[test]
fn the_same_cidr_in_allow_and_block_is_a_warning() {
    let (p, w) = ok("allow = [\"192.0.2.0/24\"]\nblock = [\"192.0.2.0/24\"]\n");
    assert_eq!(p.allow, p.block);
    assert_eq!(w.len(), 1, "{}", render(&w));
    assert_eq!(w[0].line, 2);
    assert_eq!(w[0].severity, Severity::Warning);
    assert!(w[0].message.contains("192.0.2.0/24") && w[0].message.contains("allow"));
}

#[test]
fn warnings_come_with_the_errors_when_the_file_is_rejected() {
    let problems = policy::parse("allow = [\"10.0.0.1/8\"]\n[defaults]\nrate = 0\n").unwrap_err();
    assert_eq!(problems.len(), 2, "{}", render(&problems));
    assert_eq!(problems[0].severity, Severity::Warning);
    assert_eq!(problems[1].severity, Severity::Error);
}

#[test]
fn inline_tables_are_accepted_too() {
    let (p, w) = ok("defaults = { rate = 3, burst = 4 }\nlimit = [{ cidr = \"10.0.0.0/8\", rate = 1, burst = 2 }]\n");
    assert!(w.is_empty(), "{}", render(&w));
    assert_eq!((p.defaults.rate, p.defaults.burst), (3, 4));
    assert_eq!(p.limits.len(), 1);
    let e = policy::parse("defaults = { rate = 0 }\n").unwrap_err();
    assert_eq!(e[0].line, 1);
}

#[test]
fn load_reads_files_and_reports_io_errors() {
    let dir = std::env::temp_dir().join(format!("policy-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, EXAMPLE).unwrap();
    let (p, _) = policy::load(&good).unwrap().unwrap();
    assert_eq!(p.rules.len(), 1);
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[defaults]\nrate = 0\n").unwrap();
    assert_eq!(policy::load(&bad).unwrap().unwrap_err()[0].line, 2);
    assert!(policy::load(&dir.join("missing.toml")).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fixture_files_check_as_expected() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policies");
    let (p, _) = policy::load(&dir.join("example.toml")).unwrap().unwrap();
    assert_eq!(p, ok(EXAMPLE).0);
    let problems = policy::load(&dir.join("three-errors.toml"))
        .unwrap()
        .unwrap_err();
    assert_eq!(problems.len(), 3, "{}", render(&problems));
}

/// A line-level mutation of the example: delete, duplicate, truncate or
/// replace a line, or splice in a fragment.
fn mutate(text: &str, ops: &[(u8, usize, usize)]) -> String {
    const FRAGMENTS: &[&str] = &[
        "",
        "=",
        "[",
        "]",
        "[[",
        "]]",
        "\"",
        "'''",
        "0",
        "-1",
        "99999999999999999999",
        "1e400",
        "\"1-\"",
        "\"65535-1\"",
        "[defaults]",
        "[[rule]]",
        "[[limit]]",
        "[autoban]",
        "{",
        "}",
        "rate = 0",
        "cidr = \"::/0\"",
        "dst_port = \"0-0\"",
        "window = \"999999999999d\"",
        "ban = \"1ns\"",
        "\u{0}",
        "é",
        "\u{feff}",
        "allow = [1, \"x\", []]",
        "inf",
        "nan",
        "protocol = \"ICMP\"",
        "name = \"ssh-syn\"",
        "a.b.c = 1",
        "defaults.rate = 5",
    ];
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for &(op, at, arg) in ops {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let i = at % lines.len();
        let frag = FRAGMENTS[arg % FRAGMENTS.len()];
        match op % 6 {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                let l = &lines[i];
                let cut = l
                    .char_indices()
                    .map(|(c, _)| c)
                    .nth(arg % (l.len() + 1))
                    .unwrap_or(l.len());
                lines[i] = l[..cut].to_string();
            }
            3 => lines[i] = frag.to_string(),
            4 => lines.insert(i, frag.to_string()),
            _ => {
                let l = &lines[i];
                let cut = l
                    .char_indices()
                    .map(|(c, _)| c)
                    .nth(arg % (l.len() + 1))
                    .unwrap_or(l.len());
                lines[i] = format!("{}{}{}", &l[..cut], frag, &l[cut..]);
            }
        }
    }
    lines.join("\n")
}

/// Whatever the outcome, it is well-formed: errors only on rejection,
/// lines within the file, sorted.
fn check_outcome(text: &str) {
    let n_lines = text.split('\n').count().max(1);
    match policy::parse(text) {
        Ok((p, warnings)) => {
            assert!(warnings.iter().all(|w| w.severity == Severity::Warning));
            assert!(warnings.iter().all(|w| w.line <= n_lines));
            assert!(p.rules.len() <= 32);
            for r in &p.rules {
                if let Some((a, b)) = r.dst_port {
                    assert!(a >= 1 && a <= b);
                    assert!(matches!(r.protocol, Protocol::Tcp | Protocol::Udp));
                }
            }
            for net in p.allow.iter().chain(&p.block) {
                assert_eq!(*net, net.trunc());
            }
        }
        Err(problems) => {
            assert!(problems.iter().any(|p| p.severity == Severity::Error));
            assert!(problems.iter().all(|p| p.line <= n_lines), "{problems:?}");
            assert!(problems.windows(2).all(|w| w[0].line <= w[1].line));
            assert!(problems.iter().all(|p| !p.to_string().is_empty()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_on_arbitrary_text(text in "\\PC*") {
        check_outcome(&text);
    }

    #[test]
    fn never_panics_on_toml_ish_text(text in "[\\[\\]={}\",.a-z0-9_ \\n/:#-]{0,200}") {
        check_outcome(&text);
    }

    #[test]
    fn never_panics_on_mutations_of_the_example(
        ops in proptest::collection::vec((0u8..6, 0usize..64, 0usize..512), 1..8)
    ) {
        check_outcome(&mutate(EXAMPLE, &ops));
    }

    #[test]
    fn any_valid_address_is_accepted_as_allow(addr in any::<IpAddr>(), len in 0u8..=128) {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len % (max + 1);
        let text = format!("allow = [\"{addr}/{len}\"]\n");
        let (p, _) = policy::parse(&text).unwrap();
        prop_assert_eq!(p.allow, vec![IpNet::new(addr, len).unwrap().trunc()]);
    }
}

#[test]
fn whole_address_space_and_repeated_entries_are_warnings() {
    let (p, w) =
        ok("allow = [\"0.0.0.0/0\"]\nblock = [\"::/0\", \"10.0.0.0/8\", \"10.0.0.7/8\"]\n");
    assert_eq!(p.block, vec![net("::/0"), net("10.0.0.0/8")], "listed once");
    let lines: Vec<(usize, Severity)> = w.iter().map(|p| (p.line, p.severity)).collect();
    assert_eq!(lines.len(), 4, "{}", render(&w));
    assert!(lines.iter().all(|(_, s)| *s == Severity::Warning));
    assert!(w[0].message.contains("every IPv4 source"));
    assert!(render(&w).contains("already listed at line 2"));
}

#[test]
fn the_contract_crowdsec_section_parses() {
    let (p, warnings) = ok(
        r#"[crowdsec]          # optional: a CrowdSec bouncer (decisions in) and watcher (our bans out)
lapi_url = "http://127.0.0.1:8080"
api_key_file = "/etc/firewall/crowdsec.key"   # bouncer key (`cscli bouncers add`)
poll = "2s"
push = true                 # send our auto-bans as alerts (needs the watcher login below)
machine_id = "gw-eu-1"
password_file = "/etc/firewall/crowdsec.password"
"#,
    );
    let c = p.crowdsec.expect("[crowdsec]");
    assert_eq!(c.lapi_url, "http://127.0.0.1:8080");
    assert_eq!(
        c.api_key_file,
        std::path::PathBuf::from("/etc/firewall/crowdsec.key")
    );
    assert_eq!(c.poll, Duration::from_secs(2));
    assert!(c.push);
    assert_eq!(c.machine_id.as_deref(), Some("gw-eu-1"));
    // The secret files do not exist here: warnings, not errors.
    assert!(warnings.iter().all(|w| w.severity == Severity::Warning));
    assert!(
        warnings
            .iter()
            .any(|w| w.line == 3 && w.message.contains("cannot read it yet")),
        "{warnings:?}"
    );
    // Optional keys take their defaults; a trailing slash is dropped.
    let (p, _) = ok("[crowdsec]\nlapi_url = \"http://[::1]:8080/\"\napi_key_file = \"/k\"\n");
    let c = p.crowdsec.unwrap();
    assert_eq!(c.lapi_url, "http://[::1]:8080");
    assert_eq!(c.poll, Duration::from_secs(10));
    assert!(!c.push && c.machine_id.is_none() && c.password_file.is_none());
}

/// The lists must fit the maps this file's `[table]` sizes, not the
/// default size: fewer fit a smaller table, more fit a larger one.
#[test]
fn lists_are_checked_against_the_files_own_table_size() {
    let hosts = |n: u32| {
        (0..n)
            .map(|i| format!("\"10.{}.{}.{}\"", i >> 16, (i >> 8) & 255, i & 255))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!("block = [{}]\n[table]\nmax_list_entries = 16\n", hosts(20));
    let problems = policy::parse(&text).expect_err("20 entries in a table of 16");
    let msg = render(&problems);
    assert!(
        msg.contains("line 1: error: block has 20 IPv4 entries; at most 16 fit (raise [table] max_list_entries)"),
        "{msg}"
    );
    let (p, _) = ok(&format!(
        "block = [{}]\n[table]\nmax_list_entries = 20\n",
        hosts(20)
    ));
    assert_eq!(p.block.len(), 20);
    // Above the default capacity: accepted when the table is made larger.
    let over_default = LIST_CAPACITY + 1;
    let text = format!("allow = [{}]\n", hosts(over_default));
    let problems = policy::parse(&text).expect_err("more than the default capacity");
    assert!(
        render(&problems).contains("at most 262144 fit"),
        "{}",
        render(&problems)
    );
    let (p, _) = ok(&format!("{text}[table]\nmax_list_entries = 524288\n"));
    assert_eq!(p.allow.len(), over_default as usize);
}
