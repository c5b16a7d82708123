//! CLI commands that read or change the pinned state (no daemon needed).

pub mod generate;
pub mod limits;
pub mod lists;
pub mod stats;
pub mod status;
pub mod top;

use serde::Serialize;

/// Print one JSON document on stdout.
pub fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
