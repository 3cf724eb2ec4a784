//! Child processes that are always stopped, and what /proc says about them.
//!
//! Every process the bench starts is a [`Proc`]: dropped, it is stopped
//! (SIGTERM, a bounded wait, then SIGKILL), so a panic unwinding through a
//! phase still ends its agents. A Ctrl-C or SIGTERM of the bench runs no
//! destructors, so every live PID is also kept in [`LIVE`] and the signal
//! handler kills them all before the bench exits.

use std::collections::BTreeSet;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// USER_HZ: /proc CPU times are in 1/100 s on Linux.
pub const TICK_MS: f64 = 10.0;

/// PIDs started and not yet reaped, for the signal handler.
static LIVE: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
/// Temporary directories the signal handler removes (their `TempDir`
/// guards do not run when the bench is interrupted).
static SCRATCH: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Have the signal handler remove `dir` too.
pub fn remove_on_interrupt(dir: &Path) {
    SCRATCH
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir.to_path_buf());
}

/// On Ctrl-C or SIGTERM: SIGKILL every child still running, remove the
/// temporary directories, then exit.
pub fn install_interrupt_handler() {
    let result = ctrlc::set_handler(|| {
        let pids: Vec<u32> = live().iter().copied().collect();
        eprintln!(
            "cluster bench: interrupted, killing {} child process(es)",
            pids.len()
        );
        for pid in pids {
            signal(pid, Signal::SIGKILL);
        }
        // Killed agents may still be closing files; a second pass catches
        // what the first could not remove.
        thread::sleep(Duration::from_millis(200));
        for dir in SCRATCH.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if fs::remove_dir_all(dir).is_err() {
                let _ = fs::remove_dir_all(dir);
            }
        }
        std::process::exit(130);
    });
    if let Err(e) = result {
        eprintln!("cluster bench: no interrupt handler ({e}); Ctrl-C may leave agents running");
    }
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

/// A child process, stopped when dropped.
pub struct Proc {
    pub child: Child,
    pub label: String,
    reaped: bool,
}

impl Proc {
    pub fn spawn(command: &mut Command, label: &str) -> Result<Proc, String> {
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {label}: {e}"))?;
        live().insert(child.id());
        Ok(Proc {
            child,
            label: label.to_string(),
            reaped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.mark_reaped();
                Some(status)
            }
            Ok(None) => None,
            // ECHILD: somebody else reaped it; nothing left to wait for.
            Err(_) => {
                self.mark_reaped();
                None
            }
        }
    }

    fn mark_reaped(&mut self) {
        self.reaped = true;
        live().remove(&self.child.id());
    }

    pub fn running(&mut self) -> bool {
        self.try_reap();
        !self.reaped
    }

    /// `kill -9` and reap (bounded).
    pub fn kill9(&mut self) {
        if !self.reaped {
            signal(self.pid(), Signal::SIGKILL);
            wait_all(std::slice::from_mut(self), Duration::from_secs(5));
        }
    }

