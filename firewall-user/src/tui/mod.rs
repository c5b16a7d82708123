//! `firewall top --watch`: a live full-screen view of the data plane.
//!
//! Rates per verdict with their recent history, the top sources (by drops
//! or packets) with prefix, tokens and state, the bans, and the per-source
//! table's occupancy, refreshed every interval from the pinned maps (no
//! daemon needed). Keys: `s` sort, `p` pause, arrows select, Tab switches
//! pane, `b` / `u` block or unblock the selection after a y/N prompt (the
//! same code as `firewall block add/del`, under the writers' lock), `q`,
//! Esc or Ctrl-C quit.
//!
//! The terminal is restored however the view ends: on return, on error,
//! on panic (a hook restores it before the panic message is printed), and
//! on SIGTERM or SIGHUP (caught, then the loop ends normally).

mod app;
mod view;

use std::{
    io::{stdout, IsTerminal, Stdout},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Once,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use ipnet::IpNet;
use ratatui::{
    backend::CrosstermBackend,
    crossterm::{
        cursor::{Hide, Show},
        event::{self, Event, KeyEventKind},
        execute,
        terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen},
    },
    Terminal,
};

use crate::{
    control::{Control, List, Origin},
    error::bad,
};
use app::{Action, App};

/// Leaves raw mode and the alternate screen and shows the cursor. Safe to
/// call more than once.
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(stdout(), LeaveAlternateScreen, Show);
}

/// Restores the terminal when dropped, also while unwinding.
struct Screen;

impl Screen {
    fn enter() -> Result<Self> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // Before the message, or it lands on the alternate screen.
                restore();
                previous(info);
            }));
        });
        enable_raw_mode().context("switching the terminal to raw mode")?;
        let screen = Screen;
        execute!(stdout(), EnterAlternateScreen, Hide).context("entering the alternate screen")?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// SIGTERM and SIGHUP set the returned flag instead of killing us with the
/// terminal in raw mode.
fn catch_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    if let Ok(rt) = rt {
        let registered = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            Some((
                signal(SignalKind::terminate()).ok()?,
                signal(SignalKind::hangup()).ok()?,
            ))
        });
        if let Some((mut term, mut hup)) = registered {
            std::thread::spawn(move || {
                rt.block_on(async {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = hup.recv() => {}
                    }
                });
                set.store(true, Ordering::Relaxed);
            });
        }
    }
    flag
}

/// Run the view until the user quits. `every` is the refresh interval in
/// seconds; `n` the number of sources shown.
pub fn run(pin_dir: &Path, n: usize, every: u64) -> Result<()> {
    if !stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(bad(
            "`firewall top --watch` needs a terminal; for scripts use `firewall top --json` or `firewall stats --watch SECS`",
        ));
    }
    if every == 0 {
        return Err(bad(
            "invalid --watch 0: expected a refresh interval of 1 second or more",
        ));
    }
    let interval = Duration::from_secs(every);
    let mut control = Control::open(pin_dir)?;
    let mut app = App::new(pin_dir.display().to_string(), interval, n.max(1));
    // The first reading before the screen changes: errors print plainly.
    app.update(app::sample(&control, app.n, app.order)?, Instant::now());
    let stop = catch_signals();
    let _screen = Screen::enter()?;
    let mut term = Terminal::new(CrosstermBackend::new(stdout()))?;
    term.clear()?;
    event_loop(&mut term, &mut app, &mut control, pin_dir, &stop)
}

fn event_loop(
    term: &mut Terminal<CrosstermBackend<Stdout>>,
    app: &mut App,
    control: &mut Control,
    pin_dir: &Path,
    stop: &AtomicBool,
) -> Result<()> {
    let mut next = Instant::now() + app.interval;
    loop {
        term.draw(|f| view::draw(f, app))?;
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        if event::poll(wait)? {
            if let Event::Key(k) = event::read()? {
                if k.kind != KeyEventKind::Release {
                    match app.key(k) {
                        Action::None => {}
                        Action::Quit => return Ok(()),
                        Action::Refresh => show(app, control, pin_dir),
                        Action::Block(net) => {
                            let r = change(control, net, true);
                            report(app, r, format!("blocked {net} (manual)"));
                            show(app, control, pin_dir);
                        }
                        Action::Unblock(net) => {
                            let r = change(control, net, false);
                            report(app, r, format!("unblocked {net}"));
                            show(app, control, pin_dir);
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= next {
            next += app.interval;
            if next < now {
                next = now + app.interval;
            }
            if !app.paused {
                match app::sample(control, app.n, app.order) {
                    Ok(s) => app.update(s, now),
                    Err(e) => lost(app, control, pin_dir, e),
                }
            }
        }
    }
}

/// Re-read what the view shows (after a key), without touching the rates.
fn show(app: &mut App, control: &mut Control, pin_dir: &Path) {
    match app::sample(control, app.n, app.order) {
        Ok(s) => app.show(s),
        Err(e) => lost(app, control, pin_dir, e),
    }
}

/// A reading failed (detached, replaced): say so, and try the pins again.
fn lost(app: &mut App, control: &mut Control, pin_dir: &Path, e: anyhow::Error) {
    app.error = Some(format!("{e:#}"));
    if let Ok(m) = Control::open(pin_dir) {
        *control = m;
    }
}

/// `firewall block add NET` / `firewall block del NET`: the same writer,
/// under the same lock.
fn change(control: &mut Control, net: IpNet, block: bool) -> Result<()> {
    let mut w = control.write()?;
    if block {
        w.add(
            List::Block,
            &[net],
            Origin::Manual,
            None,
            Some("firewall top"),
        )
    } else {
        w.delete(List::Block, &[net])
    }
}

fn report(app: &mut App, r: Result<()>, ok: String) {
    match r {
        Ok(()) => app.say(ok, true),
        Err(e) => app.say(format!("error: {e:#}"), false),
    }
}

/// The test hook of builds with the `test-hooks` feature: with
/// `FIREWALL_TOP_PANIC_KEY` set, that key panics (the end-to-end test
/// checks that the terminal is restored).
#[cfg(feature = "test-hooks")]
pub(crate) fn panic_key() -> Option<char> {
    std::env::var("FIREWALL_TOP_PANIC_KEY")
        .ok()
        .and_then(|s| s.chars().next())
}
