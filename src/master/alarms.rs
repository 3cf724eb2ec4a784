//! Alarms arriving at the master: stored once in `log/.master/alarms.log`,
//! acknowledged, and handed to `alarm_command`.
//!
//! Order: append + fsync the line, remember the id, acknowledge. A crash
//! before the ack makes the agent re-send; the id (loaded from
//! `alarms.log` at start) makes the master recognise it and only ack.
//! `alarm_command` gets the alarm in environment variables and runs
//! without a shell, so nothing an agent says is ever interpreted; it runs
//! on a bounded runner (`alarm_command.rs`), after the ack.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::level::Level;
use crate::master::alarm_command::{CommandRunner, DoneRecord};
use crate::master::silences::{self, Silence, SilenceCheck};
use crate::protocol::{Alarm, Connection, Credentials, Message, Purpose};
use crate::storage;

/// Most alarms one connection may deliver before it is closed.
const MAX_ALARMS_PER_CONNECTION: usize = 10_000;

/// How long the ids of stored alarms are remembered, counted from the
/// alarm's time. An agent re-sends a stored alarm only when our
/// acknowledgement was lost (it re-sends within seconds of reaching us
/// again) or when it lost power right after spooling it (at its next
/// start): both long before this. Bounding it keeps the master's memory
/// flat however many alarms a fleet raises over the years.
const ID_MEMORY: chrono::Duration = chrono::Duration::days(30);

/// The ids of alarms stored in the last `ID_MEMORY`, as 128-bit digests
/// (16 bytes each instead of a string), with each alarm's time.
#[derive(Default)]
struct SeenIds {
    ids: HashMap<[u8; 16], i64>,
    /// Entries at the last pruning: pruned again when twice as many.
    after_prune: usize,
}

impl SeenIds {
    fn digest(id: &str) -> [u8; 16] {
        let full = Sha256::digest(id.as_bytes());
        let mut short = [0u8; 16];
        short.copy_from_slice(&full[..16]);
        short
    }

    /// Unix seconds of an alarm's time; unparsable times count as now.
    fn time_of(time: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(time)
            .map(|t| t.timestamp())
            .unwrap_or_else(|_| chrono::Utc::now().timestamp())
    }

    fn horizon() -> i64 {
        (chrono::Utc::now() - ID_MEMORY).timestamp()
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(&Self::digest(id))
    }

    fn insert(&mut self, id: &str, time: &str) {
        let time = Self::time_of(time);
        if time < Self::horizon() {
            return;
        }
        self.ids.insert(Self::digest(id), time);
        if self.ids.len() >= 2 * self.after_prune.max(1024) {
            let horizon = Self::horizon();
            self.ids.retain(|_, t| *t >= horizon);
            self.ids.shrink_to_fit();
            self.after_prune = self.ids.len();
        }
    }
}

pub(crate) struct AlarmLog {
    path: PathBuf,
    /// Ids whose `alarm_command` has been started (or that needed none).
    done: Arc<DoneRecord>,
    seen: Mutex<SeenIds>,
    /// `None` without an `alarm_command`.
    runner: Option<CommandRunner>,
    /// Agents refused for a wrong key, logged once per change.
    refusals: crate::protocol::RefusalLog,
    /// Which silence covers an alarm (`super::silences`).
    silences: SilenceCheck,
    /// `silenced.log`.
    silenced_path: PathBuf,
    /// Told after each new alarm is stored (the Alertmanager forwarders).
    listeners: Mutex<Vec<Box<dyn Fn() + Send>>>,
}

/// How `alarm_command` runs (config keys of the same names).
#[derive(Debug, Clone)]
pub(crate) struct CommandSettings {
    pub(crate) command: Option<Vec<String>>,
    pub(crate) timeout: Duration,
    pub(crate) workers: usize,
    pub(crate) queue: usize,
}

