//! A full pull cycle of N agents × 6 types with small deltas.
//!
//! N real `pihealth agent` processes (the release binary), each on its own
//! loopback address 127.0.5x.y with ports 8000/8001 and six collectors
//! that run `/bin/echo` (exec'd directly, no shell: the cheapest program
//! there is) every `interval`, so each type gains one line per interval
//! without loading the machine. A cycle is one `pihealth pull -c
//! master.yaml` (the cron command; a pool of `workers` threads), timed
//! from spawn to exit; cycles start at least `interval` apart, so every
//! cycle carries a small delta of every type.
//!
//! Per N: wall time (median of the cycles); connections per second (1
//! control connection per agent + 1 data connection per piece, counted
//! from the pull's own summary lines); CPU per cycle of the pull process
//! (the growth of our cutime and cstime across its wait) and of the agents
//! (their CPU during the cycle less their rate between cycles); the pull's
//! peak RSS (VmHWM while it runs); and the resident memory of a `pihealth
//! master` daemon after it has pulled all N agents once.
//!
//! Where the time goes, by where the files live: the same cycles with the
//! master's directories on tmpfs (its fsyncs cost nothing), and with a
//! second fleet whose agents live on tmpfs too (no fsync anywhere).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use pihealth::master::registry::Registry;

use super::agents::{self, AgentSpec, BIN};
use super::procs::{self, Proc, TICK_MS};
use super::report::{mib, Report, Row};
use super::{Bench, SKIPPED, TYPES};

/// Daemon ports for this phase (registration; alarms on the next port).
const DAEMON_PORT: u16 = 8180;
const EMPTY_DAEMON_PORT: u16 = 8280;

/// What one `pihealth pull` run did.
struct Cycle {
    wall: Duration,
    cpu_ticks: u64,
    peak_rss_kib: u64,
    ok: usize,
    failed: usize,
    pieces: usize,
    /// Sum of the per-agent pull times the summary lines report.
    agent_ms: u64,
    first_failure: Option<String>,
    /// The agents' CPU ticks (collectors included) during the cycle.
    fleet_ticks: u64,
    /// Share of the machine's CPU time that was busy during the cycle
    /// (everything running, not only this bench).
    machine_busy: f64,
}

/// The collector interval for N agents: six runs per agent per interval,
/// so at most about 150 runs a second on the whole machine (each costs the
/// agent a fork, an exec and an fsync); at least 2 s.
pub fn interval_for(b: &Bench, n: usize) -> Duration {
    b.settings
        .interval
        .unwrap_or_else(|| Duration::from_millis((n as u64 * 40).max(2000)))
}

/// Parse `pihealth pull`'s summary lines (`HOST ADDR ok: P piece(s), … N ms`).
fn parse_summary(stdout: &str, c: &mut Cycle) {
    for line in stdout.lines() {
        if let Some((_, rest)) = line.split_once(" ok: ") {
            c.ok += 1;
            let number_before = |unit: &str| -> u64 {
                rest.split(", ")
                    .find_map(|part| part.strip_suffix(unit))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0)
            };
            c.pieces += rest
                .split(' ')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            c.agent_ms += number_before(" ms");
        } else if line.contains(" FAILED: ") {
            c.failed += 1;
            c.first_failure.get_or_insert_with(|| line.to_string());
        }
    }
}

