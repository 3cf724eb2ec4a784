//! The checks built into the agent: the six standard ones (cpu, mem, disk,
//! proc, users and sysinfo), read straight from `/proc`, `/sys`, `statvfs`
//! and utmp with no process started; and three without a script (net,
//! diskio, throttle: see their files).
//!
//! Why: one round of the six scripts in `scripts/` starts up to 17
//! processes (bash, ps, awk, df …), far beyond the 1 ms and 6 MiB that
//! SPEC §9 allows.
//! The scripts stay the reference: every check here prints **exactly** the
//! lines and levels of its script (same fields, decimals, `-` and `_`, same
//! level rules and `PIHEALTH_*` thresholds), so the archive keeps one
//! format and a collector can switch between the two in the config.
//!
//! Layout: one small file per check, each a pure-ish function of a
//! [`Context`] (where to read, which thresholds) plus the little state it
//! keeps between runs (cpu: the previous `/proc/stat` sample; mem: the
//! dynamic average; proc: the previous run's look). [`Executor`] runs checks
//! on one worker thread so that a run is bounded like a script's: a check
//! stuck in the kernel (a hung `statvfs`) becomes an `unknown` line at its
//! timeout and the worker is replaced; a panic becomes an `unknown` line.
//!
//! Every path goes through [`Roots`], so tests point the checks at fixture
//! trees.

mod cpu;
mod disk;
mod diskio;
mod error;
mod mem;
mod net;
mod proc;
mod sysinfo;
mod throttle;
mod users;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use crossbeam::channel::{Receiver, Sender, TryRecvError};

use crate::agent::collector::Outcome;
use crate::level::Level;

use crate::config::Builtin;
pub(crate) use disk::{FsProbe, LiveFs};
pub use error::{CheckError, LimitError};

/// Where the checks read. The defaults are the real system; tests point
/// them at fixture trees.
#[derive(Debug, Clone)]
pub struct Roots {
    /// `/proc`: loadavg, stat, meminfo, uptime, sys/kernel/*, self/mountinfo, PID/stat.
    pub proc: PathBuf,
    /// `/sys`: class/thermal/thermal_zone*/temp.
    pub sys: PathBuf,
    /// `/etc`: passwd, group, os-release (and `../usr/lib/os-release`).
    pub etc: PathBuf,
    /// The utmp file `who` reads.
    pub utmp: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
            etc: PathBuf::from("/etc"),
            utmp: PathBuf::from("/var/run/utmp"),
        }
    }
}

/// The scripts' numeric knobs, from the same `PIHEALTH_*` variables the
/// agent hands the scripts (its config's `thresholds`), so one source feeds
/// both and a built-in sees exactly what its script would. A bad value is
/// an error of the checks that use it, as it is for the scripts.
#[derive(Debug, Clone)]
pub struct Limits {
    values: Vec<(&'static str, Result<f64, LimitError>)>,
}

impl Limits {
    const DEFAULTS: [(&'static str, &'static str); 13] = [
        ("PIHEALTH_CPU_NOTE", "70"),
        ("PIHEALTH_CPU_WARNING", "80"),
        ("PIHEALTH_CPU_CRITICAL", "95"),
        ("PIHEALTH_MEM_NOTE", "70"),
        ("PIHEALTH_MEM_WARNING", "80"),
        ("PIHEALTH_MEM_CRITICAL", "90"),
        ("PIHEALTH_DISK_NOTE", "80"),
        ("PIHEALTH_DISK_WARNING", "90"),
        ("PIHEALTH_DISK_CRITICAL", "95"),
        ("PIHEALTH_TEMP_NOTE", "50"),
        ("PIHEALTH_TEMP_WARNING", "70"),
        ("PIHEALTH_TEMP_CRITICAL", "80"),
        ("PIHEALTH_PROC_THRESHOLD", "50"),
    ];

    /// Each value from `env` if there, else from the process environment
    /// (which the scripts inherit too), else the scripts' default.
    pub fn from_env(env: &[(String, String)]) -> Limits {
        let values = Self::DEFAULTS
            .iter()
            .map(|&(key, default)| {
                let value = env
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
                    .or_else(|| std::env::var(key).ok())
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| default.to_string());
                (key, parse_number(key, &value))
            })
            .collect();
        Limits { values }
    }

