//! Silences: `pihealth silence HOST [TYPE] --for 2h --reason "…"` holds
//! back the alarms of one host (or one host and type) for a while. A
//! silenced alarm is still stored in `alarms.log` and shown everywhere
//! alarms are shown, marked silenced; it does not run `alarm_command` and
//! is not forwarded to Alertmanager.
//!
//! Files (in `log/.master/`, `super::files`):
//! - `silences.json`: the silences, written only by `pihealth silence`
//!   (under the flock `.silences.lock`, so two operators at once do not
//!   lose each other's change), replaced atomically and fsynced: the
//!   master reads the old or the new file, never a mix, and a silence the
//!   command reported as added survives a power loss. The master re-reads
//!   it when it changed (size or modification time), at each alarm.
//!   Expired silences stop applying at once and are dropped at the next
//!   write.
//! - `silenced.log`: `ALARM_ID SILENCE_ID REASON` for each stored alarm a
//!   silence held back, appended and fsynced **before** the alarm's line
//!   in `alarms.log`. So once an alarm is stored, whether it was silenced
//!   is stored too: a master that crashes right after storing it does not
//!   run its command at the next start (`AlarmLog::open`), and the
//!   Alertmanager forwarder skips it. A crash between the two appends
//!   leaves a note for an alarm that is not stored; the agent re-sends the
//!   alarm (never acknowledged) and it is judged again: a second note with
//!   the same id is harmless.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::files::MasterFiles;
use crate::storage;

/// Longest silence `pihealth silence --for` accepts.
pub(crate) const MAX_SILENCE: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);
/// Longest reason, in characters.
pub(crate) const MAX_REASON: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub(crate) id: u64,
    pub(crate) host: String,
    /// `None`: every type of the host.
    #[serde(rename = "type")]
    pub(crate) log_type: Option<String>,
    /// Unix milliseconds.
    pub(crate) from_ms: i64,
    pub(crate) until_ms: i64,
    pub(crate) reason: String,
}

impl Silence {
    pub(crate) fn active(&self, now_ms: i64) -> bool {
        self.from_ms <= now_ms && now_ms < self.until_ms
    }

    pub(crate) fn matches(&self, host: &str, log_type: &str) -> bool {
        self.host == host && self.log_type.as_deref().is_none_or(|t| t == log_type)
    }

    pub(crate) fn until_text(&self) -> String {
        local_text(self.until_ms)
    }
}

fn local_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SilenceFile {
    pub(crate) next_id: u64,
    pub(crate) silences: Vec<Silence>,
}

impl SilenceFile {
    pub(crate) fn load(path: &Path) -> io::Result<SilenceFile> {
        Ok(storage::read_json(path)?.unwrap_or_default())
    }

