//! Policy files the bench generates, and the addresses its packets use.
//!
//! Address plan (none of the measured sources falls in an entry by accident):
//! - block entries: IPv4 in 20.0.0.0/8 (/32 and /24), IPv6 in 2001:db8:b000::/36
//! - allow entries: IPv4 in 30.0.0.0/8 (/32 and /28), IPv6 in 2001:db8:a000::/36
//! - `[[limit]]` classes: IPv4 /24s in 40.0.0.0/8, IPv6 /48s in 2001:db8:c000::/36
//! - measured sources: 198.18.0.0/15 (known), 100.64.0.0/10 (new),
//!   2001:db8:100::/48 (IPv6 known)

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Source of the "known" IPv4 paths.
pub const KNOWN_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const KNOWN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
/// Inside the first allow entry / the first block entry of either policy.
pub const ALLOWED_V4: Ipv4Addr = Ipv4Addr::new(30, 0, 0, 5);
pub const BLOCKED_V4: Ipv4Addr = Ipv4Addr::new(20, 0, 0, 9);
/// Exact-host entries (/32) of either policy: the second entry of each list
/// in the large one (most of an imported list and every auto-ban is one).
pub const ALLOWED_HOST_V4: Ipv4Addr = Ipv4Addr::new(30, 0, 1, 5);
pub const BLOCKED_HOST_V4: Ipv4Addr = Ipv4Addr::new(20, 0, 1, 77);
/// New sources: 100.64.0.0 + i.
pub const NEW_BASE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);

/// Rates high enough that a source stays within them for a whole
/// BPF_PROG_TEST_RUN repeat (1e9 pps is the arithmetic's maximum).
pub const HIGH_RATE: u64 = 1_000_000_000;

/// How big the lists are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// No lists, except an allow and a block prefix and host (the
    /// allow/block paths need them), no classes, no rules.
    Empty,
    /// 10,000 block entries, 1,000 allow entries, 100 `[[limit]]` classes
    /// and 10 `[[rule]]`s.
    Large,
}

impl Size {
    pub fn name(self) -> &'static str {
        match self {
            Size::Empty => "empty",
            Size::Large => "large",
        }
    }
}

/// `n` block entries: 80 % IPv4 (alternating /32 and /24 in 20.0.0.0/8),
/// 20 % IPv6 (/48 in 2001:db8:b000::/36). The first entry is 20.0.0.0/24.
pub fn block_entries(n: usize, v6_share: f64, salt: u32) -> Vec<String> {
    let n6 = (n as f64 * v6_share) as usize;
    let n4 = n - n6;
    let mut out = Vec::with_capacity(n);
    for i in 0..n4 as u32 {
        // Spread over 20.0.0.0/8 (and beyond for large n) without repeats:
        // entry i covers its own /24.
        let net = (20u32 << 24) + ((i + salt) << 8);
        let a = Ipv4Addr::from(net);
        if i % 2 == 0 {
            out.push(format!("{a}/24"));
        } else {
            out.push(format!("{}/32", Ipv4Addr::from(net | 77)));
        }
    }
    for i in 0..n6 as u32 {
        let j = i + salt;
        out.push(format!(
            "2001:db8:b{:03x}:{:x}::/64",
            (j >> 16) & 0xfff,
            j & 0xffff
        ));
    }
    out
}

fn allow_entries(n: usize) -> Vec<String> {
    let n6 = n / 10;
    let mut out = Vec::with_capacity(n);
    for i in 0..(n - n6) as u32 {
        let net = (30u32 << 24) + (i << 8);
        if i % 2 == 0 {
            out.push(format!("{}/28", Ipv4Addr::from(net)));
        } else {
            out.push(format!("{}/32", Ipv4Addr::from(net | 5)));
        }
    }
    for i in 0..n6 as u32 {
        out.push(format!("2001:db8:a{:03x}:{:x}::/64", i >> 16, i & 0xffff));
    }
    out
}

fn list(key: &str, entries: &[String], out: &mut String) {
    let _ = write!(out, "{key} = [");
    for (i, e) in entries.iter().enumerate() {
        if i % 8 == 0 {
            out.push_str("\n  ");
        }
        let _ = write!(out, "\"{e}\", ");
    }
    out.push_str("\n]\n");
}

