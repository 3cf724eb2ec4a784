//! Bulk backlogs: how fast a big backlog drains, beside raw loopback TCP.
//!
//! Every case runs with the master's directories on disk (the bench's temp
//! dir) and on tmpfs (/dev/shm), because the master fsyncs what it stores
//! and this disk's write bandwidth, not the protocol, can be the limit.
//! The agents' data is made once and hard-linked into a fresh agent
//! directory per pass: an agent only ever replaces or unlinks its files
//! (never rewrites them in place), so the other link keeps the original.
//!
//! A second baseline, also measured in the same run: the storage's own
//! sequential write + fsync throughput in the very directory the master
//! writes to (256 MiB in 1 MiB blocks, then one fsync; the file is deleted
//! after). A pull receives, writes and fsyncs, so it can be no faster than
//! the slower of raw TCP and that; each row also gives the pull's rate as
//! a share of that minimum.
//!
//! Besides MB/s, each pass counts the CPU it cost (this process, where the
//! master's pull code runs, plus the agents) per GB on the wire, against
//! the same for raw TCP: on a machine busy with other work, throughput
//! moves with the load, CPU per byte much less.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pihealth::agent::logstore::LogStore;
use pihealth::master::pull::{pull_agent, PullReport};
use threadpool::ThreadPool;

use super::agents::{self, AgentSpec};
use super::procs;
use super::report::{Report, Row};
use super::single::{raw_rate, RawRate};
use super::{Bench, TYPES};

/// The agents' and master's rotation size in the archive backlog (the default).
const ROTATE: u64 = 8 << 20;
/// Size of each record appended to the log store when building a backlog.
const RECORD: usize = 1 << 20;
/// Pulls per place of the single-agent cases (the median is reported).
const ROUNDS: usize = 3;

/// Log lines shaped like cpu.sh's, values drifting slowly as real ones do,
/// so that they compress about as well as real logs.
fn log_text(bytes: usize, seed: u64) -> Vec<u8> {
    let mut text = String::with_capacity(bytes + 128);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        // xorshift64: cheap, deterministic noise.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut load, mut usage, mut temp) = (40i64, 3000i64, 5000i64);
    let mut t = 1_795_000_000 + (seed as i64 % 1_000_000) * 10;
    while text.len() < bytes {
        let r = next();
        load = (load + (r % 7) as i64 - 3).clamp(0, 400);
        usage = (usage + ((r >> 8) % 401) as i64 - 200).clamp(0, 10_000);
        temp = (temp + ((r >> 20) % 21) as i64 - 10).clamp(3000, 8000);
        let when = chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
        let _ = writeln!(
            text,
            "{} {}.{:02} {}.{:02} {}.{:02} {}.{:02} {}.{:02} normal",
            when.format("%Y-%m-%dT%H:%M:%S+00:00"),
            load / 100,
            load % 100,
            load / 100,
            (load + 3) % 100,
            load / 100,
            (load + 7) % 100,
            usage / 100,
            usage % 100,
            temp / 100,
            temp % 100
        );
        t += 10;
    }
    text.into_bytes()
}

/// Hard-link every file under `from` into the same place under `to`.
fn link_tree(from: &Path, to: &Path) -> Result<(), String> {
    fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            link_tree(&src, &dst)?;
        } else {
            fs::hard_link(&src, &dst)
                .or_else(|_| fs::copy(&src, &dst).map(|_| ()))
                .map_err(|e| format!("{} -> {}: {e}", src.display(), dst.display()))?;
        }
    }
    Ok(())
}

/// Where the master's directories go in each pass.
fn places(b: &Bench) -> Vec<(&'static str, PathBuf)> {
    let mut out = vec![("disk", b.dir.join("masters"))];
    if let Some(shm) = b.shm.as_ref().filter(|_| !b.settings.skips("tmpfs")) {
        out.push(("tmpfs", shm.clone()));
    }
    out
}

fn bulk_agent(
    b: &Bench,
    name: String,
    last: u8,
    dir: PathBuf,
    rotate: u64,
    backlog: u64,
) -> AgentSpec<'_> {
    AgentSpec {
        name,
        ip: agents::single_ip(last),
        dir,
        key_file: &b.key_file,
        master: agents::NOWHERE.into(),
        extra: format!(
            "heartbeat_interval: 1h\nrotate_size: {rotate}\nmax_backlog: {backlog}\nio_timeout: 60s\n"
        ),
        collectors: String::new(),
    }
}

