//! The command line, as docs/reference.md names it.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::loader::Mode;

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/firewall";

#[derive(Parser, Debug)]
#[command(
    name = "firewall",
    version,
    about = "XDP rate limiter and CIDR firewall for Linux gateways"
)]
pub struct Cli {
    /// Where the data plane's maps and links are pinned.
    #[arg(long, global = true, default_value = DEFAULT_PIN_DIR, value_name = "DIR")]
    pub pin_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load and attach the data plane, apply the policy, serve metrics, log events.
    Run(RunArgs),
    /// Attached interfaces, policy, mode and table occupancy.
    Status(JsonArg),
    /// Counters per verdict and per rule.
    Stats(StatsArgs),
    /// The sources with the most dropped packets.
    Top(TopArgs),
    /// The blocklist.
    #[command(subcommand)]
    Block(BlockCmd),
    /// The allowlist: matching sources bypass limits and blocks.
    #[command(subcommand)]
    Allow(AllowCmd),
    /// Per-source limits: the default and per-CIDR classes.
    #[command(subcommand)]
    Limit(LimitCmd),
    /// The CrowdSec bouncer and watcher (`[crowdsec]`).
    #[command(subcommand)]
    Crowdsec(CrowdsecCmd),
    /// Validate a policy file.
    Check { file: PathBuf },
    /// Entries shared with the other gateways (`[fleet]`).
    #[command(subcommand)]
    Fleet(FleetCmd),
    /// Remove the data plane from one or all interfaces and unpin it.
    Detach {
        #[arg(long, value_name = "IF")]
        iface: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (firewall.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man {
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Interface to protect (repeat for several).
    #[arg(long = "iface", value_name = "IF", required = true)]
    pub ifaces: Vec<String>,
    /// Policy file (TOML); reloaded on SIGHUP and when it changes.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "xdp")]
    pub mode: Mode,
    /// Prometheus endpoint.
    #[arg(long, default_value = "127.0.0.1:9477", value_name = "ADDR:PORT")]
    pub metrics_addr: SocketAddr,
    /// Count what would be dropped, drop nothing.
    #[arg(long)]
    pub monitor: bool,
    /// Write events here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct JsonArg {
    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[arg(long)]
    pub json: bool,
    /// Print again every SECS seconds, with rates.
    #[arg(long, value_name = "SECS")]
    pub watch: Option<u64>,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    #[arg(short = 'n', default_value_t = 10)]
    pub n: usize,
    #[arg(long)]
    pub json: bool,
    /// Live full-screen view refreshed every SECS seconds (default 1): rates
    /// per verdict with their history, top sources, bans; keys to sort,
    /// pause, block and unblock (q to quit).
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        default_missing_value = "1",
        conflicts_with = "json"
    )]
    pub watch: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum BlockCmd {
    /// Block addresses or prefixes.
    Add {
        #[arg(required = true, value_name = "CIDR")]
        cidrs: Vec<String>,
        /// Expire after this long (30s, 10m, 1h, 2d).
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },
    /// Remove entries.
    Del {
        #[arg(required = true, value_name = "CIDR")]
        cidrs: Vec<String>,
    },
    /// List entries with origin, expiry and hits.
    List(JsonArg),
    /// Load a list: one CIDR a line, `#` and `;` start comments.
    Import { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum AllowCmd {
    Add {
        #[arg(required = true, value_name = "CIDR")]
        cidrs: Vec<String>,
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },
    Del {
        #[arg(required = true, value_name = "CIDR")]
        cidrs: Vec<String>,
    },
    List(JsonArg),
}

#[derive(Subcommand, Debug)]
pub enum LimitCmd {
    /// Set the default limit, or the limit of sources inside CIDR.
    Set {
        #[arg(long, value_name = "CIDR")]
        cidr: Option<String>,
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        burst: u64,
    },
    /// Remove a class, or the manual default.
    Del {
        #[arg(
            long,
            value_name = "CIDR",
            required_unless_present = "default",
            conflicts_with = "default"
        )]
        cidr: Option<String>,
        #[arg(long)]
        default: bool,
    },
    List(JsonArg),
}

#[derive(Subcommand, Debug)]
pub enum CrowdsecCmd {
    /// LAPI reachable or not, last pull, decisions applied and skipped, alerts pushed.
    Status(JsonArg),
}

#[derive(Subcommand, Debug)]
pub enum FleetCmd {
    /// Connected or not, server, bucket, this gateway's name, entries
    /// received per origin, entries waiting in the outbox, last revision.
    Status(JsonArg),
}