/// A policy for the per-packet measurements: `size` lists, default limit
/// `rate`/`burst`, and a flood budget that admits every new source.
pub fn micro(size: Size, rate: u64, burst: u64) -> String {
    let mut s = String::new();
    let (allow, block) = match size {
        Size::Empty => (
            vec!["30.0.0.0/28".to_string(), format!("{ALLOWED_HOST_V4}/32")],
            vec!["20.0.0.0/24".into(), format!("{BLOCKED_HOST_V4}/32")],
        ),
        Size::Large => (allow_entries(1_000), block_entries(10_000, 0.2, 0)),
    };
    list("allow", &allow, &mut s);
    list("block", &block, &mut s);
    let _ = write!(
        s,
        "\n[defaults]\nrate = {rate}\nburst = {burst}\n\n[flood]\nnew_sources_rate = {HIGH_RATE}\nnew_sources_burst = {HIGH_RATE}\n"
    );
    if size == Size::Large {
        for i in 0..90u32 {
            let net = Ipv4Addr::from((40u32 << 24) + (i << 8));
            let _ = write!(
                s,
                "\n[[limit]]\ncidr = \"{net}/24\"\nrate = {HIGH_RATE}\nburst = {HIGH_RATE}\n"
            );
        }
        for i in 0..10u32 {
            let _ = write!(
                s,
                "\n[[limit]]\ncidr = \"2001:db8:c{i:03x}::/48\"\nrate = {HIGH_RATE}\nburst = {HIGH_RATE}\n"
            );
        }
        // Ten service rules; the measured UDP packets (port 9) match none:
        // the port prefilter lets them skip the rule loop.
        let rules: [(&str, &str, Option<&str>, bool); 10] = [
            ("ssh-syn", "tcp", Some("22"), true),
            ("http", "tcp", Some("80"), false),
            ("https", "tcp", Some("443"), false),
            ("smtp", "tcp", Some("25"), false),
            ("rdp-syn", "tcp", Some("3389"), true),
            ("alt-http", "tcp", Some("\"8000-8100\""), false),
            ("dns", "udp", Some("53"), false),
            ("ntp", "udp", Some("123"), false),
            ("snmp", "udp", Some("\"161-162\""), false),
            ("icmp", "icmp", None, false),
        ];
        for (name, proto, port, syn) in rules {
            let _ = write!(s, "\n[[rule]]\nname = \"{name}\"\nprotocol = \"{proto}\"\n");
            if let Some(p) = port {
                let _ = writeln!(s, "dst_port = {p}");
            }
            if syn {
                s.push_str("syn_only = true\n");
            }
            let _ = write!(s, "rate = {HIGH_RATE}\nburst = {HIGH_RATE}\n");
        }
    }
    s
}

/// The live-traffic policy: every contender gets the same per-source limit
/// and the same one blocked address.
pub const LIVE_RATE: u64 = 100;
pub const LIVE_BURST: u64 = 200;
pub const LIVE_BLOCKED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

pub fn live() -> String {
    format!(
        "block = [\"{LIVE_BLOCKED}\"]\n\n[defaults]\nrate = {LIVE_RATE}\nburst = {LIVE_BURST}\n"
    )
}

/// The scale runs' policy: like [`live`], with a limit every source of a
/// spoofed flood exceeds (1 packet/s, burst 1), so that what is measured is
/// the firewall's drop path with many distinct sources, not the stack.
pub const SCALE_RATE: u64 = 1;
pub const SCALE_BURST: u64 = 1;

pub fn scale() -> String {
    format!(
        "block = [\"{LIVE_BLOCKED}\"]\n\n[defaults]\nrate = {SCALE_RATE}\nburst = {SCALE_BURST}\n"
    )
}

/// A reload target: `n` block entries (distinct per `salt`), live limits.
pub fn reload(n: usize, salt: u32) -> String {
    let mut s = String::new();
    list("block", &block_entries(n, 0.2, salt), &mut s);
    let _ = write!(
        s,
        "\n[defaults]\nrate = {LIVE_RATE}\nburst = {LIVE_BURST}\n"
    );
    s
}

/// A policy file with `n` allow and `n` block entries (eight a line), for
/// `firewall check` at scale.
pub fn large_lists(n: usize) -> String {
    let mut s = String::new();
    list("allow", &allow_entries(n), &mut s);
    list("block", &block_entries(n, 0.2, 0), &mut s);
    s
}

/// `n` distinct CIDRs, one a line, Spamhaus-DROP style with comments.
pub fn import_file(n: usize, salt: u32) -> String {
    let mut s = String::from("; generated by the bench\n# one CIDR a line\n");
    for i in 0..n as u32 {
        // 50.0.0.0 onwards: /32 and /24 mixed, all distinct.
        let j = i + salt;
        let net = (50u32 << 24) + (j << 8);
        if i % 3 == 0 {
            let _ = writeln!(s, "{}/24 ; SBL{j}", Ipv4Addr::from(net));
        } else {
            let _ = writeln!(s, "{}", Ipv4Addr::from(net | 9));
        }
    }
    s
}