/// Give the agent of `dir` the current log `source` as its own `bulk`
/// type: an agent takes only the logs it has a state for (a `TYPE.log` it
/// did not write is refused), so the state is written first, by the log
/// store itself, and the log linked into place after.
fn place_current_log(dir: &Path, source: &Path) -> Result<(), String> {
    let log = dir.join("log");
    LogStore::open(
        &log,
        &dir.join("logbackup"),
        1 << 40,
        1 << 40,
        &["bulk".to_string()],
    )
    .map_err(|e| format!("{}: {e}", log.display()))?;
    fs::hard_link(source, log.join("bulk.log")).map_err(|e| e.to_string())
}

/// The disk baseline: bytes written in 1 MiB blocks, then one fsync.
const DISK_RATE_BYTES: usize = 256 << 20;
const DISK_RATE_BLOCK: usize = 1 << 20;

/// Sequential write + fsync throughput of the storage under `dir`.
struct DiskRate {
    write: Duration,
    sync: Duration,
}

impl DiskRate {
    fn mbps(&self) -> f64 {
        DISK_RATE_BYTES as f64 / (self.write + self.sync).as_secs_f64().max(1e-9) / 1e6
    }
}

/// Write `DISK_RATE_BYTES` to a new file in `dir` in `DISK_RATE_BLOCK`
/// blocks, then `fdatasync` it (as the master does a stored piece), timing
/// both; the file is removed after.
fn disk_rate(dir: &Path) -> Result<DiskRate, String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("disk-rate.tmp");
    let mut block = log_text(DISK_RATE_BLOCK, 3);
    block.truncate(DISK_RATE_BLOCK);
    let measured = (|| {
        let t = Instant::now();
        let mut file = fs::File::create(&path)?;
        for _ in 0..DISK_RATE_BYTES / DISK_RATE_BLOCK {
            file.write_all(&block)?;
        }
        let write = t.elapsed();
        file.sync_data()?;
        Ok(DiskRate {
            write,
            sync: t.elapsed() - write,
        })
    })();
    let _ = fs::remove_file(&path);
    measured.map_err(|e: std::io::Error| format!("{}: {e}", path.display()))
}

/// What one pass moved and what it cost.
struct Pass {
    /// Bytes on the wire (archives travel compressed).
    wire: u64,
    /// Log bytes stored.
    log: u64,
    elapsed: Duration,
    /// CPU seconds of the master side (this process) and of the agents.
    master_cpu: f64,
    agents_cpu: f64,
}

impl Pass {
    fn mbps(&self) -> f64 {
        self.wire as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }

    fn log_mbps(&self) -> f64 {
        self.log as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }

    fn cpu_per_gb(&self) -> f64 {
        (self.master_cpu + self.agents_cpu) / (self.wire as f64 / 1e9).max(1e-9)
    }
}

/// Start the agents, pull them all `workers` at a time with the master's
/// pull code in this process, stop them.
fn pull_pass(
    b: &Bench,
    specs: &[AgentSpec],
    master_root: &Path,
    rotate: u64,
    workers: usize,
) -> Result<Pass, String> {
    let mut fleet = agents::start_many(specs)?;
    let ctx = b.pull_context(master_root, rotate);
    let pool = ThreadPool::new(workers);
    let agent_ticks =
        |fleet: &[procs::Proc]| -> u64 { fleet.iter().map(|p| procs::cpu_ticks(p.pid())).sum() };
    let (agents_before, master_before) = (agent_ticks(&fleet), procs::own_ticks());
    let (tx, rx) = crossbeam::channel::unbounded();
    let t = Instant::now();
    for spec in specs {
        let (ctx, tx, control) = (ctx.clone(), tx.clone(), agents::control_addr(spec.ip));
        pool.execute(move || {
            let _ = tx.send(pull_agent(&ctx, control, None).map_err(|e| e.to_string()));
        });
    }
    drop(tx);
    let results: Vec<Result<PullReport, String>> = rx.iter().collect();
    let elapsed = t.elapsed();
    let (agents_after, master_after) = (agent_ticks(&fleet), procs::own_ticks());
    procs::stop_all(&mut fleet);
    let reports = results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a bulk pull failed: {e}"))?;
    if reports.iter().any(|r| r.bytes == 0) {
        // A figure of 0 MB/s would be a broken set-up, not a measurement.
        return Err("an agent offered nothing: no transfer to measure".into());
    }
    let seconds = |ticks: u64| ticks as f64 * procs::TICK_MS / 1e3;
    Ok(Pass {
        wire: reports.iter().map(|r| r.wire_bytes).sum(),
        log: reports.iter().map(|r| r.bytes).sum(),
        elapsed,
        master_cpu: seconds(master_after.saturating_sub(master_before)),
        agents_cpu: seconds(agents_after.saturating_sub(agents_before)),
    })
}

