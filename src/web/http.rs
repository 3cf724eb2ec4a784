//! The master's HTTP port (`http_listen`, default 127.0.0.1:8082): the
//! status page `/`, Prometheus `/metrics`, `/api/status.json` and
//! `/healthz`. Read-only and without a key, which is why it listens on
//! loopback unless the operator opens it.
//!
//! Served like the other master ports: blocking sockets, and the accept
//! loop hands each connection to a fixed pool — its own (`http_workers`),
//! so page loads and scrapes never take a worker from pulls or
//! heartbeats. A connection takes a worker only once its whole request
//! head has arrived (`net::WaitingRoom`), and the stream's deadline (one
//! `io_timeout` from when a worker took it) bounds the whole exchange, so a
//! slow client is cut off. One request per connection (`Connection:
//! close`), GET and HEAD only, a request head of at most 8 KiB, parsed
//! strictly: anything else gets a 4xx and the connection closed.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::MasterConfig;
use crate::master::registry::{now_ms, AgentRecord, Registry};
use crate::net::TimedStream;
use crate::web::alarm_summary::{AlarmFollower, AlarmSummary};
use crate::web::exposition;
use crate::web::metrics::{self, Snapshot};
use crate::web::page::{self, Chart, HostCharts, Page};
use crate::web::samples::{points, ArchiveReader, Window};

/// Longest request line plus headers.
pub const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;
const DEFAULT_HOURS: u32 = 6;
const MAX_HOURS: u32 = 48;
/// After the response, unread request bytes are drained (so closing does
/// not reset the connection under the response) up to this much.
const DRAIN_LIMIT: u64 = 64 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub path: String,
    /// After `?`, without it; empty if none.
    pub query: String,
}

/// Why a request head is refused; each maps to one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400, with a reason for the log and the body.
    Bad(&'static str),
    /// 431: the head exceeds `MAX_HEAD`.
    TooLarge,
    /// 405: a well-formed method we do not serve.
    Method(String),
    /// 505: HTTP/2.0 and the like on this port.
    Version,
}

impl Refusal {
    fn response(&self) -> Response {
        match self {
            Refusal::Bad(why) => Response::text(400, format!("bad request: {why}\n")),
            Refusal::TooLarge => Response::text(431, "request head too large\n".into()),
            Refusal::Method(m) => {
                let mut r = Response::text(405, format!("method {m} not allowed\n"));
                r.headers.push(("Allow", "GET, HEAD".into()));
                r
            }
            Refusal::Version => Response::text(505, "only HTTP/1.1 and HTTP/1.0\n".into()),
        }
    }
}

#[derive(Debug)]
pub enum ReadError {
    /// The peer closed without sending anything (a port check, our own
    /// wake-up at shutdown): nothing to answer.
    Closed,
    Refused(Refusal),
    Io(io::Error),
}

/// Read one request head: the bytes up to and including the empty line.
/// A bare `\n\n` also ends it (and is then refused by the parser), so a
/// client that does not send CRLF gets an answer, not a timeout.
pub fn read_head(r: &mut impl Read) -> Result<Vec<u8>, ReadError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        };
        if n == 0 {
            return Err(if head.is_empty() {
                ReadError::Closed
            } else {
                ReadError::Refused(Refusal::Bad("connection closed inside the request head"))
            });
        }
        let searched = head.len().saturating_sub(2);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&head, searched) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(ReadError::Refused(Refusal::TooLarge));
        }
    }
}

/// Index just past the first empty line at or after `from`, if any.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len())
        .find_map(|i| {
            if buf[i] != b'\n' {
                return None;
            }
            match (buf.get(i + 1), buf.get(i + 2)) {
                (Some(b'\n'), _) => Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => Some(i + 3),
                _ => None,
            }
        })
        .filter(|&end| end <= MAX_HEAD)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Parse a request head read by `read_head` (RFC 9112, strictly).
