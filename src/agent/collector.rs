//! Running collectors: the monitoring programs the agent starts on a schedule.
//!
//! A collector is any program: one of our `scripts/*.sh` (mode `lines`: the
//! level is the last field of each output line) or an unchanged
//! Nagios/Monitoring-Plugins check (mode `nagios`: the exit code is the level).
//! This module turns one run of such a program into an [`Outcome`] — the
//! timestamped lines the log store appends — and runs all collectors on their
//! intervals from one scheduler thread.
//!
//! Why it is built the way it is:
//!
//! - **Output goes to files, not pipes.** One thread polls every child. With
//!   pipes, a program that writes more than the pipe buffer (64 KiB on Linux)
//!   blocks until somebody reads, and that somebody would have to be a thread
//!   per child or a poll loop over descriptors. A scratch file never fills up,
//!   so the child always runs to completion or to its timeout and we read the
//!   file once, afterwards, with a cap. A runaway writer is killed once its
//!   scratch files pass [`MAX_SCRATCH_BYTES`], so it cannot fill the disk.
//! - **Each run is its own process group.** Scripts start children (`sleep`,
//!   `ps`, pipelines). Killing only the script would leave those running and
//!   piling up on every timeout; `killpg` takes the whole tree down. After a
//!   normal exit the group is killed too, so a script that leaves something
//!   in the background does not leak a process per run.
//! - **Timeouts are checked on poll, never by blocking.** `poll` is
//!   non-blocking; the scheduler checks every running child about every 20 ms. The exit
//!   is observed with `waitid(WNOWAIT)` first, so the group is killed while the
//!   leader is still a zombie and its pid (the group id) cannot be reused.
//! - **Scratch files are per run, and runs die with their agent's
//!   successor.** A run writes to `scratch_dir/<name>.<agent pid>-<run
//!   number>.out` (and `.err`), created with `O_EXCL` and removed when the
//!   run is dropped; nothing is ever written to a file another run owns. A
//!   run orphaned by `kill -9` of its agent keeps its own open file, so it
//!   cannot write into a later run's output (with one shared `<name>.out`,
//!   an orphan's line would be stored as the next agent's run). At start, [`clean_scratch_dir`] ends every process
//!   group a predecessor left running (found by the [`RUN_DIR_VAR`] its runs
//!   carry) and removes its scratch files.
//! - **A misbehaving program is data, not an error.** A missing script, a
//!   crash, a non-zero exit, garbage output or a hang all become an `unknown`
//!   outcome that says why; nothing here panics or returns early on them.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, SecondsFormat};
use log::{debug, warn};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::agent::builtin::{self, Executor};
use crate::level::Level;

/// At most this much of a run's stdout is read into the log.
pub(crate) const MAX_OUTPUT_BYTES: u64 = 64 * 1024;
/// At most this many lines of a run's stdout are kept.
pub(crate) const MAX_OUTPUT_LINES: usize = 200;
/// A run whose stdout or stderr file grows past this is killed: it is not a
/// monitoring check any more, and it would fill the agent's disk.
pub(crate) const MAX_SCRATCH_BYTES: u64 = 16 * 1024 * 1024;
/// Only the first line of stderr is kept, read from at most this many bytes.
const MAX_STDERR_BYTES: u64 = 4096;
/// How often the scheduler looks at its running children.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// With no child running the scheduler sleeps until the next run is due,
/// waking at least this often to look at the stop flag. An idle agent thus
/// wakes about twice a second instead of fifty times (which, for a fleet of
/// agents on one host or a Pi on battery, is most of its idle cost).
const IDLE_STOP_CHECK: Duration = Duration::from_millis(500);
/// Set in every run's environment to the absolute scratch directory: it
/// marks the run and its children as this agent's (see
/// [`clean_scratch_dir`]); children inherit it, process ids do not stay
/// unique, so it is checked on the live process rather than recorded.
pub(crate) const RUN_DIR_VAR: &str = "PIHEALTH_RUN_DIR";
/// Numbers this process's runs, for unique scratch file names.
static RUN_NUMBER: AtomicU64 = AtomicU64::new(0);
/// How long we wait for a SIGKILLed process to be reaped before giving up
/// (a process stuck in uninterruptible I/O cannot die until that I/O ends).
const REAP_TIMEOUT: Duration = Duration::from_secs(1);

use crate::config::{CollectorSpec, Mode};

/// What one run produced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    /// Local time with offset, taken when the program finished (or was killed).
    pub(crate) finished_at: DateTime<FixedOffset>,
    pub(crate) level: Level,
    /// Output lines without timestamp; never empty, no `'\n'` inside.
    pub(crate) lines: Vec<String>,
}

impl Outcome {
    fn now(level: Level, lines: Vec<String>) -> Outcome {
        debug_assert!(!lines.is_empty(), "an outcome always has a line");
        Outcome {
            finished_at: chrono::Local::now().fixed_offset(),
            level,
            lines,
        }
    }

