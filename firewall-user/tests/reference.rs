//! docs/reference.md names every command, flag and policy key the code
//! knows, and names nothing the code does not know.

use std::collections::BTreeSet;

use clap::CommandFactory;
use firewall_user::{cli::Cli, policy};

fn reference() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reference.md");
    std::fs::read_to_string(path).expect("docs/reference.md")
}

/// Every command path (`firewall block add`) with its long flags.
fn commands(cmd: &clap::Command, path: &str, out: &mut Vec<(String, Vec<String>)>) {
    let flags = cmd
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !["help", "version"].contains(l))
        .map(|l| format!("--{l}"))
        .collect();
    out.push((path.to_string(), flags));
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        commands(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

#[test]
fn every_command_and_flag_is_documented_and_nothing_else() {
    let doc = reference();
    let mut all = Vec::new();
    commands(&Cli::command(), "firewall", &mut all);
    let mut missing = Vec::new();
    for (path, flags) in all.iter().skip(1) {
        if !doc.contains(&format!("### `{path}`")) {
            missing.push(format!("no section \"### `{path}`\""));
        }
        for flag in flags {
            if !doc.contains(&format!("{flag} ")) && !doc.contains(&format!("{flag}`")) {
                missing.push(format!("{path}: flag {flag} not documented"));
            }
        }
    }
    let known: BTreeSet<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
    for line in doc.lines() {
        if let Some(rest) = line.strip_prefix("### `firewall") {
            let path = format!("firewall{}", rest.trim_end_matches('`'));
            if !known.contains(path.as_str()) {
                missing.push(format!("documented command `{path}` does not exist"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The policy sections of the reference: heading -> keys of its table.
fn documented_keys(doc: &str) -> Vec<(String, BTreeSet<String>)> {
    let part = doc
        .split("## The policy file")
        .nth(1)
        .and_then(|p| p.split("\n## ").next())
        .expect("a policy file chapter");
    let mut out: Vec<(String, BTreeSet<String>)> = Vec::new();
    for line in part.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            let name = if h == "Top-level keys" {
                String::new()
            } else {
                h.trim_matches(|c| "`[]".contains(c)).to_string()
            };
            out.push((name, BTreeSet::new()));
        } else if let (Some(row), Some((_, keys))) = (line.strip_prefix("| `"), out.last_mut()) {
            keys.insert(row.split('`').next().unwrap_or("").to_string());
        }
    }
    out
}

#[test]
fn every_policy_key_is_documented_and_nothing_else() {
    let doc = reference();
    let documented = documented_keys(&doc);
    let known = policy::known_keys();
    let show = |s: &str| {
        if s.is_empty() {
            "top level".to_string()
        } else {
            format!("[{s}]")
        }
    };
    let mut problems = Vec::new();
    for (section, keys) in &known {
        match documented.iter().find(|(s, _)| s == section) {
            None => problems.push(format!("{} has no section", show(section))),
            Some((_, doc_keys)) => {
                let code: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
                for k in code.difference(doc_keys) {
                    problems.push(format!("{} key `{k}` is not documented", show(section)));
                }
                for k in doc_keys.difference(&code) {
                    problems.push(format!(
                        "{} key `{k}` is documented but unknown",
                        show(section)
                    ));
                }
            }
        }
    }
    for (section, _) in &documented {
        if !known.iter().any(|(s, _)| s == section) {
            problems.push(format!("documented section {} is unknown", show(section)));
        }
    }
    assert!(known.len() >= 9 && known.iter().all(|(_, k)| !k.is_empty()));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