    /// The scripts' defaults.
    pub fn defaults() -> Limits {
        Limits {
            values: Self::DEFAULTS
                .iter()
                .map(|&(key, v)| (key, parse_number(key, v)))
                .collect(),
        }
    }

    /// A threshold by its variable's name, if known and valid (to label
    /// alarm messages).
    pub fn lookup(&self, key: &str) -> Option<f64> {
        self.get(key).ok()
    }

    fn get(&self, key: &str) -> Result<f64, LimitError> {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| Err(LimitError::Missing(key.to_string())))
    }
}

/// common.sh's `number`: a non-negative decimal like `70` or `2.5`.
fn parse_number(key: &'static str, value: &str) -> Result<f64, LimitError> {
    let (int, frac) = match value.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (value, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(int) && frac.is_none_or(digits) {
        if let Ok(v) = value.parse::<f64>() {
            return Ok(v);
        }
    }
    Err(LimitError::NotANumber {
        key,
        value: value.to_string(),
    })
}

/// Everything a check reads from.
pub struct Context {
    pub(crate) roots: Roots,
    pub(crate) limits: Limits,
    /// `stat` and `statvfs` of mount points (disk, sysinfo); the real ones
    /// by default, a fake in tests.
    pub(crate) fs: Box<dyn FsProbe>,
    /// What disk and mem found last, for sysinfo in the same round.
    recent: Mutex<Recent>,
    /// The mount points, while the mount table stays the same (disk).
    mount_table: disk::MountTable,
}

/// sysinfo.sh runs disk.sh and reads meminfo again; when the disk and mem
/// checks ran less than [`SHARE_FOR`] ago (the same round: collectors
/// start together on their grids), sysinfo takes their figures instead of
/// reading everything a second time.
#[derive(Default)]
struct Recent {
    disk: Option<(Instant, disk::DiskTotal)>,
    mem: Option<(Instant, MemUsage)>,
    /// The list of /proc, for proc and users in the same round (listing
    /// /proc is one of the dearest reads of a round).
    pids: Option<(Instant, Arc<Vec<PidEntry>>)>,
}

/// One `/proc/PID` directory: the pid and the directory's inode number
/// (from readdir, no stat): another number under the same pid is another
/// process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PidEntry {
    pub(crate) pid: u32,
    pub(crate) ino: u64,
}

const SHARE_FOR: Duration = Duration::from_secs(1);

