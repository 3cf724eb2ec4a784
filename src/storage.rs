//! File-system building blocks shared by agent and master: atomic state
//! files, counted fsyncs, directory syncs, temp-file naming, emptying by
//! rename, and the archive format both sides share (names, the gzip header
//! comment that carries a stream range, `write_gzip_atomic`).
//!
//! It knows nothing of hosts, pulls or the wire: the protocol compares its
//! pieces with an `ArchiveHeader` (`PieceRef::matches_header`), not the
//! reverse.
//!
//! Crash safety: every replacing write goes to a hidden `.NAME.tmp`, is
//! fsynced, renamed over the target and the directory fsynced, so a crash
//! leaves the old file or the new one, and at worst a temp file that
//! `remove_temp_files` clears at the next start.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Attach the path to an I/O error so logs say which file failed.
pub(crate) fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Hidden sibling used while a file is being written: `.NAME.tmp`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // Hidden already (`.pihealth-state`): no second dot, no `..` in names.
    let hidden = if name.starts_with('.') { "" } else { "." };
    path.with_file_name(format!("{hidden}{name}.tmp"))
}

/// Remove leftovers of writes interrupted by a crash.
pub(crate) fn remove_temp_files(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(with_path(e, dir)),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') && name.ends_with(".tmp") && path.is_file() {
            fs::remove_file(&path).map_err(|e| with_path(e, &path))?;
        }
    }
    Ok(())
}

/// fsync and fdatasync calls made through [`fdatasync`], [`fsync`] and
/// [`sync_dir`] since the process started: the storage paths of agent and
/// master count their flushes here, so a bench or a test can say exactly
/// how many a pull costs.
static SYNCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The same, made by this thread (tests running side by side).
    static THREAD_SYNCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many flushes this process has asked of the disk so far (see `SYNCS`).
pub fn syncs() -> u64 {
    SYNCS.load(Ordering::Relaxed)
}

/// How many of them this thread made.
#[cfg(test)]
pub(crate) fn thread_syncs() -> u64 {
    THREAD_SYNCS.with(|n| n.get())
}

fn count_sync() {
    SYNCS.fetch_add(1, Ordering::Relaxed);
    THREAD_SYNCS.with(|n| n.set(n.get() + 1));
}

/// `fdatasync(2)`, counted.
pub fn fdatasync(file: &File) -> io::Result<()> {
    count_sync();
    file.sync_data()
}

/// `fsync(2)`, counted.
pub fn fsync(file: &File) -> io::Result<()> {
    count_sync();
    file.sync_all()
}

/// Make renames and creations in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| fsync(&d))
        .map_err(|e| with_path(e, dir))
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(with_path(e, path)),
    }
}

/// Replace `path` atomically: readers see the old or the new file, never a
/// mix. With `durable`, the new content survives power loss once this returns.
pub(crate) fn write_json_atomic<T: Serialize>(
    path: &Path,
    value: &T,
    durable: bool,
) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &bytes, durable)
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = temp_path(path);
    let mut file = File::create(&tmp).map_err(|e| with_path(e, &tmp))?;
    file.write_all(bytes)?;
    if durable {
        install_durably(&file, &tmp, path)
    } else {
        fs::rename(&tmp, path).map_err(|e| with_path(e, path))
    }
}

