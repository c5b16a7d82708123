//! Hostile input to every parser an operator's text reaches: the command
//! line (clap), CIDRs, block-list imports, TTLs, rate/burst pairs and the
//! policy file. None may panic; a rejection is an `Err` whose message names
//! the bad value. `policy_check.rs` already throws arbitrary text and
//! line-level mutations of the contract's example at `policy::parse`; here
//! it gets structured documents (every table, every key, values of every
//! type around every bound), checked for what an accepted policy must
//! satisfy to be applied, and metamorphic variants (comments, blank lines).

use std::{ffi::OsString, net::IpAddr, os::unix::ffi::OsStringExt, time::Duration};

use clap::{error::ErrorKind, CommandFactory, Parser};
use firewall_common::{bucket::MAX_RATE, Limit};
use firewall_user::{
    addr,
    cli::Cli,
    clock::mono_ns,
    commands::{limits, lists},
    control::apply::per_cpu_share,
    policy::{self, Policy, Problem, Protocol, Severity},
    text,
};
use ipnet::IpNet;
use proptest::{prelude::*, sample::select};

// ---------------------------------------------------------------------------
// The command line

/// Every command path the CLI defines (and some it does not).
const PATHS: &[&[&str]] = &[
    &[],
    &["run"],
    &["status"],
    &["stats"],
    &["top"],
    &["block"],
    &["block", "add"],
    &["block", "del"],
    &["block", "list"],
    &["block", "import"],
    &["allow"],
    &["allow", "add"],
    &["allow", "del"],
    &["allow", "list"],
    &["limit"],
    &["limit", "set"],
    &["limit", "del"],
    &["limit", "list"],
    &["check"],
    &["detach"],
    &["help"],
    &["help", "block"],
    &["bogus"],
];

const WORDS: &[&str] = &[
    "run", "status", "stats", "top", "block", "allow", "limit", "check", "detach", "add", "del",
    "list", "import", "set", "help",
];

const FLAGS: &[&str] = &[
    "--pin-dir",
    "--iface",
    "--config",
    "--mode",
    "--metrics-addr",
    "--monitor",
    "--log-file",
    "--json",
    "--watch",
    "-n",
    "--ttl",
    "--comment",
    "--cidr",
    "--rate",
    "--burst",
    "--default",
    "--help",
    "-h",
    "--version",
    "-V",
    "--",
    "-",
    "---",
    "--iface=eth0",
    "--rate=",
    "-n5",
    "-nx",
    "--mode=tc",
    "--json=true",
    "--monitor=1",
    "--pin-dir=",
];

const VALUES: &[&str] = &[
    "eth0",
    "lo",
    "xdp",
    "xdp-generic",
    "tc",
    "XDP",
    "127.0.0.1:9477",
    "[::1]:9477",
    "0.0.0.0:0",
    "127.0.0.1",
    "127.0.0.1:99999",
    ":9477",
    "1.2.3.4",
    "203.0.113.0/24",
    "2001:db8::/48",
    "10.0.0.0/33",
    "10m",
    "0s",
    "2d",
    "1",
    "0",
    "-1",
    "18446744073709551615",
    "18446744073709551616",
    "1e3",
    "",
    "  ",
    "=",
    "/tmp/policy.toml",
    "/sys/fs/bpf/firewall",
    "ünïcödé",
    "🔥🔥",
    "\u{202e}evil",
    "a\nb",
    "\t",
    "\u{0}",
    "\u{feff}1.2.3.4",
];

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(WORDS).prop_map(String::from),
        5 => select(FLAGS).prop_map(String::from),
        4 => select(VALUES).prop_map(String::from),
        2 => any::<String>(),
        1 => "\\PC{0,16}",
        1 => (select(FLAGS), any::<String>()).prop_map(|(f, v)| format!("{f}={v}")),
    ]
}

fn argv() -> impl Strategy<Value = Vec<String>> {
    (select(PATHS), prop::collection::vec(token(), 0..10)).prop_map(|(path, rest)| {
        std::iter::once("firewall".to_string())
            .chain(path.iter().map(|s| s.to_string()))
            .chain(rest)
            .collect()
    })
}