impl CommandSettings {
    /// No command, or `command` with the default runner.
    #[cfg(test)]
    pub(crate) fn new(command: Option<Vec<String>>, timeout: Duration) -> CommandSettings {
        CommandSettings {
            command,
            timeout,
            workers: 2,
            queue: 1024,
        }
    }
}

/// One line of `alarms.log`: `TIME HOST TYPE LEVEL ID MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmLine {
    pub time: String,
    pub host: String,
    pub log_type: String,
    pub level: String,
    pub id: String,
    pub message: String,
}

impl AlarmLine {
    pub(crate) fn parse(line: &str) -> Option<AlarmLine> {
        let mut f = line.splitn(6, ' ');
        Some(AlarmLine {
            time: f.next()?.to_string(),
            host: f.next()?.to_string(),
            log_type: f.next()?.to_string(),
            level: f.next()?.to_string(),
            id: f.next()?.to_string(),
            message: f.next().unwrap_or("").to_string(),
        })
    }
}

/// `.alarm-commands.done`: which stored alarms have had their
/// `alarm_command` started. A first line `@N` says every alarm whose line
/// begins before byte N of `alarms.log` has; then one id per line for those
/// after it.
#[derive(Default)]
struct DoneIds {
    before: u64,
    ids: HashSet<String>,
}

impl DoneIds {
    fn parse(text: &str) -> DoneIds {
        let mut done = DoneIds::default();
        for line in text.lines() {
            match line.strip_prefix('@').map(str::parse::<u64>) {
                Some(Ok(n)) => done.before = n,
                // A file of an earlier version: ids only.
                _ => {
                    done.ids.insert(line.to_string());
                }
            }
        }
        done
    }

    fn mark(logged_len: u64) -> String {
        format!("@{logged_len}\n")
    }
}

/// Call `f` with the byte offset and contents of every alarm line of
/// `path`, oldest first, without holding the log in memory. Returns the
/// length read.
fn for_each_alarm(path: &Path, mut f: impl FnMut(u64, AlarmLine)) -> io::Result<u64> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(storage::with_path(e, path)),
    };
    let mut reader = BufReader::new(file);
    let mut offset = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(offset);
        }
        if let Some(a) = AlarmLine::parse(String::from_utf8_lossy(&line).trim_end_matches('\n')) {
            f(offset, a);
        }
        offset += n as u64;
    }
}