    /// The first active silence covering (host, type).
    pub(crate) fn covering(&self, host: &str, log_type: &str, now_ms: i64) -> Option<&Silence> {
        self.silences
            .iter()
            .find(|s| s.active(now_ms) && s.matches(host, log_type))
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One line of text a silence reason may be: control characters become
/// spaces (it goes into a line-oriented file).
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The operator's side (`pihealth silence`): read-modify-write under the
/// lock.
pub(crate) struct SilenceStore {
    files: MasterFiles,
}

impl SilenceStore {
    pub(crate) fn new(log_dir: &Path) -> SilenceStore {
        SilenceStore {
            files: MasterFiles::find(log_dir),
        }
    }

    pub(crate) fn list(&self) -> io::Result<Vec<Silence>> {
        let now = now_ms();
        let mut list = SilenceFile::load(&self.files.silences())?.silences;
        list.retain(|s| s.until_ms > now);
        Ok(list)
    }

    fn change<T>(
        &self,
        f: impl FnOnce(&mut SilenceFile) -> Result<T, SilenceError>,
    ) -> Result<T, SilenceError> {
        let in_file = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SilenceError::File { path, source }
        };
        let dir = self.files.dir();
        std::fs::create_dir_all(dir).map_err(in_file(dir))?;
        let lock_path = self.files.silences_lock();
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(in_file(&lock_path))?;
        lock.lock().map_err(in_file(&lock_path))?;
        let path = self.files.silences();
        let mut file = SilenceFile::load(&path).map_err(SilenceError::Load)?;
        let now = now_ms();
        file.silences.retain(|s| s.until_ms > now);
        let out = f(&mut file)?;
        storage::write_json_atomic(&path, &file, true).map_err(in_file(&path))?;
        Ok(out)
    }

    /// Add a silence from now for `duration`; the stored silence.
    pub(crate) fn add(
        &self,
        host: &str,
        log_type: Option<&str>,
        duration: std::time::Duration,
        reason: &str,
    ) -> Result<Silence, SilenceError> {
        let silence = check_new(host, log_type, duration, reason)?;
        self.change(|file| {
            file.next_id = file.next_id.max(1);
            let mut s = silence;
            s.id = file.next_id;
            file.next_id += 1;
            file.silences.push(s.clone());
            Ok(s)
        })
    }

    /// Remove silence `id`; an error if there is none (or it expired).
    pub(crate) fn remove(&self, id: u64) -> Result<Silence, SilenceError> {
        self.change(|file| {
            let at = file
                .silences
                .iter()
                .position(|s| s.id == id)
                .ok_or(SilenceError::NotInForce(id))?;
            Ok(file.silences.remove(at))
        })
    }
}

/// What is wrong with a silence an operator asked for, or why it could not
/// be stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SilenceError {
    #[error("HOST {host:?}: {why}")]
    Host { host: String, why: String },
    #[error("TYPE {log_type:?}: {why}")]
    Type { log_type: String, why: String },
    #[error("--for: expected a duration like 30m, 2h, 1h30m or 7d, got {0:?}")]
    BadDuration(String),
    #[error(
        "--for: expected a duration above zero and at most 366 days, like 30m, 2h or 7d, got {}",
        humantime::format_duration(*.0)
    )]
    DurationOutOfRange(std::time::Duration),
    #[error("--reason: expected a reason (it is shown with every alarm the silence holds back)")]
    NoReason,
    #[error("--reason: expected at most {} characters", MAX_REASON)]
    LongReason,
    #[error("no silence #{0} in force (see `pihealth silence --list`)")]
    NotInForce(u64),
    /// `silences.json` does not read (the message names it).
    #[error(transparent)]
    Load(io::Error),
    #[error("{}: {source}", .path.display())]
    File { path: PathBuf, source: io::Error },
}

/// Check what an operator typed; the silence (id 0) or why not.
pub(crate) fn check_new(
    host: &str,
    log_type: Option<&str>,
    duration: std::time::Duration,
    reason: &str,
) -> Result<Silence, SilenceError> {
    crate::names::check_host_name(host).map_err(|why| SilenceError::Host {
        host: host.to_string(),
        why: why.to_string(),
    })?;
    if let Some(t) = log_type {
        crate::names::check_type_name(t).map_err(|why| SilenceError::Type {
            log_type: t.to_string(),
            why: why.to_string(),
        })?;
    }
    if duration.is_zero() || duration > MAX_SILENCE {
        return Err(SilenceError::DurationOutOfRange(duration));
    }
    let reason = one_line(reason.trim());
    if reason.trim().is_empty() {
        return Err(SilenceError::NoReason);
    }
    if reason.chars().count() > MAX_REASON {
        return Err(SilenceError::LongReason);
    }
    let from_ms = now_ms();
    Ok(Silence {
        id: 0,
        host: host.to_string(),
        log_type: log_type.map(str::to_string),
        from_ms,
        until_ms: from_ms.saturating_add(duration.as_millis() as i64),
        reason,
    })
}

/// Parse `--for`: `30m`, `2h`, `1h30m`, `7d`.
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, SilenceError> {
    humantime::parse_duration(text.trim()).map_err(|_| SilenceError::BadDuration(text.to_string()))
}

/// (inode, size, modified time) of a file: each write of `silences.json`
/// is a rename, so a new inode, and a change is seen even within the
/// timestamps' resolution.
type FileStamp = (u64, u64, SystemTime);

/// The master's side: which silence, if any, covers an alarm now. Re-reads
/// `silences.json` when it changed.
pub(crate) struct SilenceCheck {
    path: PathBuf,
    /// The stamp of the file read, and what it said.
    cached: Mutex<(Option<FileStamp>, SilenceFile)>,
}

impl SilenceCheck {
    pub(crate) fn new(log_dir: &Path) -> SilenceCheck {
        SilenceCheck {
            path: MasterFiles::new(log_dir).silences(),
            cached: Mutex::new((None, SilenceFile::default())),
        }
    }

