//! The state of `firewall top --watch`: samples of the pinned maps, rates
//! and their history, the selection, and what each key does. No terminal
//! here: keys come in as `KeyEvent`s and come out as [`Action`]s, which
//! `tui::run` carries out on the maps, so all of it is unit-tested.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use anyhow::Result;
use firewall_common::Stat;
use ipnet::IpNet;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::control::{
    origin,
    read::{Count, ListRow, Order, Source},
    Control, List, Origin,
};

/// How many samples of history the sparklines keep (10 minutes at 1 s).
pub const HISTORY: usize = 600;
/// How long a message stays in the footer.
const MESSAGE_TTL: Duration = Duration::from_secs(8);

/// One reading of the pinned maps.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Packets and bytes per verdict, in `Verdict::ALL` order.
    pub verdicts: Vec<(&'static str, Count)>,
    /// Packets of never-seen prefixes the `[flood]` guard refused (total).
    pub new_refused: u64,
    pub tracked: usize,
    pub capacity: u32,
    /// `iface (mode)` for each attachment.
    pub attached: Vec<String>,
    pub monitor: bool,
    pub generation: u32,
    /// The top sources in the current order.
    pub sources: Vec<Source>,
    /// Every blocklist entry in force.
    pub blocks: Vec<ListRow>,
}

/// Read everything the view shows.
pub fn sample(control: &Control, n: usize, order: Order) -> Result<Snapshot> {
    let verdicts = control.verdicts()?;
    let top = control.top(n, order)?;
    let attached = control
        .attached()?
        .into_iter()
        .map(|a| format!("{} ({})", a.iface, a.mode.name()))
        .collect();
    let cfg = control.config()?;
    Ok(Snapshot {
        verdicts: verdicts.iter().map(|(v, c)| (v.name(), c)).collect(),
        new_refused: control.stat(Stat::NewSourceRefused)?,
        tracked: top.tracked,
        capacity: control.sources_capacity()?,
        attached,
        monitor: cfg.flags & firewall_common::flags::MONITOR != 0,
        generation: cfg.generation,
        sources: top.sources,
        blocks: control.list(List::Block)?,
    })
}

/// Rates over the last interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    pub packets: f64,
    pub bytes: f64,
}

/// Which pane the arrow keys move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Sources,
    Blocks,
}

/// What a key asks the caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// Sample again now (the order changed).
    Refresh,
    /// `firewall block add NET` (confirmed).
    Block(IpNet),
    /// `firewall block del NET` (confirmed).
    Unblock(IpNet),
}

/// A question on the footer line, waiting for y or n.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    pub question: String,
    pub action: Action,
}

pub struct App {
    pub pin_dir: String,
    pub interval: Duration,
    pub n: usize,
    pub order: Order,
    pub paused: bool,
    pub focus: Focus,
    pub snap: Snapshot,
    /// Rates per verdict over the last interval.
    pub rates: BTreeMap<&'static str, Rate>,
    /// Packets per second per verdict, newest last.
    pub history: BTreeMap<&'static str, VecDeque<u64>>,
    pub refused_rate: f64,
    /// Selected source (prefix and rule) and blocklist entry, kept by
    /// identity across refreshes.
    pub selected_source: Option<(String, Option<String>)>,
    pub selected_block: Option<String>,
    pub confirm: Option<Confirm>,
    pub message: Option<(String, Instant, bool)>,
    /// The last sampling error (the data plane went away...), shown until
    /// a sample succeeds again.
    pub error: Option<String>,
    prev: Option<(Instant, Snapshot)>,
    pub samples: u64,
}

impl App {
    pub fn new(pin_dir: String, interval: Duration, n: usize) -> Self {
        App {
            pin_dir,
            interval,
            n,
            order: Order::Drops,
            paused: false,
            focus: Focus::Sources,
            snap: Snapshot::default(),
            rates: BTreeMap::new(),
            history: BTreeMap::new(),
            refused_rate: 0.0,
            selected_source: None,
            selected_block: None,
            confirm: None,
            message: None,
            error: None,
            prev: None,
            samples: 0,
        }
    }

