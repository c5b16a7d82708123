//! Shell completions and man pages, generated from the clap definitions
//! (`firewall completions SHELL`, `firewall man --out-dir DIR`; both hidden,
//! used by `cargo xtask package`).

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Print the completion script for `shell` on stdout.
pub fn completions(shell: Shell) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "firewall", &mut std::io::stdout());
    Ok(())
}

/// Write `firewall.1` and a page per subcommand (`firewall-block-add.1`...)
/// into `dir`, creating it.
pub fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    let n = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "1"))
        .count();
    println!("{n} man pages in {}", dir.display());
    Ok(())
}
