//! The master's per-host archive: `log/HOST/TYPE.log` plus
//! `logbackup/HOST/TYPE-<UTC time>.log.gz`, in stream order.
//!
//! For each type the master keeps (in `log/HOST/.pihealth-state`, a journal
//! of snapshots: `crate::journal`) the agent stream's `epoch` and
//! `committed` offset: every byte below it is stored and durable (fsynced
//! in its file, or held in the journal: below). A piece is stored only
//! beyond `committed`, so a piece sent twice (lost ack, agent restart) is
//! stored once.
//!
//! Crash safety, step by step (acks go out only after `commit`):
//! - current piece, small (the usual delta: at most [`WAL_PIECE_MAX`]
//!   bytes, [`WAL_RECORD_MAX`] in one commit): received whole into memory,
//!   written into `TYPE.log` (not fsynced) and kept in the state as a
//!   write-ahead piece (type, epoch, stream offset, bytes); `commit`
//!   appends the state **with those pieces** to the journal and
//!   fdatasyncs it: one fdatasync makes a whole pull durable, whatever the
//!   number of types or of data connections they came over. `TYPE.log`
//!   bytes from `unsynced_from` to `local_len` are then durable in the
//!   journal only (the journal's records since the last checkpoint).
//!   Replay (on open, when needed) writes every such piece again at its
//!   place in `TYPE.log` (a write at an offset given by its stream offset:
//!   doing it twice does the same thing), fdatasyncs the logs and records
//!   the checkpoint. It is needed when the machine rebooted since the
//!   pieces were written (the boot id in the state differs: the page cache,
//!   which held the writes, may be gone) or when `TYPE.log` is shorter than
//!   the state says (a write lost on its way to the disk, or the file
//!   changed by hand). The write into `TYPE.log` comes before the commit,
//!   so after a crash of the process alone the kernel still holds every
//!   committed byte, and nothing needs replaying.
//!   Checkpoint (before the journal compacts, so no record still needed is
//!   dropped): fdatasync every log with unsynced bytes, then the record
//!   with no `unsynced_from`. A failed checkpoint fsync leaves the records
//!   in place and fails the commit.
//! - current piece, large: appended to `TYPE.log` as it arrives and
//!   fdatasynced (which also makes the log's earlier unsynced bytes
//!   durable); `commit` appends the state to the journal and fdatasyncs
//!   it. Bytes beyond `local_len` found on open were never committed (the
//!   agent still has them) and are cut off.
//! - archive piece: received into a hidden temp file, checked to hold
//!   exactly the offered range (header range, one gzip member inflating to
//!   exactly its length with a good CRC, nothing after it; see
//!   `check_archive_exact`; a refused one is removed, nothing else
//!   changed), fsynced; then the current `TYPE.log` is
//!   sealed (below) so file names keep stream order; then the state records
//!   the intent `Store{name,end}` durably, the file is renamed to `name`,
//!   and `committed` moves. On open, an intent whose file exists is
//!   completed, one whose file does not is dropped.
//! - seal (rotation by size, or before an incoming archive): intent
//!   `Seal{name}` durably, gzip `TYPE.log` into `name` (temp, fsync,
//!   rename), replace `TYPE.log` by an empty file, clear the intent. On
//!   open, an intent whose file exists empties `TYPE.log`; otherwise
//!   `TYPE.log` is intact and the intent is dropped.
//!
//! One writer per host: `log/HOST/.lock` is held with `flock` for as long
//! as this value lives, by the daemon or by `pihealth pull` alike.
//!
//! Why the write-ahead pieces live in each host's journal rather than in
//! one master-wide log with group commit across the hosts of a cycle: the
//! unit of locking and of recovery is the host (`pihealth pull` and the
//! daemon may pull different hosts at once, from two processes), and a
//! shared log would need its own cross-process locking and would tie every
//! host's recovery to one file all of them write. Per host, a cycle of N
//! agents costs N fdatasyncs, independent of each other; the `workers` pulls in flight issue theirs
//! concurrently, and the file system's journal commits often serve several
//! at once (ext4 batches concurrent fsyncs into one commit), which is the
//! group commit without a shared file. A pull's acknowledgement waits only
//! for its own host's record, whether its pieces came over one data
//! connection or several.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::read::{GzDecoder, MultiGzDecoder};
use serde::{Deserialize, Serialize};

use super::events::EventLog;
use super::files::MasterFiles;
use crate::journal::Journal;
use crate::protocol::message::PieceRef;
use crate::storage::write_gzip_atomic;
use crate::storage::{self, archive_name, ArchiveHeader};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Intent {
    Seal {
        archive: String,
    },
    Store {
        archive: String,
        epoch: u64,
        end: u64,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TypeState {
    epoch: u64,
    committed: u64,
    /// Committed length of `log/HOST/TYPE.log`.
    local_len: u64,
    /// Stream offset of the first byte of `TYPE.log`.
    local_start: u64,
    /// Newest archive name, so new names always sort after it.
    last_archive: String,
    pending: Option<Intent>,
    /// How far gaps and new streams have been written to `events.log`:
    /// a fetch that fails after its piece's gap was noted must not note it
    /// again when the piece is offered again (absent in older state files).
    #[serde(default)]
    noted: Option<StreamPoint>,
    /// Where the bytes of `TYPE.log` that are durable only in the journal's
    /// write-ahead pieces begin (`None`: the whole log is fsynced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unsynced_from: Option<u64>,
}

/// A place in an agent's stream of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct StreamPoint {
    epoch: u64,
    offset: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct HostState {
    types: BTreeMap<String, TypeState>,
    /// The boot the unsynced log bytes were written in (`boot_id`): after
    /// another boot they may be gone from `TYPE.log` and are replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot: Option<String>,
    /// The write-ahead pieces of this record: stored since the last commit
    /// and written into `TYPE.log` without an fsync of their own (module
    /// doc). Emptied once the record is written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    wal: Vec<WalPiece>,
}

/// One current-log piece as the journal keeps it until its log is fsynced.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WalPiece {
    #[serde(rename = "type")]
    log_type: String,
    epoch: u64,
    /// Stream offset of the first byte of `data`.
    start: u64,
    /// The bytes, as hex: a journal record must stay one line of JSON.
    #[serde(with = "hex_bytes")]
    data: Vec<u8>,
}

/// Bytes as a lowercase hex string (twice the size, but a piece kept in
/// the journal is small, and the line stays plain JSON).
mod hex_bytes {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            text.push(DIGITS[usize::from(b >> 4)] as char);
            text.push(DIGITS[usize::from(b & 15)] as char);
        }
        s.serialize_str(&text)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(D::Error::custom("expected lowercase hex digits")),
        };
        let text = text.as_bytes();
        if text.len() % 2 != 0 {
            return Err(D::Error::custom("odd number of hex digits"));
        }
        text.chunks(2)
            .map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?))
            .collect()
    }
}

/// Largest current piece kept in the journal rather than fsynced in its
/// own file (a pull's usual delta is a few hundred bytes per type).
pub(crate) const WAL_PIECE_MAX: u64 = 16 * 1024;
/// Most piece bytes one commit keeps in the journal; past it, pieces are
/// fsynced in their own files (a bulk pull pays one fsync per large
/// piece, not twice the writes).
pub(crate) const WAL_RECORD_MAX: u64 = 64 * 1024;
/// The host journal compacts (after a checkpoint) past this size: with
/// small deltas, one checkpoint every hundred pulls or so.
const JOURNAL_COMPACT_AT: u64 = 256 * 1024;

/// This boot of the machine, to tell whether the page cache that held
/// unsynced writes may have been lost since (`None`: unknown, so always
/// assume it was). `PIHEALTH_ASSUME_REBOOT=1` (tests) makes every open
/// replay, as after a power loss.
fn boot_id() -> Option<&'static str> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        if std::env::var_os("PIHEALTH_ASSUME_REBOOT").is_some_and(|v| v == "1") {
            return None;
        }
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// Why a stream's first piece starts above 0: `max_backlog` dropped its
/// beginning on the agent before any pull.
const BEFORE_FIRST_PULL: &str = " before the first pull";

/// The host's state journal, in `log/HOST/`.
const STATE_FILE: &str = ".pihealth-state";
/// Left by a checkpoint whose fsync failed: the logs' unsynced bytes must
/// be written again from the journal before anything compacts it. Linux
/// reports a write-back error to one fsync only, so a later fsync of the
/// same pages may succeed although they never reached the disk.
const REWRITE_MARK: &str = ".pihealth-rewrite";
/// The state file of versions before 2026-11-22 (one JSON document,
/// replaced atomically on every commit): read once, then removed.
const LEGACY_STATE_FILE: &str = ".pihealth-state.json";