/// Runs the parser; a panic fails the property, anything else is fine as
/// long as an error renders to a message.
fn parse_cli<I, T>(argv: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let r = Cli::try_parse_from(argv);
    if let Err(e) = &r {
        assert!(!e.to_string().is_empty(), "empty clap message for {e:?}");
    }
    r
}

#[test]
fn the_cli_definition_is_consistent() {
    // clap checks its own definition (conflicts, required args, ids) here;
    // in debug builds it would otherwise panic at the first parse.
    Cli::command().debug_assert();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn cli_never_panics_on_argument_vectors(argv in argv()) {
        let _ = parse_cli(&argv);
    }

    #[test]
    fn cli_never_panics_on_non_utf8_arguments(
        path in select(PATHS),
        raw in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..12),
                select(FLAGS).prop_map(|f| f.as_bytes().to_vec()),
                // Invalid UTF-8 glued to a flag.
                (select(FLAGS), prop::collection::vec(128u8..=255, 1..4)).prop_map(|(f, b)| {
                    let mut v = format!("{f}=").into_bytes();
                    v.extend(b);
                    v
                }),
            ],
            0..8,
        ),
    ) {
        let argv: Vec<OsString> = std::iter::once(OsString::from("firewall"))
            .chain(path.iter().map(OsString::from))
            .chain(raw.into_iter().map(OsString::from_vec))
            .collect();
        let _ = parse_cli(argv);
    }
}