pub fn parse_head(head: &[u8]) -> Result<Request, Refusal> {
    let body = head
        .strip_suffix(b"\r\n\r\n")
        .ok_or(Refusal::Bad("lines must end in CRLF"))?;
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    // Every line but the last ends in CR (it was followed by LF); the last
    // had its CRLF stripped. No CR may stand anywhere else.
    let mut clean = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let line = if i + 1 < lines.len() {
            line.strip_suffix(b"\r")
                .ok_or(Refusal::Bad("lines must end in CRLF"))?
        } else {
            line
        };
        if line.contains(&b'\r') {
            return Err(Refusal::Bad("stray CR"));
        }
        clean.push(line);
    }
    let (request_line, headers) = clean.split_first().ok_or(Refusal::Bad("empty request"))?;
    let (method, target, http11) = parse_request_line(request_line)?;
    check_headers(headers, http11)?;
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => return Err(Refusal::Method(other.to_string())),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
    })
}

/// `METHOD SP origin-form SP HTTP/1.x`; returns whether it is 1.1.
fn parse_request_line(line: &[u8]) -> Result<(&str, &str, bool), Refusal> {
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(Refusal::Bad("request line is not METHOD TARGET VERSION"));
    };
    if !is_token(method) {
        return Err(Refusal::Bad("bad method"));
    }
    if target.first() != Some(&b'/') || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(Refusal::Bad("target must be a path starting with /"));
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(Refusal::Version)
        }
        _ => return Err(Refusal::Bad("bad HTTP version")),
    };
    // Both checked to be ASCII above.
    fn text(b: &[u8]) -> Result<&str, Refusal> {
        std::str::from_utf8(b).map_err(|_| Refusal::Bad("not ASCII"))
    }
    Ok((text(method)?, text(target)?, http11))
}

/// `name: value` lines; HTTP/1.1 needs exactly one Host. No request body
/// is accepted (we would not read it).
fn check_headers(headers: &[&[u8]], http11: bool) -> Result<(), Refusal> {
    if headers.len() > MAX_HEADERS {
        return Err(Refusal::Bad("too many header fields"));
    }
    let mut hosts = 0;
    for line in headers {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(Refusal::Bad("folded header lines are not allowed"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(Refusal::Bad("header line without a colon"))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if !is_token(name) {
            return Err(Refusal::Bad("bad header name"));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(Refusal::Bad("control character in a header value"));
        }
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || (name.eq_ignore_ascii_case(b"content-length") && value != b"0")
        {
            return Err(Refusal::Bad("a request body is not accepted here"));
        }
    }
    if http11 && hosts != 1 {
        return Err(Refusal::Bad("HTTP/1.1 needs exactly one Host header"));
    }
    Ok(())
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    fn text(status: u16, body: String) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body.into_bytes())
    }

    fn html(body: String) -> Response {
        let mut r = Response::new(200, "text/html; charset=utf-8", body.into_bytes());
        // No scripts, no outside resources, no framing: the page needs none.
        r.headers.push((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'"
                .into(),
        ));
        r.headers.push(("Referrer-Policy", "no-referrer".into()));
        r
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Status line, headers and (unless HEAD) the body, in one write.
pub fn write_response(w: &mut impl Write, r: &Response, head_only: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nDate: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Connection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
        r.status,
        reason(r.status),
        chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT"),
        r.content_type,
        r.body.len()
    );
    for (name, value) in &r.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&r.body);
    }
    w.write_all(&bytes)?;
    w.flush()
}

/// The `hours` of `/?hours=N`: 1 to 48, default 6.
fn hours_param(query: &str) -> Result<u32, Refusal> {
    let mut hours = DEFAULT_HOURS;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if let Some(v) = pair.strip_prefix("hours=") {
            hours = v
                .parse()
                .ok()
                .filter(|h| (1..=MAX_HOURS).contains(h))
                .ok_or(Refusal::Bad("hours must be a whole number from 1 to 48"))?;
        }
    }
    Ok(hours)
}

