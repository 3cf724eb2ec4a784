//! `pihealth demo`: a master and N agents on 127.0.0.2, 127.0.0.3, … in a
//! temporary directory, running the real scripts with short intervals.
//! Every process is this same binary started as a child, exactly as an
//! operator would start them; the scripts are built into the binary so the
//! demo works from any directory.

use std::fs;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::master::registry::{Registry, State};

/// The standard scripts and their shared helpers, embedded so the demo
/// needs no checkout.
pub const SCRIPTS: [(&str, &str); 7] = [
    ("common.sh", include_str!("../../scripts/common.sh")),
    ("cpu.sh", include_str!("../../scripts/cpu.sh")),
    ("mem.sh", include_str!("../../scripts/mem.sh")),
    ("disk.sh", include_str!("../../scripts/disk.sh")),
    ("proc.sh", include_str!("../../scripts/proc.sh")),
    ("users.sh", include_str!("../../scripts/users.sh")),
    ("sysinfo.sh", include_str!("../../scripts/sysinfo.sh")),
];
pub const TYPES: [&str; 6] = ["cpu", "mem", "disk", "proc", "users", "sysinfo"];

const MASTER_PORT: u16 = 18080;

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

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn spawn(dir: &Path, role: &str, config: &Path, log_name: &str) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let log = fs::File::create(dir.join(log_name)).map_err(|e| e.to_string())?;
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
        .spawn()
        .map_err(|e| format!("cannot start the {role}: {e}"))
}

fn master_yaml(agents: usize) -> String {
    let mut text = format!(
        "listen: 127.0.0.1:{MASTER_PORT}\nalarm_listen: 127.0.0.1:{}\npull_interval: 2s\nheartbeat_interval: 1s\nheartbeat_misses: 3\nkey_file: pihealth.key\nlog_dir: master/log\nbackup_dir: master/logbackup\nrotate_size: 64KiB\nagents:\n",
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
    format!(
        "name: pi{n}\nmaster: 127.0.0.1:{MASTER_PORT}\nmaster_alarm: 127.0.0.1:{alarm}\ncontrol_listen: {ip}:8000\ndata_listen: {ip}:8001\n\
         key_file: pihealth.key\nlog_dir: agents/pi{n}/log\nbackup_dir: agents/pi{n}/logbackup\nrotate_size: 16KiB\nmax_backlog: 64MiB\n\
         heartbeat_interval: 1s\ncollectors:\n\
         \x20 - {{name: cpu, command: scripts/cpu.sh, interval: 2s}}\n\
         \x20 - {{name: mem, command: scripts/mem.sh, interval: 2s}}\n\
         \x20 - {{name: disk, command: scripts/disk.sh, interval: 5s}}\n\
         \x20 - {{name: proc, command: scripts/proc.sh, interval: 10s, timeout: 20s}}\n\
         \x20 - {{name: users, command: scripts/users.sh, interval: 5s}}\n\
         \x20 - {{name: sysinfo, command: scripts/sysinfo.sh, interval: 5s}}\n",
        n = i + 1,
        alarm = MASTER_PORT + 1,
    )
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

/// Run the demo; true if every agent ended up and every type had lines.
pub fn run(agents: usize, seconds: u64, keep: Option<&Path>) -> Result<bool, String> {
    if agents == 0 || agents > 250 {
        return Err("--agents must be from 1 to 250 (127.0.0.2 to 127.0.0.251)".into());
    }
    let temp;
    let dir: PathBuf = match keep {
        Some(d) => {
            fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            d.to_path_buf()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("pihealth-demo-")
                .tempdir()
                .map_err(|e| e.to_string())?;
            temp.path().to_path_buf()
        }
    };
    println!("demo directory: {}", dir.display());
    let key = dir.join("pihealth.key");
    if !key.exists() {
        super::keygen(&key, false)?;
    }
    fs::create_dir_all(dir.join("scripts")).map_err(|e| e.to_string())?;
    for (name, text) in SCRIPTS {
        let path = dir.join("scripts").join(name);
        write(&path, text)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    }
    write(&dir.join("master.yaml"), &master_yaml(agents))?;
    let mut children = Children(Vec::new());
    children.0.push((
        "master".into(),
        spawn(&dir, "master", Path::new("master.yaml"), "master.log")?,
    ));
    for i in 0..agents {
        let config = format!("agent-pi{}.yaml", i + 1);
        write(&dir.join(&config), &agent_yaml(i))?;
        let child = spawn(
            &dir,
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
    let log_root = dir.join("master/log");
    let backup_root = dir.join("master/logbackup");
    let started = Instant::now();
    let total = Duration::from_secs(seconds);
    while started.elapsed() < total {
        std::thread::sleep(Duration::from_secs(1).min(total.saturating_sub(started.elapsed())));
        for (name, child) in &mut children.0 {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{name} exited early ({status}); see {}/{}.log",
                    dir.display(),
                    if name == "master" {
                        "master".to_string()
                    } else {
                        format!("agent-{name}")
                    }
                ));
            }
        }
        let (_, records) = Registry::read_snapshot(&log_root).unwrap_or((None, Vec::new()));
        let up = records.iter().filter(|r| r.state == State::Up).count();
        // Redraw one line on a terminal; plain lines when piped.
        let line = format!(
            "{:>3}s: {up}/{agents} agents up",
            started.elapsed().as_secs()
        );
        if std::io::stdout().is_terminal() {
            print!("\r{line}");
            let _ = std::io::stdout().flush();
        } else if started.elapsed().as_secs().is_multiple_of(5) {
            println!("{line}");
        }
    }
    println!();
    // Stop everything cleanly (SIGTERM) before reading the final state.
    drop(children);
    println!();
    super::status::print(&log_root, false, &mut std::io::stdout())?;
    let (_, records) = Registry::read_snapshot(&log_root).map_err(|e| e.to_string())?;
    let mut ok = records.len() == agents;
    for r in &records {
        let host = r.label();
        println!("\n== {host} ==");
        for t in TYPES {
            let lines = last_lines(&log_root, &backup_root, &host, t, 2);
            if lines.is_empty() {
                ok = false;
                println!("  {t:<8} (no lines yet)");
            }
            for l in lines {
                println!("  {t:<8} {l}");
            }
        }
    }
    // The agents were stopped on purpose; they were all up until then.
    let all_were_up = records.iter().all(|r| r.last_seen_ms.is_some());
    ok &= all_were_up;
    println!();
    println!(
        "{}",
        if ok {
            "demo: all agents reported and every type has lines"
        } else {
            "demo: some agents or types are missing (see the logs in the demo directory)"
        }
    );
    if keep.is_some() {
        println!(
            "kept {}; try: cd {} && pihealth logs -c master.yaml pi1 cpu",
            dir.display(),
            dir.display()
        );
    }
    Ok(ok)
}
