//! `pihealth silence`: add, list and remove silences
//! (`crate::master::silences`). Works with or without the master running:
//! it writes `log/.master/silences.json`, which the master re-reads at
//! each alarm.

use std::io::Write;
use std::path::Path;

use crate::master::silences::{self, Silence, SilenceStore};

pub enum Action {
    Add {
        host: String,
        log_type: Option<String>,
        /// As typed after `--for`.
        duration: String,
        reason: String,
    },
    List {
        json: bool,
    },
    Remove {
        id: u64,
    },
}

fn describe(s: &Silence) -> String {
    format!(
        "#{:<4} {:<16} {:<10} until {}  {}",
        s.id,
        s.host,
        s.log_type.as_deref().unwrap_or("(all)"),
        s.until_text(),
        s.reason
    )
}

/// Check the arguments before anything is written: bad input is an
/// `Err` the caller turns into exit status 2.
pub fn check(action: &Action) -> Result<(), String> {
    if let Action::Add {
        host,
        log_type,
        duration,
        reason,
    } = action
    {
        let d = silences::parse_duration(duration).map_err(|e| e.to_string())?;
        silences::check_new(host, log_type.as_deref(), d, reason).map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub fn run(log_dir: &Path, action: &Action, out: &mut dyn Write) -> Result<(), String> {
    let store = SilenceStore::new(log_dir);
    let io = |e: std::io::Error| e.to_string();
    match action {
        Action::Add {
            host,
            log_type,
            duration,
            reason,
        } => {
            let d = silences::parse_duration(duration).map_err(|e| e.to_string())?;
            let s = store
                .add(host, log_type.as_deref(), d, reason)
                .map_err(|e| e.to_string())?;
            writeln!(out, "silenced: {}", describe(&s)).map_err(io)
        }
        Action::List { json } => {
            let list = store.list().map_err(|e| e.to_string())?;
            if *json {
                for s in &list {
                    writeln!(
                        out,
                        "{}",
                        serde_json::to_string(s).map_err(|e| e.to_string())?
                    )
                    .map_err(io)?;
                }
                return Ok(());
            }
            if list.is_empty() {
                return writeln!(out, "no silences in force").map_err(io);
            }
            for s in &list {
                writeln!(out, "{}", describe(s)).map_err(io)?;
            }
            Ok(())
        }
        Action::Remove { id } => {
            let s = store.remove(*id).map_err(|e| e.to_string())?;
            writeln!(out, "removed: {}", describe(&s)).map_err(io)
        }
    }
}