impl Context {
    pub fn new(roots: Roots, limits: Limits) -> Context {
        Context {
            roots,
            limits,
            fs: Box::new(LiveFs),
            recent: Mutex::new(Recent::default()),
            mount_table: disk::MountTable::default(),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // A panic while holding it left plain data behind: still usable.
        crate::sync::lock(&self.recent)
    }

    fn remember_disk(&self, total: disk::DiskTotal) {
        self.recent().disk = Some((Instant::now(), total));
    }

    fn recent_disk(&self) -> Option<disk::DiskTotal> {
        let r = self.recent();
        let (at, total) = r.disk.as_ref()?;
        (at.elapsed() < SHARE_FOR).then(|| total.clone())
    }

    fn remember_mem(&self, m: &MemUsage) {
        self.recent().mem = Some((Instant::now(), m.clone()));
    }

    fn recent_mem(&self) -> Option<MemUsage> {
        let r = self.recent();
        let (at, m) = r.mem.as_ref()?;
        (at.elapsed() < SHARE_FOR).then(|| m.clone())
    }

    /// The processes in `/proc` (listed at most [`SHARE_FOR`] ago).
    fn pid_entries(&self) -> Result<Arc<Vec<PidEntry>>, CheckError> {
        if let Some((at, pids)) = &self.recent().pids {
            if at.elapsed() < SHARE_FOR {
                return Ok(pids.clone());
            }
        }
        use std::os::unix::fs::DirEntryExt;
        let dir = std::fs::read_dir(&self.roots.proc)
            .map_err(|e| CheckError::read(&self.roots.proc, e))?;
        let pids: Vec<PidEntry> = dir
            .flatten()
            .filter_map(|e| {
                let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some(PidEntry { pid, ino: e.ino() })
            })
            .collect();
        let pids = Arc::new(pids);
        self.recent().pids = Some((Instant::now(), pids.clone()));
        Ok(pids)
    }

    fn proc_path(&self, rel: &str) -> PathBuf {
        self.roots.proc.join(rel)
    }
}

/// One check with the state it keeps between runs.
pub struct Check(State);

enum State {
    Cpu(cpu::Cpu),
    Mem(mem::Mem),
    Disk,
    Proc(proc::Proc),
    Users(users::Users),
    Sysinfo,
    Net(net::Net),
    Diskio,
    Throttle,
}

impl Check {
    pub fn new(kind: Builtin) -> Check {
        Check(match kind {
            Builtin::Cpu => State::Cpu(cpu::Cpu::default()),
            Builtin::Mem => State::Mem(mem::Mem::default()),
            Builtin::Disk => State::Disk,
            Builtin::Proc => State::Proc(proc::Proc::default()),
            Builtin::Users => State::Users(users::Users::default()),
            Builtin::Sysinfo => State::Sysinfo,
            Builtin::Net => State::Net(net::Net::default()),
            Builtin::Diskio => State::Diskio,
            Builtin::Throttle => State::Throttle,
        })
    }

    /// One run: the script's output lines, or why it failed (the script's
    /// message on stderr).
    pub fn run(&mut self, ctx: &Context) -> Result<Vec<String>, CheckError> {
        match &mut self.0 {
            State::Cpu(c) => c.run(ctx).map(|l| vec![l]),
            State::Mem(m) => m.run(ctx).map(|l| vec![l]),
            State::Disk => disk::run(ctx),
            State::Proc(p) => p.run(ctx),
            State::Users(u) => u.run(ctx).map(|l| vec![l]),
            State::Sysinfo => sysinfo::run(ctx).map(|l| vec![l]),
            State::Net(n) => n.run(ctx),
            State::Diskio => diskio::run(ctx),
            State::Throttle => throttle::run(ctx),
        }
    }
}

/// The outcome the agent logs for a run's result, as for a `lines` script:
/// the worst trailing level; a failure is one `unknown` line with the reason.
pub(crate) fn outcome(
    result: Result<Vec<String>, CheckError>,
    finished_at: DateTime<FixedOffset>,
) -> Outcome {
    let (level, lines) = match result {
        Ok(lines) if !lines.is_empty() => {
            let level = lines
                .iter()
                .map(|l| crate::agent::collector::trailing_level(l).unwrap_or(Level::Unknown))
                .max()
                .unwrap_or(Level::Unknown);
            (level, lines)
        }
        Ok(_) => (
            Level::Unknown,
            vec![format!("no output {}", Level::Unknown)],
        ),
        Err(why) => (Level::Unknown, vec![format!("{why} {}", Level::Unknown)]),
    };
    Outcome {
        finished_at,
        level,
        lines,
    }
}

// ---- helpers shared by the checks (common.sh's) ----

/// A whole file as text; the error names the path.
fn read(path: &Path) -> Result<String, CheckError> {
    std::fs::read_to_string(path).map_err(|e| CheckError::read(path, e))
}

/// bash's `read -r a b …` of the first line: its whitespace-separated words.
fn first_line(text: &str) -> &str {
    text.split('\n').next().unwrap_or("")
}

/// printf "%.2f".
fn fixed2(x: f64) -> String {
    format!("{x:.2}")
}

/// common.sh's `level VALUE NOTE WARNING CRITICAL`.
fn level(value: f64, note: f64, warning: f64, critical: f64) -> Level {
    if value >= critical {
        Level::Critical
    } else if value >= warning {
        Level::Warning
    } else if value >= note {
        Level::Note
    } else {
        Level::Normal
    }
}

/// common.sh's `hottest_temp`: the hottest readable thermal zone in °C with
/// two decimals, or `-`. Zones that cannot be read or parsed are skipped.
fn hottest_temp(ctx: &Context) -> String {
    let dir = ctx.roots.sys.join("class/thermal");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return "-".to_string();
    };
    let mut max: Option<i64> = None;
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("thermal_zone")
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path().join("temp")) else {
            continue;
        };
        // `read -r t` trims blanks; the script accepts only -?[0-9]+.
        let t = first_line(&text).trim_matches([' ', '\t']);
        let digits = t.strip_prefix('-').unwrap_or(t);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(v) = t.parse::<i64>() {
            max = Some(max.map_or(v, |m| m.max(v)));
        }
    }
    match max {
        Some(m) => fixed2(m as f64 / 1000.0),
        None => "-".to_string(),
    }
}

