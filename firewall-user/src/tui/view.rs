//! Drawing `firewall top --watch`.
//!
//! ```text
//!  firewall top  /sys/fs/bpf/firewall  enforce  generation 3  every 1s  sort: drops
//!  attached: eth0 (xdp)   blocklist: config 2  manual 1  import 0  autoban 1
//! ┌Verdicts──────────────────────────────────────────────────────────────────────┐
//! │passed          1.2k/s   150 kB/s        12.3M  ▁▂▃▅▇█▇▅▃▂▁                   │
//! │...                                                                          │
//! └─────────────────────────────────────────────────────────────────────────────┘
//!  sources ▰▰▰▱▱▱▱▱▱▱  12 / 131072 (0.0%)  flood guard refusing 0/s
//! ┌Top sources by drops──────────────────────┐┌Bans and manual blocks──────────┐
//! │> 198.51.100.2/32  -  2000  1900  0 limited││  198.51.100.9/32 autoban 9m59s │
//! └───────────────────────────────────────────┘└────────────────────────────────┘
//!  q quit  s sort  p pause  ↑↓ select  Tab pane  b block  u unblock
//! ```

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{
        Block, Borders, LineGauge, List, ListItem, ListState, Paragraph, Row, Sparkline, Table,
        TableState,
    },
    Frame,
};

use super::app::{App, Focus};
use crate::control::{
    read::{Class, Order},
    Origin,
};

fn verdict_color(name: &str) -> Color {
    match name {
        "passed" => Color::Green,
        "allowed" => Color::Cyan,
        "blocked" | "rate_limited" | "malformed" => Color::Red,
        "would_drop" => Color::Yellow,
        _ => Color::White,
    }
}

/// 1234 -> "1.2k", 5_600_000 -> "5.6M".
pub fn si(x: f64) -> String {
    let (v, unit) = if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        return format!("{x:.0}");
    };
    if v >= 100.0 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.1}{unit}")
    }
}

/// 599 -> "9m59s", 7260 -> "2h1m": two units at most, to fit a column.
pub fn secs(s: u64) -> String {
    let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

pub fn draw(f: &mut Frame, app: &App) {
    let [head, info, verdicts, gauge, bottom, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(app.snap.verdicts.len().max(1) as u16 + 3),
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(f.area());
    header(f, app, head, info);
    verdict_panel(f, app, verdicts);
    occupancy(f, app, gauge);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(64), Constraint::Percentage(36)]).areas(bottom);
    sources(f, app, left);
    bans(f, app, right);
    footer(f, app, foot);
}

fn header(f: &mut Frame, app: &App, head: Rect, info: Rect) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut spans = vec![
        Span::styled(" firewall top ", bold.fg(Color::Black).bg(Color::Cyan)),
        Span::raw(format!(" {} ", app.pin_dir)),
        if app.snap.monitor {
            Span::styled(" monitor ", bold.fg(Color::Black).bg(Color::Yellow))
        } else {
            Span::styled(" enforce ", bold.fg(Color::Black).bg(Color::Green))
        },
        Span::raw(format!(
            "  generation {}  every {}  sort: {}",
            app.snap.generation,
            humantime::format_duration(app.interval),
            match app.order {
                Order::Drops => "drops",
                Order::Packets => "packets",
            }
        )),
    ];
    if app.paused {
        spans.push(Span::raw("  "));
        spans.push(Span::styled(
            " PAUSED ",
            bold.fg(Color::Black).bg(Color::Magenta),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), head);
    let counts = app.block_counts();
    let attached = if app.snap.attached.is_empty() {
        "none".to_string()
    } else {
        app.snap.attached.join(", ")
    };
    let line = format!(
        " attached: {attached}   blocklist: config {}  manual {}  import {}  autoban {}",
        counts["config"], counts["manual"], counts["import"], counts["autoban"]
    );
    f.render_widget(Paragraph::new(line), info);
}