/// One `pihealth pull -c master.yaml` in `master_dir`, pulling `fleet`.
fn pull_cycle(master_dir: &Path, fleet: &[Proc]) -> Result<Cycle, String> {
    let n = fleet.len();
    let mut command = Command::new(BIN);
    command
        .args(["pull", "-c", "master.yaml"])
        .current_dir(master_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(master_dir.join("pull.err")).map_err(|e| e.to_string())?);
    let fleet_before = fleet_ticks(fleet);
    let machine_before = procs::machine_ticks();
    let cpu_before = procs::own_children_ticks();
    let started = Instant::now();
    let mut pull = Proc::spawn(&mut command, "pihealth pull")?;
    let mut stdout = pull.child.stdout.take().expect("piped stdout");
    // Read the summary while it runs, so a full pipe never stalls it.
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let mut peak = 0;
    let limit = Duration::from_secs(60) + Duration::from_millis(200) * n as u32;
    let waited = pull.wait_sampling(limit, |pid| {
        peak = peak.max(procs::status_kib(pid, "VmHWM"));
    });
    let cpu_ticks = procs::own_children_ticks() - cpu_before;
    let machine_after = procs::machine_ticks();
    let fleet_after = fleet_ticks(fleet);
    let text = reader.join().unwrap_or_default();
    let (_, ended) = waited.ok_or_else(|| format!("pihealth pull took over {limit:?}"))?;
    let mut c = Cycle {
        wall: ended - started,
        cpu_ticks,
        peak_rss_kib: peak,
        ok: 0,
        failed: 0,
        pieces: 0,
        agent_ms: 0,
        first_failure: None,
        fleet_ticks: fleet_after.saturating_sub(fleet_before),
        machine_busy: procs::busy_share(machine_before, machine_after),
    };
    parse_summary(&text, &mut c);
    if c.ok + c.failed != n {
        return Err(format!(
            "pihealth pull reported {} agents of {n} (see {}/pull.err)",
            c.ok + c.failed,
            master_dir.display()
        ));
    }
    Ok(c)
}

/// CPU ticks of every agent of the fleet and of the collector runs it reaped.
fn fleet_ticks(fleet: &[Proc]) -> u64 {
    fleet
        .iter()
        .map(|p| procs::cpu_ticks_with_children(p.pid()))
        .sum()
}

/// A master directory whose `master.yaml` lists every agent of the fleet.
fn master_dir(root: &Path, b: &Bench, n: usize, extra: &str) -> Result<PathBuf, String> {
    fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let list: Vec<String> = (0..n)
        .map(|i| format!("\"{}:8000\"", agents::fleet_ip(i)))
        .collect();
    let yaml = agents::master_yaml(DAEMON_PORT, &b.key_file, b.settings.workers, &list, extra);
    fs::write(root.join("master.yaml"), yaml).map_err(|e| e.to_string())?;
    Ok(root.to_path_buf())
}

/// A cycle slower than this is not repeated: the machine cannot carry the
/// fleet, and more of it would only load it further.
const SLOW_CYCLE: Duration = Duration::from_secs(60);

/// The measured cycles of one master directory.
struct Cycles {
    measured: Vec<Cycle>,
    /// The warm-up took over `SLOW_CYCLE`: it is the only figure.
    warm_only: bool,
    /// The fleet's own CPU (agents and their collector runs) while no
    /// pull ran, in cores; None if there was no pause between cycles.
    background: Option<f64>,
}

impl Cycles {
    fn median(&self, key: impl Fn(&Cycle) -> f64) -> f64 {
        median_by(&self.measured, key)
    }

    fn wall(&self) -> f64 {
        self.median(|c| c.wall.as_secs_f64())
    }

    /// The agents' CPU per cycle in seconds, their rate between cycles
    /// subtracted (collector runs and idle wake-ups are not pull work).
    fn agents_cpu(&self) -> Option<f64> {
        let rate = self.background?;
        Some(self.median(|c| {
            (c.fleet_ticks as f64 * TICK_MS / 1e3 - rate * c.wall.as_secs_f64()).max(0.0)
        }))
    }
}

/// A warm-up cycle (it pulls the first lines), then the measured cycles,
/// each starting at least `interval` after the one before.
fn run_cycles(
    master: &Path,
    fleet: &[Proc],
    b: &Bench,
    interval: Duration,
) -> Result<Cycles, String> {
    let n = fleet.len();
    let mut last_start = Instant::now();
    let warm = pull_cycle(master, fleet)?;
    if let Some(f) = &warm.first_failure {
        return Err(format!(
            "warm-up cycle ({:.1} s): {} of {n} failed, e.g. {f}",
            warm.wall.as_secs_f64(),
            warm.failed
        ));
    }
    if warm.wall > SLOW_CYCLE {
        return Ok(Cycles {
            measured: vec![warm],
            warm_only: true,
            background: None,
        });
    }
    let mut measured = Vec::new();
    let (mut idle_ticks, mut idle_time) = (0u64, Duration::ZERO);
    for _ in 0..b.settings.cycles {
        let (t0, ticks0) = (Instant::now(), fleet_ticks(fleet));
        let next = last_start + interval + Duration::from_millis(300);
        thread::sleep(next.saturating_duration_since(Instant::now()));
        idle_ticks += fleet_ticks(fleet).saturating_sub(ticks0);
        idle_time += t0.elapsed();
        last_start = Instant::now();
        measured.push(pull_cycle(master, fleet)?);
    }
    // Ticks are 10 ms: a pause under a second says little.
    let background = (idle_time >= Duration::from_secs(1))
        .then(|| idle_ticks as f64 * TICK_MS / 1e3 / idle_time.as_secs_f64());
    Ok(Cycles {
        measured,
        warm_only: false,
        background,
    })
}