/// A value that does not parse as what `flag` takes, and not a flag.
fn bad_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z_:.%\\[\\]/]{1,12}",
        "[0-9]{1,3}[a-z.:/]{1,4}[0-9]{0,3}",
        "\\PC{1,8}",
        Just("18446744073709551616".to_string()),
        Just("1e3".to_string()),
    ]
    .prop_filter("not a flag", |s| {
        !s.starts_with('-') && !s.trim().is_empty() && !s.contains('\u{0}')
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn cli_errors_name_the_bad_value(v in bad_value(), which in 0usize..6) {
        let argv: Vec<&str> = match which {
            0 => vec!["firewall", "limit", "set", "--rate", &v, "--burst", "1"],
            1 => vec!["firewall", "limit", "set", "--rate", "1", "--burst", &v],
            2 => vec!["firewall", "top", "-n", &v],
            3 => vec!["firewall", "stats", "--watch", &v],
            4 => vec!["firewall", "run", "--iface", "eth0", "--mode", &v],
            _ => vec!["firewall", "run", "--iface", "eth0", "--metrics-addr", &v],
        };
        // Some random strings are valid after all ("xdp", "[::]:0"...).
        if let Err(e) = parse_cli(&argv) {
            prop_assert!(
                matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation),
                "{:?}: {e}", e.kind()
            );
            prop_assert!(e.to_string().contains(v.as_str()), "message does not name {v:?}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------
// CIDRs

fn check_cidr(s: &str) -> Result<(), TestCaseError> {
    match addr::parse_cidr(s) {
        Ok((net, host_bits)) => {
            prop_assert_eq!(net, net.trunc());
            let max = if matches!(net, IpNet::V4(_)) { 32 } else { 128 };
            prop_assert!(net.prefix_len() <= max);
            // What it printed reads back as itself, host bits gone.
            prop_assert_eq!(addr::parse_cidr(&net.to_string()), Ok((net, false)));
            let _ = host_bits;
        }
        Err(e) => {
            let quoted = format!("'{}'", s.trim());
            prop_assert!(e.0.contains(&quoted), "{:?} does not name {}", e.0, quoted);
        }
    }
    Ok(())
}

/// A valid CIDR or address, as an operator would write it.
fn cidr_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<IpAddr>(), 0u8..=128).prop_map(|(a, l)| {
            let l = if a.is_ipv4() { l % 33 } else { l };
            format!("{a}/{l}")
        }),
        any::<IpAddr>().prop_map(|a| a.to_string()),
        select(
            &[
                "1.10.16.0/20",
                "2001:db8::/32",
                "::/0",
                "0.0.0.0/0",
                "::ffff:1.2.3.4/128",
                "fe80::1",
                "255.255.255.255",
            ][..]
        )
        .prop_map(String::from),
    ]
}

/// `s` with one to three character edits from a CIDR-ish alphabet.
fn mutate_text(s: String, edits: Vec<(u8, usize, char)>) -> String {
    let mut c: Vec<char> = s.chars().collect();
    for (op, at, ch) in edits {
        let i = if c.is_empty() { 0 } else { at % (c.len() + 1) };
        match op % 3 {
            0 => c.insert(i, ch),
            1 if i < c.len() => {
                c.remove(i);
            }
            _ if i < c.len() => c[i] = ch,
            _ => c.push(ch),
        }
    }
    c.into_iter().collect()
}

fn cidr_char() -> impl Strategy<Value = char> {
    prop_oneof![
        8 => select(&[
            '0', '1', '9', 'f', 'F', 'g', ':', '.', '/', '%', ' ', '\t', '-', '+', '[', ']', '#',
            ';', '\u{0}', '\u{feff}', '١', 'é',
        ][..]),
        1 => any::<char>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn parse_cidr_never_panics_on_arbitrary_text(s in any::<String>()) {
        check_cidr(&s)?;
    }

    #[test]
    fn parse_cidr_never_panics_on_cidr_like_text(s in "[0-9a-fA-F:./% \\t-]{0,48}") {
        check_cidr(&s)?;
    }

    #[test]
    fn parse_cidr_never_panics_on_mutated_cidrs(
        s in cidr_text(),
        edits in prop::collection::vec((any::<u8>(), any::<usize>(), cidr_char()), 1..4),
    ) {
        check_cidr(&mutate_text(s, edits))?;
    }

    #[test]
    fn parse_cidr_accepts_every_valid_prefix(a in any::<IpAddr>(), len in 0u8..=128, pad in "[ \\t]{0,3}") {
        let len = if a.is_ipv4() { len % 33 } else { len };
        let want = IpNet::new(a, len).unwrap();
        let (net, host_bits) = addr::parse_cidr(&format!("{pad}{a}/{len}{pad}")).unwrap();
        prop_assert_eq!(net, want.trunc());
        prop_assert_eq!(host_bits, want != want.trunc());
        let (bare, hb) = addr::parse_cidr(&a.to_string()).unwrap();
        prop_assert_eq!(bare, IpNet::from(a));
        prop_assert!(!hb);
    }
}

// ---------------------------------------------------------------------------
// Block-list imports (Spamhaus DROP format)

const DROP_LINES: &[&str] = &[
    "; Spamhaus DROP List 2024/05/01 - (c) 2024 The Spamhaus Project SLU",
    "; https://www.spamhaus.org/drop/drop.txt",
    "; Last-Modified: Wed, 01 May 2024 10:00:00 GMT",
    "; Expires: Wed, 01 May 2024 11:00:00 GMT",
    "1.10.16.0/20 ; SBL256894",
    "1.19.0.0/16 ; SBL434604",
    "2.56.192.0/22 ; SBL459831",
    "2001:db8:bad::/48 ; SBL1",
    "203.0.113.7",
    "# a comment",
    "",
    "   ",
    "\t198.51.100.0/24\t# tabbed",
    "10.0.0.1/8 ; host bits set",
    "192.0.2.0/24;no space",
    "2001:db8::1",
];

/// The lines of a DROP-like file and whether each holds a valid entry.
fn drop_file() -> impl Strategy<Value = (Vec<String>, bool)> {
    (
        prop::collection::vec(select(DROP_LINES).prop_map(String::from), 0..40),
        any::<bool>(),
    )
}

fn content_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let body = l.split(['#', ';']).next().unwrap_or("").trim();
            (!body.is_empty()).then_some((i + 1, body))
        })
        .collect()
}

