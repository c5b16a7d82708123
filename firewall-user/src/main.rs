use clap::Parser;
use firewall_user::{
    cli::{AllowCmd, BlockCmd, Cli, Command, CrowdsecCmd, FleetCmd, LimitCmd},
    commands::{self, lists::parse_all},
    control::{Control, List, Origin},
    daemon,
    error::exit_code,
    loader, policy,
};

fn main() {
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(exit_code(&e));
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let pin = cli.pin_dir.as_path();
    match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(daemon::run(pin, args)),
        Command::Check { file } => check(&file),
        Command::Fleet(FleetCmd::Status(a)) => firewall_user::fleet::status::run(pin, a.json),
        Command::Detach { iface } => {
            let gone = loader::detach(pin, iface.as_deref())?;
            for a in &gone {
                println!("detached {} ({})", a.iface, a.mode.name());
            }
            if gone.is_empty() {
                println!("nothing attached under {}", pin.display());
            }
            Ok(())
        }
        Command::Status(a) => commands::status::run(&Control::open(pin)?, a.json),
        Command::Stats(a) => commands::stats::run(&Control::open(pin)?, a.json, a.watch),
        Command::Top(a) => match a.watch {
            Some(secs) => firewall_user::tui::run(pin, a.n, secs),
            None => commands::top::run(&Control::open(pin)?, a.n, a.json),
        },
        Command::Crowdsec(CrowdsecCmd::Status(a)) => {
            firewall_user::crowdsec::status::run(pin, a.json)
        }
        Command::Completions { shell } => commands::generate::completions(shell),
        Command::Man { out_dir } => commands::generate::man_pages(&out_dir),
        // Listing reads; every change takes the writers' lock inside.
        Command::Block(cmd) => {
            let mut control = Control::open(pin)?;
            match cmd {
                BlockCmd::Add {
                    cidrs,
                    ttl,
                    comment,
                } => {
                    let nets = parse_all(&cidrs)?;
                    let ttl = commands::lists::parse_ttl(ttl.as_deref())?;
                    control.write()?.add(
                        List::Block,
                        &nets,
                        Origin::Manual,
                        ttl,
                        comment.as_deref(),
                    )
                }
                BlockCmd::Del { cidrs } => {
                    let nets = parse_all(&cidrs)?;
                    control.write()?.delete(List::Block, &nets)
                }
                BlockCmd::List(a) => commands::lists::list(&control, List::Block, a.json),
                BlockCmd::Import { file } => commands::lists::import(&mut control, &file),
            }
        }
        Command::Allow(cmd) => {
            let mut control = Control::open(pin)?;
            match cmd {
                AllowCmd::Add { cidrs, comment } => {
                    let nets = parse_all(&cidrs)?;
                    control.write()?.add(
                        List::Allow,
                        &nets,
                        Origin::Manual,
                        None,
                        comment.as_deref(),
                    )
                }
                AllowCmd::Del { cidrs } => {
                    let nets = parse_all(&cidrs)?;
                    control.write()?.delete(List::Allow, &nets)
                }
                AllowCmd::List(a) => commands::lists::list(&control, List::Allow, a.json),
            }
        }
        Command::Limit(cmd) => {
            let mut control = Control::open(pin)?;
            match cmd {
                LimitCmd::Set { cidr, rate, burst } => {
                    commands::limits::set(&mut control, cidr.as_deref(), rate, burst)
                }
                LimitCmd::Del { cidr, default } => commands::limits::del(
                    &mut control,
                    if default { None } else { cidr.as_deref() },
                ),
                LimitCmd::List(a) => commands::limits::list(&control, a.json),
            }
        }
    }
}

/// `firewall check FILE`: every problem with its line; 0 only when valid.
fn check(file: &std::path::Path) -> anyhow::Result<()> {
    match policy::load(file) {
        Err(e) => Err(firewall_user::error::bad(format!(
            "cannot read {}: {e:#}",
            file.display()
        ))),
        Ok(Ok((_, warnings))) => {
            for w in &warnings {
                println!("{}: {w}", file.display());
            }
            println!("{}: valid", file.display());
            Ok(())
        }
        Ok(Err(problems)) => {
            for p in &problems {
                eprintln!("{}: {p}", file.display());
            }
            let n = problems.iter().filter(|p| p.is_error()).count();
            Err(firewall_user::error::bad(format!(
                "{}: {n} error(s); the file is not valid",
                file.display()
            )))
        }
    }
}
