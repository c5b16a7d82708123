//! `bench [--quick]`: the benchmark run behind `cargo xtask bench` (see
//! `tests/src/bench/mod.rs`). Needs root, the release `firewall` binary
//! (`FIREWALL_BIN`), nftables, iptables, xdp-tools and ethtool.

#[path = "../bench/mod.rs"]
mod bench;

fn main() {
    bench::main()
}