/// common.sh's `mem_usage`: total MiB, used MiB, used % (two decimals).
/// used = MemTotal − MemAvailable (free + buffers + cached before 3.14).
#[derive(Debug, Clone)]
struct MemUsage {
    total_mib: i64,
    used_mib: i64,
    used_pct: String,
}

fn mem_usage(ctx: &Context) -> Result<MemUsage, CheckError> {
    let path = ctx.proc_path("meminfo");
    let text = read(&path)?;
    let (mut total, mut avail, mut approx) = (0.0f64, None, 0.0f64);
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let value = awk_number(value);
        match key {
            "MemTotal:" => total = value,
            "MemAvailable:" => avail = Some(value),
            "MemFree:" | "Buffers:" | "Cached:" => approx += value,
            _ => {}
        }
    }
    if total <= 0.0 {
        return Err(CheckError::Parse(path.clone()));
    }
    let used = total - avail.unwrap_or(approx);
    Ok(MemUsage {
        total_mib: (total / 1024.0) as i64,
        used_mib: (used / 1024.0) as i64,
        used_pct: fixed2(used * 100.0 / total),
    })
}

/// awk's string-to-number: the longest leading decimal number, else 0.
fn awk_number(text: &str) -> f64 {
    let end = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '-' || c == '+'))))
        .map_or(text.len(), |(i, _)| i);
    text[..end].parse().unwrap_or(0.0)
}

/// The value of a two-decimal string (what the scripts compare).
fn value_of(fixed: &str) -> f64 {
    fixed.parse().unwrap_or(0.0)
}

// ---- bounded runs on a worker thread ----

type Reply = (Result<Vec<String>, CheckError>, DateTime<FixedOffset>);

struct Job {
    name: String,
    kind: Builtin,
    reply: Sender<Reply>,
}

struct Worker {
    jobs: Sender<Job>,
    /// Set by a run that timed out: the thread is stuck in a check, so the
    /// next run starts a new worker (the stuck one ends when it returns).
    stuck: Arc<AtomicBool>,
}

/// Runs built-in checks for the scheduler, one at a time on a worker
/// thread, keeping each collector's state there between runs.
pub(crate) struct Executor {
    context: Arc<Context>,
    worker: Option<Worker>,
}

impl Executor {
    pub(crate) fn new(context: Context) -> Executor {
        Executor {
            context: Arc::new(context),
            worker: None,
        }
    }

    /// Start one run of `kind` for collector `name`; never blocks.
    pub(crate) fn start(&mut self, name: &str, kind: Builtin, timeout: Duration) -> Run {
        let (reply, replies) = crossbeam::channel::bounded(1);
        let job = Job {
            name: name.to_string(),
            kind,
            reply,
        };
        let sent = match self.worker() {
            Ok(worker) => worker
                .jobs
                .send(job)
                .map_err(|_| CheckError::WorkerEnded)
                .map(|_| worker.stuck.clone()),
            Err(e) => Err(e),
        };
        let (stuck, failed) = match sent {
            Ok(stuck) => (stuck, None),
            Err(why) => {
                self.worker = None;
                (Arc::new(AtomicBool::new(false)), Some(why))
            }
        };
        Run {
            name: name.to_string(),
            timeout,
            started: Instant::now(),
            replies,
            stuck,
            failed,
            done: false,
        }
    }

