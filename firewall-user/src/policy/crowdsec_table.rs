//! `[crowdsec]`: checked like every other table, every problem with its
//! line. The secret files are only looked at for warnings (the gateway
//! may get them after the file is checked elsewhere); the bouncer reads
//! them at each use.

use std::{os::unix::fs::PermissionsExt, path::PathBuf, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::spanned::{Field, Val};
use super::{Cx, View, DURATION_EXAMPLES};
use crate::crowdsec::config::{url_problem, Config, DEFAULT_POLL, MAX_POLL, MIN_POLL};

/// `[crowdsec]` as serde reads it.
#[derive(Deserialize)]
pub(super) struct File {
    lapi_url: Field<String>,
    api_key_file: Field<String>,
    poll: Field<String>,
    push: Field<bool>,
    machine_id: Field<String>,
    password_file: Field<String>,
}

const CTX: &str = "[crowdsec] ";
const URL_EXAMPLE: &str = "an http:// URL such as \"http://127.0.0.1:8080\"";
/// Machine names CrowdSec stores; generous, but one line of text.
const MACHINE_ID_MAX: usize = 128;

impl Cx<'_> {
    pub(super) fn crowdsec(&mut self, v: &View<'_, File>) -> Option<Config> {
        let f = v.body;
        self.require(v, "[crowdsec]", &["lapi_url", "api_key_file"]);
        let lapi_url = f.lapi_url.as_ref().and_then(|u| {
            let s = self.val(CTX, "lapi_url", u, URL_EXAMPLE)?;
            match url_problem(s.trim()) {
                Some(p) => {
                    self.error(self.at(u), format!("{CTX}lapi_url = \"{s}\": {p}"));
                    None
                }
                None => Some(s.trim().trim_end_matches('/').to_string()),
            }
        });
        let api_key_file = self.secret_file(
            &f.api_key_file,
            "api_key_file",
            "`cscli bouncers add NAME -k KEY`",
        );
        let poll = f.poll.as_ref().map_or(Some(DEFAULT_POLL), |p| self.poll(p));
        let push = f
            .push
            .as_ref()
            .map_or(Some(false), |p| self.boolean(CTX, "push", p));
        let machine_id = f.machine_id.as_ref().and_then(|m| {
            let s = self.val(CTX, "machine_id", m, "the watcher's name, such as \"gw-eu-1\"")?;
            let valid = !s.is_empty()
                && s.len() <= MACHINE_ID_MAX
                && s.chars().all(|c| c.is_ascii_graphic());
            if !valid {
                let msg = format!(
                    "{CTX}machine_id = {}: must be 1 to {MACHINE_ID_MAX} printable ASCII characters without spaces, such as \"gw-eu-1\"",
                    self.raw(m)
                );
                self.error(self.at(m), msg);
                return None;
            }
            Some(s.clone())
        });
        let password_file = self.secret_file(
            &f.password_file,
            "password_file",
            "`cscli machines add NAME --password P -f FILE`",
        );
        if push == Some(true) {
            let missing: Vec<&str> = ["machine_id", "password_file"]
                .into_iter()
                .filter(|k| !v.has(k))
                .collect();
            if !missing.is_empty() {
                let line = f.push.as_ref().map_or(v.line, |p| self.at(p));
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

    fn poll(&mut self, p: &Spanned<Val<String>>) -> Option<Duration> {
        let range = format!(
            "from \"{}ms\" to \"{}m\"",
            MIN_POLL.as_millis(),
            MAX_POLL.as_secs() / 60
        );
        let (line, raw) = (self.at(p), self.raw(p));
        match self.duration(CTX, "poll", p)? {
            Ok(d) if (MIN_POLL..=MAX_POLL).contains(&d) => return Some(d),
            Ok(_) => self.error(line, format!("{CTX}poll = {raw}: must be {range}")),
            Err(err) => self.error(
                line,
                format!("{CTX}poll = {raw}: not a valid duration ({err}); write {DURATION_EXAMPLES}, {range}"),
            ),
        }
        None
    }

    /// A path to a file holding a secret. Missing or too open: warnings.
    fn secret_file(&mut self, f: &Field<String>, key: &str, how: &str) -> Option<PathBuf> {
        let e = f.as_ref()?;
        let what = "the path of a file, such as \"/etc/firewall/crowdsec.key\"";
        let s = self.val(CTX, key, e, what)?.clone();
        let line = self.at(e);
        if s.trim().is_empty() {
            let msg =
                format!("{CTX}{key} = \"\": must be the path of a file ({how} makes the secret)");
            self.error(line, msg);
            return None;
        }
        let path = PathBuf::from(s.trim());
        match std::fs::metadata(&path) {
            Err(err) => self.warning(
                line,
                format!("{CTX}{key} = \"{s}\": cannot read it yet ({err}); the bouncer retries until it can"),
            ),
            Ok(m) if m.permissions().mode() & 0o077 != 0 => self.warning(
                line,
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
