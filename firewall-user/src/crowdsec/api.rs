//! The few LAPI calls we make, over plain HTTP with a blocking client (the
//! worker runs on its own thread; the data plane never waits on it).
//!
//! Errors say what failed and never carry the key, the password or the
//! token.

use std::time::Duration;

use serde_json::Value;

use super::decision::Stream;

/// Biggest answer read: a startup pull of 100,000 decisions is about 13 MB.
const MAX_BODY: u64 = 256 << 20;
/// A delta pull or a push; a stopped LAPI costs at most this much.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A startup pull may carry the whole decision table.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub enum Failure {
    /// Not reached, timed out, or an HTTP error status.
    Unreachable(String),
    /// 401/403: key, password or token refused.
    Refused(String),
    /// An answer that is not what the API documents: rejected whole.
    Malformed { why: String, bytes: usize },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(s) | Failure::Refused(s) => f.write_str(s),
            Failure::Malformed { why, bytes } => {
                write!(f, "malformed answer ({bytes} bytes): {why}")
            }
        }
    }
}

pub struct Lapi {
    agent: ureq::Agent,
    base: String,
}

/// The LAPI's own explanation, if it sent one (`{"message": "..."}`).
fn lapi_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

impl Lapi {
    pub fn new(base: &str) -> Lapi {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(3)))
            .timeout_global(Some(TIMEOUT))
            // A local API: no proxy from the environment, no redirects.
            .proxy(None)
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent(concat!("firewall-xdp-bouncer/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Lapi {
            agent,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Status and body of a finished request.
    fn finish(
        what: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, String), Failure> {
        let mut resp = r.map_err(|e| Failure::Unreachable(format!("{what}: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| Failure::Unreachable(format!("{what}: reading the answer: {e}")))?;
        match status {
            200..=299 => Ok((status, body)),
            401 | 403 => Err(Failure::Refused(format!(
                "{what}: refused ({status}): {}",
                lapi_message(&body)
            ))),
            _ => Err(Failure::Unreachable(format!(
                "{what}: HTTP {status}: {}",
                lapi_message(&body)
            ))),
        }
    }

    /// `GET /v1/decisions/stream[?startup=true]` with the bouncer key.
    pub fn stream(&self, key: &str, startup: bool) -> Result<Stream, Failure> {
        let path = if startup {
            "/v1/decisions/stream?startup=true"
        } else {
            "/v1/decisions/stream"
        };
        let r = self
            .agent
            .get(self.url(path))
            .header("X-Api-Key", key)
            .config()
            .timeout_global(Some(if startup { STARTUP_TIMEOUT } else { TIMEOUT }))
            .build()
            .call();
        let (_, body) = Self::finish("pulling decisions", r)?;
        serde_json::from_str(&body).map_err(|e| Failure::Malformed {
            why: e.to_string(),
            bytes: body.len(),
        })
    }

    /// `POST /v1/watchers/login`: a JWT for the alerts.
    pub fn login(&self, machine_id: &str, password: &str) -> Result<String, Failure> {
        let r = self
            .agent
            .post(self.url("/v1/watchers/login"))
            .send_json(serde_json::json!({
                "machine_id": machine_id,
                "password": password,
                "scenarios": [super::watcher::SCENARIO],
            }));
        let (_, body) = Self::finish("watcher login", r)?;
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("token")?.as_str().map(str::to_string))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Failure::Malformed {
                why: "watcher login: no token in the answer".into(),
                bytes: body.len(),
            })
    }

    /// `POST /v1/alerts` with a token from `login`.
    pub fn post_alerts(&self, token: &str, alerts: &[Value]) -> Result<(), Failure> {
        let r = self
            .agent
            .post(self.url("/v1/alerts"))
            .header("Authorization", format!("Bearer {token}"))
            .send_json(alerts);
        Self::finish("pushing alerts", r).map(|_| ())
    }
}