/// What to do with an offered piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Already stored: acknowledge without fetching.
    AlreadyHave,
    /// Fetch it and store all but the first `skip` bytes of its log.
    Fetch { skip: u64 },
}

#[derive(Debug)]
pub enum OpenError {
    /// Another process (the daemon, or `pihealth pull`) is writing this host.
    Busy,
    Io(io::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Busy => f.write_str("another pull of this host is in progress"),
            OpenError::Io(e) => e.fmt(f),
        }
    }
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

pub struct HostArchive {
    host: String,
    log_dir: PathBuf,
    backup_dir: PathBuf,
    rotate_size: u64,
    state: HostState,
    journal: Journal,
    dirty: bool,
    /// Things written to `events.log` (gaps, restarted streams), also
    /// kept here for the caller's report.
    pub(crate) events: Vec<String>,
    _lock: File,
}

impl HostArchive {
    pub fn open(
        log_root: &Path,
        backup_root: &Path,
        host: &str,
        rotate_size: u64,
    ) -> Result<HostArchive, OpenError> {
        crate::names::check_host_name(host)
            .map_err(|e| OpenError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let log_dir = log_root.join(host);
        let backup_dir = backup_root.join(host);
        for dir in [&log_dir, &backup_dir] {
            fs::create_dir_all(dir).map_err(|e| storage::with_path(e, dir))?;
        }
        let lock_path = log_dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| storage::with_path(e, &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(OpenError::Busy),
            Err(fs::TryLockError::Error(e)) => return Err(OpenError::Io(e)),
        }
        let state_path = log_dir.join(STATE_FILE);
        let legacy_path = log_dir.join(LEGACY_STATE_FILE);
        // The journal is created by the first open, before any piece is
        // stored: if it is there, a log it has no record of was never
        // committed (see `recover`).
        let state_kept = state_path.exists() || legacy_path.exists();
        let (mut journal, state) = Journal::open::<HostState>(&state_path)?;
        journal.set_compact_at(JOURNAL_COMPACT_AT);
        let (mut state, legacy) = match state {
            Some(state) => (state, false),
            None => match storage::read_json::<HostState>(&legacy_path)? {
                Some(state) => (state, true),
                None => (HostState::default(), false),
            },
        };
        // The last record's pieces are applied already, or replayed below.
        state.wal.clear();
        let mut archive = HostArchive {
            host: host.to_string(),
            log_dir,
            backup_dir,
            rotate_size,
            state,
            journal,
            // A state taken over from the old file is written to the
            // journal (by `recover`'s commit) before the old file goes.
            dirty: legacy,
            events: Vec::new(),
            _lock: lock,
        };
        archive.recover(state_kept)?;
        if legacy {
            fs::remove_file(&legacy_path).map_err(|e| storage::with_path(e, &legacy_path))?;
        }
        Ok(archive)
    }

    fn log_path(&self, log_type: &str) -> PathBuf {
        self.log_dir.join(format!("{log_type}.log"))
    }

    fn recover(&mut self, state_kept: bool) -> io::Result<()> {
        storage::remove_temp_files(&self.backup_dir)?;
        storage::remove_temp_files(&self.log_dir)?;
        self.replay_if_needed()?;
        self.recover_unrecorded_logs(state_kept)?;
        let names: Vec<String> = self.state.types.keys().cloned().collect();
        for name in names {
            self.finish_intent(&name)?;
            self.cut_uncommitted(&name)?;
        }
        self.commit()
    }

    /// A log the state has no record of. If the state file is there, the
    /// log's first piece was stored and never committed (the master died
    /// in between, on the type's first pull): nothing of it was
    /// acknowledged, the agent offers it again, so it is cut like any
    /// uncommitted tail (kept, it would be sealed and the range stored a
    /// second time). If the state file itself is missing (lost, or
    /// restored from an old backup): keep every byte of the log; later
    /// pieces are appended after.
    fn recover_unrecorded_logs(&mut self, state_kept: bool) -> io::Result<()> {
        for entry in fs::read_dir(&self.log_dir)? {
            let path = entry?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
            else {
                continue;
            };
            if crate::names::check_type_name(name).is_err() || self.state.types.contains_key(name) {
                continue;
            }
            let len = fs::metadata(&path)?.len();
            if state_kept {
                if len > 0 {
                    log::warn!(
                        "{}/{name}: cutting {len} uncommitted bytes of a first piece",
                        self.host
                    );
                    OpenOptions::new().write(true).open(&path)?.set_len(0)?;
                }
                continue;
            }
            log::warn!(
                "{}/{name}: no state for {} bytes of log; keeping them",
                self.host,
                len
            );
            self.event(format!(
                "{} {name} log of {len} bytes found without state; kept",
                self.host
            ));
            self.state.types.insert(
                name.to_string(),
                TypeState {
                    local_len: len,
                    ..TypeState::default()
                },
            );
            self.dirty = true;
        }
        Ok(())
    }

    /// Finish or drop a seal or archive store the state announced: done
    /// if its archive is in place, else as if never begun.
    fn finish_intent(&mut self, name: &str) -> io::Result<()> {
        let log_path = self.log_path(name);
        let ts = self.state.types.get_mut(name).expect("listed by recover");
        match ts.pending.take() {
            Some(Intent::Seal { archive }) => {
                if self.backup_dir.join(&archive).exists() {
                    storage::replace_with_empty(&log_path)?;
                    ts.local_len = 0;
                    ts.last_archive = archive;
                }
                self.dirty = true;
            }
            Some(Intent::Store {
                archive,
                epoch,
                end,
            }) => {
                if self.backup_dir.join(&archive).exists() {
                    ts.epoch = epoch;
                    ts.committed = end;
                    ts.last_archive = archive;
                }
                self.dirty = true;
            }
            None => {}
        }
        Ok(())
    }

    /// Bytes appended but never committed: the agent still has them.
    fn cut_uncommitted(&self, name: &str) -> io::Result<()> {
        let log_path = self.log_path(name);
        let local_len = self.state.types[name].local_len;
        let len = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        if len > local_len {
            log::warn!(
                "{}/{name}: cutting {} uncommitted bytes",
                self.host,
                len - local_len
            );
            OpenOptions::new()
                .write(true)
                .open(&log_path)?
                .set_len(local_len)?;
        }
        Ok(())
    }

    /// Whether some log's unsynced bytes may be missing from `TYPE.log`
    /// (module doc: another boot, or a log shorter than the state).
    fn replay_needed(&self) -> io::Result<bool> {
        if self.log_dir.join(REWRITE_MARK).exists() {
            return Ok(true);
        }
        let unsynced: Vec<(&String, &TypeState)> = self
            .state
            .types
            .iter()
            .filter(|(_, t)| t.unsynced_from.is_some())
            .collect();
        if unsynced.is_empty() {
            return Ok(false);
        }
        if boot_id().is_none() || self.state.boot.as_deref() != boot_id() {
            return Ok(true);
        }
        for (name, ts) in unsynced {
            let len = match fs::metadata(self.log_path(name)) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(e),
            };
            if len < ts.local_len {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Write every write-ahead piece the journal still holds back into its
    /// `TYPE.log` (idempotent: each at the offset its stream offset gives),
    /// fdatasync those logs and mark them synced (the caller commits).
    fn replay_if_needed(&mut self) -> io::Result<()> {
        if !self.replay_needed()? {
            return Ok(());
        }
        let records = Journal::read_all::<HostState>(&self.log_dir.join(STATE_FILE))?;
        let names: Vec<String> = self
            .state
            .types
            .iter()
            .filter(|(_, t)| t.unsynced_from.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            self.replay_type(&name, &records)?;
        }
        storage::sync_dir(&self.log_dir)?;
        // Every unsynced byte was written again and fsynced.
        match fs::remove_file(self.log_dir.join(REWRITE_MARK)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.dirty = true;
        Ok(())
    }

    /// Replay one type's write-ahead pieces of its epoch from `records`
    /// over its unsynced range, then fdatasync its log; a range the journal
    /// does not cover is cut off the log, and said.
    fn replay_type(&mut self, name: &str, records: &[HostState]) -> io::Result<()> {
        let ts = self.state.types[name].clone();
        let from = ts.unsynced_from.unwrap_or(ts.local_len);
        let (want_start, want_end) = (ts.local_start + from, ts.local_start + ts.local_len);
        let path = self.log_path(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| storage::with_path(e, &path))?;
        let mut covered = want_start;
        let pieces = records
            .iter()
            .flat_map(|r| r.wal.iter())
            .filter(|p| p.log_type == name && p.epoch == ts.epoch);
        for p in pieces {
            let (start, end) = (p.start, p.start + p.data.len() as u64);
            let (from, to) = (start.max(want_start), end.min(want_end));
            if from >= to {
                continue;
            }
            let bytes = &p.data[(from - start) as usize..(to - start) as usize];
            write_at(&file, bytes, from - ts.local_start)
                .map_err(|e| storage::with_path(e, &path))?;
            if from <= covered {
                covered = covered.max(to);
            }
        }
        crate::failpoint::hit("archive.mid_replay");
        storage::fdatasync(&file).map_err(|e| storage::with_path(e, &path))?;
        let t = self
            .state
            .types
            .get_mut(name)
            .expect("listed by the caller");
        t.unsynced_from = None;
        if covered < want_end {
            // Never expected: the journal held every committed piece.
            // Keep the log and the state consistent, and say so.
            let lost = want_end - covered;
            log::error!(
                "{}/{name}: {lost} committed bytes not found in the journal; cutting the log there",
                self.host
            );
            t.local_len = covered - t.local_start;
            self.event(format!(
                "{} {name} {lost} bytes lost: not in the journal after a crash",
                self.host
            ));
        } else {
            log::warn!(
                "{}/{name}: replayed {} bytes from the journal",
                self.host,
                want_end - want_start
            );
        }
        Ok(())
    }

    /// Make every log's unsynced bytes durable in the log itself, so no
    /// journal record is needed for them any more.
    fn checkpoint(&mut self) -> io::Result<()> {
        let names: Vec<String> = self
            .state
            .types
            .iter()
            .filter(|(_, t)| t.unsynced_from.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in &names {
            let path = self.log_path(name);
            let synced = File::open(&path).and_then(|f| storage::fdatasync(&f));
            if let Err(e) = synced {
                // Nothing compacts now; the next open writes the pieces
                // again (`REWRITE_MARK`). Best effort: the disk is failing.
                let mark = self.log_dir.join(REWRITE_MARK);
                let _ = File::create(&mark)
                    .and_then(|f| storage::fsync(&f))
                    .and_then(|()| storage::sync_dir(&self.log_dir));
                return Err(storage::with_path(e, &path));
            }
            crate::failpoint::hit("archive.mid_checkpoint");
        }
        for name in &names {
            self.state
                .types
                .get_mut(name)
                .expect("listed above")
                .unsynced_from = None;
        }
        // Written into the logs and now fsynced there.
        self.state.wal.clear();
        Ok(())
    }

    /// Decide what to do with an offered piece. A gap before it (bytes the
    /// agent dropped) or a new stream is written to `events.log` once: the
    /// note is made durable and marked in the state before the piece is
    /// fetched, so a failed fetch does not note it again. A crash between
    /// the two writes notes it twice; none loses it.
    pub(crate) fn plan(&mut self, piece: &PieceRef) -> Plan {
        let here = StreamPoint {
            epoch: piece.epoch,
            offset: piece.start,
        };
        let (plan, notes) = match self.state.types.get(&piece.log_type) {
            Some(ts) if ts.epoch == piece.epoch => {
                if piece.end <= ts.committed {
                    (Plan::AlreadyHave, Vec::new())
                } else {
                    let skip = ts.committed.saturating_sub(piece.start);
                    let gap = self.gap_before(piece, ts.committed, ts.noted, "");
                    (Plan::Fetch { skip }, gap.into_iter().collect())
                }
            }
            Some(ts) if ts.committed > 0 => {
                let mut notes = Vec::new();
                if ts.noted.is_none_or(|n| n.epoch != piece.epoch) {
                    notes.push(format!(
                        "{} {} new stream {} from the agent (was {} at offset {})",
                        self.host, piece.log_type, piece.epoch, ts.epoch, ts.committed
                    ));
                }
                notes.extend(self.gap_before(piece, 0, ts.noted, BEFORE_FIRST_PULL));
                (Plan::Fetch { skip: 0 }, notes)
            }
            other => {
                let noted = other.and_then(|ts| ts.noted);
                let gap = self.gap_before(piece, 0, noted, BEFORE_FIRST_PULL);
                (Plan::Fetch { skip: 0 }, gap.into_iter().collect())
            }
        };
        if !notes.is_empty() {
            let mut all_written = true;
            for note in notes {
                all_written &= self.event(note);
            }
            if !all_written {
                // Not marked: noted again at the next offer.
                return plan;
            }
            self.state
                .types
                .entry(piece.log_type.clone())
                .or_default()
                .noted = Some(here);
            self.dirty = true;
            if let Err(e) = self.commit() {
                // The pull's own commit will fail the same way; at worst
                // the note is written again.
                log::error!("{}: cannot commit: {e}", self.host);
            }
        }
        plan
    }

    /// The bytes missing between what the master has of the piece's stream
    /// (`have`, or the end of a gap already noted) and the piece's start.
    fn gap_before(
        &self,
        piece: &PieceRef,
        have: u64,
        noted: Option<StreamPoint>,
        why: &str,
    ) -> Option<String> {
        let from = match noted {
            Some(n) if n.epoch == piece.epoch => have.max(n.offset),
            _ => have,
        };
        (piece.start > from).then(|| {
            format!(
                "{} {} gap of {} bytes before stream offset {} (dropped on the agent{why})",
                self.host,
                piece.log_type,
                piece.start - from,
                piece.start
            )
        })
    }

    /// Record something worth `events.log` at once, so it is kept even if
    /// the rest of the pull fails (and by `pihealth pull` too). Whether it
    /// is on disk.
    fn event(&mut self, text: String) -> bool {
        let root = self.log_dir.parent().unwrap_or(Path::new("."));
        let events = EventLog::at(&MasterFiles::new(root).events());
        let written = events.record(log::Level::Warn, &text).is_ok();
        self.events.push(text);
        written
    }

    /// A piece of a new stream (the agent lost its state): seal what the
    /// current log holds of the old stream first, so every archive's header
    /// describes one stream.
    fn begin_piece(&mut self, piece: &PieceRef) -> io::Result<()> {
        let switching = self
            .state
            .types
            .get(&piece.log_type)
            .is_some_and(|t| t.epoch != piece.epoch && t.local_len > 0);
        if switching {
            self.seal(&piece.log_type)?;
        }
        Ok(())
    }

    fn type_state(&mut self, piece: &PieceRef) -> &mut TypeState {
        let ts = self.state.types.entry(piece.log_type.clone()).or_default();
        if ts.epoch != piece.epoch {
            ts.epoch = piece.epoch;
            ts.committed = 0;
        }
        ts
    }

    /// Append a current-log piece (its bytes read from `data`, exactly
    /// `piece.end - piece.start` of them), skipping the first `skip`.
    /// Durable once `commit` returns (a large piece already on return);
    /// visible to the agent only after `commit`.
    pub fn store_current(
        &mut self,
        piece: &PieceRef,
        skip: u64,
        data: &mut dyn BufRead,
    ) -> io::Result<u64> {
        self.begin_piece(piece)?;
        let ts = self.type_state(piece);
        if ts.local_len > 0 && piece.start + skip != ts.local_start + ts.local_len {
            // A gap in the stream (the agent dropped data under its
            // max_backlog): a log's bytes must stay contiguous in stream
            // offsets, since replay places write-ahead pieces by them and
            // a seal's header names the log's range. So seal it first.
            self.seal(&piece.log_type)?;
        }
        let log_path = self.log_path(&piece.log_type);
        let local_len = self.type_state(piece).local_len;
        let expected = piece.end - piece.start;
        let kept: u64 = self.state.wal.iter().map(|p| p.data.len() as u64).sum();
        let ahead = expected <= WAL_PIECE_MAX && kept + expected <= WAL_RECORD_MAX;
        // Small: the whole piece first, so a cut transfer writes nothing.
        let held = if ahead {
            Some(read_whole_piece(data, skip, expected)?)
        } else {
            None
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&log_path)
            .map_err(|e| storage::with_path(e, &log_path))?;
        file.set_len(local_len)?;
        file.seek(SeekFrom::Start(local_len))?;
        let written = match held {
            Some(bytes) => {
                if let Err(e) = file.write_all(&bytes) {
                    let _ = file.set_len(local_len);
                    return Err(storage::with_path(e, &log_path));
                }
                let written = bytes.len() as u64;
                self.state.wal.push(WalPiece {
                    log_type: piece.log_type.clone(),
                    epoch: piece.epoch,
                    start: piece.start + skip,
                    data: bytes,
                });
                self.type_state(piece)
                    .unsynced_from
                    .get_or_insert(local_len);
                written
            }
            None => {
                let written = copy_piece_synced(data, skip, expected, &mut file, local_len)?;
                self.type_state(piece).unsynced_from = None;
                written
            }
        };
        self.piece_appended(piece, skip, written)?;
        Ok(written)
    }

    /// Note `written` bytes of `piece` appended to its log (the first
    /// `skip` were there already); seal the log once it is big enough.
    fn piece_appended(&mut self, piece: &PieceRef, skip: u64, written: u64) -> io::Result<()> {
        let ts = self.type_state(piece);
        if ts.local_len == 0 {
            ts.local_start = piece.start + skip;
        }
        ts.local_len += written;
        ts.committed = piece.end;
        self.dirty = true;
        if self.type_state(piece).local_len >= self.rotate_size {
            self.seal(&piece.log_type)?;
        }
        Ok(())
    }

    /// Store a rotated archive as it came (gzip bytes read from `data`),
    /// after checking it holds exactly the bytes of its range
    /// (`check_archive_exact`). If the first `skip` bytes are already
    /// stored, the rest is inflated and recompressed instead. A refused
    /// archive leaves nothing behind: no file, no state change.
    pub(crate) fn store_archive(
        &mut self,
        piece: &PieceRef,
        skip: u64,
        size: u64,
        data: &mut dyn BufRead,
    ) -> io::Result<u64> {
        let incoming = self
            .backup_dir
            .join(format!(".incoming-{}.tmp", piece.log_type));
        let file = receive_archive(&incoming, piece, size, data)?;
        storage::fsync(&file)?;
        // Sealing first keeps file names in stream order.
        if self
            .state
            .types
            .get(&piece.log_type)
            .is_some_and(|t| t.local_len > 0)
        {
            self.seal(&piece.log_type)?;
        }
        let name = self.next_archive_name(&piece.log_type);
        let final_path = self.backup_dir.join(&name);
        let ts = self.type_state(piece);
        ts.pending = Some(Intent::Store {
            archive: name.clone(),
            epoch: piece.epoch,
            end: piece.end,
        });
        self.dirty = true;
        self.commit()?;
        self.place_archive(&incoming, &final_path, piece, skip)?;
        let ts = self.type_state(piece);
        ts.pending = None;
        ts.committed = piece.end;
        ts.last_archive = name;
        self.dirty = true;
        Ok(piece.end - piece.start - skip)
    }

    /// Move a received archive to its name (its intent is durable). If its
    /// first `skip` bytes are stored already, only the rest is kept.
    fn place_archive(
        &self,
        incoming: &Path,
        final_path: &Path,
        piece: &PieceRef,
        skip: u64,
    ) -> io::Result<()> {
        if skip == 0 {
            fs::rename(incoming, final_path)?;
            return storage::sync_dir(&self.backup_dir);
        }
        // Rare: part of this archive was already stored from the current
        // log before the agent rotated. Keep only the new part.
        let header = ArchiveHeader {
            log_type: piece.log_type.clone(),
            epoch: piece.epoch,
            start: piece.start + skip,
            end: piece.end,
        };
        // One member, checked when received.
        let mut decoder = GzDecoder::new(File::open(incoming)?);
        io::copy(&mut (&mut decoder).take(skip), &mut io::sink())?;
        write_gzip_atomic(final_path, &header, &mut decoder)?;
        fs::remove_file(incoming)
    }

    /// A new archive name sorting after every earlier one of this type,
    /// even when the wall clock has gone backwards.
    fn next_archive_name(&self, log_type: &str) -> String {
        let last = self
            .state
            .types
            .get(log_type)
            .and_then(|t| storage::archive_time(&t.last_archive, log_type));
        let mut time = chrono::Utc::now();
        if let Some(last) = last {
            time = time.max(last + chrono::Duration::microseconds(1));
        }
        // Names are unique per microsecond; a clash means another file with
        // that exact name (not ours): step past it.
        while self.backup_dir.join(archive_name(log_type, time)).exists() {
            time += chrono::Duration::microseconds(1);
        }
        archive_name(log_type, time)
    }

    /// Compress the current `TYPE.log` into the backup directory.
    pub(crate) fn seal(&mut self, log_type: &str) -> io::Result<()> {
        let Some(ts) = self.state.types.get(log_type) else {
            return Ok(());
        };
        if ts.local_len == 0 {
            return Ok(());
        }
        let header = ArchiveHeader {
            log_type: log_type.to_string(),
            epoch: ts.epoch,
            start: ts.local_start,
            end: ts.committed,
        };
        let local_len = ts.local_len;
        let name = self.next_archive_name(log_type);
        self.state.types.get_mut(log_type).expect("checked").pending = Some(Intent::Seal {
            archive: name.clone(),
        });
        self.dirty = true;
        self.commit()?;
        let log_path = self.log_path(log_type);
        write_gzip_atomic(
            &self.backup_dir.join(&name),
            &header,
            &mut File::open(&log_path)?.take(local_len),
        )?;
        crate::failpoint::hit("archive.mid_seal");
        storage::replace_with_empty(&log_path)?;
        let ts = self.state.types.get_mut(log_type).expect("checked");
        ts.pending = None;
        ts.local_len = 0;
        // Its bytes are in the fsynced archive now.
        ts.unsynced_from = None;
        ts.last_archive = name;
        self.dirty = true;
        self.commit()
    }

    /// Make everything stored so far durable in the state. Only after this
    /// may the agent be told to release it.
    ///
    /// One fdatasync (the journal's), with the pull's small pieces in the
    /// record; before the journal compacts, a checkpoint first (module doc).
    pub fn commit(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let unsynced = self.state.types.values().any(|t| t.unsynced_from.is_some());
        self.state.boot = unsynced.then(|| boot_id().unwrap_or("").to_string());
        if unsynced && self.journal.would_compact(&self.state)? {
            self.checkpoint()?;
            self.state.boot = None;
        }
        self.journal.write(&self.state, true)?;
        self.state.wal.clear();
        self.dirty = false;
        Ok(())
    }

    #[cfg(test)]
    fn journal_len(&self) -> u64 {
        self.journal.bytes()
    }
}

/// Write all `data` holds to `file`, each buffer `data` hands out in one
/// write (a whole received chunk on a pull: no copy into another buffer,
/// no split into smaller writes). Returns the bytes written.
fn write_from(data: &mut dyn BufRead, file: &mut File) -> io::Result<u64> {
    let mut written = 0u64;
    loop {
        let buf = data.fill_buf()?;
        if buf.is_empty() {
            return Ok(written);
        }
        file.write_all(buf)?;
        let n = buf.len();
        data.consume(n);
        written += n as u64;
    }
}

/// Read past the first `n` bytes of `data` (fewer if it ends first).
fn discard(data: &mut dyn BufRead, mut n: u64) -> io::Result<()> {
    while n > 0 {
        let buf = data.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        data.consume(take);
        n -= take as u64;
    }
    Ok(())
}

/// Receive an archive piece into the temp file `incoming`, checked to be
/// `size` bytes holding exactly the piece's range. A refused or cut one
/// leaves nothing behind (the next open would remove the temp file anyway;
/// a refusal should not wait for it).
fn receive_archive(
    incoming: &Path,
    piece: &PieceRef,
    size: u64,
    data: &mut dyn BufRead,
) -> io::Result<File> {
    // Read back too: the check inflates what was written.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(incoming)
        .map_err(|e| storage::with_path(e, incoming))?;
    let received = write_from(data, &mut file).and_then(|received| {
        if received != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("archive carried {received} bytes, expected {size}"),
            ));
        }
        check_archive_exact(incoming, &file, piece)
    });
    if let Err(e) = received {
        drop(file);
        let _ = fs::remove_file(incoming);
        return Err(e);
    }
    Ok(file)
}

/// Check that a received archive holds exactly the bytes of the offered
/// range: its header comment names exactly the offered piece (type, epoch,
/// start, end); it is **one** gzip member (RFC 1952) that inflates to
/// exactly `end - start` bytes, counted in 64 bits, with CRC-32 and ISIZE
/// checked by flate2; nothing follows that member.
///
/// Inflated, because the trailer is not the content: readers (`read_all`,
/// `zcat`) inflate every member, so a second member would add its lines to
/// the host's log, and ISIZE is only the length mod 2^32. The agent writes
/// each archive as one member (`write_gzip_atomic`), so a correct archive
/// always passes. One damaged on the agent's disk (its CRC-32 fails) is
/// refused too: the master cannot tell which bytes of the range it holds.
/// Nothing is acknowledged, so it stays on the agent, and the refusal is
/// logged at every pull.
fn check_archive_exact(path: &Path, file: &File, piece: &PieceRef) -> io::Result<()> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let header = ArchiveHeader::read(path).map_err(|e| bad(format!("archive refused: {e}")))?;
    if !piece.matches_header(&header) {
        return Err(bad(format!(
            "archive refused: its header says {} epoch {} {}..{}, offered as {} epoch {} {}..{}",
            header.log_type,
            header.epoch,
            header.start,
            header.end,
            piece.log_type,
            piece.epoch,
            piece.start,
            piece.end
        )));
    }
    let expected = piece.end - piece.start;
    let mut reader = io::BufReader::with_capacity(64 * 1024, file.try_clone()?);
    reader.seek(SeekFrom::Start(0))?;
    // One member only: `bufread::GzDecoder` stops after the first member's
    // trailer and leaves what follows in `reader`.
    let mut member = flate2::bufread::GzDecoder::new(&mut reader);
    let inflated = count_inflated(&mut member, expected)
        .map_err(|e| bad(format!("archive refused: not one intact gzip member: {e}")))?;
    if inflated != expected {
        return Err(bad(format!(
            "archive refused: it holds {}{inflated} bytes of log, its range {}..{} has {expected}",
            if inflated > expected {
                "more than "
            } else {
                ""
            },
            piece.start,
            piece.end
        )));
    }
    if !reader.fill_buf()?.is_empty() {
        return Err(bad(
            "archive refused: more bytes (another gzip member or garbage) after its one member"
                .to_string(),
        ));
    }
    Ok(())
}

/// Inflate `member` to the end, counting its bytes; stops early (the count
/// then exceeds `limit`) once more than `limit` came out, so a small range
/// offered with a gzip bomb costs no more than the range.
fn count_inflated(member: &mut dyn Read, limit: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match member.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        if total > limit {
            return Ok(total);
        }
    }
}

