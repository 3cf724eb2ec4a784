//! The agent's log store: append, rotate, offer, release on acknowledgement.
//!
//! Each log type is one endless byte stream named by a random `epoch`.
//! Bytes live in exactly one of two places until the master acknowledges
//! them:
//!
//! - `log/TYPE.log`, the current log, whose byte 0 is stream offset `base`;
//!   the master has acknowledged it up to stream offset `acked`;
//! - `logbackup/TYPE-<UTC time>.log.gz`, rotated archives, each holding the
//!   stream range written in its gzip header comment
//!   (`pihealth type=cpu epoch=… start=… end=…`), invisible to `zcat`.
//!
//! `log/.pihealth/logstore.state` holds `{TYPE: {epoch, base, acked}}` for
//! every type, as a journal of snapshots (`crate::journal`): one file, so
//! one acknowledgement of all types costs one append and one fdatasync.
//! Earlier versions kept one `TYPE.state` per type; `open` migrates them.
//!
//! Crash safety, step by step:
//! - append: one `write` of a whole record, then `fdatasync`; a torn
//!   record (crash mid-write) is cut back to the last newline on start.
//! - rotate: (1) the unacknowledged tail is gzipped to a hidden temp file,
//!   fsynced and renamed to its final name; (2) an empty `TYPE.log`
//!   replaces the old one by rename; (3) the state moves `base` to the
//!   archive's end. On start, an archive ending beyond `base` means a
//!   rotation stopped after (1) or (2): its bytes are cut from `TYPE.log`
//!   if still there, and `base` moves on. Nothing is lost or doubled.
//! - release (`release_all`, once per acknowledgement): an acknowledged
//!   archive is deleted; an acknowledged current range moves `acked`
//!   (state appended to the journal, not fsynced: if that is lost, the
//!   range is offered again and the master, which stores only what lies
//!   beyond its own committed offset, acknowledges it again without
//!   storing it twice). A log acknowledged to its end is replaced by an
//!   empty one, so `log/` holds only what the master has not stored
//!   (SPEC §6): the state is fsynced first, and the renames and the new
//!   `base`s are made durable before the next append (one directory fsync
//!   and one state write for all emptied logs). `set_empty_at` can defer
//!   the emptying of small logs (their acknowledged bytes are then never
//!   offered again: offers start at `acked`), which makes a pull of small
//!   deltas cost the agent no fsync at all; it is off, because SPEC §6
//!   says `log/` holds only unstored data (see [`EMPTY_AT`]).
//! - `max_backlog`: when unpulled bytes exceed it, the oldest archives are
//!   deleted; each loss is first written (fsynced) into the type's own log,
//!   then the archive is unlinked, and the losses are returned so the
//!   caller raises an alarm. Never silent.
//! - a failed state write (disk full) is remembered and retried before any
//!   archive is deleted, since recovery places `base` by the archives.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::journal::Journal;
use crate::protocol::message::{PieceKind, PieceRef, MAX_OFFERS};
use crate::storage::{self, archive_name, write_gzip_atomic, ArchiveHeader};

/// The state of every type, in `log/.pihealth/` (module doc).
const STATE_FILE: &str = "logstore.state";
/// With emptying deferred (`set_empty_at`), the size from which a log
/// acknowledged to its end is emptied (module doc: smaller, its release
/// costs no fsync). Not the default: SPEC §6 keeps `log/` to unstored
/// data; a one-flush emptying (the state record naming the emptied
/// content, checked at recovery) is what would allow both.
pub const EMPTY_AT: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct TypeState {
    epoch: u64,
    base: u64,
    acked: u64,
}

#[derive(Debug, Clone)]
struct Archive {
    path: PathBuf,
    header: ArchiveHeader,
    /// Compressed size on disk.
    size: u64,
}

#[derive(Debug)]
struct TypeLog {
    state: TypeState,
    /// Length of the current `TYPE.log`.
    len: u64,
    /// Append handle, opened on first use.
    file: Option<File>,
    /// Rotated archives not yet acknowledged, sorted by stream start.
    archives: Vec<Archive>,
    /// `Some(old base)` after the log was emptied on a full acknowledgement
    /// while the rename is not yet durable: until the next append makes it
    /// so, the state file keeps the old `base` (see `release_all`).
    unsynced_base: Option<u64>,
}

type Types = BTreeMap<String, TypeLog>;
type States = BTreeMap<String, TypeState>;

impl TypeLog {
    /// What the state file may say: the old `base` while an emptied log's
    /// rename is not durable, since the old log may come back.
    fn saved_state(&self) -> TypeState {
        TypeState {
            base: self.unsynced_base.unwrap_or(self.state.base),
            ..self.state
        }
    }

    fn end(&self) -> u64 {
        self.state.base + self.len
    }

    /// First stream offset not yet acknowledged and still in `TYPE.log`.
    fn unacked_start(&self) -> u64 {
        self.state.acked.max(self.state.base)
    }
}

/// Bytes deleted because `max_backlog` was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub log_type: String,
    pub archives: usize,
    /// Uncompressed bytes of log lost.
    pub bytes: u64,
}

/// A piece as the store offers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPiece {
    pub piece: PieceRef,
    /// Bytes to send: compressed size for archives.
    pub size: u64,
}

/// An open piece, ready to stream: read `len` bytes from `file` at `offset`.
pub struct PieceReader {
    pub file: File,
    pub offset: u64,
    pub len: u64,
}

pub struct LogStore {
    log_dir: PathBuf,
    backup_dir: PathBuf,
    state: Mutex<Journal>,
    rotate_size: u64,
    max_backlog: u64,
    /// 0 (every fully acknowledged log is emptied), or what
    /// `set_empty_at` set.
    empty_at: u64,
    types: Mutex<Types>,
    /// False after a failed state write: the state on disk is behind, and
    /// no archive may be deleted until it is written durably (recovery
    /// relies on the archives to place `base`). Changed only under `types`.
    state_saved: AtomicBool,
}

