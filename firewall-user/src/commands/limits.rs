//! `firewall limit ...`: the default limit and per-CIDR classes.

use anyhow::Result;
use firewall_common::Limit;
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    addr::parse_cidr,
    control::{origin, read::LimitRow, Control, Origin},
    error::bad,
};

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

/// A CIDR argument, with a warning when it has host bits set.
fn cidr_arg(c: &str) -> Result<IpNet> {
    let (net, host_bits) = parse_cidr(c)?;
    if host_bits {
        eprintln!("warning: {c} has host bits set; using {net}");
    }
    Ok(net)
}

/// `firewall limit set [--cidr CIDR] --rate N --burst N`.
pub fn set(control: &mut Control, cidr: Option<&str>, rate: u64, burst: u64) -> Result<()> {
    let limit = checked(rate, burst)?;
    let net = cidr.map(cidr_arg).transpose()?;
    control.write()?.set_limit(net.as_ref(), limit)
}

/// `firewall limit del --cidr CIDR` / `--default`.
pub fn del(control: &mut Control, cidr: Option<&str>) -> Result<()> {
    let net = cidr.map(|c| parse_cidr(c).map(|(n, _)| n)).transpose()?;
    control.write()?.delete_limit(net.as_ref())
}

#[derive(Serialize)]
pub struct Row {
    /// "default" or a CIDR.
    pub cidr: String,
    pub rate: u64,
    pub burst: u64,
    #[serde(serialize_with = "origin::by_name")]
    pub origin: Origin,
}

impl From<LimitRow> for Row {
    fn from(r: LimitRow) -> Self {
        Row {
            cidr: r.net.map_or_else(|| "default".into(), |n| n.to_string()),
            rate: r.rate,
            burst: r.burst,
            origin: r.origin,
        }
    }
}

/// `firewall limit list`.
pub fn list(control: &Control, json: bool) -> Result<()> {
    let rows: Vec<Row> = control.limits()?.into_iter().map(Row::from).collect();
    if json {
        return super::print_json(&rows);
    }
    println!("{:<44} {:>12} {:>12}  origin", "cidr", "rate/s", "burst");
    for r in rows {
        println!(
            "{:<44} {:>12} {:>12}  {}",
            r.cidr,
            r.rate,
            r.burst,
            r.origin.name()
        );
    }
    Ok(())
}