fn carried(got: u64, expected: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("piece carried {got} bytes, expected {expected}"),
    )
}

/// A small piece read whole into memory (after its first `skip` bytes),
/// checked to be exactly `expected` bytes long.
fn read_whole_piece(data: &mut dyn BufRead, skip: u64, expected: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(expected.saturating_sub(skip) as usize);
    discard(data, skip)?;
    // One byte more than expected shows a piece that is too long.
    data.take(expected + 1).read_to_end(&mut bytes)?;
    if skip + bytes.len() as u64 != expected {
        return Err(carried(skip + bytes.len() as u64, expected));
    }
    Ok(bytes)
}

/// A large piece copied from `data` to the end of its log (at
/// `local_len`), then fdatasynced, which also makes the log's earlier
/// unsynced bytes durable. A transfer cut midway, or a piece of the wrong
/// length, leaves no partial piece behind.
fn copy_piece_synced(
    data: &mut dyn BufRead,
    skip: u64,
    expected: u64,
    file: &mut File,
    local_len: u64,
) -> io::Result<u64> {
    let written = match discard(data, skip).and_then(|_| write_from(data, file)) {
        Ok(n) => n,
        Err(e) => {
            let _ = file.set_len(local_len);
            return Err(e);
        }
    };
    if skip + written != expected {
        file.set_len(local_len)?;
        return Err(carried(skip + written, expected));
    }
    storage::fdatasync(file)?;
    Ok(written)
}

