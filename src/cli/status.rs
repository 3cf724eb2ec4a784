//! `pihealth status`: the fleet table, read from `log/.master/registry.json`, so it
//! works with or without the master running, and says how fresh it is.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::master::alarms::{problems, read_alarms};
use crate::master::registry::{now_ms, AgentRecord, Registry};
use crate::protocol::message::SKEW_LIMIT_MS;

/// The running master rewrites the state at least this often while agents
/// heartbeat; older means it is probably stopped.
const STALE_AFTER_MS: i64 = 30_000;

fn ago(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "-".into(),
        |t| crate::human::ago((now_ms() - t) / 1000, false),
    )
}

/// Open problems per host (see `master::alarms::problems`).
pub(crate) fn open_alarms(log_dir: &Path) -> io::Result<HashMap<String, usize>> {
    let mut open: HashMap<String, usize> = HashMap::new();
    for p in problems(&read_alarms(
        &crate::master::files::MasterFiles::find(log_dir).alarms(),
    )?) {
        if p.open {
            *open.entry(p.host).or_default() += 1;
        }
    }
    Ok(open)
}

pub(crate) fn rows(agents: &[AgentRecord], open: &HashMap<String, usize>) -> Vec<[String; 10]> {
    agents
        .iter()
        .map(|a| {
            let skew = match a.clock_skew_ms {
                None => "-".to_string(),
                Some(ms) if ms.abs() > SKEW_LIMIT_MS => {
                    format!("{:+.1}s SKEWED", ms as f64 / 1000.0)
                }
                Some(ms) => format!("{:+.1}s", ms as f64 / 1000.0),
            };
            let pull = match (&a.last_pull_error, a.last_pull_ok_ms) {
                (Some(e), _) => format!("FAILED: {}", e.chars().take(40).collect::<String>()),
                (None, t) => ago(t),
            };
            [
                a.label(),
                a.control.to_string(),
                a.state.as_str().to_string(),
                ago(a.state_since_ms),
                ago(a.last_heartbeat_ms),
                pull,
                a.bytes_pulled.to_string(),
                a.backlog.to_string(),
                open.get(&a.label()).copied().unwrap_or(0).to_string(),
                skew,
            ]
        })
        .collect()
}

fn rfc3339(ms: Option<i64>) -> Option<String> {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The fleet as JSON: one object with the file's age and one entry per agent.
pub(crate) fn json(
    written_ms: i64,
    agents: &[AgentRecord],
    open: &HashMap<String, usize>,
) -> serde_json::Value {
    let agents: Vec<serde_json::Value> = agents
        .iter()
        .map(|a| {
            serde_json::json!({
                "host": a.label(),
                "address": a.control.to_string(),
                "state": a.state.as_str(),
                "since": rfc3339(a.state_since_ms),
                "last_heartbeat": rfc3339(a.last_heartbeat_ms),
                "last_pull": rfc3339(a.last_pull_ms),
                "last_pull_ok": rfc3339(a.last_pull_ok_ms),
                "last_pull_error": a.last_pull_error,
                "bytes_pulled": a.bytes_pulled,
                "backlog_bytes": a.backlog,
                "open_alarms": open.get(&a.label()).copied().unwrap_or(0),
                "clock_skew_seconds": a.clock_skew_ms.map(|ms| ms as f64 / 1000.0),
                "clock_skewed": a.clock_skew_ms.is_some_and(|ms| ms.abs() > SKEW_LIMIT_MS),
            })
        })
        .collect();
    serde_json::json!({
        "written": rfc3339(Some(written_ms)),
        "age_seconds": ((now_ms() - written_ms) as f64 / 1000.0).max(0.0),
        "agents": agents,
    })
}

/// Why `status` has no table to show.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no {} yet: has the master run here?", .0.display())]
    NoState(PathBuf),
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub fn print(log_dir: &Path, as_json: bool, out: &mut dyn Write) -> Result<(), StatusError> {
    let (written, agents) = Registry::read_snapshot(log_dir)?;
    let Some(written) = written else {
        let registry = crate::master::files::MasterFiles::find(log_dir).registry();
        return Err(StatusError::NoState(registry));
    };
    let open = open_alarms(log_dir)?;
    if as_json {
        writeln!(out, "{}", json(written, &agents, &open))?;
        return Ok(());
    }
    table(&rows(&agents, &open), out)?;
    writeln!(out, "{}", freshness(log_dir, written))?;
    Ok(())
}

/// The rows under a header, each column as wide as its widest cell.
fn table(rows: &[[String; 10]], out: &mut dyn Write) -> io::Result<()> {
    let header = [
        "HOST",
        "ADDRESS",
        "STATE",
        "SINCE",
        "HEARTBEAT",
        "LAST PULL",
        "BYTES",
        "BACKLOG",
        "ALARMS",
        "SKEW",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// How fresh the state is, and whether a master daemon keeps it so.
fn freshness(log_dir: &Path, written: i64) -> String {
    match crate::master::registry::daemon_running(log_dir) {
        Some(true) => format!(
            "(state written by the master daemon {})",
            ago(Some(written))
        ),
        // The lock says for sure: say what that means rather than guess.
        Some(false) => format!(
            "(state written {}; no master daemon runs here: last pulls are from `pihealth pull`, \
             and registrations, heartbeats and alarms are not received)",
            ago(Some(written))
        ),
        // A directory last written by a master from before the lock.
        None if now_ms() - written > STALE_AFTER_MS => format!(
            "(state written by the master {} — the master seems not to be running)",
            ago(Some(written))
        ),
        None => format!("(state written by the master {})", ago(Some(written))),
    }
}