    /// Take a new snapshot taken at `at`: rates from the difference with
    /// the previous one, pushed onto the history.
    pub fn update(&mut self, snap: Snapshot, at: Instant) {
        if let Some((t, prev)) = &self.prev {
            let secs = at.duration_since(*t).as_secs_f64();
            if secs > 0.0 {
                for (name, c) in &snap.verdicts {
                    let before = prev
                        .verdicts
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, c)| *c)
                        .unwrap_or_default();
                    // Counters only go down when the data plane was replaced.
                    let rate = Rate {
                        packets: c.packets.saturating_sub(before.packets) as f64 / secs,
                        bytes: c.bytes.saturating_sub(before.bytes) as f64 / secs,
                    };
                    self.rates.insert(name, rate);
                    let h = self.history.entry(name).or_default();
                    h.push_back(rate.packets.round() as u64);
                    while h.len() > HISTORY {
                        h.pop_front();
                    }
                }
                self.refused_rate = snap.new_refused.saturating_sub(prev.new_refused) as f64 / secs;
            }
        }
        self.samples += 1;
        self.error = None;
        self.prev = Some((at, snap.clone()));
        self.snap = snap;
        self.keep_selection();
    }

    /// Show `snap` (read after a key) without touching rates or history.
    pub fn show(&mut self, snap: Snapshot) {
        self.error = None;
        self.snap = snap;
        self.keep_selection();
    }

    /// After a refresh: the same source stays selected wherever it moved;
    /// when it is gone, the first row.
    fn keep_selection(&mut self) {
        let found = self
            .selected_source
            .as_ref()
            .is_some_and(|sel| self.snap.sources.iter().any(|r| key_of(r) == *sel));
        if !found {
            self.selected_source = self.snap.sources.first().map(key_of);
        }
        let bans = self.ban_rows();
        let found = self
            .selected_block
            .as_ref()
            .is_some_and(|sel| bans.iter().any(|r| r.net.to_string() == *sel));
        if !found {
            self.selected_block = bans.first().map(|r| r.net.to_string());
        }
    }

    /// The blocklist entries the bans pane shows: auto-bans first (soonest
    /// to expire first), then manual entries. Imports and the file's
    /// entries can be huge; they are only counted.
    pub fn ban_rows(&self) -> Vec<&ListRow> {
        let mut v: Vec<&ListRow> = self
            .snap
            .blocks
            .iter()
            .filter(|r| matches!(r.origin, Origin::Autoban | Origin::Manual))
            .collect();
        v.sort_by_key(|r| {
            (
                r.origin != Origin::Autoban,
                r.expires_in_secs.unwrap_or(u64::MAX),
                r.net.to_string(),
            )
        });
        v
    }

    /// Blocklist entries by origin.
    pub fn block_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for o in [
            Origin::Config,
            Origin::Manual,
            Origin::Import,
            Origin::Autoban,
        ] {
            m.insert(o.name(), 0);
        }
        for r in &self.snap.blocks {
            *m.entry(r.origin.name()).or_default() += 1;
        }
        m
    }

    pub fn selected_source_index(&self) -> Option<usize> {
        let sel = self.selected_source.as_ref()?;
        self.snap.sources.iter().position(|r| key_of(r) == *sel)
    }

    pub fn selected_block_index(&self) -> Option<usize> {
        let sel = self.selected_block.as_ref()?;
        self.ban_rows()
            .iter()
            .position(|r| r.net.to_string() == *sel)
    }

    /// The blocklist entry that decides for `net`: the exact one, else the
    /// most specific entry containing it.
    pub fn covering_block(&self, net: &IpNet) -> Option<&ListRow> {
        self.snap
            .blocks
            .iter()
            .filter(|r| r.net.contains(net))
            .max_by_key(|r| r.net.prefix_len())
    }

    pub fn say(&mut self, text: impl Into<String>, ok: bool) {
        self.message = Some((text.into(), Instant::now(), ok));
    }

    /// The footer message, while it is fresh.
    pub fn message(&self) -> Option<(&str, bool)> {
        self.message
            .as_ref()
            .filter(|(_, t, _)| t.elapsed() < MESSAGE_TTL)
            .map(|(m, _, ok)| (m.as_str(), *ok))
    }

    /// What the key does. Quitting always works, also at a prompt.
    pub fn key(&mut self, k: KeyEvent) -> Action {
        let ctrl_c = k.modifiers.contains(KeyModifiers::CONTROL)
            && matches!(k.code, KeyCode::Char('c') | KeyCode::Char('C'));
        if ctrl_c {
            return Action::Quit;
        }
        if let Some(c) = self.confirm.take() {
            return match k.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => c.action,
                _ => {
                    self.say("cancelled", true);
                    Action::None
                }
            };
        }
        #[cfg(feature = "test-hooks")]
        if let KeyCode::Char(c) = k.code {
            if Some(c) == super::panic_key() {
                panic!("FIREWALL_TOP_PANIC_KEY '{c}' pressed");
            }
        }
        match k.code {
            KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => Action::Quit,
            KeyCode::Char('s') => {
                self.order = match self.order {
                    Order::Drops => Order::Packets,
                    Order::Packets => Order::Drops,
                };
                Action::Refresh
            }
            KeyCode::Char('d') => {
                self.order = Order::Drops;
                Action::Refresh
            }
            KeyCode::Char('P') => {
                self.order = Order::Packets;
                Action::Refresh
            }
            KeyCode::Char('p') | KeyCode::Char(' ') => {
                self.paused = !self.paused;
                Action::None
            }
            KeyCode::Tab | KeyCode::BackTab => {
                self.focus = match self.focus {
                    Focus::Sources => Focus::Blocks,
                    Focus::Blocks => Focus::Sources,
                };
                Action::None
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.move_selection(-1);
                Action::None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.move_selection(1);
                Action::None
            }
            KeyCode::Home | KeyCode::Char('g') => {
                self.move_selection(i64::MIN / 2);
                Action::None
            }
            KeyCode::End | KeyCode::Char('G') => {
                self.move_selection(i64::MAX / 2);
                Action::None
            }
            KeyCode::Char('b') => self.ask_block(),
            KeyCode::Char('u') | KeyCode::Delete => self.ask_unblock(),
            _ => Action::None,
        }
    }

    fn move_selection(&mut self, by: i64) {
        let step = |i: Option<usize>, len: usize| -> Option<usize> {
            if len == 0 {
                return None;
            }
            let i = i.unwrap_or(0) as i64;
            Some((i.saturating_add(by)).clamp(0, len as i64 - 1) as usize)
        };
        match self.focus {
            Focus::Sources => {
                let i = step(self.selected_source_index(), self.snap.sources.len());
                self.selected_source = i.map(|i| key_of(&self.snap.sources[i]));
            }
            Focus::Blocks => {
                let bans = self.ban_rows();
                let i = step(self.selected_block_index(), bans.len());
                self.selected_block = i.map(|i| bans[i].net.to_string());
            }
        }
    }

    fn selected_net(&self) -> Option<IpNet> {
        let i = self.selected_source_index()?;
        Some(self.snap.sources[i].net)
    }

    fn ask_block(&mut self) -> Action {
        if self.focus != Focus::Sources {
            self.say("select a source (Tab) to block it", false);
            return Action::None;
        }
        let Some(net) = self.selected_net() else {
            self.say("no source selected", false);
            return Action::None;
        };
        if let Some(r) = self.covering_block(&net) {
            let what = if r.net == net {
                format!("{net} is already blocked ({})", r.origin.name())
            } else {
                format!(
                    "{net} is already blocked by {} ({})",
                    r.net,
                    r.origin.name()
                )
            };
            self.say(what, false);
            return Action::None;
        }
        self.confirm = Some(Confirm {
            question: format!("Block {net} (manual, no expiry)? [y/N]"),
            action: Action::Block(net),
        });
        Action::None
    }

    fn ask_unblock(&mut self) -> Action {
        let row = match self.focus {
            Focus::Sources => {
                let Some(net) = self.selected_net() else {
                    self.say("no source selected", false);
                    return Action::None;
                };
                match self.covering_block(&net) {
                    Some(r) => r.clone(),
                    None => {
                        self.say(format!("{net} is not blocked"), false);
                        return Action::None;
                    }
                }
            }
            Focus::Blocks => {
                let bans = self.ban_rows();
                match self.selected_block_index().map(|i| bans[i].clone()) {
                    Some(r) => r,
                    None => {
                        self.say("no blocklist entry selected", false);
                        return Action::None;
                    }
                }
            }
        };
        if origin::from_file(row.origin) {
            self.say(
                format!("{} comes from the policy file; remove it there", row.net),
                false,
            );
            return Action::None;
        }
        let net = row.net;
        self.confirm = Some(Confirm {
            question: format!("Unblock {net} ({})? [y/N]", row.origin.name()),
            action: Action::Unblock(net),
        });
        Action::None
    }

    /// Share of the per-source table in use.
    pub fn occupancy(&self) -> f64 {
        if self.snap.capacity == 0 {
            0.0
        } else {
            (self.snap.tracked as f64 / self.snap.capacity as f64).min(1.0)
        }
    }
}

