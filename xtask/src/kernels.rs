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

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

use crate::util::{apt_install, cargo, dpkg_installed, is_root, probe, run, target_dir};

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
const EXIT_MARKER: &str = "FIXTURE-RUNNER-EXIT=";
const START_MARKER: &str = "FIXTURE-RUNNER-START";
/// A kernel's verifier log is kept to this many trailing lines in the report
/// (the whole console is in `target/kernels/<name>/console.log`).
const LOG_EXCERPT: usize = 40;

/// The VM's `/init`.
const INIT: &str = r#"#!/bin/sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t bpf bpf /sys/fs/bpf
echo FIXTURE-RUNNER-START
/fixture-runner
echo "FIXTURE-RUNNER-EXIT=$?"
poweroff -f
"#;

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
    let runner = build_runner()?;
    let initramfs = pack_initramfs(&runner)?;
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
        let mut r = boot(k, &f.vmlinuz, &initramfs, args)?;
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

// ---------------------------------------------------------------- tools

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

// ---------------------------------------------------------------- runner

/// Builds `fixture-runner` as a static binary: for musl, or when that does
/// not build, for glibc with `crt-static`.
fn build_runner() -> Result<PathBuf> {
    let build = |target: &str| {
        let mut c = cargo();
        c.args([
            "build",
            "--release",
            "-p",
            "testkit",
            "--bin",
            "fixture-runner",
            "--target",
            target,
        ]);
        c
    };
    let musl = run(&mut build(MUSL));
    let bin = match musl {
        Ok(()) => target_dir().join(MUSL).join("release/fixture-runner"),
        Err(e) => {
            eprintln!(
                "kernels: WARNING: fixture-runner does not build for {MUSL} ({e:#}); \
                 building it for {GNU} with crt-static instead"
            );
            // Target rustflags do not reach build scripts when --target is given.
            run(build(GNU).env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            ))?;
            target_dir().join(GNU).join("release/fixture-runner")
        }
    };
    if has_interpreter(&bin)? {
        bail!(
            "{} is dynamically linked; the VM has no libc",
            bin.display()
        );
    }
    Ok(bin)
}

/// Whether an ELF64 file has a PT_INTERP program header (is dynamic).
fn has_interpreter(path: &Path) -> Result<bool> {
    let b = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        bail!("{} is not an ELF64 file", path.display());
    }
    let phoff = u64::from_le_bytes(b[32..40].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    Ok((0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) == 3
    }))
}

/// `target/kernels/initramfs.cpio`: busybox, the runner and [`INIT`].
fn pack_initramfs(runner: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let root = kernels_dir().join("initramfs");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::create_dir_all(root.join("bin"))?;
    fs::copy(BUSYBOX, root.join("bin/busybox")).context("copying busybox")?;
    symlink("busybox", root.join("bin/sh"))?;
    fs::copy(runner, root.join("fixture-runner"))?;
    fs::write(root.join("init"), INIT)?;
    for f in ["init", "fixture-runner", "bin/busybox"] {
        fs::set_permissions(root.join(f), fs::Permissions::from_mode(0o755))?;
    }
    let out = kernels_dir().join("initramfs.cpio");
    let mut find = Command::new(BUSYBOX)
        .args(["find", "."])
        .current_dir(&root)
        .stdout(Stdio::piped())
        .spawn()
        .context("running busybox find")?;
    let status = Command::new(BUSYBOX)
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(&root)
        .stdin(find.stdout.take().unwrap())
        .stdout(fs::File::create(&out)?)
        .stderr(Stdio::null())
        .status()
        .context("running busybox cpio")?;
    if !find.wait()?.success() || !status.success() {
        bail!("packing {} failed", out.display());
    }
    Ok(out)
}

// ---------------------------------------------------------------- fetch

/// A kernel in the cache.
#[derive(Default)]
pub struct Fetched {
    vmlinuz: PathBuf,
    package: String,
    version: String,
    cached: bool,
}

/// Reads `target/kernels/<name>/package`: `pin=`, `package=`, `version=`.
fn read_meta(dir: &Path) -> Option<(String, String, String)> {
    let text = fs::read_to_string(dir.join("package")).ok()?;
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::to_string)
    };
    Some((field("pin")?, field("package")?, field("version")?))
}

