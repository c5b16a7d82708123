//! `firewall block ...` and `firewall allow ...`.

use std::{io::IsTerminal, path::Path, time::Instant};

use anyhow::Result;
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    addr::parse_cidr,
    clock::{rfc3339, wall_of, MAX_TTL},
    control::{origin, read::ListRow, Control, List, Origin},
    error::bad,
};

/// Parse every CIDR first: one bad value changes nothing.
pub fn parse_all(cidrs: &[String]) -> Result<Vec<IpNet>> {
    let mut out = Vec::new();
    for c in cidrs {
        let (net, host_bits) = parse_cidr(c)?;
        if host_bits {
            eprintln!("warning: {c} has host bits set; using {net}");
        }
        out.push(net);
    }
    Ok(out)
}

pub fn parse_ttl(ttl: Option<&str>) -> Result<Option<std::time::Duration>> {
    ttl.map(|t| {
        humantime::parse_duration(t)
            .ok()
            .filter(|d| !d.is_zero() && *d <= MAX_TTL)
            .ok_or_else(|| {
                bad(format!(
                    "invalid --ttl '{t}': expected a duration from 1s to {}d, such as 30s, 10m, 1h or 2d",
                    MAX_TTL.as_secs() / 86_400
                ))
            })
    })
    .transpose()
}

#[derive(Serialize, Clone, Debug)]
pub struct Row {
    pub cidr: String,
    #[serde(serialize_with = "origin::by_name")]
    pub origin: Origin,
    /// RFC 3339, absent when the entry does not expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    pub hits: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

impl From<ListRow> for Row {
    fn from(r: ListRow) -> Self {
        Row {
            cidr: r.net.to_string(),
            origin: r.origin,
            expires: r.expires_ns.map(|x| rfc3339(wall_of(x))),
            expires_in_secs: r.expires_in_secs,
            hits: r.hits,
            comment: r.comment,
        }
    }
}

/// `firewall block list` / `firewall allow list`.
pub fn list(control: &Control, list: List, json: bool) -> Result<()> {
    let rows: Vec<Row> = control.list(list)?.into_iter().map(Row::from).collect();
    if json {
        return super::print_json(&rows);
    }
    println!(
        "{:<44} {:<8} {:<22} {:>10}  comment",
        "cidr", "origin", "expires", "hits"
    );
    for r in &rows {
        println!(
            "{:<44} {:<8} {:<22} {:>10}  {}",
            r.cidr,
            r.origin.name(),
            r.expires.as_deref().unwrap_or("never"),
            r.hits,
            r.comment
        );
    }
    println!("{} entries", rows.len());
    Ok(())
}

/// One CIDR a line; `#` and `;` start comments (Spamhaus DROP as is).
pub fn parse_import(text: &str) -> Result<Vec<IpNet>> {
    let mut nets = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let body = line.split(['#', ';']).next().unwrap_or("").trim();
        if body.is_empty() {
            continue;
        }
        match parse_cidr(body) {
            Ok((n, _)) => nets.push(n),
            Err(e) => problems.push(format!("line {}: {e}", i + 1)),
        }
    }
    if !problems.is_empty() {
        let shown = problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ");
        let more = problems.len().saturating_sub(20);
        return Err(bad(format!(
            "{} bad line(s), nothing imported:\n  {shown}{}",
            problems.len(),
            if more > 0 {
                format!("\n  ... and {more} more")
            } else {
                String::new()
            }
        )));
    }
    Ok(nets)
}

/// `firewall block import FILE`.
pub fn import(control: &mut Control, file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| bad(format!("cannot read {}: {e}", file.display())))?;
    let nets = parse_import(&text)?;
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut w = control.write()?;
    let done = w.import(&nets, |done, total| {
        if tty {
            eprint!("\rimported {done}/{total}");
        }
    })?;
    if tty {
        eprintln!();
    }
    println!(
        "added {} entries from {} ({} already listed by hand or the policy file) in {:.3}s",
        done.added,
        file.display(),
        done.kept,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
