//! The fixture table through BPF_PROG_TEST_RUN on the running kernel.

use testkit::{fixtures, harness::Hook};

fn run(hook: Hook, test: &str) {
    if !testkit::privileged(test) {
        return;
    }
    let outcomes = fixtures::run_table(hook).expect("loading the data plane");
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.error.as_ref().map(|e| format!("  {}: {e}", o.name)))
        .collect();
    println!("{} fixtures, {} failed", outcomes.len(), failed.len());
    assert!(
        outcomes.len() >= 60,
        "the table shrank to {}",
        outcomes.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failed.len(),
        outcomes.len(),
        failed.join("\n")
    );
}

#[test]
fn xdp_fixture_table() {
    run(Hook::Xdp, "xdp_fixture_table");
}

#[test]
fn tc_fixture_table() {
    run(Hook::Tc, "tc_fixture_table");
}