fn fetch(k: &Kernel) -> Result<Fetched> {
    let dir = kernels_dir().join(k.name);
    let vmlinuz = dir.join("vmlinuz");
    if let Some((pin, package, version)) = read_meta(&dir) {
        if pin == k.pin && vmlinuz.exists() {
            return Ok(Fetched {
                vmlinuz,
                package,
                version,
                cached: true,
            });
        }
    }
    fs::create_dir_all(&dir)?;
    let mut apt = Apt::new(k)?;
    apt.update_if_private()?;
    let package = apt.resolve(k)?;
    let tmp = dir.join("download");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    if let Err(e) = apt.download(&package, &tmp) {
        if apt.updated {
            return Err(e);
        }
        // The system's lists may name a version the mirror no longer has.
        apt.update()?;
        apt.download(&package, &tmp)?;
    }
    let deb = fs::read_dir(&tmp)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", tmp.display()))?;
    let version = probe(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Version"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    extract_vmlinuz(&deb, &tmp)?;
    let image = fs::read_dir(tmp.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{} holds no boot/vmlinuz-*", deb.display()))?;
    fs::rename(&image, &vmlinuz)?;
    fs::write(
        dir.join("package"),
        format!("pin={}\npackage={package}\nversion={version}\n", k.pin),
    )?;
    fs::remove_dir_all(&tmp)?;
    Ok(Fetched {
        vmlinuz,
        package,
        version,
        cached: false,
    })
}

/// `dpkg-deb --fsys-tarfile DEB | tar -x ./boot/vmlinuz-*` into `into`.
fn extract_vmlinuz(deb: &Path, into: &Path) -> Result<()> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("running dpkg-deb")?;
    let tar = Command::new("tar")
        .args(["-x", "--wildcards", "-C"])
        .arg(into)
        .arg("./boot/vmlinuz-*")
        .stdin(dpkg.stdout.take().unwrap())
        .status()
        .context("running tar")?;
    let dpkg = dpkg.wait()?;
    if !dpkg.success() || !tar.success() {
        bail!("extracting vmlinuz from {} failed", deb.display());
    }
    Ok(())
}

/// apt-get / apt-cache with either the system's configuration or a private
/// one (sources, lists and caches under `target/kernels/apt-<codename>`).
struct Apt {
    opts: Vec<String>,
    private: bool,
    updated: bool,
}

impl Apt {
    fn new(k: &Kernel) -> Result<Apt> {
        let mut opts = vec![
            // apt's sandbox user cannot write into our target directory.
            "-o".to_string(),
            "APT::Sandbox::User=root".to_string(),
        ];
        let Source::Private { codename } = k.source else {
            return Ok(Apt {
                opts,
                private: false,
                updated: false,
            });
        };
        let m = debian_mirrors()?;
        let dir = kernels_dir().join(format!("apt-{codename}"));
        for d in ["lists/partial", "archives/partial"] {
            fs::create_dir_all(dir.join(d))?;
        }
        let opt = m
            .signed_by
            .as_ref()
            .map(|k| format!("[signed-by={k}] "))
            .unwrap_or_default();
        let mut list = format!("deb {opt}{} {codename} main\n", m.main);
        if let Some(sec) = &m.security {
            list.push_str(&format!("deb {opt}{sec} {codename}-security main\n"));
        }
        let sources = dir.join("sources.list");
        fs::write(&sources, list)?;
        let d = dir.display();
        for o in [
            format!("Dir::Etc::sourcelist={}", sources.display()),
            "Dir::Etc::sourceparts=-".to_string(),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}"),
            format!("Dir::Cache::archives={d}/archives"),
            "Acquire::Languages=none".to_string(),
        ] {
            opts.push("-o".into());
            opts.push(o);
        }
        Ok(Apt {
            opts,
            private: true,
            updated: false,
        })
    }

    fn get(&self) -> Command {
        let mut c = Command::new("apt-get");
        c.args(&self.opts);
        c
    }

    fn cache(&self) -> Command {
        let mut c = Command::new("apt-cache");
        c.args(&self.opts);
        c
    }

    fn update(&mut self) -> Result<()> {
        if !self.private && !is_root() {
            bail!("the system's apt lists need `apt-get update`, which needs root");
        }
        run(self.get().arg("update"))?;
        self.updated = true;
        Ok(())
    }

    fn update_if_private(&mut self) -> Result<()> {
        if self.private {
            self.update()?;
        }
        Ok(())
    }

    fn known(&self, package: &str) -> bool {
        probe(self.cache().args(["show", "--no-all-versions", package])).is_some()
    }

    /// The newest `<prefix><abi>-cloud-amd64`.
    fn newest(&self, prefix: &str) -> Option<String> {
        let re = format!("^{}[0-9]+-cloud-amd64$", prefix.replace('.', "\\."));
        let out = probe(self.cache().args(["search", "--names-only", &re]))?;
        out.lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|n| {
                let abi = n.strip_prefix(prefix)?.strip_suffix("-cloud-amd64")?;
                Some((abi.parse::<u32>().ok()?, n.to_string()))
            })
            .max()
            .map(|(_, n)| n)
    }

    /// The pinned package, or the newest matching one when it is gone.
    fn resolve(&mut self, k: &Kernel) -> Result<String> {
        if !self.known(k.pin) && !self.updated && self.newest(k.prefix).is_none() {
            // The system's lists may be missing or old.
            self.update()?;
        }
        if self.known(k.pin) {
            return Ok(k.pin.to_string());
        }
        let newest = self.newest(k.prefix).ok_or_else(|| {
            anyhow!(
                "neither {} nor any {}<abi>-cloud-amd64 is in the apt lists",
                k.pin,
                k.prefix
            )
        })?;
        eprintln!(
            "kernels: WARNING: {} is gone from the archive; using the newest, {newest} \
             (update the pin in xtask/src/kernels.rs)",
            k.pin
        );
        Ok(newest)
    }

    fn download(&self, package: &str, into: &Path) -> Result<()> {
        run(self.get().arg("download").arg(package).current_dir(into))
    }
}

