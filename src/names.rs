//! Names that become file names: host names (directories on the master)
//! and log types (file names on both sides).
//!
//! A name from the network or a config file touches the file system only
//! after passing these checks (SPEC §7): `[A-Za-z0-9._-]`, not `.`/`..`,
//! no leading dot (no hidden files), bounded length.
//!
//! A master and an agent may share one `log/` and one `logbackup/` (SPEC
//! §4). The master keeps its own files in `log/.master/`, which no host
//! name reaches (no leading dot). The agent's files are `log/TYPE.log`,
//! `logbackup/TYPE-<UTC time>.log.gz` and hidden ones; a host named
//! `cpu.log` would make the master create `log/cpu.log/` and take the
//! agent's log away, so a host name may not end in `.log` or `.gz`.

/// Longest host name accepted (a DNS label is 63; a FQDN 253).
pub(crate) const MAX_HOST_NAME: usize = 64;
/// Longest log type name accepted.
pub(crate) const MAX_TYPE_NAME: usize = 32;
/// The log type of the master's host down/up alarms: reserved, no collector
/// may take it (`config::AgentConfig::collector_specs`).
pub(crate) const HOST_TYPE: &str = "host";

/// Why a name may not become a file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("expected a {what} name, got an empty one")]
    Empty { what: &'static str },
    #[error("expected a {what} name of at most {max} characters")]
    TooLong { what: &'static str, max: usize },
    /// `others`: the punctuation allowed besides `-` and `_`.
    #[error("expected a {what} name of letters, digits{others} `-` and `_`, found {bad:?}")]
    BadCharacter {
        what: &'static str,
        others: &'static str,
        bad: char,
    },
    #[error("a {what} name may not start with `.` or contain `..`")]
    Dots { what: &'static str },
    #[error(
        "a host name may not end in `.log` or `.gz` (an agent sharing the master's \
         directory keeps its own files under such names)"
    )]
    AgentFileName,
}

fn check(name: &str, what: &'static str, max: usize, allow_dot: bool) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > max {
        return Err(NameError::TooLong { what, max });
    }
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || (allow_dot && c == '.');
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        let others = if allow_dot { ", `.`," } else { "," };
        return Err(NameError::BadCharacter { what, others, bad });
    }
    if name.starts_with('.') || name.contains("..") {
        return Err(NameError::Dots { what });
    }
    Ok(())
}

/// Check a host name before it becomes a directory under `log/` and `logbackup/`.
pub(crate) fn check_host_name(name: &str) -> Result<(), NameError> {
    check(name, "host", MAX_HOST_NAME, true)?;
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".log") || lower.ends_with(".gz") {
        return Err(NameError::AgentFileName);
    }
    Ok(())
}

/// Check a log type name (a collector's name) before it becomes `TYPE.log`.
pub(crate) fn check_type_name(name: &str) -> Result<(), NameError> {
    check(name, "log type", MAX_TYPE_NAME, false)
}

/// This machine's host name, made safe; `localhost` if it cannot be read.
pub(crate) fn local_host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_HOST_NAME)
        .collect();
    if check_host_name(&cleaned).is_ok() {
        cleaned
    } else {
        "localhost".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_host_names_are_refused() {
        for bad in [
            "",
            "..",
            "../../etc",
            "a/b",
            "a\0b",
            ".hidden",
            "a..b",
            "x y",
            &"a".repeat(300),
            // Would shadow an agent's log/TYPE.log or archive
            // in a directory shared with an agent.
            "alarms.log",
            "cpu.log",
            "cpu-20261121T103109Z.log.gz",
            "x.GZ",
        ] {
            assert!(check_host_name(bad).is_err(), "{bad:?} accepted");
        }
        // Names of the master's own files are fine: those live in
        // `log/.master/`, which no host name reaches.
        for good in [
            "pi1",
            "node-07.lab",
            "a_b",
            "127.0.0.2",
            "registry.json",
            "events",
            "master",
            "logs.lab",
        ] {
            assert!(check_host_name(good).is_ok(), "{good:?} refused");
        }
        assert_eq!(
            check_type_name("cpu.x").unwrap_err().to_string(),
            "expected a log type name of letters, digits, `-` and `_`, found '.'"
        );
        assert_eq!(
            check_host_name("a b").unwrap_err().to_string(),
            "expected a host name of letters, digits, `.`, `-` and `_`, found ' '"
        );
        assert!(check_type_name("check_load").is_ok());
        assert!(check_host_name(&local_host_name()).is_ok());
    }
}