    fn worker(&mut self) -> Result<&Worker, CheckError> {
        if self
            .worker
            .as_ref()
            .is_some_and(|w| w.stuck.load(Ordering::Relaxed))
        {
            log::warn!("built-in checks: the worker is stuck in a check; starting a new one (cpu, mem and proc start afresh)");
            self.worker = None;
        }
        if self.worker.is_none() {
            let (jobs, inbox) = crossbeam::channel::unbounded::<Job>();
            let context = self.context.clone();
            std::thread::Builder::new()
                .name("builtin-checks".into())
                // The checks keep their buffers on the heap; a small stack
                // keeps the thread's footprint small.
                .stack_size(256 * 1024)
                .spawn(move || work(&context, &inbox))
                .map_err(CheckError::WorkerStart)?;
            self.worker = Some(Worker {
                jobs,
                stuck: Arc::new(AtomicBool::new(false)),
            });
        }
        Ok(self.worker.as_ref().expect("a worker was just set"))
    }
}

fn work(context: &Context, inbox: &Receiver<Job>) {
    let mut checks: HashMap<String, Check> = HashMap::new();
    for job in inbox.iter() {
        let check = checks
            .entry(job.name.clone())
            .or_insert_with(|| Check::new(job.kind));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check.run(context)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(CheckError::Panicked {
                    kind: job.kind,
                    what,
                })
            });
        if result.is_err() {
            // Whatever state it had may be half-updated: start afresh.
            checks.insert(job.name.clone(), Check::new(job.kind));
        }
        let _ = job
            .reply
            .send((result, chrono::Local::now().fixed_offset()));
    }
}

/// One run of a built-in check, polled by the scheduler like a script run.
pub(crate) struct Run {
    name: String,
    timeout: Duration,
    started: Instant,
    replies: Receiver<Reply>,
    stuck: Arc<AtomicBool>,
    failed: Option<CheckError>,
    done: bool,
}

