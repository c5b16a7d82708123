//! `[fleet]`: share blocklist entries with the other gateways through a
//! NATS JetStream key-value bucket (see docs/fleet.md).

use std::{path::PathBuf, time::Duration};

use firewall_common::Origin;

use super::{article, Cx, Entry, DURATION_EXAMPLES};

pub const DEFAULT_BUCKET: &str = "firewall-bans";
pub const DEFAULT_SHARE: [Origin; 2] = [Origin::Autoban, Origin::Manual];
pub const DEFAULT_MIN_PREFIX_V4: u8 = 8;
pub const DEFAULT_MIN_PREFIX_V6: u8 = 32;
/// An entry from the bus that expires later than this is refused.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(30 * 86_400);
pub const DEFAULT_OUTBOX: usize = 10_000;

const KEYS: &[&str] = &[
    "servers",
    "name",
    "bucket",
    "share",
    "creds",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "min_prefix_v4",
    "min_prefix_v6",
    "max_ttl",
    "outbox",
];
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

impl Cx<'_> {
    pub(super) fn fleet(&mut self, e: &Entry<'_>) -> Option<Fleet> {
        let view = self.table(e, "fleet", KEYS)?;
        let ctx = "[fleet] ";
        self.require(&view, "[fleet]", &["servers"]);
        let mut ok = true;
        let mut servers = Vec::new();
        if let Some(s) = view.get("servers") {
            const VALID: &str =
                "an array of NATS URLs such as [\"nats://10.0.0.5:4222\"] (nats:// or tls://)";
            match s.item.as_array() {
                Some(a) if !a.is_empty() => {
                    for v in a.iter() {
                        match v.as_str() {
                            Some(u) if valid_server(u.trim()) => servers.push(u.trim().to_string()),
                            _ => {
                                let line = self.value_line(v, s.line);
                                self.error(
                                    line,
                                    format!("{ctx}servers entry {}: must be a NATS URL such as \"nats://10.0.0.5:4222\" or \"tls://nats.example:4222\"", v.to_string().trim()),
                                );
                                ok = false;
                            }
                        }
                    }
                }
                _ => {
                    self.error(
                        s.line,
                        format!("{ctx}servers = {}: must be {VALID}", self.raw(s.item)),
                    );
                    ok = false;
                }
            }
        }
        let mut text = |cx: &mut Self, key: &str, valid: fn(&str) -> bool, what: &str| {
            let entry = view.get(key)?;
            match cx.string(ctx, entry, what) {
                Some(v) if valid(v) => Some(v.to_string()),
                Some(v) => {
                    cx.error(entry.line, format!("{ctx}{key} = \"{v}\": must be {what}"));
                    ok = false;
                    None
                }
                None => {
                    ok = false;
                    None
                }
            }
        };
        let name = text(
            self,
            "name",
            valid_name,
            "1 to 64 letters, digits, '-', '_' or '.'",
        )
        .unwrap_or_else(host_name);
        let bucket = text(
            self,
            "bucket",
            |b| {
                !b.is_empty()
                    && b.len() <= 64
                    && b.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"-_".contains(&c))
            },
            "a bucket name of letters, digits, '-' and '_'",
        )
        .unwrap_or_else(|| DEFAULT_BUCKET.to_string());
        let path = |p: &str| !p.trim().is_empty();
        let creds = text(self, "creds", path, "the path of a NATS credentials file");
        let tls_ca = text(self, "tls_ca", path, "the path of a CA bundle (PEM)");
        let tls_cert = text(
            self,
            "tls_cert",
            path,
            "the path of a client certificate (PEM)",
        );
        let tls_key = text(self, "tls_key", path, "the path of the client key (PEM)");
        if tls_cert.is_some() != tls_key.is_some() {
            self.error(
                view.line,
                format!("{ctx}tls_cert and tls_key go together: set both or neither"),
            );
            ok = false;
        }
        for (key, p) in [
            ("creds", &creds),
            ("tls_ca", &tls_ca),
            ("tls_cert", &tls_cert),
            ("tls_key", &tls_key),
        ] {
            if let (Some(p), Some(e)) = (p, view.get(key)) {
                if !std::path::Path::new(p).exists() {
                    self.warning(e.line, format!("{ctx}{key} = \"{p}\": no such file here (it must exist where `firewall run` runs)"));
                }
            }
        }
        let mut share = DEFAULT_SHARE.to_vec();
        if let Some(s) = view.get("share") {
            let names: Vec<&str> = SHAREABLE.iter().map(|o| o.name()).collect();
            let valid = format!("an array of origins from {}", names.join(", "));
            share.clear();
            match s.item.as_array() {
                Some(a) => {
                    for v in a.iter() {
                        match v
                            .as_str()
                            .and_then(|n| SHAREABLE.iter().find(|o| o.name() == n))
                        {
                            Some(o) if !share.contains(o) => share.push(*o),
                            Some(_) => {}
                            None => {
                                let line = self.value_line(v, s.line);
                                let note = if v.as_str() == Some("fleet") {
                                    " (entries from the fleet are never published again)"
                                } else {
                                    ""
                                };
                                self.error(
                                    line,
                                    format!(
                                        "{ctx}share entry {}: must be one of {}{note}",
                                        v.to_string().trim(),
                                        names.join(", ")
                                    ),
                                );
                                ok = false;
                            }
                        }
                    }
                }
                None => {
                    self.error(
                        s.line,
                        format!(
                            "{ctx}share = {}: must be {valid}, not {}",
                            self.raw(s.item),
                            article(s.item.type_name())
                        ),
                    );
                    ok = false;
                }
            }
        }
        let mut prefix = |cx: &mut Self, key: &str, max: i64, default: u8| match view.get(key) {
            None => default,
            Some(e) => cx.int(ctx, e, 1, max).map(|n| n as u8).unwrap_or_else(|| {
                ok = false;
                default
            }),
        };
        let min_prefix_v4 = prefix(self, "min_prefix_v4", 32, DEFAULT_MIN_PREFIX_V4);
        let min_prefix_v6 = prefix(self, "min_prefix_v6", 128, DEFAULT_MIN_PREFIX_V6);
        let max_ttl = match view.get("max_ttl") {
            None => DEFAULT_MAX_TTL,
            Some(e) => {
                match self
                    .string(ctx, e, DURATION_EXAMPLES)
                    .map(|s| (s, humantime::parse_duration(s.trim())))
                {
                    Some((_, Ok(d))) if !d.is_zero() && d <= crate::clock::MAX_TTL => d,
                    Some((s, _)) => {
                        self.error(e.line, format!("{ctx}max_ttl = \"{s}\": must be {DURATION_EXAMPLES}, from 1s to {}d", crate::clock::MAX_TTL.as_secs() / 86_400));
                        ok = false;
                        DEFAULT_MAX_TTL
                    }
                    None => {
                        ok = false;
                        DEFAULT_MAX_TTL
                    }
                }
            }
        };
        let outbox = match view.get("outbox") {
            None => DEFAULT_OUTBOX,
            Some(e) => self
                .int(ctx, e, 1, 1_000_000)
                .map(|n| n as usize)
                .unwrap_or_else(|| {
                    ok = false;
                    DEFAULT_OUTBOX
                }),
        };
        (ok && !servers.is_empty()).then(|| Fleet {
            servers,
            name,
            bucket,
            share,
            creds: creds.map(PathBuf::from),
            tls_ca: tls_ca.map(PathBuf::from),
            tls_cert: tls_cert.map(PathBuf::from),
            tls_key: tls_key.map(PathBuf::from),
            min_prefix_v4,
            min_prefix_v6,
            max_ttl,
            outbox,
        })
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
