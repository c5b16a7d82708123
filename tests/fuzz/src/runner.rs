//! The run: the policies a run goes through, each frame through XDP (a
//! share through TC) with its checks against the model and the counters,
//! the report, and the replay of one frame.

use std::{
    collections::BTreeMap,
    fmt::{self, Write as _},
    os::fd::AsFd,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::programs::ProgramError;
use firewall_common::{Counter, Stat, Verdict, N_VERDICTS};
use firewall_user::{
    bpf_sys::PerCpuReader,
    policy::{self, Policy},
};
use testkit::{
    fixtures,
    harness::{delta, Harness, Hook, TC_ACT_OK, TC_ACT_SHOT, XDP_DROP, XDP_PASS, XDP_TX},
};

use crate::generator::{corpus, frame, Origin};
use crate::model::{expected, feature, model, skb_may_refuse, Parsed};
use crate::shrink::shrink;
use crate::ETH_HLEN;

/// The three policies of a run, in order, with their names.
pub fn policies() -> Vec<(&'static str, Policy)> {
    let base = fixtures::POLICY;
    let monitor = base.replacen("[defaults]\n", "[defaults]\nmode = \"monitor\"\n", 1);
    let mut variant = base.replacen(
        "[defaults]\n",
        "[defaults]\nipv4_prefix = 24\nipv6_prefix = 48\n",
        1,
    );
    variant.push_str(
        "\n[[rule]]\nname = \"icmp\"\nprotocol = \"icmp\"\nrate = 1\nburst = 1\n\n\
         [autoban]\ndrops = 5\nwindow = \"10s\"\nban = \"10m\"\nmax_ban = \"1h\"\n",
    );
    let starved = format!("{base}\n[flood]\nnew_sources_rate = 10\nnew_sources_burst = 10\n");
    [
        ("fixtures POLICY (enforce)", base.to_string()),
        ("fixtures POLICY (monitor)", monitor),
        (
            "aggregation /24 and /48, icmp rule, autoban (enforce)",
            variant,
        ),
        ("fixtures POLICY, [flood] budget of 10 (enforce)", starved),
    ]
    .into_iter()
    .map(|(name, text)| {
        let p = policy::parse(&text)
            .unwrap_or_else(|e| panic!("fuzz policy {name:?} does not parse: {e:?}"))
            .0;
        (name, p)
    })
    .collect()
}

/// Which policy (of [`policies`]) frame `index` of `frames` runs under:
/// the first 65%, the next 15%, the next 12%, the rest.
pub fn phase_of(index: u64, frames: u64) -> usize {
    let f = frames.max(1) as u128;
    let i = index as u128 * 100;
    if i < f * 65 {
        0
    } else if i < f * 80 {
        1
    } else if i < f * 92 {
        2
    } else {
        3
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Frames run through the programs and counted (each at least 14
    /// bytes). TC frames the skb test run refuses do not count: frames are
    /// generated (index 0, 1, ...) until this many have run.
    pub frames: u64,
    pub seed: u64,
    /// Every `tc_every`-th frame goes through TC instead of XDP (0: never).
    pub tc_every: u64,
    /// Print progress to stderr every this many frames (0: never).
    pub progress_every: u64,
    /// Stop collecting failures after this many (the run goes on).
    pub max_failures: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            frames: 1_000_000,
            seed: DEFAULT_SEED,
            tc_every: 8,
            progress_every: 0,
            max_failures: 20,
        }
    }
}

pub const DEFAULT_SEED: u64 = 0x0f12_e3a1_1f00_d5ed;

pub fn hook_for(index: u64, tc_every: u64) -> Hook {
    if tc_every > 0 && index % tc_every == tc_every - 1 {
        Hook::Tc
    } else {
        Hook::Xdp
    }
}

fn hook_name(h: Hook) -> &'static str {
    match h {
        Hook::Xdp => "xdp",
        Hook::Tc => "tc",
    }
}

