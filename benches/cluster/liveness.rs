//! Time from an agent's death (`kill -9`) to the master marking it down.
//!
//! A master daemon with `heartbeat_interval: 1s`, `heartbeat_misses: 3`
//! knows one agent (statically, and the agent also registers and beats
//! every second). Each round: the agent is started and seen up, killed at
//! a different phase of its heartbeat, and `log/.master/registry.json` is polled
//! until it says down. Two times per round: when the master decided
//! (`state_since_ms` in the registry, against the wall clock at the
//! kill), and when the registry file showed it (it is flushed about once
//! a second, so `pihealth status` sees it that much later).

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use pihealth::master::registry::{Registry, State};

use super::agents::{self, AgentSpec, MASTER_IP};
use super::procs::{self, Proc};
use super::report::{Report, Row};
use super::Bench;

const PORT: u16 = 8080;
const HEARTBEAT: Duration = Duration::from_secs(1);
const MISSES: u32 = 3;
const AGENT: &str = "deathbed";

/// The agent's record in the registry file, if there is one yet.
fn record_state(log_dir: &Path) -> Option<(State, i64)> {
    let (_, agents) = Registry::read_snapshot(log_dir).ok()?;
    let a = agents
        .into_iter()
        .find(|a| a.name.as_deref() == Some(AGENT))?;
    Some((a.state, a.state_since_ms.unwrap_or(0)))
}

/// Poll the registry until the agent's state is `want` since `after_ms`
/// or later; returns that `state_since_ms`.
fn wait_state(log_dir: &Path, want: State, after_ms: i64, limit: Duration) -> Option<i64> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some((state, since)) = record_state(log_dir) {
            if state == want && since >= after_ms {
                return Some(since);
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

pub fn run(b: &Bench, report: &mut Report) -> Result<(), String> {
    let dir = b.dir.join("liveness");
    let agent_dir = dir.join("agent");
    fs::create_dir_all(&agent_dir).map_err(|e| e.to_string())?;
    let ip = agents::single_ip(8);
    let yaml = agents::master_yaml(
        PORT,
        &b.key_file,
        4,
        &[format!("{{name: {AGENT}, address: \"{ip}:8000\"}}")],
        &format!(
            "heartbeat_interval: {HEARTBEAT:?}\nheartbeat_misses: {MISSES}\npull_interval: 1h\n"
        ),
    );
    fs::write(dir.join("master.yaml"), yaml).map_err(|e| e.to_string())?;
    let _master: Proc = agents::start_master(&dir, PORT, "liveness master")?;
    let log_dir = dir.join("log");
    let spec = AgentSpec {
        name: AGENT.into(),
        ip,
        dir: agent_dir,
        key_file: &b.key_file,
        master: format!("{MASTER_IP}:{PORT}"),
        extra: format!("heartbeat_interval: {HEARTBEAT:?}\n"),
        collectors: String::new(),
    };
    let limit = HEARTBEAT * MISSES;
    let mut decided = Vec::new();
    let mut shown = Vec::new();
    let mut last_kill_ms = 0;
    for round in 0..b.settings.deaths {
        let mut agent = spec.start()?;
        wait_state(&log_dir, State::Up, last_kill_ms, Duration::from_secs(20))
            .ok_or("the agent was not marked up within 20 s")?;
        // Kill at a different point of the heartbeat cycle each round.
        thread::sleep(HEARTBEAT + HEARTBEAT * (round as u32 % 7) / 7);
        agent.kill9();
        let (killed_ms, killed) = (procs::now_ms(), Instant::now());
        last_kill_ms = killed_ms;
        let since = wait_state(
            &log_dir,
            State::Down,
            killed_ms,
            limit + Duration::from_secs(15),
        )
        .ok_or_else(|| {
            format!(
                "not marked down within {:?} of the kill",
                limit + Duration::from_secs(15)
            )
        })?;
        shown.push(killed.elapsed());
        decided.push(Duration::from_millis((since - killed_ms).max(0) as u64));
    }
    let (med, max) = (
        super::report::median(decided.clone()),
        decided.iter().max().copied().unwrap_or_default(),
    );
    report.row(
        Row::new(
            format!(
                "agent kill -9 → marked down (median, max of {} rounds)",
                decided.len()
            ),
            format!(
                "{:.2} s, {:.2} s (registry.json showed it after {:.2} s median)",
                med.as_secs_f64(),
                max.as_secs_f64(),
                super::report::median(shown).as_secs_f64()
            ),
        )
        .baseline(format!(
            "heartbeat_interval × heartbeat_misses = {:.0} s",
            limit.as_secs_f64()
        ))
        .ratio(format!(
            "{:.2}x (max)",
            max.as_secs_f64() / limit.as_secs_f64()
        ))
        .target(format!(
            "≤ {:.0} s",
            (limit + Duration::from_secs(1)).as_secs_f64()
        )),
    );
    Ok(())
}
