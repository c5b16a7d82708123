//! The policy file: parsing and validation.
//!
//! serde reads the TOML text into the typed tables below (`File`,
//! `DefaultsFile`...), keeping the span of every key and value and keeping a
//! value of the wrong type instead of stopping at it (see `spanned`). A
//! semantic pass then checks ranges and the rules between keys and names
//! *every* problem with its line, the bad value and what would be valid. A
//! file that passes is normalized (CIDR host bits cleared, defaults filled
//! in) into a [`Policy`].

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use firewall_common::bucket::{Limit, LimitError, MAX_RATE};
use firewall_common::maps::{LIMIT_CAPACITY, LIST_CAPACITY, MAX_RULES, SOURCES_CAPACITY};
use ipnet::IpNet;
use serde::Deserialize;
use toml::{Spanned, Value};

use crate::addr::{parse_net, CIDR_EXAMPLES};
use spanned::{fields, Field, List, Many, Sec, Section, Val};

mod crowdsec_table;
pub mod fleet;
mod spanned;

/// Default per-source rate (packets per second).
pub const DEFAULT_RATE: u64 = 100;
/// Default per-source bucket depth (packets).
pub const DEFAULT_BURST: u64 = 200;
/// Default IPv4 aggregation prefix.
pub const DEFAULT_IPV4_PREFIX: u8 = 32;
/// Default IPv6 aggregation prefix.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
/// Default gateway-wide rate of never-seen source prefixes.
pub const DEFAULT_NEW_SOURCES_RATE: u64 = 100_000;
/// Default gateway-wide burst of never-seen source prefixes.
pub const DEFAULT_NEW_SOURCES_BURST: u64 = 200_000;
/// Default gateway-wide rate of SYN challenges: as many answers as a
/// flood of a million SYNs a second asks for (each answer is one small
/// frame, no state), and a bound on the backscatter beyond that.
pub const DEFAULT_SYN_CHALLENGE_RATE: u64 = 1_000_000;
pub const DEFAULT_SYN_CHALLENGE_BURST: u64 = 1_000_000;

/// A validated, normalized policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Allowlist, host bits cleared, duplicates removed, in file order.
    pub allow: Vec<IpNet>,
    /// Blocklist, host bits cleared, duplicates removed, in file order.
    pub block: Vec<IpNet>,
    pub defaults: Defaults,
    /// `[[limit]]` classes, in file order.
    pub limits: Vec<LimitClass>,
    /// `[[rule]]` entries, in file order (rule `i` is rule index `i`).
    pub rules: Vec<Rule>,
    pub flood: Flood,
    /// The `syn_challenge*` keys of `[flood]`.
    pub syn_challenge: SynChallenge,
    pub autoban: Option<Autoban>,
    pub table: Table,
    /// `[crowdsec]`: bouncer and watcher of a CrowdSec local API.
    pub crowdsec: Option<crate::crowdsec::Config>,
    /// `[fleet]`: entries shared with other gateways over NATS.
    pub fleet: Option<fleet::Fleet>,
}

/// `[table]`: sizes of the kernel tables, applied when the data plane is
/// loaded (a pinned data plane of another size is migrated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Table {
    pub max_sources: u32,
    pub max_list_entries: u32,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            max_sources: SOURCES_CAPACITY,
            max_list_entries: LIST_CAPACITY,
        }
    }
}

/// Bounds of `[table]`: below them a gateway forgets sources faster than a
/// token bucket can mean anything; above them one table costs gigabytes.
pub const TABLE_MIN_SOURCES: u32 = 1024;
pub const TABLE_MAX_SOURCES: u32 = 1 << 24;
pub const TABLE_MIN_LIST: u32 = 16;
pub const TABLE_MAX_LIST: u32 = 1 << 24;

impl Default for Policy {
    /// The policy in force when there is no file.
    fn default() -> Self {
        Policy {
            allow: Vec::new(),
            block: Vec::new(),
            defaults: Defaults::default(),
            limits: Vec::new(),
            rules: Vec::new(),
            flood: Flood::default(),
            syn_challenge: SynChallenge::default(),
            autoban: None,
            table: Table::default(),
            crowdsec: None,
            fleet: None,
        }
    }
}

/// `[defaults]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub rate: u64,
    pub burst: u64,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// `mode = "monitor"`.
    pub monitor: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
            ipv4_prefix: DEFAULT_IPV4_PREFIX,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            monitor: false,
        }
    }
}

/// A `[[limit]]` class: sources inside `cidr` get this limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitClass {
    /// Host bits cleared.
    pub cidr: IpNet,
    pub rate: u64,
    pub burst: u64,
}

/// The L4 protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Any,
}

impl Protocol {
    /// The IP protocol number (`Any` is 0, `Icmp` is IPv4 ICMP, 1).
    pub fn number(&self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::Any => 0,
        }
    }

    /// Whether a packet with this IP protocol number (IPv4 protocol or IPv6
    /// next header) matches; `Icmp` matches ICMP (1) and ICMPv6 (58).
    pub fn matches(&self, ip_proto: u8) -> bool {
        match self {
            Protocol::Tcp => ip_proto == 6,
            Protocol::Udp => ip_proto == 17,
            Protocol::Icmp => ip_proto == 1 || ip_proto == 58,
            Protocol::Any => true,
        }
    }

    /// The name used in the policy file.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Any => "any",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = ();
    /// Case-insensitive `tcp`, `udp`, `icmp` or `any`.
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "icmp" => Ok(Protocol::Icmp),
            "any" => Ok(Protocol::Any),
            _ => Err(()),
        }
    }
}