/// One frame that broke a check.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub index: u64,
    pub hook: Hook,
    pub policy: &'static str,
    pub frame: Vec<u8>,
    pub model: Parsed,
    pub problem: String,
    /// The smallest frame found that still fails on a fresh load (see
    /// [`shrink_failure`]); `None` when the frame fails only after what
    /// the run did before it, or was not shrunk.
    pub shrunk: Option<Vec<u8>>,
}

pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "frame #{} (seed {:#x}, {}, policy: {}): {}",
            self.index,
            self.seed,
            hook_name(self.hook),
            self.policy,
            self.problem
        )?;
        writeln!(f, "  model: {:?}", self.model)?;
        writeln!(f, "  {} bytes: {}", self.frame.len(), hex(&self.frame))?;
        if let Some(small) = &self.shrunk {
            writeln!(f, "  shrunk: {} bytes: {}", small.len(), hex(small))?;
            writeln!(f, "  shrunk model: {:?}", model(small).0)?;
        }
        write!(
            f,
            "  replay: cargo xtask fuzz --seed {:#x} --replay {}",
            self.seed, self.index
        )
    }
}

/// What a run saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    /// Frames run (>= 14 bytes), XDP and TC.
    pub xdp_frames: u64,
    pub tc_frames: u64,
    pub bytes: u64,
    /// TC frames the skb test run refused (short IP header); not counted.
    pub tc_refused: u64,
    /// Frames < 14 bytes, one per length and hook, refused as documented.
    pub short_refused: u64,
    /// Per verdict: (packets, bytes) through XDP, and through TC.
    pub xdp_verdicts: Vec<(u64, u64)>,
    pub tc_verdicts: Vec<(u64, u64)>,
    /// Return values seen, per hook.
    pub returns: BTreeMap<(&'static str, u32), u64>,
    pub origins: BTreeMap<Origin, u64>,
    /// The reference parser's malformed reasons.
    pub malformed_reasons: BTreeMap<&'static str, u64>,
    pub features: BTreeMap<&'static str, u64>,
    /// Frames that matched a rule, per rule name.
    pub rule_hits: BTreeMap<String, u64>,
    /// The flood guard over the run: new source prefixes given a bucket,
    /// and first packets of new prefixes refused one.
    pub new_sources_admitted: u64,
    pub new_sources_refused: u64,
    pub elapsed: Duration,
    pub failures: Vec<Failure>,
    /// Failures beyond `max_failures`, not kept.
    pub more_failures: u64,
}

impl Report {
    pub fn frames(&self) -> u64 {
        self.xdp_frames + self.tc_frames
    }

    pub fn ok(&self) -> bool {
        self.failures.is_empty() && self.more_failures == 0
    }