/// Write all of `bytes` at `offset` of `file` (a replay's idempotent write).
fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, offset)
}

/// Read a host's whole archive of one type, oldest first (for tests and
/// `pihealth logs`): every `.gz` in name order, then `TYPE.log`.
pub fn read_all(
    log_root: &Path,
    backup_root: &Path,
    host: &str,
    log_type: &str,
) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for path in archive_files(backup_root, host, log_type)? {
        MultiGzDecoder::new(File::open(&path)?).read_to_end(&mut out)?;
    }
    match File::open(log_root.join(host).join(format!("{log_type}.log"))) {
        Ok(mut f) => {
            f.read_to_end(&mut out)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

/// Committed length of `log/HOST/TYPE.log`, from the host's state file:
/// the bytes a reader may show (a pull may be appending beyond it). 0 when
/// the type, the host or its state is unknown.
///
/// While a seal is under way (its intent committed), the log's bytes are
/// the sealed archive's as soon as that archive is in place: 0 then. So a
/// reader that lists the archives, reads this, lists them again and retries
/// when the two lists differ neither prints a byte twice nor skips one.
pub(crate) fn committed_len(
    log_root: &Path,
    backup_root: &Path,
    host: &str,
    log_type: &str,
) -> io::Result<u64> {
    let dir = log_root.join(host);
    let state = match Journal::read::<HostState>(&dir.join(STATE_FILE))? {
        Some(state) => Some(state),
        None => storage::read_json::<HostState>(&dir.join(LEGACY_STATE_FILE))?,
    };
    let Some(t) = state.as_ref().and_then(|s| s.types.get(log_type)) else {
        return Ok(0);
    };
    match &t.pending {
        Some(Intent::Seal { archive }) if backup_root.join(host).join(archive).exists() => Ok(0),
        _ => Ok(t.local_len),
    }
}

/// A host's archives of one type, oldest first.
pub fn archive_files(backup_root: &Path, host: &str, log_type: &str) -> io::Result<Vec<PathBuf>> {
    let dir = backup_root.join(host);
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                storage::is_archive_file(p)
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| storage::archive_time(n, log_type).is_some())
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::PieceKind;

    fn piece(kind: PieceKind, start: u64, end: u64) -> PieceRef {
        PieceRef {
            log_type: "cpu".into(),
            kind,
            epoch: 1,
            start,
            end,
        }
    }

    /// A fresh directory with the `log/` and `logbackup/` roots in it.
    fn roots() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (log, backup) = (dir.path().join("log"), dir.path().join("logbackup"));
        (dir, log, backup)
    }

    /// Host `pi1`'s archive, rotating at 1 MiB.
    fn open_pi1(log: &Path, backup: &Path) -> HostArchive {
        HostArchive::open(log, backup, "pi1", 1 << 20).unwrap()
    }

    /// Store and commit a piece the archive has none of, as a pull does.
    fn fetch_whole(a: &mut HostArchive, p: &PieceRef, bytes: &[u8]) {
        assert_eq!(a.plan(p), Plan::Fetch { skip: 0 });
        a.store_current(p, 0, &mut &bytes[..]).unwrap();
        a.commit().unwrap();
    }

    fn gz(header_start: u64, data: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log.gz");
        let h = ArchiveHeader {
            log_type: "cpu".into(),
            epoch: 1,
            start: header_start,
            end: header_start + data.len() as u64,
        };
        write_gzip_atomic(&path, &h, &mut &data[..]).unwrap();
        fs::read(path).unwrap()
    }

    #[test]
    fn duplicates_are_stored_once_and_order_is_kept() {
        let (_dir, log, backup) = roots();
        let mut a = open_pi1(&log, &backup);
        let p1 = piece(PieceKind::Current, 0, 6);
        fetch_whole(&mut a, &p1, b"a \nb \n");
        assert_eq!(a.plan(&p1), Plan::AlreadyHave);
        // Overlapping re-offer after a lost ack: only the new part is stored.
        let p2 = piece(PieceKind::Current, 3, 9);
        assert_eq!(a.plan(&p2), Plan::Fetch { skip: 3 });
        a.store_current(&p2, 3, &mut &b"b \nc \n"[..]).unwrap();
        // An archive, partly known already (rotated after our ack).
        let data = b"c \nd \n";
        let bytes = gz(6, data);
        let p3 = piece(PieceKind::Archive, 6, 12);
        assert_eq!(a.plan(&p3), Plan::Fetch { skip: 3 });
        a.store_archive(&p3, 3, bytes.len() as u64, &mut &bytes[..])
            .unwrap();
        let p4 = piece(PieceKind::Current, 12, 15);
        a.store_current(&p4, 0, &mut &b"e \n"[..]).unwrap();
        a.commit().unwrap();
        assert_eq!(
            read_all(&log, &backup, "pi1", "cpu").unwrap(),
            b"a \nb \nc \nd \ne \n"
        );
    }

    /// The six types of a pull, one small piece each, `round` of them before.
    fn six_pieces(a: &mut HostArchive, round: u64, expected: &mut BTreeMap<String, Vec<u8>>) {
        for t in ["cpu", "mem", "disk", "proc", "users", "sysinfo"] {
            let line = format!("2026-12-04T15:00:{round:02}+00:00 {t} {round} normal\n");
            let have = expected.entry(t.to_string()).or_default();
            let p = PieceRef {
                log_type: t.into(),
                kind: PieceKind::Current,
                epoch: 7,
                start: have.len() as u64,
                end: (have.len() + line.len()) as u64,
            };
            assert_eq!(a.plan(&p), Plan::Fetch { skip: 0 });
            a.store_current(&p, 0, &mut line.as_bytes()).unwrap();
            have.extend_from_slice(line.as_bytes());
        }
    }

    fn assert_archive(log: &Path, backup: &Path, expected: &BTreeMap<String, Vec<u8>>) {
        for (t, bytes) in expected {
            let got = read_all(log, backup, "pi1", t).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(bytes),
                "{t}"
            );
            assert_eq!(
                committed_len(log, backup, "pi1", t).unwrap(),
                fs::metadata(log.join(format!("pi1/{t}.log")))
                    .unwrap()
                    .len()
            );
        }
    }

    /// A pull's pieces, whatever their number, are made durable by the
    /// journal's one fdatasync.
    #[test]
    fn a_pull_of_six_small_pieces_costs_one_fdatasync() {
        let (_dir, log, backup) = roots();
        let mut expected = BTreeMap::new();
        for round in 0..20 {
            let mut a = open_pi1(&log, &backup);
            let before = storage::thread_syncs();
            six_pieces(&mut a, round, &mut expected);
            a.commit().unwrap();
            // The first pull also notes six new streams (no gap: none).
            assert_eq!(storage::thread_syncs() - before, 1, "round {round}");
        }
        assert_archive(&log, &backup, &expected);
    }

    /// A power loss may take every write not fsynced: the logs' unsynced
    /// bytes come back from the journal, once, in order.
    #[test]
    fn unsynced_pieces_lost_with_the_page_cache_are_replayed_from_the_journal() {
        let (_dir, log, backup) = roots();
        let mut expected = BTreeMap::new();
        for round in 0..5 {
            let mut a = open_pi1(&log, &backup);
            six_pieces(&mut a, round, &mut expected);
            a.commit().unwrap();
        }
        // What a power loss may leave: logs short, or long with garbage
        // (an unwritten block), or gone.
        fs::OpenOptions::new()
            .write(true)
            .open(log.join("pi1/cpu.log"))
            .unwrap()
            .set_len(10)
            .unwrap();
        fs::write(log.join("pi1/mem.log"), b"").unwrap();
        fs::remove_file(log.join("pi1/disk.log")).unwrap();
        let mut a = open_pi1(&log, &backup);
        assert!(a.state.types.values().all(|t| t.unsynced_from.is_none()));
        assert_archive(&log, &backup, &expected);
        // Garbage of the right length after a reboot (another boot id).
        six_pieces(&mut a, 5, &mut expected);
        a.commit().unwrap();
        a.state.boot = Some("another boot".into());
        a.journal.write(&a.state, true).unwrap();
        drop(a);
        // Only the unsynced bytes (round 5's) can be damaged.
        let proc_log = log.join("pi1/proc.log");
        let mut bytes = fs::read(&proc_log).unwrap();
        let unsynced = expected["proc"].len() - "2026-12-04T15:00:05+00:00 proc 5 normal\n".len();
        bytes[unsynced..].fill(0);
        fs::write(&proc_log, bytes).unwrap();
        let a = open_pi1(&log, &backup);
        drop(a);
        assert_archive(&log, &backup, &expected);
        // Replaying again changes nothing (idempotent).
        let before: Vec<u8> = fs::read(&proc_log).unwrap();
        let mut a = open_pi1(&log, &backup);
        for t in a.state.types.values_mut() {
            t.unsynced_from = Some(0);
        }
        a.state.boot = Some("yet another".into());
        a.journal.write(&a.state, true).unwrap();
        drop(a);
        let _a = open_pi1(&log, &backup);
        assert_eq!(fs::read(&proc_log).unwrap(), before);
        assert_archive(&log, &backup, &expected);
    }

    /// A seal empties `TYPE.log`: pieces kept in the journal from before it
    /// must not be replayed into the new log.
    #[test]
    fn a_replay_after_seals_and_compactions_writes_each_byte_once() {
        let (_dir, log, backup) = roots();
        let mut expected = BTreeMap::new();
        let mut checkpoints = 0;
        let mut a = HostArchive::open(&log, &backup, "pi1", 300).unwrap();
        for round in 0..400 {
            six_pieces(&mut a, round % 60, &mut expected);
            let before = a.journal_len();
            a.commit().unwrap();
            checkpoints += usize::from(a.journal_len() < before);
        }
        assert!(checkpoints > 0, "the journal never compacted");
        assert!(a.journal_len() <= JOURNAL_COMPACT_AT);
        a.state.boot = Some("another boot".into());
        a.journal.write(&a.state, true).unwrap();
        drop(a);
        for t in expected.keys() {
            let path = log.join(format!("pi1/{t}.log"));
            let len = fs::metadata(&path).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }
        let _a = HostArchive::open(&log, &backup, "pi1", 300).unwrap();
        assert_archive(&log, &backup, &expected);
    }

    /// A piece bigger than the write-ahead limit is fsynced in its own file
    /// (and with it the log's earlier unsynced bytes).
    #[test]
    fn a_large_piece_is_fsynced_in_place() {
        let (_dir, log, backup) = roots();
        let mut a = HostArchive::open(&log, &backup, "pi1", 1 << 30).unwrap();
        a.store_current(&piece(PieceKind::Current, 0, 3), 0, &mut &b"a \n"[..])
            .unwrap();
        assert_eq!(a.state.types["cpu"].unsynced_from, Some(0));
        let big = vec![b'x'; WAL_PIECE_MAX as usize + 1];
        let p = piece(PieceKind::Current, 3, 3 + big.len() as u64);
        a.store_current(&p, 0, &mut &big[..]).unwrap();
        assert_eq!(a.state.types["cpu"].unsynced_from, None);
        assert_eq!(a.state.wal.len(), 1);
        a.commit().unwrap();
        // A piece that carries more or less than offered writes nothing.
        let p = piece(PieceKind::Current, p.end, p.end + 3);
        assert!(a.store_current(&p, 0, &mut &b"ab"[..]).is_err());
        assert!(a.store_current(&p, 0, &mut &b"abcd"[..]).is_err());
        assert_eq!(
            fs::metadata(log.join("pi1/cpu.log")).unwrap().len(),
            3 + big.len() as u64
        );
    }

    /// Review finding: pieces after a gap were replayed by stream offset
    /// into a log whose bytes were not contiguous in stream offsets, so a
    /// reboot (even a clean one) cut acknowledged lines. Now a gap seals
    /// the log first; the replay after another boot changes nothing.
    #[test]
    fn a_gap_then_a_reboot_keeps_every_stored_line() {
        let (_dir, log, backup) = roots();
        let mut a = open_pi1(&log, &backup);
        let l1 = b"line one normal\n";
        let p1 = piece(PieceKind::Current, 0, l1.len() as u64);
        assert_eq!(a.plan(&p1), Plan::Fetch { skip: 0 });
        a.store_current(&p1, 0, &mut &l1[..]).unwrap();
        a.commit().unwrap();
        // The agent dropped [16, 5000) under max_backlog.
        let l2 = b"line two after gap normal\n";
        let p2 = piece(PieceKind::Current, 5000, 5000 + l2.len() as u64);
        assert_eq!(a.plan(&p2), Plan::Fetch { skip: 0 });
        a.store_current(&p2, 0, &mut &l2[..]).unwrap();
        a.commit().unwrap();
        let before = read_all(&log, &backup, "pi1", "cpu").unwrap();
        assert_eq!(before, [&l1[..], &l2[..]].concat());
        // A clean reboot: only the boot id changes.
        a.state.boot = Some("another boot".into());
        a.journal.write(&a.state, true).unwrap();
        drop(a);
        let a = open_pi1(&log, &backup);
        assert!(
            !a.events.iter().any(|e| e.contains("lost")),
            "{:?}",
            a.events
        );
        drop(a);
        assert_eq!(read_all(&log, &backup, "pi1", "cpu").unwrap(), before);
        // The sealed archive's header names exactly its bytes.
        for entry in fs::read_dir(backup.join("pi1")).unwrap() {
            let path = entry.unwrap().path();
            let h = storage::ArchiveHeader::read(&path).unwrap();
            assert_eq!((h.start, h.end), (0, l1.len() as u64), "{}", path.display());
        }
    }

    /// Review finding: a checkpoint whose fsync fails leaves a mark, and
    /// the next open writes the unsynced pieces again from the journal
    /// (a later fsync of the same pages could succeed without them ever
    /// reaching the disk), then clears the mark.
    #[test]
    fn a_failed_checkpoint_makes_the_next_open_rewrite_the_pieces() {
        let (_dir, log, backup) = roots();
        let mut expected = BTreeMap::new();
        let mut a = open_pi1(&log, &backup);
        six_pieces(&mut a, 0, &mut expected);
        a.commit().unwrap();
        // A checkpoint that cannot fsync a log (here: it is gone).
        fs::remove_file(log.join("pi1/cpu.log")).unwrap();
        assert!(a.checkpoint().is_err());
        assert!(log.join("pi1").join(REWRITE_MARK).exists());
        drop(a);
        // The bytes the disk may have lost while the page cache kept them:
        // same boot, same length, so only the mark tells.
        fs::write(log.join("pi1/mem.log"), vec![0u8; expected["mem"].len()]).unwrap();
        let a = open_pi1(&log, &backup);
        drop(a);
        assert!(!log.join("pi1").join(REWRITE_MARK).exists());
        assert_archive(&log, &backup, &expected);
    }

    /// The `events.log` lines of a test master.
    fn event_lines(log: &Path) -> Vec<String> {
        fs::read_to_string(log.join(".master/events.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_once(' ').unwrap().1.to_string())
            .collect()
    }

    #[test]
    fn a_gap_is_noted_once_though_its_fetch_fails_and_is_offered_again() {
        let (_dir, log, backup) = roots();
        let mut a = open_pi1(&log, &backup);
        a.store_current(&piece(PieceKind::Current, 0, 3), 0, &mut &b"a \n"[..])
            .unwrap();
        a.commit().unwrap();
        // The agent dropped 3..10; the fetch of 10..13 fails (nothing stored).
        let after_gap = piece(PieceKind::Current, 10, 13);
        assert_eq!(a.plan(&after_gap), Plan::Fetch { skip: 0 });
        drop(a);
        // The next pull: the same offer, then the agent dropped more.
        let mut a = open_pi1(&log, &backup);
        assert_eq!(a.plan(&after_gap), Plan::Fetch { skip: 0 });
        assert_eq!(
            a.plan(&piece(PieceKind::Current, 16, 19)),
            Plan::Fetch { skip: 0 }
        );
        a.store_current(&piece(PieceKind::Current, 16, 19), 0, &mut &b"b \n"[..])
            .unwrap();
        a.commit().unwrap();
        assert_eq!(
            a.plan(&piece(PieceKind::Current, 19, 22)),
            Plan::Fetch { skip: 0 }
        );
        assert_eq!(
            event_lines(&log),
            [
                "pi1 cpu gap of 7 bytes before stream offset 10 (dropped on the agent)",
                "pi1 cpu gap of 6 bytes before stream offset 16 (dropped on the agent)",
            ]
        );
    }

    #[test]
    fn a_new_stream_is_noted_once() {
        let (_dir, log, backup) = roots();
        let mut a = open_pi1(&log, &backup);
        a.store_current(&piece(PieceKind::Current, 0, 3), 0, &mut &b"a \n"[..])
            .unwrap();
        a.commit().unwrap();
        // The agent lost its state, and its new stream its first 5 bytes.
        let new_stream = PieceRef {
            epoch: 2,
            ..piece(PieceKind::Current, 5, 8)
        };
        for _ in 0..3 {
            assert_eq!(a.plan(&new_stream), Plan::Fetch { skip: 0 });
        }
        assert_eq!(
            event_lines(&log),
            [
                "pi1 cpu new stream 2 from the agent (was 1 at offset 3)",
                "pi1 cpu gap of 5 bytes before stream offset 5 (dropped on the agent before the first pull)",
            ]
        );
    }

    #[test]
    fn a_lost_state_file_never_erases_stored_log() {
        let (_dir, log, backup) = roots();
        {
            let mut a = open_pi1(&log, &backup);
            a.store_current(&piece(PieceKind::Current, 0, 3), 0, &mut &b"a \n"[..])
                .unwrap();
            a.commit().unwrap();
        }
        fs::remove_file(log.join("pi1/.pihealth-state")).unwrap();
        let mut a = open_pi1(&log, &backup);
        let p = piece(PieceKind::Current, 3, 6);
        a.store_current(&p, 0, &mut &b"b \n"[..]).unwrap();
        a.commit().unwrap();
        assert_eq!(read_all(&log, &backup, "pi1", "cpu").unwrap(), b"a \nb \n");
    }

    /// A reader between a seal's archive rename and its final commit must
    /// not take the log's bytes for new ones: they are the archive's.
    #[test]
    fn a_seal_under_way_counts_the_log_as_the_archives_once_it_is_in_place() {
        let (_dir, log, backup) = roots();
        let mut a = open_pi1(&log, &backup);
        a.store_current(&piece(PieceKind::Current, 0, 3), 0, &mut &b"a \n"[..])
            .unwrap();
        a.commit().unwrap();
        let name = a.next_archive_name("cpu");
        a.state.types.get_mut("cpu").unwrap().pending = Some(Intent::Seal {
            archive: name.clone(),
        });
        a.dirty = true;
        a.commit().unwrap();
        // Intent committed, archive not written yet: the log still holds them.
        assert_eq!(committed_len(&log, &backup, "pi1", "cpu").unwrap(), 3);
        fs::write(backup.join("pi1").join(&name), b"").unwrap();
        assert_eq!(committed_len(&log, &backup, "pi1", "cpu").unwrap(), 0);
    }

    #[test]
    fn the_state_file_of_earlier_versions_is_taken_over() {
        let (_dir, log, backup) = roots();
        {
            let mut a = open_pi1(&log, &backup);
            a.store_current(&piece(PieceKind::Current, 0, 3), 0, &mut &b"a \n"[..])
                .unwrap();
            a.commit().unwrap();
            // What an earlier version kept: one JSON document.
            storage::write_json_atomic(&log.join("pi1").join(LEGACY_STATE_FILE), &a.state, true)
                .unwrap();
        }
        fs::remove_file(log.join("pi1").join(STATE_FILE)).unwrap();
        assert_eq!(committed_len(&log, &backup, "pi1", "cpu").unwrap(), 3);
        let mut a = open_pi1(&log, &backup);
        assert!(!log.join("pi1").join(LEGACY_STATE_FILE).exists());
        assert_eq!(a.plan(&piece(PieceKind::Current, 0, 3)), Plan::AlreadyHave);
        a.store_current(&piece(PieceKind::Current, 3, 6), 0, &mut &b"b \n"[..])
            .unwrap();
        a.commit().unwrap();
        drop(a);
        assert_eq!(committed_len(&log, &backup, "pi1", "cpu").unwrap(), 6);
        assert_eq!(read_all(&log, &backup, "pi1", "cpu").unwrap(), b"a \nb \n");
    }

    #[test]
    fn archive_names_keep_order_when_the_clock_goes_back() {
        let (_dir, log, backup) = roots();
        let mut a = open_pi1(&log, &backup);
        let future = chrono::Utc::now() + chrono::Duration::days(365);
        a.state.types.entry("cpu".into()).or_default().last_archive = archive_name("cpu", future);
        // Straight to one microsecond after the last name, no walking.
        let next = a.next_archive_name("cpu");
        assert_eq!(
            next,
            archive_name("cpu", future + chrono::Duration::microseconds(1))
        );
    }

    #[test]
    fn a_new_agent_stream_starts_after_a_seal_of_the_old_one() {
        let (_dir, log, backup) = roots();
        let mut a = open_pi1(&log, &backup);
        a.store_current(&piece(PieceKind::Current, 0, 4), 0, &mut &b"old\n"[..])
            .unwrap();
        let fresh = PieceRef {
            epoch: 2,
            ..piece(PieceKind::Current, 0, 4)
        };
        fetch_whole(&mut a, &fresh, b"new\n");
        let archives = archive_files(&backup, "pi1", "cpu").unwrap();
        assert_eq!(archives.len(), 1);
        let header = ArchiveHeader::read(&archives[0]).unwrap();
        assert_eq!((header.epoch, header.start, header.end), (1, 0, 4));
        assert_eq!(fs::read(log.join("pi1/cpu.log")).unwrap(), b"new\n");
        assert_eq!(
            read_all(&log, &backup, "pi1", "cpu").unwrap(),
            b"old\nnew\n"
        );
    }

    #[test]
    fn second_writer_is_refused() {
        let (_dir, log, backup) = roots();
        let _a = open_pi1(&log, &backup);
        assert!(matches!(
            HostArchive::open(&log, &backup, "pi1", 1 << 20),
            Err(OpenError::Busy)
        ));
        assert!(HostArchive::open(&log, &backup, "pi2", 1 << 20).is_ok());
        assert!(HostArchive::open(&log, &backup, "../../etc", 1 << 20).is_err());
    }

    #[test]
    fn uncommitted_append_is_cut_and_refetched() {
        let (_dir, log, backup) = roots();
        {
            let mut a = open_pi1(&log, &backup);
            a.store_current(&piece(PieceKind::Current, 0, 3), 0, &mut &b"a \n"[..])
                .unwrap();
            a.commit().unwrap();
            // Crash after the append, before commit: no ack was sent.
            a.store_current(&piece(PieceKind::Current, 3, 6), 0, &mut &b"b \n"[..])
                .unwrap();
        }
        let mut a = open_pi1(&log, &backup);
        let again = piece(PieceKind::Current, 3, 6);
        fetch_whole(&mut a, &again, b"b \n");
        assert_eq!(read_all(&log, &backup, "pi1", "cpu").unwrap(), b"a \nb \n");
    }

    /// A master killed between storing a host's very first piece and
    /// committing it (`pull.after_store` on the first pull) left a log the
    /// state has no record of. It was kept as if the state file had been
    /// lost, then sealed when the agent offered the same range again, and
    /// the range was stored a second time.
    #[test]
    fn an_uncommitted_first_piece_is_cut_and_refetched() {
        let (_dir, log, backup) = roots();
        {
            let mut a = open_pi1(&log, &backup);
            let first = piece(PieceKind::Current, 0, 3);
            assert_eq!(a.plan(&first), Plan::Fetch { skip: 0 });
            a.store_current(&first, 0, &mut &b"a \n"[..]).unwrap();
            // Crash before commit: no ack was sent, the agent keeps 0..3.
        }
        let mut a = open_pi1(&log, &backup);
        let again = piece(PieceKind::Current, 0, 6);
        fetch_whole(&mut a, &again, b"a \nb \n");
        assert_eq!(read_all(&log, &backup, "pi1", "cpu").unwrap(), b"a \nb \n");
    }

    #[test]
    fn rotation_by_size_and_interrupted_intents() {
        let (_dir, log, backup) = roots();
        let mut expected = Vec::new();
        {
            let mut a = HostArchive::open(&log, &backup, "pi1", 1024).unwrap();
            let mut off = 0;
            for i in 0..100 {
                let line = format!("line {i:03} normal\n");
                let p = piece(PieceKind::Current, off, off + line.len() as u64);
                a.store_current(&p, 0, &mut line.as_bytes()).unwrap();
                off = p.end;
                expected.extend_from_slice(line.as_bytes());
            }
            a.commit().unwrap();
            // Simulate a crash inside a seal, after its archive was written.
            let name = a.next_archive_name("cpu");
            let ts = a.state.types.get_mut("cpu").unwrap();
            let header = ArchiveHeader {
                log_type: "cpu".into(),
                epoch: 1,
                start: ts.local_start,
                end: ts.committed,
            };
            let len = ts.local_len;
            ts.pending = Some(Intent::Seal {
                archive: name.clone(),
            });
            a.dirty = true;
            a.commit().unwrap();
            write_gzip_atomic(
                &backup.join("pi1").join(&name),
                &header,
                &mut File::open(log.join("pi1/cpu.log")).unwrap().take(len),
            )
            .unwrap();
        }
        let _a = HostArchive::open(&log, &backup, "pi1", 1024).unwrap();
        // One seal by size, one finished from the interrupted intent.
        assert_eq!(archive_files(&backup, "pi1", "cpu").unwrap().len(), 2);
        assert_eq!(read_all(&log, &backup, "pi1", "cpu").unwrap(), expected);
    }

    #[test]
    fn corrupt_or_short_archives_are_refused() {
        let (dir, log, backup) = roots();
        let mut a = open_pi1(&log, &backup);
        let p = piece(PieceKind::Archive, 0, 4);
        let good = gz(0, b"abc\n");
        let n = good.len();
        let refused = |a: &mut HostArchive, p: &PieceRef, bytes: &[u8]| {
            a.store_archive(p, 0, bytes.len() as u64, &mut &bytes[..])
                .is_err()
        };
        // Fewer bytes than offered.
        assert!(a
            .store_archive(&p, 0, n as u64 + 1, &mut &good[..])
            .is_err());
        // Truncated, whatever the offered size says.
        for cut in [n - 1, n - 3, n - 8, 20, 9] {
            assert!(refused(&mut a, &p, &good[..cut]), "cut at {cut}");
        }
        // A wrong ISIZE in the trailer.
        let mut wrong_isize = good.clone();
        wrong_isize[n - 4] ^= 0x01;
        assert!(refused(&mut a, &p, &wrong_isize));
        // Offered with another range than its header names.
        assert!(refused(&mut a, &piece(PieceKind::Archive, 0, 5), &good));
        assert!(refused(&mut a, &piece(PieceKind::Archive, 1, 5), &good));
        let other_epoch = PieceRef {
            epoch: 2,
            ..p.clone()
        };
        assert!(refused(&mut a, &other_epoch, &good));
        // A header range that disagrees with the content's length.
        let long = {
            let path = dir.path().join("long.log.gz");
            let h = ArchiveHeader {
                log_type: "cpu".into(),
                epoch: 1,
                start: 0,
                end: 5,
            };
            write_gzip_atomic(&path, &h, &mut &b"abc\n"[..]).unwrap();
            fs::read(path).unwrap()
        };
        assert!(refused(&mut a, &piece(PieceKind::Archive, 0, 5), &long));
        // Not gzip at all.
        assert!(refused(
            &mut a,
            &p,
            b"abc\n not gzip at all, just text.....\n"
        ));
        assert_eq!(a.plan(&p), Plan::Fetch { skip: 0 });
        assert!(archive_files(&backup, "pi1", "cpu").unwrap().is_empty());
        // The intact archive is then stored as it came.
        a.store_archive(&p, 0, n as u64, &mut &good[..]).unwrap();
        a.commit().unwrap();
        assert_eq!(a.plan(&p), Plan::AlreadyHave);
        let stored = archive_files(&backup, "pi1", "cpu").unwrap();
        assert_eq!(fs::read(&stored[0]).unwrap(), good);
    }

    /// One gzip member of `data`, with `comment` in its header if given.
    fn member(comment: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut builder = flate2::GzBuilder::new();
        if let Some(c) = comment {
            builder = builder.comment(c);
        }
        let mut enc = builder.write(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// Whether `bytes`, offered as `p`, is refused, and if so that nothing
    /// was left on disk and nothing changed in the state.
    fn refused_cleanly(a: &mut HostArchive, p: &PieceRef, bytes: &[u8]) -> bool {
        let before = a.plan(p);
        let refused = a
            .store_archive(p, 0, bytes.len() as u64, &mut &bytes[..])
            .is_err();
        if refused {
            assert!(archive_files(&a.backup_dir, "", "cpu").unwrap().is_empty());
            let leftovers: Vec<_> = fs::read_dir(&a.backup_dir).unwrap().flatten().collect();
            assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
            assert_eq!(a.plan(p), before);
        }
        refused
    }

    /// A piece offered as a 38-byte range that arrives as a two-member gzip
    /// whose last member's ISIZE says 38 (it holds 230 bytes) is refused.
    #[test]
    fn an_archive_is_stored_only_if_it_holds_exactly_its_range() {
        let (_dir, log, backup) = roots();
        let mut a = open_pi1(&log, &backup);
        let line = b"2026-01-01T00:00:00+00:00 4242 normal\n";
        assert_eq!(line.len(), 38);
        let p = piece(PieceKind::Archive, 0, 38);
        let comment = "pihealth type=cpu epoch=1 start=0 end=38";
        let injected = b"2026-01-01T00:00:00+00:00 injected normal\n".repeat(5);

        // Two members: the first carries the header and the injected lines,
        // the last the real range (its trailer says 38).
        let two = [member(Some(comment), &injected), member(None, line)].concat();
        assert!(refused_cleanly(&mut a, &p, &two));
        // The same, real range first, injected lines after.
        let two = [member(Some(comment), line), member(None, &injected)].concat();
        assert!(refused_cleanly(&mut a, &p, &two));
        // Trailing garbage after one good member.
        let good = member(Some(comment), line);
        assert!(refused_cleanly(&mut a, &p, &[&good[..], b"x"].concat()));
        assert!(refused_cleanly(
            &mut a,
            &p,
            &[&good[..], &[0u8; 64]].concat()
        ));
        // One member, its CRC right for what it holds, but it holds more
        // or less than the range (trailer made to say 38).
        for content in [&[line.as_slice(), b"more\n"].concat(), &line[..30].to_vec()] {
            let mut lying = member(Some(comment), content);
            let n = lying.len();
            lying[n - 4..].copy_from_slice(&38u32.to_le_bytes());
            assert!(refused_cleanly(&mut a, &p, &lying));
        }
        // Self-consistent (CRC and ISIZE right) but longer than its range.
        let long = member(Some(comment), &[line.as_slice(), b"x\n"].concat());
        assert!(refused_cleanly(&mut a, &p, &long));
        // Damaged deflate data or CRC (already so on the agent's disk).
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 6] ^= 0xff;
        assert!(refused_cleanly(&mut a, &p, &bad_crc));
        // A gzip bomb offered as a small range is refused without
        // inflating it all.
        let bomb = member(Some(comment), &vec![b'a'; 64 << 20]);
        assert!(refused_cleanly(&mut a, &p, &bomb));

        // The exact archive is stored as it came.
        a.store_archive(&p, 0, good.len() as u64, &mut &good[..])
            .unwrap();
        a.commit().unwrap();
        assert_eq!(read_all(&log, &backup, "pi1", "cpu").unwrap(), line);
        let stored = archive_files(&backup, "pi1", "cpu").unwrap();
        assert_eq!(fs::read(&stored[0]).unwrap(), good);
    }
}
