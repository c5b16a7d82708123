//! The semantic pass's tools: where a value is, what was written, and the
//! checks every table shares (types, integer ranges, durations, CIDRs,
//! rate/burst pairs, unknown and missing keys), each naming its problem
//! with its line, the bad value and what would be valid. The tables
//! themselves are checked in `sections` (and `fleet`, `crowdsec_table`).

use std::{ops::Range, time::Duration};

use firewall_common::bucket::{Limit, LimitError, MAX_RATE};
use ipnet::IpNet;
use toml::{Spanned, Value};

use super::spanned::{fields, Field, List, Section, Val};
use super::{Problem, Severity};
use crate::addr::{parse_net, CIDR_EXAMPLES};

pub(super) const TOP_LEVEL_HINT: &str =
    "top-level keys such as allow and block must come before the first [table]";
pub(super) const DURATION_EXAMPLES: &str = "a duration such as \"30s\", \"10m\", \"1h\" or \"2d\"";
pub(super) const PORT_VALID: &str =
    "a port from 1 to 65535 (dst_port = 22) or a range \"A-B\" with A <= B (dst_port = \"1000-2000\")";
pub(super) const PROTOCOLS: &str = "one of \"tcp\", \"udp\", \"icmp\", \"any\"";
/// Rule names are stored in 32 bytes in the rules map.
pub(super) const RULE_NAME_MAX: usize = 32;
/// Longest ban (see `clock::MAX_TTL`).
pub(super) const MAX_DURATION: Duration = crate::clock::MAX_TTL;

/// A table that was read, with the line of its header (or first key).
pub(super) struct View<'f, T> {
    pub(super) line: usize,
    pub(super) keys: &'f [(String, Range<usize>)],
    pub(super) body: &'f T,
}

impl<T> View<'_, T> {
    pub(super) fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == key)
    }
}

/// A rate/burst pair to check: each key with its value, if written, and
/// the default used when it is not (`None`: the key is required).
pub(super) struct Pair<'f> {
    keys: (&'static str, &'static str),
    rate: (Option<&'f Spanned<Val<i64>>>, Option<u64>),
    burst: (Option<&'f Spanned<Val<i64>>>, Option<u64>),
}

impl<'f> Pair<'f> {
    /// `rate` and `burst`, both required.
    pub(super) fn required(rate: &'f Field<i64>, burst: &'f Field<i64>) -> Self {
        Pair {
            keys: ("rate", "burst"),
            rate: (rate.as_ref(), None),
            burst: (burst.as_ref(), None),
        }
    }

    /// Two optional keys, each with the default used when it is not written.
    pub(super) fn defaulted(
        keys: (&'static str, &'static str),
        (rate, burst): (&'f Field<i64>, &'f Field<i64>),
        (rate_default, burst_default): (u64, u64),
    ) -> Self {
        Pair {
            keys,
            rate: (rate.as_ref(), Some(rate_default)),
            burst: (burst.as_ref(), Some(burst_default)),
        }
    }
}

/// The semantic pass: collects every problem of one file.
pub(super) struct Cx<'t> {
    pub(super) text: &'t str,
    /// Byte offsets of the text's newlines, for `line`.
    newlines: Vec<usize>,
    pub(super) problems: Vec<Problem>,
}