fn verdict_panel(f: &mut Frame, app: &App, area: Rect) {
    let block = Block::default().borders(Borders::ALL).title(" Verdicts ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let header_and_rows = Layout::vertical(
        std::iter::once(Constraint::Length(1))
            .chain(app.snap.verdicts.iter().map(|_| Constraint::Length(1))),
    )
    .split(inner);
    let text_w = 50u16.min(inner.width);
    let head = Layout::horizontal([Constraint::Length(text_w), Constraint::Min(0)])
        .split(header_and_rows[0]);
    f.render_widget(
        Paragraph::new(format!(
            "{:<14}{:>10}{:>12}{:>14}",
            "verdict", "packets/s", "bytes/s", "packets"
        ))
        .style(Style::default().add_modifier(Modifier::BOLD)),
        head[0],
    );
    f.render_widget(
        Paragraph::new(format!(
            "  history, last {}",
            secs((app.interval * head[1].width as u32).as_secs())
        ))
        .style(Style::default().add_modifier(Modifier::DIM)),
        head[1],
    );
    for (i, (name, count)) in app.snap.verdicts.iter().enumerate() {
        let Some(area) = header_and_rows.get(i + 1) else {
            break;
        };
        let [text, spark] =
            Layout::horizontal([Constraint::Length(text_w), Constraint::Min(0)]).areas(*area);
        let rate = app.rates.get(name).copied().unwrap_or_default();
        let (pps, bps) = if app.samples > 1 {
            (si(rate.packets), format!("{}B", si(rate.bytes)))
        } else {
            ("-".into(), "-".into())
        };
        let color = verdict_color(name);
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled(format!("{name:<14}"), Style::default().fg(color)),
                Span::raw(format!("{pps:>10}{bps:>12}{:>14}", count.packets)),
            ])),
            text,
        );
        // Newest on the right; as many samples as there are columns.
        let data: Vec<u64> = app
            .history
            .get(name)
            .map(|h| h.iter().rev().take(spark.width as usize).copied().collect())
            .unwrap_or_default();
        f.render_widget(
            Sparkline::default()
                .data(&data)
                .direction(ratatui::widgets::RenderDirection::RightToLeft)
                .style(Style::default().fg(color)),
            spark,
        );
    }
}

fn occupancy(f: &mut Frame, app: &App, area: Rect) {
    let ratio = app.occupancy();
    let color = if ratio > 0.9 {
        Color::Red
    } else if ratio > 0.7 {
        Color::Yellow
    } else {
        Color::Green
    };
    let [g, rest] = Layout::horizontal([Constraint::Length(48), Constraint::Min(0)]).areas(area);
    f.render_widget(
        LineGauge::default()
            .ratio(ratio)
            .label(format!(
                " sources {} / {} ({:.1}%)",
                app.snap.tracked,
                app.snap.capacity,
                ratio * 100.0
            ))
            .filled_style(Style::default().fg(color)),
        g,
    );
    let refused = Span::styled(
        format!("  flood guard refusing {}/s", si(app.refused_rate)),
        if app.refused_rate > 0.0 {
            Style::default().fg(Color::Red)
        } else {
            Style::default()
        },
    );
    f.render_widget(Paragraph::new(Line::from(refused)), rest);
}

fn pane(title: String, focused: bool) -> Block<'static> {
    let b = Block::default().borders(Borders::ALL).title(title);
    if focused {
        b.border_style(Style::default().fg(Color::Cyan))
    } else {
        b
    }
}