/// Read every alarm line of `alarms.log` (`MasterFiles::alarms`), oldest first.
pub fn read_alarms(path: &Path) -> io::Result<Vec<AlarmLine>> {
    let mut alarms = Vec::new();
    for_each_alarm(path, |_, a| alarms.push(a))?;
    Ok(alarms)
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// One pass over the log, keeping only what is needed: the recent ids,
/// and the alarms stored just before a crash whose command never started
/// (after `done`'s mark and not among its ids, nor silenced); and the
/// log's length.
fn scan(
    path: &Path,
    done: Option<&DoneIds>,
    silenced: &HashMap<String, String>,
) -> io::Result<(SeenIds, Vec<Alarm>, u64)> {
    let mut seen = SeenIds::default();
    let mut not_done = Vec::new();
    let logged_len = for_each_alarm(path, |offset, a| {
        seen.insert(&a.id, &a.time);
        if done.is_some_and(|d| offset >= d.before && !d.ids.contains(&a.id))
            && !silenced.contains_key(&a.id)
        {
            not_done.push(Alarm {
                id: a.id,
                host: a.host,
                log_type: a.log_type,
                level: a.level,
                message: a.message,
                time: a.time,
            });
        }
    })?;
    Ok((seen, not_done, logged_len))
}

impl AlarmLog {
    pub(crate) fn open(log_dir: &Path, settings: CommandSettings) -> io::Result<AlarmLog> {
        let files = super::files::MasterFiles::new(log_dir);
        std::fs::create_dir_all(files.dir()).map_err(|e| storage::with_path(e, files.dir()))?;
        let (path, done_path) = (files.alarms(), files.alarm_commands_done());
        storage::cut_torn_line(&path)?;
        let first_start = !done_path.exists();
        let done = if first_start {
            DoneIds::default()
        } else {
            storage::cut_torn_line(&done_path)?;
            DoneIds::parse(&std::fs::read_to_string(&done_path)?)
        };
        let silenced_path = files.silenced();
        storage::cut_torn_line(&silenced_path)?;
        let silenced = silences::read_silenced(&silenced_path)?;
        // None on a first start: what is logged is settled.
        let done = (!first_start).then_some(&done);
        let (seen, not_done, logged_len) = scan(&path, done, &silenced)?;
        let done = Arc::new(DoneRecord::open(&done_path)?);
        let runner = match settings.command {
            Some(argv) => Some(CommandRunner::start(
                argv,
                settings.timeout,
                settings.workers,
                settings.queue,
                done.clone(),
            )?),
            None => None,
        };
        for a in &not_done {
            log::warn!(
                "alarm {} from {} was stored before a crash; handling it now",
                a.id,
                a.host
            );
        }
        // Returns once each has started (and is noted done).
        if let Some(runner) = &runner {
            runner.run_leftovers(not_done);
        }
        // Every alarm logged so far is handled now: the record of them
        // shrinks to one mark, so it does not grow with the alarms.
        done.replace(&DoneIds::mark(logged_len))?;
        Ok(AlarmLog {
            path,
            done,
            seen: Mutex::new(seen),
            runner,
            refusals: Default::default(),
            silences: SilenceCheck::new(log_dir),
            silenced_path,
            listeners: Mutex::new(Vec::new()),
        })
    }

    /// Call `f` after each new alarm is stored.
    pub(crate) fn on_stored(&self, f: Box<dyn Fn() + Send>) {
        crate::sync::lock(&self.listeners).push(f);
    }

    /// Hand a newly stored alarm (durable since `stored`) to
    /// `alarm_command`; the runner notes it done once the command has
    /// started, so a crash before that runs it at the next start (once).
    /// A silenced alarm runs nothing and is noted done.
    fn handled(&self, alarm: &Alarm, stored: Instant, silence: Option<Silence>) {
        for f in crate::sync::lock(&self.listeners).iter() {
            f();
        }
        match (&self.runner, silence) {
            (_, Some(s)) => {
                log::info!(
                    "alarm {} from {} ({} {}) silenced by #{} ({}): no alarm_command, not forwarded",
                    alarm.id,
                    alarm.host,
                    alarm.log_type,
                    alarm.level,
                    s.id,
                    s.reason
                );
                self.done.mark(&alarm.id);
            }
            (Some(runner), None) => runner.submit(alarm.clone(), stored),
            (None, None) => {
                self.done.mark(&alarm.id);
            }
        }
    }

    /// Check an alarm from the network before it touches the disk.
    fn validate(alarm: &Alarm) -> Result<(), BadAlarm> {
        crate::names::check_host_name(&alarm.host).map_err(|e| BadAlarm::Field(e.to_string()))?;
        crate::names::check_type_name(&alarm.log_type)
            .map_err(|e| BadAlarm::Field(e.to_string()))?;
        alarm
            .level
            .parse::<Level>()
            .map_err(|e| BadAlarm::Field(e.to_string()))?;
        if alarm.id.is_empty()
            || alarm.id.len() > 64
            || !alarm.id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(BadAlarm::Id);
        }
        chrono::DateTime::parse_from_rfc3339(&alarm.time)?;
        Ok(())
    }

    /// Call `f` with every alarm stored so far, oldest first, without
    /// holding the log in memory.
    pub(crate) fn replay(&self, mut f: impl FnMut(AlarmLine)) -> io::Result<()> {
        for_each_alarm(&self.path, |_, a| f(a)).map(|_| ())
    }

    /// An alarm the master raises itself (host alarms), timed now, with a
    /// fresh random id.
    pub(crate) fn master_alarm(
        host: &str,
        log_type: &str,
        level: Level,
        message: String,
    ) -> io::Result<Alarm> {
        Ok(Alarm {
            id: crate::alarm_id::new_alarm_id()?,
            host: host.to_string(),
            log_type: log_type.to_string(),
            level: level.as_str().to_string(),
            message,
            time: chrono::Local::now().to_rfc3339(),
        })
    }

    /// Store and handle an alarm the master raises itself: the same path
    /// as an agent's alarm, without a connection to acknowledge.
    pub(crate) fn raise(&self, alarm: &Alarm) -> io::Result<()> {
        if let Some((stored, silence)) = self.record_at(alarm)? {
            self.handled(alarm, stored, silence);
        }
        Ok(())
    }

    /// Store an alarm unless already stored; true if it was new. (An alarm
    /// older than `ID_MEMORY` is stored: it cannot be told from a new one.)
    #[cfg(test)]
    pub(crate) fn record(&self, alarm: &Alarm) -> io::Result<bool> {
        self.record_at(alarm).map(|stored| stored.is_some())
    }

    /// Like `record`; when the alarm was new, when it became durable and
    /// the silence that holds it back, if any. Whether it was silenced is
    /// durable before the alarm is (`super::silences`).
    fn record_at(&self, alarm: &Alarm) -> io::Result<Option<(Instant, Option<Silence>)>> {
        let mut seen = crate::sync::lock(&self.seen);
        if seen.contains(&alarm.id) {
            return Ok(None);
        }
        let silence = self.silences.covering(&alarm.host, &alarm.log_type);
        if let Some(s) = &silence {
            storage::append_synced(
                &self.silenced_path,
                silences::silenced_line(&alarm.id, s).as_bytes(),
            )?;
        }
        let line = format!(
            "{} {} {} {} {} {}\n",
            alarm.time,
            alarm.host,
            alarm.log_type,
            alarm.level,
            alarm.id,
            one_line(&alarm.message)
        );
        storage::append_synced(&self.path, line.as_bytes())?;
        let stored = Instant::now();
        crate::failpoint::hit("alarms.after_append");
        seen.insert(&alarm.id, &alarm.time);
        Ok(Some((stored, silence)))
    }

    /// Serve one connection on the alarm port: up to
    /// `MAX_ALARMS_PER_CONNECTION` alarms, each stored, then acknowledged.
    pub(crate) fn handle(
        &self,
        stream: crate::net::TimedStream,
        peer: SocketAddr,
        credentials: &Credentials,
    ) {
        let mut conn = match Connection::server(stream, credentials, Purpose::Alarm) {
            Ok(c) => c,
            Err(e) => {
                self.refusals
                    .refused(format_args!("alarm connection"), peer, &e);
                return;
            }
        };
        for i in 0..MAX_ALARMS_PER_CONNECTION {
            let Some(alarm) = next_alarm(&mut conn, peer) else {
                return;
            };
            if i == 0 {
                // Proved only now: a recorded first handshake message can
                // be replayed, but no frame after it decrypts without the
                // key. A burst of spooled alarms may then take a while.
                self.refusals
                    .accepted(format_args!("alarm connection"), peer);
                if conn.stream().set_deadline(None).is_err() {
                    return;
                }
            }
            if !self.take(&mut conn, peer, &alarm) {
                return;
            }
        }
    }

    /// Check, store and acknowledge one alarm from the network; whether
    /// the connection may go on.
    fn take(&self, conn: &mut AlarmConnection, peer: SocketAddr, alarm: &Alarm) -> bool {
        // A host raises its own alarms only: the connection proved
        // `conn.host()`'s key, and no other.
        if alarm.host != conn.host() {
            let why = format!(
                "alarm for host {:?} on a connection authenticated as {:?}",
                alarm.host,
                conn.host()
            );
            log::warn!("alarm from {peer} refused: {why}");
            let _ = conn.send(&Message::Error(why));
            return false;
        }
        if alarm.log_type == crate::names::HOST_TYPE {
            // The master's own type: no agent may raise or clear a
            // host down/up alarm (it would run alarm_command, resolve
            // the Alertmanager alert, and be read back at the next
            // start). Acknowledged, so an old agent with a collector
            // of that name does not retry it forever; not stored.
            log::warn!(
                "alarm from {peer} ({}) dropped: type `host` is the master's own",
                alarm.host
            );
            return conn
                .send(&Message::AlarmAck {
                    id: alarm.id.clone(),
                })
                .is_ok();
        }
        if let Err(why) = Self::validate(alarm) {
            log::warn!("alarm from {peer} refused: {why}");
            let _ = conn.send(&Message::Error(why.to_string()));
            return false;
        }
        self.store_and_acknowledge(conn, alarm)
    }

    fn store_and_acknowledge(&self, conn: &mut AlarmConnection, alarm: &Alarm) -> bool {
        match self.record_at(alarm) {
            Ok(new) => {
                if new.is_some() {
                    log::warn!(
                        "alarm from {}: {} {} {}",
                        alarm.host,
                        alarm.log_type,
                        alarm.level,
                        alarm.message
                    );
                }
                let acked = conn.send(&Message::AlarmAck {
                    id: alarm.id.clone(),
                });
                // After the ack, so a queue of commands (or a full one)
                // does not hold up the agent; before the next alarm,
                // so a full queue slows this connection down.
                if let Some((stored, silence)) = new {
                    self.handled(alarm, stored, silence);
                }
                acked.is_ok()
            }
            Err(e) => {
                // Not stored, so not acknowledged: the agent keeps it.
                log::error!("cannot store alarm from {}: {e}", alarm.host);
                let _ = conn.send(&Message::Error("master cannot store alarms now".into()));
                false
            }
        }
    }
}