impl<'t> Cx<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        let newlines = text.match_indices('\n').map(|(i, _)| i).collect();
        Cx {
            text,
            newlines,
            problems: Vec::new(),
        }
    }

    /// The 1-based line of a span's start: a binary search of the
    /// newlines (a file of a million list entries asks a million times).
    pub(super) fn line(&self, span: &Range<usize>) -> usize {
        1 + self.newlines.partition_point(|&nl| nl < span.start)
    }

    pub(super) fn at<T>(&self, s: &Spanned<T>) -> usize {
        self.line(&s.span())
    }

    pub(super) fn error(&mut self, line: usize, message: String) {
        self.problems.push(Problem {
            line,
            message,
            severity: Severity::Error,
        });
    }

    pub(super) fn warning(&mut self, line: usize, message: String) {
        self.problems.push(Problem {
            line,
            message,
            severity: Severity::Warning,
        });
    }

    /// The value as written in the file (on one line, shortened), for messages.
    pub(super) fn raw<T>(&self, s: &Spanned<T>) -> String {
        let written = self.text.get(s.span()).unwrap_or("").trim();
        let one_line = written.split_whitespace().collect::<Vec<_>>().join(" ");
        if one_line.chars().count() > 60 {
            one_line.chars().take(57).chain("...".chars()).collect()
        } else {
            one_line
        }
    }

    /// A value of the expected type, or an error naming what was written.
    pub(super) fn val<'f, T>(
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
    pub(super) fn int(
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

    /// An optional integer key in `lo..=hi` (`None` when absent or bad).
    pub(super) fn int_key(
        &mut self,
        ctx: &str,
        key: &str,
        f: &Field<i64>,
        lo: i64,
        hi: i64,
    ) -> Option<i64> {
        self.int(ctx, key, f.as_ref()?, lo, hi)
    }

    pub(super) fn boolean(&mut self, ctx: &str, key: &str, f: &Spanned<Val<bool>>) -> Option<bool> {
        self.val(ctx, key, f, "true or false").copied()
    }

    /// A humantime duration (`[autoban]`, `[fleet] max_ttl`, `[crowdsec] poll`).
    pub(super) fn duration(
        &mut self,
        ctx: &str,
        key: &str,
        f: &Spanned<Val<String>>,
    ) -> Option<Result<Duration, String>> {
        let s = self.val(ctx, key, f, DURATION_EXAMPLES)?;
        Some(humantime::parse_duration(s.trim()).map_err(|e| e.to_string()))
    }

    /// A table read into `T`; an error naming what was written instead.
    pub(super) fn table<'f, T>(
        &mut self,
        name: &str,
        s: &'f Spanned<Section<T>>,
    ) -> Option<View<'f, T>>
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

    pub(super) fn view<'f, T>(&self, s: &'f Spanned<Section<T>>, body: &'f T) -> View<'f, T> {
        View {
            line: self.at(s),
            keys: &s.get_ref().keys,
            body,
        }
    }

    /// The tables of `[[name]]` (or `name = [{...}, ...]`).
    pub(super) fn tables<'f, T>(
        &mut self,
        name: &str,
        s: &'f Spanned<List<Section<T>>>,
    ) -> Vec<View<'f, T>>
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
    pub(super) fn found<T>(&self, v: &Value, s: &Spanned<T>) -> String {
        match v {
            Value::Table(_) => article("table"),
            v => format!("{} {}", article(v.type_str()), self.raw(s)),
        }
    }

    /// Report keys that are not in `valid` (`table`: `None` at the top
    /// level), with the closest valid key.
    pub(super) fn unknown_keys(
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

    pub(super) fn require<T>(&mut self, view: &View<'_, T>, what: &str, required: &[&str]) {
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

    /// Parse a CIDR or bare address; warn about host bits; return it
    /// normalized.
    pub(super) fn cidr(&mut self, s: &str, line: usize, what: &str) -> Option<IpNet> {
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

    /// An error at `line` for each address family with more of `nets`
    /// than a map of `cap` entries holds (`what`: count, family).
    pub(super) fn capacity(
        &mut self,
        nets: &[IpNet],
        cap: u32,
        line: usize,
        what: impl Fn(usize, &str) -> String,
    ) {
        let v4 = nets.iter().filter(|n| matches!(n, IpNet::V4(_))).count();
        for (count, fam) in [(v4, "IPv4"), (nets.len() - v4, "IPv6")] {
            if count > cap as usize {
                self.error(line, what(count, fam));
            }
        }
    }

    /// Check a rate/burst pair against what the fixed-point bucket holds.
    pub(super) fn rate_burst(&mut self, ctx: &str, p: Pair<'_>) -> Option<(u64, u64)> {
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
}

pub(super) fn family(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

/// "a string", "an integer", "an array"...
pub(super) fn article(type_name: &str) -> String {
    let vowel = type_name.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {type_name}", if vowel { "an" } else { "a" })
}

/// The valid key closest to a misspelled one, if close enough.
pub(super) fn closest<'v>(key: &str, valid: &[&'v str]) -> Option<&'v str> {
    valid
        .iter()
        .map(|v| (strsim::levenshtein(key, v), *v))
        .filter(|(d, v)| *d > 0 && *d <= 2.max(v.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}
