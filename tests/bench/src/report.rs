//! BENCHMARKS.md from the run's results, and the target checks. Every
//! number printed here comes from `all` (the run's measurements); ratios
//! are computed from numbers of the same run.

use serde_json::{json, Value};
use std::fmt::Write as _;

use super::contenders::Kind;
use super::live::scenarios;
use super::Cfg;

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn mpps(pps: f64) -> String {
    format!("{:.3}", pps / 1e6)
}

fn x(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}x")
    } else {
        "-".into()
    }
}

fn ns(v: f64) -> String {
    format!("{v:.0}")
}

/// The live result of a contender in a scenario.
fn live<'a>(all: &'a Value, contender: &str, scenario: &str) -> Option<&'a Value> {
    all["live"]["results"]
        .as_array()?
        .iter()
        .find(|r| r["contender"] == contender && r["scenario"] == scenario)
        .map(|r| &r["result"])
}

fn micro_row<'a>(all: &'a Value, policy: &str, key: &str) -> Option<&'a Value> {
    all["micro"]["rows"]
        .as_array()?
        .iter()
        .find(|r| r["policy"] == policy && r["key"] == key)
}

/// What a missed target's profile is: a micro path, a live comparison, or
/// the pre-filled spoofed run.
enum Probe {
    Micro(&'static str),
    Live(&'static str, &'static str),
    Spoofed,
    /// A scale figure: its detail says all there is.
    Scale,
}

/// One target: what, the measured value, the bound, and whether higher is
/// better.
struct Target {
    probe: Probe,
    what: String,
    measured: Option<f64>,
    bound: f64,
    higher_is_better: bool,
    /// How `measured` and `bound` read: `"x"` for ratios, else a unit.
    unit: &'static str,
    detail: String,
}

impl Target {
    fn show(&self, v: f64) -> String {
        match self.unit {
            "x" => x(v),
            unit => format!("{v:.2} {unit}"),
        }
    }

    fn shown(&self) -> String {
        self.measured.map(|m| self.show(m)).unwrap_or("-".into())
    }

    fn met(&self) -> Option<bool> {
        let m = self.measured?;
        Some(if self.higher_is_better {
            m >= self.bound
        } else {
            m <= self.bound
        })
    }

