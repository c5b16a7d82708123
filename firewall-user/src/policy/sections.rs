//! The semantic pass over each table of the file: ranges, the rules
//! between keys, duplicates and capacities, into a normalized [`Policy`].

use std::{collections::HashMap, time::Duration};

use firewall_common::maps::{LIMIT_CAPACITY, MAX_RULES};
use ipnet::IpNet;
use toml::{Spanned, Value};

use super::check::*;
use super::file::*;
use super::model::*;
use super::spanned::{fields, Field, List, Section, Val};
use crate::addr::CIDR_EXAMPLES;

impl Cx<'_> {
    pub(super) fn policy(&mut self, file: Section<File>) -> Policy {
        let mut policy = Policy::default();
        self.unknown_keys(&file.keys, None, fields::<File>());
        let Ok(f) = &file.body else {
            return policy;
        };
        let allow = f.allow.as_ref().map(|l| self.cidr_list(l, "allow"));
        let block = f.block.as_ref().map(|l| self.cidr_list(l, "block"));
        if let (Some(allow), Some(block)) = (&allow, &block) {
            let allowed: HashMap<IpNet, usize> = allow.iter().copied().collect();
            for (net, bline) in block {
                if let Some(aline) = allowed.get(net) {
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
        // The lists fill maps of the size this file's [table] gives them.
        let cap = policy.table.max_list_entries;
        for (l, nets, name) in [
            (&f.allow, &policy.allow, "allow"),
            (&f.block, &policy.block, "block"),
        ] {
            if let Some(l) = l {
                self.capacity(nets, cap, self.at(l), |count, fam| {
                    format!("{name} has {count} {fam} entries; at most {cap} fit (raise [table] max_list_entries)")
                });
            }
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
    pub(super) fn cidr_list(
        &mut self,
        l: &Spanned<List<Val<String>>>,
        list: &str,
    ) -> Vec<(IpNet, usize)> {
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
            seen.insert(net, line);
            out.push((net, line));
        }
        out
    }

    pub(super) fn defaults(&mut self, v: &View<'_, DefaultsFile>) -> Defaults {
        let (mut d, f, ctx) = (Defaults::default(), v.body, "[defaults] ");
        let pair = Pair::defaulted(
            ("rate", "burst"),
            (&f.rate, &f.burst),
            (DEFAULT_RATE, DEFAULT_BURST),
        );
        if let Some((r, b)) = self.rate_burst(ctx, pair) {
            (d.rate, d.burst) = (r, b);
        }
        if let Some(n) = self.int_key(ctx, "ipv4_prefix", &f.ipv4_prefix, 1, 32) {
            d.ipv4_prefix = n as u8;
        }
        if let Some(n) = self.int_key(ctx, "ipv6_prefix", &f.ipv6_prefix, 1, 128) {
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

    pub(super) fn limits(&mut self, s: &Spanned<List<Section<LimitFile>>>) -> Vec<LimitClass> {
        let (mut out, ctx) = (Vec::new(), "[[limit]] ");
        let mut seen: HashMap<IpNet, usize> = HashMap::new();
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
            let pair = Pair::required(&f.rate, &f.burst);
            if let (Some(cidr), Some((rate, burst))) = (cidr, self.rate_burst(ctx, pair)) {
                out.push(LimitClass { cidr, rate, burst });
            }
        }
        let cidrs: Vec<IpNet> = out.iter().map(|c| c.cidr).collect();
        self.capacity(&cidrs, LIMIT_CAPACITY, self.at(s), |count, fam| {
            format!("{count} {fam} [[limit]] classes; at most {LIMIT_CAPACITY} fit")
        });
        out
    }

    pub(super) fn rule_name(
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

    pub(super) fn rules(&mut self, s: &Spanned<List<Section<RuleFile>>>) -> Vec<Rule> {
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
            let pair = Pair::required(&f.rate, &f.burst);
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
    pub(super) fn port(&mut self, ctx: &str, p: &Spanned<Val<Port>>) -> Option<(u16, u16)> {
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

    pub(super) fn flood(&mut self, v: &View<'_, FloodFile>) -> (Flood, SynChallenge) {
        let (f, ctx) = (v.body, "[flood] ");
        let (mut flood, mut ch) = (Flood::default(), SynChallenge::default());
        let pair = Pair::defaulted(
            ("new_sources_rate", "new_sources_burst"),
            (&f.new_sources_rate, &f.new_sources_burst),
            (DEFAULT_NEW_SOURCES_RATE, DEFAULT_NEW_SOURCES_BURST),
        );
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
        let pair = Pair::defaulted(
            ("syn_challenge_rate", "syn_challenge_burst"),
            (&f.syn_challenge_rate, &f.syn_challenge_burst),
            (DEFAULT_SYN_CHALLENGE_RATE, DEFAULT_SYN_CHALLENGE_BURST),
        );
        if let Some((r, b)) = self.rate_burst(ctx, pair) {
            (ch.rate, ch.burst) = (r, b);
        }
        (flood, ch)
    }

    pub(super) fn table_sizes(&mut self, v: &View<'_, TableFile>) -> Table {
        let (mut t, f, ctx) = (Table::default(), v.body, "[table] ");
        let (lo, hi) = (TABLE_MIN_SOURCES.into(), TABLE_MAX_SOURCES.into());
        if let Some(n) = self.int_key(ctx, "max_sources", &f.max_sources, lo, hi) {
            t.max_sources = n as u32;
        }
        let (lo, hi) = (TABLE_MIN_LIST.into(), TABLE_MAX_LIST.into());
        if let Some(n) = self.int_key(ctx, "max_list_entries", &f.max_list_entries, lo, hi) {
            t.max_list_entries = n as u32;
        }
        t
    }

    /// An `[autoban]` duration: longer than 0, at most `MAX_DURATION`.
    pub(super) fn ban_duration(&mut self, key: &str, f: &Field<String>) -> Option<Duration> {
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

    pub(super) fn autoban(&mut self, v: &View<'_, AutobanFile>) -> Option<Autoban> {
        let (f, ctx) = (v.body, "[autoban] ");
        self.require(v, "[autoban]", fields::<AutobanFile>());
        let drops = self.int_key(ctx, "drops", &f.drops, 1, u32::MAX as i64);
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
