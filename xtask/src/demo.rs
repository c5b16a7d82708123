//! `cargo xtask demo`: the firewall on a sandbox gateway, a legitimate client
//! and a flooding attacker, and who got through.

use crate::util::{firewall_release_bin, is_root};
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use testkit::{send_udp, FirewallDaemon, Sandbox, UdpSink};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Packets per second of the legitimate client.
    #[arg(long, default_value_t = 50)]
    client_pps: u64,
    /// Packets per second of the attacker's flood.
    #[arg(long, default_value_t = 20_000)]
    flood_pps: u64,
    /// How long both flows run, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Default per-source limit written to the demo policy (packets/s).
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Default per-source burst written to the demo policy (packets).
    #[arg(long, default_value_t = 200)]
    burst: u64,
    /// Skip `cargo xtask setup` and the release build.
    #[arg(long)]
    no_build: bool,
    /// Instead: three gateways sharing bans through NATS JetStream
    /// (`[fleet]`); a flood banned on one is dropped by the others.
    #[arg(long)]
    fleet: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C / SIGTERM set a flag instead of killing us, so the sandbox and
/// the attached data plane are always cleaned up.
fn trap_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub(crate) fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; cleaning up");
    }
    Ok(())
}

pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn demo(args: &DemoArgs) -> Result<()> {
    if !is_root() {
        bail!("the demo needs root (network namespaces and XDP): run it as root");
    }
    if !args.no_build {
        crate::run_steps(&[
            crate::Step::new("setup", crate::setup::setup),
            crate::Step::new("build firewall (release)", crate::build_firewall),
        ])?;
    }
    let bin = firewall_release_bin();
    if !bin.exists() {
        bail!("{} not found; run without --no-build", bin.display());
    }
    if let Some(problem) = testkit::privilege_problem() {
        bail!("cannot run the demo here: {problem}");
    }
    trap_signals();
    if args.fleet {
        return crate::demo_fleet::demo(&bin);
    }

    println!("\n== sandbox: client and attacker namespaces joined to a gateway by veth ==");
    let sb = Sandbox::new()?;
    println!(
        "  client   {} ({}) -> gateway {} ({})",
        testkit::CLIENT_V4,
        sb.client_ns,
        testkit::GW_CLIENT_V4,
        sb.gw_client_if
    );
    println!(
        "  attacker {} ({}) -> gateway {} ({})",
        testkit::ATTACKER_V4,
        sb.attacker_ns,
        testkit::GW_ATTACKER_V4,
        sb.gw_attacker_if
    );
    check_interrupt()?;

    let tmp = TempDir(std::env::temp_dir().join(format!("fw-demo-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0)?;
    let policy = tmp.0.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "# demo policy: every source prefix gets {rate} packets/s, bursts of {burst}\n\
             [defaults]\nrate = {rate}\nburst = {burst}\n",
            rate = args.rate,
            burst = args.burst
        ),
    )?;
    println!(
        "\n== policy {} ==\n{}",
        policy.display(),
        std::fs::read_to_string(&policy)?
    );

    let policy_s = policy.display().to_string();
    let fw_args = [
        "--iface",
        sb.gw_client_if.as_str(),
        "--iface",
        sb.gw_attacker_if.as_str(),
        "--config",
        policy_s.as_str(),
    ];
    println!(
        "== starting: nsenter --net={} {} --pin-dir <tmp> run {} ==",
        sb.gw_path(),
        bin.display(),
        fw_args.join(" ")
    );
    let mut fw = FirewallDaemon::spawn(&bin, &sb.gw_ns, &testkit::unique_pin_dir(), &fw_args)
        .context("starting the firewall on the gateway")?;
    println!("  ready: pins in {}", fw.pin_dir().display());
    check_interrupt()?;

    let client_sink = UdpSink::try_bind(
        &sb.gw_path(),
        SocketAddr::new(testkit::GW_CLIENT_V4.into(), 7001),
    )?;
    let attack_sink = UdpSink::try_bind(
        &sb.gw_path(),
        SocketAddr::new(testkit::GW_ATTACKER_V4.into(), 7002),
    )?;
    let secs = Duration::from_secs(args.seconds);
    println!(
        "\n== traffic for {}s: client {} pps, attacker flood {} pps (UDP to the gateway) ==",
        args.seconds, args.client_pps, args.flood_pps
    );
    let (client_sent, attack_sent) = std::thread::scope(|s| {
        let c = s.spawn(|| {
            send_udp(
                &sb.client_path(),
                None,
                client_sink.addr(),
                args.client_pps,
                secs,
            )
        });
        let a = s.spawn(|| {
            send_udp(
                &sb.attacker_path(),
                None,
                attack_sink.addr(),
                args.flood_pps,
                secs,
            )
        });
        (c.join(), a.join())
    });
    let client_sent = client_sent.map_err(|_| anyhow::anyhow!("client sender panicked"))?;
    let attack_sent = attack_sent.map_err(|_| anyhow::anyhow!("attacker sender panicked"))?;
    let client = client_sink.stop();
    let attack = attack_sink.stop();
    check_interrupt()?;

    let pct = |r: u64, s: u64| {
        if s == 0 {
            0.0
        } else {
            100.0 * r as f64 / s as f64
        }
    };
    println!(
        "\n{:<34} {:>10} {:>10} {:>10}",
        "flow", "sent", "received", "delivered"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>9.1}%",
        format!("client   {} -> gw:7001", testkit::CLIENT_V4),
        client_sent,
        client.total,
        pct(client.total, client_sent)
    );
    println!(
        "{:<34} {:>10} {:>10} {:>9.1}%",
        format!("attacker {} -> gw:7002", testkit::ATTACKER_V4),
        attack_sent,
        attack.total,
        pct(attack.total, attack_sent)
    );
    let allowed = args.burst + args.rate * args.seconds;
    println!(
        "(the attacker's budget: burst {} + {} pps x {}s = {} packets)",
        args.burst, args.rate, args.seconds, allowed
    );

    println!("\n== firewall stats ==");
    let stats = fw.cli(&["stats"]);
    print!("{}", String::from_utf8_lossy(&stats.stdout));
    if !stats.status.success() {
        println!(
            "(firewall stats failed: {})",
            String::from_utf8_lossy(&stats.stderr).trim()
        );
    }
    let events = fw.events();
    if !events.is_empty() {
        println!("\n== firewall events (first 10 of {}) ==", events.len());
        for e in events.iter().take(10) {
            println!("  {e}");
        }
    }

    println!("\n== stopping the daemon, detaching, removing the sandbox ==");
    let status = fw.stop();
    println!("  firewall run exited: {status}");
    fw.cleanup().context("detaching the firewall")?;
    drop(fw);
    drop(sb);

    let client_ok = client_sent > 0 && client.total * 100 >= client_sent * 99;
    // Generous margin for timing: the bucket refills while the flood runs.
    let flood_limited = attack.total <= allowed + allowed / 2 + 100 && attack.total < attack_sent;
    println!(
        "\nclient fully served: {}   flood limited: {}",
        if client_ok { "yes" } else { "NO" },
        if flood_limited { "yes" } else { "NO" }
    );
    if !(client_ok && flood_limited) {
        bail!("the demo did not show the expected result (see the table above)");
    }
    Ok(())
}