/// What the HTTP handlers share; one per master.
pub struct Http {
    registry: Arc<Registry>,
    reader: ArchiveReader,
    alarms: Mutex<AlarmFollower>,
    started_ms: i64,
    master_name: String,
    silences: crate::master::silences::SilenceStore,
    log_dir: std::path::PathBuf,
    alertmanagers: Vec<String>,
}

impl Http {
    pub fn new(config: &MasterConfig, registry: Arc<Registry>) -> Http {
        Http {
            registry,
            reader: ArchiveReader::new(&config.log_dir, &config.backup_dir),
            alarms: Mutex::new(AlarmFollower::new(&config.log_dir)),
            started_ms: now_ms(),
            master_name: crate::names::local_host_name(),
            silences: crate::master::silences::SilenceStore::new(&config.log_dir),
            log_dir: config.log_dir.clone(),
            alertmanagers: config.alertmanagers.clone(),
        }
    }

    /// Serve one connection: one request, one response, close.
    pub fn handle(&self, mut stream: TimedStream, peer: SocketAddr) {
        let started = Instant::now();
        let (request, response) = match read_head(&mut stream) {
            Ok(head) => match parse_head(&head) {
                Ok(req) => {
                    let resp = self.route(&req);
                    (Some(req), resp)
                }
                Err(why) => (None, why.response()),
            },
            Err(ReadError::Closed) => return,
            Err(ReadError::Io(e)) => {
                log::debug!("http: {peer}: cut off while reading the request: {e}");
                return;
            }
            Err(ReadError::Refused(why)) => (None, why.response()),
        };
        log_exchange(peer, request.as_ref(), &response, started);
        let head_only = request.is_some_and(|r| r.method == Method::Head);
        if let Err(e) = write_response(&mut stream, &response, head_only) {
            log::debug!("http: {peer}: cannot send the response: {e}");
            return;
        }
        linger(&mut stream);
    }

    /// The answer to a well-formed request.
    fn route(&self, req: &Request) -> Response {
        match req.path.as_str() {
            "/" => match hours_param(&req.query) {
                Ok(hours) => Response::html(self.page(hours)),
                Err(why) => why.response(),
            },
            "/metrics" => Response::new(200, exposition::CONTENT_TYPE, self.metrics().into_bytes()),
            "/healthz" => Response::text(200, "ok\n".into()),
            "/api/status.json" => {
                Response::new(200, "application/json", self.status_json().into_bytes())
            }
            _ => Response::text(404, "not found\n".into()),
        }
    }

    fn alarm_summary(&self) -> AlarmSummary {
        let mut follower = crate::sync::lock(&self.alarms);
        if let Err(e) = follower.refresh() {
            // Keep showing what was read before rather than "no alarms".
            log::warn!("http: cannot read alarms.log: {e}");
        }
        follower.summary().clone()
    }

    pub fn metrics(&self) -> String {
        let agents = self.registry.snapshot();
        let alarms = self.alarm_summary();
        let pulls = self.registry.pull_stats();
        let hosts = host_names(&agents)
            .iter()
            .map(|h| metrics::host_values(&self.reader, h))
            .collect();
        let mut text = metrics::render(&Snapshot {
            agents: &agents,
            alarms: &alarms,
            pulls: &pulls,
            started_ms: self.started_ms,
            hosts,
        });
        let silences = self.silences.list().map_or(0, |l| l.len());
        text.push_str(&crate::master::alertmanager::metrics(
            &self.log_dir,
            &self.alertmanagers,
            silences,
        ));
        text
    }

    pub fn page(&self, hours: u32) -> String {
        let agents = self.registry.snapshot();
        let alarms = self.alarm_summary();
        let now = now_ms();
        let names = host_names(&agents);
        let full = Window::new(now.div_euclid(1000), i64::from(hours) * 3600);
        let mut window = full;
        let mut hosts: Vec<HostCharts> = names
            .iter()
            .map(|host| self.host_charts(host, &full))
            .collect();
        // A young fleet (a fresh install, the demo) would fill only the
        // right edge of the window: span the history there is instead. A
        // second pass, with finer buckets, finds the first sample closer.
        for _ in 0..2 {
            let Some(zoomed) = zoom(&window, &hosts) else {
                break;
            };
            window = zoomed;
            hosts = names
                .iter()
                .map(|host| self.host_charts(host, &window))
                .collect();
        }
        let silences = self.silences.list().unwrap_or_else(|e| {
            log::warn!("silences for the status page: {e}");
            Vec::new()
        });
        page::render(&Page {
            master: &self.master_name,
            agents: &agents,
            alarms: &alarms,
            silences: &silences,
            now_ms: now,
            hours,
            window,
            zoomed: window != full,
            hosts,
        })
    }