/// The system's Debian mirror, found in its apt sources.
struct Mirrors {
    main: String,
    security: Option<String>,
    signed_by: Option<String>,
}

/// One `deb` source: URIs, suites and the Signed-By keyring (a path).
#[derive(Default)]
struct AptSource {
    uris: Vec<String>,
    suites: Vec<String>,
    signed_by: Option<String>,
}

fn debian_mirrors() -> Result<Mirrors> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let mut sources = Vec::new();
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|x| x.to_str()) {
            Some("sources") => sources.extend(parse_deb822(&text)),
            Some("list") => sources.extend(parse_one_line(&text)),
            _ => {}
        }
    }
    mirrors_from(&sources).context(
        "no Debian mirror (a `deb` source whose URI ends in /debian) in /etc/apt/sources.list(.d)",
    )
}

fn mirrors_from(sources: &[AptSource]) -> Option<Mirrors> {
    let trim = |u: &str| u.trim_end_matches('/').to_string();
    let main = sources.iter().find_map(|s| {
        let u = s.uris.iter().find(|u| trim(u).ends_with("/debian"))?;
        s.suites
            .iter()
            .any(|x| !x.contains('-') && !x.contains('/'))
            .then(|| (trim(u), s.signed_by.clone()))
    })?;
    let security = sources.iter().find_map(|s| {
        s.suites
            .iter()
            .any(|x| x.ends_with("-security"))
            .then(|| s.uris.first().map(|u| trim(u)))?
    });
    Some(Mirrors {
        main: main.0,
        security,
        signed_by: main.1,
    })
}

/// deb822 `.sources` stanzas of type `deb`.
fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(last) = fields.last_mut() {
                    last.1.push('\n');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        let words = |k: &str| -> Vec<String> {
            get(k)
                .map(|v| v.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        if !words("types").iter().any(|t| t == "deb")
            || get("enabled").is_some_and(|v| v.eq_ignore_ascii_case("no"))
        {
            continue;
        }
        out.push(AptSource {
            uris: words("uris"),
            suites: words("suites"),
            // A path, not an embedded key.
            signed_by: get("signed-by")
                .filter(|v| !v.contains('\n') && v.starts_with('/'))
                .map(str::to_string),
        });
    }
    out
}

/// One-line `deb [options] uri suite components...` entries.
fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut rest = rest.trim_start();
        let mut signed_by = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((opts, after)) = opts.split_once(']') else {
                continue;
            };
            signed_by = opts
                .split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by="))
                .map(str::to_string);
            rest = after;
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptSource {
            uris: vec![uri.to_string()],
            suites: vec![suite.to_string()],
            signed_by,
        });
    }
    out
}

