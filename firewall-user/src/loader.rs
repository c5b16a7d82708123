//! Loading the object, attaching it, and the pinned state that outlives the
//! controller: maps under the pin directory, one pinned link per interface
//! under `links/`, named `IFACE@MODE`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use firewall_common::maps as names;

/// The compiled data plane.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/firewall"))
}

/// How a program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Native XDP; falls back to generic XDP when the driver lacks it.
    Xdp,
    /// Generic (skb) XDP.
    XdpGeneric,
    /// TC clsact ingress classifier.
    Tc,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Xdp => "xdp",
            Mode::XdpGeneric => "xdp-generic",
            Mode::Tc => "tc",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        [Mode::Xdp, Mode::XdpGeneric, Mode::Tc]
            .into_iter()
            .find(|m| m.name() == s)
    }
}

/// An attachment found under the pin directory.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Attachment {
    pub iface: String,
    pub mode: Mode,
    #[serde(skip)]
    pub pin: PathBuf,
}

pub fn links_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("links")
}

/// Attachments pinned under `pin_dir`.
pub fn attachments(pin_dir: &Path) -> Result<Vec<Attachment>> {
    let dir = links_dir(pin_dir);
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(out);
    };
    for ent in rd {
        let ent = ent?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if let Some((iface, mode)) = name.split_once('@') {
            if let Some(mode) = Mode::parse(mode) {
                out.push(Attachment {
                    iface: iface.to_string(),
                    mode,
                    pin: ent.path(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.iface.cmp(&b.iface));
    Ok(out)
}

/// Make sure a bpffs is mounted where the pin directory lives.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(root) && !is_bpffs(root) {
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status()
            .context("mounting bpffs at /sys/fs/bpf")?;
        if !status.success() {
            bail!("bpffs is not mounted at /sys/fs/bpf and mounting it failed");
        }
    }
    fs::create_dir_all(links_dir(pin_dir))
        .with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
    restrict(pin_dir)?;
    Ok(())
}

/// Pinned maps and links are root's alone (0700), as the docs promise.
fn restrict(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting mode 0700 on {}", dir.display()))
}

fn is_bpffs(p: &Path) -> bool {
    fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines().any(|l| {
                let mut f = l.split_whitespace();
                let (_, mnt, ty) = (f.next(), f.next(), f.next());
                mnt == p.to_str() && ty == Some("bpf")
            })
        })
        .unwrap_or(false)
}

/// The capacities `[table]` gives each sized map.
pub fn table_sizes(table: &crate::policy::Table) -> Vec<(&'static str, u32)> {
    [names::SOURCES_V4, names::SOURCES_V6]
        .into_iter()
        .map(|n| (n, table.max_sources))
        .chain(
            names::LIST_MAPS
                .iter()
                .map(|n| (*n, table.max_list_entries)),
        )
        .collect()
}

/// What `load` found out besides the loaded object.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub migration: crate::migrate::Report,
    /// The clock the program should read: the caller writes it into the
    /// config (`Tick::set`) under the write lock.
    pub tick: crate::tick::Tick,
}

/// Load the object with the tables sized by `table`, reusing (adopting)
/// maps already pinned in `pin_dir`; pinned maps of another layout or size
/// are migrated (see `migrate`).
pub fn load(pin_dir: &Path, table: &crate::policy::Table) -> Result<Loaded> {
    let sizes = table_sizes(table);
    let pending = crate::migrate::prepare(pin_dir, object(), &sizes)?;
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(pin_dir);
    for (name, size) in &sizes {
        loader.map_max_entries(name, *size);
    }
    let mut ebpf = loader.load(object()).with_context(|| {
        format!(
            "loading the data plane (maps pinned in {} from an incompatible version are \
             removed by `firewall detach`)",
            pin_dir.display()
        )
    })?;
    for (name, kind) in [(names::PROG_XDP, "xdp"), (names::PROG_TC, "tc")] {
        let prog = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?;
        let r = match kind {
            "xdp" => <&mut Xdp>::try_from(prog)?.load(),
            _ => <&mut SchedClassifier>::try_from(prog)?.load(),
        };
        r.with_context(|| format!("the kernel verifier rejected {name}"))?;
    }
    crate::challenge::install(&mut ebpf)?;
    let migration = crate::migrate::finish(pin_dir, pending);
    let tick = crate::tick::probe(&mut ebpf);
    Ok(Loaded {
        ebpf,
        migration,
        tick,
    })
}

/// What `attach` did, for the event log.
pub struct Attached {
    pub mode: Mode,
    /// The interface already had our link: the program was replaced in place.
    pub replaced: bool,
    /// Native XDP was asked for but the driver lacks it.
    pub fell_back: bool,
}

