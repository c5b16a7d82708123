//! The policy file: parsing and validation.
//!
//! `parse` reads the TOML text with spans kept (`toml_edit::ImDocument`) and
//! checks every table by hand, so that it can report *every* problem with
//! its line instead of stopping at the first one, name the bad value and say
//! what would be valid. A file that parses is normalized (CIDR host bits
//! cleared, defaults filled in) into a [`Policy`].

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use firewall_common::bucket::{Limit, LimitError, MAX_RATE};
use firewall_common::maps::{LIMIT_CAPACITY, LIST_CAPACITY, MAX_RULES, SOURCES_CAPACITY};
use ipnet::IpNet;
use toml_edit::{ImDocument, Item, Value};

mod crowdsec_table;
pub mod fleet;

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
    /// A TCP SYN the budget refuses is answered with a challenge (a SYN-ACK
    /// carrying a cookie) instead of being dropped; a source that answers
    /// it is real and gets a bucket.
    pub syn_challenge: bool,
    /// Challenges sent per second for the whole gateway (backscatter bound).
    pub syn_challenge_rate: u64,
    pub syn_challenge_burst: u64,
}

impl Default for Flood {
    fn default() -> Self {
        Flood {
            new_sources_rate: DEFAULT_NEW_SOURCES_RATE,
            new_sources_burst: DEFAULT_NEW_SOURCES_BURST,
            syn_challenge: true,
            syn_challenge_rate: DEFAULT_SYN_CHALLENGE_RATE,
            syn_challenge_burst: DEFAULT_SYN_CHALLENGE_BURST,
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
    let policy = match ImDocument::parse(text) {
        Ok(doc) => cx.policy(doc.as_item()),
        Err(e) => {
            let line = cx.line(e.span());
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

const TOP_KEYS: &[&str] = &[
    "allow", "block", "defaults", "limit", "rule", "flood", "autoban", "table", "crowdsec", "fleet",
];
const TABLE_KEYS: &[&str] = &["max_sources", "max_list_entries"];
const DEFAULTS_KEYS: &[&str] = &["rate", "burst", "ipv4_prefix", "ipv6_prefix", "mode"];
const LIMIT_KEYS: &[&str] = &["cidr", "rate", "burst"];
const RULE_KEYS: &[&str] = &["name", "protocol", "dst_port", "syn_only", "rate", "burst"];
const FLOOD_KEYS: &[&str] = &[
    "new_sources_rate",
    "new_sources_burst",
    "syn_challenge",
    "syn_challenge_rate",
    "syn_challenge_burst",
];
const AUTOBAN_KEYS: &[&str] = &["drops", "window", "ban", "max_ban"];

const TOP_LEVEL_HINT: &str =
    "top-level keys such as allow and block must come before the first [table]";
const CIDR_EXAMPLES: &str =
    "an IPv4 or IPv6 address or CIDR such as \"192.0.2.0/24\", \"2001:db8::/32\" or \"203.0.113.7\"";
const DURATION_EXAMPLES: &str = "a duration such as \"30s\", \"10m\", \"1h\" or \"2d\"";
/// Rule names are stored in 32 bytes in the rules map.
const RULE_NAME_MAX: usize = 32;
/// Longest ban (see `clock::MAX_TTL`).
const MAX_DURATION: Duration = crate::clock::MAX_TTL;

/// A key of a table, with where it is.
struct Entry<'a> {
    key: &'a str,
    /// Line of the key (or of the value when the key has no span).
    line: usize,
    item: &'a Item,
}

/// A table (standard or inline) seen as its entries.
struct TableView<'a> {
    /// Line of the header (`[defaults]`), or of the first key.
    line: usize,
    entries: Vec<Entry<'a>>,
}

impl<'a> TableView<'a> {
    fn get(&self, key: &str) -> Option<&Entry<'a>> {
        self.entries.iter().find(|e| e.key == key)
    }
}

struct Cx<'t> {
    text: &'t str,
    problems: Vec<Problem>,
}

impl<'t> Cx<'t> {
    fn line(&self, span: Option<Range<usize>>) -> usize {
        match span {
            Some(span) => {
                let end = span.start.min(self.text.len());
                1 + self.text.as_bytes()[..end]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
            }
            None => 0,
        }
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

    /// The value as written in the file (shortened), for messages.
    fn raw(&self, item: &Item) -> String {
        let written = item
            .span()
            .and_then(|s| self.text.get(s))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| match item {
                Item::Value(v) => v.to_string().trim().to_string(),
                other => format!("<{}>", other.type_name()),
            });
        let one_line: String = written.split_whitespace().collect::<Vec<_>>().join(" ");
        if one_line.chars().count() > 60 {
            let mut s: String = one_line.chars().take(57).collect();
            s.push_str("...");
            s
        } else {
            one_line
        }
    }

