//! Why a built-in check failed: the text is what its script says on
//! stderr, logged as the run's one `unknown` line.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Builtin;

/// A threshold variable that is missing or not a number; kept with the
/// limits and reported by each check that uses it, as the scripts do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("no value for {0}")]
    Missing(String),
    #[error("{key}='{value}' is not a non-negative number")]
    NotANumber { key: &'static str, value: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot read {} or {}", .0.display(), .1.display())]
    ReadEither(PathBuf, PathBuf),
    #[error("cannot parse {}", .0.display())]
    Parse(PathBuf),
    #[error("cannot parse {}: {line:?}", path.display())]
    ParseLine { path: PathBuf, line: String },
    #[error("cannot parse get_throttled: {0:?}")]
    Throttled(String),
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// sysinfo's disk total, as its script reports a failed `disk.sh`.
    #[error("disk.sh failed: {0}")]
    Disk(Box<CheckError>),
    #[error("the built-in worker thread has ended")]
    WorkerEnded,
    #[error("cannot start the built-in worker thread: {0}")]
    WorkerStart(#[source] io::Error),
    #[error("built-in {kind} check panicked: {what}")]
    Panicked { kind: Builtin, what: String },
    #[error("timeout: built-in check still running after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
}

impl CheckError {
    pub(crate) fn read(path: impl Into<PathBuf>, source: io::Error) -> CheckError {
        CheckError::Read {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parse_line(path: impl Into<PathBuf>, line: &str) -> CheckError {
        CheckError::ParseLine {
            path: path.into(),
            line: line.to_string(),
        }
    }
}
