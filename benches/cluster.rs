//! `cargo bench --bench cluster`: the figures of SPEC §9 that the core can
//! measure, each beside a baseline taken in the same run, on loopback only
//! (addresses 127.0.50.x–127.0.59.x). Prints one table at the end and
//! writes it as Markdown to `target/bench-cluster.md`.
//!
//! - collection: CPU of one cycle of the six standard scripts, and of one
//!   round of the six built-in checks beside it; an agent running the six
//!   built-ins every second: its CPU per round and RSS while collecting;
//! - one agent: pull latency (six log types with small deltas) against a
//!   raw TCP connect + round trip, agent CPU per pull, idle resident memory;
//! - bulk: a 64 MiB current log, 100 MiB each from 20 agents, and a backlog
//!   of gzip archives + current logs on one agent, against raw loopback
//!   TCP throughput and against the write + fsync throughput of the
//!   master's own directory; each with the master on disk and on tmpfs;
//! - liveness: time from `kill -9` of an agent to the master marking it down;
//! - fleets: a full pull cycle of N real agent processes × 6 types, with
//!   connections per second, master CPU and memory (see `cluster/fleet.rs`).
//!
//! Environment (all optional):
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `PIHEALTH_BENCH_N` | `10,100,1000` | fleet sizes (at most 2286) |
//! | `PIHEALTH_BENCH_CYCLES` | `3` | measured pull cycles per fleet size (after one warm-up) |
//! | `PIHEALTH_BENCH_WORKERS` | `10` | the master's `workers` (pull threads) |
//! | `PIHEALTH_BENCH_INTERVAL` | N × 40 ms, at least 2 s | fleet collector interval, also the spacing of cycles |
//! | `PIHEALTH_BENCH_BACKLOG_MIB` | `1024` | size of the archive backlog |
//! | `PIHEALTH_BENCH_BULK_AGENTS`, `PIHEALTH_BENCH_BULK_MIB` | `20`, `100` | the many-agents bulk pull (at most 20 agents) |
//! | `PIHEALTH_BENCH_DEATHS` | `5` | kill -9 rounds of the liveness figure |
//! | `PIHEALTH_BENCH_SKIP` | none | parts to leave out, comma-separated: `scripts`, `builtins`, `pull`, `idle`, `bulk`, `bulk-many`, `backlog`, `liveness`, `fleet`, `daemon`, `tmpfs` (every tmpfs comparison) |
//! | `PIHEALTH_BENCH_FORCE` | unset | `1`: start a fleet even if its idle agents alone would take over a quarter of the machine's cores (measured on its first 50 agents; otherwise that fleet is skipped) |
//! | `PIHEALTH_BENCH_QUICK` | unset | `1`: small defaults for a quick check (N = 10, 2 cycles, 64 MiB backlog, 4 × 16 MiB bulk, 2 deaths) |
//!
//! Limits: every agent is its own process (about 9 threads and 15 file
//! descriptors each), so no process needs a raised `ulimit -n`; 1000 agents
//! take about 9000 of the kernel's `pid_max` (often 32768) and a few GiB
//! of memory. The real limit is CPU: the fleet's collectors run every
//! `PIHEALTH_BENCH_INTERVAL`, and every agent wakes a few times a second
//! besides (its scheduler and uplink look at the stop flag every 500 ms;
//! before 2026-11-22 an idle agent woke 55 times a second and 1000 of them
//! took 1.5 cores). A fleet is therefore started in two steps: 50 agents,
//! their idle cost measured, and the rest only if the whole fleet would take
//! at most a quarter of the machine's cores (`PIHEALTH_BENCH_FORCE=1`
//! overrides).
//! Every loop is bounded in count and time, a fleet cycle slower than 60 s
//! is not repeated, and every child process is stopped at the end, on a
//! panic, and on Ctrl-C / SIGTERM (which also removes the temp dirs).
//! Under `cargo test` (no `--bench` argument) it only says so and exits.

#[path = "cluster/agents.rs"]
mod agents;
#[path = "cluster/builtins.rs"]
mod builtins;
#[path = "cluster/bulk.rs"]
mod bulk;
#[path = "cluster/fleet.rs"]
mod fleet;
#[path = "cluster/liveness.rs"]
mod liveness;
#[path = "cluster/procs.rs"]
mod procs;
#[path = "cluster/report.rs"]
mod report;
#[path = "cluster/scripts_cpu.rs"]
mod scripts_cpu;
#[path = "cluster/single.rs"]
mod single;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pihealth::master::pull::PullContext;
use pihealth::protocol::Key;

use report::{Report, Row};

pub const TYPES: [&str; 6] = ["cpu", "mem", "disk", "proc", "users", "sysinfo"];
/// A phase's error that starts with this is a deliberate skip, not a failure.
pub const SKIPPED: &str = "skipped:";