    /// The silence covering (host, type) now, if any. A silence file that
    /// cannot be read silences nothing (logged): alarms reach people.
    pub(crate) fn covering(&self, host: &str, log_type: &str) -> Option<Silence> {
        let mut cached = crate::sync::lock(&self.cached);
        let stamp = std::fs::metadata(&self.path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (
                m.ino(),
                m.len(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            )
        });
        if stamp != cached.0 {
            let file = match SilenceFile::load(&self.path) {
                Ok(file) => file,
                Err(e) => {
                    log::error!("{e}; no silence applies until it is fixed");
                    SilenceFile::default()
                }
            };
            *cached = (stamp, file);
        }
        cached.1.covering(host, log_type, now_ms()).cloned()
    }
}

/// `silenced.log`: the ids of silenced alarms and why.
pub(crate) fn read_silenced(path: &Path) -> io::Result<HashMap<String, String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(storage::with_path(e, path)),
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let (id, rest) = l.split_once(' ')?;
            Some((id.to_string(), rest.to_string()))
        })
        .collect())
}

/// The `silenced.log` line for an alarm `silence` holds back.
pub(crate) fn silenced_line(alarm_id: &str, silence: &Silence) -> String {
    format!(
        "{alarm_id} #{} until {}: {}\n",
        silence.id,
        silence.until_text(),
        one_line(&silence.reason)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn silences_cover_their_host_and_type_until_they_expire() {
        let s = check_new("pi1", Some("cpu"), Duration::from_secs(60), "reboot").unwrap();
        let now = s.from_ms;
        assert!(s.active(now) && s.matches("pi1", "cpu"));
        assert!(!s.matches("pi1", "disk") && !s.matches("pi2", "cpu"));
        assert!(!s.active(now + 60_000), "expired");
        let all = check_new("pi1", None, Duration::from_secs(60), "r").unwrap();
        assert!(all.matches("pi1", "disk") && all.matches("pi1", "host"));
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        let h = Duration::from_secs(3600);
        assert!(check_new("../x", None, h, "r")
            .unwrap_err()
            .to_string()
            .contains("HOST"));
        assert!(check_new("pi1", Some("a b"), h, "r")
            .unwrap_err()
            .to_string()
            .contains("TYPE"));
        assert!(check_new("pi1", None, h, "  \n")
            .unwrap_err()
            .to_string()
            .contains("--reason"));
        assert!(check_new("pi1", None, Duration::ZERO, "r")
            .unwrap_err()
            .to_string()
            .contains("--for"));
        assert!(check_new("pi1", None, MAX_SILENCE * 2, "r").is_err());
        assert!(parse_duration("soon")
            .unwrap_err()
            .to_string()
            .contains("--for"));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn operators_adding_at_once_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let store = SilenceStore::new(&path);
                    for i in 0..5 {
                        store
                            .add(
                                &format!("pi{t}"),
                                None,
                                Duration::from_secs(60),
                                &format!("r{i}"),
                            )
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut ids: Vec<u64> = SilenceStore::new(dir.path())
            .list()
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        ids.sort();
        assert_eq!(ids, (1..=80).collect::<Vec<u64>>());
    }

    #[test]
    fn added_listed_removed_and_seen_by_the_master() {
        let dir = tempfile::tempdir().unwrap();
        let store = SilenceStore::new(dir.path());
        let check = SilenceCheck::new(dir.path());
        assert!(check.covering("pi1", "cpu").is_none());
        let a = store
            .add("pi1", None, Duration::from_secs(3600), "maintenance")
            .unwrap();
        let b = store
            .add("pi2", Some("disk"), Duration::from_secs(60), "x")
            .unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        assert_eq!(store.list().unwrap().len(), 2);
        assert_eq!(check.covering("pi1", "cpu").unwrap().id, 1);
        assert_eq!(check.covering("pi2", "disk").unwrap().id, 2);
        assert!(check.covering("pi2", "cpu").is_none());
        store.remove(1).unwrap();
        assert!(store.remove(1).unwrap_err().to_string().contains("#1"));
        assert!(check.covering("pi1", "cpu").is_none());
        // Ids are never reused.
        assert_eq!(
            store
                .add("pi1", None, Duration::from_secs(5), "y")
                .unwrap()
                .id,
            3
        );
        let line = silenced_line("abc", &b);
        let silenced = read_silenced(&dir.path().join("x")).unwrap();
        assert!(silenced.is_empty());
        assert!(line.starts_with("abc #2 until "), "{line}");
    }
}
