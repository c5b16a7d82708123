//! The policy file: parsing and validation.
//!
//! The flow, one module a step:
//! - `file`: serde reads the TOML text into typed tables, through the
//!   lenient shapes of `spanned`, which keep the span of every key and
//!   value and keep a value of the wrong type instead of stopping at it;
//! - `sections` (with `fleet` and `crowdsec_table` for their tables): the
//!   semantic pass checks ranges and the rules between keys, with the
//!   shared checks of `check`, and names *every* problem (`problem`) with
//!   its line, the bad value and what would be valid;
//! - `model`: a file that passes is normalized (CIDR host bits cleared,
//!   defaults filled in) into a [`Policy`], what the control layer writes.

use std::path::Path;

use anyhow::Context as _;

use check::Cx;
use file::*;
use spanned::{fields, Section};

mod check;
mod crowdsec_table;
mod file;
pub mod fleet;
mod model;
mod problem;
mod sections;
mod spanned;

pub use model::*;
pub use problem::{Checked, Problem, Severity};
// What the tables checked in `fleet` and `crowdsec_table` share.
use check::{article, View, DURATION_EXAMPLES};

/// Read and validate a policy file. I/O errors (missing file, not UTF-8)
/// are the outer `Err`; the inner result is [`parse`]'s.
pub fn load(path: &Path) -> anyhow::Result<Checked> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
    Ok(parse(&text))
}

/// Validate a policy file's text. `Ok` holds the policy and its warnings;
/// `Err` holds every error and warning, sorted by line.
pub fn parse(text: &str) -> Checked {
    let mut cx = Cx::new(text);
    let policy = match toml::from_str::<Section<File>>(text) {
        Ok(file) => Some(cx.policy(file)),
        Err(e) => {
            let line = e.span().map_or(1, |s| cx.line(&s));
            let msg = e.message().trim().replace('\n', "; ");
            cx.error(line, format!("invalid TOML: {msg}"));
            None
        }
    };
    let mut problems = cx.problems;
    problems.sort_by_key(|p| p.line);
    match policy {
        Some(policy) if !problems.iter().any(Problem::is_error) => Ok((policy, problems)),
        _ => Err(problems),
    }
}

/// Every table of the policy file and the keys it takes, as the parser
/// reads them (`""` is the top level, `limit` and `rule` are arrays of
/// tables). Read from the types serde fills, so it cannot drift.
pub fn known_keys() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("", fields::<File>()),
        ("defaults", fields::<DefaultsFile>()),
        ("limit", fields::<LimitFile>()),
        ("rule", fields::<RuleFile>()),
        ("flood", fields::<FloodFile>()),
        ("table", fields::<TableFile>()),
        ("autoban", fields::<AutobanFile>()),
        ("crowdsec", fields::<crowdsec_table::File>()),
        ("fleet", fields::<fleet::File>()),
    ]
}
