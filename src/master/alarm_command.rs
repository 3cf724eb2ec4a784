//! The bounded runner of `alarm_command`: a fixed number of threads and
//! one bound on the alarms waiting for them, so a burst of alarms (a spool
//! of repeats delivered at once after an outage) cannot start unbounded
//! threads or processes.
//!
//! - **Order**: the alarms of one host and type always go to the same
//!   thread (a hash of the two picks it), so their commands run one after
//!   another in the order the alarms were stored.
//! - **Queue full**: a new alarm waits up to `QUEUE_FULL_WAIT` for room
//!   (holding its alarm connection that long, which slows the agent down
//!   a little); if there is still none, its command is *skipped*: logged
//!   at error level with a running count and noted as handled. The alarm
//!   itself is never lost: it is in `alarms.log` (fsynced) before it is
//!   queued. We do not block longer: the connection's worker is one the
//!   master's other connections need too.
//! - **Crash**: a command is noted as done (`.alarm-commands.done`,
//!   appended and fdatasynced) right after its process has started. One
//!   queued or not yet noted when the master dies runs at the next start;
//!   one that started in the instant before its note was durable runs a
//!   second time (the command gets `PIHEALTH_ID` to recognise a repeat).
//!   The note is written right after the spawn returns and then synced:
//!   a kill of the master is covered once it is written (microseconds
//!   after the process started), a power loss once it is synced (one
//!   fdatasync later). `log::debug!` gives both for every command
//!   ("double-run window"), measured in RELIABILITY.md.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;

use crate::protocol::Alarm;

/// How long a new alarm may wait for room in a full queue before its
/// command is skipped (see the module doc).
pub(crate) const QUEUE_FULL_WAIT: Duration = Duration::from_millis(250);

/// `.alarm-commands.done`, appended to through one open file: one line per
/// alarm whose command has started (or was skipped), each fdatasynced.
pub(crate) struct DoneRecord {
    path: PathBuf,
    /// Notes are appended through a shared `&File` (O_APPEND: each note
    /// one write, whole), so one thread's fdatasync never holds up another
    /// thread's note; the write lock is only for `replace`.
    file: RwLock<File>,
}

impl DoneRecord {
    pub(crate) fn open(path: &Path) -> io::Result<DoneRecord> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| crate::storage::with_path(e, path))?;
        Ok(DoneRecord {
            path: path.to_path_buf(),
            file: RwLock::new(file),
        })
    }

    /// Replace the whole record by `text` (atomically, synced) and go on
    /// appending to the new file.
    pub(crate) fn replace(&self, text: &str) -> io::Result<()> {
        let mut file = crate::sync::write(&self.file);
        crate::storage::write_atomic(&self.path, text.as_bytes(), true)?;
        *file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| crate::storage::with_path(e, &self.path))?;
        Ok(())
    }

    /// Note `id` as handled, durably. Errors are logged: the worst a lost
    /// note does is run the command once more at the next start. Returns
    /// when the note was written (in the page cache: from then on it
    /// survives the master being killed; after the fdatasync, a power
    /// loss too).
    pub(crate) fn mark(&self, id: &str) -> Instant {
        let file = crate::sync::read(&self.file);
        let written = (&*file).write_all(format!("{id}\n").as_bytes());
        let at = Instant::now();
        if let Err(e) = written.and_then(|()| file.sync_data()) {
            log::error!("cannot write {}: {e}", self.path.display());
        }
        at
    }
}

/// What the runner's threads share.
struct Shared {
    argv: Vec<String>,
    timeout: Duration,
    done: Arc<DoneRecord>,
    queue: QueueRoom,
}

/// The bound on alarms waiting, counted over all threads' queues together
/// (one queue per thread keeps the order per host and type; one bound for
/// all of them means a burst on a few hosts and types can use all of it).
struct QueueRoom {
    waiting: Mutex<usize>,
    freed: Condvar,
    capacity: usize,
}