/// The identity of a source row: its prefix and rule.
pub fn key_of(r: &Source) -> (String, Option<String>) {
    (r.net.to_string(), r.rule.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    use crate::control::read::Class;
    use firewall_common::Verdict;

    fn row(prefix: &str, packets: u64, drops: u64) -> Source {
        Source {
            net: prefix.parse().unwrap(),
            rule: None,
            packets,
            drops,
            tokens: 0,
            class: Class::Limited,
        }
    }

    fn block(cidr: &str, origin: Origin) -> ListRow {
        ListRow {
            net: cidr.parse().unwrap(),
            origin,
            expires_ns: None,
            expires_in_secs: (origin == Origin::Autoban).then_some(60),
            hits: 0,
            comment: String::new(),
            in_file: false,
        }
    }

    fn snap(passed: u64) -> Snapshot {
        Snapshot {
            verdicts: Verdict::ALL
                .iter()
                .map(|v| {
                    let p = if *v == Verdict::Passed { passed } else { 0 };
                    (
                        v.name(),
                        Count {
                            packets: p,
                            bytes: p * 100,
                        },
                    )
                })
                .collect(),
            capacity: 100,
            tracked: 25,
            sources: vec![row("198.51.100.2/32", 900, 800), row("192.0.2.2/32", 50, 0)],
            blocks: vec![
                block("203.0.113.0/24", Origin::Config),
                block("198.51.100.9/32", Origin::Autoban),
            ],
            ..Default::default()
        }
    }

    fn app() -> App {
        let mut a = App::new("/sys/fs/bpf/x".into(), Duration::from_secs(1), 10);
        let t = Instant::now();
        a.update(snap(0), t);
        a.update(snap(500), t + Duration::from_secs(2));
        a
    }

    #[test]
    fn rates_and_history_come_from_differences() {
        let a = app();
        assert_eq!(a.rates["passed"].packets, 250.0);
        assert_eq!(a.rates["passed"].bytes, 25_000.0);
        assert_eq!(a.history["passed"], VecDeque::from(vec![250]));
        assert_eq!(a.occupancy(), 0.25);
        assert_eq!(a.selected_source_index(), Some(0));
        assert_eq!(a.selected_block.as_deref(), Some("198.51.100.9/32"));
    }

    #[test]
    fn quit_keys() {
        for k in [
            key(KeyCode::Char('q')),
            key(KeyCode::Esc),
            KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
        ] {
            assert_eq!(app().key(k), Action::Quit);
        }
        // Ctrl-C quits at a prompt too.
        let mut a = app();
        a.key(key(KeyCode::Char('b')));
        assert!(a.confirm.is_some());
        assert_eq!(
            a.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
    }

    #[test]
    fn block_asks_first_and_only_y_confirms() {
        let mut a = app();
        assert_eq!(a.key(key(KeyCode::Char('b'))), Action::None);
        assert!(a
            .confirm
            .as_ref()
            .unwrap()
            .question
            .contains("198.51.100.2/32"));
        assert_eq!(
            a.key(key(KeyCode::Char('y'))),
            Action::Block("198.51.100.2/32".parse().unwrap())
        );
        a.key(key(KeyCode::Char('b')));
        assert_eq!(a.key(key(KeyCode::Enter)), Action::None);
        assert!(a.confirm.is_none());
        a.key(key(KeyCode::Char('b')));
        assert_eq!(
            a.key(key(KeyCode::Esc)),
            Action::None,
            "Esc cancels the prompt"
        );
    }

    #[test]
    fn selection_moves_and_follows_the_source() {
        let mut a = app();
        a.key(key(KeyCode::Down));
        assert_eq!(a.selected_source_index(), Some(1));
        // The order flips: the same source stays selected.
        let mut s = snap(600);
        s.sources.reverse();
        a.update(s, Instant::now() + Duration::from_secs(3));
        assert_eq!(a.selected_source_index(), Some(0));
        assert_eq!(a.snap.sources[0].net.to_string(), "192.0.2.2/32");
    }

    #[test]
    fn unblock_finds_the_covering_entry_and_refuses_config_entries() {
        let mut a = app();
        a.snap.sources[0].net = "203.0.113.7/32".parse().unwrap();
        a.selected_source = Some(key_of(&a.snap.sources[0]));
        a.key(key(KeyCode::Char('u')));
        assert!(a.confirm.is_none());
        assert!(a.message().unwrap().0.contains("policy file"));
        a.key(key(KeyCode::Char('b')));
        assert!(a
            .message()
            .unwrap()
            .0
            .contains("already blocked by 203.0.113.0/24"));
        // In the bans pane: the selected auto-ban.
        a.key(key(KeyCode::Tab));
        a.key(key(KeyCode::Char('u')));
        assert_eq!(
            a.key(key(KeyCode::Char('y'))),
            Action::Unblock("198.51.100.9/32".parse().unwrap())
        );
    }

    #[test]
    fn sort_and_pause() {
        let mut a = app();
        assert_eq!(a.key(key(KeyCode::Char('s'))), Action::Refresh);
        assert_eq!(a.order, Order::Packets);
        a.key(key(KeyCode::Char('p')));
        assert!(a.paused);
    }
}