fn median_by<T>(items: &[T], key: impl Fn(&T) -> f64) -> f64 {
    let mut v: Vec<f64> = items.iter().map(key).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Start `pihealth master` on `dir`, wait until the registry shows every
/// one of `n` agents pulled once, and return its RSS (KiB) and how long that took.
fn daemon_rss(dir: &Path, n: usize) -> Result<(u64, Duration), String> {
    let started = Instant::now();
    let daemon = agents::start_master(dir, DAEMON_PORT, "fleet master daemon")?;
    let limit = Duration::from_secs(60) + Duration::from_millis(200) * n as u32;
    loop {
        let (_, records) = Registry::read_snapshot(&dir.join("log")).unwrap_or_default();
        let pulled = records.iter().filter(|r| r.last_pull_ms.is_some()).count();
        if pulled >= n {
            if let Some(r) = records.iter().find(|r| r.last_pull_error.is_some()) {
                return Err(format!("daemon pull failed: {:?}", r.last_pull_error));
            }
            break;
        }
        if started.elapsed() > limit {
            return Err(format!(
                "the daemon pulled {pulled} of {n} agents in {limit:?}"
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
    let took = started.elapsed();
    let rss = procs::status_kib(daemon.pid(), "VmRSS");
    drop(daemon);
    Ok((rss, took))
}

/// RSS of a master daemon that knows no agent: the base of "growth per agent".
pub fn empty_daemon_rss(b: &Bench) -> Result<u64, String> {
    let dir = b.dir.join("master-empty");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let yaml = agents::master_yaml(EMPTY_DAEMON_PORT, &b.key_file, b.settings.workers, &[], "");
    fs::write(dir.join("master.yaml"), yaml).map_err(|e| e.to_string())?;
    let daemon = agents::start_master(&dir, EMPTY_DAEMON_PORT, "empty master daemon")?;
    thread::sleep(Duration::from_secs(2));
    Ok(procs::status_kib(daemon.pid(), "VmRSS"))
}

/// Agents started first, to see what an idle agent costs before all start.
const PROBE_AGENTS: usize = 50;
/// A fleet whose idle agents alone would take more than this share of the
/// machine's cores is not started (unless PIHEALTH_BENCH_FORCE=1): its
/// figures would measure the agents' own wake-ups, and it would starve
/// everything else on the machine. (Their collector runs add about as much
/// again, and the estimate from 50 fresh agents varies by half: hence a
/// quarter, not a half.)
const MAX_IDLE_SHARE: f64 = 0.25;

/// Refuse a fleet of `n` whose idle cost, measured on the `probe` agents
/// already running, would take over `MAX_IDLE_SHARE` of the machine.
fn check_idle_cost(probe: &[Proc], n: usize, force: bool) -> Result<(), String> {
    // After their start-up work and first collector runs, before the next.
    thread::sleep(Duration::from_secs(1));
    let (ticks, t) = (fleet_ticks(probe), Instant::now());
    thread::sleep(Duration::from_secs(2));
    let cores_used =
        fleet_ticks(probe).saturating_sub(ticks) as f64 * TICK_MS / 1e3 / t.elapsed().as_secs_f64();
    let per_agent = cores_used / probe.len() as f64;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    let predicted = per_agent * n as f64;
    if predicted > MAX_IDLE_SHARE * cores && !force {
        return Err(format!(
            "{SKIPPED} {n} idle agents would use {predicted:.1} of the {cores:.0} cores by \
             themselves ({:.2}% of a core each, measured on {} idle agents), so the cycle would \
             measure the agents and starve the machine; PIHEALTH_BENCH_FORCE=1 runs it anyway",
            100.0 * per_agent,
            probe.len()
        ));
    }
    Ok(())
}

/// Start N agents with their directories under `dir`: a first batch, a
/// check of what they cost idle, then the rest.
fn start_fleet(b: &Bench, dir: &Path, n: usize, interval: Duration) -> Result<Vec<Proc>, String> {
    let collectors: String = TYPES
        .iter()
        .map(|t| {
            format!(
                "  - {{name: {t}, command: \"/bin/echo {t} 0.01 normal\", interval: {}ms}}\n",
                interval.as_millis()
            )
        })
        .collect();
    let specs: Vec<AgentSpec> = (0..n)
        .map(|i| AgentSpec {
            name: format!("f{i}"),
            ip: agents::fleet_ip(i),
            dir: dir.join(format!("a{i}")),
            key_file: &b.key_file,
            master: agents::NOWHERE.into(),
            extra: "heartbeat_interval: 1h\n".into(),
            collectors: collectors.clone(),
        })
        .collect();
    let first = n.min(PROBE_AGENTS);
    // Dropped on any error below, which stops them.
    let mut fleet = agents::start_many(&specs[..first])?;
    if first < n {
        check_idle_cost(&fleet, n, b.settings.force)?;
        fleet.extend(agents::start_many(&specs[first..])?);
    }
    Ok(fleet)
}

/// Daemon memory to compare each fleet's daemon with: one that knows no
/// agent (but has never pulled either: its workers' malloc arenas are
/// still untouched), and the smallest fleet's (which has pulled).
#[derive(Default)]
pub struct DaemonBase {
    pub empty: Option<u64>,
    pub smallest: Option<(usize, u64)>,
}

/// Everything measured for one fleet size.
struct Measured {
    n: usize,
    interval: Duration,
    start_time: Duration,
    load_before: String,
    fleet_rss: u64,
    /// Agents and master on disk.
    disk: Cycles,
    /// fsync + fdatasync calls of one more (untimed) cycle on disk, under
    /// `strace -f -c`; None without strace.
    disk_syncs: Option<u64>,
    daemon: Option<(u64, Duration)>,
    /// Agents on disk, master on tmpfs.
    master_tmpfs: Option<Cycles>,
    /// Agents and master on tmpfs.
    all_tmpfs: Option<Cycles>,
}

fn measure(b: &Bench, n: usize) -> Result<Measured, String> {
    let interval = interval_for(b, n);
    let t = Instant::now();
    let load_before = procs::loadavg();
    let dir = b.dir.join(format!("fleet-{n}"));
    let mut fleet = start_fleet(b, &dir, n, interval)?;
    let start_time = t.elapsed();
    let fleet_rss: u64 = fleet
        .iter()
        .map(|p| procs::status_kib(p.pid(), "VmRSS"))
        .sum();
    // The collectors' first runs happen at start; let them land.
    thread::sleep(Duration::from_secs(1));

    let master = master_dir(
        &dir.join("master"),
        b,
        n,
        "pull_interval: 1h\nheartbeat_interval: 1h\n",
    )?;
    let disk = run_cycles(&master, &fleet, b, interval)?;
    // After a too slow cycle, nothing more: the machine cannot carry it.
    let more = !disk.warm_only;
    let disk_syncs = if more {
        thread::sleep(interval);
        count_cycle_syncs(&master)
    } else {
        None
    };
    let daemon = if more && !b.settings.skips("daemon") {
        Some(daemon_rss(&master, n)?)
    } else {
        None
    };
    let shm = b
        .shm
        .as_ref()
        .filter(|_| more && !b.settings.skips("tmpfs"));
    let master_tmpfs = match shm {
        Some(shm) => {
            let root = master_dir(&shm.join(format!("fleet-{n}-master")), b, n, "")?;
            Some(run_cycles(&root, &fleet, b, interval)?)
        }
        None => None,
    };
    procs::stop_all(&mut fleet);
    let all_tmpfs = match shm {
        Some(shm) => {
            let mut fleet = start_fleet(b, &shm.join(format!("fleet-{n}")), n, interval)?;
            thread::sleep(Duration::from_secs(1));
            let root = master_dir(&shm.join(format!("fleet-{n}-all")), b, n, "")?;
            let cycles = run_cycles(&root, &fleet, b, interval)?;
            procs::stop_all(&mut fleet);
            Some(cycles)
        }
        None => None,
    };
    Ok(Measured {
        n,
        interval,
        start_time,
        load_before,
        fleet_rss,
        disk,
        disk_syncs,
        daemon,
        master_tmpfs,
        all_tmpfs,
    })
}

/// The flushes of one `pihealth pull` cycle in `master_dir`, counted by
/// `strace -f -c` (slowed by it, so not timed).
fn count_cycle_syncs(master_dir: &Path) -> Option<u64> {
    let out = master_dir.join("strace-cycle.txt");
    let status = Command::new("strace")
        .args([
            "-f",
            "-c",
            "-e",
            "trace=fsync,fdatasync,syncfs,sync_file_range",
        ])
        .arg("-o")
        .arg(&out)
        .arg(BIN)
        .args(["pull", "-c", "master.yaml"])
        .current_dir(master_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    // Killed by a signal: no summary to read.
    status.code()?;
    // `% time seconds usecs/call calls errors syscall` rows; sum the calls.
    let text = fs::read_to_string(&out).ok()?;
    let calls = text
        .lines()
        .filter(|l| l.trim_end().ends_with("sync") || l.contains("sync_file_range"))
        .filter(|l| !l.contains("total"))
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
        .sum();
    Some(calls)
}

/// Everything for one fleet size; rows go into `report`.
pub fn run(b: &Bench, n: usize, base: &mut DaemonBase, report: &mut Report) -> Result<(), String> {
    let m = measure(b, n)?;
    cycle_rows(b, &m, report);
    if let Some((rss, took)) = m.daemon {
        report.row(daemon_row(n, rss, took, base));
        base.smallest.get_or_insert((n, rss));
    }
    let background = match m.disk.background {
        Some(cores) => format!(
            "between cycles the fleet itself used {:.0}% of one core (agents + collector runs)",
            100.0 * cores
        ),
        None => "no pause between cycles to measure the fleet's own CPU".into(),
    };
    report.note(format!(
        "N = {n}: {n} agent processes started in {:.1} s (batches of 50; load before: {}), \
         {:.0} MiB RSS together (sum of VmRSS); collectors every {:?}; {background}.",
        m.start_time.as_secs_f64(),
        m.load_before,
        mib(m.fleet_rss),
        m.interval,
    ));
    Ok(())
}

fn cycle_rows(b: &Bench, m: &Measured, report: &mut Report) {
    let (n, cycles) = (m.n, &m.disk);
    let wall = cycles.wall();
    let (lo, hi) = cycles
        .measured
        .iter()
        .map(|c| c.wall.as_secs_f64())
        .fold((f64::MAX, 0f64), |(lo, hi), w| (lo.min(w), hi.max(w)));
    let pieces = cycles.median(|c| c.pieces as f64);
    let failed: usize = cycles.measured.iter().map(|c| c.failed).sum();
    let how_many = if cycles.warm_only {
        format!("warm-up only: over {SLOW_CYCLE:?}, the rest skipped")
    } else {
        format!("{} cycles", cycles.measured.len())
    };
    let mut row = Row::new(
        format!(
            "N = {n}: full pull cycle, `pihealth pull`, {} workers, agents and master on disk",
            b.settings.workers
        ),
        format!(
            "{wall:.3} s median ({lo:.3}–{hi:.3} s, {how_many}; {:.1} pieces/agent; {failed} failed pulls)",
            pieces / n as f64
        ),
    )
    .target(if n == 1000 {
        "≤ 1 s"
    } else {
        "(≤ 1 s at N = 1000)"
    });
    let variants: Vec<(&str, f64)> = [
        ("master on tmpfs", &m.master_tmpfs),
        ("agents and master on tmpfs", &m.all_tmpfs),
    ]
    .into_iter()
    .filter_map(|(label, c)| c.as_ref().map(|c| (label, c.wall())))
    .collect();
    if !variants.is_empty() {
        row = row
            .baseline(
                variants
                    .iter()
                    .map(|(label, w)| format!("{label}: {w:.3} s"))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
            .ratio(
                variants
                    .iter()
                    .map(|(label, w)| format!("{:.1}x ({label})", wall / w.max(1e-9)))
                    .collect::<Vec<_>>()
                    .join("; "),
            );
    }
    report.row(row);

    let conns = n as f64 + pieces;
    let agent_ms = cycles.median(|c| c.agent_ms as f64 / n as f64);
    report.row(Row::new(
        format!("N = {n}: connections per second in a cycle"),
        format!(
            "{:.0} conn/s ({n} control + {pieces:.0} data per cycle); one agent's pull {agent_ms:.1} ms on average",
            conns / wall.max(1e-9)
        ),
    ));
    if let Some(syncs) = m.disk_syncs {
        report.row(
            Row::new(
                format!("N = {n}: master fsyncs per cycle (fsync + fdatasync, strace -f -c)"),
                format!("{syncs} ({:.2} per agent)", syncs as f64 / n as f64),
            )
            .baseline(format!(
                "before issue 18: {} (6 pieces + the state per agent)",
                7 * n
            )),
        );
    }
    report.row(cpu_row(n, "agents and master on disk", cycles));
    if let Some(c) = &m.all_tmpfs {
        report.row(cpu_row(n, "agents and master on tmpfs", c));
    }
}

/// Master and agent CPU per cycle, against the CPU time the cycle had.
fn cpu_row(n: usize, place: &str, cycles: &Cycles) -> Row {
    let wall = cycles.wall();
    let master = cycles.median(|c| c.cpu_ticks as f64 * TICK_MS / 1e3);
    let peak = cycles.median(|c| c.peak_rss_kib as f64) as u64;
    let busy = cycles.median(|c| c.machine_busy);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    let agents = match cycles.agents_cpu() {
        Some(a) => format!("; agents {a:.2} s ({:.2} ms per agent)", a * 1e3 / n as f64),
        None => String::new(),
    };
    Row::new(
        format!("N = {n}: CPU per cycle, {place}"),
        format!(
            "master (`pihealth pull`) {master:.2} s ({:.2} ms per agent, peak RSS {:.1} MiB){agents}",
            master * 1e3 / n as f64,
            mib(peak)
        ),
    )
    .baseline(format!(
        "wall {wall:.3} s × {cores:.0} cores; the machine was {:.0}% busy meanwhile",
        100.0 * busy
    ))
    .ratio(format!("master {:.0}% of one core", 100.0 * master / wall.max(1e-9)))
}

fn daemon_row(n: usize, rss: u64, took: Duration, base: &DaemonBase) -> Row {
    let per_agent =
        |base_rss: u64, base_n: usize| (rss as f64 - base_rss as f64) / (n - base_n).max(1) as f64;
    let mut baselines = Vec::new();
    let mut ratios = Vec::new();
    if let Some(empty) = base.empty {
        baselines.push(format!("0 agents: {:.1} MiB", mib(empty)));
        ratios.push(format!("{:+.1} KiB/agent over 0", per_agent(empty, 0)));
    }
    if let Some((small_n, small)) = base.smallest.filter(|(small_n, _)| *small_n < n) {
        baselines.push(format!("{small_n} agents: {:.1} MiB", mib(small)));
        ratios.push(format!(
            "{:+.1} KiB/agent over {small_n}",
            per_agent(small, small_n)
        ));
    }
    Row::new(
        format!("N = {n}: master daemon RSS after pulling every agent once"),
        format!(
            "{:.1} MiB (all pulled {:.1} s after start)",
            mib(rss),
            took.as_secs_f64()
        ),
    )
    .baseline(format!("daemon with {}", baselines.join("; ")))
    .ratio(ratios.join("; "))
    .target("< 20 KiB per agent")
}
