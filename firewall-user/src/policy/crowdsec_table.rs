//! `[crowdsec]`: checked like every other table, every problem with its
//! line. The secret files are only looked at for warnings (the gateway
//! may get them after the file is checked elsewhere); the bouncer reads
//! them at each use.

use std::{os::unix::fs::PermissionsExt, path::PathBuf, time::Duration};

use super::{Cx, Entry, TableView, DURATION_EXAMPLES};
use crate::crowdsec::config::{url_problem, Config, DEFAULT_POLL, MAX_POLL, MIN_POLL};

const KEYS: &[&str] = &[
    "lapi_url",
    "api_key_file",
    "poll",
    "push",
    "machine_id",
    "password_file",
];
const CTX: &str = "[crowdsec] ";
const URL_EXAMPLE: &str = "an http:// URL such as \"http://127.0.0.1:8080\"";
/// Machine names CrowdSec stores; generous, but one line of text.
const MACHINE_ID_MAX: usize = 128;

impl Cx<'_> {
    pub(super) fn crowdsec(&mut self, e: &Entry<'_>) -> Option<Config> {
        let view = self.table(e, "crowdsec", KEYS)?;
        self.require(&view, "[crowdsec]", &["lapi_url", "api_key_file"]);
        let lapi_url = view.get("lapi_url").and_then(|u| {
            let s = self.string(CTX, u, URL_EXAMPLE)?;
            match url_problem(s.trim()) {
                Some(p) => {
                    self.error(u.line, format!("{CTX}lapi_url = \"{s}\": {p}"));
                    None
                }
                None => Some(s.trim().trim_end_matches('/').to_string()),
            }
        });
        let api_key_file =
            self.secret_file(&view, "api_key_file", "`cscli bouncers add NAME -k KEY`");
        let poll = match view.get("poll") {
            None => Some(DEFAULT_POLL),
            Some(p) => self.poll(p),
        };
        let push = match view.get("push") {
            None => Some(false),
            Some(p) => self.boolean(CTX, p),
        };
        let machine_id = view.get("machine_id").and_then(|m| {
            let s = self.string(CTX, m, "the watcher's name, such as \"gw-eu-1\"")?;
            let valid = !s.is_empty()
                && s.len() <= MACHINE_ID_MAX
                && s.chars().all(|c| c.is_ascii_graphic());
            if !valid {
                self.error(
                    m.line,
                    format!(
                        "{CTX}machine_id = {}: must be 1 to {MACHINE_ID_MAX} printable ASCII characters without spaces, such as \"gw-eu-1\"",
                        self.raw(m.item)
                    ),
                );
                return None;
            }
            Some(s.to_string())
        });
        let password_file = self.secret_file(
            &view,
            "password_file",
            "`cscli machines add NAME --password P -f FILE`",
        );
        if push == Some(true) {
            let missing: Vec<&str> = ["machine_id", "password_file"]
                .into_iter()
                .filter(|k| view.get(k).is_none())
                .collect();
            if !missing.is_empty() {
                let line = view.get("push").map(|p| p.line).unwrap_or(view.line);
                self.error(
                    line,
                    format!(
                        "{CTX}push = true needs {} to log in as a watcher (`cscli machines add NAME --password P -f FILE`)",
                        missing.join(" and ")
                    ),
                );
            }
        }
        let cfg = Config {
            lapi_url: lapi_url?,
            api_key_file: api_key_file?,
            poll: poll?,
            push: push?,
            machine_id,
            password_file,
        };
        if cfg.push && (cfg.machine_id.is_none() || cfg.password_file.is_none()) {
            return None;
        }
        Some(cfg)
    }

    fn poll(&mut self, e: &Entry<'_>) -> Option<Duration> {
        let s = self.string(CTX, e, DURATION_EXAMPLES)?;
        let range = format!(
            "from \"{}ms\" to \"{}m\"",
            MIN_POLL.as_millis(),
            MAX_POLL.as_secs() / 60
        );
        match humantime::parse_duration(s.trim()) {
            Ok(d) if (MIN_POLL..=MAX_POLL).contains(&d) => Some(d),
            Ok(_) => {
                self.error(e.line, format!("{CTX}poll = \"{s}\": must be {range}"));
                None
            }
            Err(err) => {
                self.error(
                    e.line,
                    format!("{CTX}poll = \"{s}\": not a valid duration ({err}); write {DURATION_EXAMPLES}, {range}"),
                );
                None
            }
        }
    }

    /// A path to a file holding a secret. Missing or too open: warnings.
    fn secret_file(&mut self, view: &TableView<'_>, key: &str, how: &str) -> Option<PathBuf> {
        let e = view.get(key)?;
        let s = self.string(
            CTX,
            e,
            "the path of a file, such as \"/etc/firewall/crowdsec.key\"",
        )?;
        if s.trim().is_empty() {
            self.error(
                e.line,
                format!("{CTX}{key} = \"\": must be the path of a file ({how} makes the secret)"),
            );
            return None;
        }
        let path = PathBuf::from(s.trim());
        match std::fs::metadata(&path) {
            Err(err) => self.warning(
                e.line,
                format!("{CTX}{key} = \"{s}\": cannot read it yet ({err}); the bouncer retries until it can"),
            ),
            Ok(m) if m.permissions().mode() & 0o077 != 0 => self.warning(
                e.line,
                format!(
                    "{CTX}{key} = \"{s}\" is readable by other users (mode {:o}); chmod 600 it",
                    m.permissions().mode() & 0o777
                ),
            ),
            Ok(_) => {}
        }
        Some(path)
    }
}
