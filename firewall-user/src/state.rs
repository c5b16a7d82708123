//! What the running controller tells `firewall status`: a small JSON file
//! under /run/firewall (bpffs holds only maps, programs and links).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct DaemonState {
    pub pid: u32,
    pub config: Option<PathBuf>,
    pub started: String,
    pub metrics_addr: String,
    pub last_reload: Option<String>,
    pub last_reload_ok: bool,
}

/// One file per pin directory, so several instances can coexist.
pub fn path(pin_dir: &Path) -> PathBuf {
    let name: String = pin_dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Path::new("/run/firewall").join(format!("{name}.json"))
}

pub fn write(pin_dir: &Path, s: &DaemonState) -> anyhow::Result<()> {
    let p = path(pin_dir);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(s)?)?;
    std::fs::rename(tmp, p)?;
    Ok(())
}

pub fn read(pin_dir: &Path) -> Option<DaemonState> {
    serde_json::from_slice(&std::fs::read(path(pin_dir)).ok()?).ok()
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