type AlarmConnection = Connection<crate::net::TimedStream>;

/// The next alarm on the connection, or `None` at its end (a `Bye`, a
/// hang-up, or anything else, which is logged).
fn next_alarm(conn: &mut AlarmConnection, peer: SocketAddr) -> Option<Alarm> {
    match conn.recv() {
        Ok(Message::Alarm(a)) => Some(a),
        Ok(Message::Bye) => None,
        Ok(other) => {
            log::warn!("alarm connection from {peer}: unexpected {}", other.kind());
            None
        }
        Err(e) => {
            if e.kind() != io::ErrorKind::UnexpectedEof {
                log::warn!("alarm connection from {peer}: {e}");
            }
            None
        }
    }
}

/// Why an alarm from the network is refused.
#[derive(Debug, thiserror::Error)]
enum BadAlarm {
    /// The host or type name, or the level (the message says which).
    #[error("{0}")]
    Field(String),
    #[error("bad alarm id")]
    Id,
    #[error("bad alarm time: {0}")]
    Time(#[from] chrono::ParseError),
}

/// Where one host's log type stands, from its alarms: the latest alarm
/// decides whether a problem is open; `since` is when the current run of
/// problem alarms began (re-alarms do not move it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub(crate) host: String,
    #[serde(rename = "type")]
    pub(crate) log_type: String,
    /// Level of the latest alarm.
    pub(crate) level: String,
    pub(crate) open: bool,
    /// Open: when the problem began. Recovered: when it was recovered.
    pub(crate) since: String,
    pub(crate) message: String,
}

