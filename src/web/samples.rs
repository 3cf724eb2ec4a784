//! Numbers from the master's own archive, for `/metrics` and the status
//! page: the latest run of a collector, and a time series over a window.
//!
//! Only committed bytes are read (the length in the host's state file), so
//! a pull half-way through an append is never seen. Reads are bounded:
//! - latest: the tail of `log/HOST/TYPE.log`, growing from 4 KiB to at most
//!   64 KiB until the whole last run is in it; when the current log is empty
//!   because it was just sealed, the newest archive instead (decoded once,
//!   then cached by file name, as archives never change).
//! - series: only the archives whose time range can overlap the window (an
//!   archive's name is its seal time, later than every line in it), and the
//!   current log from the window's start on, found by binary search.
//!   Points are averaged into buckets aligned to multiples of the bucket
//!   width, so an archive's buckets stay valid as the window slides and are
//!   cached too.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use flate2::read::MultiGzDecoder;

use crate::logline::LogLine;
use crate::master::archive::{archive_files, committed_len};
use crate::storage;

/// Largest tail read for the latest run.
const MAX_TAIL: u64 = 64 * 1024;
const FIRST_TAIL: u64 = 4 * 1024;
/// Most decompressed bytes read from one archive (a bound on the work one
/// request can cause; the default rotate_size is 8 MiB).
const MAX_ARCHIVE_BYTES: u64 = 64 << 20;
/// An agent clock ahead of the master's puts lines slightly after the seal
/// time in the archive name; archives sealed this long before the window
/// are still read.
const SKEW_SLACK_SECS: i64 = 600;
/// Buckets per chart window: a window of `secs` has buckets of
/// `secs / POINTS` seconds, so a bucket width `b` serves windows shorter
/// than `(b + 1) * POINTS` seconds, and an archive's buckets of width `b`
/// older than that are never asked for again.
pub(crate) const POINTS: i64 = 300;
/// Cached archives (latest runs and bucket sets together).
const CACHE_ENTRIES: usize = 512;

/// The lines of one collector run (they share the timestamp).
pub(crate) type Run = Vec<String>;

/// Whether a line has the shape the standard script of `log_type` prints
/// (cpu 5 fields, mem 4, disk 4 per mount). Any other line — a failed
/// run's `failed: exit status 1: …`, a custom script under the same name —
/// has no numbers we could trust.
pub(crate) fn is_standard(log_type: &str, line: &LogLine) -> bool {
    let want = match log_type {
        "cpu" => 5,
        "mem" | "disk" => 4,
        _ => return false,
    };
    line.fields.len() == want
}

/// Which number of a line a chart shows, per standard collector.
pub(crate) fn chart_value(log_type: &str, line: &LogLine) -> Option<f64> {
    if !is_standard(log_type, line) {
        return None;
    }
    match log_type {
        // LOAD1 LOAD5 LOAD15 USAGE_PCT TEMP_C
        "cpu" => line.number(3),
        // TOTAL_MIB USED_MIB USED_PCT DYN_AVG_PCT
        "mem" => line.number(2),
        // one line per mount, then `total TOTAL_MIB FREE_MIB USED_PCT`
        "disk" if line.fields.first() == Some(&"total") => line.number(3),
        _ => None,
    }
}

/// The time window of a chart and its bucket width, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) bucket: i64,
}

impl Window {
    /// `[end - secs, end]` in at most `POINTS` buckets (one more when the
    /// window does not start on a bucket boundary).
    pub(crate) fn new(end: i64, secs: i64) -> Window {
        let secs = secs.max(1);
        Window {
            start: end - secs,
            end,
            bucket: (secs / POINTS).max(1),
        }
    }
}

/// Sums and counts per bucket index (`time / bucket`).
pub(crate) type Buckets = BTreeMap<i64, (f64, u32)>;

fn add(buckets: &mut Buckets, index: i64, value: f64) {
    let e = buckets.entry(index).or_insert((0.0, 0));
    e.0 += value;
    e.1 += 1;
}

/// Bucket averages inside the window, as `(time, value)` with the time at
/// the middle of the bucket (clamped to the window).
pub(crate) fn points(buckets: &Buckets, w: &Window) -> Vec<(i64, f64)> {
    let first = w.start.div_euclid(w.bucket);
    let last = w.end.div_euclid(w.bucket);
    buckets
        .range(first..=last)
        .filter(|(_, (_, n))| *n > 0)
        .map(|(i, (sum, n))| {
            let t = (i * w.bucket + w.bucket / 2).clamp(w.start, w.end);
            (t, sum / f64::from(*n))
        })
        .collect()
}

