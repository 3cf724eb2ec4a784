//! Forwarding alarms to Alertmanager (`alertmanagers` in the master
//! config) through its v2 API, `POST /api/v2/alerts`.
//!
//! Each alarm becomes an alert with the labels `alertname`
//! (`pihealth_TYPE`), `host`, `type` and `level`, and the annotations
//! `summary` (the alarm's message) and `alarm_id`. A problem level
//! (warning, critical, unknown) fires; a new level for the same host and
//! type resolves the alert of the old level and fires one of the new; a
//! recovery (normal, note) resolves the firing alert with `endsAt` = the
//! recovery's time. Firing alerts are re-sent every `alertmanager_resend`
//! with `endsAt` four resends ahead (as Prometheus does), so Alertmanager
//! keeps them firing while the master runs and lets them lapse if the
//! master is gone for good. Silenced alarms (`super::silences`) are not
//! forwarded, except a recovery that resolves an alert Alertmanager was
//! told about, so nothing stays firing there after the problem ended.
//!
//! **The outbox is `alarms.log` itself.** Per Alertmanager one thread
//! keeps a cursor, `log/.master/.alertmanager-<digest of URL>.sent`: the
//! byte offset up to which Alertmanager has accepted the alarms (what it
//! fires is a function of the alarms up to there, so it is rebuilt at
//! start by reading them again). Crash safety, step by step:
//! 1. an alarm is appended to `alarms.log` and fsynced before it is
//!    acknowledged (`super::alarms`); its silence note is fsynced before
//!    that. A crash before this: the agent still has the alarm.
//! 2. the thread reads complete lines after the cursor, POSTs them (one
//!    request for up to `BATCH` alarms) and waits for a 2xx. A crash or an
//!    Alertmanager that is down or refuses: the cursor has not moved; the
//!    same alarms are sent again (after a back-off of 1 s doubling to
//!    60 s, forever) until one is accepted. The exception is a 400 (the
//!    request itself is invalid, so a repeat would be refused too and
//!    would hold back every alarm after it): the batch's alerts are then
//!    sent one at a time, and one refused alone is skipped with an error
//!    in the log (the alarm stays in `alarms.log`).
//! 3. after the 2xx the cursor file is replaced atomically and fsynced. A
//!    crash before the rename completes sends the batch once more at the
//!    next start: Alertmanager keys alerts by their labels, so a repeat of
//!    the same alert changes nothing.
//!
//! So nothing is lost while an Alertmanager is down or the master
//! crashes, and each Alertmanager gets every alarm in order. A new entry
//! in `alertmanagers` starts at the end of `alarms.log` (no replay of
//! history) and is sent what is firing now at once; one removed and
//! listed again later catches up from where it was left (its cursor file
//! stays).
//!
//! The HTTP client is a few lines on `std::net` (plain http only: one
//! POST, `Connection: close`, the status line read), bounded by
//! `connect_timeout` and `io_timeout`. Alertmanager usually runs beside the
//! master or on a trusted network; for TLS, put a proxy in front of it.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use serde_json::json;

use super::alarms::AlarmLine;
use super::files::MasterFiles;
use super::silences::read_silenced;
use crate::config::HttpUrl as Target;
use crate::level::Level;
use crate::storage;

/// Most alarms sent in one request.
const BATCH: usize = 500;
/// Most bytes of `alarms.log` read for one batch.
const READ_LIMIT: u64 = 1 << 20;
/// Longest wait between tries of an Alertmanager that does not accept.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Most bytes of an answer read (the status line is what counts).
const ANSWER_LIMIT: u64 = 64 * 1024;

