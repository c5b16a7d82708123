//! `firewall block ...` and `firewall allow ...`.

use std::{io::IsTerminal, path::Path, time::Instant};

use anyhow::{Context, Result};
use firewall_common::{ListEntry, Origin};
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    addr::parse_cidr,
    apply::{note_added, refresh_flags},
    clock::{expiry_after, mono_ns, rfc3339, wall_of, MAX_TTL},
    error::bad,
    lists::List,
    maps::Maps,
    text::{fixed, unfixed},
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

/// Add run-time entries (`origin` manual, import or autoban).
pub fn add(
    maps: &mut Maps,
    list: List,
    nets: &[IpNet],
    origin: Origin,
    ttl: Option<std::time::Duration>,
    comment: Option<&str>,
) -> Result<()> {
    let expires_ns = ttl.map(expiry_after).unwrap_or(0);
    for net in nets {
        let old = maps.list_get(list, net)?;
        let e = ListEntry {
            expires_ns,
            hits: old.map(|o| o.hits).unwrap_or(0),
            origin: origin as u8,
            in_file: old.map(|o| o.in_file).unwrap_or(0),
            comment: comment.map(fixed).unwrap_or_default(),
            ..Default::default()
        };
        maps.list_put(list, net, e)
            .with_context(|| format!("adding {net} to the {} list", list.name()))?;
    }
    note_added(maps, list, nets, expires_ns)
}

pub fn del(maps: &mut Maps, list: List, nets: &[IpNet]) -> Result<()> {
    let mut found = Vec::new();
    for net in nets {
        match maps.list_get(list, net)? {
            None => return Err(bad(format!("{net} is not in the {} list (see `firewall {} list`)", list.name(), list.name()))),
            Some(e) if e.origin == Origin::Config as u8 => {
                return Err(bad(format!(
                    "{net} comes from the policy file; remove it there (the file's entries follow the file)"
                )))
            }
            Some(e) => found.push((*net, e)),
        }
    }
    for (net, e) in &found {
        end_runtime_entry(maps, list, net, e)?;
    }
    refresh_flags(maps, crate::apply::touches_cache(list, nets))
}

/// Remove a run-time entry (deleted or expired): if the policy file lists
/// the prefix too, the file's entry applies again.
pub fn end_runtime_entry(maps: &mut Maps, list: List, net: &IpNet, e: &ListEntry) -> Result<()> {
    if e.in_file != 0 {
        let back = ListEntry {
            origin: Origin::Config as u8,
            in_file: 1,
            hits: e.hits,
            ..Default::default()
        };
        maps.list_put(list, net, back)
    } else {
        maps.list_del(list, net).map(|_| ())
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Row {
    pub cidr: String,
    pub origin: &'static str,
    /// RFC 3339, absent when the entry does not expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    pub hits: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

pub fn rows(maps: &Maps, list: List) -> Result<Vec<Row>> {
    let now = mono_ns();
    let mut all = maps.list_all(list)?;
    all.sort_by_key(|(n, _)| *n);
    Ok(all
        .into_iter()
        .filter(|(_, e)| e.expires_ns == 0 || e.expires_ns > now)
        .map(|(n, e)| Row {
            cidr: n.to_string(),
            origin: Origin::from_u8(e.origin).name(),
            expires: (e.expires_ns != 0).then(|| rfc3339(wall_of(e.expires_ns))),
            expires_in_secs: (e.expires_ns != 0)
                .then(|| (e.expires_ns - now).div_ceil(1_000_000_000)),
            hits: e.hits,
            comment: unfixed(&e.comment),
        })
        .collect())
}

pub fn list(maps: &Maps, list: List, json: bool) -> Result<()> {
    let rows = rows(maps, list)?;
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
            r.origin,
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

pub fn import(maps: &mut Maps, file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| bad(format!("cannot read {}: {e}", file.display())))?;
    let nets = parse_import(&text)?;
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    // Manual and file entries win over an import.
    let existing: std::collections::HashMap<IpNet, ListEntry> =
        maps.list_all(List::Block)?.into_iter().collect();
    let mut kept = 0usize;
    let mut seen = std::collections::HashSet::new();
    let mut fresh = Vec::with_capacity(nets.len());
    for net in &nets {
        if !seen.insert(*net) {
            continue;
        }
        match existing.get(net) {
            Some(e) if e.origin != Origin::Import as u8 && e.origin != Origin::Autoban as u8 => {
                kept += 1
            }
            _ => fresh.push(*net),
        }
    }
    let entries: Vec<(IpNet, ListEntry)> = fresh
        .iter()
        .map(|n| {
            (
                *n,
                ListEntry {
                    origin: Origin::Import as u8,
                    ..Default::default()
                },
            )
        })
        .collect();
    maps.list_put_many(List::Block, &entries, 10_000, |done| {
        if tty {
            eprint!("\rimported {done}/{}", entries.len());
        }
    })?;
    let added = entries.len();
    if tty {
        eprintln!();
    }
    note_added(maps, List::Block, &fresh, 0)?;
    println!(
        "added {added} entries from {} ({kept} already listed by hand or the policy file) in {:.3}s",
        file.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