    fn value_line(&self, v: &Value, fallback: usize) -> usize {
        match self.line(v.span()) {
            0 => fallback,
            l => l,
        }
    }

    /// See a standard or inline table as its entries; `None` for any other item.
    fn view<'a>(&self, item: &'a Item, fallback: usize) -> Option<TableView<'a>> {
        match item {
            Item::Table(t) => {
                let mut view = self.view_table(t, self.line(t.span()));
                if view.line == 0 {
                    // A table made by dotted keys has no header: use its first key.
                    view.line = view
                        .entries
                        .iter()
                        .map(|e| e.line)
                        .filter(|l| *l > 0)
                        .min()
                        .unwrap_or(fallback);
                    for e in &mut view.entries {
                        if e.line == 0 {
                            e.line = view.line;
                        }
                    }
                }
                Some(view)
            }
            Item::Value(v @ Value::InlineTable(_)) => {
                Some(self.view_inline(v, self.value_line(v, fallback)))
            }
            _ => None,
        }
    }

    /// Report keys of `view` that are not in `valid`.
    fn unknown_keys(&mut self, view: &TableView<'_>, table: &str, valid: &[&str]) {
        for e in &view.entries {
            if valid.contains(&e.key) {
                continue;
            }
            let mut msg = format!(
                "unknown key `{}` in {table}; valid keys: {}",
                e.key,
                valid.join(", ")
            );
            if let Some(near) = closest(e.key, valid) {
                msg.push_str(&format!(" (did you mean `{near}`?)"));
            }
            if e.key == "allow" || e.key == "block" {
                msg.push_str(&format!(" ({TOP_LEVEL_HINT})"));
            }
            self.error(e.line, msg);
        }
    }

    fn policy(&mut self, root: &Item) -> Option<Policy> {
        let view = self.view(root, 1)?;
        let mut policy = Policy::default();
        for e in &view.entries {
            if !TOP_KEYS.contains(&e.key) {
                let mut msg = format!(
                    "unknown top-level key `{}`; valid keys: {}",
                    e.key,
                    TOP_KEYS.join(", ")
                );
                if let Some(near) = closest(e.key, TOP_KEYS) {
                    msg.push_str(&format!(" (did you mean `{near}`?)"));
                }
                self.error(e.line, msg);
            }
        }
        let allow = view.get("allow").map(|e| self.cidr_list(e, "allow"));
        let block = view.get("block").map(|e| self.cidr_list(e, "block"));
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
        policy.allow = allow
            .unwrap_or_default()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        policy.block = block
            .unwrap_or_default()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if let Some(e) = view.get("defaults") {
            policy.defaults = self.defaults(e);
        }
        if let Some(e) = view.get("limit") {
            policy.limits = self.limits(e);
        }
        if let Some(e) = view.get("rule") {
            policy.rules = self.rules(e);
        }
        if let Some(e) = view.get("flood") {
            policy.flood = self.flood(e);
        }
        if let Some(e) = view.get("table") {
            policy.table = self.table_sizes(e);
        }
        if let Some(e) = view.get("autoban") {
            policy.autoban = self.autoban(e);
        }
        if let Some(e) = view.get("crowdsec") {
            policy.crowdsec = self.crowdsec(e);
        }
        if let Some(e) = view.get("fleet") {
            policy.fleet = self.fleet(e);
        }
        Some(policy)
    }

    /// A `[name]` table; reports and returns `None` when it is something else.
    fn table<'a>(&mut self, e: &Entry<'a>, name: &str, valid: &[&str]) -> Option<TableView<'a>> {
        match self.view(e.item, e.line) {
            Some(view) => {
                self.unknown_keys(&view, &format!("[{name}]"), valid);
                Some(view)
            }
            None => {
                let hint = if e.item.is_array_of_tables() {
                    format!("; write [{name}], not [[{name}]], and only once")
                } else {
                    String::new()
                };
                self.error(
                    e.line,
                    format!(
                        "`{name}` must be a table ([{name}] with keys {}), not {}{hint}",
                        valid.join(", "),
                        self.found(e.item),
                    ),
                );
                None
            }
        }
    }

    /// "an integer 5", "an array of tables"...
    fn found(&self, item: &Item) -> String {
        match item {
            Item::Value(_) => format!("{} {}", article(item.type_name()), self.raw(item)),
            _ => article(item.type_name()),
        }
    }

    /// The tables of `[[name]]` (or `name = [{...}, ...]`).
    fn array_of_tables<'a>(&mut self, e: &Entry<'a>, name: &str) -> Vec<TableView<'a>> {
        let mut out = Vec::new();
        match e.item {
            Item::ArrayOfTables(a) => {
                for t in a.iter() {
                    let line = match self.line(t.span()) {
                        0 => e.line,
                        l => l,
                    };
                    out.push(self.view_table(t, line));
                }
            }
            Item::Value(Value::Array(a)) => {
                for v in a.iter() {
                    match v {
                        Value::InlineTable(_) => {
                            let line = self.value_line(v, e.line);
                            out.push(self.view_inline(v, line));
                        }
                        other => {
                            let line = self.value_line(other, e.line);
                            self.error(
                                line,
                                format!(
                                    "`{name}` entries must be tables ([[{name}]]), not {} {}",
                                    article(other.type_name()),
                                    self.raw(&Item::Value(other.clone()))
                                ),
                            );
                        }
                    }
                }
            }
            other => {
                let found = match other {
                    Item::Table(_) => format!("a single table [{name}]"),
                    _ => self.found(other),
                };
                self.error(
                    e.line,
                    format!("`{name}` must be an array of tables: write [[{name}]] before each entry, not {found}"),
                );
            }
        }
        out
    }

    fn view_table<'a>(&self, t: &'a toml_edit::Table, line: usize) -> TableView<'a> {
        let mut entries = Vec::new();
        for (key, child) in t.iter() {
            if child.is_none() {
                continue;
            }
            let kl = self.line(t.key(key).and_then(|k| k.span()));
            let kl = if kl == 0 { self.line(child.span()) } else { kl };
            entries.push(Entry {
                key,
                line: if kl == 0 { line } else { kl },
                item: child,
            });
        }
        TableView { line, entries }
    }

    fn view_inline<'a>(&self, v: &'a Value, line: usize) -> TableView<'a> {
        let mut entries = Vec::new();
        if let Value::InlineTable(t) = v {
            for (key, _) in t.iter() {
                if let Some((k, child)) = t.get_key_value(key) {
                    let kl = match self.line(k.span()) {
                        0 => self.line(child.span()),
                        l => l,
                    };
                    entries.push(Entry {
                        key,
                        line: if kl == 0 { line } else { kl },
                        item: child,
                    });
                }
            }
        }
        TableView { line, entries }
    }

    /// `allow` / `block`: an array of CIDR strings. Returns the normalized
    /// networks (first occurrence kept) with their lines.
    fn cidr_list(&mut self, e: &Entry<'_>, list: &str) -> Vec<(IpNet, usize)> {
        let mut out: Vec<(IpNet, usize)> = Vec::new();
        let Some(arr) = e.item.as_array() else {
            let mut msg = format!(
                "{list} = {}: must be an array of strings, each {CIDR_EXAMPLES}, not {}",
                self.raw(e.item),
                article(e.item.type_name())
            );
            if e.item.is_table() || e.item.is_array_of_tables() {
                msg = format!(
                    "[{list}] is a table, but {list} must be a top-level array of strings such as {list} = [\"192.0.2.0/24\"]"
                );
            }
            self.error(e.line, msg);
            return out;
        };
        let mut seen: HashMap<IpNet, usize> = HashMap::new();
        let (mut v4, mut v6) = (0u32, 0u32);
        for v in arr.iter() {
            let line = self.value_line(v, e.line);
            let Some(s) = v.as_str() else {
                self.error(
                    line,
                    format!(
                        "{list} entry {}: must be a string, {CIDR_EXAMPLES}, not {}",
                        self.raw(&Item::Value(v.clone())),
                        article(v.type_name())
                    ),
                );
                continue;
            };
            let Some(net) = self.cidr(s, line, list) else {
                continue;
            };
            if let Some(first) = seen.get(&net) {
                self.warning(
                    line,
                    format!("{list} entry \"{s}\": {net} is already listed at line {first}; listed once"),
                );
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
                self.error(
                    e.line,
                    format!("{list} has {count} {fam} entries; at most {LIST_CAPACITY} fit"),
                );
            }
        }
        out
    }

    /// Parse a CIDR or bare address; warn about host bits; return it
    /// normalized.
    fn cidr(&mut self, s: &str, line: usize, what: &str) -> Option<IpNet> {
        match parse_cidr(s) {
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

    /// An integer in `lo..=hi`.
    fn int(&mut self, ctx: &str, e: &Entry<'_>, lo: i64, hi: i64) -> Option<i64> {
        match e.item.as_integer() {
            Some(n) if (lo..=hi).contains(&n) => Some(n),
            Some(_) => {
                self.error(
                    e.line,
                    format!(
                        "{ctx}{} = {}: must be an integer from {lo} to {hi}",
                        e.key,
                        self.raw(e.item)
                    ),
                );
                None
            }
            None => {
                self.error(
                    e.line,
                    format!(
                        "{ctx}{} = {}: must be an integer from {lo} to {hi}, not {}",
                        e.key,
                        self.raw(e.item),
                        article(e.item.type_name())
                    ),
                );
                None
            }
        }
    }

    fn string<'a>(&mut self, ctx: &str, e: &Entry<'a>, expected: &str) -> Option<&'a str> {
        match e.item.as_str() {
            Some(s) => Some(s),
            None => {
                self.error(
                    e.line,
                    format!(
                        "{ctx}{} = {}: must be {expected}, not {}",
                        e.key,
                        self.raw(e.item),
                        article(e.item.type_name())
                    ),
                );
                None
            }
        }
    }

    fn boolean(&mut self, ctx: &str, e: &Entry<'_>) -> Option<bool> {
        match e.item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.error(
                    e.line,
                    format!(
                        "{ctx}{} = {}: must be true or false, not {}",
                        e.key,
                        self.raw(e.item),
                        article(e.item.type_name())
                    ),
                );
                None
            }
        }
    }

    /// Check a rate/burst pair against what the fixed-point bucket holds.
    /// A missing entry takes its default; `None` from a default means the
    /// key is required (already reported). Returns the pair when valid.
    fn rate_burst(
        &mut self,
        ctx: &str,
        keys: (&str, &str),
        rate: (Option<&Entry<'_>>, Option<u64>),
        burst: (Option<&Entry<'_>>, Option<u64>),
    ) -> Option<(u64, u64)> {
        let r = match rate.0 {
            Some(e) => self.int(ctx, e, 1, MAX_RATE as i64).map(|n| n as u64),
            None => rate.1,
        };
        let b = match burst.0 {
            Some(e) => {
                // Upper bound: what this rate can hold, or the most any rate can.
                let max = Limit::max_burst(r.unwrap_or(MAX_RATE));
                match e.item.as_integer() {
                    Some(n) if n >= 1 && n as u64 <= max => Some(n as u64),
                    Some(n) => {
                        let note = match r {
                            Some(r) if n > 0 => {
                                format!(" (the deepest bucket a rate of {r} can hold)")
                            }
                            _ => String::new(),
                        };
                        self.error(
                            e.line,
                            format!(
                                "{ctx}{} = {}: must be an integer from 1 to {max}{note}",
                                e.key,
                                self.raw(e.item)
                            ),
                        );
                        None
                    }
                    None => self.int(ctx, e, 1, max as i64).map(|n| n as u64),
                }
            }
            None => burst.1,
        };
        let (r, b) = (r?, b?);
        // The program refills buckets once a kernel tick: a bucket shallower
        // than one tick's refill cuts a source below its rate.
        let hz = crate::tick::kernel_hz();
        if b < r.div_ceil(hz) {
            let line = burst.0.or(rate.0).map(|e| e.line).unwrap_or(0);
            self.warning(
                line,
                format!(
                    "{ctx}burst {b} is smaller than one tick's refill ({r}/s at HZ={hz} is {} a tick): \
                     sources get fewer than {r} packets a second; set {} to at least {}",
                    r.div_ceil(hz),
                    keys.1,
                    r.div_ceil(hz)
                ),
            );
        }
        match Limit::new(r, b) {
            Ok(_) => Some((r, b)),
            Err(err) => {
                // Only reachable with a defaulted half of the pair, e.g. a
                // low rate set while the default burst is left in place.
                let (rk, bk) = keys;
                let at = |e: Option<&Entry<'_>>| e.map(|e| e.line).unwrap_or(0);
                let (line, what) = match err {
                    LimitError::ZeroRate | LimitError::RateTooHigh => (
                        at(rate.0),
                        format!("{rk} = {r}: must be an integer from 1 to {MAX_RATE}"),
                    ),
                    LimitError::ZeroBurst => (
                        at(burst.0),
                        format!("{bk} = 0: must be an integer from 1 to {}", Limit::max_burst(r)),
                    ),
                    LimitError::BurstTooHigh { max } => (
                        at(rate.0.or(burst.0)),
                        format!(
                            "{rk} = {r} cannot hold {bk} = {b}{}: set {bk} to at most {max}, or raise {rk}",
                            if burst.0.is_none() { " (the default)" } else { "" }
                        ),
                    ),
                };
                self.error(line, format!("{ctx}{what}"));
                None
            }
        }
    }

    fn defaults(&mut self, e: &Entry<'_>) -> Defaults {
        let mut d = Defaults::default();
        let Some(view) = self.table(e, "defaults", DEFAULTS_KEYS) else {
            return d;
        };
        let ctx = "[defaults] ";
        if let Some((r, b)) = self.rate_burst(
            ctx,
            ("rate", "burst"),
            (view.get("rate"), Some(DEFAULT_RATE)),
            (view.get("burst"), Some(DEFAULT_BURST)),
        ) {
            d.rate = r;
            d.burst = b;
        }
        if let Some(e) = view.get("ipv4_prefix") {
            if let Some(n) = self.int(ctx, e, 1, 32) {
                d.ipv4_prefix = n as u8;
            }
        }
        if let Some(e) = view.get("ipv6_prefix") {
            if let Some(n) = self.int(ctx, e, 1, 128) {
                d.ipv6_prefix = n as u8;
            }
        }
        if let Some(e) = view.get("mode") {
            if let Some(s) = self.string(ctx, e, "\"enforce\" or \"monitor\"") {
                match s {
                    "enforce" => d.monitor = false,
                    "monitor" => d.monitor = true,
                    other => self.error(
                        e.line,
                        format!("{ctx}mode = \"{other}\": must be \"enforce\" or \"monitor\""),
                    ),
                }
            }
        }
        d
    }

    fn require(&mut self, view: &TableView<'_>, what: &str, required: &[&str]) {
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|k| view.get(k).is_none())
            .collect();
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|k| format!("`{k}`")).collect();
            self.error(
                view.line,
                format!(
                    "{what} is missing {} {}; required: {}",
                    if missing.len() == 1 { "key" } else { "keys" },
                    names.join(", "),
                    required.join(", ")
                ),
            );
        }
    }

    fn limits(&mut self, e: &Entry<'_>) -> Vec<LimitClass> {
        let views = self.array_of_tables(e, "limit");
        let mut out = Vec::new();
        let mut seen: HashMap<IpNet, usize> = HashMap::new();
        let (mut v4, mut v6) = (0u32, 0u32);
        for view in &views {
            let ctx = "[[limit]] ";
            self.unknown_keys(view, "[[limit]]", LIMIT_KEYS);
            self.require(view, "[[limit]]", LIMIT_KEYS);
            let cidr = view.get("cidr").and_then(|c| {
                let s = self.string(ctx, c, CIDR_EXAMPLES)?;
                let net = self.cidr(s, c.line, "[[limit]] cidr")?;
                if let Some(first) = seen.get(&net) {
                    self.error(
                        c.line,
                        format!(
                            "[[limit]] cidr = \"{s}\" ({net}) at line {} duplicates the [[limit]] for {net} at line {first}; each cidr may have one class",
                            c.line
                        ),
                    );
                    return None;
                }
                seen.insert(net, c.line);
                Some(net)
            });
            let pair = self.rate_burst(
                ctx,
                ("rate", "burst"),
                (view.get("rate"), None),
                (view.get("burst"), None),
            );
            if let (Some(cidr), Some((rate, burst))) = (cidr, pair) {
                match cidr {
                    IpNet::V4(_) => v4 += 1,
                    IpNet::V6(_) => v6 += 1,
                }
                out.push(LimitClass { cidr, rate, burst });
            }
        }
        for (count, fam) in [(v4, "IPv4"), (v6, "IPv6")] {
            if count > LIMIT_CAPACITY {
                self.error(
                    e.line,
                    format!("{count} {fam} [[limit]] classes; at most {LIMIT_CAPACITY} fit"),
                );
            }
        }
        out
    }

    fn rules(&mut self, e: &Entry<'_>) -> Vec<Rule> {
        let views = self.array_of_tables(e, "rule");
        let mut out = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, view) in views.iter().enumerate() {
            if i == MAX_RULES as usize {
                self.error(
                    view.line,
                    format!(
                        "too many [[rule]] entries: {} defined, at most {MAX_RULES}; this is rule number {}",
                        views.len(),
                        i + 1
                    ),
                );
            }
            self.unknown_keys(view, "[[rule]]", RULE_KEYS);
            self.require(view, "[[rule]]", &["name", "rate", "burst"]);
            let name = view.get("name").and_then(|n| {
                let s = self.string("[[rule]] ", n, "a non-empty string")?;
                if s.trim().is_empty() {
                    self.error(
                        n.line,
                        format!("[[rule]] name = {}: must not be empty", self.raw(n.item)),
                    );
                    return None;
                }
                if s.len() > RULE_NAME_MAX {
                    self.error(
                        n.line,
                        format!(
                            "[[rule]] name = {}: too long ({} bytes); must be at most {RULE_NAME_MAX} bytes",
                            self.raw(n.item),
                            s.len()
                        ),
                    );
                    return None;
                }
                if let Some(c) = s.chars().find(|c| c.is_control()) {
                    self.error(
                        n.line,
                        format!(
                            "[[rule]] name = {}: must not contain control characters (found {:?})",
                            self.raw(n.item),
                            c
                        ),
                    );
                    return None;
                }
                if let Some(first) = names.get(s) {
                    self.error(
                        n.line,
                        format!(
                            "[[rule]] name = \"{s}\" is already used by the rule at line {first}; rule names must be unique"
                        ),
                    );
                    return None;
                }
                names.insert(s.to_string(), n.line);
                Some(s.to_string())
            });
            let ctx = match &name {
                Some(n) => format!("[[rule]] \"{n}\": "),
                None => format!("[[rule]] #{}: ", i + 1),
            };
            let protocol = match view.get("protocol") {
                None => Some(Protocol::Any),
                Some(p) => self
                    .string(&ctx, p, "one of \"tcp\", \"udp\", \"icmp\", \"any\"")
                    .and_then(|s| match s.parse::<Protocol>() {
                        Ok(p) => Some(p),
                        Err(()) => {
                            self.error(
                                p.line,
                                format!(
                                    "{ctx}protocol = \"{s}\": must be one of \"tcp\", \"udp\", \"icmp\", \"any\""
                                ),
                            );
                            None
                        }
                    }),
            };
            let dst_port = match view.get("dst_port") {
                None => Some(None),
                Some(p) => self.port(&ctx, p).map(Some),
            };
            if let (Some(proto), Some(Some(_)), Some(p)) =
                (protocol, dst_port, view.get("dst_port"))
            {
                if !matches!(proto, Protocol::Tcp | Protocol::Udp) {
                    self.error(
                        p.line,
                        format!(
                            "{ctx}dst_port = {}: ports apply only to protocol \"tcp\" or \"udp\", not \"{proto}\"",
                            self.raw(p.item)
                        ),
                    );
                }
            }
            let syn_only = match view.get("syn_only") {
                None => Some(false),
                Some(s) => self.boolean(&ctx, s),
            };
            if let (Some(proto), Some(true), Some(s)) = (protocol, syn_only, view.get("syn_only")) {
                if proto != Protocol::Tcp {
                    self.error(
                        s.line,
                        format!(
                            "{ctx}syn_only = true: only valid with protocol = \"tcp\", not \"{proto}\""
                        ),
                    );
                }
            }
            let pair = self.rate_burst(
                &ctx,
                ("rate", "burst"),
                (view.get("rate"), None),
                (view.get("burst"), None),
            );
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
    fn port(&mut self, ctx: &str, e: &Entry<'_>) -> Option<(u16, u16)> {
        const VALID: &str =
            "a port from 1 to 65535 (dst_port = 22) or a range \"A-B\" with A <= B (dst_port = \"1000-2000\")";
        if let Some(n) = e.item.as_integer() {
            return if (1..=65535).contains(&n) {
                Some((n as u16, n as u16))
            } else {
                self.error(e.line, format!("{ctx}dst_port = {n}: must be {VALID}"));
                None
            };
        }
        let Some(s) = e.item.as_str() else {
            self.error(
                e.line,
                format!(
                    "{ctx}dst_port = {}: must be {VALID}, not {}",
                    self.raw(e.item),
                    article(e.item.type_name())
                ),
            );
            return None;
        };
        let one = |p: &str| -> Option<u16> {
            let p = p.trim();
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse::<u16>().ok().filter(|p| *p >= 1)
        };
        let parsed = match s.split_once('-') {
            Some((a, b)) => one(a).zip(one(b)),
            None => one(s).map(|p| (p, p)),
        };
        match parsed {
            Some((a, b)) if a <= b => Some((a, b)),
            Some((a, b)) => {
                self.error(
                    e.line,
                    format!(
                        "{ctx}dst_port = \"{s}\": reversed range ({a} is above {b}); write \"{b}-{a}\""
                    ),
                );
                None
            }
            None => {
                self.error(e.line, format!("{ctx}dst_port = \"{s}\": must be {VALID}"));
                None
            }
        }
    }

    fn flood(&mut self, e: &Entry<'_>) -> Flood {
        let mut f = Flood::default();
        let Some(view) = self.table(e, "flood", FLOOD_KEYS) else {
            return f;
        };
        if let Some((r, b)) = self.rate_burst(
            "[flood] ",
            ("new_sources_rate", "new_sources_burst"),
            (view.get("new_sources_rate"), Some(DEFAULT_NEW_SOURCES_RATE)),
            (
                view.get("new_sources_burst"),
                Some(DEFAULT_NEW_SOURCES_BURST),
            ),
        ) {
            f.new_sources_rate = r;
            f.new_sources_burst = b;
        }
        if let Some(e) = view.get("syn_challenge") {
            if let Some(on) = self.boolean("[flood] ", e) {
                f.syn_challenge = on;
            }
        }
        if let Some((r, b)) = self.rate_burst(
            "[flood] ",
            ("syn_challenge_rate", "syn_challenge_burst"),
            (
                view.get("syn_challenge_rate"),
                Some(DEFAULT_SYN_CHALLENGE_RATE),
            ),
            (
                view.get("syn_challenge_burst"),
                Some(DEFAULT_SYN_CHALLENGE_BURST),
            ),
        ) {
            f.syn_challenge_rate = r;
            f.syn_challenge_burst = b;
        }
        f
    }

    fn table_sizes(&mut self, e: &Entry<'_>) -> Table {
        let mut t = Table::default();
        let Some(view) = self.table(e, "table", TABLE_KEYS) else {
            return t;
        };
        let ctx = "[table] ";
        if let Some(e) = view.get("max_sources") {
            if let Some(n) = self.int(ctx, e, TABLE_MIN_SOURCES.into(), TABLE_MAX_SOURCES.into()) {
                t.max_sources = n as u32;
            }
        }
        if let Some(e) = view.get("max_list_entries") {
            if let Some(n) = self.int(ctx, e, TABLE_MIN_LIST.into(), TABLE_MAX_LIST.into()) {
                t.max_list_entries = n as u32;
            }
        }
        t
    }

    fn duration(&mut self, e: &Entry<'_>) -> Option<Duration> {
        let ctx = "[autoban] ";
        let s = self.string(ctx, e, DURATION_EXAMPLES)?;
        match humantime::parse_duration(s.trim()) {
            Ok(d) if d > MAX_DURATION => {
                self.error(
                    e.line,
                    format!(
                        "{ctx}{} = \"{s}\": too long; must be at most \"{}d\"",
                        e.key,
                        MAX_DURATION.as_secs() / 86_400
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(err) => {
                self.error(
                    e.line,
                    format!("{ctx}{} = \"{s}\": not a valid duration ({err}); write {DURATION_EXAMPLES}", e.key),
                );
                None
            }
        }
    }

    fn autoban(&mut self, e: &Entry<'_>) -> Option<Autoban> {
        let view = self.table(e, "autoban", AUTOBAN_KEYS)?;
        let ctx = "[autoban] ";
        self.require(&view, "[autoban]", AUTOBAN_KEYS);
        let drops = view
            .get("drops")
            .and_then(|d| self.int(ctx, d, 1, u32::MAX as i64))
            .map(|n| n as u64);
        let positive = |cx: &mut Self, key: &str| -> Option<Duration> {
            let entry = view.get(key)?;
            let d = cx.duration(entry)?;
            if d.is_zero() {
                cx.error(
                    entry.line,
                    format!(
                        "{ctx}{key} = {}: must be longer than 0; write {DURATION_EXAMPLES}",
                        cx.raw(entry.item)
                    ),
                );
                return None;
            }
            Some(d)
        };
        let window = positive(self, "window");
        let ban = positive(self, "ban");
        let max_ban = positive(self, "max_ban");
        if let (Some(b), Some(m)) = (ban, max_ban) {
            if b > m {
                let be = view.get("ban").map(|x| (x.line, self.raw(x.item)));
                let me = view.get("max_ban").map(|x| self.raw(x.item));
                let (line, braw) = be.unwrap_or((view.line, String::new()));
                self.error(
                    line,
                    format!(
                        "{ctx}ban = {braw} is longer than max_ban = {}: ban must be at most max_ban",
                        me.unwrap_or_default()
                    ),
                );
                return None;
            }
        }
        Some(Autoban {
            drops: drops?,
            window: window?,
            ban: ban?,
            max_ban: max_ban?,
        })
    }
}

/// A CIDR (`10.0.0.0/8`) or bare address (`/32` or `/128`), host bits kept.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty".to_string());
    }
    match s.split_once('/') {
        None => IpAddr::from_str(s)
            .map(IpNet::from)
            .map_err(|_| "not an IP address".to_string()),
        Some((addr, len)) => {
            let addr =
                IpAddr::from_str(addr.trim()).map_err(|_| "not an IP address".to_string())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = len.trim();
            let n: u8 = if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) {
                len.parse().unwrap_or(u8::MAX)
            } else {
                return Err(format!("prefix length \"{len}\" is not a number"));
            };
            if n > max {
                return Err(format!(
                    "prefix length {len} is out of range ({} allows 0 to {max})",
                    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
                ));
            }
            IpNet::new(addr, n).map_err(|e| e.to_string())
        }
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
    let vowel = type_name
        .chars()
        .next()
        .is_some_and(|c| "aeiou".contains(c));
    format!("{} {type_name}", if vowel { "an" } else { "a" })
}

/// The valid key closest to a misspelled one, if close enough.
fn closest<'v>(key: &str, valid: &[&'v str]) -> Option<&'v str> {
    valid
        .iter()
        .map(|v| (edit_distance(key, v), *v))
        .filter(|(d, v)| *d > 0 && *d <= 2.max(v.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