    fn verdict(&self) -> String {
        match (self.measured, self.met()) {
            (Some(_), Some(true)) => "met".into(),
            (Some(m), Some(false)) => {
                let by = if self.higher_is_better {
                    (self.bound - m) / self.bound * 100.0
                } else {
                    (m - self.bound) / self.bound * 100.0
                };
                // A narrow miss shows as such, not as "0 %".
                let digits = if by < 1.0 { 2 } else { 0 };
                format!("**missed** by {by:.digits$} %")
            }
            _ => "not measured".into(),
        }
    }
}

fn targets(all: &Value) -> Vec<Target> {
    let mut t = Vec::new();
    for (key, label, bound) in [
        ("known_v4_within", "known IPv4 source within limit", 1.5),
        ("known_v4_over", "known IPv4 source over limit", 1.5),
        ("allow_host_hit", "allowlist hit (exact host)", 1.2),
        ("block_host_hit", "blocklist hit (exact host)", 1.2),
    ] {
        let r = micro_row(all, "large", key);
        t.push(Target {
            probe: Probe::Micro(key),
            what: format!("{label}, large policy: <= {bound}x the hash-lookup baseline"),
            measured: r.and_then(|r| f(&r["ratio_to_lookup"])),
            bound,
            higher_is_better: false,
            unit: "x",
            detail: r
                .map(|r| {
                    format!(
                        "{} ns vs {} ns",
                        ns(f(&r["ns_per_packet"]).unwrap_or(f64::NAN)),
                        ns(f(&all["micro"]["baseline_lookup_ns"]).unwrap_or(f64::NAN))
                    )
                })
                .unwrap_or_default(),
        });
    }
    for s in scenarios() {
        let fw = live(all, "firewall_xdp", s.key).and_then(|v| f(&v["capacity_pps"]));
        for other in ["nftables", "iptables_nft", "iptables_legacy"] {
            let o = live(all, other, s.key).and_then(|v| f(&v["capacity_pps"]));
            t.push(Target {
                probe: Probe::Live(s.key, other),
                what: format!("{}: this firewall (XDP) >= 3x {other}", s.name),
                measured: match (fw, o) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                },
                bound: 3.0,
                higher_is_better: true,
                unit: "x",
                detail: format!(
                    "{} vs {} Mpps per gateway core",
                    fw.map(mpps).unwrap_or("-".into()),
                    o.map(mpps).unwrap_or("-".into())
                ),
            });
        }
    }
    let fw = live(all, "firewall_xdp", "blocklisted").and_then(|v| f(&v["capacity_pps"]));
    let xf = live(all, "xdp_filter", "blocklisted").and_then(|v| f(&v["capacity_pps"]));
    t.push(Target {
        probe: Probe::Live("blocklisted", "xdp_filter"),
        what: "1 blocklisted source: this firewall (XDP) >= 0.9x xdp-filter".into(),
        measured: match (fw, xf) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        },
        bound: 0.9,
        higher_is_better: true,
        unit: "x",
        detail: format!(
            "{} vs {} Mpps per gateway core",
            fw.map(mpps).unwrap_or("-".into()),
            xf.map(mpps).unwrap_or("-".into())
        ),
    });
    // In-program time on live traffic (BPF statistics), against xdp-filter
    // on the same frames: its blocklist lookup is the floor for a drop.
    for (scenario, label, bound) in [
        ("blocklisted", "blocked source", 1.0),
        ("one_source", "known source over its limit", 1.3),
    ] {
        let fw = live(all, "firewall_xdp", scenario).and_then(|v| in_prog(v, "firewall"));
        let xf = live(all, "xdp_filter", scenario).and_then(|v| in_prog(v, ""));
        t.push(Target {
            probe: Probe::Live(scenario, "xdp_filter"),
            what: format!("in-program time, {label}: <= {bound}x xdp-filter's"),
            measured: match (fw, xf) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            },
            bound,
            higher_is_better: false,
            unit: "x",
            detail: format!(
                "{} vs {} ns/packet",
                fw.map(ns).unwrap_or("-".into()),
                xf.map(ns).unwrap_or("-".into())
            ),
        });
    }
    // Scale: memory per tracked source, a scrape with a million of them,
    // a 100,000-entry import.
    let mem = &all["micro"]["memory"];
    let scale = &all["scale"];
    for (what, measured, bound, unit, detail) in [
        (
            "bytes per tracked IPv4 source <= 96",
            f(&mem["bytes_per_tracked_source"]),
            96.0,
            "bytes",
            format!(
                "each more entry of the table (IPv6: {} bytes), plus {} bytes per table",
                f(&mem["bytes_per_tracked_source_v6"])
                    .map(|b| format!("{b:.0}"))
                    .unwrap_or("-".into()),
                f(&mem["fixed_bytes_per_table"])
                    .map(|b| format!("{b:.0}"))
                    .unwrap_or("-".into())
            ),
        ),
        (
            "/metrics with 1,000,000 tracked sources < 100 ms",
            f(&scale["metrics"]["median_scrape_ms"]),
            100.0,
            "ms",
            format!(
                "median of 10 scrapes with {} sources tracked",
                scale["metrics"]["tracked_sources"]
            ),
        ),
        (
            "import of 100,000 entries < 0.5 s",
            f(&scale["import"]["median_seconds"]),
            0.5,
            "s",
            "median of the runs".to_string(),
        ),
    ] {
        t.push(Target {
            probe: Probe::Scale,
            what: what.into(),
            measured,
            bound,
            higher_is_better: false,
            unit,
            detail,
        });
    }
    let known = live(all, "firewall_xdp", "one_source").and_then(|v| f(&v["capacity_pps"]));
    let spoof = all["scale"]["prefill"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["percent"] == 1000))
        .and_then(|p| f(&p["result"]["capacity_pps"]));
    t.push(Target {
        probe: Probe::Spoofed,
        what: "spoofed flood, table at 1000 % of capacity: >= 0.5x the known-source throughput"
            .into(),
        measured: match (spoof, known) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        },
        bound: 0.5,
        higher_is_better: true,
        unit: "x",
        detail: format!(
            "{} vs {} Mpps per gateway core (1 source over its limit)",
            spoof.map(mpps).unwrap_or("-".into()),
            known.map(mpps).unwrap_or("-".into())
        ),
    });
    t
}

pub fn targets_json(all: &Value) -> Value {
    Value::Array(
        targets(all)
            .iter()
            .map(|t| {
                json!({
                    "target": t.what, "measured": t.measured, "unit": t.unit, "bound": t.bound,
                    "met": t.met(), "detail": t.detail,
                })
            })
            .collect(),
    )
}

