//! A small state file kept as an append-only journal of whole snapshots.
//!
//! A durable update is one `write` and one `fdatasync`, where the usual
//! atomic replace (temp file, fsync, rename, directory fsync) costs two
//! journal commits of the file system: the hot paths (the agent's
//! acknowledgement, the master's commit) do one per pull.
//!
//! Format: one record per line, `<compact JSON>\t<first 16 hex digits of
//! its SHA-256>\n`. Compact JSON has no raw newline or tab, so a line is
//! one record.
//!
//! Crash safety:
//! - a record is appended whole; `durable` writes are fdatasynced before
//!   `write` returns, so every acknowledged state is on disk;
//! - reading takes the last intact record and stops at the first one that
//!   is not (a record torn by a crash or power loss can only be the last:
//!   an fdatasync makes every earlier byte durable too). `open` cuts such a
//!   tail off, so the next record follows an intact one;
//! - past the journal's compaction size ([`COMPACT_AT`] unless set with
//!   [`Journal::set_compact_at`]) the file is replaced atomically by one
//!   with the latest record only (temp file, fsync, rename, directory
//!   fsync). A caller whose records must outlive the next one (the master's
//!   write-ahead pieces, `crate::master::archive`) asks [`Journal::would_compact`]
//!   first.
//!
//! Reading the latest state reads the file from its end: a record is one
//! line (compact JSON escapes every newline), so the last line, if its
//! checksum holds, is the latest intact record, and nothing before it
//! needs reading. Only a torn or damaged tail (after a crash) makes the
//! reader scan the file from the start. The master opens a host's journal
//! at every pull, so its cost does not grow with the journal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::storage;

/// Default size past which the journal is rewritten with its latest record only.
pub(crate) const COMPACT_AT: u64 = 64 * 1024;
/// Hex digits of the checksum kept per record.
const SUM_LEN: usize = 16;
/// First read from the end of the file when looking for the last record.
const TAIL_READ: u64 = 8 * 1024;

pub struct Journal {
    path: PathBuf,
    file: File,
    len: u64,
    compact_at: u64,
}

impl Journal {
    /// Open (or create) the journal at `path` and return its latest intact
    /// state, if any. A torn tail is cut off.
    pub fn open<T: DeserializeOwned>(path: &Path) -> io::Result<(Journal, Option<T>)> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| storage::with_path(e, path))?;
        let (latest, intact, total) =
            latest_record(&file).map_err(|e| storage::with_path(e, path))?;
        let value = match latest {
            Some(json) => Some(parse(&json, path)?),
            None => None,
        };
        if intact < total {
            log::warn!(
                "{}: cutting a torn record of {} bytes",
                path.display(),
                total - intact
            );
            file.set_len(intact)?;
        }
        let journal = Journal {
            path: path.to_path_buf(),
            file,
            len: intact,
            compact_at: COMPACT_AT,
        };
        Ok((journal, value))
    }

    /// The latest intact state of the journal at `path`, without opening
    /// it for writing.
    pub fn read<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(storage::with_path(e, path)),
        };
        match latest_record(&file)
            .map_err(|e| storage::with_path(e, path))?
            .0
        {
            Some(json) => parse(&json, path).map(Some),
            None => Ok(None),
        }
    }

    /// Every intact record of the journal at `path`, oldest first (for a
    /// replay after a crash; the file is read whole).
    pub(crate) fn read_all<T: DeserializeOwned>(path: &Path) -> io::Result<Vec<T>> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(storage::with_path(e, path)),
        };
        let mut out = Vec::new();
        for json in intact_records(&bytes).0 {
            out.push(parse(json, path)?);
        }
        Ok(out)
    }

    /// Bytes in the file now.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.len
    }

    /// Compact past `bytes` instead of [`COMPACT_AT`].
    pub(crate) fn set_compact_at(&mut self, bytes: u64) {
        self.compact_at = bytes;
    }

    /// Whether writing `value` now would compact the journal, dropping
    /// every record before it.
    pub(crate) fn would_compact<T: Serialize>(&self, value: &T) -> io::Result<bool> {
        Ok(self.len + encode(value)?.len() as u64 > self.compact_at)
    }

    /// Record `value` as the new state; with `durable`, it survives power
    /// loss once this returns. On error the journal still reads as the
    /// last state written before.
    pub fn write<T: Serialize>(&mut self, value: &T, durable: bool) -> io::Result<()> {
        let record = encode(value)?;
        if self.len + record.len() as u64 > self.compact_at {
            return self.compact(&record);
        }
        let result = self.file.write_all(&record).and_then(|()| {
            if durable {
                storage::fdatasync(&self.file)
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                self.len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                // No partial record stays behind to hide later ones.
                let _ = self.file.set_len(self.len);
                Err(storage::with_path(e, &self.path))
            }
        }
    }

    /// Replace the file by one holding `record` only; always durable.
    fn compact(&mut self, record: &[u8]) -> io::Result<()> {
        storage::write_atomic(&self.path, record, true)?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| storage::with_path(e, &self.path))?;
        self.len = record.len() as u64;
        Ok(())
    }
}

