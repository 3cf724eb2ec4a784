//! `pihealth pull`: one pull cycle now, then exit (for cron).
//!
//! Pulls every known agent (or those named) in parallel on a pool of
//! `workers` threads, prints one summary line per agent on stdout, and
//! shows progress on stderr while big backlogs move: a line redrawn in
//! place on a terminal, plain lines every few seconds otherwise.

use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use threadpool::ThreadPool;

use super::pull::{self, AgentProgress, Progress, PullError};
use super::registry::Registry;
use crate::config::MasterConfig;
use crate::human::human_bytes;
use crate::protocol::Key;

/// Progress shows only once a pull has run this long (small pulls from
/// cron stay quiet).
const QUIET_FOR: Duration = Duration::from_secs(1);
/// Redraw interval on a terminal.
const REDRAW: Duration = Duration::from_millis(250);
/// Interval of plain progress lines when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    format!("{}/s", human_bytes((bytes as f64 / secs) as u64))
}

fn agent_progress(a: &AgentProgress, elapsed: Duration) -> String {
    format!(
        "{} {} of {}, {}",
        a.host,
        human_bytes(a.received),
        human_bytes(a.offered.max(a.received)),
        rate(a.received, elapsed)
    )
}

/// Draws progress while the pulls run.
struct Display {
    progress: Arc<Progress>,
    started: Instant,
    terminal: bool,
    drawn: bool,
    last_plain: Instant,
    agents: usize,
}

impl Display {
    fn tick(&mut self, err: &mut dyn Write) {
        let elapsed = self.started.elapsed();
        if elapsed < QUIET_FOR {
            return;
        }
        let snapshot = self.progress.snapshot();
        let mut running: Vec<&AgentProgress> = snapshot
            .iter()
            .map(|(_, a)| a)
            .filter(|a| !a.finished && a.received > 0)
            .collect();
        if running.is_empty() {
            self.clear(err);
            return;
        }
        running.sort_by_key(|a| std::cmp::Reverse(a.received));
        if self.terminal {
            let done = snapshot.iter().filter(|(_, a)| a.finished).count();
            let total: u64 = snapshot.iter().map(|(_, a)| a.received).sum();
            let busiest: Vec<String> = running
                .iter()
                .take(2)
                .map(|a| agent_progress(a, elapsed))
                .collect();
            let _ = write!(
                err,
                "\r\x1b[Kpulling: {done}/{} agents done, {} at {}; {}",
                self.agents,
                human_bytes(total),
                rate(total, elapsed),
                busiest.join("; ")
            );
            let _ = err.flush();
            self.drawn = true;
        } else if self.last_plain.elapsed() >= PLAIN_EVERY {
            for a in running {
                let _ = writeln!(err, "progress: {}", agent_progress(a, elapsed));
            }
            self.last_plain = Instant::now();
        }
    }

    /// Remove the redrawn line before a summary line is printed.
    fn clear(&mut self, err: &mut dyn Write) {
        if self.drawn {
            let _ = write!(err, "\r\x1b[K");
            self.drawn = false;
        }
    }
}