    /// Packets counted per verdict over both hooks.
    pub fn packets(&self, v: Verdict) -> u64 {
        self.xdp_verdicts[v as usize].0 + self.tc_verdicts[v as usize].0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "fuzz: seed {:#x}: {} frames ({} XDP, {} TC), {} bytes, in {:.1} s ({:.0} frames/s)",
            self.seed,
            self.frames(),
            self.xdp_frames,
            self.tc_frames,
            self.bytes,
            secs,
            self.frames() as f64 / secs.max(1e-9)
        )?;
        writeln!(
            f,
            "  {:<14} {:>10} {:>12} {:>10} {:>12}",
            "verdict", "xdp pkts", "xdp bytes", "tc pkts", "tc bytes"
        )?;
        for v in Verdict::ALL {
            let (xp, xb) = self.xdp_verdicts[v as usize];
            let (tp, tb) = self.tc_verdicts[v as usize];
            writeln!(f, "  {:<14} {xp:>10} {xb:>12} {tp:>10} {tb:>12}", v.name())?;
        }
        writeln!(
            f,
            "  TC frames refused by the skb test run (short IP header, nothing counted): {}",
            self.tc_refused
        )?;
        writeln!(
            f,
            "  frames < 14 bytes refused with EINVAL (not in the count): {}",
            self.short_refused
        )?;
        let returns = joined(&self.returns, |(h, r), n| format!("{h}={r}: {n}"));
        writeln!(f, "  return values: {returns}")?;
        let origins = joined(&self.origins, |o, n| format!("{o:?}: {n}"));
        writeln!(f, "  frames by origin: {origins}")?;
        let rules = joined(&self.rule_hits, |r, n| format!("{r}: {n}"));
        writeln!(f, "  rule matches: {rules}")?;
        writeln!(
            f,
            "  new source prefixes: {} given a bucket, {} refused by the flood guard",
            self.new_sources_admitted, self.new_sources_refused
        )?;
        writeln!(f, "  features (frames):")?;
        for (name, n) in &self.features {
            writeln!(f, "    {name:<42} {n:>9}")?;
        }
        writeln!(f, "  malformed, by the reference parser's reason:")?;
        for (why, n) in &self.malformed_reasons {
            writeln!(f, "    {why:<48} {n:>9}")?;
        }
        write!(
            f,
            "  failures: {}",
            self.failures.len() as u64 + self.more_failures
        )?;
        for x in &self.failures {
            write!(f, "\n{x}")?;
        }
        Ok(())
    }
}

