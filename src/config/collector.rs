//! The collectors as configured: what each runs, how its output becomes a
//! level, and its trigger rules (`for:` / `recover_for:`). The agent
//! schedules and runs them (`agent::collector`, `agent::builtin`) and
//! applies the rules (`agent::trigger`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// How a collector's output becomes a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Our scripts: every line ends in one or more level words.
    Lines,
    /// Nagios / Monitoring Plugins: the exit code is the level, the first
    /// line of stdout is the text.
    Nagios,
}

/// One configured collector, as the scheduler needs it.
#[derive(Debug, Clone)]
pub struct CollectorSpec {
    /// The log type, e.g. `cpu`; already validated as `[A-Za-z0-9_-]+`, so it
    /// is safe as a file name.
    pub name: String,
    /// Program and arguments, already split (see [`split_command`]); never
    /// run through a shell. Empty for a built-in.
    pub argv: Vec<String>,
    /// A check built into the agent, run instead of a program (`argv` is
    /// then empty); see `agent::builtin`.
    pub builtin: Option<Builtin>,
    pub interval: Duration,
    pub timeout: Duration,
    pub mode: Mode,
    /// When its levels raise alarms (`for:` / `recover_for:`).
    pub trigger: Trigger,
}

/// Why a `command:` cannot be split into argv.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CommandError {
    #[error("command contains a NUL byte")]
    Nul,
    #[error("unbalanced quotes or trailing backslash in command `{0}`")]
    Unbalanced(String),
    #[error("empty command")]
    Empty,
}

/// Split a command string like
/// `/usr/lib/nagios/plugins/check_load -w 5,4,3 -c "10,8,6"` into argv with
/// shell-like quoting, but never through a shell: no globbing, no variables,
/// no redirection. As in sh, a word starting with `#` begins a comment.
pub(crate) fn split_command(command: &str) -> Result<Vec<String>, CommandError> {
    if command.contains('\0') {
        return Err(CommandError::Nul);
    }
    match shlex::split(command) {
        None => Err(CommandError::Unbalanced(command.to_string())),
        Some(argv) if argv.is_empty() => Err(CommandError::Empty),
        Some(argv) => Ok(argv),
    }
}

/// Which built-in check a collector runs (`builtin:` in the agent config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Builtin {
    Cpu,
    Mem,
    Disk,
    Proc,
    Users,
    Sysinfo,
    /// Beyond the six scripts: bytes, packets and errors per interface.
    Net,
    /// Reads, writes and busy time per block device.
    Diskio,
    /// The Raspberry Pi firmware's under-voltage and throttling flags.
    Throttle,
}

impl Builtin {
    pub const ALL: [Builtin; 6] = [
        Builtin::Cpu,
        Builtin::Mem,
        Builtin::Disk,
        Builtin::Proc,
        Builtin::Users,
        Builtin::Sysinfo,
    ];

    /// The checks without a script in `scripts/`.
    pub const EXTRA: [Builtin; 3] = [Builtin::Net, Builtin::Diskio, Builtin::Throttle];

    pub fn as_str(self) -> &'static str {
        match self {
            Builtin::Cpu => "cpu",
            Builtin::Mem => "mem",
            Builtin::Disk => "disk",
            Builtin::Proc => "proc",
            Builtin::Users => "users",
            Builtin::Sysinfo => "sysinfo",
            Builtin::Net => "net",
            Builtin::Diskio => "diskio",
            Builtin::Throttle => "throttle",
        }
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a change must last before it alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// This many consecutive runs (at least 1).
    Runs(u32),
    /// The streak's first and latest runs at least this far apart.
    For(Duration),
}

impl Hold {
    /// The first run at the new level alarms (the behaviour without rules).
    pub const IMMEDIATE: Hold = Hold::Runs(1);
}