fn parse<T: DeserializeOwned>(json: &[u8], path: &Path) -> io::Result<T> {
    serde_json::from_slice(json).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// The JSON of the latest intact record of `file`, the length of the
/// intact prefix and the file's length. Reads from the end (module doc);
/// scans the whole file only when the last line is not an intact record.
fn latest_record(file: &File) -> io::Result<(Option<Vec<u8>>, u64, u64)> {
    let total = file.metadata()?.len();
    if total == 0 {
        return Ok((None, 0, 0));
    }
    let mut want = TAIL_READ.min(total);
    loop {
        let tail = read_at(file, total - want, want)?;
        if tail.last() != Some(&b'\n') {
            break;
        }
        let body = &tail[..tail.len() - 1];
        match body.iter().rposition(|&b| b == b'\n') {
            Some(nl) => {
                if let Some(json) = check_line(&body[nl + 1..]) {
                    return Ok((Some(json.to_vec()), total, total));
                }
                break;
            }
            // The whole file is one line.
            None if want == total => {
                if let Some(json) = check_line(body) {
                    return Ok((Some(json.to_vec()), total, total));
                }
                break;
            }
            None => want = (want * 4).min(total),
        }
    }
    // A torn or damaged tail: find the last intact record from the start.
    let bytes = read_at(file, 0, total)?;
    let (records, intact) = intact_records(&bytes);
    Ok((records.last().map(|j| j.to_vec()), intact as u64, total))
}

fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The JSON of one line (without its newline) if its checksum holds.
fn check_line(line: &[u8]) -> Option<&[u8]> {
    let tab = line.iter().rposition(|&b| b == b'\t')?;
    let (json, sum) = (&line[..tab], &line[tab + 1..]);
    (sum == checksum(json).as_bytes()).then_some(json)
}

/// `value` as one journal line.
fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut record = serde_json::to_vec(value).map_err(io::Error::other)?;
    let sum = checksum(&record);
    record.push(b'\t');
    record.extend_from_slice(sum.as_bytes());
    record.push(b'\n');
    Ok(record)
}

fn checksum(json: &[u8]) -> String {
    let digest = Sha256::digest(json);
    digest[..SUM_LEN / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The JSON of every intact record, oldest first, and the length of the
/// intact prefix: up to the end of the last intact record. A damaged line
/// between intact ones (a page lost by a power loss while later ones were
/// written back) is passed over: every line is one whole snapshot written
/// by us (agent data in a record is escaped JSON, never a raw newline), so
/// any intact line is a state that was really written, and the last one
/// is the newest.
fn intact_records(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    let mut intact = 0;
    while let Some(end) = bytes[at..].iter().position(|&b| b == b'\n') {
        if let Some(json) = check_line(&bytes[at..at + end]) {
            records.push(json);
            intact = at + end + 1;
        }
        at += end + 1;
    }
    (records, intact)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    type State = BTreeMap<String, u64>;

    fn state(n: u64) -> State {
        BTreeMap::from([("acked".to_string(), n), ("base".to_string(), n / 2)])
    }

    #[test]
    fn the_latest_record_wins_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let (mut j, none) = Journal::open::<State>(&path).unwrap();
        assert!(none.is_none());
        for n in 1..=5 {
            j.write(&state(n), n % 2 == 0).unwrap();
        }
        drop(j);
        let (_, latest) = Journal::open::<State>(&path).unwrap();
        assert_eq!(latest, Some(state(5)));
        assert_eq!(Journal::read::<State>(&path).unwrap(), Some(state(5)));
    }

    #[test]
    fn a_torn_or_corrupt_tail_falls_back_to_the_last_intact_record_and_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let (mut j, _) = Journal::open::<State>(&path).unwrap();
        j.write(&state(1), true).unwrap();
        j.write(&state(2), true).unwrap();
        drop(j);
        let intact = fs::read(&path).unwrap();
        let last = encode(&state(3)).unwrap();
        for cut in 0..last.len() {
            // A crash mid-append leaves any prefix of the record.
            let mut torn = intact.clone();
            torn.extend_from_slice(&last[..cut]);
            fs::write(&path, &torn).unwrap();
            let (mut j, latest) = Journal::open::<State>(&path).unwrap();
            assert_eq!(latest, Some(state(2)), "cut at {cut}");
            assert_eq!(fs::read(&path).unwrap(), intact, "tail cut at {cut}");
            j.write(&state(4), true).unwrap();
            assert_eq!(Journal::read::<State>(&path).unwrap(), Some(state(4)));
        }
        // A flipped byte in the last record (power loss garbage).
        let mut bad = intact.clone();
        let mut rec = encode(&state(3)).unwrap();
        rec[3] ^= 0x20;
        bad.extend_from_slice(&rec);
        fs::write(&path, &bad).unwrap();
        assert_eq!(Journal::read::<State>(&path).unwrap(), Some(state(2)));
    }

    #[test]
    fn compaction_keeps_the_latest_state_and_bounds_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let (mut j, _) = Journal::open::<State>(&path).unwrap();
        for n in 0..5000 {
            j.write(&state(n), false).unwrap();
        }
        assert!(fs::metadata(&path).unwrap().len() <= COMPACT_AT);
        drop(j);
        assert_eq!(Journal::read::<State>(&path).unwrap(), Some(state(4999)));
        assert!(!storage::temp_path(&path).exists());
    }

    #[test]
    fn strings_with_newlines_and_tabs_stay_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let (mut j, _) = Journal::open::<Vec<String>>(&path).unwrap();
        let value = vec!["a\nb\tc".to_string(), "\u{0}".to_string()];
        j.write(&value, true).unwrap();
        j.write(&value, true).unwrap();
        drop(j);
        assert_eq!(
            fs::read(&path)
                .unwrap()
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            2
        );
        assert_eq!(Journal::read::<Vec<String>>(&path).unwrap(), Some(value));
    }
}
