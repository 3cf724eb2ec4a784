//! The one writer of the master's `events.log` (`log/.master/events.log`):
//! agents going up and down, registrations and moves (`registry`), gaps
//! and restarted streams (`archive`), each a line `TIME TEXT`.
//!
//! Every line is one `write` on a file opened for appending, then
//! `fdatasync`: events are few (a state change, a gap), and an event that
//! is gone after a power cut (a gap the operator never hears of) would be
//! a silent loss. Appends from several threads and from `pihealth pull`
//! running beside the daemon do not interleave: each line is one write to
//! an `O_APPEND` file. A line torn by a crash is cut when the daemon starts
//! (`EventLog::open`), so the next line does not run into it.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::storage;

/// Appends to one `events.log`.
#[derive(Debug, Clone)]
pub(crate) struct EventLog {
    path: PathBuf,
}

impl EventLog {
    /// The events log at `path`, with any line torn by a crash cut off.
    /// Only the daemon calls this, at start: a cut while another process
    /// appends could cut its line.
    pub(crate) fn open(path: &Path) -> io::Result<EventLog> {
        storage::cut_torn_line(path)?;
        Ok(EventLog::at(path))
    }

    /// The events log at `path`, as it is (for `pihealth pull` and each
    /// pull's archive, which only append).
    pub(crate) fn at(path: &Path) -> EventLog {
        EventLog {
            path: path.to_path_buf(),
        }
    }

    /// Append `TIME text` durably; `text` is made one line. The program
    /// log gets it too, at `level`. Errors are logged and returned: the
    /// caller decides whether a missing event matters.
    pub(crate) fn record(&self, level: log::Level, text: &str) -> io::Result<()> {
        log::log!(level, "{text}");
        let line = format!(
            "{} {}\n",
            storage::now_rfc3339(),
            text.replace(['\n', '\r'], " ")
        );
        let result = append_line(&self.path, line.as_bytes());
        if let Err(e) = &result {
            log::error!("cannot write {}: {e}", self.path.display());
        }
        result
    }
}

fn append_line(path: &Path, line: &[u8]) -> io::Result<()> {
    let open = || OpenOptions::new().create(true).append(true).open(path);
    let mut file = match open() {
        Ok(f) => f,
        // The master's directory is made at start; a test or a fresh
        // `pihealth pull` may write the first event before that.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(|e| storage::with_path(e, dir))?;
            }
            open().map_err(|e| storage::with_path(e, path))?
        }
        Err(e) => return Err(storage::with_path(e, path)),
    };
    file.write_all(line)?;
    crate::storage::fdatasync(&file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_whole_and_a_torn_one_is_cut_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".master/events.log");
        let log = EventLog::at(&path);
        log.record(log::Level::Info, "pi1 up").unwrap();
        log.record(log::Level::Warn, "pi1 cpu gap\nof 3 bytes")
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text:?}");
        assert!(lines[0].ends_with(" pi1 up"));
        assert!(lines[1].ends_with(" pi1 cpu gap of 3 bytes"));

        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"2026-01-01T00:00:00Z pi1 do").unwrap();
        let log = EventLog::open(&path).unwrap();
        log.record(log::Level::Info, "pi1 down").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text:?}");
        assert!(text.ends_with(" pi1 down\n"));
    }

    #[test]
    fn an_unwritable_log_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be.
        fs::create_dir_all(dir.path().join("events.log")).unwrap();
        let e = EventLog::at(&dir.path().join("events.log"))
            .record(log::Level::Info, "x")
            .unwrap_err();
        assert!(e.to_string().contains("events.log"), "{e}");
    }
}
