//! `[fleet]`: share blocklist entries with the other gateways through a
//! NATS JetStream key-value bucket (see docs/fleet.md).

use std::{path::PathBuf, time::Duration};

use firewall_common::Origin;

use serde::Deserialize;
use toml::Spanned;

use super::spanned::{Field, List, Many, Val};
use super::{article, Cx, View, DURATION_EXAMPLES};

pub const DEFAULT_BUCKET: &str = "firewall-bans";
pub const DEFAULT_SHARE: [Origin; 2] = [Origin::Autoban, Origin::Manual];
pub const DEFAULT_MIN_PREFIX_V4: u8 = 8;
pub const DEFAULT_MIN_PREFIX_V6: u8 = 32;
/// An entry from the bus that expires later than this is refused.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(30 * 86_400);
pub const DEFAULT_OUTBOX: usize = 10_000;

/// `[fleet]` as serde reads it.
#[derive(Deserialize)]
pub(super) struct File {
    servers: Many<Val<String>>,
    name: Field<String>,
    bucket: Field<String>,
    share: Many<Val<String>>,
    creds: Field<String>,
    tls_ca: Field<String>,
    tls_cert: Field<String>,
    tls_key: Field<String>,
    min_prefix_v4: Field<i64>,
    min_prefix_v6: Field<i64>,
    max_ttl: Field<String>,
    outbox: Field<i64>,
}

const SHAREABLE: &[Origin] = &[
    Origin::Config,
    Origin::Manual,
    Origin::Import,
    Origin::Autoban,
    Origin::Crowdsec,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// NATS URLs (`nats://host:4222`, `tls://host:4222`).
    pub servers: Vec<String>,
    /// This gateway in the fleet: written into every entry it publishes.
    pub name: String,
    pub bucket: String,
    /// Local origins published to the bucket.
    pub share: Vec<Origin>,
    /// A NATS credentials file (JWT and nkey seed).
    pub creds: Option<PathBuf>,
    /// CA bundle to verify the servers (implies TLS).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub min_prefix_v4: u8,
    pub min_prefix_v6: u8,
    pub max_ttl: Duration,
    /// Most entries waiting for the bus; beyond it the oldest are dropped.
    pub outbox: usize,
}

/// The host name, the default gateway name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| valid_name(s))
        .unwrap_or_else(|| "gateway".to_string())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn valid_server(s: &str) -> bool {
    let rest = match s.split_once("://") {
        Some(("nats" | "tls", rest)) => rest,
        Some(_) => return false,
        None => s,
    };
    let host_port = rest.rsplit('@').next().unwrap_or("");
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host_port, None),
    };
    !host.is_empty()
        && !host.contains('/')
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

fn valid_bucket(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= 64
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_".contains(&c))
}

fn valid_path(p: &str) -> bool {
    !p.trim().is_empty()
}

const CTX: &str = "[fleet] ";

