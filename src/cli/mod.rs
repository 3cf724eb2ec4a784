//! Operator commands beyond the two daemons: `keygen`, `status`, `alarms`,
//! `silence`, `logs` and `demo`.
pub mod alarms;
pub mod demo;
pub mod logs;
pub mod silence;
pub mod status;

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::protocol::Key;

/// Why `keygen` wrote no key file.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("--host {name:?}: {why}")]
    HostName {
        name: String,
        why: crate::names::NameError,
    },
    /// The fleet key could not be made or read: the key module's message.
    #[error("{0}")]
    Key(String),
    #[error("{} exists; use --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error("{}: {error}", path.display())]
    File { path: PathBuf, error: io::Error },
    #[error("{0}")]
    Mode(io::Error),
}

/// Write a fresh fleet key, readable by its owner only. Refuses to replace
/// an existing key unless `force`.
pub fn keygen(path: &Path, force: bool) -> Result<(), KeygenError> {
    let key = Key::generate().map_err(|e| KeygenError::Key(e.to_string()))?;
    write_key_file(path, &format!("{}\n", key.to_hex()), force)
}

/// Write host `name`'s key, derived from the fleet key in `fleet_key`, to
/// `path` (mode 600): the only key that host's agent needs.
pub fn keygen_host(
    fleet_key: &Path,
    name: &str,
    path: &Path,
    force: bool,
) -> Result<(), KeygenError> {
    crate::names::check_host_name(name).map_err(|why| KeygenError::HostName {
        name: name.to_string(),
        why,
    })?;
    let fleet = Key::load(fleet_key).map_err(|e| KeygenError::Key(e.to_string()))?;
    write_key_file(path, &fleet.for_host(name).host_file_text(name), force)
}

fn write_key_file(path: &Path, text: &str, force: bool) -> Result<(), KeygenError> {
    let file_error = |path: &Path| {
        let path = path.to_path_buf();
        move |error| KeygenError::File { path, error }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(file_error(dir))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => KeygenError::Exists(path.to_path_buf()),
        _ => file_error(path)(e),
    })?;
    // An existing file keeps its old mode on truncate: set it explicitly.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(KeygenError::Mode)?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(file_error(path))
}

/// Set once a write to standard output found the reader gone.
static PIPE_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether standard output was closed by its reader (`pihealth status |
/// head -1`). The command's error then is no failure: `main` ends quietly
/// with status 0, as `cat` and `grep` do.
pub fn pipe_closed() -> bool {
    PIPE_CLOSED.load(Ordering::Relaxed)
}

/// Standard output that notes a closed pipe (see `pipe_closed`). The
/// error still reaches the writer, so a command stops at once, `--follow`
/// included; only the message is left out. (Rust ignores SIGPIPE, so the
/// error would otherwise be printed as "Broken pipe (os error 32)".)
pub struct Stdout(io::Stdout);

pub fn stdout() -> Stdout {
    Stdout(io::stdout())
}

fn note_closed<T>(result: io::Result<T>) -> io::Result<T> {
    if let Err(e) = &result {
        if e.kind() == io::ErrorKind::BrokenPipe {
            PIPE_CLOSED.store(true, Ordering::Relaxed);
        }
    }
    result
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        note_closed(self.0.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        note_closed(self.0.flush())
    }
}

/// Why a `--since`/`--until` was refused.
#[derive(Debug, thiserror::Error)]
pub enum TimeError {
    #[error(
        "expected a time like 2026-11-21T10:00:00+08:00, a date like 2026-11-21, \
         a duration back from now like 2h, or now, today or yesterday; got `{0}`"
    )]
    Unreadable(String),
    #[error("`{0}` is too long ago")]
    TooLongAgo(String),
    #[error("`{0}` does not exist on this machine's clock (a change to summer time)")]
    Skipped(String),
    #[error("--since {since} is not before --until {until}: no line can be in that interval")]
    EmptyInterval { since: String, until: String },
}

/// A time for `--since`/`--until`, read against the present moment.
pub fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, TimeError> {
    parse_time_at(text, chrono::Local::now())
}