const PARTS: [&str; 11] = [
    "scripts",
    "builtins",
    "pull",
    "idle",
    "bulk",
    "bulk-many",
    "backlog",
    "liveness",
    "fleet",
    "daemon",
    "tmpfs",
];

/// What to run and how big, from the environment (see the module docs).
pub struct Settings {
    pub fleet_sizes: Vec<usize>,
    pub cycles: usize,
    pub workers: usize,
    pub interval: Option<Duration>,
    pub backlog_mib: u64,
    pub bulk_agents: usize,
    pub bulk_agent_mib: u64,
    pub deaths: usize,
    pub script_cycles: usize,
    /// Start fleets even when their idle agents alone would load the machine.
    pub force: bool,
    skip: Vec<String>,
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match env_var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?}: expected a whole number")),
    }
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let quick = env_var("PIHEALTH_BENCH_QUICK").is_some_and(|v| v != "0");
        let sizes = env_var("PIHEALTH_BENCH_N")
            .unwrap_or_else(|| if quick { "10" } else { "10,100,1000" }.into());
        let fleet_sizes = sizes
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| match s.trim().parse::<usize>() {
                Ok(n) if (1..=agents::MAX_FLEET).contains(&n) => Ok(n),
                _ => Err(format!(
                    "PIHEALTH_BENCH_N: {s:?} is not a fleet size from 1 to {}",
                    agents::MAX_FLEET
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let interval = match env_var("PIHEALTH_BENCH_INTERVAL") {
            None => None,
            Some(v) => Some(
                humantime::parse_duration(v.trim())
                    .map_err(|e| format!("PIHEALTH_BENCH_INTERVAL={v:?}: {e}"))?,
            ),
        };
        let skip: Vec<String> = env_var("PIHEALTH_BENCH_SKIP")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = skip.iter().find(|s| !PARTS.contains(&s.as_str())) {
            return Err(format!(
                "PIHEALTH_BENCH_SKIP: unknown part {bad:?}; parts: {}",
                PARTS.join(", ")
            ));
        }
        // The full default, or the small one of a quick run.
        fn pick<T>(quick: bool, full: T, small: T) -> T {
            if quick {
                small
            } else {
                full
            }
        }
        Ok(Settings {
            fleet_sizes,
            cycles: env_number("PIHEALTH_BENCH_CYCLES", pick(quick, 3, 2))?.max(1),
            workers: env_number("PIHEALTH_BENCH_WORKERS", 10)?.clamp(1, 1024),
            interval,
            backlog_mib: env_number("PIHEALTH_BENCH_BACKLOG_MIB", pick(quick, 1024, 64))?.max(1),
            bulk_agents: env_number("PIHEALTH_BENCH_BULK_AGENTS", pick(quick, 20, 4))?.clamp(1, 20),
            bulk_agent_mib: env_number("PIHEALTH_BENCH_BULK_MIB", pick(quick, 100, 16))?.max(1),
            deaths: env_number("PIHEALTH_BENCH_DEATHS", pick(quick, 5, 2))?.max(1),
            script_cycles: pick(quick, 5, 2),
            force: env_var("PIHEALTH_BENCH_FORCE").is_some_and(|v| v != "0"),
            skip,
        })
    }

    pub fn skips(&self, part: &str) -> bool {
        self.skip.iter().any(|s| s == part)
    }
}

/// What every phase shares: a temp dir, the key, the settings.
pub struct Bench {
    pub dir: PathBuf,
    /// A directory on tmpfs for masters that should not pay for fsync,
    /// if /dev/shm is there.
    pub shm: Option<PathBuf>,
    pub key_file: PathBuf,
    pub key: Key,
    pub settings: Settings,
}

impl Bench {
    /// The master's pull code, storing under `root/log` and `root/logbackup`.
    pub fn pull_context(&self, root: &Path, rotate_size: u64) -> PullContext {
        PullContext {
            credentials: pihealth::protocol::Credentials::Fleet {
                keys: vec![self.key.clone()],
                revoked: Vec::new(),
            },
            key_memory: Default::default(),
            log_root: root.join("log"),
            backup_root: root.join("logbackup"),
            rotate_size,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(30),
            progress: None,
        }
    }
}

/// Run one part unless skipped; a failure or panic becomes a row saying
/// so, and the other parts still run.
fn phase(
    b: &Bench,
    report: &mut Report,
    part: &str,
    what: &str,
    f: impl FnOnce(&mut Report) -> Result<(), String>,
) {
    if b.settings.skips(part) {
        return;
    }
    eprintln!("cluster bench: {what} (load {})", procs::loadavg());
    let t = Instant::now();
    match catch_unwind(AssertUnwindSafe(|| f(report))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.starts_with(SKIPPED) => report.row(Row::new(what, e)),
        Ok(Err(e)) => report.row(Row::failed(what, &e)),
        Err(_) => report.row(Row::failed(what, "panicked (see stderr)")),
    }
    eprintln!("cluster bench:   took {:.1} s", t.elapsed().as_secs_f64());
}

fn machine_note() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "Machine: {} cores, Linux {}, {} processes, load {} at the start. Agents and masters are \
         the release binary `{}`.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim(),
        procs::process_count(),
        procs::loadavg(),
        agents::BIN
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster bench: skipped (run `cargo bench --bench cluster`)");
        return;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cluster bench: {e}");
            std::process::exit(2);
        }
    };
    procs::install_interrupt_handler();
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("pihealth-bench-")
        .tempdir()
        .expect("temp dir");
    let shm = tempfile::Builder::new()
        .prefix("pihealth-bench-")
        .tempdir_in("/dev/shm")
        .ok();
    procs::remove_on_interrupt(dir.path());
    if let Some(d) = &shm {
        procs::remove_on_interrupt(d.path());
    }
    let key_file = dir.path().join("pihealth.key");
    pihealth::cli::keygen(&key_file, false).expect("keygen");
    let bench = Bench {
        dir: dir.path().to_path_buf(),
        shm: shm.as_ref().map(|d| d.path().to_path_buf()),
        key: Key::load(&key_file).expect("key"),
        key_file,
        settings,
    };
    let b = &bench;
    let mut report = Report::default();
    report.note(machine_note());
    if b.shm.is_none() {
        report.note("No /dev/shm: the tmpfs comparisons are left out.");
    }

    // First, while this process has no other children: the scripts' CPU is
    // read from our own cutime, which any other reaped child would spoil.
    phase(
        b,
        &mut report,
        "scripts",
        "collection cycle of the six scripts",
        |r| scripts_cpu::run(b, r),
    );
    phase(
        b,
        &mut report,
        "builtins",
        "agent collecting with the six built-ins",
        |r| builtins::agent(b, r),
    );
    phase(b, &mut report, "pull", "pull of one agent", |r| {
        single::pull_latency(b, r)
    });
    phase(b, &mut report, "idle", "agent idle RSS", |r| {
        single::idle_rss(b, r)
    });
    phase(b, &mut report, "bulk", "bulk pull of 64 MiB", |r| {
        bulk::one_current_log(b, r)
    });
    phase(
        b,
        &mut report,
        "bulk-many",
        "bulk pull from many agents",
        |r| bulk::many_agents(b, r),
    );
    phase(b, &mut report, "backlog", "archive backlog pull", |r| {
        bulk::archive_backlog(b, r)
    });
    phase(b, &mut report, "liveness", "agent death to down", |r| {
        liveness::run(b, r)
    });
    if !b.settings.skips("fleet") {
        let mut base = fleet::DaemonBase::default();
        if !b.settings.skips("daemon") {
            phase(
                b,
                &mut report,
                "daemon",
                "master daemon with no agents",
                |_| {
                    base.empty = Some(fleet::empty_daemon_rss(b)?);
                    Ok(())
                },
            );
        }
        // Smallest first: its daemon is the base of the larger ones' growth.
        let mut sizes = b.settings.fleet_sizes.clone();
        sizes.sort_unstable();
        for n in sizes {
            let what = format!("N = {n}: fleet pull cycle");
            phase(b, &mut report, "fleet", &what, |r| {
                fleet::run(b, n, &mut base, r)
            });
        }
        report.note(format!(
            "Fleet cycles: one `pihealth pull -c master.yaml` process per cycle (workers {}), timed \
             from spawn to exit; its CPU from our cutime + cstime across its wait, its peak RSS from \
             VmHWM while it runs. Connections: 1 control per agent + 1 data per piece fetched. \
             Fleet agents: six collectors each running `/bin/echo` (no shell). Agents' CPU per \
             cycle: their CPU during it less their rate between cycles, in 10 ms ticks (coarse for \
             N = 10). The daemon's RSS is `pihealth master` on the same directory with \
             pull_interval 1h, read once the registry shows every agent pulled; a daemon whose \
             workers have pulled holds about 1 MiB more (malloc arenas) than one whose workers \
             never ran, so growth per agent over 0 means little below N = 100.",
            b.settings.workers
        ));
    }
    report.note(format!(
        "Bench took {:.0} s; load {} at the end.",
        started.elapsed().as_secs_f64(),
        procs::loadavg()
    ));

    let markdown = report.markdown();
    println!();
    print!("{markdown}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-cluster.md");
    let written = out
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(&out, &markdown));
    match written {
        Ok(()) => println!("\n(written to {})", out.display()),
        Err(e) => eprintln!("cluster bench: cannot write {}: {e}", out.display()),
    }
}