/// Make the store's directories, remove the temporary files a crash left
/// in them, and make the renames the last run left undurable (an emptied
/// log waits for its directory fsync until the next append) durable before
/// recovery writes any state that relies on them.
fn prepare_dirs(log_dir: &Path, backup_dir: &Path, state_dir: &Path) -> io::Result<()> {
    for dir in [log_dir, backup_dir, state_dir] {
        fs::create_dir_all(dir).map_err(|e| storage::with_path(e, dir))?;
    }
    storage::remove_temp_files(backup_dir)?;
    storage::remove_temp_files(log_dir)?;
    storage::remove_temp_files(state_dir)?;
    storage::sync_dir(log_dir)?;
    storage::sync_dir(backup_dir)
}

/// The archives in `backup_dir` by type, as their headers say; one whose
/// header cannot be read is left alone.
fn scan_archives(backup_dir: &Path) -> io::Result<BTreeMap<String, Vec<Archive>>> {
    let mut archives: BTreeMap<String, Vec<Archive>> = BTreeMap::new();
    for entry in fs::read_dir(backup_dir)? {
        let path = entry?.path();
        if !storage::is_archive_file(&path) {
            continue;
        }
        match ArchiveHeader::read(&path) {
            Ok(header) => {
                let size = fs::metadata(&path)?.len();
                archives
                    .entry(header.log_type.clone())
                    .or_default()
                    .push(Archive { path, header, size });
            }
            Err(e) => log::warn!("ignoring {}: {e}", path.display()),
        }
    }
    Ok(archives)
}

/// The types this agent owns: configured ones, and those it wrote before
/// (in its state, also an older version's, or in an archive whose header
/// it wrote). Any other `NAME.log` in `log/` is not ours: a master sharing
/// the directory keeps files there too, and adopting one would empty it.
fn owned_types(
    log_dir: &Path,
    configured: &[String],
    archives: &BTreeMap<String, Vec<Archive>>,
    saved: &States,
) -> Vec<String> {
    let mut names: Vec<String> = configured.to_vec();
    names.extend(archives.keys().cloned());
    names.extend(saved.keys().cloned());
    if storage::legacy_master_in(log_dir) {
        // An agent before this version may have put the master's
        // `alarms.log`/`events.log` into its state; until the master
        // moves them to `log/.master/`, they stay the master's. Their
        // state entries go with the next save.
        names.retain(|n| {
            let masters = storage::LEGACY_MASTER_LOGS.contains(&n.as_str())
                && !configured.contains(n)
                && !archives.contains_key(n);
            if masters {
                log::warn!(
                    "leaving {}/{n}.log alone: it is the master's (an older agent took it \
                     as a log type)",
                    log_dir.display()
                );
            }
            !masters
        });
    }
    names.sort();
    names.dedup();
    names
}

impl LogStore {
    /// Open the store, recovering from any crash, for the configured types
    /// plus any type that still has data on disk.
    pub fn open(
        log_dir: &Path,
        backup_dir: &Path,
        rotate_size: u64,
        max_backlog: u64,
        configured: &[String],
    ) -> io::Result<LogStore> {
        let state_dir = log_dir.join(".pihealth");
        prepare_dirs(log_dir, backup_dir, &state_dir)?;
        let mut archives = scan_archives(backup_dir)?;
        let (journal, saved) = Journal::open::<States>(&state_dir.join(STATE_FILE))?;
        let fresh = saved.is_none();
        let (mut saved, legacy) = match saved {
            Some(states) => (states, Vec::new()),
            None => read_legacy_states(&state_dir)?,
        };
        let names = owned_types(log_dir, configured, &archives, &saved);

        let store = LogStore {
            log_dir: log_dir.to_path_buf(),
            backup_dir: backup_dir.to_path_buf(),
            state: Mutex::new(journal),
            rotate_size,
            max_backlog,
            empty_at: 0,
            types: Mutex::new(BTreeMap::new()),
            state_saved: AtomicBool::new(true),
        };
        let mut types = BTreeMap::new();
        let mut changed = fresh;
        for name in names {
            let mut found = archives.remove(&name).unwrap_or_default();
            found.sort_by_key(|a| (a.header.epoch, a.header.start));
            let (log, recovered) = store.recover(&name, found, saved.remove(&name))?;
            changed |= recovered;
            types.insert(name, log);
        }
        if changed {
            store.save_states(&types, true)?;
        }
        // Only once the one state file is durable: a crash before this
        // finds it and ignores the old files.
        for path in legacy {
            if let Err(e) = fs::remove_file(&path) {
                log::warn!("cannot remove the old state file {}: {e}", path.display());
            }
        }
        *store.lock() = types;
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Types> {
        // A panic while holding the lock leaves state that is still
        // consistent on disk; keep serving rather than poison every caller.
        crate::sync::lock(&self.types)
    }

    fn log_path(&self, log_type: &str) -> PathBuf {
        self.log_dir.join(format!("{log_type}.log"))
    }

    /// Bring one type to a consistent state after a crash; says whether
    /// its state changed (and must be written).
    fn recover(
        &self,
        name: &str,
        archives: Vec<Archive>,
        saved: Option<TypeState>,
    ) -> io::Result<(TypeLog, bool)> {
        let log_path = self.log_path(name);
        if saved.is_none() && archives.is_empty() {
            refuse_foreign_log(name, &log_path)?;
        }
        let mut state = match saved {
            Some(s) => s,
            None => state_from_archives(&archives)?,
        };
        let mut len = file_len(&log_path)?;

        // A rotation that stopped after writing its archive.
        let archived_end = archived_end(&archives, state.epoch);
        if archived_end > state.base {
            let cut = archived_end - state.base;
            if len >= cut {
                log::warn!(
                    "{name}: finishing an interrupted rotation ({cut} bytes already archived)"
                );
                drop_prefix(&log_path, cut)?;
                len -= cut;
            }
            state.base = archived_end;
            state.acked = state.acked.max(archived_end);
        }
        // A rotation with nothing to archive that stopped after replacing the log.
        if state.acked > state.base + len {
            state.base = state.acked;
        }
        let len = cut_torn_record(name, &log_path, len, state.acked.saturating_sub(state.base))?;
        let log = TypeLog {
            state,
            len,
            file: None,
            archives,
            unsynced_base: None,
        };
        Ok((log, saved != Some(state)))
    }

    /// Append one record (whole lines) to a type's log; rotates and enforces
    /// `max_backlog`. Returns what the cap dropped, for the caller to alarm.
    /// An error means the record was not stored (the caller counts it as
    /// lost, `crate::agent::lost`): once it is durable, a failed rotation
    /// or cap enforcement is logged and tried again on the next append.
    pub fn append(&self, log_type: &str, record: &[u8]) -> io::Result<Vec<Dropped>> {
        let mut types = self.lock();
        if !types.contains_key(log_type) {
            crate::names::check_type_name(log_type)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let (log, _) = self.recover(log_type, Vec::new(), None)?;
            types.insert(log_type.to_string(), log);
            self.save_states(&types, true)?;
        }
        self.append_locked(&mut types, log_type, record)?;
        let mut drops = Vec::new();
        if let Err(e) = self.enforce_backlog(&mut types, &mut drops) {
            // The record is stored; what was dropped so far is returned.
            log::warn!("{log_type}: cannot enforce max_backlog yet: {e}");
        }
        Ok(drops)
    }

    fn append_locked(&self, types: &mut Types, name: &str, record: &[u8]) -> io::Result<()> {
        self.sync_emptied_logs(types)?;
        let log = types.get_mut(name).expect("caller checked the type");
        if log.file.is_none() {
            let path = self.log_path(name);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| storage::with_path(e, &path))?;
            log.file = Some(file);
        }
        let file = log.file.as_mut().expect("opened above");
        if let Err(e) = file
            .write_all(record)
            .and_then(|_| storage::fdatasync(file))
        {
            // Leave no partial record behind (disk full, I/O error).
            let _ = file.set_len(log.len);
            return Err(e);
        }
        log.len += record.len() as u64;
        if log.len >= self.rotate_size {
            // The record is stored: a rotation that fails (no room for the
            // archive) is tried again after the next append.
            if let Err(e) = self.rotate(types, name) {
                log::warn!("{name}: cannot rotate yet: {e}");
            }
        }
        Ok(())
    }