#[derive(Default)]
struct Cache {
    /// Newest archive → its last run.
    runs: HashMap<PathBuf, (Run, Instant)>,
    /// (archive, bucket width) → buckets of its lines recent enough for a
    /// window of that bucket width (about `POINTS` of them, whatever the
    /// archive holds).
    buckets: HashMap<(PathBuf, i64), (Buckets, Instant)>,
}

impl Cache {
    fn trim(&mut self) {
        while self.runs.len() + self.buckets.len() > CACHE_ENTRIES {
            let oldest_run = self.runs.iter().min_by_key(|(_, (_, t))| *t);
            let oldest_b = self.buckets.iter().min_by_key(|(_, (_, t))| *t);
            match (oldest_run, oldest_b) {
                (Some((k, (_, a))), Some((_, (_, b)))) if a <= b => {
                    let k = k.clone();
                    self.runs.remove(&k);
                }
                (_, Some((k, _))) => {
                    let k = k.clone();
                    self.buckets.remove(&k);
                }
                (Some((k, _)), None) => {
                    let k = k.clone();
                    self.runs.remove(&k);
                }
                (None, None) => return,
            }
        }
    }
}

/// Reads a master's archive: `log_root/HOST/TYPE.log` and
/// `backup_root/HOST/TYPE-*.log.gz`.
pub(crate) struct ArchiveReader {
    log_root: PathBuf,
    backup_root: PathBuf,
    cache: Mutex<Cache>,
}

impl ArchiveReader {
    pub(crate) fn new(log_root: &Path, backup_root: &Path) -> ArchiveReader {
        ArchiveReader {
            log_root: log_root.to_path_buf(),
            backup_root: backup_root.to_path_buf(),
            cache: Mutex::new(Cache::default()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        crate::sync::lock(&self.cache)
    }

    fn current(&self, host: &str, log_type: &str) -> io::Result<(PathBuf, u64)> {
        let len = committed_len(&self.log_root, &self.backup_root, host, log_type)?;
        Ok((
            self.log_root.join(host).join(format!("{log_type}.log")),
            len,
        ))
    }

    /// The log types `host` has a current log of (`log/HOST/TYPE.log`),
    /// sorted; names that are not valid type names are left out. A type
    /// whose current log was sealed and not yet started again is missing
    /// until its next pull (for `/metrics`, which shows newest values).
    pub(crate) fn log_types(&self, host: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.log_root.join(host)) else {
            return Vec::new();
        };
        let mut types: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let t = name.strip_suffix(".log")?;
                crate::names::check_type_name(t).ok()?;
                Some(t.to_string())
            })
            .collect();
        types.sort();
        types
    }

    /// The newest run of `host`'s `log_type` collector; empty if none.
    /// `host` must have passed `names::check_host_name`.
    pub(crate) fn latest_run(&self, host: &str, log_type: &str) -> io::Result<Run> {
        let (path, len) = self.current(host, log_type)?;
        if len > 0 {
            match File::open(&path) {
                Ok(mut f) => {
                    let run = tail_run(&mut f, len)?;
                    if !run.is_empty() {
                        return Ok(run);
                    }
                }
                // Sealed and replaced between reading the state and opening.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(storage::with_path(e, &path)),
            }
        }
        let Some(newest) = archive_files(&self.backup_root, host, log_type)?.pop() else {
            return Ok(Vec::new());
        };
        if let Some((run, used)) = self.cache().runs.get_mut(&newest) {
            *used = Instant::now();
            return Ok(run.clone());
        }
        let run = archive_last_run(&newest)?;
        let mut cache = self.cache();
        cache
            .runs
            .insert(newest.clone(), (run.clone(), Instant::now()));
        cache.trim();
        Ok(run)
    }

    /// Bucketed values of `host`'s `log_type` chart within `w`.
    pub(crate) fn series(&self, host: &str, log_type: &str, w: &Window) -> io::Result<Buckets> {
        let mut out = Buckets::new();
        let from = w.start - SKEW_SLACK_SECS;
        for path in archive_files(&self.backup_root, host, log_type)? {
            let sealed = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| storage::archive_time(n, log_type))
                .map(|t| t.timestamp());
            if sealed.is_some_and(|t| t < from) {
                continue;
            }
            for (i, (sum, n)) in self.archive_buckets(&path, log_type, w.bucket)? {
                let e = out.entry(i).or_insert((0.0, 0));
                e.0 += sum;
                e.1 += n;
            }
        }
        let (path, len) = self.current(host, log_type)?;
        match File::open(&path) {
            Ok(mut f) => {
                let offset = seek_time(&mut f, len, w.start)?;
                f.seek(SeekFrom::Start(offset))?;
                bucket_lines(BufReader::new(f.take(len - offset)), log_type, w, &mut out)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(storage::with_path(e, &path)),
        }
        Ok(out)
    }

    fn archive_buckets(&self, path: &Path, log_type: &str, bucket: i64) -> io::Result<Buckets> {
        let key = (path.to_path_buf(), bucket);
        if let Some((b, used)) = self.cache().buckets.get_mut(&key) {
            *used = Instant::now();
            return Ok(b.clone());
        }
        let now = chrono::Utc::now().timestamp();
        // Everything a window with this bucket width could still want.
        let keep = Window {
            start: now - (bucket + 1) * POINTS - SKEW_SLACK_SECS,
            end: i64::MAX,
            bucket,
        };
        let mut b = Buckets::new();
        let file = File::open(path).map_err(|e| storage::with_path(e, path))?;
        let reader = BufReader::new(MultiGzDecoder::new(file).take(MAX_ARCHIVE_BYTES));
        bucket_lines(reader, log_type, &keep, &mut b).map_err(|e| storage::with_path(e, path))?;
        let mut cache = self.cache();
        cache.buckets.insert(key, (b.clone(), Instant::now()));
        cache.trim();
        Ok(b)
    }
}