/// A `[[rule]]`: matching packets use their own per-source bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub protocol: Protocol,
    /// Inclusive destination port range; `None`: any port.
    pub dst_port: Option<(u16, u16)>,
    /// TCP only: count only SYN without ACK.
    pub syn_only: bool,
    pub rate: u64,
    pub burst: u64,
}

/// `[flood]`: the gateway-wide budget for never-seen source prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flood {
    pub new_sources_rate: u64,
    pub new_sources_burst: u64,
}

impl Default for Flood {
    fn default() -> Self {
        Flood {
            new_sources_rate: DEFAULT_NEW_SOURCES_RATE,
            new_sources_burst: DEFAULT_NEW_SOURCES_BURST,
        }
    }
}

/// `[flood] syn_challenge*`: a TCP SYN the new-source budget refuses is
/// answered with a challenge (a SYN-ACK carrying a cookie) instead of being
/// dropped; a source that answers it is real and gets a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynChallenge {
    /// `syn_challenge`.
    pub enabled: bool,
    /// `syn_challenge_rate`, `syn_challenge_burst`: challenges sent per
    /// second for the whole gateway (the backscatter bound).
    pub rate: u64,
    pub burst: u64,
}

impl Default for SynChallenge {
    fn default() -> Self {
        SynChallenge {
            enabled: true,
            rate: DEFAULT_SYN_CHALLENGE_RATE,
            burst: DEFAULT_SYN_CHALLENGE_BURST,
        }
    }
}

/// `[autoban]`: repeat offenders go on the blocklist for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autoban {
    /// `rate_limited` drops by one source prefix ...
    pub drops: u64,
    /// ... within this window ...
    pub window: Duration,
    /// ... earn a ban this long, doubled on each repeat ...
    pub ban: Duration,
    /// ... up to this.
    pub max_ban: Duration,
}

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The file is rejected.
    Error,
    /// The file is accepted; the operator should look.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One thing wrong with a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, 0 if unknown.
    pub line: usize,
    pub message: String,
    pub severity: Severity,
}

impl Problem {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: {}: {}", self.line, self.severity, self.message)
        } else {
            write!(f, "{}: {}", self.severity, self.message)
        }
    }
}

/// What checking a policy file gives: the policy and its warnings, or every
/// problem (errors and warnings, sorted by line).
pub type Checked = Result<(Policy, Vec<Problem>), Vec<Problem>>;

/// Read and validate a policy file. I/O errors (missing file, not UTF-8)
/// are the outer `Err`; the inner result is [`parse`]'s.
pub fn load(path: &Path) -> anyhow::Result<Checked> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
    Ok(parse(&text))
}

/// Validate a policy file's text. `Ok` holds the policy and its warnings;
/// `Err` holds every error and warning, sorted by line.
pub fn parse(text: &str) -> Checked {
    let mut cx = Cx {
        text,
        problems: Vec::new(),
    };
    let policy = match toml::from_str::<Section<File>>(text) {
        Ok(file) => Some(cx.policy(file)),
        Err(e) => {
            let line = e.span().map_or(1, |s| cx.line(&s));
            let msg = e.message().trim().replace('\n', "; ");
            cx.error(line, format!("invalid TOML: {msg}"));
            None
        }
    };
    let mut problems = cx.problems;
    problems.sort_by_key(|p| p.line);
    match policy {
        Some(policy) if !problems.iter().any(Problem::is_error) => Ok((policy, problems)),
        _ => Err(problems),
    }
}

/// Every table of the policy file and the keys it takes, as the parser
/// reads them (`""` is the top level, `limit` and `rule` are arrays of
/// tables). Read from the types serde fills, so it cannot drift.
pub fn known_keys() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("", fields::<File>()),
        ("defaults", fields::<DefaultsFile>()),
        ("limit", fields::<LimitFile>()),
        ("rule", fields::<RuleFile>()),
        ("flood", fields::<FloodFile>()),
        ("table", fields::<TableFile>()),
        ("autoban", fields::<AutobanFile>()),
        ("crowdsec", fields::<crowdsec_table::File>()),
        ("fleet", fields::<fleet::File>()),
    ]
}

/// The file as serde reads it: every key optional, every value spanned.
#[derive(Deserialize)]
struct File {
    allow: Many<Val<String>>,
    block: Many<Val<String>>,
    defaults: Sec<DefaultsFile>,
    limit: Many<Section<LimitFile>>,
    rule: Many<Section<RuleFile>>,
    flood: Sec<FloodFile>,
    autoban: Sec<AutobanFile>,
    table: Sec<TableFile>,
    crowdsec: Sec<crowdsec_table::File>,
    fleet: Sec<fleet::File>,
}