/// One place's result of a case: the median pass and the storage's own
/// write + fsync rate there, measured just before the passes.
struct PlaceResult {
    place: &'static str,
    pass: Pass,
    disk: DiskRate,
}

/// The median pass (by throughput) of `rounds` for each place. `prepare`
/// makes the agents of one round: (place, round) -> specs, each in a
/// fresh directory; those directories and the master's are removed after.
fn run_case<'b>(
    b: &'b Bench,
    name: &str,
    rounds: usize,
    rotate: u64,
    workers: usize,
    prepare: impl Fn(usize, &str, usize) -> Result<Vec<AgentSpec<'b>>, String>,
) -> Result<Vec<PlaceResult>, String> {
    let mut out = Vec::new();
    for (index, (place, root)) in places(b).into_iter().enumerate() {
        let disk = disk_rate(&root)?;
        let mut passes = Vec::new();
        for round in 0..rounds {
            let specs = prepare(index, place, round)?;
            let master = root.join(format!("{name}-{round}"));
            let pass = pull_pass(b, &specs, &master, rotate, workers);
            // Gigabytes, some of them in RAM on tmpfs: gone before the next.
            for dir in specs.iter().map(|s| &s.dir).chain([&master]) {
                let _ = fs::remove_dir_all(dir);
            }
            passes.push(pass?);
        }
        passes.sort_by(|a, b| a.mbps().total_cmp(&b.mbps()));
        let pass = passes.swap_remove(passes.len() / 2);
        out.push(PlaceResult { place, pass, disk });
    }
    Ok(out)
}

