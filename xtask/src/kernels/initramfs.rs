//! The VM's root: the fixture table as a static binary (`fixture-runner`),
//! static busybox and an `/init` that runs the one and powers off, packed
//! as a newc cpio archive.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::{kernels_dir, BUSYBOX, GNU, MUSL};
use crate::util::{cargo, run, target_dir};

/// Printed by [`INIT`] before the runner starts and with its exit status.
pub(super) const START_MARKER: &str = "FIXTURE-RUNNER-START";
pub(super) const EXIT_MARKER: &str = "FIXTURE-RUNNER-EXIT=";

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

/// Builds `fixture-runner` as a static binary: for musl, or when that does
/// not build, for glibc with `crt-static`.
pub(super) fn build_runner() -> Result<PathBuf> {
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
    use object::read::elf::{ElfFile64, ProgramHeader as _};
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let elf = ElfFile64::<object::Endianness>::parse(&*data)
        .with_context(|| format!("{} is not an ELF64 file", path.display()))?;
    let endian = elf.endian();
    Ok(elf
        .elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(endian) == object::elf::PT_INTERP))
}

/// `target/kernels/initramfs.cpio`: busybox, the runner and [`INIT`].
pub(super) fn pack(runner: &Path) -> Result<PathBuf> {
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
