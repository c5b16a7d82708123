//! `[crowdsec]` as the daemon uses it (validated by `policy`), and the two
//! secrets it points at.
//!
//! The bouncer key and the watcher password live in files, never in the
//! policy file, and are read at each use: a rotated key is picked up
//! without a reload, and neither value is ever put in an error, an event or
//! the status file (only the file's path is).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};

/// Default `poll`: how often deltas are pulled.
pub const DEFAULT_POLL: Duration = Duration::from_secs(10);
/// Shortest and longest `poll`.
pub const MIN_POLL: Duration = Duration::from_millis(200);
pub const MAX_POLL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `http://host:port`, without a trailing slash.
    pub lapi_url: String,
    pub api_key_file: PathBuf,
    pub poll: Duration,
    /// Send auto-bans as alerts (needs `machine_id` and `password_file`).
    pub push: bool,
    pub machine_id: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// What is wrong with a `lapi_url`, if anything.
pub fn url_problem(url: &str) -> Option<String> {
    if url.starts_with("https://") {
        return Some(
            "https is not supported; the LAPI is local: use http://127.0.0.1:8080 or put it behind a local TLS proxy"
                .into(),
        );
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Some("must start with http://, such as \"http://127.0.0.1:8080\"".into());
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Some("has no host, such as \"http://127.0.0.1:8080\"".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain spaces or control characters".into());
    }
    if rest.contains('?') || rest.contains('#') {
        return Some("must be the API's base URL, without a query or fragment".into());
    }
    None
}

/// Read a secret (bouncer key or watcher password): one line, trimmed. The
/// error names the file, never the content.
pub fn read_secret(path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    // It travels in an HTTP header or a JSON string: printable ASCII only.
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(
            "the {what} file {} must hold one line of printable ASCII without spaces",
            path.display()
        );
    }
    Ok(secret.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(url_problem("http://127.0.0.1:8080"), None);
        assert_eq!(url_problem("http://[::1]:8080/"), None);
        assert_eq!(url_problem("http://lapi.local"), None);
        for bad in [
            "https://127.0.0.1:8080",
            "127.0.0.1:8080",
            "ftp://x",
            "http://",
            "http:///v1",
            "http://a b",
            "http://x/?a=1",
        ] {
            assert!(url_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_trimmed_and_never_echoed() {
        let dir = std::env::temp_dir().join(format!("fw-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("key");
        std::fs::write(&p, "abc123\n").unwrap();
        assert_eq!(read_secret(&p, "api key").unwrap(), "abc123");
        std::fs::write(&p, "  \n").unwrap();
        assert!(format!("{:#}", read_secret(&p, "api key").unwrap_err()).contains("empty"));
        std::fs::write(&p, "sec ret-value\n").unwrap();
        let e = format!("{:#}", read_secret(&p, "api key").unwrap_err());
        assert!(
            !e.contains("sec ret-value") && e.contains("printable"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            read_secret(&dir.join("missing"), "api key").unwrap_err()
        );
        assert!(e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