/// Add every line of `reader` inside `w` to its bucket. Lines that are not
/// text or carry no chart value are skipped.
fn bucket_lines(
    mut reader: impl BufRead,
    log_type: &str,
    w: &Window,
    out: &mut Buckets,
) -> io::Result<()> {
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            return Ok(());
        }
        let Ok(text) = std::str::from_utf8(&raw) else {
            continue;
        };
        let Some(line) = LogLine::parse(text) else {
            continue;
        };
        let t = line.time.timestamp();
        if t < w.start || t > w.end {
            continue;
        }
        if let Some(v) = chart_value(log_type, &line) {
            add(out, t.div_euclid(w.bucket), v);
        }
    }
}

/// The complete lines in `bytes`; the first is dropped unless `from_start`
/// (it may be the end of a line cut by the read).
fn complete_lines(bytes: &[u8], from_start: bool) -> Vec<&str> {
    let text = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..=end],
        None => return Vec::new(),
    };
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    lines.pop(); // after the final '\n'
    if !from_start && !lines.is_empty() {
        lines.remove(0);
    }
    lines
        .into_iter()
        .filter_map(|l| std::str::from_utf8(l).ok())
        .collect()
}

/// The first word of a stored line: its timestamp (the key of a run).
fn stamp(line: &str) -> &str {
    line.split(' ').next().unwrap_or("")
}

/// The trailing lines sharing the last timestamp (lines without one are
/// skipped), and whether the run may continue before the first line given.
fn last_run<'a>(lines: &[&'a str]) -> (Vec<&'a str>, bool) {
    let timed: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| LogLine::parse(l).is_some())
        .collect();
    let Some(last) = timed.last() else {
        return (Vec::new(), true);
    };
    let key = stamp(last);
    let begin = timed
        .iter()
        .rposition(|l| stamp(l) != key)
        .map_or(0, |i| i + 1);
    (timed[begin..].to_vec(), begin == 0)
}

/// The last run within the first `len` bytes of `file`, reading only a tail.
fn tail_run(file: &mut File, len: u64) -> io::Result<Run> {
    let mut want = FIRST_TAIL.min(len);
    loop {
        let start = len - want;
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity(want as usize);
        file.take(want).read_to_end(&mut buf)?;
        let lines = complete_lines(&buf, start == 0);
        let (run, open_ended) = last_run(&lines);
        let done = start == 0 || want >= MAX_TAIL || (!run.is_empty() && !open_ended);
        if done {
            return Ok(run.into_iter().map(str::to_string).collect());
        }
        want = (want * 4).min(MAX_TAIL).min(len);
    }
}