// ---------------------------------------------------------------- boot

/// What one kernel's VM reported.
#[derive(Default)]
pub struct Report {
    kernel: &'static str,
    fetched: Fetched,
    fetch_secs: f64,
    boot_secs: f64,
    console_log: PathBuf,
    release: String,
    /// `load: <hook> ...` lines, without the prefix.
    loads: Vec<String>,
    /// `fixtures: ...`, without the prefix.
    summary: Option<String>,
    /// `clock: ...`: the clock the loader picked on this kernel.
    clock: Option<String>,
    failures: Vec<String>,
    /// (program, log lines) of each rejected program.
    verifier_logs: Vec<(String, Vec<String>)>,
    exit: Option<i32>,
    problem: Option<String>,
}

impl Report {
    fn ok(&self) -> bool {
        self.exit == Some(0) && self.problem.is_none()
    }

    fn print(&self) {
        let f = &self.fetched;
        eprintln!(
            "  {:<5} {} {} ({}, fetch {:.1}s) kernel {}",
            self.kernel,
            f.package,
            f.version,
            if f.cached { "cached" } else { "downloaded" },
            self.fetch_secs,
            if self.release.is_empty() {
                "?"
            } else {
                &self.release
            },
        );
        eprintln!(
            "        loaded: {}",
            if self.loads.is_empty() {
                "-".to_string()
            } else {
                self.loads.join(", ")
            }
        );
        eprintln!(
            "        clock: {}",
            self.clock.as_deref().unwrap_or("not reported")
        );
        eprintln!(
            "        fixtures: {}",
            self.summary.as_deref().unwrap_or("no summary")
        );
        for fl in &self.failures {
            eprintln!("        {fl}");
        }
        for (prog, lines) in &self.verifier_logs {
            eprintln!("        verifier log of {prog} (last {LOG_EXCERPT} lines):");
            for l in &lines[lines.len().saturating_sub(LOG_EXCERPT)..] {
                eprintln!("          | {l}");
            }
        }
        if let Some(p) = &self.problem {
            eprintln!("        problem: {p}");
        }
        eprintln!(
            "        VM {:.1}s, runner exit {}: {}  (console: {})",
            self.boot_secs,
            self.exit.map_or("-".to_string(), |c| c.to_string()),
            if self.ok() { "ok" } else { "FAILED" },
            self.console_log.display()
        );
    }

    /// Takes in one console line (escape sequences removed).
    fn line(&mut self, l: &str) {
        if let Some(r) = l.strip_prefix("kernel: ") {
            self.release = r.to_string();
        } else if let Some(x) = l.strip_prefix("load: ") {
            self.loads.push(x.to_string());
        } else if let Some(x) = l.strip_prefix("fixtures: ") {
            self.summary = Some(x.to_string());
        } else if let Some(x) = l.strip_prefix("clock: ") {
            self.clock = Some(x.to_string());
        } else if l.starts_with("FAIL ") {
            self.failures.push(l.to_string());
        } else if let Some(x) = l.strip_prefix(EXIT_MARKER) {
            self.exit = x.trim().parse().ok();
        }
    }
}