#[derive(Deserialize)]
struct DefaultsFile {
    rate: Field<i64>,
    burst: Field<i64>,
    ipv4_prefix: Field<i64>,
    ipv6_prefix: Field<i64>,
    mode: Field<String>,
}

#[derive(Deserialize)]
struct LimitFile {
    cidr: Field<String>,
    rate: Field<i64>,
    burst: Field<i64>,
}

#[derive(Deserialize)]
struct RuleFile {
    name: Field<String>,
    protocol: Field<String>,
    dst_port: Field<Port>,
    syn_only: Field<bool>,
    rate: Field<i64>,
    burst: Field<i64>,
}

/// `dst_port`: `22` or `"1000-2000"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Port {
    One(i64),
    Range(String),
}

#[derive(Deserialize)]
struct FloodFile {
    new_sources_rate: Field<i64>,
    new_sources_burst: Field<i64>,
    syn_challenge: Field<bool>,
    syn_challenge_rate: Field<i64>,
    syn_challenge_burst: Field<i64>,
}

#[derive(Deserialize)]
struct TableFile {
    max_sources: Field<i64>,
    max_list_entries: Field<i64>,
}

#[derive(Deserialize)]
struct AutobanFile {
    drops: Field<i64>,
    window: Field<String>,
    ban: Field<String>,
    max_ban: Field<String>,
}

const TOP_LEVEL_HINT: &str =
    "top-level keys such as allow and block must come before the first [table]";
const DURATION_EXAMPLES: &str = "a duration such as \"30s\", \"10m\", \"1h\" or \"2d\"";
const PORT_VALID: &str =
    "a port from 1 to 65535 (dst_port = 22) or a range \"A-B\" with A <= B (dst_port = \"1000-2000\")";
const PROTOCOLS: &str = "one of \"tcp\", \"udp\", \"icmp\", \"any\"";
/// Rule names are stored in 32 bytes in the rules map.
const RULE_NAME_MAX: usize = 32;
/// Longest ban (see `clock::MAX_TTL`).
const MAX_DURATION: Duration = crate::clock::MAX_TTL;

/// A table that was read, with the line of its header (or first key).
struct View<'f, T> {
    line: usize,
    keys: &'f [(String, Range<usize>)],
    body: &'f T,
}

impl<T> View<'_, T> {
    fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == key)
    }
}

/// A rate/burst pair to check: each key with its value, if written, and
/// the default used when it is not (`None`: the key is required).
struct Pair<'f> {
    keys: (&'static str, &'static str),
    rate: (Option<&'f Spanned<Val<i64>>>, Option<u64>),
    burst: (Option<&'f Spanned<Val<i64>>>, Option<u64>),
}

/// The semantic pass: collects every problem of one file.
struct Cx<'t> {
    text: &'t str,
    problems: Vec<Problem>,
}