    /// The bytes appended to the log: every line prefixed with the RFC 3339
    /// finish time (seconds, numeric offset) and a space, each ending in
    /// `'\n'`, e.g. `2026-11-21T10:31:09+08:00 0.02 0.08 0.08 31.56 49.38 normal`.
    pub(crate) fn render(&self) -> String {
        let stamp = self.finished_at.to_rfc3339_opts(SecondsFormat::Secs, false);
        let mut out =
            String::with_capacity(self.lines.iter().map(|l| l.len() + stamp.len() + 2).sum());
        for line in &self.lines {
            out.push_str(&stamp);
            out.push(' ');
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

enum State {
    /// The program could not be started; the outcome says why and has not
    /// been handed out yet.
    Failed(Outcome),
    /// The program (process group leader) is running or not yet reaped.
    Started(Child),
    /// The outcome has been handed out, but the SIGKILLed program has not
    /// been reaped yet (stuck in uninterruptible I/O); `kill` tries again.
    Unreaped(Child),
    /// The outcome has been handed out, or the run was killed.
    Done,
}

/// One running collector program. Dropping it kills the run.
pub(crate) struct Running {
    name: String,
    program: String,
    mode: Mode,
    timeout: Duration,
    started: Instant,
    out_path: PathBuf,
    err_path: PathBuf,
    /// The scratch files this run created (and so removes when dropped).
    created: Vec<PathBuf>,
    state: State,
}

impl Running {
    /// Start the program in its own process group, stdin null, stdout and
    /// stderr to new files of this run only in `scratch_dir` (removed when
    /// the run is dropped), the extra `env` vars and [`RUN_DIR_VAR`] set,
    /// cwd `work_dir`. A relative program path with a `/` in
    /// it (`scripts/cpu.sh`) is taken relative to `work_dir`; a bare name is
    /// looked up in `PATH`.
    ///
    /// A spawn failure is not an error: it yields a run that is already
    /// finished with an `unknown` outcome saying why.
    pub(crate) fn start(
        spec: &CollectorSpec,
        env: &[(String, String)],
        work_dir: &Path,
        scratch_dir: &Path,
    ) -> Running {
        let program = spec.argv.first().cloned().unwrap_or_default();
        let run_id = format!(
            "{}.{}-{}",
            spec.name,
            std::process::id(),
            RUN_NUMBER.fetch_add(1, Ordering::Relaxed)
        );
        let mut run = Running {
            name: spec.name.clone(),
            program: program.clone(),
            mode: spec.mode,
            timeout: spec.timeout,
            started: Instant::now(),
            out_path: scratch_dir.join(format!("{run_id}.out")),
            err_path: scratch_dir.join(format!("{run_id}.err")),
            created: Vec::new(),
            state: State::Done,
        };
        run.state = match run.spawn(spec, env, work_dir, scratch_dir) {
            Ok(child) => {
                debug!(
                    "collector {}: started {} (pid {})",
                    run.name,
                    program,
                    child.id()
                );
                State::Started(child)
            }
            Err(why) => {
                warn!("collector {}: {why}", run.name);
                State::Failed(Outcome::now(
                    Level::Unknown,
                    vec![unknown_line(&why.to_string())],
                ))
            }
        };
        run
    }

    fn spawn(
        &mut self,
        spec: &CollectorSpec,
        env: &[(String, String)],
        work_dir: &Path,
        scratch_dir: &Path,
    ) -> Result<Child, SpawnError> {
        let Some((program, args)) = spec.argv.split_first() else {
            return Err(SpawnError::Empty);
        };
        // O_EXCL: a file of this name that exists is not this run's (a
        // leftover nobody should write into again); never share it.
        let mut create = |path: &Path| {
            let file = File::options()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|source| SpawnError::Scratch {
                    path: path.to_path_buf(),
                    source,
                })?;
            self.created.push(path.to_path_buf());
            Ok::<File, SpawnError>(file)
        };
        let stdout = create(&self.out_path.clone())?;
        let stderr = create(&self.err_path.clone())?;
        // std leaves it unspecified whether a relative program path is resolved
        // against the parent's or the child's directory; make it absolute,
        // under the child's.
        let path = Path::new(program);
        let resolved = if path.is_relative() && program.contains('/') {
            let joined = work_dir.join(path);
            std::path::absolute(&joined).unwrap_or(joined)
        } else {
            path.to_path_buf()
        };
        Command::new(resolved)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env(RUN_DIR_VAR, absolute(scratch_dir))
            .current_dir(work_dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|source| SpawnError::Run {
                program: program.clone(),
                source,
            })
    }

    /// Non-blocking: `Some(outcome)` once the program has exited, or once its
    /// timeout has passed (then the whole process group is killed and the
    /// outcome is `unknown`). Returns `Some` at most once.
    pub(crate) fn poll(&mut self) -> Option<Outcome> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Done => None,
            State::Unreaped(child) => {
                self.state = State::Unreaped(child);
                None
            }
            State::Failed(outcome) => Some(outcome),
            State::Started(child) => self.poll_child(child),
        }
    }

    fn poll_child(&mut self, mut child: Child) -> Option<Outcome> {
        let pid = child_pid(&child);
        // WNOWAIT: see the exit but leave the zombie, so the group id stays
        // ours while we kill whatever the program left behind.
        let exited = match waitid(
            Id::Pid(pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) => false,
            Ok(_) => true,
            // Should not happen for our own child; fall back to std's view.
            Err(_) => !matches!(child.try_wait(), Ok(None)),
        };
        if exited {
            kill_group(pid);
            let status = reap(&mut child);
            if status.is_none() {
                warn!(
                    "collector {}: pid {pid} exited but its status could not be read",
                    self.name
                );
            }
            return Some(self.finished(status));
        }
        if self.started.elapsed() >= self.timeout {
            let why = format!(
                "timeout: killed after {}",
                humantime::format_duration(self.timeout)
            );
            warn!("collector {}: {} {why}", self.name, self.program);
            return Some(self.killed(child, &why));
        }
        let size = self.scratch_size();
        if size > MAX_SCRATCH_BYTES {
            let why = format!(
                "output too large: killed after writing {size} bytes (limit {} MiB)",
                MAX_SCRATCH_BYTES / (1024 * 1024)
            );
            warn!("collector {}: {} {why}", self.name, self.program);
            return Some(self.killed(child, &why));
        }
        self.state = State::Started(child);
        None
    }

    /// Kill the process group now and reap (used at shutdown); idempotent.
    /// Afterwards `poll` returns `None`.
    pub(crate) fn kill(&mut self) {
        if let State::Started(mut child) | State::Unreaped(mut child) =
            std::mem::replace(&mut self.state, State::Done)
        {
            let pid = child_pid(&child);
            kill_group(pid);
            if reap(&mut child).is_none() {
                warn!(
                    "collector {}: pid {pid} did not die within {REAP_TIMEOUT:?} of SIGKILL",
                    self.name
                );
            } else {
                debug!("collector {}: killed pid {pid}", self.name);
            }
        }
    }

    /// The larger of the two scratch files (0 if unreadable: then there is
    /// nothing to guard).
    fn scratch_size(&self) -> u64 {
        let out = fs::metadata(&self.out_path).map(|m| m.len()).unwrap_or(0);
        let err = fs::metadata(&self.err_path).map(|m| m.len()).unwrap_or(0);
        out.max(err)
    }

    /// Kill the group for `why` and build the outcome: whatever stdout had so
    /// far, then the reason.
    fn killed(&mut self, mut child: Child, why: &str) -> Outcome {
        let pid = child_pid(&child);
        kill_group(pid);
        if reap(&mut child).is_none() {
            warn!(
                "collector {}: pid {pid} did not die within {REAP_TIMEOUT:?} of SIGKILL",
                self.name
            );
            // Keep it so that `kill`/drop tries once more.
            self.state = State::Unreaped(child);
        }
        let mut lines = self.stdout_lines();
        if self.mode == Mode::Nagios {
            lines.truncate(1);
        }
        lines.push(unknown_line(why));
        Outcome::now(Level::Unknown, lines)
    }

    fn finished(&self, status: Option<ExitStatus>) -> Outcome {
        let lines = self.stdout_lines();
        match self.mode {
            Mode::Lines => lines_outcome(lines, status, || self.stderr_first_line()),
            Mode::Nagios => nagios_outcome(lines, status, || self.stderr_first_line()),
        }
    }