/// A count per key, "key: n, key: n" as `show` writes each.
fn joined<K, V>(m: &BTreeMap<K, V>, show: impl Fn(&K, &V) -> String) -> String {
    m.iter()
        .map(|(k, v)| show(k, v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The per-verdict counters read with one `BPF_MAP_LOOKUP_BATCH` call
/// instead of one lookup per verdict (the per-frame check reads them after
/// every frame; this keeps a million frames to seconds). Falls back to
/// [`Harness::counters`] where the batch call is not available, and is
/// checked against it at the start and end of every policy phase.
struct CounterReader {
    /// The pinned `COUNTERS` map, opened again for its fd.
    map: Option<aya::maps::MapData>,
    reader: PerCpuReader<Counter>,
}

impl CounterReader {
    fn open(h: &Harness) -> Self {
        let map =
            aya::maps::MapData::from_pin(h.pin_dir.join(firewall_common::maps::COUNTERS)).ok();
        let mut r = CounterReader {
            map,
            reader: PerCpuReader::new(),
        };
        // Use the batch call only if it agrees with the plain lookups.
        let plain = r
            .map
            .as_ref()
            .and_then(|m| r.reader.read_each(m.fd().as_fd(), 0, N_VERDICTS).ok());
        if plain.is_none() || r.batch().ok() != plain {
            r.map = None;
        }
        r
    }

    fn read(&mut self, h: &Harness) -> Vec<Counter> {
        if self.map.is_some() {
            if let Ok(c) = self.batch() {
                return c;
            }
        }
        h.counters()
    }

    fn batch(&mut self) -> std::io::Result<Vec<Counter>> {
        let Some(map) = &self.map else {
            return Err(std::io::ErrorKind::Unsupported.into());
        };
        self.reader.read_batch(map.fd().as_fd(), 0, N_VERDICTS)
    }
}

fn errno(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

fn rule_totals(h: &Harness, rules: usize) -> Result<Vec<Vec<Counter>>> {
    (0..rules as u32)
        .map(|r| h.rule_counters(r).context("reading rule counters"))
        .collect()
}

/// What one frame did, checked.
pub struct Outcome {
    pub verdict: Option<Verdict>,
    /// The skb test run refused the frame (TC only; see the crate docs).
    pub refused: bool,
    /// The checks it broke.
    pub problems: Vec<String>,
}

impl Outcome {
    /// A failure of the checks (a documented refusal is none).
    pub fn failed(&self) -> bool {
        !self.problems.is_empty() && !self.refused
    }
}

/// Run `frame` once through `hook` and check it (counters before it in
/// `before`, updated to after it).
fn run_one(
    h: &mut Harness,
    reader: &mut CounterReader,
    hook: Hook,
    frame: &[u8],
    parsed: &Parsed,
    policy: &Policy,
    before: &mut Vec<Counter>,
) -> Outcome {
    let res = h.run(hook, frame, 1);
    let after = reader.read(h);
    let d = delta(before, &after);
    *before = after;
    let mut problems = Vec::new();
    let moved: Vec<(Verdict, u64, u64)> = Verdict::ALL
        .iter()
        .filter(|v| d[**v as usize] != (0, 0))
        .map(|v| (*v, d[*v as usize].0, d[*v as usize].1))
        .collect();
    let rv = match res {
        Err(e) => {
            let refusal =
                errno(&e) == Some(libc::EINVAL) && hook == Hook::Tc && skb_may_refuse(frame);
            if !refusal {
                problems.push(format!("test run failed: {e} ({:?})", errno(&e)));
            }
            if !moved.is_empty() {
                problems.push(format!(
                    "the test run failed, yet counters moved: {moved:?}"
                ));
            }
            return Outcome {
                verdict: None,
                refused: refusal,
                problems,
            };
        }
        Ok(rv) => rv,
    };
    let (pass, drop) = match hook {
        Hook::Xdp => (XDP_PASS, XDP_DROP),
        Hook::Tc => (TC_ACT_OK, TC_ACT_SHOT),
    };
    let answered = hook == Hook::Xdp && rv == XDP_TX;
    if rv != pass && rv != drop && !answered {
        problems.push(format!(
            "returned {rv}{}, expected {pass} or {drop}",
            if hook == Hook::Xdp && rv == 0 {
                " (XDP_ABORTED)"
            } else {
                ""
            }
        ));
    }
    let verdict = match moved.as_slice() {
        [(v, 1, b)] if *b == frame.len() as u64 => Some(*v),
        _ => {
            problems.push(format!(
                "counters moved by {moved:?} (verdict, packets, bytes); expected one packet of {} bytes under one verdict",
                frame.len()
            ));
            None
        }
    };
    if let Some(v) = verdict {
        if answered != (v == Verdict::Challenged) {
            problems.push(format!(
                "verdict {} but returned {rv} (XDP_TX answers exactly the challenged)",
                v.name()
            ));
        } else if !answered && (rv == drop) != v.drops() {
            problems.push(format!(
                "verdict {} but returned {rv} ({})",
                v.name(),
                if rv == drop { "drop" } else { "pass" }
            ));
        }
        let (allowed, _) = expected(policy, parsed);
        if !allowed.contains(&v) {
            problems.push(format!(
                "verdict {}, expected {}",
                v.name(),
                allowed
                    .iter()
                    .map(|v| v.name())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        }
    }
    Outcome {
        verdict,
        refused: false,
        problems,
    }
}

/// The fuzz run: `opts.frames` frames through a fresh load of the data
/// plane. Failures are collected in the report, not returned as errors;
/// `Err` means the harness itself could not run.
pub fn run(opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let policies = policies();
    let max_rules = policies
        .iter()
        .map(|(_, p)| p.rules.len())
        .max()
        .unwrap_or(0);
    let mut h = Harness::new(&policies[0].1).context("loading the data plane")?;
    let corpus = corpus(opts.seed);
    let mut rep = Report {
        seed: opts.seed,
        xdp_verdicts: vec![(0, 0); N_VERDICTS as usize],
        tc_verdicts: vec![(0, 0); N_VERDICTS as usize],
        ..Default::default()
    };
    let fail = |rep: &mut Report, f: Failure| {
        if rep.failures.len() < opts.max_failures {
            rep.failures.push(f);
        } else {
            rep.more_failures += 1;
        }
    };

    // Frames shorter than Ethernet: refused by both test runs, nothing counted.
    let mut before = h.counters();
    for len in 0..ETH_HLEN {
        let f = vec![0x08u8; len];
        for hook in [Hook::Xdp, Hook::Tc] {
            let r = h.run(hook, &f, 1);
            let after = h.counters();
            let moved = delta(&before, &after).iter().any(|d| *d != (0, 0));
            before = after;
            match r {
                Err(e) if errno(&e) == Some(libc::EINVAL) && !moved => rep.short_refused += 1,
                other => fail(
                    &mut rep,
                    Failure {
                        seed: opts.seed,
                        index: u64::MAX,
                        hook,
                        policy: policies[0].0,
                        frame: f.clone(),
                        model: Parsed::Malformed("shorter than an Ethernet header"),
                        problem: format!(
                            "a {len}-byte frame: expected the kernel's EINVAL refusal and no counting, got {:?}{}",
                            other.map_err(|e| e.to_string()),
                            if moved { " and counters moved" } else { "" }
                        ),
                        shrunk: None,
                    },
                ),
            }
        }
    }

    let mut reader = CounterReader::open(&h);
    let run_start = h.counters();
    before = run_start.clone();
    let whole_run = |rep: &mut Report, problem: String| {
        fail(
            rep,
            Failure {
                seed: opts.seed,
                index: u64::MAX,
                hook: Hook::Xdp,
                policy: "all",
                frame: Vec::new(),
                model: Parsed::NotIp,
                problem,
                shrunk: None,
            },
        )
    };
    let rules_start = rule_totals(&h, max_rules)?;
    let stat = |h: &Harness, s: Stat| h.maps.stat(s).context("reading the stats map");
    let admitted_start = stat(&h, Stat::NewSourceAdmitted)?;
    let refused_start = stat(&h, Stat::NewSourceRefused)?;
    // Expected rule counter moves: [rule][verdict] packets, bytes.
    let mut rule_expect = vec![vec![(0u64, 0u64); N_VERDICTS as usize]; max_rules];
    let mut phase = 0;
    let mut i = 0u64;
    while rep.frames() < opts.frames {
        let p = phase_of(i, opts.frames);
        if p != phase {
            let slow = h.counters();
            if slow != before {
                whole_run(
                    &mut rep,
                    format!("counters read in one batch {before:?} disagree with the plain lookups {slow:?}"),
                );
            }
            phase = p;
            h.apply(&policies[p].1)
                .with_context(|| format!("applying fuzz policy {:?}", policies[p].0))?;
            before = h.counters();
        }
        let (name, policy) = (&policies[phase].0, &policies[phase].1);
        let (frame, origin) = frame(opts.seed, i, &corpus);
        let (parsed, feats) = model(&frame);
        let hook = hook_for(i, opts.tc_every);
        let out = run_one(
            &mut h,
            &mut reader,
            hook,
            &frame,
            &parsed,
            policy,
            &mut before,
        );

        *rep.origins.entry(origin).or_default() += 1;
        if out.refused {
            rep.tc_refused += 1;
        } else {
            match hook {
                Hook::Xdp => rep.xdp_frames += 1,
                Hook::Tc => rep.tc_frames += 1,
            }
            rep.bytes += frame.len() as u64;
            for (bit, fname) in feature::NAMES {
                if feats & bit != 0 {
                    *rep.features.entry(fname).or_default() += 1;
                }
            }
            if let Parsed::Malformed(why) = parsed {
                *rep.malformed_reasons.entry(why).or_default() += 1;
            }
        }
        if let Some(v) = out.verdict {
            let slot = match hook {
                Hook::Xdp => &mut rep.xdp_verdicts[v as usize],
                Hook::Tc => &mut rep.tc_verdicts[v as usize],
            };
            slot.0 += 1;
            slot.1 += frame.len() as u64;
            let rv = if v == Verdict::Challenged {
                XDP_TX
            } else {
                hook.action(v.drops())
            };
            *rep.returns.entry((hook_name(hook), rv)).or_default() += 1;
            if let (_, Some(r)) = expected(policy, &parsed) {
                let e = &mut rule_expect[r][v as usize];
                e.0 += 1;
                e.1 += frame.len() as u64;
                *rep.rule_hits
                    .entry(policy.rules[r].name.clone())
                    .or_default() += 1;
            }
        }
        if !out.problems.is_empty() {
            fail(
                &mut rep,
                Failure {
                    seed: opts.seed,
                    index: i,
                    hook,
                    policy: name,
                    frame,
                    model: parsed,
                    problem: out.problems.join("; "),
                    shrunk: None,
                },
            );
        }
        i += 1;
        if opts.progress_every > 0 && i.is_multiple_of(opts.progress_every) {
            eprintln!(
                "fuzz: {} / {} frames, {:.1} s, {} failures",
                rep.frames(),
                opts.frames,
                started.elapsed().as_secs_f64(),
                rep.failures.len() as u64 + rep.more_failures
            );
        }
    }

    // The whole run: every frame run was counted once, with its bytes.
    let end = h.counters();
    if end != before {
        whole_run(
            &mut rep,
            format!(
                "counters read in one batch {before:?} disagree with the plain lookups {end:?}"
            ),
        );
    }
    let total = delta(&run_start, &end);
    let (packets, bytes) = total
        .iter()
        .fold((0, 0), |(p, b), (dp, db)| (p + dp, b + db));
    let (frames_run, bytes_run) = (rep.frames(), rep.bytes);
    if packets != frames_run || bytes != bytes_run {
        whole_run(
            &mut rep,
            format!(
                "over the run the counters grew by {packets} packets / {bytes} bytes for {frames_run} frames / {bytes_run} bytes run"
            ),
        );
    }

    rep.new_sources_admitted = stat(&h, Stat::NewSourceAdmitted)? - admitted_start;
    rep.new_sources_refused = stat(&h, Stat::NewSourceRefused)? - refused_start;

    // Rule counters: what the model's rule matches predict, per verdict.
    let rules_end = rule_totals(&h, max_rules)?;
    for r in 0..max_rules {
        let got = delta(&rules_start[r], &rules_end[r]);
        if got != rule_expect[r] {
            let name = policies
                .iter()
                .find_map(|(_, p)| p.rules.get(r).map(|x| x.name.clone()))
                .unwrap_or_default();
            fail(
                &mut rep,
                Failure {
                    seed: opts.seed,
                    index: u64::MAX,
                    hook: Hook::Xdp,
                    policy: "all",
                    frame: Vec::new(),
                    model: Parsed::NotIp,
                    problem: format!(
                        "rule {r} ({name}) counters moved by {got:?} (packets, bytes per verdict), the reference parser's matches predict {:?}",
                        rule_expect[r]
                    ),
                    shrunk: None,
                },
            );
        }
    }
    // Shrink the first failing frames, so that the report of a failed run
    // shows the bytes that matter without a replay.
    for failure in rep.failures.iter_mut().take(SHRUNK_PER_RUN) {
        let phase = policies.iter().find(|(n, _)| *n == failure.policy);
        if let (Some((_, policy)), false) = (phase, failure.frame.len() < ETH_HLEN) {
            failure.shrunk = shrink_failure(policy, failure.hook, &failure.frame, Outcome::failed)
                .filter(|small| *small != failure.frame);
        }
    }
    rep.elapsed = started.elapsed();
    Ok(rep)
}

/// Run `frame` once through `hook` on a fresh load of `policy`, checked.
pub fn run_alone(policy: &Policy, hook: Hook, frame: &[u8]) -> Result<Outcome> {
    let mut h = Harness::new(policy).context("loading the data plane")?;
    let mut reader = CounterReader::open(&h);
    let mut before = h.counters();
    let (parsed, _) = model(frame);
    Ok(run_one(
        &mut h,
        &mut reader,
        hook,
        frame,
        &parsed,
        policy,
        &mut before,
    ))
}

/// The smallest frame found for which `keeps` still holds, each candidate
/// run on a fresh load, as the frame itself was, so that what is left
/// fails on its own. `None` when `frame` itself does not satisfy `keeps`
/// on a fresh load (it failed because of the frames before it).
pub fn shrink_failure(
    policy: &Policy,
    hook: Hook,
    frame: &[u8],
    keeps: impl Fn(&Outcome) -> bool,
) -> Option<Vec<u8>> {
    let holds = |f: &[u8]| run_alone(policy, hook, f).is_ok_and(|o| keeps(&o));
    holds(frame).then(|| shrink(frame, SHRINK_BUDGET, holds))
}

/// Frame `index` of a run (`frames` long, for its policy phase) replayed on
/// a fresh load through both hooks, described for a human.
pub fn replay(seed: u64, frames: u64, index: u64) -> Result<String> {
    let policies = policies();
    let corpus = corpus(seed);
    let (f, origin) = frame(seed, index, &corpus);
    let (parsed, feats) = model(&f);
    let phase = phase_of(index, frames);
    let (name, policy) = (&policies[phase].0, &policies[phase].1);
    let mut out = String::new();
    writeln!(
        out,
        "frame #{index} of seed {seed:#x} ({origin:?}, {} bytes, policy: {name}):\n  {}",
        f.len(),
        hex(&f)
    )?;
    let fnames: Vec<&str> = feature::NAMES
        .iter()
        .filter(|(b, _)| feats & b != 0)
        .map(|(_, n)| *n)
        .collect();
    writeln!(out, "  model: {parsed:?}; features: {}", fnames.join(", "))?;
    let (allowed, rule) = expected(policy, &parsed);
    writeln!(
        out,
        "  expected verdict: {}; rule: {}",
        allowed
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(" or "),
        rule.map(|r| policy.rules[r].name.as_str())
            .unwrap_or("none")
    )?;
    for hook in [Hook::Xdp, Hook::Tc] {
        let o = run_alone(policy, hook, &f)?;
        writeln!(
            out,
            "  {}: verdict {}{}{}",
            hook_name(hook),
            o.verdict.map(|v| v.name()).unwrap_or("-"),
            if o.refused {
                " (refused by the skb test run)"
            } else {
                ""
            },
            if o.problems.is_empty() {
                String::from(", ok")
            } else {
                format!(", PROBLEMS: {}", o.problems.join("; "))
            }
        )?;
        if o.failed() {
            let small = shrink_failure(policy, hook, &f, Outcome::failed).unwrap_or(f.clone());
            if small != f {
                writeln!(
                    out,
                    "  shrunk ({}): {} bytes: {}\n  model: {:?}",
                    hook_name(hook),
                    small.len(),
                    hex(&small),
                    model(&small).0
                )?;
            }
        }
    }
    Ok(out)
}

/// Data-plane loads one shrink may spend.
const SHRINK_BUDGET: usize = 300;
/// Failures a run shrinks (each costs up to `SHRINK_BUDGET` loads).
const SHRUNK_PER_RUN: usize = 3;

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn phases_split_the_run() {
        assert_eq!(phase_of(0, 100), 0);
        assert_eq!(phase_of(64, 100), 0);
        assert_eq!(phase_of(65, 100), 1);
        assert_eq!(phase_of(80, 100), 2);
        assert_eq!(phase_of(92, 100), 3);
        assert_eq!(phase_of(150, 100), 3);
        assert_eq!(policies().len(), 4);
        assert_eq!(policies()[3].1.flood.new_sources_rate, 10);
        assert!(policies()[1].1.defaults.monitor);
    }
}
