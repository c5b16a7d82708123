//! One qemu VM per kernel: TCG, the kernel and the initramfs, the serial
//! console read line by line into a [`Report`] (and a console log).

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    initramfs::{EXIT_MARKER, START_MARKER},
    kernels_dir, Kernel, KernelsArgs, Report,
};

/// Removes terminal escape sequences (SeaBIOS clears the screen) and CRs.
fn clean(line: &str) -> String {
    anstream::adapter::strip_str(line)
        .to_string()
        .replace('\r', "")
}

pub(super) fn boot(
    k: &Kernel,
    vmlinuz: &Path,
    initramfs: &Path,
    args: &KernelsArgs,
) -> Result<Report> {
    let log_path = kernels_dir().join(k.name).join("console.log");
    let mut log = fs::File::create(&log_path)?;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg"]);
    if !args.realtime_clock {
        // Guest time = instructions executed (1 ns each); idle time is skipped.
        cmd.args(["-icount", "shift=0,sleep=off"]);
    }
    cmd.args(["-m", "1024", "-nographic", "-no-reboot", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("+ {cmd:?}");
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;

    // Both streams go into one channel of lines.
    let (tx, rx) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|r| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut buf = Vec::new();
            while r
                .read_until(b'\n', &mut buf)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                buf.clear();
            }
        })
    })
    .collect();
    drop(tx);

    let mut report = Report::new(k.name, log_path);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.timeout);
    let mut started = false;
    let mut exit_seen: Option<Instant> = None;
    let mut in_log: Option<(String, Vec<String>)> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(raw) => {
                let _ = log.write_all(raw.as_bytes());
                let mut l = clean(raw.trim_end_matches('\n'));
                // The marker may follow the firmware's output on one line.
                if let Some(i) = l.find(START_MARKER) {
                    l.drain(..i);
                }
                // Verifier logs: kept whole in the report, not echoed.
                if let Some((prog, lines)) = &mut in_log {
                    if l == "--- end verifier log ---" {
                        let (prog, lines) = (prog.clone(), std::mem::take(lines));
                        eprintln!(
                            "[{}] (verifier log of {prog}: {} lines)",
                            k.name,
                            lines.len()
                        );
                        report.verifier_logs.push((prog, lines));
                        in_log = None;
                    } else {
                        lines.push(l);
                    }
                    continue;
                }
                if let Some(p) = l
                    .strip_prefix("--- verifier log ")
                    .and_then(|p| p.strip_suffix(" ---"))
                {
                    in_log = Some((p.to_string(), Vec::new()));
                    continue;
                }
                started |= l.contains(START_MARKER);
                // Echo the runner's output except passing rows, and kernel
                // messages (only warnings and errors get past `quiet`).
                let kmsg = l.trim_start().starts_with('[');
                if (started || kmsg) && !l.starts_with("ok   ") && !l.trim().is_empty() {
                    eprintln!("[{}] {l}", k.name);
                }
                report.line(&l);
                if l.starts_with(EXIT_MARKER) {
                    exit_seen = Some(Instant::now());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        let stuck_after_exit = exit_seen.is_some_and(|t| now - t > Duration::from_secs(60));
        if now > deadline || stuck_after_exit {
            if !stuck_after_exit {
                report.problem = Some(format!("timed out after {}s", args.timeout));
            }
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait()?;
    for r in readers {
        let _ = r.join();
    }
    if report.problem.is_none() && report.exit.is_none() {
        report.problem = Some(format!(
            "the VM ended ({status}) without the {EXIT_MARKER} marker{}",
            if started {
                ": the runner crashed or the kernel panicked"
            } else {
                ": the runner never started"
            }
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn escape_sequences_are_removed() {
        assert_eq!(clean("\x1bc\x1b[?7l\x1b[2JSeaBIOS\r"), "SeaBIOS");
        assert_eq!(clean("load: xdp ok"), "load: xdp ok");
    }
}
