//! `cargo xtask kernels`: the kernel matrix.
//!
//! The fixture table (`testkit::fixtures::run_table`, the one the host runs in
//! `tests/tests/fixtures.rs`) is built as a static binary (`fixture-runner`),
//! packed with static busybox into an initramfs, and run as the only program
//! of a qemu VM (TCG, no KVM needed) on each kernel of [`KERNELS`]: that
//! kernel's verifier must accept both programs and every fixture must give
//! the verdicts and counters it gives on the host.
//!
//! The kernels are Debian's cloud images. Each is fetched once into
//! `target/kernels/<name>/vmlinuz` (only `vmlinuz` is extracted from the
//! package; nothing is installed): 6.1 through the system's apt (bookworm),
//! 5.10 through a private apt configuration under `target/kernels/apt-*`
//! pointing at the system's Debian mirror with the bullseye suites, so the
//! system's apt sources stay untouched. A cached kernel needs no network.
//!
//! The guest clock follows executed instructions (`-icount`), not the host's
//! clock: under plain TCG a guest's time runs at host speed while its code
//! runs 10-50x slower, and the fixtures' token buckets (1 token a
//! millisecond) then refill between packets that are meant to be back to
//! back. `--realtime-clock` boots without it. With `-icount` the guest's
//! clock does not depend on host load either, so the VMs run side by side.
//!
//! The runner is built for `x86_64-unknown-linux-musl`; when that does not
//! build, for glibc with `crt-static` (with a warning saying why).
//!
//! Modules: [`fetch`] (the kernel packages, through apt), [`initramfs`]
//! (the static runner and the VM's root), [`boot`] (qemu and its console)
//! and [`report`] (what each VM said, summed up).

mod boot;
mod fetch;
mod initramfs;
mod report;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{anyhow, bail, Context, Result};

use crate::util::{apt_install, dpkg_installed, probe, run, target_dir};
use fetch::{fetch, Fetched};
use report::Report;

/// One kernel of the matrix.
pub struct Kernel {
    /// Short name, also the cache directory: `target/kernels/<name>`.
    pub name: &'static str,
    /// The package the matrix is pinned to.
    pub pin: &'static str,
    /// When the pinned package is gone from the archive, the newest package
    /// named `<prefix><abi>-cloud-amd64` is used instead.
    pub prefix: &'static str,
    pub source: Source,
}

pub enum Source {
    /// The system's apt configuration.
    System,
    /// A private apt configuration: the system's Debian mirror (and its
    /// security mirror) with `<codename>` and `<codename>-security`.
    Private { codename: &'static str },
}

pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.10",
        pin: "linux-image-5.10.0-46-cloud-amd64",
        prefix: "linux-image-5.10.0-",
        source: Source::Private {
            codename: "bullseye",
        },
    },
    Kernel {
        name: "6.1",
        pin: "linux-image-6.1.0-56-cloud-amd64",
        prefix: "linux-image-6.1.0-",
        source: Source::System,
    },
];

const MUSL: &str = "x86_64-unknown-linux-musl";
const GNU: &str = "x86_64-unknown-linux-gnu";
const BUSYBOX: &str = "/bin/busybox";

#[derive(clap::Args)]
pub struct KernelsArgs {
    /// Only these kernels (default: all of them).
    #[arg(value_name = "KERNEL", value_parser = kernel_names())]
    pub only: Vec<String>,
    /// Seconds one VM may run before it is killed.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Run the guest clock at host speed (plain TCG) instead of following
    /// the instructions executed (`-icount`); timing-sensitive fixtures
    /// then see an emulated, slow machine.
    #[arg(long)]
    pub realtime_clock: bool,
}

impl Default for KernelsArgs {
    fn default() -> Self {
        KernelsArgs {
            only: Vec::new(),
            timeout: 900,
            realtime_clock: false,
        }
    }
}

fn kernel_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(KERNELS.iter().map(|k| k.name))
}

fn kernels_dir() -> PathBuf {
    target_dir().join("kernels")
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

pub fn kernels(args: &KernelsArgs) -> Result<()> {
    let total = Instant::now();
    let selected: Vec<&Kernel> = KERNELS
        .iter()
        .filter(|k| args.only.is_empty() || args.only.iter().any(|o| o == k.name))
        .collect();
    fs::create_dir_all(kernels_dir())?;

    let t = Instant::now();
    tools()?;
    let runner = initramfs::build_runner()?;
    let initramfs = initramfs::pack(&runner)?;
    let build_secs = secs(t);

    let mut fetched = Vec::new();
    for k in &selected {
        let t = Instant::now();
        let f = fetch(k).with_context(|| format!("fetching the {} kernel", k.name))?;
        fetched.push((f, secs(t)));
    }
    // With -icount the guest's clock does not depend on host load, so the
    // VMs run side by side (one core each); in host time, one at a time.
    let boot_one = |k: &Kernel, f: &Fetched| -> Result<Report> {
        let t = Instant::now();
        let mut r = boot::boot(k, &f.vmlinuz, &initramfs, args)?;
        r.boot_secs = secs(t);
        Ok(r)
    };
    let booted: Vec<Result<Report>> = if args.realtime_clock {
        selected
            .iter()
            .zip(&fetched)
            .map(|(k, (f, _))| boot_one(k, f))
            .collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = selected
                .iter()
                .zip(&fetched)
                .map(|(k, (f, _))| s.spawn(move || boot_one(k, f)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("boot thread panicked")))
                })
                .collect()
        })
    };
    let mut reports = Vec::new();
    for (r, (f, fetch_secs)) in booted.into_iter().zip(fetched) {
        let mut r = r?;
        r.fetched = f;
        r.fetch_secs = fetch_secs;
        reports.push(r);
    }

    eprintln!("\nkernel matrix (guest clock: {}):", clock_name(args));
    eprintln!("  build runner + initramfs: {build_secs:.1}s");
    for r in &reports {
        r.print();
    }
    eprintln!("  total: {:.1}s", secs(total));
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.kernel)
        .collect();
    if !failed.is_empty() {
        bail!("the kernel matrix failed on {}", failed.join(", "));
    }
    Ok(())
}

fn clock_name(args: &KernelsArgs) -> &'static str {
    if args.realtime_clock {
        "host time"
    } else {
        "-icount shift=0"
    }
}

/// qemu, static busybox, dpkg-deb and the musl target: installed if missing.
fn tools() -> Result<()> {
    let mut missing = Vec::new();
    if probe(Command::new("qemu-system-x86_64").arg("--version")).is_none() {
        missing.push("qemu-system-x86");
    }
    if !dpkg_installed("busybox-static") || !Path::new(BUSYBOX).exists() {
        missing.push("busybox-static");
    }
    apt_install(&missing)?;
    for (tool, arg) in [("dpkg-deb", "--version"), ("tar", "--version")] {
        if probe(Command::new(tool).arg(arg)).is_none() {
            bail!("`{tool}` not found (Debian/Ubuntu needed for the kernel matrix)");
        }
    }
    let installed = probe(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup not found: the kernel matrix needs the musl target from rustup")?;
    if !installed.lines().any(|l| l.trim() == MUSL) {
        run(Command::new("rustup").args(["target", "add", MUSL]))?;
    }
    Ok(())
}
