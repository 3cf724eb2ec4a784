//! Real `pihealth agent` and `pihealth master` processes on loopback
//! addresses of their own, and their configuration files.
//!
//! Addresses: this bench uses 127.0.50.x–127.0.59.x only (other long runs
//! own lower blocks). 127.0.50.1 is the masters' and the raw baselines';
//! 127.0.50.2–127.0.50.49 are single agents; fleets use 127.0.51.1 upwards.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::procs::{self, Proc};

pub const BIN: &str = env!("CARGO_BIN_EXE_pihealth");
/// The agent as its unit runs it: the lean binary.
pub const AGENT_BIN: &str = env!("CARGO_BIN_EXE_pihealth-agent");
/// How an agent is started: the lean binary (as the unit does), or the
/// full tool's `pihealth agent` (the same daemon in a bigger binary).
pub const LEAN_AGENT: &[&str] = &[AGENT_BIN];
pub const FULL_AGENT: &[&str] = &[BIN, "agent"];

/// The masters' address (daemons on different ports per phase).
pub const MASTER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 50, 1);
/// Where fleet and bulk agents send registrations: nothing listens there,
/// so they stay unknown to any daemon that is not told about them.
pub const NOWHERE: &str = "127.0.50.1:8079";
/// Fleet agents fill 127.0.51.1 … 127.0.59.254.
pub const MAX_FLEET: usize = 9 * 254;
/// How many agents start at once before the bench waits for them to listen.
const START_BATCH: usize = 50;

pub fn single_ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 50, last)
}

/// The address of fleet agent `i` (0-based); .0 and .255 are left out.
pub fn fleet_ip(i: usize) -> Ipv4Addr {
    assert!(i < MAX_FLEET, "at most {MAX_FLEET} fleet agents");
    Ipv4Addr::new(127, 0, 51 + (i / 254) as u8, 1 + (i % 254) as u8)
}

pub fn control_addr(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::from((ip, 8000))
}

/// One agent to start: its name, address, working directory and the
/// YAML lines beyond the common ones.
pub struct AgentSpec<'a> {
    pub name: String,
    pub ip: Ipv4Addr,
    /// The agent's working directory; its `log/` and `logbackup/` go here.
    pub dir: PathBuf,
    pub key_file: &'a Path,
    /// `master:` address.
    pub master: String,
    /// Extra YAML (`heartbeat_interval:`, `rotate_size:`, …), each line
    /// ending in a newline; may override nothing already given here.
    pub extra: String,
    /// The `collectors:` list items (YAML lines), or empty for none.
    pub collectors: String,
}

impl AgentSpec<'_> {
    fn yaml(&self) -> String {
        let collectors = if self.collectors.is_empty() {
            "collectors: []\n".to_string()
        } else {
            format!("collectors:\n{}", self.collectors)
        };
        format!(
            "name: {}\nmaster: \"{}\"\ncontrol_listen: \"{ip}:8000\"\ndata_listen: \"{ip}:8001\"\n\
             key_file: {}\nlog_dir: log\nbackup_dir: logbackup\n{}{collectors}",
            self.name,
            self.master,
            self.key_file.display(),
            self.extra,
            ip = self.ip,
        )
    }

    /// Write the config and start the process, without waiting for it.
    pub fn spawn(&self) -> Result<Proc, String> {
        self.spawn_as(LEAN_AGENT)
    }

    /// `spawn` with the program (and its first arguments) given.
    pub fn spawn_as(&self, program: &[&str]) -> Result<Proc, String> {
        fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let config = self.dir.join("agent.yaml");
        fs::write(&config, self.yaml()).map_err(|e| format!("{}: {e}", config.display()))?;
        let mut command = Command::new(program[0]);
        command
            .args(&program[1..])
            .args(["-c", "agent.yaml"])
            .current_dir(&self.dir)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, "agent.err")?);
        Proc::spawn(&mut command, &format!("agent {}", self.name))
    }

    /// Start the agent and wait until its control port listens.
    pub fn start(&self) -> Result<Proc, String> {
        self.start_as(LEAN_AGENT)
    }

    /// `start` with the program given (see `spawn_as`).
    pub fn start_as(&self, program: &[&str]) -> Result<Proc, String> {
        let mut agent = self.spawn_as(program)?;
        wait_agent(&mut agent, self.ip, Duration::from_secs(30))?;
        Ok(agent)
    }
}

fn log_file(dir: &Path, name: &str) -> Result<fs::File, String> {
    let path = dir.join(name);
    fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))
}

fn wait_agent(agent: &mut Proc, ip: Ipv4Addr, limit: Duration) -> Result<(), String> {
    if procs::wait_listening(control_addr(ip), limit) {
        return Ok(());
    }
    let state = if agent.running() {
        "still running"
    } else {
        "exited"
    };
    Err(format!(
        "{} on {ip} did not listen within {limit:?} ({state}; see its agent.err)",
        agent.label
    ))
}

/// Start many agents: batches started together, each batch waited for
/// until every agent listens, so the machine is never asked to start
/// hundreds of processes at one instant. On error the agents started so
/// far are stopped (dropped).
pub fn start_many(specs: &[AgentSpec]) -> Result<Vec<Proc>, String> {
    let mut started: Vec<Proc> = Vec::with_capacity(specs.len());
    for batch in specs.chunks(START_BATCH) {
        let first = started.len();
        for spec in batch {
            match spec.spawn() {
                Ok(p) => started.push(p),
                Err(e) => {
                    procs::stop_all(&mut started);
                    return Err(e);
                }
            }
        }
        for (agent, spec) in started[first..].iter_mut().zip(batch) {
            if let Err(e) = wait_agent(agent, spec.ip, Duration::from_secs(60)) {
                procs::stop_all(&mut started);
                return Err(e);
            }
        }
    }
    Ok(started)
}

/// A master configuration: daemon ports on 127.0.50.1 from `port`
/// (registration; alarms on port + 1), no status page, the given agents
/// (YAML list items, or none), and any extra keys.
pub fn master_yaml(
    port: u16,
    key_file: &Path,
    workers: usize,
    agents: &[String],
    extra: &str,
) -> String {
    let agents = if agents.is_empty() {
        "agents: []\n".to_string()
    } else {
        let mut list = String::from("agents:\n");
        for a in agents {
            list.push_str("  - ");
            list.push_str(a);
            list.push('\n');
        }
        list
    };
    format!(
        "listen: \"{MASTER_IP}:{port}\"\nalarm_listen: \"{MASTER_IP}:{}\"\nhttp_listen: null\n\
         key_file: {}\nlog_dir: log\nbackup_dir: logbackup\nworkers: {workers}\n{extra}{agents}",
        port + 1,
        key_file.display()
    )
}

/// Start `pihealth master -c master.yaml` in `dir` and wait until its
/// registration port listens.
pub fn start_master(dir: &Path, port: u16, label: &str) -> Result<Proc, String> {
    let mut command = Command::new(BIN);
    command
        .args(["master", "-c", "master.yaml"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(dir, "master.err")?);
    let mut master = Proc::spawn(&mut command, label)?;
    let addr = SocketAddr::from((MASTER_IP, port));
    if !procs::wait_listening(addr, Duration::from_secs(30)) {
        let state = if master.running() {
            "still running"
        } else {
            "exited"
        };
        return Err(format!(
            "{label} did not listen on {addr} ({state}; see {}/master.err)",
            dir.display()
        ));
    }
    Ok(master)
}