    /// Step 3 of `release_all`, for every log it emptied: the renames, then
    /// the new `base`s, durable before any byte is appended. A power loss
    /// must not let new bytes be read as the old, acknowledged ones.
    fn sync_emptied_logs(&self, types: &mut Types) -> io::Result<()> {
        let emptied: Vec<(String, u64)> = types
            .iter()
            .filter_map(|(n, t)| t.unsynced_base.map(|b| (n.clone(), b)))
            .collect();
        if emptied.is_empty() {
            return Ok(());
        }
        storage::sync_dir(&self.log_dir)?;
        for (name, _) in &emptied {
            types.get_mut(name).expect("listed above").unsynced_base = None;
        }
        let saved = self.save_states(types, true);
        if saved.is_err() {
            // Retried before the next append; the old bases stay the
            // ones the state file may show.
            for (name, base) in emptied {
                types.get_mut(&name).expect("listed above").unsynced_base = Some(base);
            }
        }
        saved
    }

    fn rotate(&self, types: &mut Types, name: &str) -> io::Result<()> {
        let log = types.get_mut(name).expect("caller checked the type");
        let (start, end) = (log.unacked_start(), log.end());
        if end > start {
            let header = ArchiveHeader {
                log_type: name.to_string(),
                epoch: log.state.epoch,
                start,
                end,
            };
            let path = unique_archive_path(&self.backup_dir, name)?;
            let mut source = File::open(self.log_path(name))?;
            source.seek(SeekFrom::Start(start - log.state.base))?;
            let size = write_gzip_atomic(&path, &header, &mut source.take(end - start))?;
            log.archives.push(Archive { path, header, size });
        }
        crate::failpoint::hit("logstore.mid_rotate");
        storage::replace_with_empty_unsynced(&self.log_path(name))?;
        storage::sync_dir(&self.log_dir)?;
        log.file = None;
        log.len = 0;
        log.state.base = end;
        log.state.acked = end;
        self.save_states(types, true)?;
        log::info!("{name}: rotated at stream offset {end}");
        Ok(())
    }

    /// Write the state of every type, remembering a failure so it is
    /// retried before any archive is deleted.
    fn save_states(&self, types: &Types, durable: bool) -> io::Result<()> {
        let states: BTreeMap<&str, TypeState> = types
            .iter()
            .map(|(name, log)| (name.as_str(), log.saved_state()))
            .collect();
        let result = crate::sync::lock(&self.state).write(&states, durable);
        // Only a durable write makes up for an earlier failed one.
        let saved = result.is_ok() && (durable || self.state_saved.load(Ordering::Relaxed));
        self.state_saved.store(saved, Ordering::Relaxed);
        result
    }

    fn ensure_state_saved(&self, types: &Types) -> io::Result<()> {
        if self.state_saved.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.save_states(types, true)
    }

    fn backlog_locked(types: &Types) -> u64 {
        types
            .values()
            .map(|t| t.archives.iter().map(|a| a.size).sum::<u64>() + (t.end() - t.unacked_start()))
            .sum()
    }