impl Cx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        1 + self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
    }

    fn at<T>(&self, s: &Spanned<T>) -> usize {
        self.line(&s.span())
    }

    fn error(&mut self, line: usize, message: String) {
        self.problems.push(Problem {
            line,
            message,
            severity: Severity::Error,
        });
    }

    fn warning(&mut self, line: usize, message: String) {
        self.problems.push(Problem {
            line,
            message,
            severity: Severity::Warning,
        });
    }

    /// The value as written in the file (on one line, shortened), for messages.
    fn raw<T>(&self, s: &Spanned<T>) -> String {
        let written = self.text.get(s.span()).unwrap_or("").trim();
        let one_line = written.split_whitespace().collect::<Vec<_>>().join(" ");
        if one_line.chars().count() > 60 {
            one_line.chars().take(57).chain("...".chars()).collect()
        } else {
            one_line
        }
    }

    /// A value of the expected type, or an error naming what was written.
    fn val<'f, T>(
        &mut self,
        ctx: &str,
        key: &str,
        f: &'f Spanned<Val<T>>,
        expected: &str,
    ) -> Option<&'f T> {
        match f.get_ref() {
            Val::Ok(v) => Some(v),
            Val::Bad(v) => {
                let msg = format!(
                    "{ctx}{key} = {}: must be {expected}, not {}",
                    self.raw(f),
                    article(v.type_str())
                );
                self.error(self.at(f), msg);
                None
            }
        }
    }

    /// An integer in `lo..=hi`.
    fn int(
        &mut self,
        ctx: &str,
        key: &str,
        f: &Spanned<Val<i64>>,
        lo: i64,
        hi: i64,
    ) -> Option<i64> {
        let valid = format!("an integer from {lo} to {hi}");
        let n = *self.val(ctx, key, f, &valid)?;
        if (lo..=hi).contains(&n) {
            return Some(n);
        }
        self.error(
            self.at(f),
            format!("{ctx}{key} = {}: must be {valid}", self.raw(f)),
        );
        None
    }

    fn boolean(&mut self, ctx: &str, key: &str, f: &Spanned<Val<bool>>) -> Option<bool> {
        self.val(ctx, key, f, "true or false").copied()
    }

    /// A humantime duration (`[autoban]`, `[fleet] max_ttl`, `[crowdsec] poll`).
    fn duration(
        &mut self,
        ctx: &str,
        key: &str,
        f: &Spanned<Val<String>>,
    ) -> Option<Result<Duration, String>> {
        let s = self.val(ctx, key, f, DURATION_EXAMPLES)?;
        Some(humantime::parse_duration(s.trim()).map_err(|e| e.to_string()))
    }

    /// A table read into `T`; an error naming what was written instead.
    fn table<'f, T>(&mut self, name: &str, s: &'f Spanned<Section<T>>) -> Option<View<'f, T>>
    where
        T: serde::de::DeserializeOwned,
    {
        let valid = fields::<T>();
        match &s.get_ref().body {
            Ok(body) => {
                let view = self.view(s, body);
                self.unknown_keys(view.keys, Some(&format!("[{name}]")), valid);
                Some(view)
            }
            Err(v) => {
                let tables = matches!(v, Value::Array(a) if a.iter().all(Value::is_table));
                let (found, hint) = if tables {
                    let hint = format!("; write [{name}], not [[{name}]], and only once");
                    ("an array of tables".to_string(), hint)
                } else {
                    (self.found(v, s), String::new())
                };
                let msg = format!(
                    "`{name}` must be a table ([{name}] with keys {}), not {found}{hint}",
                    valid.join(", ")
                );
                self.error(self.at(s), msg);
                None
            }
        }
    }

    fn view<'f, T>(&self, s: &'f Spanned<Section<T>>, body: &'f T) -> View<'f, T> {
        View {
            line: self.at(s),
            keys: &s.get_ref().keys,
            body,
        }
    }

    /// The tables of `[[name]]` (or `name = [{...}, ...]`).
    fn tables<'f, T>(&mut self, name: &str, s: &'f Spanned<List<Section<T>>>) -> Vec<View<'f, T>>
    where
        T: serde::de::DeserializeOwned,
    {
        let items = match s.get_ref() {
            List::Items(items) => items,
            List::Bad(v) => {
                let found = match v {
                    Value::Table(_) => format!("a single table [{name}]"),
                    v => self.found(v, s),
                };
                let msg = format!("`{name}` must be an array of tables: write [[{name}]] before each entry, not {found}");
                self.error(self.at(s), msg);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for t in items {
            match &t.get_ref().body {
                Ok(body) => {
                    let view = self.view(t, body);
                    self.unknown_keys(view.keys, Some(&format!("[[{name}]]")), fields::<T>());
                    out.push(view);
                }
                Err(v) => {
                    let msg = format!(
                        "`{name}` entries must be tables ([[{name}]]), not {}",
                        self.found(v, t)
                    );
                    self.error(self.at(t), msg);
                }
            }
        }
        out
    }

    /// "an integer 5", "a table"...
    fn found<T>(&self, v: &Value, s: &Spanned<T>) -> String {
        match v {
            Value::Table(_) => article("table"),
            v => format!("{} {}", article(v.type_str()), self.raw(s)),
        }
    }

    /// Report keys that are not in `valid` (`table`: `None` at the top
    /// level), with the closest valid key.
    fn unknown_keys(
        &mut self,
        keys: &[(String, Range<usize>)],
        table: Option<&str>,
        valid: &[&str],
    ) {
        for (key, span) in keys.iter().filter(|(k, _)| !valid.contains(&k.as_str())) {
            let mut msg = match table {
                None => format!("unknown top-level key `{key}`"),
                Some(t) => format!("unknown key `{key}` in {t}"),
            };
            msg.push_str(&format!("; valid keys: {}", valid.join(", ")));
            if let Some(near) = closest(key, valid) {
                msg.push_str(&format!(" (did you mean `{near}`?)"));
            }
            if table.is_some() && (key == "allow" || key == "block") {
                msg.push_str(&format!(" ({TOP_LEVEL_HINT})"));
            }
            self.error(self.line(span), msg);
        }
    }

    fn require<T>(&mut self, view: &View<'_, T>, what: &str, required: &[&str]) {
        let missing: Vec<String> = required
            .iter()
            .filter(|k| !view.has(k))
            .map(|k| format!("`{k}`"))
            .collect();
        if !missing.is_empty() {
            let msg = format!(
                "{what} is missing {} {}; required: {}",
                if missing.len() == 1 { "key" } else { "keys" },
                missing.join(", "),
                required.join(", ")
            );
            self.error(view.line, msg);
        }
    }

    fn policy(&mut self, file: Section<File>) -> Policy {
        let mut policy = Policy::default();
        self.unknown_keys(&file.keys, None, fields::<File>());
        let Ok(f) = &file.body else {
            return policy;
        };
        let allow = f.allow.as_ref().map(|l| self.cidr_list(l, "allow"));
        let block = f.block.as_ref().map(|l| self.cidr_list(l, "block"));
        if let (Some(allow), Some(block)) = (&allow, &block) {
            for (net, bline) in block {
                if let Some((_, aline)) = allow.iter().find(|(a, _)| a == net) {
                    self.warning(
                        *bline,
                        format!(
                            "{net} is both in allow (line {aline}) and in block (line {bline}); \
                             the allowlist wins, so it is never blocked"
                        ),
                    );
                }
            }
        }
        let nets = |l: Option<Vec<(IpNet, usize)>>| {
            l.unwrap_or_default().into_iter().map(|(n, _)| n).collect()
        };
        policy.allow = nets(allow);
        policy.block = nets(block);
        if let Some(v) = f.defaults.as_ref().and_then(|s| self.table("defaults", s)) {
            policy.defaults = self.defaults(&v);
        }
        if let Some(s) = &f.limit {
            policy.limits = self.limits(s);
        }
        if let Some(s) = &f.rule {
            policy.rules = self.rules(s);
        }
        if let Some(v) = f.flood.as_ref().and_then(|s| self.table("flood", s)) {
            (policy.flood, policy.syn_challenge) = self.flood(&v);
        }
        if let Some(v) = f.table.as_ref().and_then(|s| self.table("table", s)) {
            policy.table = self.table_sizes(&v);
        }
        if let Some(v) = f.autoban.as_ref().and_then(|s| self.table("autoban", s)) {
            policy.autoban = self.autoban(&v);
        }
        if let Some(v) = f.crowdsec.as_ref().and_then(|s| self.table("crowdsec", s)) {
            policy.crowdsec = self.crowdsec(&v);
        }
        if let Some(v) = f.fleet.as_ref().and_then(|s| self.table("fleet", s)) {
            policy.fleet = self.fleet(&v);
        }
        policy
    }

    /// `allow` / `block`: an array of CIDR strings. Returns the normalized
    /// networks (first occurrence kept) with their lines.
    fn cidr_list(&mut self, l: &Spanned<List<Val<String>>>, list: &str) -> Vec<(IpNet, usize)> {
        let mut out: Vec<(IpNet, usize)> = Vec::new();
        let items = match l.get_ref() {
            List::Items(items) => items,
            List::Bad(v) => {
                let msg = match v {
                    Value::Table(_) => format!("[{list}] is a table, but {list} must be a top-level array of strings such as {list} = [\"192.0.2.0/24\"]"),
                    v => format!("{list} = {}: must be an array of strings, each {CIDR_EXAMPLES}, not {}", self.raw(l), article(v.type_str())),
                };
                self.error(self.at(l), msg);
                return out;
            }
        };
        let mut seen: HashMap<IpNet, usize> = HashMap::new();
        let (mut v4, mut v6) = (0u32, 0u32);
        for item in items {
            let line = self.at(item);
            let s = match item.get_ref() {
                Val::Ok(s) => s,
                Val::Bad(v) => {
                    let msg = format!(
                        "{list} entry {}: must be a string, {CIDR_EXAMPLES}, not {}",
                        self.raw(item),
                        article(v.type_str())
                    );
                    self.error(line, msg);
                    continue;
                }
            };
            let Some(net) = self.cidr(s, line, list) else {
                continue;
            };
            if let Some(first) = seen.get(&net) {
                self.warning(line, format!("{list} entry \"{s}\": {net} is already listed at line {first}; listed once"));
                continue;
            }
            if net.prefix_len() == 0 {
                let what = if list == "block" {
                    "blocks"
                } else {
                    "exempts from every limit"
                };
                self.warning(
                    line,
                    format!("{list} entry \"{s}\" {what} every {} source", family(&net)),
                );
            }
            match net {
                IpNet::V4(_) => v4 += 1,
                IpNet::V6(_) => v6 += 1,
            }
            seen.insert(net, line);
            out.push((net, line));
        }
        for (count, fam) in [(v4, "IPv4"), (v6, "IPv6")] {
            if count > LIST_CAPACITY {
                let msg = format!("{list} has {count} {fam} entries; at most {LIST_CAPACITY} fit");
                self.error(self.at(l), msg);
            }
        }
        out
    }

    /// Parse a CIDR or bare address; warn about host bits; return it
    /// normalized.
    fn cidr(&mut self, s: &str, line: usize, what: &str) -> Option<IpNet> {
        match parse_net(s) {
            Ok(net) => {
                let trunc = net.trunc();
                if trunc != net {
                    self.warning(
                        line,
                        format!("{what} \"{s}\" has host bits set; it is read as {trunc}"),
                    );
                }
                Some(trunc)
            }
            Err(why) => {
                self.error(
                    line,
                    format!("{what} \"{s}\": {why}; write {CIDR_EXAMPLES}"),
                );
                None
            }
        }
    }

    /// Check a rate/burst pair against what the fixed-point bucket holds.
    fn rate_burst(&mut self, ctx: &str, p: Pair<'_>) -> Option<(u64, u64)> {
        let (rk, bk) = p.keys;
        let r = match p.rate.0 {
            Some(f) => self.int(ctx, rk, f, 1, MAX_RATE as i64).map(|n| n as u64),
            None => p.rate.1,
        };
        let b = match p.burst.0 {
            Some(f) => {
                // Upper bound: what this rate can hold, or the most any rate can.
                let max = Limit::max_burst(r.unwrap_or(MAX_RATE));
                match f.get_ref() {
                    Val::Ok(n) if *n >= 1 && *n as u64 <= max => Some(*n as u64),
                    Val::Ok(n) => {
                        let note = match r {
                            Some(r) if *n > 0 => {
                                format!(" (the deepest bucket a rate of {r} can hold)")
                            }
                            _ => String::new(),
                        };
                        let msg = format!(
                            "{ctx}{bk} = {}: must be an integer from 1 to {max}{note}",
                            self.raw(f)
                        );
                        self.error(self.at(f), msg);
                        None
                    }
                    Val::Bad(_) => self.int(ctx, bk, f, 1, max as i64).map(|n| n as u64),
                }
            }
            None => p.burst.1,
        };
        let (r, b) = (r?, b?);
        let at = |cx: &Self, f: Option<&Spanned<Val<i64>>>| f.map_or(0, |f| cx.at(f));
        // The program refills buckets once a kernel tick: a bucket shallower
        // than one tick's refill cuts a source below its rate.
        let hz = crate::tick::kernel_hz();
        let tick = r.div_ceil(hz);
        if b < tick {
            let msg = format!(
                "{ctx}burst {b} is smaller than one tick's refill ({r}/s at HZ={hz} is {tick} a tick): \
                 sources get fewer than {r} packets a second; set {bk} to at least {tick}"
            );
            self.warning(at(self, p.burst.0.or(p.rate.0)), msg);
        }
        match Limit::new(r, b) {
            Ok(_) => Some((r, b)),
            Err(err) => {
                // Only reachable with a defaulted half of the pair, e.g. a
                // low rate set while the default burst is left in place.
                let (line, what) = match err {
                    LimitError::ZeroRate | LimitError::RateTooHigh => (
                        at(self, p.rate.0),
                        format!("{rk} = {r}: must be an integer from 1 to {MAX_RATE}"),
                    ),
                    LimitError::ZeroBurst => (
                        at(self, p.burst.0),
                        format!("{bk} = 0: must be an integer from 1 to {}", Limit::max_burst(r)),
                    ),
                    LimitError::BurstTooHigh { max } => (
                        at(self, p.rate.0.or(p.burst.0)),
                        format!(
                            "{rk} = {r} cannot hold {bk} = {b}{}: set {bk} to at most {max}, or raise {rk}",
                            if p.burst.0.is_none() { " (the default)" } else { "" }
                        ),
                    ),
                };
                self.error(line, format!("{ctx}{what}"));
                None
            }
        }
    }

    fn defaults(&mut self, v: &View<'_, DefaultsFile>) -> Defaults {
        let (mut d, f, ctx) = (Defaults::default(), v.body, "[defaults] ");
        let pair = Pair {
            keys: ("rate", "burst"),
            rate: (f.rate.as_ref(), Some(DEFAULT_RATE)),
            burst: (f.burst.as_ref(), Some(DEFAULT_BURST)),
        };
        if let Some((r, b)) = self.rate_burst(ctx, pair) {
            (d.rate, d.burst) = (r, b);
        }
        if let Some(n) = f
            .ipv4_prefix
            .as_ref()
            .and_then(|x| self.int(ctx, "ipv4_prefix", x, 1, 32))
        {
            d.ipv4_prefix = n as u8;
        }
        if let Some(n) = f
            .ipv6_prefix
            .as_ref()
            .and_then(|x| self.int(ctx, "ipv6_prefix", x, 1, 128))
        {
            d.ipv6_prefix = n as u8;
        }
        if let Some(m) = &f.mode {
            match self
                .val(ctx, "mode", m, "\"enforce\" or \"monitor\"")
                .map(String::as_str)
            {
                Some("enforce") | None => {}
                Some("monitor") => d.monitor = true,
                Some(other) => {
                    let msg =
                        format!("{ctx}mode = \"{other}\": must be \"enforce\" or \"monitor\"");
                    self.error(self.at(m), msg);
                }
            }
        }
        d
    }

    fn limits(&mut self, s: &Spanned<List<Section<LimitFile>>>) -> Vec<LimitClass> {
        let (mut out, ctx) = (Vec::new(), "[[limit]] ");
        let mut seen: HashMap<IpNet, usize> = HashMap::new();
        let (mut v4, mut v6) = (0u32, 0u32);
        for view in self.tables("limit", s) {
            let f = view.body;
            self.require(&view, "[[limit]]", fields::<LimitFile>());
            let cidr = f.cidr.as_ref().and_then(|c| {
                let line = self.at(c);
                let s = self.val(ctx, "cidr", c, CIDR_EXAMPLES)?;
                let net = self.cidr(s, line, "[[limit]] cidr")?;
                if let Some(first) = seen.insert(net, line) {
                    seen.insert(net, first);
                    self.error(line, format!("[[limit]] cidr = \"{s}\" ({net}) at line {line} duplicates the [[limit]] for {net} at line {first}; each cidr may have one class"));
                    return None;
                }
                Some(net)
            });
            let pair = Pair {
                keys: ("rate", "burst"),
                rate: (f.rate.as_ref(), None),
                burst: (f.burst.as_ref(), None),
            };
            if let (Some(cidr), Some((rate, burst))) = (cidr, self.rate_burst(ctx, pair)) {
                match cidr {
                    IpNet::V4(_) => v4 += 1,
                    IpNet::V6(_) => v6 += 1,
                }
                out.push(LimitClass { cidr, rate, burst });
            }
        }
        for (count, fam) in [(v4, "IPv4"), (v6, "IPv6")] {
            if count > LIMIT_CAPACITY {
                let msg = format!("{count} {fam} [[limit]] classes; at most {LIMIT_CAPACITY} fit");
                self.error(self.at(s), msg);
            }
        }
        out
    }

    fn rule_name(
        &mut self,
        n: &Spanned<Val<String>>,
        names: &mut HashMap<String, usize>,
    ) -> Option<String> {
        let line = self.at(n);
        let s = self.val("[[rule]] ", "name", n, "a non-empty string")?;
        let why = if s.trim().is_empty() {
            "must not be empty".to_string()
        } else if s.len() > RULE_NAME_MAX {
            format!(
                "too long ({} bytes); must be at most {RULE_NAME_MAX} bytes",
                s.len()
            )
        } else if let Some(c) = s.chars().find(|c| c.is_control()) {
            format!("must not contain control characters (found {c:?})")
        } else if let Some(first) = names.get(s) {
            let msg = format!("[[rule]] name = \"{s}\" is already used by the rule at line {first}; rule names must be unique");
            self.error(line, msg);
            return None;
        } else {
            names.insert(s.clone(), line);
            return Some(s.clone());
        };
        self.error(line, format!("[[rule]] name = {}: {why}", self.raw(n)));
        None
    }

    fn rules(&mut self, s: &Spanned<List<Section<RuleFile>>>) -> Vec<Rule> {
        let views = self.tables("rule", s);
        let mut out = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, view) in views.iter().enumerate() {
            let f = view.body;
            if i == MAX_RULES as usize {
                let msg = format!(
                    "too many [[rule]] entries: {} defined, at most {MAX_RULES}; this is rule number {}",
                    views.len(),
                    i + 1
                );
                self.error(view.line, msg);
            }
            self.require(view, "[[rule]]", &["name", "rate", "burst"]);
            let name = f.name.as_ref().and_then(|n| self.rule_name(n, &mut names));
            let ctx = match &name {
                Some(n) => format!("[[rule]] \"{n}\": "),
                None => format!("[[rule]] #{}: ", i + 1),
            };
            let protocol = match &f.protocol {
                None => Some(Protocol::Any),
                Some(p) => self.val(&ctx, "protocol", p, PROTOCOLS).and_then(|s| {
                    let proto = s.parse::<Protocol>().ok();
                    if proto.is_none() {
                        self.error(
                            self.at(p),
                            format!("{ctx}protocol = \"{s}\": must be {PROTOCOLS}"),
                        );
                    }
                    proto
                }),
            };
            let dst_port = match &f.dst_port {
                None => Some(None),
                Some(p) => self.port(&ctx, p).map(Some),
            };
            if let (Some(proto), Some(Some(_)), Some(p)) = (protocol, dst_port, &f.dst_port) {
                if !matches!(proto, Protocol::Tcp | Protocol::Udp) {
                    let msg = format!(
                        "{ctx}dst_port = {}: ports apply only to protocol \"tcp\" or \"udp\", not \"{proto}\"",
                        self.raw(p)
                    );
                    self.error(self.at(p), msg);
                }
            }
            let syn_only = match &f.syn_only {
                None => Some(false),
                Some(s) => self.boolean(&ctx, "syn_only", s),
            };
            if let (Some(proto), Some(true), Some(s)) = (protocol, syn_only, &f.syn_only) {
                if proto != Protocol::Tcp {
                    let msg = format!(
                        "{ctx}syn_only = true: only valid with protocol = \"tcp\", not \"{proto}\""
                    );
                    self.error(self.at(s), msg);
                }
            }
            let pair = Pair {
                keys: ("rate", "burst"),
                rate: (f.rate.as_ref(), None),
                burst: (f.burst.as_ref(), None),
            };
            let pair = self.rate_burst(&ctx, pair);
            if let (
                Some(name),
                Some(protocol),
                Some(dst_port),
                Some(syn_only),
                Some((rate, burst)),
            ) = (name, protocol, dst_port, syn_only, pair)
            {
                out.push(Rule {
                    name,
                    protocol,
                    dst_port,
                    syn_only,
                    rate,
                    burst,
                });
            }
        }
        out
    }

    /// `dst_port`: an integer 1..=65535 or a string "A" / "A-B".
    fn port(&mut self, ctx: &str, p: &Spanned<Val<Port>>) -> Option<(u16, u16)> {
        let (line, raw) = (self.at(p), self.raw(p));
        let s = match self.val(ctx, "dst_port", p, PORT_VALID)? {
            Port::One(n) if (1..=65535).contains(n) => return Some((*n as u16, *n as u16)),
            Port::One(n) => {
                self.error(line, format!("{ctx}dst_port = {n}: must be {PORT_VALID}"));
                return None;
            }
            Port::Range(s) => s,
        };
        let one = |p: &str| -> Option<u16> {
            let p = p.trim();
            let digits = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            p.parse::<u16>().ok().filter(|p| digits && *p >= 1)
        };
        let parsed = match s.split_once('-') {
            Some((a, b)) => one(a).zip(one(b)),
            None => one(s).map(|p| (p, p)),
        };
        match parsed {
            Some((a, b)) if a <= b => Some((a, b)),
            Some((a, b)) => {
                self.error(line, format!("{ctx}dst_port = {raw}: reversed range ({a} is above {b}); write \"{b}-{a}\""));
                None
            }
            None => {
                self.error(
                    line,
                    format!("{ctx}dst_port = \"{s}\": must be {PORT_VALID}"),
                );
                None
            }
        }
    }

    fn flood(&mut self, v: &View<'_, FloodFile>) -> (Flood, SynChallenge) {
        let (f, ctx) = (v.body, "[flood] ");
        let (mut flood, mut ch) = (Flood::default(), SynChallenge::default());
        let pair = Pair {
            keys: ("new_sources_rate", "new_sources_burst"),
            rate: (f.new_sources_rate.as_ref(), Some(DEFAULT_NEW_SOURCES_RATE)),
            burst: (
                f.new_sources_burst.as_ref(),
                Some(DEFAULT_NEW_SOURCES_BURST),
            ),
        };
        if let Some((r, b)) = self.rate_burst(ctx, pair) {
            (flood.new_sources_rate, flood.new_sources_burst) = (r, b);
        }
        if let Some(on) = f
            .syn_challenge
            .as_ref()
            .and_then(|s| self.boolean(ctx, "syn_challenge", s))
        {
            ch.enabled = on;
        }
        let pair = Pair {
            keys: ("syn_challenge_rate", "syn_challenge_burst"),
            rate: (
                f.syn_challenge_rate.as_ref(),
                Some(DEFAULT_SYN_CHALLENGE_RATE),
            ),
            burst: (
                f.syn_challenge_burst.as_ref(),
                Some(DEFAULT_SYN_CHALLENGE_BURST),
            ),
        };
        if let Some((r, b)) = self.rate_burst(ctx, pair) {
            (ch.rate, ch.burst) = (r, b);
        }
        (flood, ch)
    }

    fn table_sizes(&mut self, v: &View<'_, TableFile>) -> Table {
        let (mut t, f, ctx) = (Table::default(), v.body, "[table] ");
        let (lo, hi) = (TABLE_MIN_SOURCES.into(), TABLE_MAX_SOURCES.into());
        if let Some(n) = f
            .max_sources
            .as_ref()
            .and_then(|x| self.int(ctx, "max_sources", x, lo, hi))
        {
            t.max_sources = n as u32;
        }
        let (lo, hi) = (TABLE_MIN_LIST.into(), TABLE_MAX_LIST.into());
        if let Some(n) = f
            .max_list_entries
            .as_ref()
            .and_then(|x| self.int(ctx, "max_list_entries", x, lo, hi))
        {
            t.max_list_entries = n as u32;
        }
        t
    }

    /// An `[autoban]` duration: longer than 0, at most `MAX_DURATION`.
    fn ban_duration(&mut self, key: &str, f: &Field<String>) -> Option<Duration> {
        let (f, ctx) = (f.as_ref()?, "[autoban] ");
        let (line, raw) = (self.at(f), self.raw(f));
        let msg = match self.duration(ctx, key, f)? {
            Ok(d) if d > MAX_DURATION => format!(
                "{ctx}{key} = {raw}: too long; must be at most \"{}d\"",
                MAX_DURATION.as_secs() / 86_400
            ),
            Ok(d) if d.is_zero() => {
                format!("{ctx}{key} = {raw}: must be longer than 0; write {DURATION_EXAMPLES}")
            }
            Ok(d) => return Some(d),
            Err(err) => format!(
                "{ctx}{key} = {raw}: not a valid duration ({err}); write {DURATION_EXAMPLES}"
            ),
        };
        self.error(line, msg);
        None
    }

    fn autoban(&mut self, v: &View<'_, AutobanFile>) -> Option<Autoban> {
        let (f, ctx) = (v.body, "[autoban] ");
        self.require(v, "[autoban]", fields::<AutobanFile>());
        let drops = f
            .drops
            .as_ref()
            .and_then(|d| self.int(ctx, "drops", d, 1, u32::MAX as i64));
        let window = self.ban_duration("window", &f.window);
        let ban = self.ban_duration("ban", &f.ban);
        let max_ban = self.ban_duration("max_ban", &f.max_ban);
        if let (Some(b), Some(m), Some(bf), Some(mf)) = (ban, max_ban, &f.ban, &f.max_ban) {
            if b > m {
                let msg = format!(
                    "{ctx}ban = {} is longer than max_ban = {}: ban must be at most max_ban",
                    self.raw(bf),
                    self.raw(mf)
                );
                self.error(self.at(bf), msg);
                return None;
            }
        }
        Some(Autoban {
            drops: drops? as u64,
            window: window?,
            ban: ban?,
            max_ban: max_ban?,
        })
    }
}

fn family(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

/// "a string", "an integer", "an array"...
fn article(type_name: &str) -> String {
    let vowel = type_name.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {type_name}", if vowel { "an" } else { "a" })
}

/// The valid key closest to a misspelled one, if close enough.
fn closest<'v>(key: &str, valid: &[&'v str]) -> Option<&'v str> {
    valid
        .iter()
        .map(|v| (strsim::levenshtein(key, v), *v))
        .filter(|(d, v)| *d > 0 && *d <= 2.max(v.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}
