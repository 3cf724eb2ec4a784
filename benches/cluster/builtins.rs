//! The six standard checks built into the agent (issue 14): CPU per round
//! in this process beside the scripts' (same run, same machine), and a real
//! agent running the six built-ins every second: its CPU per round and its
//! resident memory while collecting (all processes: it starts none).

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};
use pihealth::agent::builtin::{Check, Context, Limits, Roots};
use pihealth::config::Builtin;

use super::agents::{self, AgentSpec};
use super::procs;
use super::report::{mib, Report, Row};
use super::Bench;

/// CPU time of the calling thread, in ns: CLOCK_THREAD_CPUTIME_ID, exact
/// (schedstat and getrusage only move at ticks and context switches, too
/// coarse for runs of tens of microseconds).
fn thread_cpu_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID) {
        Ok(t) => (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// Time on CPU of the agent's threads, in ns, from schedstat: exact for a
/// thread that is asleep when read, as the agent's are between runs.
/// `only`: threads whose name starts with it.
fn process_cpu_ns(pid: u32, only: Option<&str>) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            only.is_none_or(|name| {
                fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(name))
            })
        })
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Rounds of the six checks run in this thread, each after a pause as in
/// the agent (caches cold again: on this VM a read of /proc/loadavg costs
/// 18 µs warm and 45 µs after 20 ms of sleep).
const ROUNDS: usize = 100;
const PAUSE: Duration = Duration::from_millis(20);

/// What the six checks cannot avoid reading, each once and nothing parsed:
/// their files, the list of /proc, and every /proc/PID (users counts
/// processes per owner); not the /proc/PID/stat files proc reads.
fn floor_round() {
    for f in [
        "/proc/loadavg",
        "/proc/stat",
        "/proc/meminfo",
        "/proc/uptime",
        "/proc/self/mountinfo",
        "/proc/sys/kernel/hostname",
        "/proc/sys/kernel/osrelease",
        "/etc/os-release",
        "/etc/passwd",
        "/etc/group",
        "/var/run/utmp",
    ] {
        let _ = fs::read(f);
    }
    if let Ok(d) = fs::read_dir("/sys/class/thermal") {
        for e in d.flatten() {
            let _ = fs::read(e.path().join("temp"));
        }
    }
    if let Ok(d) = fs::read_dir("/proc") {
        for e in d.flatten() {
            let _ = e.metadata();
        }
    }
    let _ = nix::sys::statvfs::statvfs("/");
}