fn hot(list: &Value, n: usize) -> String {
    list.as_array()
        .map(|a| {
            a.iter()
                .take(n)
                .map(|h| {
                    format!(
                        "{} {:.0} %",
                        h["symbol"].as_str().unwrap_or("?"),
                        f(&h["percent"]).unwrap_or(0.0)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "(perf not available)".into())
}

pub fn markdown(all: &Value, cfg: &Cfg) -> String {
    let mut s = String::new();
    let env = &all["env"];
    let _ = writeln!(s, "# Benchmarks\n");
    if cfg.quick {
        let _ = writeln!(
            s,
            "> **Quick smoke run** (`--quick`): few repetitions and short windows; the numbers \
             only show that every path and contender runs. See `BENCHMARKS.md` at the \
             repository root for a full run.\n"
        );
    }
    let _ = writeln!(
        s,
        "Measured in one run of `{}` on {}.\n",
        env["command"].as_str().unwrap_or("?"),
        env["date"].as_str().unwrap_or("?")
    );
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| kernel (`uname -r`) | {} |",
        env["kernel"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        s,
        "| CPU | {} ({} CPUs online) |",
        env["cpu_model"].as_str().unwrap_or("?"),
        env["cpus"]
    );
    let _ = writeln!(
        s,
        "| load average before / after | {} / {} |",
        env["loadavg_start"].as_str().unwrap_or("?"),
        env["loadavg_end"].as_str().unwrap_or("?")
    );
    if let Some(tools) = env["tools"].as_array() {
        let t: Vec<String> = tools
            .iter()
            .map(|t| {
                format!(
                    "{}: {}",
                    t["tool"].as_str().unwrap_or(""),
                    t["version"].as_str().unwrap_or("")
                )
            })
            .collect();
        let _ = writeln!(s, "| contenders' tools | {} |", t.join("; "));
    }
    let _ = writeln!(
        s,
        "| duration of the run | {:.0} s |",
        f(&env["total_seconds"]).unwrap_or(0.0)
    );
    let _ = writeln!(
        s,
        "| raw results | `target/bench/results{}.json` |\n",
        if cfg.quick { "-quick" } else { "" }
    );

    let _ = writeln!(s, "## How to read this\n");
    let _ = writeln!(
        s,
        "Section 1 runs the firewall's real XDP program through `BPF_PROG_TEST_RUN` with \
         `repeat` = {repeat}: the kernel runs the same frame that many times on one pinned CPU \
         and returns the average time per run (in whole nanoseconds); each figure is the median \
         of {runs} such runs. Each time includes the test harness's own loop, so two baselines \
         loaded from hand-assembled instructions and run the same way give the scale: a \
         program that only returns `XDP_PASS`, and one that does a single hash-map lookup with \
         a 20-byte key (the size of the firewall's per-source key before its per-family tables; an IPv4 key is 8 bytes now) and returns. A ratio of 1.5x \
         the lookup baseline means the whole firewall costs one and a half times a program \
         that does nothing but one lookup. The \"profile\" columns come from separate runs \
         with BPF run-time statistics on (`run_time_ns / run_cnt`, which add their own clock \
         reads, so they read higher than the plain times) and from `perf record` of the \
         running thread. Section 2 sends real 64-byte frames (60 bytes plus the 4-byte FCS \
         a wire would add) over a veth pair into a gateway namespace and counts what the \
         gateway's veth took off its ring. All of the gateway's packet processing (XDP, \
         GRO, TC, netfilter, IP, UDP) runs in that veth's threaded-NAPI kernel thread, pinned \
         to its own CPU, so **Mpps per gateway core** = frames processed / CPU time of that \
         thread: what one core would process flat out. That is the figure compared between \
         contenders; it does not depend on how much CPU the thread got, which matters on a \
         shared 2-CPU machine. The wall-clock rate and the share of the window the thread ran \
         are shown next to it. \"Refused\" is the share of generated frames the gateway's \
         ring had no room for: above 0 the gateway was the bottleneck. Section 3 measures \
         what grows with the tables. Targets are reported, not enforced; where one is missed \
         the section says by how much and what the profile shows.\n\n\
         Kernel symbols in the profiles: `bpf_prog_<tag>_<name>` is a JIT-compiled program's \
         own code; `read_tsc` and `ktime_get_mono_fast_ns` are `bpf_ktime_get_ns`; \
         `htab_map_hash`, `lookup_nulls_elem_raw`, `__htab_map_lookup_elem` and `memcmp` are \
         hash-map lookups (the per-source LRU table's too; `lookup_nulls_elem_raw` walks a \
         bucket, where a table bigger than the caches waits for memory); `bpf_lru_pop_free` \
         takes a free entry for an LRU insert; `veth_xdp_rcv*` is veth's receive loop; \
         `page_pool_put_unrefed_netmem`, `__xdp_return` and the spin-lock symbols return the \
         pages of finished frames to the generator's page pool; `bpf_test_run` and \
         `bpf_test_timer_continue` are BPF_PROG_TEST_RUN's loop.\n",
        repeat = all["micro"]["repeat"],
        runs = all["micro"]["runs"],
    );

    // Targets.
    let _ = writeln!(s, "## Targets\n");
    let _ = writeln!(s, "| target | measured | | status |\n|---|---|---|---|");
    for t in targets(all) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            t.what,
            t.shown(),
            t.detail,
            t.verdict()
        );
    }
    s.push('\n');
    missed_section(&mut s, all);

    micro_section(&mut s, all);
    live_section(&mut s, all);
    scale_section(&mut s, all);
    s
}

fn in_prog(v: &Value, name_part: &str) -> Option<f64> {
    v["profile"]["programs"]
        .as_array()?
        .iter()
        .find(|p| p["role"] == "contender" && p["name"].as_str().unwrap_or("").contains(name_part))
        .and_then(|p| f(&p["ns_per_run"]))
}

/// For each missed target: by how much, and what the measurements and the
/// profiles of the same run show about where the time goes.
fn missed_section(s: &mut String, all: &Value) {
    let missed: Vec<Target> = targets(all)
        .into_iter()
        .filter(|t| t.met() == Some(false))
        .collect();
    if missed.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "### Missed targets: what the profiles show
"
    );
    let pass = f(&all["micro"]["baseline_pass_ns"]).unwrap_or(f64::NAN);
    let lookup = f(&all["micro"]["baseline_lookup_ns"]).unwrap_or(f64::NAN);
    let ktime = micro_row(all, "-", "reference_ktime")
        .and_then(|r| f(&r["ns_per_packet"]))
        .unwrap_or(f64::NAN);
    let mut explained_live: Vec<&'static str> = Vec::new();
    for t in &missed {
        // One explanation per live scenario, naming every contender missed.
        if let Probe::Live(scenario, _) = t.probe {
            if explained_live.contains(&scenario) {
                continue;
            }
            explained_live.push(scenario);
            let group: Vec<&Target> = missed
                .iter()
                .filter(|u| matches!(u.probe, Probe::Live(sc, _) if sc == scenario))
                .collect();
            let _ = writeln!(s, "{}", live_missed(all, scenario, &group));
            continue;
        }
        let head = format!(
            "- **{}**: {} against a bound of {} ({}).",
            t.what,
            t.shown(),
            t.show(t.bound),
            t.verdict().replace("**", "")
        );
        let body = match t.probe {
            Probe::Micro(key) => {
                let r = micro_row(all, "large", key);
                let v = r.and_then(|r| f(&r["ns_per_packet"])).unwrap_or(f64::NAN);
                let e = micro_row(all, "empty", key)
                    .and_then(|r| f(&r["ns_per_packet"]))
                    .unwrap_or(f64::NAN);
                let perf = all["micro"]["perf"]
                    .as_array()
                    .and_then(|a| a.iter().find(|p| p["key"] == key))
                    .map(|p| hot(&p["hot_symbols"], 8))
                    .unwrap_or_else(|| "(not profiled)".into());
                format!(
                    " The path takes {} ns ({} ns with the empty policy); returning at once takes {} ns, one hash lookup {} ns more, one `bpf_ktime_get_ns` {} ns more. perf: {}.",
                    ns(v),
                    ns(e),
                    ns(pass),
                    ns(lookup - pass),
                    ns(ktime - pass),
                    perf
                )
            }
            Probe::Live(..) => String::new(),
            Probe::Scale => String::new(),
            Probe::Spoofed => {
                let p = all["scale"]["prefill"]
                    .as_array()
                    .and_then(|a| a.iter().find(|p| p["percent"] == 1000));
                match p {
                    Some(p) => {
                        let v = &p["result"];
                        let mut b = format!(
                            " Gateway CPU per frame at 1000 %: {} ns ({} ns at 10 %); verdicts \
                             over the run: {}.",
                            ns(f(&v["ns_per_frame"]).unwrap_or(f64::NAN)),
                            all["scale"]["prefill"]
                                .as_array()
                                .and_then(|a| a.iter().find(|p| p["percent"] == 10))
                                .and_then(|p| f(&p["result"]["ns_per_frame"]))
                                .map(ns)
                                .unwrap_or("-".into()),
                            verdicts(&p["verdicts_delta"])
                        );
                        if let Some(q) = in_prog(v, "firewall") {
                            let _ = write!(b, " In-program: {q:.0} ns/packet.");
                        }
                        let _ = write!(
                            b,
                            " perf of the gateway thread: {}.",
                            hot(&v["profile"]["napi_thread_hot_symbols"], 10)
                        );
                        b
                    }
                    None => String::new(),
                }
            }
        };
        let _ = writeln!(s, "{head}{body}");
    }
    s.push('\n');
}

/// The missed live targets of one scenario, with what the run shows.
fn live_missed(all: &Value, scenario: &str, group: &[&Target]) -> String {
    let name = scenarios()
        .into_iter()
        .find(|s| s.key == scenario)
        .map(|s| s.name)
        .unwrap_or("?");
    let parts: Vec<String> = group
        .iter()
        .map(|t| {
            let other = match t.probe {
                Probe::Live(_, o) => o,
                _ => "?",
            };
            format!(
                "{} against {other} (bound {}, {})",
                t.shown(),
                t.show(t.bound),
                t.verdict().replace("**", "")
            )
        })
        .collect();
    let mut b = format!(
        "- **{name}**: this firewall (XDP) measured {}.",
        parts.join("; ")
    );
    let fw = live(all, "firewall_xdp", scenario);
    let drop = live(all, "xdp_drop", scenario);
    let nsf = |v: Option<&Value>| {
        v.and_then(|v| f(&v["ns_per_frame"]))
            .map(ns)
            .unwrap_or("-".into())
    };
    let others: Vec<String> = group
        .iter()
        .filter_map(|t| match t.probe {
            Probe::Live(_, o) => Some(format!("{o} {} ns", nsf(live(all, o, scenario)))),
            _ => None,
        })
        .collect();
    let _ = write!(
        b,
        " Gateway CPU per frame: this firewall {} ns, {}; an XDP program that drops \
         everything {} ns (what veth, XDP and returning the page cost any XDP contender here).",
        nsf(fw),
        others.join(", "),
        nsf(drop)
    );
    if let Some(fwv) = fw {
        if let Some(p) = in_prog(fwv, "firewall") {
            let _ = write!(
                b,
                " In-program time (BPF statistics): the firewall {p:.0} ns/packet"
            );
            for t in group {
                if let Probe::Live(_, o) = t.probe {
                    if let Some(q) = live(all, o, scenario).and_then(|v| in_prog(v, "")) {
                        let _ = write!(b, ", {o} {q:.0} ns/packet");
                    }
                }
            }
            if let Some(q) = drop.and_then(|d| in_prog(d, "")) {
                let _ = write!(b, ", the XDP_DROP program {q:.0} ns/packet");
            }
            b.push('.');
        }
        if let Some(p) = passed_share(fwv) {
            let _ = write!(
                b,
                " {:.0} % of the frames the firewall processed were passed to the stack.",
                p * 100.0
            );
        }
        let _ = write!(
            b,
            " perf of the gateway thread with the firewall: {}.",
            hot(&fwv["profile"]["napi_thread_hot_symbols"], 10)
        );
    }
    b
}

/// "passed 12, rate_limited 34": the verdicts that moved.
fn verdicts(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn passed_share(v: &Value) -> Option<f64> {
    let rx = f(&v["rx_pps"])?;
    let p = f(&v["passed_pps"])?;
    (rx > 0.0).then(|| (p / rx).min(1.0))
}

fn micro_section(s: &mut String, all: &Value) {
    let m = &all["micro"];
    if m.is_null() {
        return;
    }
    let _ = writeln!(s, "## 1. Per-packet cost (BPF_PROG_TEST_RUN, XDP)\n");
    let _ = writeln!(
        s,
        "Policies: **empty** (no lists, except one allow and one block entry for the paths \
         that need them) and **large** (10,000 block entries, 1,000 allow entries, 100 \
         `[[limit]]` classes, 10 `[[rule]]`s; 80-90 % IPv4, the rest IPv6). Limits are \
         1e9 packets/s so \"within limit\" stays within it for the whole run; \"over limit\" \
         uses a default of 1 packet/s, burst 1. The measured UDP frames go to port 9, which \
         none of the rules matches. Every run's return value was checked (`XDP_PASS` or \
         `XDP_DROP` as the path requires).\n"
    );
    let pass = f(&m["baseline_pass_ns"]).unwrap_or(f64::NAN);
    let lookup = f(&m["baseline_lookup_ns"]).unwrap_or(f64::NAN);
    let _ = writeln!(
        s,
        "| path | policy | ns/packet (range of the runs) | x XDP_PASS | x hash lookup | profile: in-program ns |\n|---|---|---|---|---|---|"
    );
    if let Some(rows) = m["rows"].as_array() {
        for r in rows {
            let v = f(&r["ns_per_packet"]).unwrap_or(f64::NAN);
            let runs: Vec<f64> = r["runs_ns"]
                .as_array()
                .map(|a| a.iter().filter_map(f).collect())
                .unwrap_or_default();
            let spread = if runs.len() > 1 {
                format!(
                    " ({}-{})",
                    ns(runs.iter().cloned().fold(f64::INFINITY, f64::min)),
                    ns(runs.iter().cloned().fold(0.0, f64::max))
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {}{} | {} | {} | {} |",
                r["path"].as_str().unwrap_or(""),
                r["policy"].as_str().unwrap_or(""),
                ns(v),
                spread,
                x(v / pass),
                x(v / lookup),
                f(&r["in_program_ns"])
                    .map(|v| format!("{v:.0}"))
                    .unwrap_or("-".into())
            );
        }
    }
    let _ = writeln!(
        s,
        "\n**New source** (first packet of a source, LRU insert). With `repeat` the same \
         packet repeats, so its source is new only once: instead, {} never-seen sources are \
         each run once (`repeat` = 1), timed by the kernel like the rest, with a flood budget \
         that admits all of them. A single run carries the harness's fixed cost (two clock \
         reads) once instead of averaging it away, so the baselines and the known source are \
         run singly the same number of times for comparison.\n",
        m["new_source"][0]["sources"]
    );
    let _ = writeln!(
        s,
        "| policy | new source: median ns (mean) | known source, single runs | XDP_PASS, single runs | hash lookup, single runs | new source x XDP_PASS | x hash lookup | inserted |\n|---|---|---|---|---|---|---|---|"
    );
    if let Some(rows) = m["new_source"].as_array() {
        for r in rows {
            let _ = writeln!(
                s,
                "| {} | {} ({}) | {} | {} | {} | {} | {} | {} |",
                r["policy"].as_str().unwrap_or(""),
                ns(f(&r["new_source_median_ns"]).unwrap_or(f64::NAN)),
                ns(f(&r["new_source_mean_ns"]).unwrap_or(f64::NAN)),
                ns(f(&r["known_source_single_median_ns"]).unwrap_or(f64::NAN)),
                ns(f(&r["pass_single_median_ns"]).unwrap_or(f64::NAN)),
                ns(f(&r["lookup_single_median_ns"]).unwrap_or(f64::NAN)),
                x(f(&r["ratio_to_pass"]).unwrap_or(f64::NAN)),
                x(f(&r["ratio_to_lookup"]).unwrap_or(f64::NAN)),
                r["inserted"]
            );
        }
    }
    let c = &m["challenge"];
    if c.is_object() {
        let _ = writeln!(
            s,
            "\n**SYN challenge** (a SYN of a never-seen source with the new-source budget \
             spent: answered with a SYN-ACK cookie through the tail call, XDP_TX). An answer \
             rewrites the frame, so each of {} SYNs is run once, like the new-source row; \
             {} were answered (a budget token refilled during the run admits a source \
             instead). Median {} per answer (mean {}), {} a single XDP_PASS run: about \
             **{:.1} million answers per second per core** in the program (the driver's \
             transmit is not included).\n",
            c["syns"],
            c["answered"],
            ns(f(&c["challenge_median_ns"]).unwrap_or(f64::NAN)),
            ns(f(&c["challenge_mean_ns"]).unwrap_or(f64::NAN)),
            x(f(&c["ratio_to_pass"]).unwrap_or(f64::NAN)),
            f(&c["answers_per_second_per_core"]).unwrap_or(f64::NAN) / 1e6
        );
    }
    let _ = writeln!(s, "\n### Profile of the checked paths\n");
    let _ = writeln!(
        s,
        "`perf record -e cpu-clock` of the thread running `BPF_PROG_TEST_RUN` for about a \
         second per path (share of its samples; `bpf_test_run` and `bpf_test_timer_continue` \
         are the harness, `bpf_prog_*` is the JIT-compiled program itself, helpers appear \
         under their kernel names, e.g. `read_tsc` under `bpf_ktime_get_ns`):\n"
    );
    if let Some(p) = m["perf"].as_array() {
        for e in p {
            let _ = writeln!(
                s,
                "- {} ({} policy): {}",
                e["key"].as_str().unwrap_or(""),
                e["policy"].as_str().unwrap_or(""),
                hot(&e["hot_symbols"], 8)
            );
        }
    }
    let kt = micro_row(all, "-", "reference_ktime").and_then(|r| f(&r["ns_per_packet"]));
    if let Some(kt) = kt {
        let _ = writeln!(
            s,
            "\nFor scale, a program that makes one `bpf_ktime_get_ns` call and returns costs \
             {} ns here, {} ns more than returning at once; the single hash lookup costs {} ns \
             more. The firewall reads the clock once per IP packet (token refill, expiry).",
            ns(kt),
            ns(kt - pass),
            ns(lookup - pass)
        );
    }
    let within =
        |p: &str| micro_row(all, p, "known_v4_within").and_then(|r| f(&r["ns_per_packet"]));
    if let (Some(e), Some(l)) = (within("empty"), within("large")) {
        let _ = writeln!(
            s,
            "The known-source path costs {} ns with the empty policy and {} ns with the large \
             one: a cached source's classification is not redone, so the difference is what \
             the large policy adds to every IP packet before the per-source lookup (its 10 \
             `[[rule]]`s cover ports the measured frames do not use, so the port prefilter skips their loop).\n",
            ns(e),
            ns(l)
        );
    }
    if let Some(mem) = m.get("memory") {
        let _ = writeln!(
            s,
            "Memory: the IPv4 per-source table (LRU hash, {} entries, preallocated) accounts {} bytes \
             (`memlock` in its fdinfo). Two fresh maps of its shape, at its size and twice it, differ by \
             **{:.0} bytes per tracked IPv4 source** for a {}-byte key and value, plus {:.0} bytes per \
             table; the IPv6 table {:.0} bytes per source ({}-byte key and value). All maps together: {:.1} MiB.\n",
            mem["sources_capacity"],
            mem["sources_memlock"],
            f(&mem["bytes_per_tracked_source"]).unwrap_or(f64::NAN),
            mem["key_value_bytes"],
            f(&mem["fixed_bytes_per_table"]).unwrap_or(f64::NAN),
            f(&mem["bytes_per_tracked_source_v6"]).unwrap_or(f64::NAN),
            mem["key_value_bytes_v6"],
            f(&mem["all_maps_memlock"]).unwrap_or(0.0) / 1048576.0
        );
    }
}

fn live_section(s: &mut String, all: &Value) {
    let l = &all["live"];
    if l.is_null() {
        return;
    }
    let _ = writeln!(s, "## 2. Live throughput over veth\n");
    let _ = writeln!(
        s,
        "Generator: an XDP program that returns `XDP_TX` (after writing a random source from \
         the scenario's pool and fixing the IPv4 checksum, where the scenario has more than one \
         source), run with `BPF_PROG_TEST_RUN` live frames (batch {}) on CPU {} in the \
         generator namespace, so every frame leaves through the generator's veth into the \
         gateway's. The gateway's veth has GRO on (veth then takes XDP_TX'd frames whether or \
         not an XDP program is attached) and threaded NAPI pinned to CPU {}; no route back to \
         the sources and no UDP listener, so what passes every filter ends as a UDP `NoPorts`. \
         Each figure is the median of {} windows of {} s (by Mpps per gateway core; the \
         range of the windows in brackets) after a warm-up of {}, so that the sources' bursts \
         and the firewall's new-source budget are spent first. Passed = UDP datagrams the gateway's stack received (`/proc/net/snmp`), \
         dropped = processed - passed. Every contender has the same limit, {} packets/s per \
         source with a burst of {}, and the same blocked address.\n",
        l["batch"],
        l["gen_cpu"],
        l["gw_cpu"],
        l["reps"],
        l["seconds"],
        warmups(l),
        super::policy::LIVE_RATE,
        super::policy::LIVE_BURST
    );
    for sc in scenarios() {
        let fw = live(all, "firewall_xdp", sc.key).and_then(|v| f(&v["capacity_pps"]));
        let _ = writeln!(s, "### {}\n", sc.name);
        let _ = writeln!(
            s,
            "| contender | Mpps per gateway core | x this firewall (XDP) | gateway ns/frame | wall-clock Mpps (NAPI thread ran) | passed / dropped Mpps | offered Mpps, refused | in-program ns/packet |\n|---|---|---|---|---|---|---|---|"
        );
        let mut rows: Vec<(String, &Value)> = Vec::new();
        if let Some(v) = live(all, "none", sc.key) {
            rows.push(("no filter (the stack alone)".into(), v));
        }
        for k in Kind::ALL {
            if let Some(v) = live(all, k.key(), sc.key) {
                rows.push((k.name().to_string(), v));
            }
        }
        for (name, v) in rows {
            let cap = f(&v["capacity_pps"]).unwrap_or(f64::NAN);
            let in_prog = v["profile"]["programs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|p| p["role"] == "contender")
                        .map(|p| {
                            format!(
                                "{} {:.0}",
                                p["name"].as_str().unwrap_or("?"),
                                f(&p["ns_per_run"]).unwrap_or(f64::NAN)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .filter(|x| !x.is_empty())
                .unwrap_or("-".into());
            let _ = writeln!(
                s,
                "| {} | {}{} | {} | {} | {} ({:.0} %) | {} / {} | {}, {:.0} % | {} |",
                name,
                mpps(cap),
                range(v),
                fw.map(|fw| x(cap / fw)).unwrap_or("-".into()),
                ns(f(&v["ns_per_frame"]).unwrap_or(f64::NAN)),
                mpps(f(&v["rx_pps"]).unwrap_or(f64::NAN)),
                f(&v["napi_busy"]).unwrap_or(0.0) * 100.0,
                mpps(f(&v["passed_pps"]).unwrap_or(f64::NAN)),
                mpps(f(&v["dropped_pps"]).unwrap_or(f64::NAN)),
                mpps(f(&v["offered_pps"]).unwrap_or(f64::NAN)),
                f(&v["refused_share"]).unwrap_or(0.0) * 100.0,
                in_prog
            );
        }
        if let Some(v) = live(all, "firewall_xdp", sc.key) {
            let h = &v["profile"]["napi_thread_hot_symbols"];
            if !h.is_null() {
                let _ = writeln!(
                    s,
                    "\nProfile of the gateway thread with this firewall (XDP): {}",
                    hot(h, 10)
                );
            }
        }
        s.push('\n');
    }
    let _ = writeln!(s, "### Contenders as configured\n");
    if let Some(cs) = l["contenders"].as_array() {
        for c in cs {
            let name = c["name"].as_str().unwrap_or("");
            if let Some(e) = c["error"].as_str() {
                let _ = writeln!(s, "- **{name}**: not measured: {e}\n");
                continue;
            }
            let config = c["config"].as_str().unwrap_or("");
            if config.contains('\n') {
                let indented: Vec<String> = config
                    .trim_end()
                    .lines()
                    .map(|l| format!("  {l}"))
                    .collect();
                let _ = writeln!(
                    s,
                    "- **{name}**:\n\n  ```\n{}\n  ```\n",
                    indented.join("\n")
                );
            } else {
                let _ = writeln!(s, "- **{name}**: {config}\n");
            }
        }
    }
    let _ = writeln!(
        s,
        "Not counted for any contender: work outside the gateway's NAPI thread, such as \
         netfilter's garbage collection of expired set and hashlimit entries (a kernel \
         worker) and this firewall's controller process.\n"
    );
}

/// "0.5 s (1 source over its limit), 3 s (...)" from the run's settings.
fn warmups(l: &Value) -> String {
    let base = f(&l["warmup"]).unwrap_or(0.0);
    l["scenarios"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|sc| {
                    let w = f(&sc["warmup"]).unwrap_or(0.0).max(base);
                    format!("{w} s ({})", sc["name"].as_str().unwrap_or(""))
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// "a-b" Mpps range of a result's windows.
fn range(v: &Value) -> String {
    let caps: Vec<f64> = v["reps"]
        .as_array()
        .map(|a| a.iter().filter_map(|w| f(&w["capacity_pps"])).collect())
        .unwrap_or_default();
    if caps.len() < 2 {
        return String::new();
    }
    let lo = caps.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = caps.iter().cloned().fold(0.0, f64::max);
    format!(" ({}-{})", mpps(lo), mpps(hi))
}

fn scale_section(s: &mut String, all: &Value) {
    let sc = &all["scale"];
    if sc.is_null() {
        return;
    }
    let _ = writeln!(s, "## 3. Scale\n");
    let _ = writeln!(
        s,
        "| what | measured |\n|---|---|\n| `firewall block import` of {} entries into a running firewall (XDP) | {:.2} s (median of {}) |\n| policy reload with {} block entries replacing {} others (SIGHUP until the `reload` event) | {:.3} s (median of {}) |\n| `firewall check` of a file with {} allow and {} block entries | {:.3} s (median of {}) |\n",
        sc["import"]["entries"],
        f(&sc["import"]["median_seconds"]).unwrap_or(f64::NAN),
        sc["import"]["seconds"].as_array().map(|a| a.len()).unwrap_or(0),
        sc["reload"]["entries"],
        sc["reload"]["entries"],
        f(&sc["reload"]["median_seconds"]).unwrap_or(f64::NAN),
        sc["reload"]["seconds"].as_array().map(|a| a.len()).unwrap_or(0),
        sc["check"]["entries_per_list"],
        sc["check"]["entries_per_list"],
        f(&sc["check"]["median_seconds"]).unwrap_or(f64::NAN),
        sc["check"]["seconds"].as_array().map(|a| a.len()).unwrap_or(0),
    );
    if let Some(mem) = all["micro"].get("memory") {
        let _ = writeln!(
            s,
            "Memory per tracked IPv4 source: {:.0} bytes (see section 1).\n",
            f(&mem["bytes_per_tracked_source"]).unwrap_or(f64::NAN)
        );
    }
    if !sc["metrics"].is_null() {
        let _ = writeln!(
            s,
            "`GET /metrics` with {} tracked sources (filled through the pinned map, counted by \
             the daemon in the background): median {:.1} ms over 10 scrapes (all: {}); filling \
             took {:.2} s.\n",
            sc["metrics"]["tracked_sources"],
            f(&sc["metrics"]["median_scrape_ms"]).unwrap_or(f64::NAN),
            sc["metrics"]["scrape_ms"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|v| v.as_f64())
                    .map(|v| format!("{v:.1}"))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
            f(&sc["metrics"]["fill_seconds"]).unwrap_or(f64::NAN)
        );
    }
    let _ = writeln!(
        s,
        "**Spoofed flood with the per-source table pre-filled.** The generator draws sources \
         at random from a pool of N = 10 %, 100 % and 1000 % of the table's capacity ({}); \
         before the run the table is filled (through the pinned map) with the pool's first \
         min(N, capacity) sources, each with an empty bucket, as if they had been flooding. \
         At 1000 % nine in ten packets come from a source the table cannot hold. The policy \
         here is 1 packet/s, burst 1 per source (`{}`), so the flood's sources are over their \
         limits and most packets take the firewall's drop path; the passed column shows what \
         the sources' refill (1 packet/s each) still lets through to the stack.\n",
        sc["capacity"],
        sc["prefill_policy"]
            .as_str()
            .unwrap_or("")
            .trim()
            .replace('\n', " ")
    );
    let _ = writeln!(
        s,
        "| table pre-filled to | pool of sources | entries before / after | Mpps per gateway core | gateway ns/frame | wall-clock Mpps (NAPI thread ran) | passed / dropped Mpps | verdicts over the run |\n|---|---|---|---|---|---|---|---|"
    );
    if let Some(rows) = sc["prefill"].as_array() {
        for p in rows {
            let v = &p["result"];
            let verdicts = verdicts(&p["verdicts_delta"]);
            let _ = writeln!(
                s,
                "| {} % | {} | {} / {} | {}{} | {} | {} ({:.0} %) | {} / {} | {} |",
                p["percent"],
                p["pool"],
                p["entries_before"],
                p["entries_after"],
                mpps(f(&v["capacity_pps"]).unwrap_or(f64::NAN)),
                range(v),
                ns(f(&v["ns_per_frame"]).unwrap_or(f64::NAN)),
                mpps(f(&v["rx_pps"]).unwrap_or(f64::NAN)),
                f(&v["napi_busy"]).unwrap_or(0.0) * 100.0,
                mpps(f(&v["passed_pps"]).unwrap_or(f64::NAN)),
                mpps(f(&v["dropped_pps"]).unwrap_or(f64::NAN)),
                verdicts
            );
        }
    }
    s.push('\n');
}