impl Default for Hold {
    fn default() -> Hold {
        Hold::IMMEDIATE
    }
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::Runs(1) => f.write_str("1 run"),
            Hold::Runs(n) => write!(f, "{n} runs"),
            Hold::For(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

const EXPECTED: &str = "expected a duration like 2m or 30s, or a count of runs like `3 runs`";

/// Why a `for:` or `recover_for:` value is not a hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    #[error("{EXPECTED}, got `{0}` (at least 1 run)")]
    NoRuns(String),
    #[error("{EXPECTED}, got `{0}`")]
    Invalid(String),
}

impl FromStr for Hold {
    type Err = HoldError;
    fn from_str(text: &str) -> Result<Hold, HoldError> {
        let t = text.trim();
        if let Some(count) = t
            .strip_suffix("runs")
            .or_else(|| t.strip_suffix("run"))
            .map(str::trim)
        {
            return match count.parse::<u32>() {
                Ok(0) => Err(HoldError::NoRuns(text.to_string())),
                Ok(n) => Ok(Hold::Runs(n)),
                Err(_) => Err(HoldError::Invalid(text.to_string())),
            };
        }
        humantime::parse_duration(t)
            .map(Hold::For)
            .map_err(|_| HoldError::Invalid(text.to_string()))
    }
}

impl<'de> Deserialize<'de> for Hold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A bare number is refused: `for: 3` could mean runs or seconds.
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// A collector's trigger rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trigger {
    /// How long trouble must last before it alarms (`for:`).
    pub hold: Hold,
    /// How long calm must last, once alarmed, before the recovery alarm
    /// (`recover_for:`).
    pub recover: Hold,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> String {
        text.to_string()
    }

    #[test]
    fn parses_runs_and_durations_and_refuses_the_rest() {
        assert_eq!("3 runs".parse(), Ok(Hold::Runs(3)));
        assert_eq!("1 run".parse(), Ok(Hold::Runs(1)));
        assert_eq!(" 5runs ".parse(), Ok(Hold::Runs(5)));
        assert_eq!("2m".parse(), Ok(Hold::For(Duration::from_secs(120))));
        assert_eq!("1m30s".parse(), Ok(Hold::For(Duration::from_secs(90))));
        assert_eq!("0s".parse(), Ok(Hold::For(Duration::ZERO)));
        for bad in ["0 runs", "-1 runs", "3", "soon", "3 laps", "runs", ""] {
            let e = bad.parse::<Hold>().unwrap_err().to_string();
            assert!(e.contains("3 runs") && e.contains(bad), "{bad}: {e}");
        }
        assert_eq!(Hold::Runs(3).to_string(), "3 runs");
        assert_eq!(Hold::For(Duration::from_secs(120)).to_string(), "2m");
    }

    #[test]
    fn split_command_quoting_and_errors() {
        assert_eq!(
            split_command(r#"/usr/lib/nagios/plugins/check_load -w 5,4,3 -c "10,8,6""#),
            Ok(vec![
                s("/usr/lib/nagios/plugins/check_load"),
                s("-w"),
                s("5,4,3"),
                s("-c"),
                s("10,8,6")
            ])
        );
        assert_eq!(
            split_command(r#"check_disk -p '/mnt/my disk' -e  a\ b"#),
            Ok(vec![
                s("check_disk"),
                s("-p"),
                s("/mnt/my disk"),
                s("-e"),
                s("a b")
            ])
        );
        // No shell: metacharacters are plain arguments.
        assert_eq!(
            split_command("echo $HOME; rm -rf / | cat > x"),
            Ok(vec![
                s("echo"),
                s("$HOME;"),
                s("rm"),
                s("-rf"),
                s("/"),
                s("|"),
                s("cat"),
                s(">"),
                s("x")
            ])
        );
        assert!(split_command("").is_err());
        assert!(split_command("   \t ").is_err());
        assert!(split_command("check_load -w \"5,4,3").is_err());
        assert!(split_command("check_load 'x").is_err());
        assert!(split_command("a\0b").is_err());
    }
}