impl Run {
    /// Non-blocking: `Some(outcome)` once the check has finished or its
    /// timeout has passed (then `unknown`); `Some` at most once.
    pub(crate) fn poll(&mut self) -> Option<Outcome> {
        if self.done {
            return None;
        }
        let now = || chrono::Local::now().fixed_offset();
        let result = if let Some(why) = self.failed.take() {
            Some(outcome(Err(why), now()))
        } else {
            match self.replies.try_recv() {
                Ok((result, at)) => Some(outcome(result, at)),
                Err(TryRecvError::Disconnected) => {
                    self.stuck.store(true, Ordering::Relaxed);
                    Some(outcome(Err(CheckError::WorkerEnded), now()))
                }
                Err(TryRecvError::Empty) if self.started.elapsed() >= self.timeout => {
                    self.stuck.store(true, Ordering::Relaxed);
                    let why = CheckError::Timeout(self.timeout);
                    log::warn!("collector {}: {why}", self.name);
                    Some(outcome(Err(why), now()))
                }
                Err(TryRecvError::Empty) => None,
            }
        };
        self.done = result.is_some();
        result
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fixture tree: `root/proc`, `root/sys`, `root/etc`, `root/utmp`.
    pub(crate) struct Tree {
        pub(crate) dir: tempfile::TempDir,
    }

    impl Tree {
        pub fn new() -> Tree {
            Tree {
                dir: tempfile::tempdir().expect("temp dir"),
            }
        }

        pub(crate) fn write(&self, rel: &str, text: &str) {
            let path = self.dir.path().join(rel);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(path, text).expect("write fixture");
        }

        pub(crate) fn roots(&self) -> Roots {
            let root = self.dir.path();
            Roots {
                proc: root.join("proc"),
                sys: root.join("sys"),
                etc: root.join("etc"),
                utmp: root.join("utmp"),
            }
        }

        pub(crate) fn context(&self) -> Context {
            Context::new(self.roots(), Limits::defaults())
        }
    }

    #[test]
    fn numbers_like_common_sh() {
        assert_eq!(parse_number("K", "70"), Ok(70.0));
        assert_eq!(parse_number("K", "2.5"), Ok(2.5));
        for bad in ["-1", "1.", ".5", "abc", "1e3", ""] {
            let e = parse_number("PIHEALTH_CPU_NOTE", bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("PIHEALTH_CPU_NOTE"), "{e}");
        }
        let env = vec![("PIHEALTH_CPU_NOTE".to_string(), "x".to_string())];
        let limits = Limits::from_env(&env);
        assert!(limits.get("PIHEALTH_CPU_NOTE").is_err());
        assert_eq!(limits.get("PIHEALTH_CPU_WARNING"), Ok(80.0));
    }

    #[test]
    fn awk_numbers() {
        assert_eq!(awk_number("123"), 123.0);
        assert_eq!(awk_number("12kB"), 12.0);
        assert_eq!(awk_number("x"), 0.0);
    }

    #[test]
    fn hottest_zone_skips_unreadable_and_garbage() {
        let t = Tree::new();
        let ctx = t.context();
        assert_eq!(hottest_temp(&ctx), "-");
        t.write("sys/class/thermal/thermal_zone0/temp", "41234\n");
        t.write("sys/class/thermal/thermal_zone1/temp", "55555\n");
        t.write("sys/class/thermal/thermal_zone2/temp", "hot\n");
        t.write("sys/class/thermal/cooling_device0/temp", "99000\n");
        assert_eq!(hottest_temp(&ctx), "55.55");
    }

    #[test]
    fn mem_usage_with_and_without_memavailable() {
        let t = Tree::new();
        t.write(
            "proc/meminfo",
            "MemTotal:        1000000 kB\nMemFree:          100000 kB\nMemAvailable:     400000 kB\nBuffers: 1000 kB\nCached: 2000 kB\n",
        );
        let m = mem_usage(&t.context()).unwrap();
        assert_eq!(
            (m.total_mib, m.used_mib, m.used_pct.as_str()),
            (976, 585, "60.00")
        );
        t.write(
            "proc/meminfo",
            "MemTotal: 1000000 kB\nMemFree: 100000 kB\nBuffers: 100000 kB\nCached: 50000 kB\n",
        );
        let m = mem_usage(&t.context()).unwrap();
        assert_eq!(m.used_pct, "75.00");
        t.write("proc/meminfo", "nonsense\n");
        assert!(mem_usage(&t.context())
            .unwrap_err()
            .to_string()
            .contains("meminfo"));
    }

    #[test]
    fn executor_runs_and_reports_failures_as_unknown() {
        let t = Tree::new();
        let mut ex = Executor::new(t.context());
        let mut run = ex.start("cpu", Builtin::Cpu, Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(5);
        let out = loop {
            if let Some(o) = run.poll() {
                break o;
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(2));
        };
        assert!(run.poll().is_none());
        assert_eq!(out.level, Level::Unknown);
        assert_eq!(out.lines.len(), 1);
        assert!(out.lines[0].contains("loadavg"), "{:?}", out.lines);
        assert!(out.lines[0].ends_with(" unknown"));

        t.write("proc/loadavg", "0.50 0.40 0.30 1/100 42\n");
        t.write("proc/stat", "cpu  10 0 10 80 0 0 0 0 0 0\n");
        let mut run = ex.start("cpu", Builtin::Cpu, Duration::from_secs(5));
        let out = loop {
            if let Some(o) = run.poll() {
                break o;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        assert_eq!(out.lines, vec!["0.50 0.40 0.30 20.00 - normal".to_string()]);
        assert_eq!(out.level, Level::Normal);
    }

    #[test]
    fn executor_times_out_a_stuck_run() {
        let t = Tree::new();
        let mut ex = Executor::new(t.context());
        let mut run = ex.start("cpu", Builtin::Cpu, Duration::ZERO);
        // A zero timeout may still see a fast reply; either way one outcome.
        let out = run.poll().expect("an outcome at once");
        assert_eq!(out.level, Level::Unknown);
        assert!(run.poll().is_none());
    }
}
