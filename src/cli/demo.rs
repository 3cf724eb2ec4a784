//! `pihealth demo`: a master and N agents on 127.0.0.2, 127.0.0.3, … in a
//! temporary directory, running the six standard checks (built into the
//! agent, as the shipped config does) with short intervals. Every process
//! is this same binary started as a child, exactly as an operator would
//! start them; the standard scripts are written into the demo directory too
//! (embedded in the binary), so a collector can be switched to its script
//! by editing an agent's config.

use std::fs;

use anyhow::{anyhow, bail};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::master::registry::{AgentRecord, Registry, State};

/// The standard scripts and their shared helpers, embedded so the demo
/// needs no checkout.
pub(crate) const SCRIPTS: [(&str, &str); 7] = [
    ("common.sh", include_str!("../../scripts/common.sh")),
    ("cpu.sh", include_str!("../../scripts/cpu.sh")),
    ("mem.sh", include_str!("../../scripts/mem.sh")),
    ("disk.sh", include_str!("../../scripts/disk.sh")),
    ("proc.sh", include_str!("../../scripts/proc.sh")),
    ("users.sh", include_str!("../../scripts/users.sh")),
    ("sysinfo.sh", include_str!("../../scripts/sysinfo.sh")),
];
pub(crate) const TYPES: [&str; 6] = ["cpu", "mem", "disk", "proc", "users", "sysinfo"];

const MASTER_PORT: u16 = 18080;
/// The master's status page and /metrics.
const HTTP_PORT: u16 = 18082;

struct Children(Vec<(String, Child)>);

