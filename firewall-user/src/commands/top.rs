//! `firewall top`: the sources with the most drops.

use anyhow::Result;
use serde::Serialize;

use crate::control::{
    read::{Order, Source},
    Control,
};

#[derive(Serialize, Debug, Clone)]
pub struct Row {
    pub prefix: String,
    /// The `[[rule]]` whose bucket this is, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub packets: u64,
    pub drops: u64,
    /// Whole tokens in the bucket now.
    pub tokens: u64,
    /// limited, allowed or blocked.
    pub state: &'static str,
}

impl From<Source> for Row {
    fn from(s: Source) -> Self {
        Row {
            prefix: s.net.to_string(),
            rule: s.rule,
            packets: s.packets,
            drops: s.drops,
            tokens: s.tokens,
            state: s.class.name(),
        }
    }
}

/// `firewall top`: the `n` sources with the most drops.
pub fn run(control: &Control, n: usize, json: bool) -> Result<()> {
    let rows: Vec<Row> = control
        .top(n, Order::Drops)?
        .sources
        .into_iter()
        .map(Row::from)
        .collect();
    if json {
        return super::print_json(&rows);
    }
    println!(
        "{:<44} {:<12} {:>12} {:>12} {:>10}  state",
        "prefix", "rule", "packets", "drops", "tokens"
    );
    for r in rows {
        println!(
            "{:<44} {:<12} {:>12} {:>12} {:>10}  {}",
            r.prefix,
            r.rule.as_deref().unwrap_or("-"),
            r.packets,
            r.drops,
            r.tokens,
            r.state
        );
    }
    Ok(())
}