    fn stdout_lines(&self) -> Vec<String> {
        let (bytes, cut) = match read_capped(&self.out_path, MAX_OUTPUT_BYTES) {
            Ok(read) => read,
            Err(e) => {
                warn!(
                    "collector {}: cannot read {}: {e}",
                    self.name,
                    self.out_path.display()
                );
                return Vec::new();
            }
        };
        let (lines, too_many) = clean_lines(&bytes, MAX_OUTPUT_LINES);
        if cut || too_many {
            warn!(
                "collector {}: output truncated to {} lines / {MAX_OUTPUT_BYTES} bytes",
                self.name,
                lines.len()
            );
        }
        lines
    }

    fn stderr_first_line(&self) -> Option<String> {
        let (bytes, _) = read_capped(&self.err_path, MAX_STDERR_BYTES).ok()?;
        clean_lines(&bytes, 1).0.into_iter().next()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
        // The outcome was read already (or never will be). A process that
        // could not be reaped keeps writing to its unlinked file, which no
        // later run can open.
        for path in &self.created {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => warn!(
                    "collector {}: cannot remove {}: {e}",
                    self.name,
                    path.display()
                ),
            }
        }
    }
}

/// Make `scratch_dir` safe for this agent's runs, before the first one
/// starts: end every process group an earlier agent with this scratch
/// directory left running (killed with `kill -9`, its runs were orphaned),
/// then remove every file in it. Returns how many groups were ended.
///
/// Which processes are an earlier agent's runs: those whose environment
/// holds [`RUN_DIR_VAR`] = this scratch directory, read from
/// `/proc/PID/environ` of each live process. That is checked on the live
/// process, so a recycled process id never makes us kill a stranger, and a
/// run orphaned between its spawn and any record of it is found too. Only
/// processes whose environment we may read (our own user's) are looked at;
/// a setuid child (`ping`) may escape this and is harmless, since its
/// scratch files are removed here and no later run opens them again.
pub(crate) fn clean_scratch_dir(scratch_dir: &Path) -> io::Result<usize> {
    let marker = format!("{RUN_DIR_VAR}={}", absolute(scratch_dir)).into_bytes();
    let own_group = nix::unistd::getpgrp();
    let mut groups: Vec<Pid> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(environ) = fs::read(entry.path().join("environ")) else {
                continue; // gone, or not ours to read
            };
            if !environ
                .split(|&b| b == 0)
                .any(|var| var == marker.as_slice())
            {
                continue;
            }
            match nix::unistd::getpgid(Some(Pid::from_raw(pid))) {
                Ok(group) if group != own_group && !groups.contains(&group) => groups.push(group),
                _ => {}
            }
        }
    }
    for group in &groups {
        warn!("ending process group {group} left running by an earlier agent");
        kill_group(*group);
    }
    let entries = match fs::read_dir(scratch_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(groups.len()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_file() {
            fs::remove_file(&path)?;
        }
    }
    Ok(groups.len())
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// The scheduler: runs every collector at its interval (first run at once),
/// at most one run per collector at a time, polling children every ~20 ms
/// while any runs and otherwise sleeping until the next is due (at most
/// [`IDLE_STOP_CHECK`]), until `stop` is set; then hands out runs that already finished, kills the
/// rest and returns. Each finished run goes to `sink(spec, outcome)`.
///
/// Runs stay on their grid (start + k × interval): a slow run does not make
/// the schedule drift, and ticks missed while a run was still going are
/// skipped (and logged), never caught up in a burst.
pub(crate) fn run_schedule(
    specs: &[CollectorSpec],
    env: &[(String, String)],
    work_dir: &Path,
    scratch_dir: &Path,
    stop: &AtomicBool,
    sink: &mut dyn FnMut(&CollectorSpec, Outcome),
) {
    // Built-ins read the thresholds from the same variables as the scripts.
    let mut builtins = Executor::new(builtin::Context::new(
        builtin::Roots::default(),
        builtin::Limits::from_env(env),
    ));
    let start = Instant::now();
    let mut slots: Vec<Slot> = specs
        .iter()
        .map(|spec| Slot {
            spec,
            next_due: start,
            running: None,
        })
        .collect();

    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for slot in &mut slots {
            if let Some(outcome) = slot.running.as_mut().and_then(AnyRun::poll) {
                slot.running = None;
                sink(slot.spec, outcome);
            }
            if now >= slot.next_due {
                slot.start(&mut builtins, env, work_dir, scratch_dir);
                slot.next_due = next_due_after(slot.next_due, slot.spec.interval, now);
            }
        }
        thread::sleep(nap(&slots));
    }

    for slot in &mut slots {
        if let Some(mut run) = slot.running.take() {
            match run.poll() {
                Some(outcome) => sink(slot.spec, outcome),
                None => run.kill(),
            }
        }
    }
}

/// One collector in the schedule.
struct Slot<'a> {
    spec: &'a CollectorSpec,
    next_due: Instant,
    running: Option<AnyRun>,
}

impl Slot<'_> {
    /// Start a run, unless the previous one is still going (then this
    /// tick is skipped, with a warning).
    fn start(
        &mut self,
        builtins: &mut Executor,
        env: &[(String, String)],
        work_dir: &Path,
        scratch_dir: &Path,
    ) {
        let spec = self.spec;
        if self.running.is_some() {
            warn!(
                "collector {}: previous run still going after {:?}, skipping this run",
                spec.name, spec.interval
            );
            return;
        }
        self.running = Some(match spec.builtin {
            Some(kind) => AnyRun::Builtin(builtins.start(&spec.name, kind, spec.timeout)),
            None => AnyRun::Script(Running::start(spec, env, work_dir, scratch_dir)),
        });
    }
}

/// How long the schedule may sleep: until the next run is due, and no
/// longer than a poll interval while runs are going (their exits are
/// polled) or an idle interval otherwise (the stop flag is checked).
fn nap(slots: &[Slot]) -> Duration {
    let now = Instant::now();
    let until_due = slots
        .iter()
        .map(|slot| slot.next_due.saturating_duration_since(now))
        .min()
        .unwrap_or(IDLE_STOP_CHECK);
    let check = if slots.iter().any(|slot| slot.running.is_some()) {
        POLL_INTERVAL
    } else {
        IDLE_STOP_CHECK
    };
    until_due.min(check)
}

/// A run of either kind of collector, as the scheduler sees it.
enum AnyRun {
    Script(Running),
    Builtin(builtin::Run),
}

impl AnyRun {
    fn poll(&mut self) -> Option<Outcome> {
        match self {
            AnyRun::Script(run) => run.poll(),
            AnyRun::Builtin(run) => run.poll(),
        }
    }

    /// A built-in cannot be killed; its late result is dropped (and a stuck
    /// worker ends with the agent).
    fn kill(&mut self) {
        if let AnyRun::Script(run) = self {
            run.kill();
        }
    }
}

