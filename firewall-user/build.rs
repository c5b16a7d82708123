use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let ebpf = aya_build::Package {
        name: "firewall-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../firewall-ebpf"),
        ..Default::default()
    };
    println!("cargo:rerun-if-changed=../firewall-common/src");
    aya_build::build_ebpf([ebpf], Toolchain::default())
        .context("building the eBPF object (run `cargo xtask setup` for bpf-linker and rust-src)")
        .map_err(|e| anyhow!("{e:#}"))
}