    fn host_charts(&self, host: &str, w: &Window) -> HostCharts {
        let series = |log_type: &str| match self.reader.series(host, log_type, w) {
            Ok(b) => points(&b, w),
            Err(e) => {
                log::warn!("{host}: cannot read the {log_type} log for the status page: {e}");
                Vec::new()
            }
        };
        let charts = vec![
            Chart {
                title: "CPU usage",
                color: "#2563eb",
                points: series("cpu"),
            },
            Chart {
                title: "Memory used",
                color: "#7c3aed",
                points: series("mem"),
            },
            Chart {
                title: "Disk used (all local file systems)",
                color: "#0d9488",
                points: series("disk"),
            },
        ];
        HostCharts {
            host: host.to_string(),
            charts,
        }
    }

    fn status_json(&self) -> String {
        let agents = self.registry.snapshot();
        let alarms = self.alarm_summary();
        let value = serde_json::json!({
            "generated_ms": now_ms(),
            "agents": agents,
            "open_alarms": alarms.open(),
        });
        let mut text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| "{}".into());
        text.push('\n');
        text
    }
}

/// The shorter window to draw when every series starts well inside `full`:
/// from the oldest point to the end, in steps of 15 s, a minute or 5
/// minutes by length, so that bucket widths repeat and archives' buckets
/// come from the cache.
fn zoom(full: &Window, hosts: &[HostCharts]) -> Option<Window> {
    let first = hosts
        .iter()
        .flat_map(|h| &h.charts)
        .filter_map(|c| c.points.first())
        .map(|(t, _)| *t)
        .min()?;
    // A point stands at the middle of its bucket: the sample may be half a
    // bucket older.
    let history = full.end - first + full.bucket / 2 + 1;
    let step = match history {
        ..=300 => 15,
        301..=900 => 60,
        _ => 300,
    };
    let span = (history + step - 1) / step * step;
    (span * 10 < (full.end - full.start) * 9).then(|| Window::new(full.end, span))
}