/// The first grid point `due + k × interval` (k ≥ 1) strictly after `now`.
fn next_due_after(due: Instant, interval: Duration, now: Instant) -> Instant {
    let interval = interval.max(Duration::from_millis(1));
    let next = due + interval;
    if next > now {
        return next;
    }
    let behind = (now - next).as_nanos() % interval.as_nanos();
    // behind < interval, which fits in u64 nanoseconds for any sane interval.
    now + interval - Duration::from_nanos(u64::try_from(behind).unwrap_or(0))
}

fn child_pid(child: &Child) -> Pid {
    // Linux pids fit in i32 (pid_max ≤ 2^22).
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

/// SIGKILL the process group led by `pid`. ESRCH (already gone) is fine.
fn kill_group(pid: Pid) {
    match killpg(pid, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => warn!("cannot kill process group {pid}: {e}"),
    }
}

/// Wait for `child` (already exited or SIGKILLed), bounded by REAP_TIMEOUT.
fn reap(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + REAP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Read at most `cap` bytes of `path`. If the file is longer, the result is
/// cut after its last complete line and the flag is set.
fn read_capped(path: &Path, cap: u64) -> io::Result<(Vec<u8>, bool)> {
    let mut bytes = Vec::new();
    File::open(path)?.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 <= cap {
        return Ok((bytes, false));
    }
    bytes.truncate(cap as usize);
    if let Some(last_newline) = bytes.iter().rposition(|&b| b == b'\n') {
        bytes.truncate(last_newline + 1);
    }
    Ok((bytes, true))
}

/// Output bytes as clean single lines: invalid UTF-8 replaced, control
/// characters other than tab turned into spaces, trailing whitespace trimmed,
/// empty lines dropped; at most `max` lines (the flag says some were dropped).
fn clean_lines(bytes: &[u8], max: usize) -> (Vec<String>, bool) {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = Vec::new();
    for raw in text.split('\n') {
        let line: String = raw
            .chars()
            .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
            .collect();
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if lines.len() == max {
            return (lines, true);
        }
        lines.push(line.to_string());
    }
    (lines, false)
}

/// The worst of the level words at the end of `line`, if it ends in any.
pub(crate) fn trailing_level(line: &str) -> Option<Level> {
    line.split_whitespace()
        .rev()
        .map_while(|word| word.parse::<Level>().ok())
        .max()
}

/// Why a collector's program could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    #[error("cannot run: empty command")]
    Empty,
    #[error("cannot create scratch file {}: {source}", path.display())]
    Scratch { path: PathBuf, source: io::Error },
    #[error("cannot run {program}: {source}")]
    Run { program: String, source: io::Error },
}

fn unknown_line(text: &str) -> String {
    format!("{text} {}", Level::Unknown)
}

fn describe_failure(status: Option<ExitStatus>) -> String {
    let Some(status) = status else {
        return "exit status not available".to_string();
    };
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(sig) => format!("killed by signal {signal} ({})", sig.as_str()),
            Err(_) => format!("killed by signal {signal}"),
        },
        (None, None) => format!("{status}"),
    }
}

fn lines_outcome(
    mut lines: Vec<String>,
    status: Option<ExitStatus>,
    stderr: impl FnOnce() -> Option<String>,
) -> Outcome {
    if !status.is_some_and(|s| s.success()) {
        let first_err = stderr().unwrap_or_else(|| "no stderr".to_string());
        lines.push(unknown_line(&format!(
            "failed: {}: {first_err}",
            describe_failure(status)
        )));
        return Outcome::now(Level::Unknown, lines);
    }
    if lines.is_empty() {
        return Outcome::now(Level::Unknown, vec![unknown_line("no output")]);
    }
    match lines.iter().filter_map(|line| trailing_level(line)).max() {
        Some(level) => Outcome::now(level, lines),
        None => {
            lines.push(unknown_line("no level in output"));
            Outcome::now(Level::Unknown, lines)
        }
    }
}