    /// Drop the oldest archives while the backlog exceeds the cap; each
    /// drop is added to `drops` as it happens, so an error midway still
    /// reports those made before it.
    fn enforce_backlog(&self, types: &mut Types, drops: &mut Vec<Dropped>) -> io::Result<()> {
        while Self::backlog_locked(types) > self.max_backlog {
            // The oldest archive of any type: archive names carry UTC times.
            let oldest = types
                .iter()
                .filter_map(|(name, t)| {
                    t.archives
                        .first()
                        .map(|a| (archive_time(&a.path, name), name.clone()))
                })
                .min();
            let Some((_, name)) = oldest else { break };
            self.ensure_state_saved(types)?;
            let archive = types
                .get_mut(&name)
                .expect("found above")
                .archives
                .remove(0);
            let bytes = archive.header.end - archive.header.start;
            // Recorded in the log itself before the bytes go: never silent,
            // even if we are killed right after the unlink.
            let line = format!(
                "{} pihealth dropped {bytes} bytes ({}): max_backlog reached warning\n",
                storage::now_rfc3339(),
                archive
                    .path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("archive")
            );
            if let Err(e) = self.append_locked(types, &name, line.as_bytes()) {
                let log = types.get_mut(&name).expect("found above");
                log.archives.insert(0, archive);
                return Err(e);
            }
            fs::remove_file(&archive.path)?;
            log::warn!(
                "{name}: max_backlog reached, dropped {} ({bytes} bytes of log)",
                archive.path.display()
            );
            match drops.iter_mut().find(|d| d.log_type == name) {
                Some(d) => {
                    d.archives += 1;
                    d.bytes += bytes;
                }
                None => drops.push(Dropped {
                    log_type: name,
                    archives: 1,
                    bytes,
                }),
            }
        }
        Ok(())
    }

    /// Everything not yet acknowledged, oldest first per type, at most
    /// `MAX_OFFERS`; the flag says whether more remain.
    pub fn pending(&self) -> (Vec<PendingPiece>, bool) {
        let types = self.lock();
        let mut out = Vec::new();
        let mut more = false;
        'types: for (name, log) in types.iter() {
            for a in &log.archives {
                if out.len() == MAX_OFFERS {
                    more = true;
                    break 'types;
                }
                out.push(PendingPiece {
                    piece: PieceRef {
                        log_type: name.clone(),
                        kind: PieceKind::Archive,
                        epoch: a.header.epoch,
                        start: a.header.start,
                        end: a.header.end,
                    },
                    size: a.size,
                });
            }
            let (start, end) = (log.unacked_start(), log.end());
            if end > start {
                if out.len() == MAX_OFFERS {
                    more = true;
                    break;
                }
                out.push(PendingPiece {
                    piece: PieceRef {
                        log_type: name.clone(),
                        kind: PieceKind::Current,
                        epoch: log.state.epoch,
                        start,
                        end,
                    },
                    size: end - start,
                });
            }
        }
        (out, more)
    }

    /// Open a piece for sending, if it is still where it was offered.
    pub fn open_piece(&self, piece: &PieceRef) -> io::Result<PieceReader> {
        let types = self.lock();
        let gone = || io::Error::new(io::ErrorKind::NotFound, "piece no longer pending");
        let log = types.get(&piece.log_type).ok_or_else(gone)?;
        match piece.kind {
            PieceKind::Archive => {
                let a = log
                    .archives
                    .iter()
                    .find(|a| piece.matches_header(&a.header))
                    .ok_or_else(gone)?;
                Ok(PieceReader {
                    file: File::open(&a.path)?,
                    offset: 0,
                    len: a.size,
                })
            }
            PieceKind::Current => {
                if piece.epoch != log.state.epoch
                    || piece.start < log.state.base
                    || piece.end > log.end()
                {
                    return Err(gone());
                }
                Ok(PieceReader {
                    file: File::open(self.log_path(&piece.log_type))?,
                    offset: piece.start - log.state.base,
                    len: piece.end - piece.start,
                })
            }
        }
    }

    /// The master has stored `pieces` durably (one acknowledgement): let
    /// them go, with as few fsyncs as order allows.
    ///
    /// An acknowledged archive is deleted. An acknowledged current range
    /// moves `acked`; the state is appended to the journal but not fsynced
    /// (if that is lost, the range is offered again and the master, which
    /// stores only beyond its own committed offset, acknowledges it again
    /// without storing it twice): a pull of small deltas costs no fsync
    /// here. A log acknowledged to its end and at least [`EMPTY_AT`] long
    /// is replaced by an empty one (a smaller one is kept: module doc). For
    /// those:
    ///
    /// 1. the state with the new `acked`s is made durable (one write for
    ///    all types);
    /// 2. each log is replaced by an empty file (rename);
    /// 3. before the next append, the directory is fsynced (the renames
    ///    are durable) and then the state with the new `base`s
    ///    (`sync_emptied_logs`). Until then every state written keeps the
    ///    old `base` of those logs.
    ///
    /// A crash after 1 finds the old log fully acknowledged; after 2, an
    /// empty log with `acked` beyond it, and recovery moves `base` there.
    /// Nothing is appended before 3, so new bytes can never be taken for
    /// old ones, even after a power loss. A pull that empties logs costs
    /// one fdatasync here (the state journal) and two before the next
    /// append (the directory, the state), however many types it empties.
    pub fn release_all(&self, pieces: &[PieceRef]) -> io::Result<()> {
        let mut types = self.lock();
        let mut emptying: Vec<String> = Vec::new();
        let mut acked_moved = false;
        let mut first_error: Option<io::Error> = None;
        for piece in pieces {
            let Some(log) = types.get(&piece.log_type) else {
                continue;
            };
            let name = piece.log_type.as_str();
            match piece.kind {
                PieceKind::Archive => {
                    if let Some(i) = log
                        .archives
                        .iter()
                        .position(|a| piece.matches_header(&a.header))
                    {
                        let removed = self.ensure_state_saved(&types).and_then(|()| {
                            let log = types.get_mut(name).expect("found above");
                            let archive = log.archives.remove(i);
                            fs::remove_file(&archive.path)
                        });
                        if let Err(e) = removed {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                PieceKind::Current => {
                    // An ack for a range since rotated away changes nothing
                    // here: the archive holding it is offered, and the
                    // master skips the part it already has.
                    if piece.epoch == log.state.epoch
                        && piece.end > log.state.acked
                        && piece.end <= log.end()
                    {
                        let log = types.get_mut(name).expect("found above");
                        log.state.acked = piece.end;
                        if log.state.acked == log.end() && log.len >= self.empty_at {
                            if !emptying.iter().any(|n| n == name) {
                                emptying.push(name.to_string());
                            }
                        } else {
                            acked_moved = true;
                        }
                    }
                }
            }
        }
        let saved = if !emptying.is_empty() {
            self.empty_fully_acknowledged(&mut types, &emptying)
        } else if acked_moved {
            self.save_states(&types, false)
        } else {
            Ok(())
        };
        if let Err(e) = saved {
            first_error.get_or_insert(e);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Steps 1 and 2 of `release_all` for the logs in `names`.
    fn empty_fully_acknowledged(&self, types: &mut Types, names: &[String]) -> io::Result<()> {
        self.save_states(types, true)?;
        crate::failpoint::hit("logstore.mid_release");
        for n in names {
            let Some(log) = types.get_mut(n) else {
                continue;
            };
            storage::replace_with_empty_unsynced(&self.log_path(n))?;
            log.file = None;
            log.len = 0;
            log.unsynced_base.get_or_insert(log.state.base);
            log.state.base = log.state.acked;
        }
        Ok(())
    }

    /// Empty fully acknowledged logs only from `bytes` on (0, the default,
    /// empties every one; see [`EMPTY_AT`]).
    pub fn set_empty_at(&mut self, bytes: u64) {
        self.empty_at = bytes;
    }

    /// Bytes not yet pulled, over all types.
    pub fn backlog(&self) -> u64 {
        Self::backlog_locked(&self.lock())
    }
}

/// A type new to this agent (no state, no archive) whose `TYPE.log`
/// exists: the agent writes a type's state before its first line, so it
/// did not write that file. Taking it would ship someone else's file and
/// empty it, so the type is refused with a way out.
fn refuse_foreign_log(name: &str, log_path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(log_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(storage::with_path(e, log_path)),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists but this agent did not write it (it is not in its state \
                 in .pihealth/), so collector {name:?} cannot use it. If a pihealth master \
                 older than this one shares the directory, start the master once: it moves \
                 its alarms.log and events.log into .master/. Otherwise move the file away \
                 or rename the collector",
                log_path.display()
            ),
        )),
    }
}

/// The per-type state files of earlier versions (`TYPE.state`), and their
/// paths, to be removed once [`STATE_FILE`] is durable.
fn read_legacy_states(state_dir: &Path) -> io::Result<(States, Vec<PathBuf>)> {
    let mut states = States::new();
    let mut paths = Vec::new();
    for entry in fs::read_dir(state_dir)? {
        let path = entry?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|&n| n != STATE_FILE)
            .and_then(|n| n.strip_suffix(".state"))
        else {
            continue;
        };
        if crate::names::check_type_name(name).is_err() {
            continue;
        }
        if let Some(state) = storage::read_json::<TypeState>(&path)? {
            states.insert(name.to_string(), state);
        }
        paths.push(path);
    }
    Ok((states, paths))
}