impl QueueRoom {
    /// Take a place, waiting up to `limit` (`None`: as long as it takes).
    fn take(&self, limit: Option<Duration>) -> bool {
        let deadline = limit.map(|l| Instant::now() + l);
        let mut waiting = crate::sync::lock(&self.waiting);
        while *waiting >= self.capacity {
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    left
                }
                None => Duration::from_secs(1),
            };
            waiting = self
                .freed
                .wait_timeout(waiting, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *waiting += 1;
        true
    }

    fn give_back(&self) {
        let mut waiting = crate::sync::lock(&self.waiting);
        *waiting = waiting.saturating_sub(1);
        self.freed.notify_one();
    }
}

struct Job {
    alarm: Alarm,
    /// When the alarm was durable in `alarms.log`.
    stored: Instant,
    /// Told once the command has started and been noted done.
    started: Option<Sender<()>>,
}

/// A fixed set of threads running `alarm_command`, each from its own
/// bounded queue.
pub(crate) struct CommandRunner {
    lanes: Vec<Sender<Job>>,
    shared: Arc<Shared>,
    skipped: AtomicU64,
}

impl CommandRunner {
    /// `workers` threads, `queue` alarms waiting at most in all.
    pub(crate) fn start(
        argv: Vec<String>,
        timeout: Duration,
        workers: usize,
        queue: usize,
        done: Arc<DoneRecord>,
    ) -> io::Result<CommandRunner> {
        let workers = workers.max(1);
        let shared = Arc::new(Shared {
            argv,
            timeout,
            done,
            queue: QueueRoom {
                waiting: Mutex::new(0),
                freed: Condvar::new(),
                capacity: queue.max(1),
            },
        });
        let mut lanes = Vec::with_capacity(workers);
        for i in 0..workers {
            // Unbounded channels: `QueueRoom` bounds them together.
            let (tx, rx) = crossbeam::channel::unbounded::<Job>();
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("alarm-command-{i}"))
                .spawn(move || {
                    for job in rx {
                        shared.queue.give_back();
                        shared.run(job);
                    }
                })?;
            lanes.push(tx);
        }
        Ok(CommandRunner {
            lanes,
            shared,
            skipped: AtomicU64::new(0),
        })
    }

    fn lane(&self, alarm: &Alarm) -> &Sender<Job> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&alarm.host, &alarm.log_type).hash(&mut h);
        &self.lanes[(h.finish() % self.lanes.len() as u64) as usize]
    }

    /// Queue the command of a newly stored alarm (see the module doc for a
    /// full queue). `stored` is when it became durable in `alarms.log`.
    pub(crate) fn submit(&self, alarm: Alarm, stored: Instant) {
        if self.shared.queue.take(Some(QUEUE_FULL_WAIT)) {
            let job = Job {
                alarm,
                stored,
                started: None,
            };
            match self.lane(&job.alarm).send(job) {
                Ok(()) => {}
                Err(e) => self.skip(&e.0.alarm, "its thread is gone"),
            }
        } else {
            self.skip(&alarm, "the queue is full");
        }
    }

    fn skip(&self, alarm: &Alarm, why: &str) {
        let skipped = self.skipped.fetch_add(1, Ordering::Relaxed) + 1;
        log::error!(
            "alarm_command skipped for alarm {} from {} ({} {}): {why} ({} alarms waiting at most; {skipped} skipped since the master started); the alarm is in alarms.log",
            alarm.id,
            alarm.host,
            alarm.log_type,
            alarm.level,
            self.shared.queue.capacity
        );
        self.shared.done.mark(&alarm.id);
    }

    /// Run the commands found not done at start (stored before a crash),
    /// waiting for room however long it takes (never skipping), and return
    /// once each has started and been noted done: commands one after
    /// another per thread, so at most (alarms per thread) x
    /// `alarm_command_timeout`.
    pub(crate) fn run_leftovers(&self, alarms: Vec<Alarm>) {
        let mut waits = Vec::new();
        for alarm in alarms {
            self.shared.queue.take(None);
            let (tx, rx) = crossbeam::channel::bounded(1);
            let job = Job {
                alarm,
                stored: Instant::now(),
                started: Some(tx),
            };
            match self.lane(&job.alarm).send(job) {
                Ok(()) => waits.push(rx),
                Err(e) => log::error!("alarm_command runner gone; alarm {} not run", e.0.alarm.id),
            }
        }
        for rx in waits {
            let _ = rx.recv();
        }
    }

    /// Commands skipped since start because the queue was full.
    #[cfg(test)]
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn run(&self, job: Job) {
        let alarm = &job.alarm;
        let mut command = Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .env("PIHEALTH_HOST", &alarm.host)
            .env("PIHEALTH_TYPE", &alarm.log_type)
            .env("PIHEALTH_LEVEL", &alarm.level)
            .env("PIHEALTH_MESSAGE", &alarm.message)
            .env("PIHEALTH_TIME", &alarm.time)
            .env("PIHEALTH_ID", &alarm.id)
            .stdin(Stdio::null());
        let starting = Instant::now();
        let spawned = command.spawn();
        // Noted at once, started or not: a command that cannot start now
        // would not start at the next start either.
        let written = self.done.mark(&alarm.id);
        let noted = Instant::now();
        if let Some(started) = &job.started {
            let _ = started.send(());
        }
        log::debug!(
            "alarm {}: alarm_command started {:?} after the alarm was stored; double-run window: {:?} from the process start to the note written (a kill of the master), {:?} to the note durable (a power loss)",
            alarm.id,
            starting.duration_since(job.stored),
            written.duration_since(starting),
            noted.duration_since(starting)
        );
        match spawned {
            Ok(child) => self.reap(child),
            Err(e) => log::error!("alarm_command {:?} cannot start: {e}", self.argv[0]),
        }
    }

    /// Wait for the command, killing it if it overstays `timeout`. Polled
    /// with a growing pause (1 ms to 50 ms), so a quick command frees its
    /// thread within a millisecond or two.
    fn reap(&self, mut child: Child) {
        let program = &self.argv[0];
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        log::warn!("alarm_command {program:?} exited with {status}");
                    }
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                _ => {
                    log::warn!("alarm_command {program:?} killed after {:?}", self.timeout);
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn alarm(id: &str, host: &str) -> Alarm {
        Alarm {
            id: id.into(),
            host: host.into(),
            log_type: "cpu".into(),
            level: "warning".into(),
            message: "m".into(),
            time: chrono::Local::now().to_rfc3339(),
        }
    }

    fn hook(dir: &Path, body: &str) -> Vec<String> {
        let path = dir.join("hook.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        vec![path.display().to_string()]
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn commands_of_one_host_and_type_run_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("ran");
        let argv = hook(
            dir.path(),
            &format!("echo \"$PIHEALTH_ID\" >> {}", ran.display()),
        );
        let done = Arc::new(DoneRecord::open(&dir.path().join("done")).unwrap());
        let runner = CommandRunner::start(argv, Duration::from_secs(5), 3, 100, done).unwrap();
        for i in 0..40 {
            runner.submit(alarm(&format!("a{i}"), "pi1"), Instant::now());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while lines(&ran).len() < 40 {
            assert!(Instant::now() < deadline, "{} ran", lines(&ran).len());
            thread::sleep(Duration::from_millis(20));
        }
        let expected: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
        assert_eq!(lines(&ran), expected);
        assert_eq!(lines(&dir.path().join("done")), expected);
        assert_eq!(runner.skipped(), 0);
    }

    #[test]
    fn a_full_queue_skips_the_command_and_notes_it_handled() {
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("ran");
        let argv = hook(
            dir.path(),
            &format!("echo \"$PIHEALTH_ID\" >> {}; sleep 1", ran.display()),
        );
        let done = Arc::new(DoneRecord::open(&dir.path().join("done")).unwrap());
        let runner = CommandRunner::start(argv, Duration::from_secs(5), 1, 1, done).unwrap();
        // One runs, one waits in the queue, the rest find it full.
        for i in 0..4 {
            runner.submit(alarm(&format!("b{i}"), "pi1"), Instant::now());
        }
        assert_eq!(runner.skipped(), 2);
        let noted = lines(&dir.path().join("done"));
        assert!(noted.contains(&"b2".to_string()) && noted.contains(&"b3".to_string()));
    }
}