/// One summary line on standard output. A closed pipe (`pihealth pull |
/// head -1`) is ignored, not a panic as with `println!`: the pulls still
/// running must finish and be acknowledged.
fn say(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Why `pihealth pull` could not run.
#[derive(Debug, thiserror::Error)]
pub enum PullOnceError {
    /// The key files (the message names the file).
    #[error(transparent)]
    Keys(#[from] crate::protocol::auth::KeyError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("log_dir: {0}")]
    LogDir(io::Error),
    /// Reading the registry, or taking its writer lock.
    #[error(transparent)]
    ReadRegistry(io::Error),
    #[error("no known agent matches {}", .0.join(", "))]
    NoMatch(Vec<String>),
    #[error("no agents: list them under `agents:` in the config, or start agents that register")]
    NoAgents,
    #[error("registry: {0}")]
    Registry(io::Error),
}

/// An agent to pull: where, and the host it is known as, if any.
#[derive(Clone)]
struct Target {
    control: SocketAddr,
    known: Option<String>,
}

/// One pull cycle now (`pihealth pull`): every known agent, or those named.
/// Prints one line per agent; returns whether all succeeded.
pub fn pull_once(
    config: &MasterConfig,
    config_path: &Path,
    hosts: &[String],
) -> Result<bool, PullOnceError> {
    let keys = Key::load_ring(&config.key_file, &config.previous_key_files)?;
    let statics = config.static_agents(config_path)?;
    // Gaps found by this pull go to `log/.master/events.log`: an older
    // version's files in `log/` move there first, as the daemon does.
    super::files::MasterFiles::prepare(&config.log_dir).map_err(PullOnceError::LogDir)?;
    let (_, registered) =
        Registry::read_snapshot(&config.log_dir).map_err(PullOnceError::ReadRegistry)?;
    let targets = targets(&statics, &registered, hosts)?;
    let progress = Arc::new(Progress::default());
    let mut ctx = super::pull_context(config, keys);
    ctx.progress = Some(progress.clone());
    let pool = ThreadPool::with_name("pull".into(), config.workers.min(targets.len()));
    let (tx, rx) = crossbeam::channel::unbounded();
    for Target { control, known } in targets.clone() {
        let (ctx, tx) = (ctx.clone(), tx.clone());
        pool.execute(move || {
            let result = pull::pull_agent(&ctx, control, known.as_deref());
            let _ = tx.send((control, known, result));
        });
    }
    drop(tx);
    let mut display = Display {
        progress,
        started: Instant::now(),
        terminal: std::io::stderr().is_terminal(),
        drawn: false,
        last_plain: Instant::now(),
        agents: targets.len(),
    };
    let mut all_ok = true;
    let mut outcomes: Vec<(SocketAddr, Outcome)> = Vec::new();
    loop {
        let (control, known, result) = match rx.recv_timeout(REDRAW) {
            Ok(finished) => finished,
            Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                display.tick(&mut std::io::stderr().lock());
                continue;
            }
            Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
        };
        display.progress.finished(control);
        display.clear(&mut std::io::stderr().lock());
        let label = known.unwrap_or_else(|| control.to_string());
        if let Some(outcome) = summarize(control, &label, result, display.started) {
            all_ok &= matches!(outcome, Outcome::Pulled(_));
            outcomes.push((control, outcome));
        }
    }
    record(config, &statics, &outcomes)?;
    Ok(all_ok)
}

/// The agents to pull: the configured ones (with the name the registry
/// learnt for them), then those that registered, narrowed to `hosts` (names
/// or addresses) if any are given.
fn targets(
    statics: &[crate::config::StaticAgent],
    registered: &[super::registry::AgentRecord],
    hosts: &[String],
) -> Result<Vec<Target>, PullOnceError> {
    let mut targets: Vec<Target> = Vec::new();
    for s in statics {
        let known = registered
            .iter()
            .find(|r| r.control == s.control)
            .and_then(|r| r.name.clone());
        targets.push(Target {
            control: s.control,
            known: s.name.clone().or(known),
        });
    }
    for r in registered {
        if !targets.iter().any(|t| t.control == r.control) {
            targets.push(Target {
                control: r.control,
                known: r.name.clone(),
            });
        }
    }
    if !hosts.is_empty() {
        targets.retain(|t| {
            hosts
                .iter()
                .any(|h| Some(h) == t.known.as_ref() || *h == t.control.to_string())
        });
        if targets.is_empty() {
            return Err(PullOnceError::NoMatch(hosts.to_vec()));
        }
    }
    if targets.is_empty() {
        return Err(PullOnceError::NoAgents);
    }
    Ok(targets)
}

/// Print one agent's summary line; what to record of it (nothing for a
/// pull skipped because another one of the host runs).
fn summarize(
    control: SocketAddr,
    label: &str,
    result: Result<pull::PullReport, PullError>,
    started: Instant,
) -> Option<Outcome> {
    match result {
        Ok(r) => {
            let speed = if r.elapsed >= QUIET_FOR {
                format!(", {}", rate(r.wire_bytes, r.elapsed))
            } else {
                String::new()
            };
            say(format_args!(
                "{} {control} ok: {} piece(s), {} bytes ({}), {} already stored, {} ms{speed}",
                r.host,
                r.pieces,
                r.bytes,
                human_bytes(r.bytes),
                r.already_had,
                r.elapsed.as_millis()
            ));
            Some(Outcome::Pulled(r))
        }
        Err(PullError::Busy(host)) => {
            say(format_args!(
                "{host} {control} skipped: another pull of this host is in progress"
            ));
            None
        }
        Err(e) => {
            say(format_args!("{label} {control} FAILED: {e}"));
            Some(Outcome::Failed(e, started.elapsed()))
        }
    }
}

/// What one agent's pull came to, for the registry.
enum Outcome {
    Pulled(pull::PullReport),
    /// The error and about how long the attempt took.
    Failed(PullError, Duration),
}

/// Record the pulls in the registry, so `pihealth status` shows them
/// (last pull, bytes, errors, up/down) when cron is the only scheduler.
/// Only while no master daemon runs: one that does records its own pulls
/// and would overwrite ours (see `registry::try_writer_lock`).
fn record(
    config: &MasterConfig,
    statics: &[crate::config::StaticAgent],
    outcomes: &[(SocketAddr, Outcome)],
) -> Result<(), PullOnceError> {
    let Some(_lock) =
        super::registry::try_writer_lock(&config.log_dir).map_err(PullOnceError::ReadRegistry)?
    else {
        return Ok(());
    };
    let registry = Registry::open(&config.log_dir, statics, config.agent_data_port)
        .map_err(PullOnceError::Registry)?;
    for (control, outcome) in outcomes {
        match outcome {
            Outcome::Pulled(r) => {
                if let Some(info) = &r.info {
                    registry.contact(*control, info, r.skew_ms, "pull");
                }
                registry.pull_finished(*control, Ok(r.bytes), r.elapsed);
            }
            Outcome::Failed(e, elapsed) => registry.pull_finished(*control, Err(e), *elapsed),
        }
    }
    // Without heartbeats, a pull is the only sign of life: an agent not
    // seen for as long as the daemon would wait for heartbeats is down.
    let limit = config.heartbeat_interval.0 * config.heartbeat_misses;
    registry.check_liveness(i64::try_from(limit.as_millis()).unwrap_or(i64::MAX));
    registry.flush().map_err(PullOnceError::Registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn display(terminal: bool) -> Display {
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(10))
            .unwrap_or_else(Instant::now);
        let progress = Arc::new(Progress::default());
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.2:8000".parse().unwrap(),
            "127.0.0.3:8000".parse().unwrap(),
        );
        progress.update(a, |p| {
            p.host = "pi1".into();
            p.offered = 4 << 20;
            p.received = 1 << 20;
        });
        progress.update(b, |p| p.host = "pi2".into());
        progress.finished(b);
        Display {
            progress,
            started: long_ago,
            terminal,
            drawn: false,
            last_plain: long_ago,
            agents: 2,
        }
    }

    #[test]
    fn plain_progress_lines_when_not_a_terminal() {
        let mut d = display(false);
        let mut out = Vec::new();
        d.tick(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("progress: pi1 1.0 MiB of 4.0 MiB, "),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
        // Not again before PLAIN_EVERY has passed.
        let mut again = Vec::new();
        d.tick(&mut again);
        assert!(again.is_empty());
    }

    #[test]
    fn one_redrawn_line_on_a_terminal_cleared_before_summaries() {
        let mut d = display(true);
        let mut out = Vec::new();
        d.tick(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("\r\x1b[Kpulling: 1/2 agents done, 1.0 MiB at "),
            "{text}"
        );
        assert!(text.contains("pi1 1.0 MiB of 4.0 MiB"));
        let mut cleared = Vec::new();
        d.clear(&mut cleared);
        assert_eq!(cleared, b"\r\x1b[K");
    }
}