fn sources(f: &mut Frame, app: &App, area: Rect) {
    let title = format!(
        " Top {} sources by {} ",
        app.n,
        match app.order {
            Order::Drops => "drops",
            Order::Packets => "packets",
        }
    );
    let rows: Vec<Row> = app
        .snap
        .sources
        .iter()
        .map(|r| {
            let ban = app
                .covering_block(&r.net)
                .map(|b| match b.expires_in_secs {
                    Some(s) => format!("{} {}", b.origin.name(), secs(s)),
                    None => b.origin.name().to_string(),
                })
                .unwrap_or_default();
            let style = match r.class {
                Class::Blocked => Style::default().fg(Color::Red),
                Class::Allowed => Style::default().fg(Color::Cyan),
                _ if r.drops > 0 => Style::default().fg(Color::Yellow),
                _ => Style::default(),
            };
            Row::new(vec![
                r.net.to_string(),
                r.rule.clone().unwrap_or_else(|| "-".into()),
                r.packets.to_string(),
                r.drops.to_string(),
                r.tokens.to_string(),
                r.class.name().to_string(),
                ban,
            ])
            .style(style)
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Min(16),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(13),
        ],
    )
    .header(
        Row::new(vec![
            "prefix", "rule", "packets", "drops", "tokens", "state", "ban",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(pane(title, app.focus == Focus::Sources))
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
    .highlight_symbol("> ");
    let mut state = TableState::default();
    state.select(app.selected_source_index());
    f.render_stateful_widget(table, area, &mut state);
}

fn bans(f: &mut Frame, app: &App, area: Rect) {
    let rows = app.ban_rows();
    let items: Vec<ListItem> = rows
        .iter()
        .map(|r| {
            let left = r
                .expires_in_secs
                .map(|s| format!("{} left", secs(s)))
                .unwrap_or_else(|| "no expiry".into());
            let style = if r.origin == Origin::Autoban {
                Style::default().fg(Color::Red)
            } else {
                Style::default()
            };
            ListItem::new(format!(
                "{:<20} {:<8} {left}",
                r.net.to_string(),
                r.origin.name()
            ))
            .style(style)
        })
        .collect();
    let title = format!(" Bans and manual blocks ({}) ", rows.len());
    let list = List::new(items)
        .block(pane(title, app.focus == Focus::Blocks))
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut state = ListState::default();
    if app.focus == Focus::Blocks {
        state.select(app.selected_block_index());
    }
    f.render_stateful_widget(list, area, &mut state);
}

fn footer(f: &mut Frame, app: &App, area: Rect) {
    let line = if let Some(c) = &app.confirm {
        Line::from(Span::styled(
            format!(" {} ", c.question),
            Style::default()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ))
    } else if let Some(e) = &app.error {
        Line::from(Span::styled(
            format!(" error: {e}"),
            Style::default().fg(Color::Red),
        ))
    } else if let Some((m, ok)) = app.message() {
        Line::from(Span::styled(
            format!(" {m}"),
            Style::default().fg(if ok { Color::Green } else { Color::Red }),
        ))
    } else {
        Line::from(
            " q quit  s sort  p pause  \u{2191}\u{2193} select  Tab pane  b block  u unblock",
        )
        .style(Style::default().add_modifier(Modifier::DIM))
    };
    f.render_widget(Paragraph::new(line), area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        control::read::{Count, ListRow, Source},
        tui::app::Snapshot,
    };
    use firewall_common::Verdict;
    use ratatui::{backend::TestBackend, Terminal};
    use std::time::{Duration, Instant};

    #[test]
    fn si_units() {
        assert_eq!(si(12.0), "12");
        assert_eq!(si(1234.0), "1.2k");
        assert_eq!(si(5_600_000.0), "5.6M");
        assert_eq!(si(250_000.0), "250k");
        assert_eq!(secs(599), "9m59s");
        assert_eq!(secs(7260), "2h1m");
        assert_eq!(secs(2 * 86400 + 3600), "2d1h");
        assert_eq!(secs(7), "7s");
    }

    #[test]
    fn renders_verdicts_sources_and_bans() {
        let snap = |n: u64| Snapshot {
            verdicts: Verdict::ALL
                .iter()
                .map(|v| {
                    (
                        v.name(),
                        Count {
                            packets: n,
                            bytes: n * 60,
                        },
                    )
                })
                .collect(),
            tracked: 3,
            capacity: 131072,
            attached: vec!["gw-a (xdp)".into()],
            generation: 2,
            sources: vec![Source {
                net: "198.51.100.2/32".parse().unwrap(),
                rule: None,
                packets: 1000,
                drops: 900,
                tokens: 0,
                class: Class::Limited,
            }],
            blocks: vec![ListRow {
                net: "198.51.100.9/32".parse().unwrap(),
                origin: Origin::Autoban,
                expires_ns: None,
                expires_in_secs: Some(600),
                hits: 3,
                comment: String::new(),
                in_file: false,
            }],
            ..Default::default()
        };
        let mut app = App::new("/sys/fs/bpf/t".into(), Duration::from_secs(1), 10);
        let t = Instant::now();
        app.update(snap(0), t);
        app.update(snap(2000), t + Duration::from_secs(1));
        let mut term = Terminal::new(TestBackend::new(120, 30)).unwrap();
        term.draw(|f| draw(f, &app)).unwrap();
        let buf = term.backend().buffer().clone();
        let text: String = (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
                    + "\n"
            })
            .collect();
        for want in [
            "passed",
            "rate_limited",
            "would_drop",
            "malformed",
            "2.0k",
            "198.51.100.2/32",
            "198.51.100.9/32",
            "autoban",
            "gw-a (xdp)",
            "sources 3 / 131072",
            "q quit",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }
}
