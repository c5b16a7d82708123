//! The kernels: Debian's cloud kernel packages, fetched with apt-get
//! download (the system's configuration, or a private one for another
//! release) and cached as `target/kernels/<name>/vmlinuz`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{anyhow, bail, Context, Result};

use super::{kernels_dir, Kernel, Source};
use crate::util::{is_root, probe, run};

/// A kernel in the cache.
#[derive(Default)]
pub struct Fetched {
    pub(super) vmlinuz: PathBuf,
    pub(super) package: String,
    pub(super) version: String,
    pub(super) cached: bool,
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

pub(super) fn fetch(k: &Kernel) -> Result<Fetched> {
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
             (update the pin in xtask/src/kernels/mod.rs)",
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

#[cfg(test)]
mod unit {
    use super::*;

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
}