/// The distinct host names of the fleet that may be directories, in
/// registry order (an agent not yet named has no archive).
fn host_names(agents: &[AgentRecord]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in agents.iter().filter_map(|a| a.name.as_ref()) {
        if crate::names::check_host_name(name).is_ok() && !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

fn log_exchange(
    peer: SocketAddr,
    request: Option<&Request>,
    response: &Response,
    started: Instant,
) {
    match request {
        Some(r) if response.status < 400 => log::debug!(
            "http: {peer} {:?} {} {} in {:?}",
            r.method,
            r.path,
            response.status,
            started.elapsed()
        ),
        // Unauthenticated peers can send anything: keep refusals out of the
        // default log level (a scanner would fill it), but name the peer.
        _ => log::debug!(
            "http: {peer}: {} {}",
            response.status,
            String::from_utf8_lossy(&response.body).trim_end()
        ),
    }
}

/// Half-close and read what the client still sends (bounded), so that
/// unread request bytes do not turn our close into a reset that could
/// destroy the response still in flight.
fn linger(stream: &mut TimedStream) {
    if stream.shutdown_write().is_err() || stream.set_io_timeout(DRAIN_TIMEOUT).is_err() {
        return;
    }
    let _ = io::copy(&mut stream.take(DRAIN_LIMIT), &mut io::sink());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, Refusal> {
        let head = read_head(&mut text.as_bytes()).map_err(|e| match e {
            ReadError::Refused(r) => r,
            other => panic!("{other:?}"),
        })?;
        parse_head(&head)
    }

    #[test]
    fn a_good_request() {
        let r = parse("GET /?hours=12 HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n").unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/");
        assert_eq!(r.query, "hours=12");
        assert_eq!(hours_param(&r.query), Ok(12));
        let r = parse("HEAD /metrics HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.method, Method::Head);
        // Bytes after the head (a pipelined request) are not part of it.
        let r = parse("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n").unwrap();
        assert_eq!(r.path, "/a");
    }

    #[test]
    fn an_oversize_head_is_refused_without_reading_on() {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(parse(&big), Err(Refusal::TooLarge));
        // Endless garbage without a line end: refused once past the limit.
        let mut endless = io::repeat(b'x');
        assert!(matches!(
            read_head(&mut endless),
            Err(ReadError::Refused(Refusal::TooLarge))
        ));
    }

    #[test]
    fn methods_other_than_get_and_head() {
        assert_eq!(
            parse("POST / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(Refusal::Method("POST".into()))
        );
        assert!(matches!(
            parse("G(T / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(Refusal::Bad(_))
        ));
        assert_eq!(Refusal::Method("PUT".into()).response().status, 405);
    }

    #[test]
    fn garbage_and_missing_crlf() {
        for text in [
            "GET / HTTP/1.1\nHost: x\n\n",
            "GET / HTTP/1.1\r\nHost: x\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n\n",
            "\u{1}\u{2}\u{3}\r\n\r\n",
            "GET /  HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\rY\r\n\r\n",
            "GET /é HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTX/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(
                matches!(parse(text), Err(Refusal::Bad(_))),
                "accepted or misjudged: {text:?} -> {:?}",
                parse(text)
            );
        }
        assert_eq!(
            parse("GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
            Err(Refusal::Version)
        );
        // Closed before the head ended, or before anything came.
        assert!(matches!(
            read_head(&mut &b"GET / HTTP/1.1\r\nHo"[..]),
            Err(ReadError::Refused(Refusal::Bad(_)))
        ));
        assert!(matches!(read_head(&mut &b""[..]), Err(ReadError::Closed)));
    }

    #[test]
    fn a_young_fleet_is_drawn_over_the_history_it_has() {
        let full = Window::new(1_800_000_000, 6 * 3600);
        let host = |first: i64| HostCharts {
            host: "pi1".into(),
            charts: vec![Chart {
                title: "CPU usage",
                color: "#000",
                points: vec![(first, 1.0), (full.end, 2.0)],
            }],
        };
        // Ten minutes of data, plus half a bucket: an 11-minute window.
        let z = zoom(&full, &[host(full.end - 600)]).expect("zoomed");
        assert_eq!(z.end, full.end);
        assert_eq!(z.end - z.start, 660);
        assert_eq!(z.bucket, 2);
        // Two minutes: steps of 15 s.
        let z = zoom(&full, &[host(full.end - 120)]).expect("zoomed");
        assert_eq!(z.end - z.start, 165);
        // Nearly the whole window: left alone; no data: left alone.
        assert_eq!(zoom(&full, &[host(full.start + 600)]), None);
        assert_eq!(zoom(&full, &[]), None);
    }

    #[test]
    fn hours_are_checked() {
        assert_eq!(hours_param(""), Ok(6));
        assert_eq!(hours_param("x=1&hours=48"), Ok(48));
        for bad in ["hours=0", "hours=49", "hours=-1", "hours=", "hours=6h"] {
            assert!(hours_param(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_say_close_and_length_and_head_has_no_body() {
        let mut out = Vec::new();
        write_response(&mut out, &Response::text(200, "ok\n".into()), false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.contains("\r\nContent-Length: 3\r\n"));
        assert!(text.ends_with("\r\n\r\nok\n"));
        let mut out = Vec::new();
        write_response(&mut out, &Response::text(200, "ok\n".into()), true).unwrap();
        assert!(String::from_utf8(out).unwrap().ends_with("Content-Length: 3\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n"));
    }
}
