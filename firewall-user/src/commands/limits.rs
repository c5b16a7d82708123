//! `firewall limit ...`: the default limit and per-CIDR classes.

use anyhow::Result;
use firewall_common::{Limit, LimitEntry, Origin};
use serde::Serialize;

use crate::{addr::parse_cidr, apply::refresh_flags, error::bad, maps::Maps};

pub fn checked(rate: u64, burst: u64) -> Result<Limit> {
    Limit::new(rate, burst).map_err(|e| {
        use firewall_common::bucket::{LimitError::*, MAX_RATE};
        bad(match e {
            ZeroRate => {
                "invalid --rate 0: must be from 1 to 1000000000 packets per second".to_string()
            }
            RateTooHigh => {
                format!("invalid --rate {rate}: must be from 1 to {MAX_RATE} packets per second")
            }
            ZeroBurst => "invalid --burst 0: must be at least 1 packet".to_string(),
            BurstTooHigh { max } => {
                format!("invalid --burst {burst}: at rate {rate} it must be from 1 to {max}")
            }
        })
    })
}

pub fn set(maps: &mut Maps, cidr: Option<&str>, rate: u64, burst: u64) -> Result<()> {
    let limit = checked(rate, burst)?;
    match cidr {
        None => {
            maps.bump(|c| {
                c.manual_default = limit;
                c.default_limit = limit;
            })?;
        }
        Some(c) => {
            let (net, host_bits) = parse_cidr(c)?;
            if host_bits {
                eprintln!("warning: {c} has host bits set; using {net}");
            }
            let old = maps.limit_get(&net)?;
            let e = LimitEntry {
                limit,
                file_limit: old.map(|o| o.file_limit).unwrap_or_default(),
                origin: Origin::Manual as u8,
                ..Default::default()
            };
            maps.limit_put(&net, e)?;
            refresh_flags(maps, true)?;
        }
    }
    Ok(())
}

pub fn del(maps: &mut Maps, cidr: Option<&str>) -> Result<()> {
    match cidr {
        None => {
            let cfg = maps.config()?;
            if !cfg.manual_default.is_set() {
                return Err(bad("there is no manual default limit to delete (the policy file's default applies)"));
            }
            maps.bump(|c| {
                c.manual_default = Limit::default();
                c.default_limit = c.file_default;
            })?;
        }
        Some(c) => {
            let (net, _) = parse_cidr(c)?;
            match maps.limit_get(&net)? {
                None => {
                    return Err(bad(format!(
                        "there is no limit class for {net} (see `firewall limit list`)"
                    )))
                }
                Some(e) if e.origin == Origin::Config as u8 => {
                    return Err(bad(format!(
                        "the limit for {net} comes from the policy file; change it there"
                    )))
                }
                Some(e) if e.file_limit.is_set() => {
                    let back = LimitEntry {
                        limit: e.file_limit,
                        file_limit: e.file_limit,
                        origin: Origin::Config as u8,
                        ..Default::default()
                    };
                    maps.limit_put(&net, back)?;
                }
                Some(_) => {
                    maps.limit_del(&net)?;
                }
            }
            refresh_flags(maps, true)?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
pub struct Row {
    /// "default" or a CIDR.
    pub cidr: String,
    pub rate: u64,
    pub burst: u64,
    pub origin: &'static str,
}

pub fn rows(maps: &Maps) -> Result<Vec<Row>> {
    let cfg = maps.config()?;
    let d = cfg.default_limit;
    let mut out = vec![Row {
        cidr: "default".into(),
        rate: d.rate(),
        burst: d.burst(),
        origin: if cfg.manual_default.is_set() {
            "manual"
        } else {
            "config"
        },
    }];
    let mut classes = maps.limit_all()?;
    classes.sort_by_key(|(n, _)| *n);
    out.extend(classes.into_iter().map(|(n, e)| Row {
        cidr: n.to_string(),
        rate: e.limit.rate(),
        burst: e.limit.burst(),
        origin: Origin::from_u8(e.origin).name(),
    }));
    Ok(out)
}

pub fn list(maps: &Maps, json: bool) -> Result<()> {
    let rows = rows(maps)?;
    if json {
        return super::print_json(&rows);
    }
    println!("{:<44} {:>12} {:>12}  origin", "cidr", "rate/s", "burst");
    for r in rows {
        println!(
            "{:<44} {:>12} {:>12}  {}",
            r.cidr, r.rate, r.burst, r.origin
        );
    }
    Ok(())
}
