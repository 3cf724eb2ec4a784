//! `pihealth logs HOST TYPE`: the archives in `logbackup/HOST/` and the
//! current `log/HOST/TYPE.log` as one stream, oldest first.
//!
//! Reads only what the master has committed (the length in the host's
//! state file), so a piece being written is never shown half-done.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::read::MultiGzDecoder;

use crate::config::MasterConfig;
use crate::level::Level;
use crate::logline::LogLine;
use crate::master::archive::archive_files;
use crate::names::{check_host_name, check_type_name, NameError};

pub struct Query {
    pub host: String,
    pub log_type: String,
    /// Parsed by `cli::parse_time`; `main` checks since < until.
    pub since: Option<chrono::DateTime<chrono::FixedOffset>>,
    pub until: Option<chrono::DateTime<chrono::FixedOffset>>,
    pub follow: bool,
    /// Only lines whose level is at least this (`--level warning`).
    pub min_level: Option<Level>,
    /// One JSON object per line instead of the stored text.
    pub json: bool,
}

/// Which lines to print, and how.
struct Filter<'q> {
    since: Option<chrono::DateTime<chrono::FixedOffset>>,
    until: Option<chrono::DateTime<chrono::FixedOffset>>,
    min_level: Option<Level>,
    /// `Some((host, type))` prints JSON objects.
    json: Option<(&'q str, &'q str)>,
}

impl Filter<'_> {
    /// Print `line` if it passes. A line without a timestamp (e.g. the
    /// agent's "pihealth dropped" notice) only shows when nothing filters.
    fn emit_line(&self, line: &str, out: &mut dyn Write) -> io::Result<()> {
        let parsed = LogLine::parse(line);
        let keep = match &parsed {
            Some(l) => {
                self.since.is_none_or(|s| l.time >= s)
                    && self.until.is_none_or(|u| l.time < u)
                    && self
                        .min_level
                        .is_none_or(|m| l.level.is_some_and(|v| v >= m))
            }
            None => self.since.is_none() && self.until.is_none() && self.min_level.is_none(),
        };
        if !keep {
            return Ok(());
        }
        match (self.json, parsed) {
            (Some((host, log_type)), Some(l)) => {
                writeln!(out, "{}", l.to_json(host, log_type))
            }
            (Some((host, log_type)), None) => writeln!(
                out,
                "{}",
                serde_json::json!({"time": null, "host": host, "type": log_type,
                    "fields": [], "level": null, "text": line.trim_end()})
            ),
            (None, _) => out.write_all(line.as_bytes()),
        }
    }
}

fn emit(reader: &mut dyn BufRead, filter: &Filter, out: &mut dyn Write) -> io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        filter.emit_line(&line, out)?;
    }
}

/// What a reader may show of `log/HOST/TYPE.log`; 0 if the state is unreadable.
fn committed_len(config: &MasterConfig, host: &str, log_type: &str) -> u64 {
    crate::master::archive::committed_len(&config.log_dir, &config.backup_dir, host, log_type)
        .unwrap_or(0)
}

fn list_names(dir: &Path, strip: fn(&str) -> Option<String>) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(strip))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    names
}

/// Why `logs` printed nothing more.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("host {host:?}: {why}")]
    HostName { host: String, why: NameError },
    #[error("type {log_type:?}: {why}")]
    TypeName { log_type: String, why: NameError },
    #[error("no host {host:?} under {}; hosts: {}", dir.display(), hosts.join(", "))]
    NoHost {
        host: String,
        dir: PathBuf,
        hosts: Vec<String>,
    },
    #[error("host {host} has no {log_type:?} log; types: {}", types.join(", "))]
    NoType {
        host: String,
        log_type: String,
        types: Vec<String>,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Refuse an unknown host or type with the names there are, so a typo is
/// told apart from an empty log. Returns the path of the current log.
fn sources(config: &MasterConfig, q: &Query) -> Result<PathBuf, LogsError> {
    let host_dir = config.log_dir.join(&q.host);
    if !host_dir.is_dir() {
        let hosts: Vec<String> = list_names(&config.log_dir, |n| {
            check_host_name(n).is_ok().then(|| n.to_string())
        })
        .into_iter()
        .filter(|n| config.log_dir.join(n).is_dir())
        .collect();
        return Err(LogsError::NoHost {
            host: q.host.clone(),
            dir: config.log_dir.clone(),
            hosts,
        });
    }
    let archives = archive_files(&config.backup_dir, &q.host, &q.log_type)?;
    let current = host_dir.join(format!("{}.log", q.log_type));
    if archives.is_empty() && !current.exists() {
        let mut types = list_names(&host_dir, |n| n.strip_suffix(".log").map(str::to_string));
        types.extend(list_names(&config.backup_dir.join(&q.host), |n| {
            n.strip_suffix(".log.gz")
                .and_then(|s| s.rsplit_once('-'))
                .map(|(t, _)| t.to_string())
        }));
        types.sort();
        types.dedup();
        return Err(LogsError::NoType {
            host: q.host.clone(),
            log_type: q.log_type.clone(),
            types,
        });
    }
    Ok(current)
}

pub fn run(config: &MasterConfig, q: &Query) -> Result<(), LogsError> {
    check_host_name(&q.host).map_err(|why| LogsError::HostName {
        host: q.host.clone(),
        why,
    })?;
    check_type_name(&q.log_type).map_err(|why| LogsError::TypeName {
        log_type: q.log_type.clone(),
        why,
    })?;
    let current = sources(config, q)?;
    let filter = Filter {
        since: q.since,
        until: q.until,
        min_level: q.min_level,
        json: q.json.then_some((q.host.as_str(), q.log_type.as_str())),
    };
    let mut reader = Reader {
        config,
        q,
        filter,
        current,
        out: io::BufWriter::new(super::stdout()),
        known: Vec::new(),
        shown: 0,
    };
    reader.print_all()?;
    if !q.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(500));
        reader.print_new()?;
    }
}