fn nagios_outcome(
    lines: Vec<String>,
    status: Option<ExitStatus>,
    stderr: impl FnOnce() -> Option<String>,
) -> Outcome {
    let level = Level::from_nagios_exit(status.and_then(|s| s.code()));
    // A plugin that cannot even start its check ("check_disk: invalid
    // option") often says so on stderr only; that beats "no output".
    let text = match lines.into_iter().next() {
        Some(first) => first,
        None => stderr().unwrap_or_else(|| "no output".to_string()),
    };
    Outcome::now(level, vec![format!("{text} {level}")])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    const LONG: Duration = Duration::from_secs(20);

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                dir: tempfile::tempdir().expect("temp dir"),
            }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Write a script and return an argv that runs it through `/bin/sh`.
        /// Going through sh rather than exec'ing the fresh file avoids
        /// ETXTBSY when another test thread forks while it is being written.
        fn script(&self, name: &str, body: &str) -> Vec<String> {
            let path = self.path().join(format!("{name}.sh"));
            fs::write(&path, body).expect("write script");
            vec!["/bin/sh".to_string(), path.display().to_string()]
        }

        fn spec(
            &self,
            name: &str,
            argv: Vec<String>,
            timeout: Duration,
            mode: Mode,
        ) -> CollectorSpec {
            CollectorSpec {
                name: name.to_string(),
                argv,
                builtin: None,
                interval: Duration::from_secs(60),
                timeout,
                mode,
                trigger: Default::default(),
            }
        }

        /// Run to completion (polling like the scheduler does).
        fn run(&self, spec: &CollectorSpec) -> Outcome {
            self.run_env(spec, &[])
        }

        fn run_env(&self, spec: &CollectorSpec, env: &[(String, String)]) -> Outcome {
            let mut run = Running::start(spec, env, self.path(), self.path());
            let give_up = Instant::now() + spec.timeout + Duration::from_secs(30);
            loop {
                if let Some(outcome) = run.poll() {
                    assert!(run.poll().is_none(), "poll returns Some at most once");
                    check_invariants(&outcome);
                    return outcome;
                }
                assert!(Instant::now() < give_up, "run never finished");
                thread::sleep(Duration::from_millis(5));
            }
        }

        fn lines(&self, name: &str, body: &str) -> Outcome {
            let argv = self.script(name, body);
            self.run(&self.spec(name, argv, LONG, Mode::Lines))
        }

        fn nagios(&self, name: &str, body: &str) -> Outcome {
            let argv = self.script(name, body);
            self.run(&self.spec(name, argv, LONG, Mode::Nagios))
        }
    }

    fn check_invariants(outcome: &Outcome) {
        assert!(!outcome.lines.is_empty(), "no lines in {outcome:?}");
        for line in &outcome.lines {
            assert!(!line.is_empty());
            assert!(
                !line.chars().any(|c| c.is_control() && c != '\t'),
                "control char in {line:?}"
            );
        }
    }

    fn s(text: &str) -> String {
        text.to_string()
    }

    #[test]
    fn lines_mode_single_line_with_level() {
        let fx = Fixture::new();
        let out = fx.lines("cpu", "echo '0.02 0.08 0.08 31.56 49.38 note'\n");
        assert_eq!(out.level, Level::Note);
        assert_eq!(out.lines, vec![s("0.02 0.08 0.08 31.56 49.38 note")]);
    }

    #[test]
    fn lines_mode_worst_level_of_many_lines() {
        let fx = Fixture::new();
        let out = fx.lines(
            "disk",
            "echo '/ 100 50 50% normal'\necho\necho '/boot 10 1 90% warning  \\r'\necho '/home 100 20 80% note'\n",
        );
        assert_eq!(out.level, Level::Warning);
        assert_eq!(
            out.lines,
            vec![
                s("/ 100 50 50% normal"),
                s("/boot 10 1 90% warning"),
                s("/home 100 20 80% note")
            ]
        );
    }

    #[test]
    fn lines_mode_sysinfo_three_trailing_levels() {
        let fx = Fixture::new();
        let out = fx.lines(
            "sysinfo",
            "echo 'pi1 Debian 6.1 3d 0.10 29G 41% 3.8G 22% 48.3 normal warning note'\n",
        );
        assert_eq!(out.level, Level::Warning);
        assert_eq!(out.lines.len(), 1);
        // A level word in the middle of a line does not count.
        let out = fx.lines(
            "users",
            "echo 'user critical logged in 3'\necho '3 normal'\n",
        );
        assert_eq!(out.level, Level::Normal);
    }

    #[test]
    fn lines_mode_no_level_word() {
        let fx = Fixture::new();
        let out = fx.lines("x", "echo 'just text'\necho 'more text'\n");
        assert_eq!(out.level, Level::Unknown);
        assert_eq!(
            out.lines,
            vec![
                s("just text"),
                s("more text"),
                s("no level in output unknown")
            ]
        );
    }

    #[test]
    fn lines_mode_empty_output() {
        let fx = Fixture::new();
        let out = fx.lines("x", "exit 0\n");
        assert_eq!(out.level, Level::Unknown);
        assert_eq!(out.lines, vec![s("no output unknown")]);
        let out = fx.lines("y", "printf '\\n  \\n\\n'\n");
        assert_eq!(out.lines, vec![s("no output unknown")]);
    }

    #[test]
    fn lines_mode_nonzero_exit_with_stderr() {
        let fx = Fixture::new();
        let out = fx.lines(
            "x",
            "echo '50% normal'\necho 'df: /mnt: oops' >&2\necho second >&2\nexit 3\n",
        );
        assert_eq!(out.level, Level::Unknown);
        assert_eq!(
            out.lines,
            vec![
                s("50% normal"),
                s("failed: exit status 3: df: /mnt: oops unknown")
            ]
        );
        let out = fx.lines("y", "exit 1\n");
        assert_eq!(
            out.lines,
            vec![s("failed: exit status 1: no stderr unknown")]
        );
    }

    #[test]
    fn lines_mode_killed_by_signal() {
        let fx = Fixture::new();
        let out = fx.lines("x", "kill -9 $$\n");
        assert_eq!(out.level, Level::Unknown);
        assert_eq!(
            out.lines,
            vec![s("failed: killed by signal 9 (SIGKILL): no stderr unknown")]
        );
    }

    #[test]
    fn unreadable_exit_status_is_unknown() {
        let out = lines_outcome(vec![s("x normal")], None, || None);
        assert_eq!(out.level, Level::Unknown);
        assert_eq!(
            out.lines,
            vec![
                s("x normal"),
                s("failed: exit status not available: no stderr unknown")
            ]
        );
        let out = nagios_outcome(vec![s("LOAD OK")], None, || None);
        assert_eq!(out.lines, vec![s("LOAD OK unknown")]);
        assert_eq!(trailing_level("a b"), None);
        assert_eq!(trailing_level("a Warning NORMAL"), Some(Level::Warning));
    }

    #[test]
    fn control_characters_become_spaces() {
        let fx = Fixture::new();
        let out = fx.lines("x", "printf 'a\\033[1mb\\tc\\rd normal\\r\\n'\n");
        assert_eq!(out.lines, vec![s("a [1mb\tc d normal")]);
        assert_eq!(out.level, Level::Normal);
    }

    #[test]
    fn env_and_work_dir_are_set() {
        let fx = Fixture::new();
        fs::create_dir(fx.path().join("scripts")).expect("mkdir");
        let argv = fx.script(
            "env",
            "echo \"$PIHEALTH_DISK_NOTE $(basename \"$PWD\") normal\"\n",
        );
        let spec = fx.spec("env", argv, LONG, Mode::Lines);
        let env = [(s("PIHEALTH_DISK_NOTE"), s("80"))];
        let out = fx.run_env(&spec, &env);
        let base = fx
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 temp dir name");
        assert_eq!(out.lines, vec![format!("80 {base} normal")]);
    }

    #[test]
    fn relative_program_is_resolved_against_work_dir() {
        let fx = Fixture::new();
        fs::create_dir(fx.path().join("scripts")).expect("mkdir");
        let path = fx.path().join("scripts/rel.sh");
        fs::write(&path, "#!/bin/sh\necho 'rel normal'\n").expect("write");
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let spec = fx.spec("rel", vec![s("scripts/rel.sh")], LONG, Mode::Lines);
        // Exec'ing a file just written can fail with ETXTBSY while another
        // test thread forks (it briefly holds our write fd); retry that.
        for _ in 0..50 {
            let out = fx.run(&spec);
            if out.lines[0].contains("Text file busy") {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            assert_eq!(out.lines, vec![s("rel normal")]);
            return;
        }
        panic!("script stayed busy");
    }

    #[test]
    fn spawn_failure_is_an_unknown_outcome() {
        let fx = Fixture::new();
        let spec = fx.spec(
            "x",
            vec![s("scripts/missing.sh"), s("-v")],
            LONG,
            Mode::Lines,
        );
        let out = fx.run(&spec);
        assert_eq!(out.level, Level::Unknown);
        assert_eq!(out.lines.len(), 1);
        assert!(
            out.lines[0].starts_with("cannot run scripts/missing.sh: No such file or directory"),
            "{:?}",
            out.lines
        );
        assert!(out.lines[0].ends_with(" unknown"));

        let spec = fx.spec("y", vec![], LONG, Mode::Nagios);
        assert_eq!(
            fx.run(&spec).lines,
            vec![s("cannot run: empty command unknown")]
        );

        // Scratch dir missing: also an outcome, not a panic.
        let spec = fx.spec("z", vec![s("/bin/true")], LONG, Mode::Lines);
        let mut run = Running::start(&spec, &[], fx.path(), &fx.path().join("nope"));
        let out = run.poll().expect("finished at once");
        assert!(
            out.lines[0].starts_with("cannot create scratch file"),
            "{:?}",
            out.lines
        );
    }

    fn proc_alive(pid: i32) -> bool {
        // Gone, or a zombie waiting for a (container) init that never reaps.
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => false,
            Ok(stat) => {
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().next());
                !matches!(state, Some("Z") | Some("X"))
            }
        }
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let fx = Fixture::new();
        let pidfile = fx.path().join("child.pid");
        let argv = fx.script(
            "hang",
            &format!(
                "echo 'started normal'\nsleep 30 &\necho $! > {}\nsleep 30\n",
                pidfile.display()
            ),
        );
        let spec = fx.spec("hang", argv, Duration::from_secs(1), Mode::Lines);
        let started = Instant::now();
        let out = fx.run(&spec);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "timeout not enforced"
        );
        assert_eq!(out.level, Level::Unknown);
        assert_eq!(
            out.lines,
            vec![s("started normal"), s("timeout: killed after 1s unknown")]
        );

        let pid: i32 = fs::read_to_string(&pidfile)
            .expect("script wrote the background pid")
            .trim()
            .parse()
            .expect("pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc_alive(pid) {
            assert!(
                Instant::now() < deadline,
                "background child {pid} survived the timeout"
            );
            thread::sleep(Duration::from_millis(20));
        }
        let gone = nix::sys::signal::kill(Pid::from_raw(pid), None);
        assert!(gone == Err(Errno::ESRCH) || !proc_alive(pid));
    }

    /// An agent killed by `kill -9` leaves its collector run going (its
    /// own process group). Were the scratch file shared, the restarted
    /// agent's first run would print `1`, the orphan `2` into the same
    /// file, and the agent would store `2` as its run's output, losing `1`:
    /// each run writes its own files.
    #[test]
    fn an_orphaned_run_cannot_write_into_the_next_run_of_its_collector() {
        let fx = Fixture::new();
        let late = fx.script("late", "sleep 0.4\necho '2 normal'\n");
        let orphan = Running::start(
            &fx.spec("counter", late, LONG, Mode::Lines),
            &[],
            fx.path(),
            fx.path(),
        );
        let orphan_pid = match &orphan.state {
            State::Started(child) => child_pid(child),
            _ => panic!("the orphan did not start"),
        };
        // kill -9 of its agent: no destructor runs, the run goes on.
        std::mem::forget(orphan);
        let mine = fx.script("mine", "echo '1 normal'\nsleep 0.8\n");
        let out = fx.run(&fx.spec("counter", mine, LONG, Mode::Lines));
        kill_group(orphan_pid);
        let _ = nix::sys::wait::waitpid(orphan_pid, None);
        assert_eq!(out.lines, vec![s("1 normal")], "{out:?}");
    }

    #[test]
    fn timeout_message_is_humanised() {
        let fx = Fixture::new();
        let spec = fx.spec(
            "slow",
            vec![s("sleep"), s("30")],
            Duration::from_millis(500),
            Mode::Nagios,
        );
        let out = fx.run(&spec);
        assert_eq!(out.level, Level::Unknown);
        assert_eq!(out.lines, vec![s("timeout: killed after 500ms unknown")]);
    }

    #[test]
    fn leftover_background_processes_are_killed_after_exit() {
        let fx = Fixture::new();
        let pidfile = fx.path().join("bg.pid");
        let out = fx.lines(
            "bg",
            &format!(
                "sleep 30 &\necho $! > {}\necho 'done normal'\n",
                pidfile.display()
            ),
        );
        assert_eq!(out.level, Level::Normal);
        let pid: i32 = fs::read_to_string(&pidfile)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc_alive(pid) {
            assert!(Instant::now() < deadline, "background child {pid} leaked");
            thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn big_output_does_not_block_and_is_truncated() {
        let fx = Fixture::new();
        // 1 MiB in 16384 lines of 63 chars + '\n': a pipe would block at 64 KiB.
        let out = fx.lines(
            "big",
            "i=0\nline=$(printf '%056d normal' 0)\nwhile [ $i -lt 16384 ]; do echo \"$line\"; i=$((i+1)); done\n",
        );
        assert_eq!(out.level, Level::Normal);
        assert_eq!(out.lines.len(), MAX_OUTPUT_LINES);
        // Its 1 MiB scratch file went with the run.
        assert_eq!(scratch_files(fx.path(), "big"), Vec::<String>::new());

        // Long lines: the byte cap bites before the line cap, at a line end.
        let out = fx.lines(
            "wide",
            "head -c 1048576 /dev/zero | tr '\\0' 'x' | fold -w 1000 | sed 's/$/ note/'\n",
        );
        let total: usize = out.lines.iter().map(|l| l.len() + 1).sum();
        assert!(total as u64 <= MAX_OUTPUT_BYTES, "{total}");
        assert!(out.lines.len() >= 60);
        assert!(out.lines.iter().all(|l| l.len() == 1005));
        assert_eq!(out.level, Level::Note);
    }

    #[test]
    fn runaway_writer_is_killed() {
        let fx = Fixture::new();
        let spec = fx.spec("yes", vec![s("yes"), s("y normal")], LONG, Mode::Lines);
        let out = fx.run(&spec);
        assert_eq!(out.level, Level::Unknown);
        let last = out.lines.last().expect("lines");
        assert!(
            last.starts_with("output too large: killed after writing"),
            "{last}"
        );
        assert!(out.lines.len() > 1 && out.lines[0] == "y normal");
    }

    #[test]
    fn nagios_exit_codes() {
        let fx = Fixture::new();
        let cases = [
            (0, Level::Normal),
            (1, Level::Warning),
            (2, Level::Critical),
            (3, Level::Unknown),
            (7, Level::Unknown),
        ];
        for (code, level) in cases {
            let out = fx.nagios(
                &format!("n{code}"),
                &format!("echo 'LOAD X - load average: 0.10|load1=0.1;5;10;0;'\necho 'long text'\nexit {code}\n"),
            );
            assert_eq!(out.level, level, "exit {code}");
            assert_eq!(
                out.lines,
                vec![format!(
                    "LOAD X - load average: 0.10|load1=0.1;5;10;0; {level}"
                )]
            );
        }
        let out = fx.nagios("quiet", "exit 2\n");
        assert_eq!(out.lines, vec![s("no output critical")]);
        let out = fx.nagios("stderr", "echo 'check_x: bad option -q' >&2\nexit 3\n");
        assert_eq!(out.lines, vec![s("check_x: bad option -q unknown")]);
        let out = fx.nagios("sig", "kill -9 $$\n");
        assert_eq!(out.level, Level::Unknown);
    }

    fn plugin(name: &str) -> Option<String> {
        let path = format!("/usr/lib/nagios/plugins/{name}");
        if Path::new(&path).exists() {
            Some(path)
        } else {
            crate::skipped(&format!(
                "{path} missing (apt-get install monitoring-plugins-basic)"
            ));
            None
        }
    }

    fn run_plugin(fx: &Fixture, command: &str) -> Outcome {
        let spec = fx.spec(
            "plugin",
            crate::config::split_command(command).expect("valid command"),
            LONG,
            Mode::Nagios,
        );
        let out = fx.run(&spec);
        assert_eq!(out.lines.len(), 1, "{out:?}");
        out
    }

    #[test]
    fn real_check_load() {
        let Some(path) = plugin("check_load") else {
            return;
        };
        let fx = Fixture::new();
        let out = run_plugin(
            &fx,
            &format!("{path} -w 10000,10000,10000 -c 20000,20000,20000"),
        );
        assert_eq!(out.level, Level::Normal, "{out:?}");
        assert!(out.lines[0].starts_with("LOAD OK"), "{out:?}");
        assert!(out.lines[0].ends_with(" normal"));
        // A bad option is a plugin error: unknown, with the plugin's words.
        let out = run_plugin(&fx, &format!("{path} --no-such-option"));
        assert_eq!(out.level, Level::Unknown, "{out:?}");
    }

    #[test]
    fn real_check_disk_users_procs() {
        let fx = Fixture::new();
        if let Some(path) = plugin("check_disk") {
            let out = run_plugin(&fx, &format!("{path} -w 1% -c 0% -p /"));
            assert!(out.lines[0].starts_with("DISK"), "{out:?}");
            assert_ne!(out.level, Level::Unknown, "{out:?}");
        }
        if let Some(path) = plugin("check_users") {
            let out = run_plugin(&fx, &format!("{path} -w 10000 -c 20000"));
            assert!(out.lines[0].starts_with("USERS OK"), "{out:?}");
            assert_eq!(out.level, Level::Normal);
        }
        if let Some(path) = plugin("check_procs") {
            let out = run_plugin(&fx, &format!("{path} -w 1000000 -c 2000000"));
            assert!(out.lines[0].starts_with("PROCS OK"), "{out:?}");
            assert_eq!(out.level, Level::Normal);
            // Impossible thresholds: at least one process always runs.
            let out = run_plugin(&fx, &format!("{path} -w 0 -c 0"));
            assert_eq!(out.level, Level::Critical, "{out:?}");
            assert!(out.lines[0].ends_with(" critical"));
        }
        if let Some(path) = plugin("check_swap") {
            // No swap in many containers: -n ok keeps that from failing.
            let out = run_plugin(&fx, &format!("{path} -w 10% -c 5% -n ok"));
            assert!(out.lines[0].starts_with("SWAP"), "{out:?}");
            assert_ne!(out.level, Level::Unknown, "{out:?}");
        }
    }

    #[test]
    fn render_prefixes_every_line() {
        let finished_at =
            DateTime::parse_from_rfc3339("2026-11-21T10:31:09.734+08:00").expect("time");
        let out = Outcome {
            finished_at,
            level: Level::Normal,
            lines: vec![s("0.02 0.08 0.08 31.56 49.38 normal"), s("second normal")],
        };
        assert_eq!(
            out.render(),
            "2026-11-21T10:31:09+08:00 0.02 0.08 0.08 31.56 49.38 normal\n\
             2026-11-21T10:31:09+08:00 second normal\n"
        );
        let utc = Outcome {
            finished_at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").expect("time"),
            level: Level::Note,
            lines: vec![s("x note")],
        };
        assert_eq!(utc.render(), "2026-01-02T03:04:05+00:00 x note\n");
    }

    #[test]
    fn render_of_a_real_run_parses_back() {
        let fx = Fixture::new();
        let out = fx.lines("x", "echo 'a normal'\necho 'b note'\n");
        let text = out.render();
        assert_eq!(text.lines().count(), 2);
        for line in text.lines() {
            let (stamp, rest) = line.split_once(' ').expect("stamp and text");
            DateTime::parse_from_rfc3339(stamp).expect("RFC 3339 stamp");
            assert!(rest == "a normal" || rest == "b note");
        }
    }

    #[test]
    fn next_due_stays_on_the_grid_without_bursts() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // On time: the next grid point.
        assert_eq!(next_due_after(t0, ms(100), t0), t0 + ms(100));
        assert_eq!(next_due_after(t0, ms(100), t0 + ms(30)), t0 + ms(100));
        // Late by 3.5 intervals: skip the missed points, no catch-up.
        assert_eq!(next_due_after(t0, ms(100), t0 + ms(350)), t0 + ms(400));
        // Exactly on a grid point: strictly after now.
        assert_eq!(next_due_after(t0, ms(100), t0 + ms(400)), t0 + ms(500));
        // A zero interval cannot spin.
        assert!(next_due_after(t0, Duration::ZERO, t0) > t0);
    }

    #[test]
    fn schedule_runs_collectors_repeatedly_one_at_a_time() {
        let fx = Fixture::new();
        let locks = fx.path().join("locks");
        fs::create_dir(&locks).expect("mkdir");
        // Each run holds a lock dir while it works; finding it taken means two
        // runs of the same collector overlapped.
        let body = |name: &str, secs: &str| {
            format!(
                "l={}/{name}\nif ! mkdir \"$l\" 2>/dev/null; then echo 'concurrent run critical'; exit 0; fi\n\
                 sleep {secs}\nrmdir \"$l\"\necho \"$RUN_TAG ok normal\"\n",
                locks.display()
            )
        };
        let mut fast_a = fx.spec(
            "fast_a",
            fx.script("fast_a", &body("fast_a", "0.01")),
            LONG,
            Mode::Lines,
        );
        let mut fast_b = fx.spec(
            "fast_b",
            fx.script("fast_b", &body("fast_b", "0.01")),
            LONG,
            Mode::Lines,
        );
        let mut slow = fx.spec(
            "slow",
            fx.script("slow", &body("slow", "0.35")),
            LONG,
            Mode::Lines,
        );
        for spec in [&mut fast_a, &mut fast_b, &mut slow] {
            spec.interval = Duration::from_millis(100);
        }
        let specs = vec![fast_a, fast_b, slow];
        let env = [(s("RUN_TAG"), s("tag"))];

        let stop = Arc::new(AtomicBool::new(false));
        let stopper = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(1000));
                stop.store(true, Ordering::Relaxed);
            })
        };
        let sink_calls = AtomicUsize::new(0);
        let mut seen: Vec<(String, Outcome)> = Vec::new();
        let mut sink = |spec: &CollectorSpec, outcome: Outcome| {
            sink_calls.fetch_add(1, Ordering::Relaxed);
            seen.push((spec.name.clone(), outcome));
        };
        let began = Instant::now();
        run_schedule(&specs, &env, fx.path(), fx.path(), &stop, &mut sink);
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "run_schedule did not stop"
        );
        stopper.join().expect("stopper thread");

        let count = |name: &str| seen.iter().filter(|(n, _)| n == name).count();
        assert!(count("fast_a") >= 2, "fast_a ran {} times", count("fast_a"));
        assert!(count("fast_b") >= 2, "fast_b ran {} times", count("fast_b"));
        assert!(count("slow") >= 1, "slow ran {} times", count("slow"));
        for (name, outcome) in &seen {
            check_invariants(outcome);
            assert_eq!(
                outcome.lines,
                vec![s("tag ok normal")],
                "{name}: {outcome:?}"
            );
            assert_eq!(outcome.level, Level::Normal);
        }
        assert_eq!(sink_calls.load(Ordering::Relaxed), seen.len());
    }

    #[test]
    fn schedule_stops_at_once_and_kills_running_children() {
        let fx = Fixture::new();
        let pidfile = fx.path().join("hang.pid");
        let argv = fx.script(
            "hang",
            &format!("echo $$ > {}\nsleep 30\n", pidfile.display()),
        );
        let mut spec = fx.spec("hang", argv, LONG, Mode::Lines);
        spec.interval = Duration::from_millis(50);
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = {
            let stop = Arc::clone(&stop);
            let pidfile = pidfile.clone();
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                while !pidfile.exists() && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(10));
                }
                thread::sleep(Duration::from_millis(200));
                stop.store(true, Ordering::Relaxed);
            })
        };
        let mut outcomes = 0;
        run_schedule(&[spec], &[], fx.path(), fx.path(), &stop, &mut |_, _| {
            outcomes += 1
        });
        stopper.join().expect("stopper thread");
        assert_eq!(outcomes, 0, "a killed-at-shutdown run is not an outcome");
        let pid: i32 = fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("pid");
        assert!(!proc_alive(pid), "child {pid} survived shutdown");
    }

    /// The scratch files in `dir` of runs of `name`.
    fn scratch_files(dir: &Path, name: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("scratch dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{name}.")) && !n.ends_with(".sh"))
            .collect();
        names.sort();
        names
    }

    /// Issue 12, item 5: every run of a type wrote `<name>.out`, so a run
    /// orphaned by `kill -9` of its agent wrote into the next agent's run.
    #[test]
    fn each_run_has_its_own_scratch_files_and_removes_them() {
        let fx = Fixture::new();
        let scratch = fx.path().join("run");
        fs::create_dir(&scratch).unwrap();
        let argv = fx.script("slow", "sleep 0.3\necho late normal\n");
        let spec = fx.spec("slow", argv, LONG, Mode::Lines);
        let mut first = Running::start(&spec, &[], fx.path(), &scratch);
        let mut second = Running::start(&spec, &[], fx.path(), &scratch);
        let files = scratch_files(&scratch, "slow");
        assert_eq!(files.len(), 4, "{files:?}");
        assert_ne!(first.out_path, second.out_path);
        // Neither sees the other's output, and both clean up.
        let give_up = Instant::now() + Duration::from_secs(20);
        let (mut a, mut b) = (None, None);
        while a.is_none() || b.is_none() {
            a = a.or_else(|| first.poll());
            b = b.or_else(|| second.poll());
            assert!(Instant::now() < give_up, "runs never finished");
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(a.unwrap().lines, vec!["late normal".to_string()]);
        assert_eq!(b.unwrap().lines, vec!["late normal".to_string()]);
        drop((first, second));
        assert_eq!(scratch_files(&scratch, "slow"), Vec::<String>::new());
    }

    #[test]
    fn a_scratch_file_that_exists_is_never_shared() {
        let fx = Fixture::new();
        let spec = fx.spec("x", vec!["/bin/true".to_string()], LONG, Mode::Lines);
        // The name the next run will take, already there.
        let next = RUN_NUMBER.load(Ordering::Relaxed);
        let taken = fx
            .path()
            .join(format!("x.{}-{next}.out", std::process::id()));
        fs::write(&taken, "someone else's\n").unwrap();
        let mut run = Running::start(&spec, &[], fx.path(), fx.path());
        if run.out_path == taken {
            let out = run.poll().expect("refused at once");
            assert!(
                out.lines[0].starts_with("cannot create scratch file"),
                "{:?}",
                out.lines
            );
        } // else another test thread took that number first; nothing to see
        drop(run);
        assert_eq!(fs::read_to_string(&taken).unwrap(), "someone else's\n");
    }

    #[test]
    fn clean_scratch_dir_ends_an_orphaned_run_and_removes_its_files() {
        let fx = Fixture::new();
        let scratch = fx.path().join("run");
        fs::create_dir(&scratch).unwrap();
        let pidfile = fx.path().join("orphan.pid");
        let argv = fx.script(
            "orphan",
            &format!(
                "sleep 30 &\necho $! > {}\nwait\necho orphan normal\n",
                pidfile.display()
            ),
        );
        let spec = fx.spec("orphan", argv, LONG, Mode::Lines);
        let mut run = Running::start(&spec, &[], fx.path(), &scratch);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pidfile.exists() || fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            assert!(Instant::now() < deadline, "orphan never started");
            thread::sleep(Duration::from_millis(10));
        }
        let sleeper: i32 = fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The agent "dies": its run is forgotten without being killed.
        let child = match std::mem::replace(&mut run.state, State::Done) {
            State::Started(child) => child,
            _ => panic!("not running"),
        };
        std::mem::forget(run);
        fs::write(scratch.join("stale.err"), "").unwrap();
        // A process of another scratch dir is no business of ours.
        let other = fx.path().join("other");
        fs::create_dir(&other).unwrap();
        let stranger_spec = fx.spec(
            "stranger",
            vec!["sleep".into(), "30".into()],
            LONG,
            Mode::Lines,
        );
        let mut stranger = Running::start(&stranger_spec, &[], fx.path(), &other);

        let ended = clean_scratch_dir(&scratch).unwrap();
        assert_eq!(ended, 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc_alive(sleeper) {
            assert!(Instant::now() < deadline, "orphan {sleeper} survived");
            thread::sleep(Duration::from_millis(10));
        }
        let mut child = child;
        let _ = child.wait();
        assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);
        assert!(stranger.poll().is_none(), "a stranger's run was ended");
        stranger.kill();
    }
}