impl Target {
    /// POST `body` (JSON) to `/api/v2/alerts`; `Ok` on a 2xx answer, else
    /// an error naming the status or the failure.
    pub(crate) fn post_alerts(
        &self,
        body: &[u8],
        connect: Duration,
        io: Duration,
    ) -> io::Result<()> {
        let addr =
            self.authority.to_socket_addrs()?.next().ok_or_else(|| {
                io::Error::other(format!("{} resolves to nothing", self.authority))
            })?;
        let mut stream = TcpStream::connect_timeout(&addr, connect)?;
        stream.set_read_timeout(Some(io))?;
        stream.set_write_timeout(Some(io))?;
        let head = format!(
            "POST {}/api/v2/alerts HTTP/1.1\r\nHost: {}\r\nUser-Agent: pihealth/{}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.prefix,
            self.authority,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let answer = self.read_answer(&mut stream, io)?;
        judge_answer(&answer)
    }

    /// The answer, up to `ANSWER_LIMIT` bytes and within `io`; once its
    /// head is in, an error reading on is no failure.
    fn read_answer(&self, stream: &mut TcpStream, io: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + io;
        let mut answer = Vec::new();
        let mut limited = stream.take(ANSWER_LIMIT);
        let mut buf = [0u8; 4096];
        loop {
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "answer too slow"));
            }
            match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if answer.windows(4).any(|w| w == b"\r\n\r\n") => {
                    // The head is in: enough to judge.
                    log::debug!("{}: after the answer's head: {e}", self.url);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(answer)
    }
}

/// `Ok` on a 2xx answer, else an error naming the status.
fn judge_answer(answer: &[u8]) -> io::Result<()> {
    let text = String::from_utf8_lossy(answer);
    let status: u16 = text
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "not an HTTP answer: {:?}",
                    text.chars().take(80).collect::<String>()
                ),
            )
        })?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // 400: the request itself is refused (a repeat would be too);
    // anything else may pass later.
    let kind = if status == 400 {
        io::ErrorKind::InvalidInput
    } else {
        io::ErrorKind::Other
    };
    Err(io::Error::new(
        kind,
        format!(
            "answered {status}: {}",
            body.chars().take(200).collect::<String>().trim()
        ),
    ))
}

/// An alert Alertmanager has firing from us.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Firing {
    level: String,
    starts_at: String,
    message: String,
    id: String,
}

/// What Alertmanager has been told: the firing alert per (host, type).
#[derive(Debug, Default, Clone)]
struct Told {
    firing: HashMap<(String, String), Firing>,
}

/// One alert to post: labels, then the rest.
#[derive(Debug, Clone)]
struct Outgoing {
    host: String,
    log_type: String,
    level: String,
    message: String,
    id: String,
    starts_at: String,
    /// `None`: firing (ends `resend × 4` from the send).
    ends_at: Option<String>,
}

fn parse_time(t: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(t).ok()
}

impl Outgoing {
    fn json(&self, firing_until: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
        let starts = parse_time(&self.starts_at).map(|t| t.with_timezone(&chrono::Utc));
        let ends = match &self.ends_at {
            Some(t) => parse_time(t).map(|t| t.with_timezone(&chrono::Utc)),
            None => Some(firing_until),
        };
        // Alertmanager refuses an alert that ends before it starts (an
        // agent's clock may be off).
        let ends = match (starts, ends) {
            (Some(s), Some(e)) if e <= s => Some(s + chrono::Duration::seconds(1)),
            (_, e) => e,
        };
        let mut alert = json!({
            "labels": {
                "alertname": format!("pihealth_{}", self.log_type),
                "host": self.host,
                "type": self.log_type,
                "level": self.level,
            },
            "annotations": {"summary": self.message, "alarm_id": self.id},
        });
        if let Some(s) = starts {
            alert["startsAt"] = json!(s.to_rfc3339());
        }
        if let Some(e) = ends {
            alert["endsAt"] = json!(e.to_rfc3339());
        }
        alert
    }
}

impl Told {
    /// Fold one stored alarm in; the alerts that tell Alertmanager.
    fn apply(&mut self, a: &AlarmLine, silenced: bool, out: &mut Vec<Outgoing>) {
        let key = (a.host.clone(), a.log_type.clone());
        let problem = a.level.parse::<Level>().map_or(true, Level::is_problem);
        // One alert of the host and type: firing (no end) or resolved.
        let alert = |f: &Firing, ends_at: Option<&str>| Outgoing {
            host: a.host.clone(),
            log_type: a.log_type.clone(),
            level: f.level.clone(),
            message: f.message.clone(),
            id: f.id.clone(),
            starts_at: f.starts_at.clone(),
            ends_at: ends_at.map(str::to_string),
        };
        if problem {
            if silenced {
                return;
            }
            let starts_at = match self.firing.get(&key) {
                Some(f) if f.level == a.level => f.starts_at.clone(),
                Some(f) => {
                    out.push(alert(f, Some(&a.time)));
                    a.time.clone()
                }
                None => a.time.clone(),
            };
            let f = Firing {
                level: a.level.clone(),
                starts_at,
                message: a.message.clone(),
                id: a.id.clone(),
            };
            out.push(alert(&f, None));
            self.firing.insert(key, f);
        } else if let Some(f) = self.firing.remove(&key) {
            out.push(alert(&f, Some(&a.time)));
        }
    }