impl Drop for Children {
    /// SIGTERM everyone, wait a bounded time, then SIGKILL stragglers.
    fn drop(&mut self) {
        for (_, child) in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (name, child) in &mut self.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        eprintln!("demo: {name} did not stop in time; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn spawn(dir: &Path, role: &str, config: &Path, log_name: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let log = fs::File::create(dir.join(log_name))?;
    Command::new(exe)
        .arg(role)
        .arg("-c")
        .arg(config)
        .current_dir(dir)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Own process group: a Ctrl-C at the terminal reaches only the demo,
        // which then stops its children in order.
        .process_group(0)
        .spawn()
        .map_err(|e| anyhow!("cannot start the {role}: {e}"))
}

fn master_yaml(agents: usize) -> String {
    let mut text = format!(
        "listen: 127.0.0.1:{MASTER_PORT}\nalarm_listen: 127.0.0.1:{}\npull_interval: 2s\nheartbeat_interval: 1s\nheartbeat_misses: 3\nkey_file: pihealth.key\nlog_dir: master/log\nbackup_dir: master/logbackup\nrotate_size: 64KiB\nhttp_listen: 127.0.0.1:{HTTP_PORT}\nagents:\n",
        MASTER_PORT + 1
    );
    for i in 0..agents {
        text.push_str(&format!(
            "  - {{name: pi{}, address: \"127.0.0.{}:8000\"}}\n",
            i + 1,
            i + 2
        ));
    }
    text
}

fn agent_yaml(i: usize) -> String {
    let ip = format!("127.0.0.{}", i + 2);
    // pi1 alarms on disk at once, to show the alarm path; a cpu spike
    // (a browser starting) alarms only if it lasts 10 s (`for`).
    let thresholds = if i == 0 {
        "thresholds: {disk_note: 1, disk_warning: 2}\n"
    } else {
        ""
    };
    let text = format!(
        "name: pi{n}\nmaster: 127.0.0.1:{MASTER_PORT}\nmaster_alarm: 127.0.0.1:{alarm}\ncontrol_listen: {ip}:8000\ndata_listen: {ip}:8001\n\
         key_file: pihealth.key\nlog_dir: agents/pi{n}/log\nbackup_dir: agents/pi{n}/logbackup\nrotate_size: 16KiB\nmax_backlog: 64MiB\n\
         heartbeat_interval: 1s\ncollectors:\n\
         \x20 - {{name: cpu, builtin: cpu, interval: 2s, for: 10s, recover_for: 10s}}\n\
         \x20 - {{name: mem, builtin: mem, interval: 2s}}\n\
         \x20 - {{name: disk, builtin: disk, interval: 5s}}\n\
         \x20 - {{name: proc, builtin: proc, interval: 10s}}\n\
         \x20 - {{name: users, builtin: users, interval: 5s}}\n\
         \x20 - {{name: sysinfo, builtin: sysinfo, interval: 5s}}\n\
         # Each also runs as its script: e.g. {{name: cpu, command: scripts/cpu.sh, interval: 2s}}\n",
        n = i + 1,
        alarm = MASTER_PORT + 1,
    );
    text + thresholds
}

fn last_lines(
    log_root: &Path,
    backup_root: &Path,
    host: &str,
    log_type: &str,
    n: usize,
) -> Vec<String> {
    let all =
        crate::master::archive::read_all(log_root, backup_root, host, log_type).unwrap_or_default();
    let text = String::from_utf8_lossy(&all);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// How the demo talks to the person watching it.
struct Screen {
    terminal: bool,
    last_plain: Option<Instant>,
}

impl Screen {
    /// On a terminal: clear it and draw `text`. Piped: print `line` every
    /// few seconds instead, so a log of the demo stays readable.
    fn show(&mut self, text: &str, line: &str) {
        if self.terminal {
            print!("\x1b[H\x1b[2J{text}");
            let _ = std::io::stdout().flush();
        } else if self.last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
            println!("{line}");
            self.last_plain = Some(Instant::now());
        }
    }
}

/// Redraw interval of the live table on a terminal.
const REDRAW: Duration = Duration::from_secs(3);
/// Interval of progress lines when stdout is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// How long the demo shows registration progress before it moves on to the
/// live table (agents still missing then show up as never seen).
const STARTUP: Duration = Duration::from_secs(30);

/// The live view: fleet table, open problems and what to try.
fn dashboard(
    dir: &Path,
    log_root: &Path,
    agents: usize,
    elapsed: Duration,
    total: Option<Duration>,
) -> String {
    let mut out = Vec::new();
    let clock = match total {
        Some(t) => format!("{}s of {}s", elapsed.as_secs(), t.as_secs()),
        None => format!("{}s", elapsed.as_secs()),
    };
    let _ = writeln!(
        out,
        "pihealth demo: master on 127.0.0.1:{MASTER_PORT}, {agents} agent(s) on 127.0.0.2 and up; {clock}; Ctrl-C stops\n\
         status page and /metrics: http://127.0.0.1:{HTTP_PORT}/\n"
    );
    if super::status::print(log_root, false, &mut out).is_err() {
        let _ = writeln!(out, "(waiting for the master's first state)");
    }
    let open: Vec<_> = crate::master::alarms::read_alarms(
        &crate::master::files::MasterFiles::find(log_root).alarms(),
    )
    .map(|a| crate::master::alarms::problems(&a))
    .unwrap_or_default()
    .into_iter()
    .filter(|p| p.open)
    .collect();
    let _ = writeln!(out, "\nopen problems: {}", open.len());
    for p in open.iter().take(5) {
        let _ = writeln!(
            out,
            "  {} {} {} since {}: {}",
            p.host, p.log_type, p.level, p.since, p.message
        );
    }
    let exe = exe_text();
    let _ = writeln!(
        out,
        "\nin another terminal:\n  cd {} && {exe} logs -c master.yaml pi1 cpu --follow\n  cd {} && {exe} alarms -c master.yaml",
        dir.display(),
        dir.display()
    );
    String::from_utf8_lossy(&out).into_owned()
}

fn up_count(log_root: &Path) -> usize {
    Registry::read_snapshot(log_root)
        .map(|(_, records)| records.iter().filter(|r| r.state == State::Up).count())
        .unwrap_or(0)
}

/// A child that exited on its own (not stopped by us) ends the demo.
fn check_children(children: &mut Children, dir: &Path) -> anyhow::Result<()> {
    for (name, child) in &mut children.0 {
        if let Ok(Some(status)) = child.try_wait() {
            let log = if name == "master" {
                "master.log".to_string()
            } else {
                format!("agent-{name}.log")
            };
            return Err(anyhow!(
                "{name} exited early ({status}); see {}",
                dir.join(log).display()
            ));
        }
    }
    Ok(())
}

/// Run the demo for `seconds` (0: until Ctrl-C); true if every agent came
/// up and every type has lines on the master.
pub fn run(agents: usize, seconds: u64, keep: Option<&Path>) -> anyhow::Result<bool> {
    if agents == 0 || agents > 250 {
        bail!("--agents must be from 1 to 250 (127.0.0.2 to 127.0.0.251)");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| anyhow!("cannot handle Ctrl-C: {e}"))?;
    // Held until the end: dropping it deletes the directory.
    let temp;
    let dir: PathBuf = match keep {
        Some(d) => {
            fs::create_dir_all(d).map_err(|e| anyhow!("{}: {e}", d.display()))?;
            fs::canonicalize(d).map_err(|e| anyhow!("{}: {e}", d.display()))?
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("pihealth-demo-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    println!("demo directory: {}", dir.display());
    write_files(&dir, agents)?;
    let mut children = start(&dir, agents)?;
    let log_root = dir.join("master/log");
    let watch = Watch {
        dir: &dir,
        log_root: &log_root,
        agents,
        stop: &stop,
        started: Instant::now(),
        total: (seconds > 0).then(|| Duration::from_secs(seconds)),
    };
    watch.registration(&mut children)?;
    watch.live(&mut children)?;
    println!("\nstopping the master and the agents…");
    // Stop everything cleanly (SIGTERM) before reading the final state.
    drop(children);
    summary(
        &dir,
        &log_root,
        &dir.join("master/logbackup"),
        agents,
        keep.is_some(),
    )
}

/// The key, the standard scripts and the master's config.
fn write_files(dir: &Path, agents: usize) -> anyhow::Result<()> {
    let key = dir.join("pihealth.key");
    if !key.exists() {
        super::keygen(&key, false)?;
    }
    fs::create_dir_all(dir.join("scripts"))?;
    for (name, text) in SCRIPTS {
        let path = dir.join("scripts").join(name);
        write(&path, text)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    }
    write(&dir.join("master.yaml"), &master_yaml(agents))
}

/// Start the master, then each agent with its config.
fn start(dir: &Path, agents: usize) -> anyhow::Result<Children> {
    let mut children = Children(Vec::new());
    children.0.push((
        "master".into(),
        spawn(dir, "master", Path::new("master.yaml"), "master.log")?,
    ));
    println!(
        "started the master on 127.0.0.1:{MASTER_PORT} (alarms :{})",
        MASTER_PORT + 1
    );
    for i in 0..agents {
        let config = format!("agent-pi{}.yaml", i + 1);
        write(&dir.join(&config), &agent_yaml(i))?;
        let child = spawn(
            dir,
            "agent",
            Path::new(&config),
            &format!("agent-pi{}.log", i + 1),
        )?;
        // Into the guard first: whatever happens next, it is stopped.
        children.0.push((format!("pi{}", i + 1), child));
        println!(
            "started agent pi{} on 127.0.0.{}:8000 (data :8001)",
            i + 1,
            i + 2
        );
    }
    println!(
        "pi1 has its disk thresholds lowered to 1% (note) and 2% (warning), so an alarm shows up"
    );
    Ok(children)
}

/// The running demo, as the person watching it sees it.
struct Watch<'a> {
    dir: &'a Path,
    log_root: &'a Path,
    agents: usize,
    stop: &'a AtomicBool,
    started: Instant,
    total: Option<Duration>,
}

impl Watch<'_> {
    /// One progress line each time the count changes, until every agent
    /// is up or `STARTUP` has passed.
    fn registration(&self, children: &mut Children) -> anyhow::Result<()> {
        let mut shown = usize::MAX;
        while !self.stop.load(Ordering::SeqCst) && self.started.elapsed() < STARTUP {
            check_children(children, self.dir)?;
            let up = up_count(self.log_root);
            if up != shown {
                println!("{up}/{} agents up", self.agents);
                shown = up;
            }
            if up == self.agents {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// The dashboard until the time is up or Ctrl-C.
    fn live(&self, children: &mut Children) -> anyhow::Result<()> {
        let mut screen = Screen {
            terminal: std::io::stdout().is_terminal(),
            last_plain: None,
        };
        let mut last_draw: Option<Instant> = None;
        while !self.stop.load(Ordering::SeqCst)
            && self.total.is_none_or(|t| self.started.elapsed() < t)
        {
            check_children(children, self.dir)?;
            if last_draw.is_none_or(|t| t.elapsed() >= REDRAW) {
                let line = format!(
                    "{:>4}s: {}/{} agents up",
                    self.started.elapsed().as_secs(),
                    up_count(self.log_root),
                    self.agents
                );
                let view = dashboard(
                    self.dir,
                    self.log_root,
                    self.agents,
                    self.started.elapsed(),
                    self.total,
                );
                screen.show(&view, &line);
                last_draw = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}

/// The last two lines of each host and type; false if one has none.
fn print_last_lines(log_root: &Path, backup_root: &Path, records: &[AgentRecord]) -> bool {
    let mut all = true;
    for r in records {
        let host = r.label();
        println!("\n== {host} ==");
        for t in TYPES {
            let lines = last_lines(log_root, backup_root, &host, t, 2);
            if lines.is_empty() {
                all = false;
                println!("  {t:<8} (no lines yet)");
            }
            for l in lines {
                println!("  {t:<8} {l}");
            }
        }
    }
    all
}

/// This program's path, to show commands to paste.
fn exe_text() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "pihealth".into())
}

/// The final report: the fleet, a few lines per host and type, the alarms.
fn summary(
    dir: &Path,
    log_root: &Path,
    backup_root: &Path,
    agents: usize,
    kept: bool,
) -> anyhow::Result<bool> {
    println!();
    super::status::print(log_root, false, &mut std::io::stdout())?;
    let (_, records) = Registry::read_snapshot(log_root)?;
    let mut ok = records.len() == agents;
    ok &= print_last_lines(log_root, backup_root, &records);
    println!();
    let query = super::alarms::Query {
        since: None,
        hosts: Vec::new(),
        min_level: None,
        open_only: false,
        json: false,
    };
    println!("alarms:");
    super::alarms::print(log_root, &query, &mut std::io::stdout())?;
    // The agents were stopped on purpose; they were all up until then.
    let all_were_up = records.iter().all(|r| r.last_seen_ms.is_some());
    ok &= all_were_up;
    let pulled: u64 = records.iter().map(|r| r.bytes_pulled).sum();
    println!();
    println!(
        "{}",
        if ok {
            format!(
                "demo: all {agents} agents reported, every type has lines, {pulled} bytes pulled"
            )
        } else {
            "demo: some agents or types are missing (see the logs in the demo directory)"
                .to_string()
        }
    );
    if kept {
        let exe = exe_text();
        println!(
            "kept {d}; try:\n  cd {d} && {exe} logs -c master.yaml pi1 cpu\n  cd {d} && {exe} status -c master.yaml",
            d = dir.display()
        );
    }
    Ok(ok)
}