fn check_import(text: &str) -> Result<(), TestCaseError> {
    let lines = content_lines(text);
    match lists::parse_import(text) {
        Ok(nets) => {
            prop_assert_eq!(nets.len(), lines.len());
            for (net, (_, body)) in nets.iter().zip(&lines) {
                prop_assert_eq!(Ok(*net), addr::parse_cidr(body).map(|(n, _)| n));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            let bad: Vec<&(usize, &str)> = lines
                .iter()
                .filter(|(_, b)| addr::parse_cidr(b).is_err())
                .collect();
            prop_assert!(!bad.is_empty(), "rejected, yet every line parses: {msg}");
            prop_assert!(
                msg.starts_with(&format!("{} bad line(s), nothing imported", bad.len())),
                "{msg}"
            );
            let (n, body) = bad[0];
            prop_assert!(
                msg.contains(&format!("line {n}: ")),
                "first bad line {n} not named: {msg}"
            );
            prop_assert!(msg.contains(body), "bad value {body:?} not named: {msg}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn import_never_panics_on_arbitrary_text(text in any::<String>()) {
        check_import(&text)?;
    }

    #[test]
    fn import_never_panics_on_line_soup(
        lines in prop::collection::vec(
            prop_oneof![
                3 => select(DROP_LINES).prop_map(String::from),
                1 => "[0-9a-f:./;# \\t\\r]{0,30}",
                1 => "\\PC{0,20}",
            ],
            0..30,
        ),
        crlf in any::<bool>(),
    ) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        check_import(&text)?;
    }

    #[test]
    fn import_never_panics_on_mutated_drop_files(
        (lines, crlf) in drop_file(),
        edits in prop::collection::vec((any::<u8>(), any::<usize>(), cidr_char()), 1..6),
    ) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        check_import(&mutate_text(text, edits))?;
    }

    #[test]
    fn an_unmutated_drop_file_loads_every_entry((lines, crlf) in drop_file()) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        let nets = lists::parse_import(&text).unwrap();
        prop_assert_eq!(nets.len(), content_lines(&text).len());
    }
}

#[test]
fn import_reports_at_most_twenty_bad_lines_and_counts_the_rest() {
    let text: String = (0..45).map(|i| format!("bad{i}\n1.2.3.0/24\n")).collect();
    let msg = lists::parse_import(&text).unwrap_err().to_string();
    assert!(msg.starts_with("45 bad line(s), nothing imported"), "{msg}");
    assert!(msg.contains("line 1: ") && msg.contains("'bad0'"), "{msg}");
    assert!(msg.contains("'bad19'") && !msg.contains("'bad20'"), "{msg}");
    assert!(msg.ends_with("... and 25 more"), "{msg}");
}

