//! `pihealth status`: the fleet table, read from `log/registry.json`, so it
//! works with or without the master running, and says how fresh it is.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use crate::level::Level;
use crate::master::alarms::read_alarms;
use crate::master::registry::{now_ms, AgentRecord, Registry};

fn ago(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(t) => {
            let secs = ((now_ms() - t) / 1000).max(0);
            match secs {
                0..=119 => format!("{secs}s ago"),
                120..=7199 => format!("{}m ago", secs / 60),
                _ => format!("{}h ago", secs / 3600),
            }
        }
    }
}

/// Open problems per host: types whose latest alarm is at a problem level.
pub fn open_alarms(log_dir: &Path) -> io::Result<HashMap<String, usize>> {
    let mut latest: HashMap<(String, String), String> = HashMap::new();
    for a in read_alarms(&log_dir.join("alarms.log"))? {
        latest.insert((a.host, a.log_type), a.level);
    }
    let mut open: HashMap<String, usize> = HashMap::new();
    for ((host, _), level) in latest {
        if level.parse::<Level>().is_ok_and(|l| l.is_problem()) {
            *open.entry(host).or_default() += 1;
        }
    }
    Ok(open)
}

pub fn rows(agents: &[AgentRecord], open: &HashMap<String, usize>) -> Vec<[String; 10]> {
    agents
        .iter()
        .map(|a| {
            let skew = match a.clock_skew_ms {
                None => "-".to_string(),
                Some(ms) if ms.abs() > 30_000 => format!("{:+.1}s SKEWED", ms as f64 / 1000.0),
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

pub fn print(log_dir: &Path, out: &mut dyn Write) -> Result<(), String> {
    let (written, agents) = Registry::read_snapshot(log_dir).map_err(|e| e.to_string())?;
    let Some(written) = written else {
        return Err(format!(
            "no {}/registry.json yet: has the master run here?",
            log_dir.display()
        ));
    };
    let open = open_alarms(log_dir).map_err(|e| e.to_string())?;
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
    let rows = rows(&agents, &open);
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
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
    let io = |e: io::Error| e.to_string();
    writeln!(out, "{}", line(header.to_vec())).map_err(io)?;
    for r in &rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect())).map_err(io)?;
    }
    writeln!(out, "(state written by the master {})", ago(Some(written))).map_err(io)?;
    Ok(())
}