/// Attach to `iface`, or atomically swap the program of an existing pinned
/// link (an upgrade or restart never leaves the interface unfiltered).
pub fn attach(ebpf: &mut Ebpf, pin_dir: &Path, iface: &str, mode: Mode) -> Result<Attached> {
    let existing = attachments(pin_dir)?.into_iter().find(|a| a.iface == iface);
    if let Some(a) = &existing {
        let same_kind = (a.mode == Mode::Tc) == (mode == Mode::Tc);
        if same_kind {
            replace(ebpf, a)?;
            return Ok(Attached {
                mode: a.mode,
                replaced: true,
                fell_back: false,
            });
        }
        bail!(
            "{iface} is already attached in {} mode; run `firewall detach --iface {iface}` to change the mode",
            a.mode.name()
        );
    }
    let (link, mode, fell_back) = match mode {
        Mode::Tc => (attach_tc(ebpf, iface)?, Mode::Tc, false),
        Mode::XdpGeneric => (
            attach_xdp(ebpf, iface, XdpMode::Skb)?,
            Mode::XdpGeneric,
            false,
        ),
        Mode::Xdp => match attach_xdp(ebpf, iface, XdpMode::Driver) {
            Ok(l) => (l, Mode::Xdp, false),
            Err(_) => (
                attach_xdp(ebpf, iface, XdpMode::Skb)?,
                Mode::XdpGeneric,
                true,
            ),
        },
    };
    let pin = links_dir(pin_dir).join(format!("{iface}@{}", mode.name()));
    link.pin(&pin)
        .with_context(|| format!("pinning the link of {iface} at {}", pin.display()))?;
    Ok(Attached {
        mode,
        replaced: false,
        fell_back,
    })
}

fn xdp(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    Ok(ebpf
        .program_mut(names::PROG_XDP)
        .context("no XDP program")?
        .try_into()?)
}

fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    Ok(ebpf
        .program_mut(names::PROG_TC)
        .context("no TC program")?
        .try_into()?)
}

fn attach_xdp(ebpf: &mut Ebpf, iface: &str, mode: XdpMode) -> Result<FdLink> {
    let prog = xdp(ebpf)?;
    let id = prog
        .attach(iface, mode)
        .with_context(|| format!("attaching XDP ({mode:?}) to {iface}"))?;
    let link = prog.take_link(id)?;
    FdLink::try_from(link).context("this kernel has no XDP bpf_link (Linux 5.9+ needed)")
}

fn attach_tc(ebpf: &mut Ebpf, iface: &str) -> Result<FdLink> {
    // An existing clsact qdisc is fine.
    let _ = tc::qdisc_add_clsact(iface);
    let prog = classifier(ebpf)?;
    let id = prog
        .attach(iface, TcAttachType::Ingress)
        .with_context(|| format!("attaching TC ingress to {iface}"))?;
    let link = prog.take_link(id)?;
    FdLink::try_from(link).context("this kernel has no TCX links (Linux 6.6+ needed for --mode tc)")
}

/// Swap the program behind a pinned link (bpf_link_update: atomic).
fn replace(ebpf: &mut Ebpf, a: &Attachment) -> Result<()> {
    let pinned = PinnedLink::from_pin(&a.pin)
        .with_context(|| format!("opening pinned link {}", a.pin.display()))?;
    let fd: FdLink = pinned.into();
    // The pin keeps the link alive; our handle is closed without detaching.
    if a.mode == Mode::Tc {
        let prog = classifier(ebpf)?;
        let id = prog.attach_to_link(fd.try_into()?)?;
        drop(FdLink::try_from(prog.take_link(id)?)?);
    } else {
        let prog = xdp(ebpf)?;
        let id = prog.attach_to_link(fd.try_into()?)?;
        drop(FdLink::try_from(prog.take_link(id)?)?);
    }
    Ok(())
}

/// Remove the attachment of `iface` (or all), and when none is left, the
/// maps and the pin directory.
pub fn detach(pin_dir: &Path, iface: Option<&str>) -> Result<Vec<Attachment>> {
    let all = attachments(pin_dir)?;
    let chosen: Vec<Attachment> = all
        .iter()
        .filter(|a| iface.is_none_or(|i| a.iface == i))
        .cloned()
        .collect();
    if let Some(i) = iface {
        if chosen.is_empty() {
            return Err(crate::error::bad(format!(
                "{i} is not attached under {} (attached: {})",
                pin_dir.display(),
                if all.is_empty() {
                    "none".to_string()
                } else {
                    all.iter()
                        .map(|a| a.iface.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
    }
    for a in &chosen {
        // Dropping the last reference to a link detaches its program.
        let link =
            PinnedLink::from_pin(&a.pin).with_context(|| format!("opening {}", a.pin.display()))?;
        drop(link.unpin()?);
    }
    if chosen.len() == all.len() {
        for name in names::ALL {
            let p = pin_dir.join(name);
            if p.exists() {
                fs::remove_file(&p).with_context(|| format!("unpinning {}", p.display()))?;
            }
        }
        let _ = fs::remove_dir(links_dir(pin_dir));
        let _ = fs::remove_dir(pin_dir);
    }
    Ok(chosen)
}

/// Ids of our programs currently loaded that use this pin directory's maps.
pub fn program_ids(pin_dir: &Path) -> Vec<(String, u32)> {
    let Ok(data) = aya::maps::MapData::from_pin(pin_dir.join(names::SOURCES_V4)) else {
        return Vec::new();
    };
    let Ok(info) = data.info() else {
        return Vec::new();
    };
    let map_id = info.id();
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter(|p| {
            p.map_ids()
                .ok()
                .flatten()
                .is_some_and(|ids| ids.contains(&map_id))
        })
        .map(|p| (p.name_as_str().unwrap_or("?").to_string(), p.id()))
        .collect()
}
