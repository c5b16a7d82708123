//! Events as JSON lines (`ts`, `event`, fields), to stdout or a log file.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::Path,
    sync::Mutex,
    time::SystemTime,
};

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::clock::rfc3339;

pub struct EventLog {
    out: Mutex<Box<dyn Write + Send>>,
}

impl EventLog {
    pub fn new(file: Option<&Path>) -> Result<Self> {
        let out: Box<dyn Write + Send> = match file {
            None => Box::new(std::io::stdout()),
            Some(p) => {
                let f: File = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("opening log file {}", p.display()))?;
                Box::new(f)
            }
        };
        Ok(EventLog {
            out: Mutex::new(out),
        })
    }

    /// Write one event line; `fields` must be a JSON object.
    pub fn emit(&self, event: &str, fields: Value) {
        let mut obj = Map::new();
        obj.insert("ts".into(), json!(rfc3339(SystemTime::now())));
        obj.insert("event".into(), json!(event));
        if let Value::Object(m) = fields {
            obj.extend(m);
        }
        let line = Value::Object(obj).to_string();
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A full disk or closed pipe must not stop the firewall.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}
