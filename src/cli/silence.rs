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

/// Why a silence command did nothing.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    /// Bad input (a duration, host, type or reason): exit status 2.
    #[error("{0}")]
    Refused(String),
    /// No silence in force with that id: bad input too, exit status 2.
    #[error("{0}")]
    Unknown(String),
    /// The silence file could not be changed: the store's message.
    #[error("{0}")]
    Store(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Check the arguments before anything is written: bad input is an
/// `Err` the caller turns into exit status 2.
pub fn check(action: &Action) -> Result<(), SilenceError> {
    if let Action::Add {
        host,
        log_type,
        duration,
        reason,
    } = action
    {
        let refused = |e: String| SilenceError::Refused(e);
        let d = silences::parse_duration(duration).map_err(|e| refused(e.to_string()))?;
        silences::check_new(host, log_type.as_deref(), d, reason)
            .map_err(|e| refused(e.to_string()))?;
    }
    Ok(())
}

pub fn run(log_dir: &Path, action: &Action, out: &mut dyn Write) -> Result<(), SilenceError> {
    let store = SilenceStore::new(log_dir);
    match action {
        Action::Add {
            host,
            log_type,
            duration,
            reason,
        } => {
            let d = silences::parse_duration(duration)
                .map_err(|e| SilenceError::Refused(e.to_string()))?;
            let s = store
                .add(host, log_type.as_deref(), d, reason)
                .map_err(|e| SilenceError::Store(e.to_string()))?;
            writeln!(out, "silenced: {}", describe(&s))?;
        }
        Action::List { json } => {
            let list = store.list()?;
            if *json {
                for s in &list {
                    writeln!(out, "{}", serde_json::to_string(s)?)?;
                }
            } else if list.is_empty() {
                writeln!(out, "no silences in force")?;
            } else {
                for s in &list {
                    writeln!(out, "{}", describe(s))?;
                }
            }
        }
        Action::Remove { id } => {
            let s = store.remove(*id).map_err(|e| {
                let e = e.to_string();
                if e.starts_with("no silence") {
                    SilenceError::Unknown(e)
                } else {
                    SilenceError::Store(e)
                }
            })?;
            writeln!(out, "removed: {}", describe(&s))?;
        }
    }
    Ok(())
}