/// The durable end of every replacing write: the temp file's bytes, then
/// its rename over `path`, then the directory entry. A crash before the
/// rename leaves the old file (and a temp file `remove_temp_files` clears);
/// after it, the new one.
fn install_durably(file: &File, tmp: &Path, path: &Path) -> io::Result<()> {
    fsync(file)?;
    fs::rename(tmp, path).map_err(|e| with_path(e, path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Empty `path` durably by renaming a new empty file over it, never by
/// truncating: a reader that still has the old file open (a data
/// connection sending it) keeps reading the old, unchanging bytes. The
/// empty file and the rename are on disk when this returns.
pub(crate) fn replace_with_empty(path: &Path) -> io::Result<()> {
    let tmp = temp_path(path);
    install_durably(&File::create(&tmp)?, &tmp, path)
}

/// [`replace_with_empty`] without its two flushes, for a caller that makes
/// the rename durable itself before anything depends on it (the agent's
/// log store syncs the directory once for all logs it emptied, before the
/// next append: `LogStore::release_all`). A reader of the old file keeps
/// the old bytes, as there.
pub(crate) fn replace_with_empty_unsynced(path: &Path) -> io::Result<()> {
    let fresh = temp_path(path);
    File::create(&fresh)?;
    fs::rename(&fresh, path).map_err(|e| with_path(e, path))
}

/// Append `bytes` to `path` (created if missing) and fsync before returning:
/// for records that are acknowledged to someone right after.
pub(crate) fn append_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| with_path(e, path))?;
    file.write_all(bytes)?;
    fdatasync(&file)
}

/// Cut a line-oriented file back to its last newline: a line torn by a
/// crash mid-append must not swallow the next line appended after it.
pub(crate) fn cut_torn_line(path: &Path) -> io::Result<()> {
    let mut file = match fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(with_path(e, path)),
    };
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    if text.last().is_some_and(|&b| b != b'\n') {
        let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        log::warn!(
            "{}: cutting a torn last line of {} bytes",
            path.display(),
            text.len() - keep
        );
        file.set_len(keep as u64)?;
        fdatasync(&file)?;
    }
    Ok(())
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// `TYPE-<UTC time>.log.gz`; the time has microseconds so names sort in
/// creation order even for several rotations in one second.
pub fn archive_name(log_type: &str, time: chrono::DateTime<chrono::Utc>) -> String {
    format!("{log_type}-{}.log.gz", time.format(ARCHIVE_TIME_FORMAT))
}

const ARCHIVE_TIME_FORMAT: &str = "%Y%m%dT%H%M%S%.6fZ";

/// The UTC time in an archive name of `log_type`, if the name is exactly
/// `TYPE-<time>.log.gz` (so `cpu-2-<time>` is not a `cpu` archive).
pub fn archive_time(name: &str, log_type: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let time = name
        .strip_prefix(log_type)?
        .strip_prefix('-')?
        .strip_suffix(".log.gz")?;
    chrono::NaiveDateTime::parse_from_str(time, ARCHIVE_TIME_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

pub fn is_archive_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".log.gz") && !n.starts_with('.'))
        && path.is_file()
}

/// The stream range an archive holds, kept in its gzip header comment so the
/// file stays a plain gzip file for `zcat` and `zgrep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveHeader {
    pub log_type: String,
    pub epoch: u64,
    pub start: u64,
    pub end: u64,
}

impl ArchiveHeader {
    pub fn comment(&self) -> String {
        format!(
            "pihealth type={} epoch={} start={} end={}",
            self.log_type, self.epoch, self.start, self.end
        )
    }

    pub(crate) fn parse_comment(text: &str) -> Option<ArchiveHeader> {
        let mut fields = text.strip_prefix("pihealth ")?.split(' ');
        let mut get = |key: &str| {
            fields
                .next()?
                .strip_prefix(key)?
                .strip_prefix('=')
                .map(str::to_string)
        };
        let log_type = get("type")?;
        let epoch = get("epoch")?.parse().ok()?;
        let start = get("start")?.parse().ok()?;
        let end = get("end")?.parse().ok()?;
        (start <= end).then_some(ArchiveHeader {
            log_type,
            epoch,
            start,
            end,
        })
    }

    /// Read the header comment of a gzip file (RFC 1952 §2.3). flate2
    /// parses the header (magic, method, reserved flags, the header CRC if
    /// present, fields bounded at 64 KiB) without inflating anything.
    pub fn read(path: &Path) -> io::Result<ArchiveHeader> {
        let bad = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a pihealth archive: {why}"),
            )
        };
        let mut gz = GzDecoder::new(BufReader::new(File::open(path)?));
        let Some(header) = gz.header() else {
            // The parse error is kept for the first read: a file cut short
            // inside its header says so, anything else is not gzip.
            return Err(match gz.read(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => e,
                _ => bad("not gzip"),
            });
        };
        let comment = header.comment().ok_or_else(|| bad("no header comment"))?;
        let text = std::str::from_utf8(comment).map_err(|_| bad("comment not text"))?;
        ArchiveHeader::parse_comment(text).ok_or_else(|| bad("comment not understood"))
    }
}

/// Gzip `source` into `path` (via a hidden temp file, fsynced, renamed),
/// with the stream range in the header comment. Returns the compressed size.
pub fn write_gzip_atomic(
    path: &Path,
    header: &ArchiveHeader,
    source: &mut dyn Read,
) -> io::Result<u64> {
    let tmp = temp_path(path);
    let file = File::create(&tmp).map_err(|e| with_path(e, &tmp))?;
    let mut encoder: GzEncoder<File> = GzBuilder::new()
        .comment(header.comment())
        .write(file, Compression::default());
    let mut reader = BufReader::with_capacity(64 * 1024, source);
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        encoder.write_all(chunk)?;
        let n = chunk.len();
        reader.consume(n);
        crate::failpoint::hit("logstore.mid_gzip");
    }
    let file = encoder.finish()?;
    install_durably(&file, &tmp, path)?;
    Ok(file.metadata()?.len())
}