/// One row: each place's MB/s and CPU per GB against raw TCP's, and MB/s
/// against the slower of raw TCP and the place's write + fsync.
fn case_row(figure: String, results: &[PlaceResult], raw: &RawRate, detail: String) -> Row {
    let value = results
        .iter()
        .map(|PlaceResult { place, pass: p, .. }| {
            format!(
                "{:.0} MB/s, {:.1} s CPU/GB (master {:.2} s + agents {:.2} s) ({place} master)",
                p.mbps(),
                p.cpu_per_gb(),
                p.master_cpu,
                p.agents_cpu
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let ratio = results
        .iter()
        .map(
            |PlaceResult {
                 place,
                 pass: p,
                 disk,
             }| {
                format!(
                    "{:.0}%, CPU/GB {:.1}x raw; {:.0}% of min(raw, write + fsync) ({place})",
                    100.0 * p.mbps() / raw.mbps,
                    p.cpu_per_gb() / raw.cpu_per_gb.max(1e-9),
                    100.0 * p.mbps() / raw.mbps.min(disk.mbps()).max(1e-9)
                )
            },
        )
        .collect::<Vec<_>>()
        .join("; ");
    let disks = results
        .iter()
        .map(|PlaceResult { place, disk, .. }| {
            format!(
                "{:.0} MB/s on {place} (write {:.2} s + fsync {:.2} s)",
                disk.mbps(),
                disk.write.as_secs_f64(),
                disk.sync.as_secs_f64()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Row::new(figure, format!("{value}{detail}"))
        .baseline(format!(
            "raw loopback TCP, {} stream(s): {:.0} MB/s, {:.2} s CPU/GB; write + fsync of {} MiB \
             in the master's directory: {disks}",
            raw.streams,
            raw.mbps,
            raw.cpu_per_gb,
            DISK_RATE_BYTES >> 20
        ))
        .ratio(ratio)
        .target("≥ 50%")
}

/// Raw TCP over at least 256 MiB per stream: enough CPU ticks to count.
fn raw_for(bytes_per_stream: usize, streams: usize) -> RawRate {
    raw_rate(bytes_per_stream.max(256 << 20), streams)
}

/// The original figure: one 64 MiB current log, pulled in-process.
pub fn one_current_log(b: &Bench, report: &mut Report) -> Result<(), String> {
    let size: usize = 64 << 20;
    let source = b.dir.join("bulk64.log");
    fs::write(&source, log_text(size, 1)).map_err(|e| e.to_string())?;
    let passes = run_case(b, "bulk64", ROUNDS, 512 << 20, 1, |index, place, round| {
        let dir = b.dir.join(format!("bulk64-{place}-{round}"));
        fs::create_dir_all(dir.join("log")).map_err(|e| e.to_string())?;
        place_current_log(&dir, &source)?;
        let name = format!("bulk64-{place}");
        Ok(vec![bulk_agent(
            b,
            name,
            4 + index as u8,
            dir,
            512 << 20,
            1 << 30,
        )])
    })?;
    let _ = fs::remove_file(&source);
    let raw = raw_for(size, 1);
    report.row(case_row(
        format!("bulk pull of 64 MiB (one current log, one agent; median of {ROUNDS})"),
        &passes,
        &raw,
        String::new(),
    ));
    Ok(())
}

/// Many agents with a big current log each, pulled `workers` at a time
/// in-process (as the master's pool does).
pub fn many_agents(b: &Bench, report: &mut Report) -> Result<(), String> {
    let count = b.settings.bulk_agents.min(20);
    let each: usize = (b.settings.bulk_agent_mib as usize) << 20;
    let workers = b.settings.workers.min(count).max(1);
    let source = b.dir.join("bulk-each.log");
    fs::write(&source, log_text(each, 2)).map_err(|e| e.to_string())?;
    let passes = run_case(b, "bulk-many", 1, 512 << 20, workers, |index, place, _| {
        (0..count)
            .map(|i| {
                let dir = b.dir.join(format!("bulk-{place}-{i}"));
                fs::create_dir_all(dir.join("log")).map_err(|e| e.to_string())?;
                place_current_log(&dir, &source)?;
                let last = 10 + (index * 20 + i) as u8;
                let name = format!("bulk-{place}-{i}");
                Ok(bulk_agent(b, name, last, dir, 1 << 30, 2 << 30))
            })
            .collect()
    })?;
    let _ = fs::remove_file(&source);
    let raw = raw_for(each, workers);
    let took = passes
        .iter()
        .map(|r| format!("{:.1} s on {}", r.pass.elapsed.as_secs_f64(), r.place))
        .collect::<Vec<_>>()
        .join(", ");
    report.row(case_row(
        format!(
            "bulk pull of {} MiB each from {count} agents, {workers} at once",
            b.settings.bulk_agent_mib
        ),
        &passes,
        &raw,
        format!("; {took}"),
    ));
    Ok(())
}

/// Fill an agent's log store through `LogStore` itself, round-robin over
/// the six types in 1 MiB records, so that it rotates into gzip archives
/// exactly as a running agent would. Returns the number of archives.
fn build_backlog(log_dir: &Path, backup_dir: &Path, bytes: u64) -> Result<usize, String> {
    let types: Vec<String> = TYPES.iter().map(|t| t.to_string()).collect();
    let store = LogStore::open(log_dir, backup_dir, ROTATE, bytes * 2, &types)
        .map_err(|e| format!("log store: {e}"))?;
    let mut written = 0u64;
    let mut k = 0u64;
    while written < bytes {
        let record = log_text(RECORD, 100 + k);
        let dropped = store
            .append(TYPES[k as usize % TYPES.len()], &record)
            .map_err(|e| format!("append: {e}"))?;
        if !dropped.is_empty() {
            return Err("the log store dropped archives (max_backlog)".into());
        }
        written += record.len() as u64;
        k += 1;
    }
    Ok(fs::read_dir(backup_dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log.gz"))
        .count())
}

/// A backlog of rotated archives and current logs on one agent.
pub fn archive_backlog(b: &Bench, report: &mut Report) -> Result<(), String> {
    let bytes = b.settings.backlog_mib << 20;
    let source = b.dir.join("backlog-source");
    let t = Instant::now();
    let archives = build_backlog(&source.join("log"), &source.join("logbackup"), bytes)?;
    let build = t.elapsed();
    let passes = run_case(b, "backlog", ROUNDS, ROTATE, 1, |index, place, round| {
        let dir = b.dir.join(format!("backlog-{place}-{round}"));
        link_tree(&source, &dir)?;
        let name = format!("backlog-{place}");
        Ok(vec![bulk_agent(
            b,
            name,
            6 + index as u8,
            dir,
            ROTATE,
            bytes * 2,
        )])
    })?;
    let _ = fs::remove_dir_all(&source);
    let raw = raw_for((bytes as usize).min(1 << 30), 1);
    let detail = passes
        .iter()
        .map(|r| {
            format!(
                "{}: {:.1} s, {:.0} MB/s of log",
                r.place,
                r.pass.elapsed.as_secs_f64(),
                r.pass.log_mbps()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    report.row(case_row(
        format!(
            "backlog of {} MiB of log on one agent: {archives} gzip archives + 6 current logs \
             (median of {ROUNDS})",
            b.settings.backlog_mib
        ),
        &passes,
        &raw,
        format!("; {detail}"),
    ));
    report.note(format!(
        "Backlog: built through `pihealth::agent::logstore::LogStore` (rotate_size 8 MiB, as an agent \
         rotates, gzip included) in {:.1} s, then served by a real agent; MB/s counts the bytes on the \
         wire (archives travel compressed); \"MB/s of log\" counts the log bytes they hold. \
         Size: PIHEALTH_BENCH_BACKLOG_MIB.",
        build.as_secs_f64()
    ));
    Ok(())
}
