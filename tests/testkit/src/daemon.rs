//! One way to start `firewall run` for a test: a builder that says which
//! interfaces, which policy, which metrics port, which binary and which pin
//! dir, instead of an argument vector assembled anew in every test file.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let sb = testkit::Sandbox::new()?;
//! let fw = testkit::FirewallDaemon::on(&sb.gw_ns)
//!     .iface(&sb.gw_attacker_if)
//!     .policy("[defaults]\nrate = 100\nburst = 50\n")
//!     .metrics(9477)
//!     .start();
//! // A restart over the same pins with the same arguments:
//! let again = testkit::FirewallDaemon::on(&sb.gw_ns).pin_dir(fw.pin_dir());
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::{e2e::policy_file, firewall_bin, unique_pin_dir, FirewallDaemon, Sandbox};

/// What [`DaemonBuilder::start`] runs: `BIN --pin-dir PIN_DIR run ARGS...`
/// in a namespace. Cloning it gives the same daemon again (for restarts).
#[derive(Clone, Debug)]
pub struct DaemonBuilder {
    ns: String,
    bin: Option<PathBuf>,
    pin_dir: Option<PathBuf>,
    args: Vec<String>,
}

impl FirewallDaemon {
    /// A daemon to run in namespace `ns` (name or path), with no arguments
    /// yet.
    pub fn on(ns: &str) -> DaemonBuilder {
        DaemonBuilder {
            ns: ns.to_string(),
            bin: None,
            pin_dir: None,
            args: Vec::new(),
        }
    }
}

impl DaemonBuilder {
    /// `--iface NAME`.
    pub fn iface(self, name: &str) -> Self {
        self.args(&["--iface", name])
    }

    /// Both of the sandbox gateway's interfaces (client side first).
    pub fn gateway_ifaces(self, sb: &Sandbox) -> Self {
        self.iface(&sb.gw_client_if).iface(&sb.gw_attacker_if)
    }

    /// `--config PATH`.
    pub fn config(self, path: impl AsRef<Path>) -> Self {
        let p = path.as_ref().display().to_string();
        self.args(&["--config", &p])
    }

    /// `--config` with a fresh file holding `toml`.
    pub fn policy(self, toml: &str) -> Self {
        self.config(policy_file(toml))
    }

    /// `--metrics-addr 127.0.0.1:PORT`.
    pub fn metrics(self, port: u16) -> Self {
        let addr = format!("127.0.0.1:{port}");
        self.args(&["--metrics-addr", &addr])
    }

    /// More arguments of `firewall run`, as given.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Another `firewall` binary than [`firewall_bin`].
    pub fn bin(mut self, bin: impl AsRef<Path>) -> Self {
        self.bin = Some(bin.as_ref().to_path_buf());
        self
    }

    /// This pin dir instead of a fresh one (a restart over existing pins).
    pub fn pin_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.pin_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The arguments after `run`.
    pub fn run_args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    /// Starts it and waits for readiness (see [`FirewallDaemon::spawn`]).
    pub fn try_start(&self) -> Result<FirewallDaemon> {
        let bin = self.bin.clone().unwrap_or_else(firewall_bin);
        let pin_dir = self.pin_dir.clone().unwrap_or_else(unique_pin_dir);
        FirewallDaemon::spawn(&bin, &self.ns, &pin_dir, &self.run_args())
    }

    /// [`DaemonBuilder::try_start`], panicking with the daemon's stderr if it
    /// does not become ready.
    pub fn start(&self) -> FirewallDaemon {
        self.try_start()
            .unwrap_or_else(|e| panic!("FirewallDaemon::start: {e:#}"))
    }
}