/// `--since`/`--until` at a given `now` (for tests): RFC 3339
/// (`2026-11-21T10:00:00+08:00`), a local date and time without offset
/// (`2026-11-21T10:00`, `2026-11-21 10:00:00`), a bare date (its local
/// midnight), a duration back from now (`2h`, `1d 6h`), or `now`, `today`
/// (local midnight) and `yesterday` (the midnight before).
pub(crate) fn parse_time_at(
    text: &str,
    now: chrono::DateTime<chrono::Local>,
) -> Result<chrono::DateTime<chrono::FixedOffset>, TimeError> {
    use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};
    let text = text.trim();
    let midnight = |date: NaiveDate| local(date.and_time(NaiveTime::MIN), text);
    match text.to_ascii_lowercase().as_str() {
        "now" => return Ok(now.fixed_offset()),
        "today" => return midnight(now.date_naive()),
        "yesterday" => return midnight(now.date_naive() - Duration::days(1)),
        _ => {}
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t);
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return local(t, text);
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return midnight(date);
    }
    let ago = humantime::parse_duration(text).map_err(|_| TimeError::Unreadable(text.into()))?;
    let too_long_ago = || TimeError::TooLongAgo(text.into());
    let ago = Duration::from_std(ago).map_err(|_| too_long_ago())?;
    now.checked_sub_signed(ago)
        .map(|t| t.fixed_offset())
        .ok_or_else(too_long_ago)
}

/// A wall-clock time on this machine's clock; at a change to summer time
/// the earlier of two readings, and a time skipped by one is refused.
fn local(
    t: chrono::NaiveDateTime,
    text: &str,
) -> Result<chrono::DateTime<chrono::FixedOffset>, TimeError> {
    use chrono::TimeZone;
    chrono::Local
        .from_local_datetime(&t)
        .earliest()
        .map(|t| t.fixed_offset())
        .ok_or_else(|| TimeError::Skipped(text.into()))
}

/// `--since` must come before `--until`: an empty or inverted interval
/// would print nothing without a word.
pub fn check_interval(
    since: Option<chrono::DateTime<chrono::FixedOffset>>,
    until: Option<chrono::DateTime<chrono::FixedOffset>>,
) -> Result<(), TimeError> {
    let text = |t: chrono::DateTime<chrono::FixedOffset>| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    };
    match (since, until) {
        (Some(s), Some(u)) if s >= u => Err(TimeError::EmptyInterval {
            since: text(s),
            until: text(u),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(text: &str) -> chrono::DateTime<chrono::FixedOffset> {
        let now = chrono::Local
            .with_ymd_and_hms(2026, 11, 21, 15, 30, 0)
            .single()
            .expect("a plain afternoon");
        parse_time_at(text, now).expect(text)
    }

    fn local_text(t: chrono::DateTime<chrono::FixedOffset>) -> String {
        t.with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    }

    #[test]
    fn times_in_every_accepted_form() {
        assert_eq!(local_text(at("now")), "2026-11-21 15:30:00");
        assert_eq!(local_text(at("today")), "2026-11-21 00:00:00");
        assert_eq!(local_text(at("Yesterday")), "2026-11-20 00:00:00");
        assert_eq!(local_text(at("2026-11-19")), "2026-11-19 00:00:00");
        assert_eq!(local_text(at("2026-11-19 08:15")), "2026-11-19 08:15:00");
        assert_eq!(local_text(at("2026-11-19T08:15:30")), "2026-11-19 08:15:30");
        assert_eq!(local_text(at("2h")), "2026-11-21 13:30:00");
        assert_eq!(
            at("2026-11-21T10:00:00+08:00").to_rfc3339(),
            "2026-11-21T10:00:00+08:00"
        );
        let e = parse_time("sometime").unwrap_err().to_string();
        assert!(e.contains("yesterday") && e.contains("`sometime`"), "{e}");
        assert!(parse_time("2026-13-40").is_err());
        assert!(parse_time("100000000y").is_err());
    }

    #[test]
    fn empty_or_inverted_interval_refused() {
        assert!(check_interval(Some(at("1h")), Some(at("2h"))).is_err());
        assert!(check_interval(Some(at("now")), Some(at("now"))).is_err());
        assert!(check_interval(Some(at("2h")), Some(at("1h"))).is_ok());
        assert!(check_interval(Some(at("yesterday")), None).is_ok());
        assert!(check_interval(None, Some(at("today"))).is_ok());
    }
}
