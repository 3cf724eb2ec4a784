//! Test helpers: a temp directory per test, real `pihealth` processes on
//! loopback addresses, configs, and reading what landed on disk.
//!
//! Each test takes its own block of addresses `127.0.BLOCK.x` (master on
//! `.1`, agents on `.2`, `.3`, … each on ports 8000/8001), so tests run in
//! parallel without sharing a port.

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_pihealth");
pub const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");

/// Generous bound for anything that should happen within a few intervals;
/// only reached when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub block: u8,
}

pub fn master_ip(block: u8) -> String {
    format!("127.0.{block}.1")
}

pub fn agent_ip(block: u8, i: usize) -> String {
    format!("127.0.{block}.{}", i + 2)
}

impl Cluster {
    /// A fresh directory with a key; `block` picks the address block.
    pub fn new(block: u8) -> Cluster {
        let mut dir = tempfile::Builder::new()
            .prefix("pihealth-it-")
            .tempdir()
            .expect("temp dir");
        // PIHEALTH_KEEP_TEST_DIRS=1 keeps the directories for a post-mortem.
        if std::env::var_os("PIHEALTH_KEEP_TEST_DIRS").is_some() {
            dir.disable_cleanup(true);
            eprintln!("test directory kept: {}", dir.path().display());
        }
        let status = Command::new(BIN)
            .args(["keygen", "pihealth.key"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .status()
            .expect("run keygen");
        assert!(status.success(), "keygen failed");
        Cluster { dir, block }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&path, text).expect("write");
        path
    }

    /// A master config listing `agents` agents of this block, with fast
    /// intervals and the status page on the block's own `.1:8082` (the
    /// default 127.0.0.1:8082 would be shared by every test); `extra` is
    /// appended YAML.
    pub fn master_config(&self, agents: usize, extra: &str) -> PathBuf {
        let ip = master_ip(self.block);
        let base = format!(
            "listen: {ip}:8080\nalarm_listen: {ip}:8081\nhttp_listen: {ip}:8082\npull_interval: 500ms\nheartbeat_interval: 500ms\n\
             heartbeat_misses: 3\nconnect_timeout: 1s\nio_timeout: 5s\nkey_file: pihealth.key\n\
             log_dir: master/log\nbackup_dir: master/logbackup\n"
        );
        let mut text = merge_yaml(&base, extra);
        if agents > 0 {
            text.push_str("agents:\n");
            for i in 0..agents {
                text.push_str(&format!("  - \"{}:8000\"\n", agent_ip(self.block, i)));
            }
        }
        self.write("master.yaml", &text)
    }

    /// An agent config named `pi{i+1}` with the given collectors YAML list;
    /// top-level keys in `extra` replace the defaults here.
    pub fn agent_config(&self, i: usize, collectors: &str, extra: &str) -> PathBuf {
        let (mip, ip, n) = (master_ip(self.block), agent_ip(self.block, i), i + 1);
        let base = format!(
            "name: pi{n}\nmaster: {mip}:8080\ncontrol_listen: {ip}:8000\ndata_listen: {ip}:8001\n\
             key_file: pihealth.key\nlog_dir: agents/pi{n}/log\nbackup_dir: agents/pi{n}/logbackup\n\
             heartbeat_interval: 500ms\nconnect_timeout: 1s\nio_timeout: 5s\n"
        );
        let text = format!("{}collectors:\n{collectors}", merge_yaml(&base, extra));
        self.write(&format!("agent-pi{n}.yaml"), &text)
    }

    pub fn start(&self, role: &str, config: &Path, label: &str) -> Proc {
        Proc::start(self.dir.path(), role, config, label)
    }

    pub fn master_log(&self) -> PathBuf {
        self.path("master/log")
    }

    /// The master's own files: `alarms.log`, `events.log`, `registry.json`.
    pub fn master_own(&self) -> PathBuf {
        self.path("master/log/.master")
    }

    pub fn master_backup(&self) -> PathBuf {
        self.path("master/logbackup")
    }

    /// Everything the master holds for `host`/`log_type`, oldest first.
    pub fn archived(&self, host: &str, log_type: &str) -> String {
        let bytes = pihealth::master::archive::read_all(
            &self.master_log(),
            &self.master_backup(),
            host,
            log_type,
        )
        .unwrap_or_default();
        String::from_utf8(bytes).expect("archive is text")
    }

    /// Run a `pihealth` command that must succeed; its stdout lines.
    pub fn run_lines(&self, args: &[&str]) -> Vec<String> {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "pihealth {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Run a `pihealth` command in the cluster directory.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .output()
            .expect("run pihealth")
    }
}

/// `base` (one `key: value` per line) without the keys `extra` sets at
/// top level, then `extra`: a test overrides a default without writing the
/// key twice (which YAML refuses).
fn merge_yaml(base: &str, extra: &str) -> String {
    let overridden: Vec<&str> = extra
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('-'))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .collect();
    let mut text: String = base
        .lines()
        .filter(|l| {
            !overridden
                .iter()
                .any(|k| l.split_once(':').is_some_and(|(b, _)| b == *k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(extra);
    text
}

/// A running `pihealth` process; killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Option<Child>,
    pub label: String,
    pub log: PathBuf,
    args: (PathBuf, String, PathBuf),
    /// Extra environment for every (re)start, e.g. `PIHEALTH_FAILPOINTS`.
    pub env: Vec<(String, String)>,
    /// PID of the latest start, still known after the process died.
    pub last_pid: Option<i32>,
}

impl Proc {
    pub fn start(dir: &Path, role: &str, config: &Path, label: &str) -> Proc {
        let log = dir.join(format!("{label}.stderr"));
        let mut p = Proc {
            child: None,
            label: label.into(),
            log,
            args: (dir.into(), role.into(), config.into()),
            env: Vec::new(),
            last_pid: None,
        };
        p.restart();
        p
    }

    /// Start (again) with the same arguments, appending to the same log.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} still running", self.label);
        let (dir, role, config) = &self.args;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(BIN)
            .arg(role)
            .arg("-c")
            .arg(config)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn pihealth");
        self.last_pid = Some(child.id() as i32);
        self.child = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not stop within {PATIENCE:?} of SIGTERM", self.label);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// If the process has exited on its own (a crash, a failpoint), forget
    /// it so it can be restarted; returns whether it had.
    pub fn reap_if_dead(&mut self) -> bool {
        if self.child.is_some() && !self.is_running() {
            self.kill9();
            return true;
        }
        false
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Say that (part of) a test could not run here: `SKIPPED: what` in the
/// test output even when the test passes (written to the stderr handle,
/// which the test harness does not capture), and a failure in CI
/// (`CI=true`), where everything must run.
pub fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "SKIPPED in CI, where it must run: {what}"
    );
}

/// Poll `check` until it holds; panic naming `what` after `PATIENCE`.
pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A collector script printing a strictly increasing counter, persisted in
/// the agent's script state directory.
/// A collector printing `N normal` with N one more each run. It notes who
/// ran it (`N PPID` in `counter.produced`), so crash tests can tell a value
/// that died with its agent from one lost afterwards (see `LossLedger`).
pub fn counter_script(cluster: &Cluster) -> PathBuf {
    // Written once per cluster: rewriting it while an agent already runs
    // it fails with ETXTBSY ("text file busy").
    let existing = cluster.path("counter.sh");
    if existing.exists() {
        return existing;
    }
    let path = cluster.write(
        "counter.sh",
        // Builtins where it matters: under a fork storm `$(cat …)` failing
        // would restart the count at 1, and a failed `mv` must not print.
        "#!/bin/sh\nf=\"$PIHEALTH_STATE_DIR/counter\"\nn=0\n[ -r \"$f\" ] && read -r n < \"$f\"\nn=$((n+1))\n\
         echo \"$n $PPID\" >> \"$f.produced\"\n\
         echo $n > \"$f.tmp\" && mv \"$f.tmp\" \"$f\" && echo \"$n normal\"\n",
    );
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// The counter values in a stored log, in order.
pub fn counter_values(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let _time = f.next()?;
            f.next()?.parse().ok()
        })
        .collect()
}

/// The last value the counter script wrote for agent `pi{i+1}`.
pub fn counter_file(cluster: &Cluster, i: usize) -> u64 {
    fs::read_to_string(cluster.path(&format!("agents/pi{}/log/.pihealth/scripts/counter", i + 1)))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Every counter value the agent still holds (current log and archives).
pub fn agent_counter_values(cluster: &Cluster, i: usize) -> Vec<u64> {
    let base = cluster.path(&format!("agents/pi{}", i + 1));
    let mut text = fs::read_to_string(base.join("log/counter.log")).unwrap_or_default();
    if let Ok(entries) = fs::read_dir(base.join("logbackup")) {
        for e in entries.flatten() {
            let mut s = String::new();
            if let Ok(f) = fs::File::open(e.path()) {
                let _ = flate2::read::MultiGzDecoder::new(f).read_to_string(&mut s);
            }
            text.push_str(&s);
        }
    }
    counter_values(&text)
}

/// Wait until everything agent `pi{i+1}`'s counter has produced so far is
/// on the master (the last stored value reaches the counter's value now).
pub fn wait_for_delivery(cluster: &Cluster, i: usize, what: &str) {
    let produced = counter_file(cluster, i);
    let host = format!("pi{}", i + 1);
    wait_for(what, || {
        counter_values(&cluster.archived(&host, "counter"))
            .last()
            .is_some_and(|&v| v >= produced)
    });
}

/// Missing counter values (in `1..=last` of the stored `text`) that a
/// failed run explains: the counter script advances its state before it
/// prints, so a run killed at its timeout (or one whose output the agent
/// could not read) consumes a value and stores a line that is not a
/// number — "timeout: killed after 10s unknown" — in its place. A value is
/// explained if such a line sits between its stored neighbours.
pub fn values_lost_to_failed_runs(text: &str) -> Vec<u64> {
    let mut explained = Vec::new();
    let mut last_value: u64 = 0;
    let mut failed_since_last = false;
    for line in text.lines() {
        let second = line.split(' ').nth(1).unwrap_or("");
        match second.parse::<u64>() {
            Ok(v) => {
                if failed_since_last && v > last_value + 1 {
                    explained.extend(last_value + 1..v);
                }
                last_value = v;
                failed_since_last = false;
            }
            Err(_) => failed_since_last = true,
        }
    }
    explained
}

/// The collectors YAML for one `counter` collector every `interval`.
pub fn counter_collector(cluster: &Cluster, interval: &str) -> String {
    format!(
        "  - {{name: counter, command: {}, interval: {interval}}}\n",
        counter_script(cluster).display()
    )
}

/// Every counter value stored on either side for agent `pi{i+1}` (its own
/// logs and the master's archive of `counter`).
pub fn stored_counter_values(cluster: &Cluster, i: usize) -> Vec<u64> {
    let mut values = agent_counter_values(cluster, i);
    values.extend(counter_values(
        &cluster.archived(&format!("pi{}", i + 1), "counter"),
    ));
    values
}

/// Which counter values missing on the master a crash explains.
///
/// A value may be missing only if the agent that ran its script died before
/// storing it: its producer (from `counter.produced`) is an agent instance
/// that died, and the value is above everything stored anywhere when that
/// instance died — or the run was orphaned before its script started (its
/// parent is no agent at all). Anything else missing is a real loss.
///
/// PIDs get reused over a long run, so each death keeps its own window:
/// values above what was stored when it died, up to what the counter had
/// reached then (plus a run orphaned between fork and exec, which may
/// count on after its agent is gone).
#[derive(Default)]
pub struct LossLedger {
    /// Dead agent instance PID → (highest value stored, counter value) at
    /// each death of an instance with that PID.
    deaths: std::collections::HashMap<i32, Vec<(u64, u64)>>,
    /// Every agent instance PID ever started.
    instances: std::collections::HashSet<i32>,
}

/// Runs a dead agent's children may still complete after the counter was read.
const ORPHAN_SLACK: u64 = 2;

impl LossLedger {
    /// Kill agent `pi{i+1}` (or reap it if it already died), note what was
    /// stored at that moment, and start it again.
    pub fn kill_and_restart(&mut self, cluster: &Cluster, agent: &mut Proc, i: usize) {
        agent.kill9();
        let produced = counter_file(cluster, i);
        let stored = stored_counter_values(cluster, i)
            .into_iter()
            .max()
            .unwrap_or(0);
        if let Some(pid) = agent.last_pid {
            self.instances.insert(pid);
            self.deaths.entry(pid).or_default().push((stored, produced));
        }
        agent.restart();
        if let Some(pid) = agent.last_pid {
            self.instances.insert(pid);
        }
    }

    pub fn deaths(&self) -> usize {
        self.deaths.values().map(Vec::len).sum()
    }

    /// Split the values in `1..=last` missing from `values` (the master's,
    /// in order) into explained and unexplained.
    pub fn judge(&self, cluster: &Cluster, i: usize, values: &[u64]) -> (Vec<u64>, Vec<u64>) {
        let produced = fs::read_to_string(cluster.path(&format!(
            "agents/pi{}/log/.pihealth/scripts/counter.produced",
            i + 1
        )))
        .unwrap_or_default();
        let producer: std::collections::HashMap<u64, i32> = produced
            .lines()
            .filter_map(|l| {
                let (n, ppid) = l.split_once(' ')?;
                Some((n.parse().ok()?, ppid.trim().parse().ok()?))
            })
            .collect();
        let last = values.last().copied().unwrap_or(0);
        let have: std::collections::HashSet<u64> = values.iter().copied().collect();
        let failed_runs =
            values_lost_to_failed_runs(&cluster.archived(&format!("pi{}", i + 1), "counter"));
        let (explained, lost): (Vec<u64>, Vec<u64>) =
            (1..=last).filter(|v| !have.contains(v)).partition(|v| {
                failed_runs.contains(v)
                    || match producer.get(v) {
                        Some(pid) => match self.deaths.get(pid) {
                            Some(deaths) => deaths.iter().any(|&(stored, produced)| {
                                *v > stored && *v <= produced + ORPHAN_SLACK
                            }),
                            // Not an agent we started: orphaned before exec.
                            None => !self.instances.contains(pid),
                        },
                        None => false,
                    }
            });
        // Evidence for whoever chases a loss.
        for v in &lost {
            let pid = producer.get(v);
            eprintln!(
                "unexplained loss of {v}: produced by {pid:?}, whose deaths (stored, counter) were {:?}; {} agent deaths on the ledger",
                pid.and_then(|p| self.deaths.get(p)),
                self.deaths()
            );
        }
        (explained, lost)
    }
}

/// Whether any process on this machine runs a command line containing `needle`.
pub fn process_running(needle: &str) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        fs::read(e.path().join("cmdline"))
            .map(|raw| {
                String::from_utf8_lossy(&raw)
                    .replace('\0', " ")
                    .contains(needle)
            })
            .unwrap_or(false)
    })
}

#[test]
fn a_value_is_explained_only_by_a_failed_run_in_its_place() {
    let text =
        "t 1 normal\nt 2 normal\nt timeout: killed after 10s unknown\nt 4 normal\nt 6 normal\n";
    assert_eq!(values_lost_to_failed_runs(text), vec![3]);
}

/// The stdout lines of a command that must have succeeded; its stderr is in
/// the failure message.
pub fn success_lines(out: std::process::Output, what: &str) -> Vec<String> {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}