/// One `logs` command's position in the stream: the archives already
/// printed and how much of the current log.
struct Reader<'a> {
    config: &'a MasterConfig,
    q: &'a Query,
    filter: Filter<'a>,
    current: PathBuf,
    out: io::BufWriter<super::Stdout>,
    known: Vec<PathBuf>,
    /// Bytes of the current log printed.
    shown: u64,
}

impl Reader<'_> {
    fn committed(&self) -> u64 {
        committed_len(self.config, &self.q.host, &self.q.log_type)
    }

    /// The archives, the committed length of the current log and that log
    /// opened, as of one moment. A seal may run while we look: it renames
    /// its archive into place before it replaces the log, so the archives
    /// are listed before the length is read and the log opened, and again
    /// after; when both listings agree, no seal replaced the log in between
    /// and the length is the opened file's (else we try again).
    fn snapshot(&self) -> io::Result<(Vec<PathBuf>, u64, Option<File>)> {
        let list = || archive_files(&self.config.backup_dir, &self.q.host, &self.q.log_type);
        loop {
            let before = list()?;
            let committed = self.committed();
            let current = File::open(&self.current).ok();
            if list()? == before {
                return Ok((before, committed, current));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn print_all(&mut self) -> io::Result<()> {
        let (archives, committed, current) = self.snapshot()?;
        self.known = archives;
        for path in &self.known {
            let file = File::open(path)?;
            emit(
                &mut BufReader::new(MultiGzDecoder::new(file)),
                &self.filter,
                &mut self.out,
            )?;
        }
        self.shown = committed;
        if let Some(file) = current {
            emit(
                &mut BufReader::new(file.take(self.shown)),
                &self.filter,
                &mut self.out,
            )?;
        }
        self.out.flush()
    }

    /// Print newly committed bytes; when the master has sealed the log
    /// into an archive, finish that archive from where we were, print any
    /// archive that arrived after it, and start over on the new log.
    ///
    /// The current log waits for the next tick in a round that found new
    /// archives (the seal's state may not be committed yet), and the
    /// position moves by what was read, never past the file's end.
    fn print_new(&mut self) -> io::Result<()> {
        let (before, committed, current) = self.snapshot()?;
        let fresh: Vec<_> = before
            .iter()
            .filter(|p| !self.known.contains(p))
            .cloned()
            .collect();
        if !fresh.is_empty() {
            for (i, path) in fresh.iter().enumerate() {
                let file = File::open(path)?;
                let mut reader = BufReader::new(MultiGzDecoder::new(file));
                if i == 0 {
                    // The first new archive is the log we were following.
                    io::copy(&mut (&mut reader).take(self.shown), &mut io::sink())?;
                }
                emit(&mut reader, &self.filter, &mut self.out)?;
            }
            self.shown = 0;
            self.known = before;
            return self.out.flush();
        }
        if committed > self.shown {
            if let Some(mut file) = current {
                file.seek(SeekFrom::Start(self.shown))?;
                let mut unread = file.take(committed - self.shown);
                emit(
                    &mut BufReader::new(&mut unread),
                    &self.filter,
                    &mut self.out,
                )?;
                self.shown = committed - unread.limit();
            }
        }
        self.out.flush()
    }
}
