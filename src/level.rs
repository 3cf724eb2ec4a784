//! Health levels shared by collectors, alarms and the log reader.
//!
//! `lines` collectors print one of these words as the last field of a line;
//! `nagios` collectors map their exit code onto them (0 OK → normal,
//! 1 → warning, 2 → critical, anything else → unknown).

use std::fmt;
use std::str::FromStr;

/// Ordered from harmless to worst, so `max()` over a run gives its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Normal,
    Note,
    Warning,
    Critical,
    Unknown,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Normal,
        Level::Note,
        Level::Warning,
        Level::Critical,
        Level::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Note => "note",
            Level::Warning => "warning",
            Level::Critical => "critical",
            Level::Unknown => "unknown",
        }
    }

    /// A problem level raises an alarm when entered or left. `note` is
    /// informational: it is logged but does not page anybody.
    pub fn is_problem(self) -> bool {
        matches!(self, Level::Warning | Level::Critical | Level::Unknown)
    }

    /// The level a Nagios plugin reports through its exit code.
    pub fn from_nagios_exit(code: Option<i32>) -> Level {
        match code {
            Some(0) => Level::Normal,
            Some(1) => Level::Warning,
            Some(2) => Level::Critical,
            _ => Level::Unknown,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not a level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a level (normal, note, warning, critical, unknown)")]
pub struct NotALevel(String);

impl FromStr for Level {
    type Err = NotALevel;
    fn from_str(s: &str) -> Result<Level, NotALevel> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| NotALevel(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_parse() {
        assert!(Level::Warning > Level::Note);
        assert_eq!("WARNING".parse::<Level>(), Ok(Level::Warning));
        assert!("bad".parse::<Level>().is_err());
        assert_eq!(Level::from_nagios_exit(Some(2)), Level::Critical);
        assert_eq!(Level::from_nagios_exit(None), Level::Unknown);
        assert!(!Level::Note.is_problem());
    }
}