    fn firing_now(&self) -> Vec<Outgoing> {
        let mut v: Vec<Outgoing> = self
            .firing
            .iter()
            .map(|((host, log_type), f)| Outgoing {
                host: host.clone(),
                log_type: log_type.clone(),
                level: f.level.clone(),
                message: f.message.clone(),
                id: f.id.clone(),
                starts_at: f.starts_at.clone(),
                ends_at: None,
            })
            .collect();
        v.sort_by(|a, b| (&a.host, &a.log_type).cmp(&(&b.host, &b.log_type)));
        v
    }
}

/// Complete lines of `path` from `offset`: at most `BATCH` alarms and
/// `READ_LIMIT` bytes; with the offset after the last one taken.
fn read_after(path: &Path, offset: u64) -> io::Result<(Vec<AlarmLine>, u64)> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(storage::with_path(e, path)),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.take(READ_LIMIT).read_to_end(&mut bytes)?;
    let mut lines = Vec::new();
    let mut used = 0usize;
    while lines.len() < BATCH {
        let Some(end) = bytes[used..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let line = String::from_utf8_lossy(&bytes[used..used + end]).into_owned();
        used += end + 1;
        if let Some(a) = AlarmLine::parse(&line) {
            lines.push(a);
        }
    }
    Ok((lines, offset + used as u64))
}

/// Keep only the last alert per label set, in the order of those last
/// ones: Alertmanager keeps one alert per label set anyway.
fn last_per_alert(alerts: Vec<Outgoing>) -> Vec<Outgoing> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<Outgoing> = alerts
        .into_iter()
        .rev()
        .filter(|o| seen.insert((o.host.clone(), o.log_type.clone(), o.level.clone())))
        .collect();
    kept.reverse();
    kept
}

/// Settings shared by the forwarders.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) resend: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) io_timeout: Duration,
}

/// One Alertmanager's forwarding thread.
struct Forwarder {
    target: Target,
    settings: Settings,
    alarms: PathBuf,
    silenced_path: PathBuf,
    cursor_path: PathBuf,
    cursor: u64,
    told: Told,
    silenced: HashMap<String, String>,
    silenced_len: u64,
}

impl Forwarder {
    fn open(log_dir: &Path, target: Target, settings: Settings) -> io::Result<Forwarder> {
        let files = MasterFiles::new(log_dir);
        let alarms = files.alarms();
        let cursor_path = files.alertmanager_cursor(&target.url);
        let logged = std::fs::metadata(&alarms).map_or(0, |m| m.len());
        let saved = match std::fs::read_to_string(&cursor_path) {
            Ok(text) => text.trim().parse::<u64>().ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(storage::with_path(e, &cursor_path)),
        };
        let cursor = match saved {
            Some(c) if c <= logged => c,
            Some(c) => {
                log::warn!(
                    "{}: {} says {c} bytes of alarms.log were sent, but it has {logged}; going on from its end",
                    target.url,
                    cursor_path.display()
                );
                logged
            }
            None => {
                log::info!(
                    "{}: a new Alertmanager; forwarding alarms from now on (and what is firing)",
                    target.url
                );
                storage::write_atomic(&cursor_path, format!("{logged}\n").as_bytes(), true)?;
                logged
            }
        };
        let mut f = Forwarder {
            target,
            settings,
            silenced_path: files.silenced(),
            alarms,
            cursor_path,
            cursor,
            told: Told::default(),
            silenced: HashMap::new(),
            silenced_len: u64::MAX,
        };
        // What Alertmanager was told: the fold over what it accepted.
        f.refresh_silenced()?;
        let mut offset = 0;
        while offset < f.cursor {
            let (lines, next) = read_after(&f.alarms, offset)?;
            if next == offset {
                break;
            }
            let mut ignored = Vec::new();
            for a in lines {
                let silenced = f.silenced.contains_key(&a.id);
                f.told.apply(&a, silenced, &mut ignored);
            }
            offset = next.min(f.cursor);
        }
        Ok(f)
    }