/// Removes terminal escape sequences (SeaBIOS clears the screen) and CRs.
fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn boot(k: &Kernel, vmlinuz: &Path, initramfs: &Path, args: &KernelsArgs) -> Result<Report> {
    let log_path = kernels_dir().join(k.name).join("console.log");
    let mut log = fs::File::create(&log_path)?;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg"]);
    if !args.realtime_clock {
        // Guest time = instructions executed (1 ns each); idle time is skipped.
        cmd.args(["-icount", "shift=0,sleep=off"]);
    }
    cmd.args(["-m", "1024", "-nographic", "-no-reboot", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("+ {cmd:?}");
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;

    // Both streams go into one channel of lines.
    let (tx, rx) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|r| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut buf = Vec::new();
            while r
                .read_until(b'\n', &mut buf)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                buf.clear();
            }
        })
    })
    .collect();
    drop(tx);

    let mut report = Report {
        kernel: k.name,
        console_log: log_path,
        ..Default::default()
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.timeout);
    let mut started = false;
    let mut exit_seen: Option<Instant> = None;
    let mut in_log: Option<(String, Vec<String>)> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(raw) => {
                let _ = log.write_all(raw.as_bytes());
                let mut l = clean(raw.trim_end_matches('\n'));
                // The marker may follow the firmware's output on one line.
                if let Some(i) = l.find(START_MARKER) {
                    l.drain(..i);
                }
                // Verifier logs: kept whole in the report, not echoed.
                if let Some((prog, lines)) = &mut in_log {
                    if l == "--- end verifier log ---" {
                        let (prog, lines) = (prog.clone(), std::mem::take(lines));
                        eprintln!(
                            "[{}] (verifier log of {prog}: {} lines)",
                            k.name,
                            lines.len()
                        );
                        report.verifier_logs.push((prog, lines));
                        in_log = None;
                    } else {
                        lines.push(l);
                    }
                    continue;
                }
                if let Some(p) = l
                    .strip_prefix("--- verifier log ")
                    .and_then(|p| p.strip_suffix(" ---"))
                {
                    in_log = Some((p.to_string(), Vec::new()));
                    continue;
                }
                started |= l.contains(START_MARKER);
                // Echo the runner's output except passing rows, and kernel
                // messages (only warnings and errors get past `quiet`).
                let kmsg = l.trim_start().starts_with('[');
                if (started || kmsg) && !l.starts_with("ok   ") && !l.trim().is_empty() {
                    eprintln!("[{}] {l}", k.name);
                }
                report.line(&l);
                if l.starts_with(EXIT_MARKER) {
                    exit_seen = Some(Instant::now());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        let stuck_after_exit = exit_seen.is_some_and(|t| now - t > Duration::from_secs(60));
        if now > deadline || stuck_after_exit {
            if !stuck_after_exit {
                report.problem = Some(format!("timed out after {}s", args.timeout));
            }
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait()?;
    for r in readers {
        let _ = r.join();
    }
    if report.problem.is_none() && report.exit.is_none() {
        report.problem = Some(format!(
            "the VM ended ({status}) without the {EXIT_MARKER} marker{}",
            if started {
                ": the runner crashed or the kernel panicked"
            } else {
                ": the runner never started"
            }
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn escape_sequences_are_removed() {
        assert_eq!(clean("\x1bc\x1b[?7l\x1b[2JSeaBIOS\r"), "SeaBIOS");
        assert_eq!(clean("load: xdp ok"), "load: xdp ok");
    }

    #[test]
    fn mirrors_from_deb822_and_one_line() {
        let d = parse_deb822(
            "Types: deb\n# c\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
             Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\
             Components: main\n",
        );
        let m = mirrors_from(&d).unwrap();
        assert_eq!(m.main, "http://deb.debian.org/debian");
        assert_eq!(
            m.security.as_deref(),
            Some("http://deb.debian.org/debian-security")
        );
        assert_eq!(
            m.signed_by.as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        let l = parse_one_line(
            "# x\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian/ bookworm main\n\
             deb-src http://m.example/debian bookworm main\n\
             deb http://security.example/debian-security bookworm-security main # y\n",
        );
        let m = mirrors_from(&l).unwrap();
        assert_eq!(m.main, "http://m.example/debian");
        assert_eq!(
            m.security.as_deref(),
            Some("http://security.example/debian-security")
        );
        assert_eq!(m.signed_by.as_deref(), Some("/k.gpg"));
        assert!(mirrors_from(&parse_one_line(
            "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main"
        ))
        .is_none());
    }

    #[test]
    fn report_reads_runner_lines() {
        let mut r = Report::default();
        for l in [
            "kernel: 5.10.0-46-cloud-amd64",
            "load: xdp ok",
            "load: tc REJECTED: BPF_PROG_LOAD of firewall_tc failed: Permission denied",
            "FAIL tc: x: returned 0, expected 2",
            "fixtures: xdp 64 passed 0 failed; tc 63 passed 1 failed",
            "FIXTURE-RUNNER-EXIT=1",
        ] {
            r.line(l);
        }
        assert_eq!(r.release, "5.10.0-46-cloud-amd64");
        assert_eq!(r.loads.len(), 2);
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.exit, Some(1));
        assert!(!r.ok());
    }
}
