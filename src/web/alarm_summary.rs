//! What `log/.master/alarms.log` says now — the problems per host and type, and how
//! many alarms of each level there were — kept up to date by reading only
//! the lines appended since the last look, so a scrape every few seconds
//! costs nothing however long the file has grown.
//!
//! The judgement itself is `master::alarms::problems`, the same one
//! `pihealth status` and `pihealth alarms` use. It folds over a whole list
//! of alarms; to continue a fold we replay each known problem as one
//! synthetic alarm (its level, message and `since` as the time) before the
//! new lines. That yields exactly what folding over the whole file would:
//! an open problem that stays open keeps its `since`, anything else takes
//! the time of its latest alarm.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::level::Level;
use crate::master::alarms::{problems, AlarmLine, Problem};

#[derive(Debug, Clone, Default)]
pub(crate) struct AlarmSummary {
    /// One per (host, type) that ever alarmed, in order of first alarm.
    pub(crate) problems: Vec<Problem>,
    /// Alarms ever stored, per level (lines with an unreadable level are
    /// counted as `unknown`).
    pub(crate) totals: BTreeMap<Level, u64>,
}

impl AlarmSummary {
    /// The open problems, newest first.
    pub(crate) fn open(&self) -> Vec<&Problem> {
        let mut open: Vec<&Problem> = self.problems.iter().filter(|p| p.open).collect();
        open.sort_by_key(|p| std::cmp::Reverse(time_of(&p.since)));
        open
    }

    /// Open problems of one host.
    pub(crate) fn open_for(&self, host: &str) -> usize {
        self.problems
            .iter()
            .filter(|p| p.open && p.host == host)
            .count()
    }

    /// Open problems per level (only problem levels appear).
    pub(crate) fn open_by_level(&self) -> BTreeMap<Level, u64> {
        let mut out = BTreeMap::new();
        for p in self.problems.iter().filter(|p| p.open) {
            let level = p.level.parse().unwrap_or(Level::Unknown);
            *out.entry(level).or_default() += 1;
        }
        out
    }

    fn apply(&mut self, new: Vec<AlarmLine>) {
        if new.is_empty() {
            return;
        }
        for a in &new {
            let level = a.level.parse().unwrap_or(Level::Unknown);
            *self.totals.entry(level).or_default() += 1;
        }
        let mut replay: Vec<AlarmLine> = self
            .problems
            .iter()
            .map(|p| AlarmLine {
                time: p.since.clone(),
                host: p.host.clone(),
                log_type: p.log_type.clone(),
                level: p.level.clone(),
                id: String::new(),
                message: p.message.clone(),
            })
            .collect();
        replay.extend(new);
        self.problems = problems(&replay);
    }
}

/// Seconds since the epoch of an RFC 3339 time; unreadable ones sort first.
pub(crate) fn time_of(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp())
        .unwrap_or(i64::MIN)
}

/// Follows `alarms.log`: the summary so far and where reading stopped.
pub(crate) struct AlarmFollower {
    path: PathBuf,
    summary: AlarmSummary,
    /// Bytes of complete lines already folded in.
    offset: u64,
    /// Inode of the file read, to notice a replaced file.
    inode: Option<u64>,
}

impl AlarmFollower {
    pub(crate) fn new(log_dir: &Path) -> AlarmFollower {
        AlarmFollower {
            path: crate::master::files::MasterFiles::find(log_dir).alarms(),
            summary: AlarmSummary::default(),
            offset: 0,
            inode: None,
        }
    }

    /// The summary as of the last successful `refresh`.
    pub(crate) fn summary(&self) -> &AlarmSummary {
        &self.summary
    }

    /// Fold in what was appended since the last call; returns the summary.
    pub(crate) fn refresh(&mut self) -> io::Result<&AlarmSummary> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.reset(None);
                return Ok(&self.summary);
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if Some(meta.ino()) != self.inode || meta.len() < self.offset {
            // A new or truncated file (an operator cleaned up): start over.
            self.reset(Some(meta.ino()));
        }
        if meta.len() == self.offset {
            return Ok(&self.summary);
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::new(file);
        let mut new = Vec::new();
        let mut raw = Vec::new();
        // Lines read before an error are still folded in, so the offset and
        // the summary never disagree.
        let result = loop {
            raw.clear();
            let n = match reader.read_until(b'\n', &mut raw) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            // A torn last line (being written) is left for next time.
            if n == 0 || raw.last() != Some(&b'\n') {
                break Ok(());
            }
            self.offset += n as u64;
            let line = String::from_utf8_lossy(&raw);
            if let Some(a) = AlarmLine::parse(line.trim_end_matches('\n')) {
                new.push(a);
            }
        };
        self.summary.apply(new);
        result.map(|()| &self.summary)
    }

    fn reset(&mut self, inode: Option<u64>) {
        self.summary = AlarmSummary::default();
        self.offset = 0;
        self.inode = inode;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    #[test]
    fn following_the_file_gives_what_reading_it_whole_gives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".master/alarms.log");
        std::fs::create_dir_all(dir.path().join(".master")).unwrap();
        let lines = [
            "2026-01-01T00:00:01Z pi1 disk warning a1 disk / 91%\n",
            "2026-01-01T00:00:02Z pi2 cpu warning a2 load high\n",
            "2026-01-01T00:00:03Z pi1 disk critical a3 disk / 99%\n",
            "2026-01-01T00:00:04Z pi2 cpu normal a4 load ok\n",
            "2026-01-01T00:00:05Z pi1 mem note a5 mem 71%\n",
            "2026-01-01T00:00:06Z pi2 cpu warning a6 load high again\n",
            "2026-01-01T00:00:07Z pi1 disk warning a7 disk / 92%\n",
        ];
        let mut f = AlarmFollower::new(dir.path());
        assert!(f.refresh().unwrap().problems.is_empty());
        for (i, line) in lines.iter().enumerate() {
            // Each line arrives in two writes: the torn half is not read.
            let (a, b) = line.split_at(10);
            append(&path, a);
            f.refresh().unwrap();
            append(&path, b);
            let got = f.refresh().unwrap().clone();
            let whole = problems(&crate::master::alarms::read_alarms(&path).unwrap());
            assert_eq!(got.problems, whole, "after line {i}");
        }
        let s = f.refresh().unwrap();
        let open = s.open();
        assert_eq!(open.len(), 2);
        // pi1 disk has been open since its first warning; pi2 cpu since 00:06.
        assert_eq!(open[0].host, "pi2");
        assert_eq!(open[1].since, "2026-01-01T00:00:01Z");
        assert_eq!(s.open_for("pi1"), 1);
        assert_eq!(s.totals[&Level::Warning], 4);
        assert_eq!(s.open_by_level()[&Level::Warning], 2);
        // A replaced file starts the count over.
        std::fs::remove_file(&path).unwrap();
        append(&path, lines[1]);
        assert_eq!(f.refresh().unwrap().totals.values().sum::<u64>(), 1);
    }
}