    fn refresh_silenced(&mut self) -> io::Result<()> {
        let len = std::fs::metadata(&self.silenced_path).map_or(0, |m| m.len());
        if len != self.silenced_len {
            self.silenced = read_silenced(&self.silenced_path)?;
            self.silenced_len = len;
        }
        Ok(())
    }

    fn post(&self, alerts: &[Outgoing]) -> io::Result<()> {
        let until = chrono::Utc::now()
            + chrono::Duration::from_std(self.settings.resend * 4)
                .unwrap_or(chrono::Duration::minutes(4));
        let body: Vec<serde_json::Value> = alerts.iter().map(|o| o.json(until)).collect();
        let body = serde_json::to_vec(&body).map_err(io::Error::other)?;
        self.target.post_alerts(
            &body,
            self.settings.connect_timeout,
            self.settings.io_timeout,
        )
    }

    /// Send what follows the cursor, one batch; `Ok(true)` if there was any.
    fn forward_batch(&mut self) -> io::Result<bool> {
        let (lines, next) = read_after(&self.alarms, self.cursor)?;
        if next == self.cursor {
            return Ok(false);
        }
        // After reading the alarms: a silence note is written before its
        // alarm's line, so every alarm just read has its note in by now.
        self.refresh_silenced()?;
        let mut told = self.told.clone();
        let mut out = Vec::new();
        for a in &lines {
            told.apply(a, self.silenced.contains_key(&a.id), &mut out);
        }
        let out = last_per_alert(out);
        if !out.is_empty() {
            match self.post(&out) {
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    self.post_one_by_one(&out, &e)?
                }
                other => other?,
            }
        }
        storage::write_atomic(&self.cursor_path, format!("{next}\n").as_bytes(), true)?;
        self.cursor = next;
        self.told = told;
        log::debug!(
            "{}: {} alarm(s) forwarded as {} alert(s)",
            self.target.url,
            lines.len(),
            out.len()
        );
        Ok(true)
    }

    /// Post `alerts`; when refused as invalid, one at a time (below).
    fn send(&self, alerts: &[Outgoing]) -> io::Result<()> {
        match self.post(alerts) {
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => self.post_one_by_one(alerts, &e),
            other => other,
        }
    }

    /// Alertmanager refused a batch as invalid (400): no repeat of it will
    /// be accepted, and retrying it for ever would hold back every alarm
    /// after it. Send its alerts one at a time; one refused alone is
    /// logged as an error and skipped (it stays in `alarms.log`); any other
    /// failure is retried as usual.
    fn post_one_by_one(&self, alerts: &[Outgoing], why: &io::Error) -> io::Result<()> {
        log::warn!(
            "Alertmanager {} refused a batch of {} alert(s): {why}; sending them one at a time",
            self.target.url,
            alerts.len()
        );
        for alert in alerts {
            let alone = if alerts.len() == 1 {
                Err(io::Error::new(io::ErrorKind::InvalidInput, why.to_string()))
            } else {
                self.post(std::slice::from_ref(alert))
            };
            match alone {
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => log::error!(
                    "Alertmanager {} refuses the alert for alarm {} ({} {} {}): {e}; skipped (it is in alarms.log)",
                    self.target.url,
                    alert.id,
                    alert.host,
                    alert.log_type,
                    alert.level
                ),
                other => other?,
            }
        }
        Ok(())
    }

    fn run(mut self, wake: Receiver<()>, stop: Arc<AtomicBool>) {
        let mut failures = 0u32;
        let mut next_try = Instant::now();
        // Due at once: a new or restarted forwarder tells what fires.
        let mut last_resend: Option<Instant> = None;
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= next_try {
                let result = self.forward_batch().and_then(|sent| {
                    let due = last_resend.is_none_or(|t| t.elapsed() >= self.settings.resend);
                    if !sent && due {
                        let firing = self.told.firing_now();
                        if !firing.is_empty() {
                            self.send(&firing)?;
                        }
                        last_resend = Some(Instant::now());
                    }
                    Ok(sent)
                });
                match result {
                    Ok(sent) => {
                        if failures > 0 {
                            log::info!("{}: accepts alerts again", self.target.url);
                        }
                        failures = 0;
                        if sent {
                            continue;
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        let wait = Duration::from_secs(1)
                            .saturating_mul(1 << (failures - 1).min(6))
                            .min(BACKOFF_MAX);
                        if failures == 1 {
                            log::warn!(
                                "Alertmanager {}: {e}; the alarms wait in alarms.log and are sent again (every {:?} at most), logged again when it accepts",
                                self.target.url,
                                BACKOFF_MAX
                            );
                        } else {
                            log::debug!("Alertmanager {}: still failing: {e}", self.target.url);
                        }
                        next_try = Instant::now() + wait;
                    }
                }
            }
            let resend_in = last_resend.map_or(Duration::ZERO, |t| {
                self.settings.resend.saturating_sub(t.elapsed())
            });
            let wait = next_try
                .saturating_duration_since(Instant::now())
                .max(resend_in)
                .min(Duration::from_millis(500));
            match wake.recv_timeout(wait) {
                // New alarms: try now unless backing off.
                Ok(()) => {}
                Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam::channel::RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            }
        }
    }
}