impl Cx<'_> {
    pub(super) fn fleet(&mut self, v: &View<'_, File>) -> Option<Fleet> {
        let f = v.body;
        let errors = self.problems.iter().filter(|p| p.is_error()).count();
        self.require(v, "[fleet]", &["servers"]);
        let servers = f
            .servers
            .as_ref()
            .map(|s| self.servers(s))
            .unwrap_or_default();
        let name = self
            .text(
                &f.name,
                "name",
                valid_name,
                "1 to 64 letters, digits, '-', '_' or '.'",
            )
            .unwrap_or_else(host_name);
        let bucket = self
            .text(
                &f.bucket,
                "bucket",
                valid_bucket,
                "a bucket name of letters, digits, '-' and '_'",
            )
            .unwrap_or_else(|| DEFAULT_BUCKET.to_string());
        let paths = [
            ("creds", &f.creds, "the path of a NATS credentials file"),
            ("tls_ca", &f.tls_ca, "the path of a CA bundle (PEM)"),
            ("tls_cert", &f.tls_cert, "the path of a client certificate (PEM)"),
            ("tls_key", &f.tls_key, "the path of the client key (PEM)"),
        ]
        .map(|(key, field, what)| {
            let p = self.text(field, key, valid_path, what)?;
            if !std::path::Path::new(&p).exists() {
                let line = field.as_ref().map_or(v.line, |x| self.at(x));
                self.warning(line, format!("{CTX}{key} = \"{p}\": no such file here (it must exist where `firewall run` runs)"));
            }
            Some(PathBuf::from(p))
        });
        if paths[2].is_some() != paths[3].is_some() {
            self.error(
                v.line,
                format!("{CTX}tls_cert and tls_key go together: set both or neither"),
            );
        }
        let share = f
            .share
            .as_ref()
            .map_or(DEFAULT_SHARE.to_vec(), |s| self.share(s));
        let mut prefix = |field: &Field<i64>, key: &str, max: i64, default: u8| {
            self.int_key(CTX, key, field, 1, max)
                .map_or(default, |n| n as u8)
        };
        let min_prefix_v4 = prefix(&f.min_prefix_v4, "min_prefix_v4", 32, DEFAULT_MIN_PREFIX_V4);
        let min_prefix_v6 = prefix(
            &f.min_prefix_v6,
            "min_prefix_v6",
            128,
            DEFAULT_MIN_PREFIX_V6,
        );
        let max_ttl = f
            .max_ttl
            .as_ref()
            .map_or(DEFAULT_MAX_TTL, |x| self.max_ttl(x));
        let outbox = self.int_key(CTX, "outbox", &f.outbox, 1, 1_000_000);
        let failed = self.problems.iter().filter(|p| p.is_error()).count() > errors;
        let [creds, tls_ca, tls_cert, tls_key] = paths;
        (!failed && !servers.is_empty()).then(|| Fleet {
            servers,
            name,
            bucket,
            share,
            creds,
            tls_ca,
            tls_cert,
            tls_key,
            min_prefix_v4,
            min_prefix_v6,
            max_ttl,
            outbox: outbox.map_or(DEFAULT_OUTBOX, |n| n as usize),
        })
    }

    /// A string key checked by `valid`.
    fn text(
        &mut self,
        f: &Field<String>,
        key: &str,
        valid: fn(&str) -> bool,
        what: &str,
    ) -> Option<String> {
        let x = f.as_ref()?;
        let s = self.val(CTX, key, x, what)?;
        if valid(s) {
            return Some(s.clone());
        }
        self.error(self.at(x), format!("{CTX}{key} = \"{s}\": must be {what}"));
        None
    }

    fn servers(&mut self, s: &Spanned<List<Val<String>>>) -> Vec<String> {
        let mut servers = Vec::new();
        match s.get_ref() {
            List::Items(items) if !items.is_empty() => {
                for item in items {
                    match item.get_ref() {
                        Val::Ok(u) if valid_server(u.trim()) => servers.push(u.trim().to_string()),
                        _ => {
                            let msg = format!("{CTX}servers entry {}: must be a NATS URL such as \"nats://10.0.0.5:4222\" or \"tls://nats.example:4222\"", self.raw(item));
                            self.error(self.at(item), msg);
                        }
                    }
                }
            }
            _ => {
                let msg = format!("{CTX}servers = {}: must be an array of NATS URLs such as [\"nats://10.0.0.5:4222\"] (nats:// or tls://)", self.raw(s));
                self.error(self.at(s), msg);
            }
        }
        servers
    }

    fn share(&mut self, s: &Spanned<List<Val<String>>>) -> Vec<Origin> {
        let names: Vec<&str> = SHAREABLE.iter().map(|o| o.name()).collect();
        let mut share = Vec::new();
        let items = match s.get_ref() {
            List::Items(items) => items,
            List::Bad(v) => {
                let msg = format!(
                    "{CTX}share = {}: must be an array of origins from {}, not {}",
                    self.raw(s),
                    names.join(", "),
                    article(v.type_str())
                );
                self.error(self.at(s), msg);
                return share;
            }
        };
        for item in items {
            let name = match item.get_ref() {
                Val::Ok(n) => Some(n.as_str()),
                Val::Bad(_) => None,
            };
            match name.and_then(|n| SHAREABLE.iter().find(|o| o.name() == n)) {
                Some(o) if !share.contains(o) => share.push(*o),
                Some(_) => {}
                None => {
                    let note = if name == Some("fleet") {
                        " (entries from the fleet are never published again)"
                    } else {
                        ""
                    };
                    let msg = format!(
                        "{CTX}share entry {}: must be one of {}{note}",
                        self.raw(item),
                        names.join(", ")
                    );
                    self.error(self.at(item), msg);
                }
            }
        }
        share
    }

    fn max_ttl(&mut self, x: &Spanned<Val<String>>) -> Duration {
        match self.duration(CTX, "max_ttl", x) {
            Some(Ok(d)) if !d.is_zero() && d <= crate::clock::MAX_TTL => d,
            Some(_) => {
                let msg = format!(
                    "{CTX}max_ttl = {}: must be {DURATION_EXAMPLES}, from 1s to {}d",
                    self.raw(x),
                    crate::clock::MAX_TTL.as_secs() / 86_400
                );
                self.error(self.at(x), msg);
                DEFAULT_MAX_TTL
            }
            None => DEFAULT_MAX_TTL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    fn problems(text: &str) -> String {
        match parse(text) {
            Ok(_) => String::new(),
            Err(p) => p.iter().map(|p| format!("{p}\n")).collect(),
        }
    }

    #[test]
    fn the_contract_example_parses_with_defaults() {
        let (p, _) = parse(
            "[fleet]\nservers = [\"nats://10.0.0.5:4222\"]\nname = \"gw-eu-1\"\nbucket = \"firewall-bans\"\nshare = [\"autoban\", \"manual\"]\n",
        )
        .unwrap();
        let f = p.fleet.unwrap();
        assert_eq!(f.servers, ["nats://10.0.0.5:4222"]);
        assert_eq!(f.name, "gw-eu-1");
        assert_eq!((f.min_prefix_v4, f.min_prefix_v6), (8, 32));
        assert_eq!(f.outbox, 10_000);
        let (p, _) =
            parse("[fleet]\nservers = [\"tls://nats.example:4222\", \"10.0.0.6\"]\n").unwrap();
        assert_eq!(p.fleet.unwrap().bucket, "firewall-bans");
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        for (text, line, needle) in [
            ("[fleet]\nname = \"x\"\n", 1, "missing key `servers`"),
            ("[fleet]\nservers = []\n", 2, "servers = []"),
            (
                "[fleet]\nservers = [\"http://x:80\"]\n",
                2,
                "\"http://x:80\"",
            ),
            (
                "[fleet]\nservers = [\"nats://x:99999\"]\n",
                2,
                "nats://x:99999",
            ),
            (
                "[fleet]\nservers = [\"nats://a\"]\nname = \"has space\"\n",
                3,
                "name = \"has space\"",
            ),
            (
                "[fleet]\nservers = [\"nats://a\"]\nbucket = \"a.b\"\n",
                3,
                "bucket = \"a.b\"",
            ),
            (
                "[fleet]\nservers = [\"nats://a\"]\nshare = [\"fleet\"]\n",
                3,
                "never published again",
            ),
            (
                "[fleet]\nservers = [\"nats://a\"]\nshare = \"manual\"\n",
                3,
                "share = \"manual\"",
            ),
            (
                "[fleet]\nservers = [\"nats://a\"]\nmin_prefix_v4 = 0\n",
                3,
                "min_prefix_v4 = 0",
            ),
            (
                "[fleet]\nservers = [\"nats://a\"]\nmin_prefix_v6 = 129\n",
                3,
                "min_prefix_v6 = 129",
            ),
            (
                "[fleet]\nservers = [\"nats://a\"]\nmax_ttl = \"forever\"\n",
                3,
                "max_ttl = \"forever\"",
            ),
            (
                "[fleet]\nservers = [\"nats://a\"]\ntls_cert = \"/c.pem\"\n",
                1,
                "tls_cert and tls_key",
            ),
            (
                "[fleet]\nservers = [\"nats://a\"]\nserver = \"x\"\n",
                3,
                "did you mean `servers`",
            ),
        ] {
            let got = problems(text);
            assert!(
                got.contains(&format!("line {line}: error")) && got.contains(needle),
                "{text:?}: want line {line} with {needle:?}, got:\n{got}"
            );
        }
    }
}
