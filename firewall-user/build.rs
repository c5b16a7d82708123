use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    // Build variants of the data plane (e.g. `upgrade-variant`, which the
    // upgrade test uses to tell an old program from a new one).
    println!("cargo:rerun-if-env-changed=FIREWALL_EBPF_FEATURES");
    let features = std::env::var("FIREWALL_EBPF_FEATURES").unwrap_or_default();
    let features: Vec<&str> = features.split(',').filter(|f| !f.is_empty()).collect();
    let ebpf = aya_build::Package {
        name: "firewall-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../firewall-ebpf"),
        features: &features,
        ..Default::default()
    };
    println!("cargo:rerun-if-changed=../firewall-common/src");
    aya_build::build_ebpf([ebpf], Toolchain::default())
        .context("building the eBPF object (run `cargo xtask setup` for bpf-linker and rust-src)")
        .map_err(|e| anyhow!("{e:#}"))
}