/// Bytes of `alarms.log` the Alertmanager at `url` has not accepted yet
/// (for `/metrics`); `None` before its forwarder first ran.
pub(crate) fn unsent_bytes(log_dir: &Path, url: &str) -> Option<u64> {
    let files = MasterFiles::new(log_dir);
    let cursor: u64 = std::fs::read_to_string(files.alertmanager_cursor(url))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let logged = std::fs::metadata(files.alarms()).map_or(0, |m| m.len());
    Some(logged.saturating_sub(cursor))
}

/// Start one forwarding thread per Alertmanager; returns the function
/// that wakes them (call it after each alarm is stored).
pub(crate) fn start(
    log_dir: &Path,
    targets: &[Target],
    settings: &Settings,
    stop: Arc<AtomicBool>,
) -> io::Result<Box<dyn Fn() + Send>> {
    let mut wakers: Vec<Sender<()>> = Vec::new();
    for target in targets {
        let (tx, rx) = crossbeam::channel::bounded(1);
        let forwarder = Forwarder::open(log_dir, target.clone(), settings.clone())?;
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("alertmanager".into())
            .spawn(move || forwarder.run(rx, stop))?;
        wakers.push(tx);
    }
    Ok(Box::new(move || {
        for w in &wakers {
            let _ = w.try_send(());
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: &str, host: &str, ty: &str, level: &str, id: &str) -> AlarmLine {
        AlarmLine {
            time: t.into(),
            host: host.into(),
            log_type: ty.into(),
            level: level.into(),
            id: id.into(),
            message: format!("{level} msg"),
        }
    }

    /// A fake Alertmanager: 400 for any request whose body mentions
    /// "poison", else 200; the bodies it got.
    fn fake_alertmanager() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = io::BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    io::BufRead::read_line(&mut reader, &mut line).unwrap();
                    if let Some(v) = line.strip_prefix("Content-Length: ") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).unwrap();
                let body = String::from_utf8(body).unwrap();
                let status = if body.contains("poison") {
                    "400 Bad Request"
                } else {
                    "200 OK"
                };
                seen.lock().unwrap().push(body);
                let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        (addr, bodies)
    }

    #[test]
    fn a_refused_alert_is_skipped_alone_and_the_rest_go_through() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, bodies) = fake_alertmanager();
        let target = Target::parse(&format!("http://{addr}")).unwrap();
        let settings = Settings {
            resend: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
        };
        std::fs::create_dir_all(dir.path().join(".master")).unwrap();
        let alarms = dir.path().join(".master/alarms.log");
        std::fs::write(&alarms, "").unwrap();
        let mut f = Forwarder::open(dir.path(), target.clone(), settings.clone()).unwrap();
        let t = "2026-12-04T10:00:00+00:00";
        std::fs::write(
            &alarms,
            format!(
                "{t} pi1 cpu warning a1 load high\n{t} pi2 cpu critical a2 poison\n{t} pi3 disk warning a3 full\n"
            ),
        )
        .unwrap();
        assert!(f.forward_batch().unwrap());
        assert!(
            !f.forward_batch().unwrap(),
            "the cursor moved past all three"
        );
        let got = bodies.lock().unwrap().clone();
        assert_eq!(got.len(), 4, "one batch, then one at a time: {got:?}");
        assert!(got[1].contains("pi1") && got[3].contains("pi3"));
        // Restarted: the cursor is durable, nothing is sent again but
        // what fires (the resend).
        let f = Forwarder::open(dir.path(), target, settings).unwrap();
        assert_eq!(f.cursor, std::fs::metadata(&alarms).unwrap().len());
        let firing: Vec<String> = f.told.firing_now().into_iter().map(|o| o.host).collect();
        assert_eq!(firing, ["pi1", "pi2", "pi3"]);
    }

    #[test]
    fn levels_fire_escalate_and_resolve() {
        let mut told = Told::default();
        let mut out = Vec::new();
        let t1 = "2026-12-04T10:00:00+00:00";
        let t2 = "2026-12-04T10:01:00+00:00";
        let t3 = "2026-12-04T10:02:00+00:00";
        told.apply(&line(t1, "pi1", "cpu", "warning", "a"), false, &mut out);
        told.apply(&line(t2, "pi1", "cpu", "warning", "b"), false, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].starts_at, t1, "a re-alarm keeps its start");
        out.clear();
        told.apply(&line(t2, "pi1", "cpu", "critical", "c"), false, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].level.as_str(), out[0].ends_at.as_deref()),
            ("warning", Some(t2))
        );
        assert_eq!(
            (out[1].level.as_str(), out[1].ends_at.as_deref()),
            ("critical", None)
        );
        out.clear();
        // Silenced problems are not told; a recovery of a told one is.
        told.apply(&line(t2, "pi2", "disk", "critical", "d"), true, &mut out);
        assert!(out.is_empty());
        told.apply(&line(t3, "pi1", "cpu", "normal", "e"), true, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].level.as_str(), out[0].ends_at.as_deref()),
            ("critical", Some(t3))
        );
        out.clear();
        told.apply(&line(t3, "pi2", "disk", "normal", "f"), false, &mut out);
        assert!(out.is_empty(), "never fired there");
        assert!(told.firing_now().is_empty());
        // The JSON Alertmanager gets.
        let o = Outgoing {
            host: "pi1".into(),
            log_type: "host".into(),
            level: "critical".into(),
            message: "m".into(),
            id: "x".into(),
            starts_at: t3.into(),
            ends_at: Some(t1.into()),
        };
        let j = o.json(chrono::Utc::now());
        assert_eq!(j["labels"]["alertname"], "pihealth_host");
        assert_eq!(j["labels"]["level"], "critical");
        assert!(j["endsAt"].as_str().unwrap() > j["startsAt"].as_str().unwrap());
    }

    #[test]
    fn only_complete_lines_are_read_and_the_last_alert_per_labels_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alarms.log");
        std::fs::write(
            &path,
            "t pi1 cpu warning a m1\nt pi1 cpu normal b m2\nt pi1 cp",
        )
        .unwrap();
        let (lines, next) = read_after(&path, 0).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(next, 45, "after the second newline");
        let (lines, again) = read_after(&path, next).unwrap();
        assert!(lines.is_empty() && again == next);
        let mut told = Told::default();
        let mut out = Vec::new();
        told.apply(&line("t", "pi1", "cpu", "warning", "a"), false, &mut out);
        told.apply(&line("u", "pi1", "cpu", "normal", "b"), false, &mut out);
        let kept = last_per_alert(out);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].ends_at.as_deref(), Some("u"));
    }
}