    /// Wait for the process to exit by itself, at most `limit`; meanwhile
    /// call `sample` every few milliseconds (to read its /proc entries
    /// while it still has them). Returns the exit status and when it
    /// exited, or None on timeout (the process is then killed).
    pub fn wait_sampling(
        &mut self,
        limit: Duration,
        mut sample: impl FnMut(u32),
    ) -> Option<(ExitStatus, Instant)> {
        let pid = self.pid();
        let deadline = Instant::now() + limit;
        // A blocking wait on its own thread sees the exit at once; polling
        // try_wait would add up to a poll period to short cycles.
        let result = thread::scope(|s| {
            let waiter = s.spawn(|| {
                let status = self.child.wait();
                (status, Instant::now())
            });
            while !waiter.is_finished() {
                sample(pid);
                if Instant::now() > deadline {
                    signal(pid, Signal::SIGKILL);
                }
                thread::sleep(Duration::from_millis(5));
            }
            waiter.join().expect("waiter thread")
        });
        self.mark_reaped();
        match result {
            (Ok(status), at) if at <= deadline => Some((status, at)),
            _ => None,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        stop_all(std::slice::from_mut(self));
    }
}

/// Stop every process: SIGTERM to all at once (agents and masters stop
/// cleanly on it), up to 15 s for all to exit, then SIGKILL the rest.
pub fn stop_all(procs: &mut [Proc]) {
    for p in procs.iter_mut() {
        if !p.reaped {
            signal(p.pid(), Signal::SIGTERM);
        }
    }
    if !wait_all(procs, Duration::from_secs(15)) {
        for p in procs.iter_mut().filter(|p| !p.reaped) {
            eprintln!(
                "cluster bench: {} ({}) ignored SIGTERM; killing it",
                p.label,
                p.pid()
            );
            signal(p.pid(), Signal::SIGKILL);
        }
        if !wait_all(procs, Duration::from_secs(5)) {
            eprintln!("cluster bench: some processes did not exit after SIGKILL");
        }
    }
}

/// Reap all of `procs`, at most `limit`; true if all are gone.
fn wait_all(procs: &mut [Proc], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let mut left = 0;
        for p in procs.iter_mut() {
            p.try_reap();
            if !p.reaped {
                left += 1;
            }
        }
        if left == 0 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Wait until something accepts TCP connections on `addr`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The numeric fields of /proc/PID/stat after the command name; index 0
/// is field 3 (state), so utime is [11], stime [12], cutime [13], cstime [14].
fn stat_fields(pid: &str) -> Vec<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    after
        .split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .collect()
}

fn sum_fields(fields: &[u64], indexes: &[usize]) -> u64 {
    indexes.iter().filter_map(|&i| fields.get(i)).sum()
}

/// utime + stime of a process, in ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    sum_fields(&stat_fields(&pid.to_string()), &[11, 12])
}

/// utime + stime + cutime + cstime: the process and the children it has
/// reaped (for an agent, its collector runs).
pub fn cpu_ticks_with_children(pid: u32) -> u64 {
    sum_fields(&stat_fields(&pid.to_string()), &[11, 12, 13, 14])
}

/// utime + stime of this process (all its threads), in ticks.
pub fn own_ticks() -> u64 {
    sum_fields(&stat_fields("self"), &[11, 12])
}

/// CPU of this bench's own reaped children (cutime + cstime), in ticks:
/// a child's CPU lands here when it is waited for, so the difference
/// around one child's run is that child's CPU (and its reaped descendants').
pub fn own_children_ticks() -> u64 {
    sum_fields(&stat_fields("self"), &[13, 14])
}

/// Time on CPU, in ns, of an agent's threads that serve the master (the
/// accept threads and the worker pool), from /proc/PID/task/*/schedstat:
/// the cost of pulls without the collectors' work in the main thread.
pub fn serving_threads_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            let comm = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            comm.starts_with("accept-") || comm.starts_with("agent-worker")
        })
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A `VmRSS:`-style line of /proc/PID/status, in KiB (0 if gone).
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

/// Resident memory of a process and all its descendants, in KiB.
pub fn rss_tree_kib(pid: u32) -> u64 {
    let mut total = 0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        total += status_kib(p, "VmRSS");
        if let Ok(children) = fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}

/// The machine's CPU time so far, from the first line of /proc/stat:
/// (busy, total) in ticks; idle and iowait are not busy.
pub fn machine_ticks() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let total: u64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The busy share of the machine's CPU time between two `machine_ticks`.
pub fn busy_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        return 0.0;
    }
    after.0.saturating_sub(before.0) as f64 / total as f64
}

/// The 1, 5 and 15 minute load averages, as `uptime` shows them.
pub fn loadavg() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Processes on the machine (proc.sh's `ps` reads every one of them).
pub fn process_count() -> usize {
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (the registry's time base).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