fn new_epoch() -> io::Result<u64> {
    Ok(u64::from_be_bytes(crate::random::random_bytes::<8>()?))
}

fn file_len(path: &Path) -> io::Result<u64> {
    match fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(storage::with_path(e, path)),
    }
}

/// Length of the longest prefix of the first `len` bytes ending in a
/// newline, but never below `floor` (bytes already acknowledged).
fn complete_prefix_len(path: &Path, len: u64, floor: u64) -> io::Result<u64> {
    if len == 0 || len <= floor {
        return Ok(len);
    }
    let mut file = File::open(path)?;
    // Scan back in blocks for the last newline.
    let mut end = len;
    let mut buf = vec![0u8; 8192];
    while end > floor {
        let start = end.saturating_sub(buf.len() as u64).max(floor);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(floor)
}

/// The state of a type without one: continue the stream of any archive
/// left, else start a new one.
fn state_from_archives(archives: &[Archive]) -> io::Result<TypeState> {
    let epoch = match archives.last() {
        Some(a) => a.header.epoch,
        None => new_epoch()?,
    };
    let base = archived_end(archives, epoch);
    Ok(TypeState {
        epoch,
        base,
        acked: base,
    })
}

/// Where the archives of stream `epoch` end (0 without any).
fn archived_end(archives: &[Archive], epoch: u64) -> u64 {
    archives
        .iter()
        .filter(|a| a.header.epoch == epoch)
        .map(|a| a.header.end)
        .max()
        .unwrap_or(0)
}

/// A record torn by a crash mid-write was never completely produced: cut
/// the log of `len` bytes back to its last complete line (not below
/// `floor`, the acknowledged part); its new length.
fn cut_torn_record(name: &str, log_path: &Path, len: u64, floor: u64) -> io::Result<u64> {
    let keep = complete_prefix_len(log_path, len, floor)?;
    if keep < len {
        log::warn!("{name}: removing a torn record of {} bytes", len - keep);
        OpenOptions::new()
            .write(true)
            .open(log_path)?
            .set_len(keep)?;
    }
    Ok(keep)
}

/// Rewrite `path` without its first `cut` bytes (only after a crash).
fn drop_prefix(path: &Path, cut: u64) -> io::Result<()> {
    let mut source = File::open(path)?;
    source.seek(SeekFrom::Start(cut))?;
    let tmp = storage::temp_path(path);
    let mut out = File::create(&tmp)?;
    io::copy(&mut source, &mut out)?;
    storage::fsync(&out)?;
    fs::rename(&tmp, path)?;
    storage::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn unique_archive_path(dir: &Path, log_type: &str) -> io::Result<PathBuf> {
    let mut now = chrono::Utc::now();
    loop {
        let path = dir.join(archive_name(log_type, now));
        if !path.exists() {
            return Ok(path);
        }
        now += chrono::Duration::microseconds(1);
    }
}

/// The UTC time in an archive's name. Parsed for its type, since type names
/// may contain `-` themselves (`net-io-<time>.log.gz`): splitting at the
/// first `-` made such a type's archives look newest, so the cap dropped
/// newer archives of other types first. A name that does not parse sorts
/// first, as the oldest.
fn archive_time(path: &Path, log_type: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| storage::archive_time(n, log_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;

    struct Fixture {
        _dir: tempfile::TempDir,
        log: PathBuf,
        backup: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let backup = dir.path().join("logbackup");
        Fixture {
            _dir: dir,
            log,
            backup,
        }
    }

    fn open(f: &Fixture, rotate: u64, cap: u64) -> LogStore {
        LogStore::open(&f.log, &f.backup, rotate, cap, &["cpu".to_string()]).unwrap()
    }

    /// Read a piece's bytes as the data server would, decompressing archives.
    fn read_piece(store: &LogStore, p: &PendingPiece) -> Vec<u8> {
        let mut r = store.open_piece(&p.piece).unwrap();
        r.file.seek(SeekFrom::Start(r.offset)).unwrap();
        let mut raw = Vec::new();
        r.file.take(r.len).read_to_end(&mut raw).unwrap();
        match p.piece.kind {
            PieceKind::Current => raw,
            PieceKind::Archive => {
                let mut out = Vec::new();
                MultiGzDecoder::new(&raw[..]).read_to_end(&mut out).unwrap();
                out
            }
        }
    }

    /// Pull everything like a master that stores only beyond `have`.
    fn drain(store: &LogStore, have: &mut u64, sink: &mut Vec<u8>) {
        let (pending, _) = store.pending();
        for p in pending {
            let bytes = read_piece(store, &p);
            assert_eq!(bytes.len() as u64, p.piece.end - p.piece.start);
            if p.piece.end > *have {
                let skip = (*have - p.piece.start.min(*have)) as usize;
                sink.extend_from_slice(&bytes[skip.min(bytes.len())..]);
                *have = p.piece.end;
            }
            store.release_all(std::slice::from_ref(&p.piece)).unwrap();
        }
    }

    #[test]
    fn append_rotate_offer_release() {
        let f = fixture();
        let store = open(&f, 100, 1 << 20);
        let mut expected = Vec::new();
        for i in 0..50 {
            let line = format!("t {i:04} normal\n");
            expected.extend_from_slice(line.as_bytes());
            store.append("cpu", line.as_bytes()).unwrap();
        }
        let (pending, more) = store.pending();
        assert!(!more);
        assert!(
            pending
                .iter()
                .filter(|p| p.piece.kind == PieceKind::Archive)
                .count()
                >= 5
        );
        // Archives are plain gzip: readable by zcat, stream range in the comment.
        let first = pending[0].clone();
        let (mut have, mut got) = (0, Vec::new());
        drain(&store, &mut have, &mut got);
        assert_eq!(got, expected);
        assert_eq!(store.backlog(), 0);
        // Only unpulled data stays on the agent.
        assert_eq!(fs::metadata(f.log.join("cpu.log")).unwrap().len(), 0);
        assert!(store.pending().0.is_empty());
        assert_eq!(fs::read_dir(&f.backup).unwrap().count(), 0);
        assert!(
            store.open_piece(&first.piece).is_err(),
            "released piece is gone"
        );
    }

    fn state_file(f: &Fixture) -> PathBuf {
        f.log.join(".pihealth").join(STATE_FILE)
    }

    fn saved_state(f: &Fixture, log_type: &str) -> TypeState {
        let states: States = Journal::read(&state_file(f)).unwrap().unwrap();
        states[log_type]
    }

    #[test]
    fn reopen_keeps_position_and_epoch() {
        let f = fixture();
        let mut have = 0;
        let mut got = Vec::new();
        {
            let store = open(&f, 1 << 20, 1 << 20);
            store.append("cpu", b"a normal\n").unwrap();
            drain(&store, &mut have, &mut got);
            store.append("cpu", b"b normal\n").unwrap();
        }
        let store = open(&f, 1 << 20, 1 << 20);
        let (pending, _) = store.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].piece.start, 9);
        drain(&store, &mut have, &mut got);
        assert_eq!(got, b"a normal\nb normal\n");
    }

    #[test]
    fn per_type_state_files_of_earlier_versions_are_taken_over() {
        let f = fixture();
        let (mut have, mut got) = (0, Vec::new());
        let epoch = {
            let store = open(&f, 1 << 20, 1 << 20);
            store.append("cpu", b"a normal\n").unwrap();
            drain(&store, &mut have, &mut got);
            store.append("cpu", b"b normal\n").unwrap();
            saved_state(&f, "cpu").epoch
        };
        // What an earlier version left: `cpu.state` and no `logstore.state`.
        let legacy = f.log.join(".pihealth/cpu.state");
        storage::write_json_atomic(&legacy, &saved_state(&f, "cpu"), true).unwrap();
        fs::remove_file(state_file(&f)).unwrap();
        let store = open(&f, 1 << 20, 1 << 20);
        assert!(
            !legacy.exists(),
            "the old file goes once the new one is durable"
        );
        assert_eq!(saved_state(&f, "cpu").epoch, epoch);
        let (pending, _) = store.pending();
        assert_eq!((pending[0].piece.start, pending[0].piece.epoch), (9, epoch));
        drain(&store, &mut have, &mut got);
        assert_eq!(got, b"a normal\nb normal\n");
    }

    /// Issue 12 item 1: a master sharing `log/` keeps files there an
    /// earlier agent took as log types, emptied and shipped.
    #[test]
    fn files_the_agent_did_not_write_are_left_alone() {
        let f = fixture();
        fs::create_dir_all(&f.log).unwrap();
        let master_line = "2026-11-21T10:31:09+00:00 pi1 cpu warning a1 hot\n";
        fs::write(f.log.join("alarms.log"), master_line).unwrap();
        fs::write(
            f.log.join("events.log"),
            "2026-11-21T10:31:09+00:00 pi1 up\n",
        )
        .unwrap();
        // A master's host directory (the name rule keeps `*.log` hosts
        // out; this one proves the agent would not look even so).
        fs::create_dir_all(f.log.join("pi9.log")).unwrap();
        let store = open(&f, 1 << 20, 1 << 20);
        store.append("cpu", b"a normal\n").unwrap();
        let (pending, _) = store.pending();
        let types: Vec<&str> = pending.iter().map(|p| p.piece.log_type.as_str()).collect();
        assert_eq!(types, ["cpu"]);
        drop(store);
        let store = open(&f, 1 << 20, 1 << 20);
        assert_eq!(store.pending().0.len(), 1);
        assert_eq!(
            fs::read_to_string(f.log.join("alarms.log")).unwrap(),
            master_line
        );
        assert!(f.log.join("events.log").exists());
        let states: States = Journal::read(&state_file(&f)).unwrap().unwrap();
        assert_eq!(states.keys().collect::<Vec<_>>(), ["cpu"]);
    }

    /// An older agent could record a master's `alarms.log` as its own; while that master has not moved its files, they stay its own.
    #[test]
    fn an_older_agents_claim_on_a_masters_file_is_dropped() {
        let f = fixture();
        {
            let store =
                LogStore::open(&f.log, &f.backup, 1 << 20, 1 << 20, &["alarms".to_string()])
                    .unwrap();
            store
                .append("alarms", b"as the old agent saw it\n")
                .unwrap();
        }
        fs::write(f.log.join("alarms.log"), "master line\n").unwrap();
        fs::write(f.log.join("registry.json"), "{}").unwrap();
        let store = open(&f, 1 << 20, 1 << 20);
        store.append("cpu", b"a normal\n").unwrap();
        let types: Vec<String> = store
            .pending()
            .0
            .into_iter()
            .map(|p| p.piece.log_type)
            .collect();
        assert_eq!(types, ["cpu"]);
        assert_eq!(
            fs::read_to_string(f.log.join("alarms.log")).unwrap(),
            "master line\n"
        );
    }

    /// A configured type whose file someone else wrote is refused with a
    /// way out, not taken.
    #[test]
    fn a_collector_named_like_a_foreign_file_is_refused_clearly() {
        let f = fixture();
        fs::create_dir_all(&f.log).unwrap();
        fs::write(f.log.join("events.log"), "x\n").unwrap();
        let e = LogStore::open(&f.log, &f.backup, 1 << 20, 1 << 20, &["events".to_string()])
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("events.log") && e.contains("did not write"),
            "{e}"
        );
        assert_eq!(fs::read_to_string(f.log.join("events.log")).unwrap(), "x\n");
        // Appending to an unconfigured type is refused the same way.
        let store = open(&f, 1 << 20, 1 << 20);
        assert!(store.append("events", b"y normal\n").is_err());
        assert_eq!(fs::read_to_string(f.log.join("events.log")).unwrap(), "x\n");
    }

    /// Types an agent wrote stay its own after their collector leaves the
    /// config (data still to ship), also from the per-type state files of
    /// earlier versions.
    #[test]
    fn types_in_the_state_are_still_adopted_when_no_longer_configured() {
        let f = fixture();
        {
            let store =
                LogStore::open(&f.log, &f.backup, 1 << 20, 1 << 20, &["old".to_string()]).unwrap();
            store.append("old", b"a normal\n").unwrap();
        }
        let legacy = f.log.join(".pihealth/old.state");
        storage::write_json_atomic(&legacy, &saved_state(&f, "old"), true).unwrap();
        fs::remove_file(state_file(&f)).unwrap();
        let store = open(&f, 1 << 20, 1 << 20);
        let mut got = Vec::new();
        drain(&store, &mut 0, &mut got);
        assert_eq!(got, b"a normal\n");
    }

    #[test]
    fn an_emptied_log_keeps_its_old_base_on_disk_until_the_next_append() {
        let f = fixture();
        let store = open(&f, 1 << 20, 1 << 20);
        let big = [b"a".repeat(EMPTY_AT as usize), b" normal\n".to_vec()].concat();
        let n = big.len() as u64;
        store.append("cpu", &big).unwrap();
        let (mut have, mut got) = (0, Vec::new());
        drain(&store, &mut have, &mut got);
        // Emptied, the rename not yet durable: the file says old base, new
        // acked, which recovery reads right whether or not the rename
        // survives a power loss.
        let s = saved_state(&f, "cpu");
        assert_eq!((s.base, s.acked), (0, n));
        assert_eq!(fs::metadata(f.log.join("cpu.log")).unwrap().len(), 0);
        store.append("cpu", b"b normal\n").unwrap();
        let s = saved_state(&f, "cpu");
        assert_eq!((s.base, s.acked), (n, n));
        drop(store);
        let store = open(&f, 1 << 20, 1 << 20);
        drain(&store, &mut have, &mut got);
        assert_eq!(got, [big, b"b normal\n".to_vec()].concat());
    }

    /// Issue 18, with emptying deferred: releasing a pull of six small
    /// deltas flushes nothing; the logs keep their acknowledged bytes
    /// (never offered again, across a restart too) until they pass
    /// `EMPTY_AT`.
    #[test]
    fn a_pull_of_small_deltas_is_released_without_an_fsync() {
        let f = fixture();
        let types = ["cpu", "mem", "disk", "proc", "users", "sysinfo"];
        let (mut have, mut got) = (0, Vec::new());
        for round in 0..50 {
            let mut store = open(&f, 1 << 20, 1 << 20);
            store.set_empty_at(EMPTY_AT);
            for t in types {
                store
                    .append(t, format!("{t} {round} normal\n").as_bytes())
                    .unwrap();
            }
            let (pending, _) = store.pending();
            assert_eq!(pending.len(), 6, "round {round}: only the new lines");
            let pieces: Vec<PieceRef> = pending.iter().map(|p| p.piece.clone()).collect();
            let before = storage::thread_syncs();
            store.release_all(&pieces).unwrap();
            assert_eq!(storage::thread_syncs(), before, "round {round}");
            assert!(store.pending().0.is_empty());
        }
        let store = open(&f, 1 << 20, 1 << 20);
        assert!(store.pending().0.is_empty(), "released bytes came back");
        store.append("cpu", b"last normal\n").unwrap();
        drain(&store, &mut have, &mut got);
        assert_eq!(got, b"last normal\n");
    }

    #[test]
    fn lost_ack_state_only_causes_a_harmless_reoffer() {
        let f = fixture();
        let store = open(&f, 1 << 20, 1 << 20);
        store.append("cpu", b"a normal\n").unwrap();
        let (pending, _) = store.pending();
        // A line arrives between the offer and the ack: a partial ack.
        store.append("cpu", b"b normal\n").unwrap();
        let state_before = fs::read(state_file(&f)).unwrap();
        store
            .release_all(std::slice::from_ref(&pending[0].piece))
            .unwrap();
        drop(store);
        // Power loss undid the ack's state write.
        fs::write(state_file(&f), state_before).unwrap();
        let store = open(&f, 1 << 20, 1 << 20);
        let (again, _) = store.pending();
        assert_eq!(again[0].piece.start, pending[0].piece.start);
        assert_eq!(again[0].piece.end, 18);
    }

    #[test]
    fn interrupted_rotation_is_finished_on_start() {
        // Simulate each crash point of a rotation by building the on-disk
        // state by hand, then check recovery offers each byte exactly once.
        for crash_after in ["archive", "replace"] {
            let f = fixture();
            let data = b"one normal\ntwo normal\n";
            {
                let store = open(&f, 1 << 20, 1 << 20);
                store.append("cpu", data).unwrap();
            }
            let state = saved_state(&f, "cpu");
            let header = ArchiveHeader {
                log_type: "cpu".into(),
                epoch: state.epoch,
                start: 0,
                end: data.len() as u64,
            };
            write_gzip_atomic(
                &f.backup.join(archive_name("cpu", chrono::Utc::now())),
                &header,
                &mut &data[..],
            )
            .unwrap();
            if crash_after == "replace" {
                fs::write(f.log.join("cpu.log"), b"").unwrap();
            }
            let store = open(&f, 1 << 20, 1 << 20);
            store.append("cpu", b"three normal\n").unwrap();
            let (mut have, mut got) = (0, Vec::new());
            drain(&store, &mut have, &mut got);
            assert_eq!(
                got, b"one normal\ntwo normal\nthree normal\n",
                "crash after {crash_after}"
            );
        }
    }

    #[test]
    fn torn_record_is_cut_on_start() {
        let f = fixture();
        {
            let store = open(&f, 1 << 20, 1 << 20);
            store.append("cpu", b"whole normal\n").unwrap();
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(f.log.join("cpu.log"))
            .unwrap();
        file.write_all(b"half a rec").unwrap();
        let store = open(&f, 1 << 20, 1 << 20);
        let (mut have, mut got) = (0, Vec::new());
        drain(&store, &mut have, &mut got);
        assert_eq!(got, b"whole normal\n");
    }

    /// 192 incompressible hex digits (xorshift from `seed`), so archives
    /// are as big as the log they hold.
    fn noise(seed: &mut u64) -> String {
        (0..12)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                format!("{seed:016x}")
            })
            .collect()
    }

    #[test]
    fn backlog_cap_drops_oldest_archives_and_says_so() {
        let f = fixture();
        let store = open(&f, 2048, 4096);
        // Incompressible lines, so archives are as big as the log they hold.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut drops = Vec::new();
        for _ in 0..200 {
            let noise = noise(&mut seed);
            drops.extend(
                store
                    .append("cpu", format!("{noise} normal\n").as_bytes())
                    .unwrap(),
            );
        }
        assert!(!drops.is_empty());
        let lost: u64 = drops.iter().map(|d| d.bytes).sum();
        assert!(lost > 0);
        assert!(store.backlog() <= 4096 + 2048);
        // The loss is written into the log itself.
        let (mut have, mut got) = (0, Vec::new());
        drain(&store, &mut have, &mut got);
        let text = String::from_utf8(got).unwrap();
        assert!(text.contains("pihealth dropped"), "{text}");
    }

    #[test]
    fn backlog_cap_drops_the_oldest_archive_even_of_a_type_with_a_dash() {
        // Found by tests/logstore_model.rs: `net-io-<time>` was read as time
        // `io-<time>`, which sorts after every real time.
        let f = fixture();
        let store = LogStore::open(
            &f.log,
            &f.backup,
            1024,
            4096,
            &["cpu".to_string(), "net-io".to_string()],
        )
        .unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut noise = || -> Vec<u8> { format!("{}\n", noise(&mut seed)).into_bytes() };
        let archives = |store: &LogStore, ty: &str| {
            store
                .pending()
                .0
                .iter()
                .filter(|p| p.piece.log_type == ty && p.piece.kind == PieceKind::Archive)
                .count()
        };
        // First an archive of `net-io`, then newer ones of `cpu` until the cap bites.
        while archives(&store, "net-io") == 0 {
            assert!(store.append("net-io", &noise()).unwrap().is_empty());
        }
        let drops = loop {
            let drops = store.append("cpu", &noise()).unwrap();
            if !drops.is_empty() {
                break drops;
            }
        };
        assert_eq!(drops[0].log_type, "net-io", "{drops:?}");
        assert_eq!(archives(&store, "net-io"), 0);
    }

    #[test]
    fn piece_read_survives_rotation() {
        let f = fixture();
        let store = open(&f, 1 << 20, 1 << 20);
        store.append("cpu", b"first normal\n").unwrap();
        let (pending, _) = store.pending();
        let mut reader = store.open_piece(&pending[0].piece).unwrap();
        // Rotation happens while the piece is being sent.
        {
            let mut types = store.lock();
            store.rotate(&mut types, "cpu").unwrap();
        }
        store.append("cpu", b"second normal\n").unwrap();
        let mut got = Vec::new();
        reader.file.seek(SeekFrom::Start(reader.offset)).unwrap();
        (&mut reader.file)
            .take(reader.len)
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, b"first normal\n");
        // The stale current piece is no longer offered or openable.
        assert!(store.open_piece(&pending[0].piece).is_err());
    }
}