/// The last run of a gzip archive, decoding it once from the start.
fn archive_last_run(path: &Path) -> io::Result<Run> {
    let file = File::open(path).map_err(|e| storage::with_path(e, path))?;
    let mut reader = BufReader::new(MultiGzDecoder::new(file).take(MAX_ARCHIVE_BYTES));
    let mut run: Run = Vec::new();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| storage::with_path(e, path))?
            == 0
        {
            return Ok(run);
        }
        let Ok(text) = std::str::from_utf8(&raw) else {
            continue;
        };
        let text = text.trim_end_matches(['\n', '\r']);
        if LogLine::parse(text).is_none() {
            continue;
        }
        if run.first().is_some_and(|r| stamp(r) != stamp(text)) {
            run.clear();
        }
        run.push(text.to_string());
    }
}

/// Offset of a line start in the first `len` bytes of `file` at or
/// before the first line stamped `from` or later (lines are in time order
/// but for small clock steps, so this is a bound, not an exact cut: the
/// caller filters by time anyway). About 2·log2(len/4KiB) small reads.
fn seek_time(file: &mut File, len: u64, from: i64) -> io::Result<u64> {
    let (mut lo, mut hi) = (0u64, len);
    while hi - lo > 4096 {
        let mid = lo + (hi - lo) / 2;
        match line_at(file, mid, hi)? {
            Some((start, Some(t))) if t < from => lo = start,
            // A later line, or one we cannot date: look earlier.
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// The first line starting after `at` (and before `limit`): its offset and
/// time, if it has one.
fn line_at(file: &mut File, at: u64, limit: u64) -> io::Result<Option<(u64, Option<i64>)>> {
    const PROBE: u64 = 2048;
    file.seek(SeekFrom::Start(at))?;
    let mut buf = Vec::new();
    file.take(PROBE.min(limit - at)).read_to_end(&mut buf)?;
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let rest = &buf[nl + 1..];
    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let time = std::str::from_utf8(&rest[..end])
        .ok()
        .and_then(LogLine::parse)
        .map(|l| l.time.timestamp());
    Ok(Some((at + nl as u64 + 1, time)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn cpu_line(t: i64, usage: f64) -> String {
        let time = chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .fixed_offset()
            .to_rfc3339();
        format!("{time} 0.10 0.20 0.30 {usage:.2} - normal\n")
    }

    /// A host archive on disk: `lines` split at `seal` into an archive
    /// named by the seal time and the current log (committed in full).
    fn host_with(dir: &Path, archived: &str, current: &str, seal: i64) {
        let log = dir.join("log/pi1");
        let backup = dir.join("logbackup/pi1");
        std::fs::create_dir_all(&log).unwrap();
        std::fs::create_dir_all(&backup).unwrap();
        std::fs::write(log.join("cpu.log"), current).unwrap();
        let state: serde_json::Value = serde_json::from_str(&format!(
            r#"{{"types":{{"cpu":{{"epoch":1,"committed":0,"local_len":{},"local_start":0,"last_archive":"","pending":null}}}}}}"#,
            current.len()
        ))
        .unwrap();
        let (mut journal, _) =
            crate::journal::Journal::open::<serde_json::Value>(&log.join(".pihealth-state"))
                .unwrap();
        journal.write(&state, true).unwrap();
        if !archived.is_empty() {
            let name =
                storage::archive_name("cpu", chrono::DateTime::from_timestamp(seal, 0).unwrap());
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(archived.as_bytes()).unwrap();
            std::fs::write(backup.join(name), gz.finish().unwrap()).unwrap();
        }
    }

    #[test]
    fn latest_run_is_the_last_group_of_one_timestamp() {
        let lines = [
            "2026-01-01T00:00:00Z / 10 5 50.00 normal",
            "2026-01-01T00:00:00Z total 10 5 50.00 normal",
            "2026-01-01T00:00:10Z / 10 4 60.00 normal",
            "2026-01-01T00:00:10Z /boot 1 1 1.00 normal",
            "2026-01-01T00:00:10Z total 11 5 55.00 normal",
        ];
        let (run, open) = last_run(&lines);
        assert_eq!(run.len(), 3);
        assert!(!open);
        let (run, open) = last_run(&lines[2..]);
        assert_eq!(run.len(), 3);
        assert!(open, "may begin before the lines given");
        assert!(last_run(&["garbage"]).0.is_empty());
    }

    #[test]
    fn tail_reads_grow_until_the_run_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.log");
        let mut text = String::from("2026-01-01T00:00:00Z / 10 5 50.00 normal\n");
        // One run of 300 lines (> 4 KiB), all one timestamp.
        for i in 0..300 {
            text.push_str(&format!("2026-01-01T00:00:10Z /m{i} 10 4 60.00 normal\n"));
        }
        text.push_str("2026-01-01T00:00:10Z total 11 5 55.00 normal\n");
        // Uncommitted bytes beyond `len` are never read.
        let len = text.len() as u64;
        text.push_str("2026-01-01T00:00:20Z total 1 1 1.00 normal\n");
        std::fs::write(&path, &text).unwrap();
        let run = tail_run(&mut File::open(&path).unwrap(), len).unwrap();
        assert_eq!(run.len(), 301);
        assert!(run[0].contains("/m0 "), "{}", run[0]);
        assert!(run[300].contains(" total 11 "));
    }

    #[test]
    fn latest_comes_from_the_newest_archive_when_the_log_was_just_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let archived = cpu_line(1000, 10.0) + &cpu_line(1010, 20.0);
        host_with(dir.path(), &archived, "", 2000);
        let r = ArchiveReader::new(&dir.path().join("log"), &dir.path().join("logbackup"));
        let run = r.latest_run("pi1", "cpu").unwrap();
        assert_eq!(run.len(), 1);
        assert!(run[0].contains(" 20.00 "), "{run:?}");
        // From the cache the second time, same answer.
        assert_eq!(r.latest_run("pi1", "cpu").unwrap(), run);
        assert!(r.latest_run("pi1", "mem").unwrap().is_empty());
    }

    #[test]
    fn series_reads_overlapping_archives_and_the_log_tail_only() {
        let dir = tempfile::tempdir().unwrap();
        // Real time: cached archive buckets are kept relative to the clock.
        let now = chrono::Utc::now().timestamp();
        // An archive sealed 10 hours ago (outside a 6 h window), and an
        // archive sealed 1 hour ago holding 3..1 hours ago.
        let mut old = String::new();
        for t in (now - 12 * 3600..now - 10 * 3600).step_by(60) {
            old.push_str(&cpu_line(t, 99.0));
        }
        host_with(dir.path(), &old, "", now - 10 * 3600);
        let mut recent = String::new();
        for t in (now - 3 * 3600..now - 3600).step_by(60) {
            recent.push_str(&cpu_line(t, 40.0));
        }
        let mut current = String::new();
        for t in (now - 3600..now).step_by(10) {
            current.push_str(&cpu_line(t, 60.0));
        }
        host_with(dir.path(), &recent, &current, now - 3600);
        let r = ArchiveReader::new(&dir.path().join("log"), &dir.path().join("logbackup"));
        let w = Window::new(now, 6 * 3600);
        assert_eq!(w.bucket, 72);
        let pts = points(&r.series("pi1", "cpu", &w).unwrap(), &w);
        assert!(pts.len() <= 301, "{}", pts.len());
        assert!(pts
            .iter()
            .all(|(_, v)| *v == 40.0 || *v == 60.0 || (*v > 40.0 && *v < 60.0)));
        assert!(pts.first().unwrap().0 >= now - 3 * 3600 - 72);
        assert_eq!(pts.last().unwrap().1, 60.0);
        assert!(pts.iter().all(|(t, _)| *t >= w.start && *t <= w.end));
    }

    #[test]
    fn binary_search_lands_before_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpu.log");
        let mut text = String::new();
        for t in (0..100_000).step_by(10) {
            text.push_str(&cpu_line(1_700_000_000 + t, 1.0));
        }
        std::fs::write(&path, &text).unwrap();
        let mut f = File::open(&path).unwrap();
        let from = 1_700_000_000 + 90_000;
        let off = seek_time(&mut f, text.len() as u64, from);
        let off = off.unwrap() as usize;
        assert!(off == 0 || text.as_bytes()[off - 1] == b'\n');
        let first = LogLine::parse(text[off..].lines().next().unwrap()).unwrap();
        assert!(first.time.timestamp() < from);
        // Within a few KiB of the cut: the rest is not read.
        assert!(text.len() - off < 120_000, "{}", text.len() - off);
    }
}