/// One entry per (host, type) that ever alarmed, in order of first alarm.
pub(crate) fn problems(alarms: &[AlarmLine]) -> Vec<Problem> {
    let mut out: Vec<Problem> = Vec::new();
    for a in alarms {
        let open = a.level.parse::<Level>().is_ok_and(Level::is_problem);
        let entry = out
            .iter_mut()
            .find(|p| p.host == a.host && p.log_type == a.log_type);
        let continues = entry.as_ref().is_some_and(|p| p.open && open);
        let next = Problem {
            host: a.host.clone(),
            log_type: a.log_type.clone(),
            level: a.level.clone(),
            open,
            since: match &entry {
                Some(p) if continues => p.since.clone(),
                _ => a.time.clone(),
            },
            message: a.message.clone(),
        };
        match entry {
            Some(p) => *p = next,
            None => out.push(next),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(id: &str) -> Alarm {
        Alarm {
            id: id.into(),
            host: "pi1".into(),
            log_type: "cpu".into(),
            level: "warning".into(),
            message: "load high\nsecond line".into(),
            time: chrono::Local::now().to_rfc3339(),
        }
    }

    #[test]
    fn ids_are_remembered_for_their_window_only() {
        let mut seen = SeenIds::default();
        let now = chrono::Utc::now();
        let recent = (now - chrono::Duration::days(29)).to_rfc3339();
        let old = (now - chrono::Duration::days(31)).to_rfc3339();
        for i in 0..3000 {
            seen.insert(&format!("recent{i}"), &recent);
        }
        seen.insert("old", &old);
        assert!(seen.contains("recent0") && seen.contains("recent2999"));
        assert!(!seen.contains("old"), "an alarm older than the window");
        assert!(!seen.contains("recent3000"));
        assert_eq!(seen.ids.len(), 3000);
        // Entries age out when the set is pruned (at twice its last size).
        seen.ids.values_mut().for_each(|t| *t -= 2 * 86_400);
        for i in 0..3000 {
            seen.insert(&format!("new{i}"), &now.to_rfc3339());
        }
        assert!(!seen.contains("recent0"), "aged out");
        assert!(seen.contains("new0") && seen.contains("new2999"));
        assert!(seen.ids.len() <= 3000, "{} ids kept", seen.ids.len());
    }

    #[test]
    fn stored_once_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let log = AlarmLog::open(
            dir.path(),
            CommandSettings::new(None, Duration::from_secs(1)),
        )
        .unwrap();
        assert!(log.record(&alarm("a1")).unwrap());
        assert!(!log.record(&alarm("a1")).unwrap());
        let log = AlarmLog::open(
            dir.path(),
            CommandSettings::new(None, Duration::from_secs(1)),
        )
        .unwrap();
        assert!(!log.record(&alarm("a1")).unwrap());
        assert!(log.record(&alarm("a2")).unwrap());
        // A line torn by a crash does not swallow the next alarm.
        storage::append_synced(
            &dir.path().join(".master/alarms.log"),
            b"2026-11-21T10:00:00+08:00 pi1 cp",
        )
        .unwrap();
        let log = AlarmLog::open(
            dir.path(),
            CommandSettings::new(None, Duration::from_secs(1)),
        )
        .unwrap();
        assert!(log.record(&alarm("a3")).unwrap());
        let lines = read_alarms(&dir.path().join(".master/alarms.log")).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].id, "a3");
        assert_eq!(lines[0].message, "load high second line");
    }

    /// A command that appends the alarm id it runs for to `ran.txt`.
    fn recording_hook(dir: &Path) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let ran = dir.join("ran.txt");
        let hook = dir.join("hook.sh");
        std::fs::write(
            &hook,
            format!("#!/bin/sh\necho \"$PIHEALTH_ID\" >> {}\n", ran.display()),
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        (hook, ran)
    }

    #[test]
    fn alarm_command_runs_once_even_across_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, ran) = recording_hook(dir.path());
        let command = Some(vec![hook.display().to_string()]);
        let log = AlarmLog::open(
            dir.path(),
            CommandSettings::new(command.clone(), Duration::from_secs(10)),
        )
        .unwrap();
        // Stored, then the master dies before starting the command.
        assert!(log.record(&alarm("c1")).unwrap());
        drop(log);
        let _log = AlarmLog::open(
            dir.path(),
            CommandSettings::new(command.clone(), Duration::from_secs(10)),
        )
        .unwrap();
        let _again = AlarmLog::open(
            dir.path(),
            CommandSettings::new(command.clone(), Duration::from_secs(10)),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&ran)
            .unwrap_or_default()
            .lines()
            .count()
            < 1
        {
            assert!(Instant::now() < deadline, "alarm_command never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The second open found it handled and ran nothing; the record of
        // handled alarms is one mark again.
        let logged = std::fs::metadata(dir.path().join(".master/alarms.log"))
            .unwrap()
            .len();
        let done =
            std::fs::read_to_string(dir.path().join(".master/.alarm-commands.done")).unwrap();
        assert_eq!(done, format!("@{logged}\n"));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(std::fs::read_to_string(&ran).unwrap(), "c1\n");
        // A record of an earlier version (ids only) is still understood.
        std::fs::write(dir.path().join(".master/.alarm-commands.done"), "c1\n").unwrap();
        let _log = AlarmLog::open(
            dir.path(),
            CommandSettings::new(command, Duration::from_secs(10)),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(std::fs::read_to_string(&ran).unwrap(), "c1\n");
    }

    #[test]
    fn a_silenced_alarm_stored_before_a_crash_runs_no_command_at_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (hook, ran) = recording_hook(dir.path());
        let settings = CommandSettings::new(
            Some(vec![hook.display().to_string()]),
            Duration::from_secs(10),
        );
        let log = AlarmLog::open(dir.path(), settings.clone()).unwrap();
        crate::master::silences::SilenceStore::new(dir.path())
            .add("pi1", Some("cpu"), Duration::from_secs(3600), "testing")
            .unwrap();
        // Stored (silenced), then the master dies before handling either.
        assert!(log.record(&alarm("s1")).unwrap());
        let mut other = alarm("n1");
        other.log_type = "disk".into();
        assert!(log.record(&other).unwrap());
        drop(log);
        let _log = AlarmLog::open(dir.path(), settings).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(std::fs::read_to_string(&ran).unwrap(), "n1\n");
        let silenced =
            crate::master::silences::read_silenced(&dir.path().join(".master/silenced.log"))
                .unwrap();
        assert!(silenced["s1"].starts_with("#1 until "));
        assert_eq!(silenced.len(), 1);
    }

    #[test]
    fn hostile_alarms_are_refused() {
        let mut a = alarm("x");
        a.host = "../../etc".into();
        assert!(AlarmLog::validate(&a).is_err());
        let mut a = alarm("x");
        a.level = "panic".into();
        assert!(AlarmLog::validate(&a).is_err());
        let mut a = alarm("x y");
        a.id = "x y".into();
        assert!(AlarmLog::validate(&a).is_err());
        assert!(AlarmLog::validate(&alarm("abc123")).is_ok());
    }

    #[test]
    fn problems_open_until_recovered() {
        let line = |t: &str, host: &str, ty: &str, level: &str| AlarmLine {
            time: t.into(),
            host: host.into(),
            log_type: ty.into(),
            level: level.into(),
            id: format!("{t}{host}{ty}"),
            message: format!("{level} text"),
        };
        let alarms = [
            line("t1", "pi1", "disk", "warning"),
            line("t2", "pi2", "cpu", "warning"),
            line("t3", "pi1", "disk", "critical"),
            line("t4", "pi2", "cpu", "normal"),
            line("t5", "pi1", "mem", "note"),
        ];
        let p = problems(&alarms);
        assert_eq!(p.len(), 3);
        assert!(p[0].open && p[0].level == "critical" && p[0].since == "t1");
        assert!(!p[1].open && p[1].since == "t4");
        assert!(!p[2].open, "note is not a problem");
    }
}