/// CPU of one round of the six built-ins, run in this thread as the
/// agent's worker runs them; `scripts_ms` is the scripts' figure of the
/// same run, for the ratio.
pub fn in_process(report: &mut Report, scripts_ms: Option<f64>) -> Result<(), String> {
    let ctx = Context::new(Roots::default(), Limits::defaults());
    let mut checks: Vec<(Builtin, Check)> =
        Builtin::ALL.iter().map(|&b| (b, Check::new(b))).collect();
    // One unmeasured round: page cache, first-run state.
    for (b, c) in &mut checks {
        c.run(&ctx).map_err(|e| format!("built-in {b}: {e}"))?;
    }
    floor_round();
    let mut ns = [0u64; 6];
    let mut floor_ns = 0;
    for _ in 0..ROUNDS {
        for (i, (b, c)) in checks.iter_mut().enumerate() {
            thread::sleep(PAUSE);
            let before = thread_cpu_ns();
            c.run(&ctx).map_err(|e| format!("built-in {b}: {e}"))?;
            ns[i] += thread_cpu_ns() - before;
        }
        thread::sleep(PAUSE);
        let before = thread_cpu_ns();
        floor_round();
        floor_ns += thread_cpu_ns() - before;
    }
    let per_round_ms = |n: u64| n as f64 / 1e6 / ROUNDS as f64;
    let total = per_round_ms(ns.iter().sum());
    let each = Builtin::ALL
        .iter()
        .zip(ns)
        .map(|(b, n)| format!("{b} {:.3}", per_round_ms(n)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut row = Row::new(
        "CPU of one round of the six built-in checks (in-process, each run after a 20 ms pause, no process started)",
        format!(
            "{total:.3} ms per round ({each} ms; mean of {ROUNDS} rounds; {} processes on the machine)",
            procs::process_count()
        ),
    )
    .target("≤ 1 ms");
    if let Some(scripts) = scripts_ms {
        row = row
            .baseline(format!(
                "six scripts: {scripts:.0} ms per cycle (row above)"
            ))
            .ratio(format!("{:.0}× less CPU", scripts / total.max(1e-9)));
    }
    report.row(row);
    let floor = per_round_ms(floor_ns);
    report.row(
        Row::new(
            "floor: the files the six built-ins read, each once, /proc listed and every /proc/PID stat'ed once, nothing parsed",
            format!("{floor:.3} ms per round (same pauses)"),
        )
        .ratio(format!("built-ins {:.1}× the floor", total / floor.max(1e-9))),
    );
    Ok(())
}

/// How long the agent's collection is measured.
const MEASURE: Duration = Duration::from_secs(15);

/// An agent running the six built-ins every second (no master: pulls are
/// measured elsewhere): CPU per round from its threads' schedstat, and its
/// resident memory sampled every 50 ms while it collects.
pub fn agent(b: &Bench, report: &mut Report) -> Result<(), String> {
    let collectors: String = Builtin::ALL
        .iter()
        .map(|t| format!("  - {{name: {t}, builtin: {t}, interval: 1s}}\n"))
        .collect();
    let agent = AgentSpec {
        name: "builtins".into(),
        ip: agents::single_ip(240),
        dir: b.dir.join("builtins"),
        key_file: &b.key_file,
        master: agents::NOWHERE.into(),
        extra: "heartbeat_interval: 1h\n".into(),
        collectors,
    }
    .start()?;
    let pid = agent.pid();
    // Warm-up: first runs, log files created.
    thread::sleep(Duration::from_secs(3));
    let log = b.dir.join("builtins/log/cpu.log");
    let lines_before = fs::read_to_string(&log)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    let cpu_before = process_cpu_ns(pid, None);
    let worker_before = process_cpu_ns(pid, Some("builtin-checks"));
    let started = Instant::now();
    let mut peak_rss = 0;
    while started.elapsed() < MEASURE {
        peak_rss = peak_rss.max(procs::rss_tree_kib(pid));
        thread::sleep(Duration::from_millis(50));
    }
    let cpu = process_cpu_ns(pid, None) - cpu_before;
    let worker = process_cpu_ns(pid, Some("builtin-checks")) - worker_before;
    let elapsed = started.elapsed();
    let rounds = fs::read_to_string(&log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        - lines_before;
    let hwm = procs::status_kib(pid, "VmHWM");
    let unknown = fs::read_dir(b.dir.join("builtins/log"))
        .map_err(|e| e.to_string())?
        .flatten()
        .filter(|f| {
            fs::read_to_string(f.path())
                .map(|t| t.lines().any(|l| l.ends_with(" unknown")))
                .unwrap_or(false)
        })
        .count();
    drop(agent);
    if rounds == 0 {
        return Err("the agent logged no cpu line while measured".into());
    }
    if unknown > 0 {
        return Err(format!(
            "{unknown} built-in log(s) hold unknown lines (see {})",
            b.dir.join("builtins/log").display()
        ));
    }
    let per_round = cpu as f64 / 1e6 / rounds as f64;
    let worker_per_round = worker as f64 / 1e6 / rounds as f64;
    report.row(
        Row::new(
            "agent running the six built-ins every 1 s: CPU per round of its check thread, and of the whole agent (scheduler, log appends, alarms, heartbeat and idle wake-ups included)",
            format!(
                "{worker_per_round:.3} ms per round in the check thread; {per_round:.3} ms the whole agent ({rounds} rounds in {:.1} s)",
                elapsed.as_secs_f64()
            ),
        )
        .target("≤ 1 ms"),
    );
    report.row(
        Row::new(
            "agent RSS while collecting with the built-ins, all processes",
            format!(
                "{:.2} MiB peak sampled every 50 ms (VmHWM {:.2} MiB; no child process)",
                mib(peak_rss),
                mib(hwm)
            ),
        )
        .target("≤ 6 MiB"),
    );
    Ok(())
}