// A log directory shared by a master and an agent on one host: both
// daemons must know which names are the master's, so the agent never takes
// them (issue 12). Here rather than in either daemon, which may not
// import from the other.

/// The master's own directory inside `log_dir`.
pub(crate) const MASTER_OWN_DIR: &str = ".master";
/// Legacy files that prove an old master used this `log/`; `alarms.log`
/// or `events.log` alone may be an agent's collector named `alarms`.
pub(crate) const LEGACY_EVIDENCE: [&str; 2] = [".alarm-commands.done", "registry.json"];

/// Whether a master older than this layout keeps its files in `log_dir`
/// (not moved yet): an agent sharing the directory must then leave
/// `alarms.log` and `events.log` alone even if an earlier agent version,
/// which took any `NAME.log`, recorded them as its own (issue 12).
pub fn legacy_master_in(log_dir: &Path) -> bool {
    !log_dir.join(MASTER_OWN_DIR).is_dir()
        && LEGACY_EVIDENCE
            .iter()
            .any(|name| log_dir.join(name).is_file())
}

/// The log types an earlier agent may have taken from a master beside it.
pub const LEGACY_MASTER_LOGS: [&str; 2] = ["alarms", "events"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_through_a_real_gzip_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpu-x.log.gz");
        let h = ArchiveHeader {
            log_type: "cpu".into(),
            epoch: 42,
            start: 10,
            end: 25,
        };
        write_gzip_atomic(&path, &h, &mut &b"hello normal\n"[..]).unwrap();
        assert_eq!(ArchiveHeader::read(&path).unwrap(), h);
        // And it is plain gzip.
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(&path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello normal\n");
        assert!(ArchiveHeader::parse_comment("pihealth type=a epoch=1 start=5 end=1").is_none());
        assert!(ArchiveHeader::parse_comment("other").is_none());
    }

    #[test]
    fn headers_that_are_not_a_pihealth_archive_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            fs::write(&path, bytes).unwrap();
            ArchiveHeader::read(&path).unwrap_err().to_string()
        };
        assert_eq!(
            refused("text", b"hello, not gzip at all\n"),
            "not a pihealth archive: not gzip"
        );
        let gzip = |comment: Option<&str>| {
            let builder = comment.map_or(GzBuilder::new(), |c| GzBuilder::new().comment(c));
            let mut encoder = builder.write(Vec::new(), Compression::default());
            encoder.write_all(b"x\n").unwrap();
            encoder.finish().unwrap()
        };
        let plain = gzip(None);
        assert_eq!(
            refused("plain", &plain),
            "not a pihealth archive: no header comment"
        );
        assert_eq!(
            refused("other", &gzip(Some("made by gzip"))),
            "not a pihealth archive: comment not understood"
        );
        // Cut inside the header's comment: an I/O error, not a header.
        let cut = gzip(Some("pihealth type=cpu epoch=1 start=0 end=2"));
        let path = dir.path().join("cut");
        fs::write(&path, &cut[..20]).unwrap();
        assert_eq!(
            ArchiveHeader::read(&path).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        // Reserved flag bits set: RFC 1952 says refuse.
        let mut reserved = plain.clone();
        reserved[3] |= 0x20;
        assert_eq!(
            refused("reserved", &reserved),
            "not a pihealth archive: not gzip"
        );
    }

    #[test]
    fn replace_with_empty_leaves_an_open_reader_the_old_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpu.log");
        fs::write(&path, b"old lines\n").unwrap();
        let mut reader = File::open(&path).unwrap();
        let before = thread_syncs();
        replace_with_empty(&path).unwrap();
        // The empty file, then the directory.
        assert_eq!(thread_syncs() - before, 2);
        assert_eq!(fs::read(&path).unwrap(), b"");
        let mut old = String::new();
        reader.read_to_string(&mut old).unwrap();
        assert_eq!(old, "old lines\n");
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn temp_names_are_hidden_and_never_contain_dot_dot() {
        assert_eq!(
            temp_path(Path::new("a/cpu.log")),
            Path::new("a/.cpu.log.tmp")
        );
        assert_eq!(
            temp_path(Path::new("a/.state.json")),
            Path::new("a/.state.json.tmp")
        );
    }

    #[test]
    fn archive_names_parse_back_for_their_type_only() {
        let t = chrono::Utc::now();
        let name = archive_name("cpu", t);
        assert_eq!(
            archive_time(&name, "cpu").map(|p| p.timestamp_micros()),
            Some(t.timestamp_micros())
        );
        assert!(archive_time(&archive_name("cpu-2", t), "cpu").is_none());
        assert!(archive_time("cpu-garbage.log.gz", "cpu").is_none());
    }
}