#[test]
fn import_of_a_hundred_thousand_lines_is_quick() {
    let mut text = String::from("; Spamhaus DROP List\n");
    for i in 0..100_000u32 {
        let [a, b, c, _] = (0x0a00_0000 + (i << 8)).to_be_bytes();
        text.push_str(&format!("{a}.{b}.{c}.0/24 ; SBL{i}\n"));
    }
    let t = std::time::Instant::now();
    let nets = lists::parse_import(&text).unwrap();
    assert_eq!(nets.len(), 100_000);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

// ---------------------------------------------------------------------------
// TTLs

fn check_ttl(t: &str) -> Result<(), TestCaseError> {
    match lists::parse_ttl(Some(t)) {
        Ok(Some(d)) => prop_assert!(!d.is_zero(), "{t:?} accepted as zero"),
        Ok(None) => prop_assert!(false, "Some({t:?}) parsed to None"),
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(
                msg.contains(&format!("'{t}'")),
                "{msg:?} does not name {t:?}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn parse_ttl_never_panics_on_arbitrary_text(t in any::<String>()) {
        check_ttl(&t)?;
    }

    #[test]
    fn parse_ttl_never_panics_on_duration_like_text(
        t in "([0-9]{0,24} ?(ns|us|ms|s|m|h|d|w|M|y|sec|min|hours?|days?|years?|x|)){0,3}"
    ) {
        check_ttl(&t)?;
    }

    #[test]
    fn parse_ttl_reads_humantime(n in 1u64..1_000_000, unit in 0usize..4) {
        let (suffix, secs) = [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)][unit];
        let got = lists::parse_ttl(Some(&format!("{n}{suffix}")));
        let want = Duration::from_secs(n * secs);
        if want <= firewall_user::clock::MAX_TTL {
            prop_assert_eq!(got.unwrap().unwrap(), want);
        } else {
            let e = got.unwrap_err().to_string();
            prop_assert!(e.contains(&format!("'{n}{suffix}'")) && e.contains("3650d"), "{}", e);
        }
    }
}

#[test]
fn parse_ttl_without_a_value_is_none_and_zero_is_rejected() {
    assert_eq!(lists::parse_ttl(None).unwrap(), None);
    for t in ["0s", "0", "", " ", "-5m", "10", "10 parsecs"] {
        let e = lists::parse_ttl(Some(t)).unwrap_err().to_string();
        assert!(e.contains(&format!("'{t}'")), "{e}");
    }
}

/// A block's expiry is `mono_ns() + ttl` in u64 nanoseconds (`lists::add`,
/// also used for autoban bans). A TTL that is accepted must fit, or the sum
/// wraps (release) or panics (debug): `--ttl 18446744073s` then makes an
/// entry that expired in the past, i.e. a block that never blocks, and a
/// policy's `ban = "18446744073s"` an autoban that never bans.
#[test]
fn accepted_ttls_and_bans_fit_the_nanosecond_expiry() {
    let now = mono_ns();
    let fits = |d: Duration| {
        now.checked_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .is_some()
    };
    let mut wrong = Vec::new();
    for t in ["18446744073s", "584y", "585y", "600y", "213504d"] {
        if let Ok(Some(d)) = lists::parse_ttl(Some(t)) {
            if !fits(d) {
                wrong.push(format!(
                    "--ttl {t} is accepted ({d:?}) but mono_ns() + ttl overflows u64"
                ));
            }
        }
    }
    for ban in ["18446744073s", "584y"] {
        let text = format!(
            "[autoban]\ndrops = 1\nwindow = \"1s\"\nban = \"{ban}\"\nmax_ban = \"{ban}\"\n"
        );
        if let Ok((p, _)) = policy::parse(&text) {
            let d = p.autoban.unwrap().ban;
            if !fits(d) {
                wrong.push(format!(
                    "[autoban] ban = \"{ban}\" is accepted ({d:?}) but mono_ns() + ban overflows u64"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------
// Rate and burst

fn rate_burst() -> impl Strategy<Value = (u64, u64)> {
    let edge = |x: u64| {
        prop_oneof![
            Just(x),
            Just(x.saturating_sub(1)),
            Just(x.saturating_add(1))
        ]
    };
    prop_oneof![
        (any::<u64>(), any::<u64>()),
        (0u64..2000, 0u64..200_000),
        (
            prop_oneof![
                edge(0),
                edge(1),
                edge(MAX_RATE),
                edge(u64::MAX),
                1u64..=MAX_RATE
            ],
            any::<u64>()
        ),
        (1u64..=MAX_RATE).prop_flat_map(move |r| {
            let m = Limit::max_burst(r);
            (Just(r), prop_oneof![edge(m), edge(0), edge(1), 0..=m])
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn checked_limits_never_panic((rate, burst) in rate_burst()) {
        match limits::checked(rate, burst) {
            Ok(l) => {
                prop_assert!((1..=MAX_RATE).contains(&rate));
                prop_assert!(burst >= 1 && burst <= Limit::max_burst(rate));
                prop_assert_eq!(l.burst(), burst);
                prop_assert!(l.rate() >= rate, "{} < {}", l.rate(), rate);
            }
            Err(e) => {
                let msg = e.to_string();
                let named = if rate == 0 || rate > MAX_RATE {
                    format!("--rate {rate}")
                } else {
                    format!("--burst {burst}")
                };
                prop_assert!(msg.contains(&named), "{msg:?} does not name {named}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Policy files: structured documents

const INTS: &[&str] = &[
    "0",
    "1",
    "2",
    "5",
    "-1",
    "32",
    "33",
    "64",
    "128",
    "129",
    "1000",
    "65535",
    "65536",
    "70368",
    "70369",
    "200000",
    "1000000000",
    "1000000001",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999",
    "1_000",
    "0x10",
    "0o7",
    "0b1",
    "+5",
    "1.5",
    "1e3",
    "inf",
    "nan",
    "-0",
];

const STRINGS: &[&str] = &[
    "\"\"",
    "\"10s\"",
    "\"0s\"",
    "\"1ns\"",
    "\"10m\"",
    "\"24h\"",
    "\"584y\"",
    "\"585y\"",
    "\"213503d\"",
    "\"99999999999999999999d\"",
    "\"10x\"",
    "\"1-2\"",
    "\"22\"",
    "\"0-0\"",
    "\"1000-2000\"",
    "\"2000-1000\"",
    "\"1-65536\"",
    "\"-\"",
    "\"tcp\"",
    "\"udp\"",
    "\"icmp\"",
    "\"any\"",
    "\"TCP\"",
    "\"sctp\"",
    "\"enforce\"",
    "\"monitor\"",
    "\"10.0.0.0/8\"",
    "\"10.0.0.1/8\"",
    "\"198.51.100.0/24\"",
    "\"2001:db8::/32\"",
    "\"::/0\"",
    "\"0.0.0.0/0\"",
    "\"10.0.0.0/33\"",
    "\"300.0.0.0/8\"",
    "\"example.com\"",
    "\"ssh\"",
    "\"dns\"",
    "\"a-rule-name-that-is-longer-than-thirty-two-bytes-1\"",
    "\"a-rule-name-that-is-longer-than-thirty-two-bytes-2\"",
    "\"ünïcödé\"",
    "\"\\u0000\"",
    "\"tab\\there\"",
    "'literal'",
    "\"\"\"multi\"\"\"",
];

const OTHERS: &[&str] = &[
    "true",
    "false",
    "[]",
    "[1, 2]",
    "[\"10.0.0.0/8\", \"2001:db8::/48\"]",
    "[\"10.0.0.0/8\", 5]",
    "[[\"10.0.0.0/8\"]]",
    "{}",
    "{ rate = 1 }",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    "1979-05-27",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(INTS).prop_map(String::from),
        4 => select(STRINGS).prop_map(String::from),
        2 => select(OTHERS).prop_map(String::from),
        1 => prop::collection::vec(select(STRINGS), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
    ]
}

const TABLES: &[(&str, &[&str])] = &[
    (
        "[defaults]",
        &["rate", "burst", "ipv4_prefix", "ipv6_prefix", "mode"],
    ),
    ("[[limit]]", &["cidr", "rate", "burst"]),
    (
        "[[rule]]",
        &["name", "protocol", "dst_port", "syn_only", "rate", "burst"],
    ),
    ("[flood]", &["new_sources_rate", "new_sources_burst"]),
    ("[autoban]", &["drops", "window", "ban", "max_ban"]),
    ("[limit]", &["cidr", "rate", "burst"]),
    ("[[defaults]]", &["rate"]),
    ("[firewall]", &["rate"]),
];

/// `key = value` lines for a table: mostly its own keys, sometimes a typo,
/// another table's key or a top-level key.
fn key_lines(keys: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        (
            prop_oneof![
                8 => select(keys),
                1 => select(&["rte", "allow", "block", "Rate", "dst-port", "name.x"][..]),
            ],
            value(),
        )
            .prop_map(|(k, v)| format!("{k} = {v}")),
        0..7,
    )
}

/// A policy document: top-level allow/block lines, then tables.
fn document() -> impl Strategy<Value = Vec<String>> {
    let top = prop::collection::vec(
        (select(&["allow", "block"][..]), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        0..3,
    );
    let table = (0..TABLES.len()).prop_flat_map(|i| {
        let (header, keys) = TABLES[i];
        key_lines(keys).prop_map(move |lines| {
            let mut t = vec![String::new(), header.to_string()];
            t.extend(lines);
            t
        })
    });
    (top, prop::collection::vec(table, 0..6)).prop_map(|(mut top, tables)| {
        for t in tables {
            top.extend(t);
        }
        top
    })
}

/// What an accepted policy must satisfy for `apply` (and the data plane)
/// to take it as it is.
fn check_accepted(p: &Policy, warnings: &[Problem], n_lines: usize) -> Result<(), TestCaseError> {
    prop_assert!(warnings
        .iter()
        .all(|w| w.severity == Severity::Warning && w.line <= n_lines));
    let d = &p.defaults;
    prop_assert!(
        Limit::new(d.rate, d.burst).is_ok(),
        "defaults {} / {}",
        d.rate,
        d.burst
    );
    prop_assert!((1..=32).contains(&d.ipv4_prefix) && (1..=128).contains(&d.ipv6_prefix));
    for l in &p.limits {
        prop_assert!(Limit::new(l.rate, l.burst).is_ok(), "limit {l:?}");
        prop_assert_eq!(l.cidr, l.cidr.trunc());
    }
    prop_assert!(p.rules.len() <= 32);
    for (i, r) in p.rules.iter().enumerate() {
        prop_assert!(Limit::new(r.rate, r.burst).is_ok(), "rule {r:?}");
        prop_assert!(!r.name.is_empty());
        prop_assert!(
            p.rules[..i].iter().all(|o| o.name != r.name),
            "duplicate rule name {}",
            r.name
        );
        if let Some((lo, hi)) = r.dst_port {
            prop_assert!(lo >= 1 && lo <= hi);
            prop_assert!(matches!(r.protocol, Protocol::Tcp | Protocol::Udp));
        }
        prop_assert!(!r.syn_only || r.protocol == Protocol::Tcp);
    }
    // apply gives every CPU its share of the flood budget.
    let f = &p.flood;
    for cpus in [
        1u64, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 96, 128, 256, 512, 1024,
    ] {
        let (r, b) = (
            per_cpu_share(f.new_sources_rate, cpus),
            per_cpu_share(f.new_sources_burst, cpus),
        );
        prop_assert!(
            Limit::new(r, b).is_ok(),
            "[flood] {f:?} on {cpus} CPUs: {r} / {b}"
        );
    }
    if let Some(a) = &p.autoban {
        prop_assert!(a.drops >= 1 && a.drops <= u32::MAX as u64);
        prop_assert!(!a.window.is_zero() && !a.ban.is_zero() && a.ban <= a.max_ban);
        prop_assert!(
            a.max_ban.as_nanos() <= u64::MAX as u128 && a.window.as_nanos() <= u64::MAX as u128
        );
    }
    for list in [&p.allow, &p.block] {
        for (i, n) in list.iter().enumerate() {
            prop_assert_eq!(*n, n.trunc());
            prop_assert!(!list[..i].contains(n), "{n} listed twice");
        }
    }
    Ok(())
}

/// What `policy::parse` returns.
type Parsed = Result<(Policy, Vec<Problem>), Vec<Problem>>;

fn check_policy(text: &str) -> Result<Parsed, TestCaseError> {
    let n_lines = text.split('\n').count().max(1);
    let r = policy::parse(text);
    match &r {
        Ok((p, w)) => check_accepted(p, w, n_lines)?,
        Err(problems) => {
            prop_assert!(
                problems.iter().any(Problem::is_error),
                "rejected without an error: {problems:?}"
            );
            prop_assert!(
                problems.iter().all(|p| p.line >= 1 && p.line <= n_lines),
                "{problems:?}"
            );
            prop_assert!(
                problems.windows(2).all(|w| w[0].line <= w[1].line),
                "{problems:?}"
            );
            prop_assert!(problems.iter().all(|p| !p.message.is_empty()));
        }
    }
    Ok(r)
}

fn error_lines(problems: &[Problem]) -> Vec<usize> {
    let mut v: Vec<usize> = problems
        .iter()
        .filter(|p| p.is_error())
        .map(|p| p.line)
        .collect();
    v.dedup();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn structured_policies_never_panic_and_accepted_ones_apply(doc in document()) {
        let _ = check_policy(&doc.join("\n"))?;
    }

    /// A trailing comment on every line changes nothing, and blank lines
    /// on top move every problem down by as many lines.
    #[test]
    fn comments_and_blank_lines_change_nothing_but_line_numbers(doc in document(), k in 1usize..4) {
        let text = doc.join("\n");
        let commented: String = doc.iter().map(|l| format!("{l}  # note\n")).collect();
        let shifted = format!("{}{text}", "\n".repeat(k));
        let a = check_policy(&text)?;
        let b = check_policy(&commented)?;
        let c = check_policy(&shifted)?;
        match (&a, &b, &c) {
            (Ok((pa, wa)), Ok((pb, _)), Ok((pc, wc))) => {
                prop_assert_eq!(pa, pb);
                prop_assert_eq!(pa, pc);
                let wl: Vec<usize> = wa.iter().map(|w| w.line + k).collect();
                prop_assert_eq!(wl, wc.iter().map(|w| w.line).collect::<Vec<_>>());
            }
            (Err(ea), Err(eb), Err(ec)) => {
                prop_assert_eq!(error_lines(ea), error_lines(eb), "\n{:?}\n{:?}", ea, eb);
                let shifted_lines: Vec<usize> = error_lines(ea).iter().map(|l| l + k).collect();
                prop_assert_eq!(shifted_lines, error_lines(ec));
            }
            _ => prop_assert!(false, "outcomes differ:\n{a:?}\n{b:?}\n{c:?}\n--- file ---\n{text}"),
        }
    }

    /// An invalid value for a known key is named with its key and line.
    #[test]
    fn a_bad_value_is_named_with_its_key_and_line(
        i in 0usize..5,
        k in 0usize..6,
        v in value(),
        pad in 0usize..3,
    ) {
        let (header, keys) = TABLES[i];
        let key = keys[k % keys.len()];
        let text = format!("{}{header}\n{key} = {v}\n", "\n".repeat(pad));
        if let Err(problems) = check_policy(&text)? {
            let line = pad + 2;
            // Missing-key errors sit on the header line; the value's own
            // error, if any, on its line, naming the key.
            let on_value: Vec<&Problem> = problems.iter().filter(|p| p.is_error() && p.line == line).collect();
            for p in on_value {
                prop_assert!(
                    p.message.contains(key) || p.message.contains("invalid TOML"),
                    "line {line} error does not name `{key}`: {p}\n--- file ---\n{text}"
                );
            }
        }
    }
}

/// Rule names live in a 32-byte, NUL-padded map slot that `firewall stats`
/// and the metrics read back and key their per-rule counters by. Two
/// accepted rules whose names agree on their first 32 bytes (or up to a NUL)
/// collapse into one there, and one rule's counters disappear.
#[test]
fn accepted_rule_names_stay_distinct_in_their_map_slot() {
    let long = "a-rule-name-that-is-longer-than-thirty-two-bytes";
    let cases = [
        (format!("{long}-1"), format!("{long}-2")),
        ("x\\u0000one".to_string(), "x\\u0000two".to_string()),
    ];
    let mut wrong = Vec::new();
    for (a, b) in cases {
        let text = format!(
            "[[rule]]\nname = \"{a}\"\nrate = 1\nburst = 1\n\n[[rule]]\nname = \"{b}\"\nrate = 2\nburst = 2\n"
        );
        if let Ok((p, _)) = policy::parse(&text) {
            let slots: Vec<String> = p
                .rules
                .iter()
                .map(|r| text::unfixed(&text::fixed(&r.name)))
                .collect();
            if slots[0] == slots[1] {
                wrong.push(format!(
                    "rules {:?} and {:?} are both accepted but both read back as {:?}",
                    p.rules[0].name, p.rules[1].name, slots[0]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
