//! One pull of one agent: list what is pending on the control connection,
//! fetch the pieces one after another over one short-lived data
//! connection (dialled at the first piece, closed at the end of the pull,
//! dialled anew only after a piece failed mid-way), store them, commit,
//! and only then acknowledge.
//!
//! Both connections authenticate as the agent's host (protocol 2): the
//! master derives that host's key, so only that agent can answer, and the
//! pieces stored under its name came from it.
//!
//! Sharing one data connection among the pieces changes nothing on a
//! crash: a piece cut off mid-way (either side killed, the connection
//! lost) is not committed and not acknowledged, so the agent keeps it and
//! offers it again at the next pull; the archive takes only the bytes
//! beyond what it has.
//!
//! A failure fetching a piece of one type stops that type for this round
//! (later pieces of it would land out of order) but not the other types.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::master::archive::{HostArchive, OpenError, Plan};
use crate::net::TimedStream;
use crate::protocol::message::{AgentInfo, Offer, PieceKind};
use crate::protocol::{Connection, Credentials, KeyMemory, Message, Purpose, Received};

/// Most `ListPending` rounds in one pull (each moves up to 256 pieces).
const MAX_ROUNDS: usize = 64;

#[derive(Clone)]
pub struct PullContext {
    /// The fleet keys (`key_file` first, then `previous_key_files`) and
    /// the revoked hosts: each host's keys are derived from them.
    pub credentials: Credentials,
    /// Which key each agent answered to, tried first next time (shared by
    /// the clones of a context, so by every pull and probe of a daemon).
    pub key_memory: Arc<KeyMemory>,
    pub log_root: PathBuf,
    pub backup_root: PathBuf,
    pub rotate_size: u64,
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    /// Byte counts for a progress display (`pihealth pull`); `None` in the daemon.
    pub progress: Option<Arc<Progress>>,
}

impl PullContext {
    /// A connection whose handshake is done within `io_timeout` (see
    /// `Connection<TimedStream>` for every deadline a pull works under).
    fn dial(
        &self,
        addr: SocketAddr,
        purpose: Purpose,
        host: &str,
    ) -> io::Result<Connection<TimedStream>> {
        let keys = self
            .credentials
            .keys_for(host)
            .map_err(|why| io::Error::new(io::ErrorKind::PermissionDenied, why))?;
        self.key_memory.dial(
            addr,
            &keys,
            purpose,
            host,
            self.connect_timeout,
            self.io_timeout,
        )
    }

    /// The control connection to the agent at `control`, authenticated as
    /// `name`, or (unknown) as whatever name the agent gives. A name asked
    /// but whose key does not open is forgotten, so the next try asks again.
    fn dial_control(
        &self,
        control: SocketAddr,
        name: Option<&str>,
    ) -> io::Result<Connection<TimedStream>> {
        match name {
            Some(host) => self.dial(control, Purpose::Control, host),
            None => {
                let host =
                    self.key_memory
                        .name_of(control, self.connect_timeout, self.io_timeout)?;
                let conn = self.dial(control, Purpose::Control, &host);
                if conn.is_err() {
                    self.key_memory.forget_name(control);
                }
                conn
            }
        }
    }
}

/// How far each running pull has got, shared with whoever displays it.
#[derive(Default)]
pub struct Progress {
    agents: Mutex<BTreeMap<SocketAddr, AgentProgress>>,
}

#[derive(Debug, Clone, Default)]
pub struct AgentProgress {
    pub host: String,
    /// Bytes offered so far (grows when a pull takes several rounds).
    pub offered: u64,
    /// Bytes received over data connections so far.
    pub received: u64,
    pub finished: bool,
}

impl Progress {
    pub(crate) fn update(&self, control: SocketAddr, change: impl FnOnce(&mut AgentProgress)) {
        let mut agents = crate::sync::lock(&self.agents);
        change(agents.entry(control).or_default());
    }

    pub fn finished(&self, control: SocketAddr) {
        self.update(control, |a| a.finished = true);
    }

    pub fn snapshot(&self) -> Vec<(SocketAddr, AgentProgress)> {
        let agents = crate::sync::lock(&self.agents);
        agents.iter().map(|(k, v)| (*k, v.clone())).collect()
    }
}

#[derive(Debug, Default)]
pub struct PullReport {
    pub host: String,
    pub info: Option<AgentInfo>,
    pub skew_ms: i64,
    pub pieces: usize,
    /// Log bytes newly stored (uncompressed).
    pub bytes: u64,
    /// Bytes that crossed data connections.
    pub wire_bytes: u64,
    pub already_had: usize,
    pub failed_pieces: Vec<String>,
    pub events: Vec<String>,
    pub elapsed: Duration,
}

#[derive(Debug)]
pub enum PullError {
    Busy(String),
    Failed(String),
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PullError::Busy(h) => write!(f, "{h}: another pull of this host is in progress"),
            PullError::Failed(e) => f.write_str(e),
        }
    }
}

fn failed(e: impl std::fmt::Display) -> PullError {
    PullError::Failed(e.to_string())
}

/// An I/O error in words an operator reads: a socket timeout shows up as
/// "Resource temporarily unavailable" otherwise.
fn describe(e: &io::Error) -> String {
    if crate::protocol::is_wrong_key(e) {
        // Says what a hang-up at the hello may mean (another key, a
        // revoked or unknown host, or a peer still on protocol 1).
        return e.to_string();
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("timed out waiting for the agent ({e})")
        }
        io::ErrorKind::UnexpectedEof => "the agent closed the connection".to_string(),
        _ => e.to_string(),
    }
}

fn io_failed(e: io::Error) -> PullError {
    PullError::Failed(describe(&e))
}

/// Ask an agent who it is (a liveness probe).
pub fn probe(
    ctx: &PullContext,
    control: SocketAddr,
    name: Option<&str>,
) -> io::Result<(AgentInfo, i64)> {
    let sent = chrono::Utc::now().timestamp_millis();
    let mut conn = ctx.dial_control(control, name)?;
    let info = match conn.request(&Message::Ping, ctx.io_timeout)? {
        Message::Pong(info) => info,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected Pong, got {}", other.kind()),
            ))
        }
    };
    let _ = conn
        .allow(ctx.io_timeout)
        .and_then(|()| conn.send(&Message::Bye));
    if info.name != conn.host() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "agent authenticated as {:?} calls itself {:?}",
                conn.host(),
                info.name
            ),
        ));
    }
    Ok((info.clone(), skew(sent, info.time_ms)))
}

/// Agent clock minus ours, taking our clock at the middle of the exchange.
fn skew(sent_ms: i64, agent_ms: i64) -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    agent_ms.saturating_sub(sent_ms.saturating_add(now.saturating_sub(sent_ms) / 2))
}

/// Pull everything pending from the agent at `control`. `name` is the
/// host it should be (configured or registered), if known; otherwise the
/// agent is asked its name, which its key must then prove.
pub fn pull_agent(
    ctx: &PullContext,
    control: SocketAddr,
    name: Option<&str>,
) -> Result<PullReport, PullError> {
    let started = Instant::now();
    let mut conn = ctx.dial_control(control, name).map_err(io_failed)?;
    let mut report = PullReport::default();
    // One data connection for the whole pull (SPEC §2).
    let mut data: Option<Connection<TimedStream>> = None;
    let mut archive: Option<HostArchive> = None;
    for _ in 0..MAX_ROUNDS {
        let sent = chrono::Utc::now().timestamp_millis();
        let (info, offers, more) = match conn
            .request(&Message::ListPending, ctx.io_timeout)
            .map_err(io_failed)?
        {
            Message::Pending { info, offers, more } => (info, offers, more),
            other => return Err(failed(format!("expected Pending, got {}", other.kind()))),
        };
        report.skew_ms = skew(sent, info.time_ms);
        // The host the connection proved; the agent cannot name another.
        let host = conn.host().to_string();
        if info.name != host {
            return Err(failed(format!(
                "agent at {control} authenticated as {host:?} calls itself {:?}",
                info.name
            )));
        }
        report.host = host.clone();
        report.info = Some(info.clone());
        if let Some(p) = &ctx.progress {
            let offered: u64 = offers.iter().map(|o| o.size).sum();
            p.update(control, |a| {
                a.host = host.clone();
                a.offered += offered;
            });
        }
        if offers.is_empty() {
            break;
        }
        if archive.is_none() {
            archive = Some(
                match HostArchive::open(&ctx.log_root, &ctx.backup_root, &host, ctx.rotate_size) {
                    Ok(a) => a,
                    Err(OpenError::Busy) => return Err(PullError::Busy(host)),
                    Err(OpenError::Io(e)) => {
                        return Err(failed(format!("{host}: cannot open the archive: {e}")))
                    }
                },
            );
        }
        let store = archive.as_mut().expect("opened above");
        let data_addr = SocketAddr::new(control.ip(), info.data_port);
        let mut acks = Vec::new();
        let mut broken_types: Vec<String> = Vec::new();
        for offer in &offers {
            let piece = &offer.piece;
            if broken_types.contains(&piece.log_type) {
                continue;
            }
            if crate::names::check_type_name(&piece.log_type).is_err() {
                report
                    .failed_pieces
                    .push(format!("{:?}: bad type name", piece.log_type));
                broken_types.push(piece.log_type.clone());
                continue;
            }
            match store.plan(piece) {
                Plan::AlreadyHave => {
                    report.already_had += 1;
                    acks.push(piece.clone());
                }
                Plan::Fetch { skip } => match fetch(
                    ctx, &mut data, &host, control, data_addr, offer, skip, store,
                ) {
                    Ok(stored) => {
                        report.pieces += 1;
                        report.bytes += stored;
                        report.wire_bytes += offer.size;
                        acks.push(piece.clone());
                    }
                    Err(e) => {
                        // The data connection may be mid-piece: a new one
                        // for the next type.
                        data = None;
                        let e = describe(&e);
                        log::warn!(
                            "{host}: {} {}..{} not fetched: {e}",
                            piece.log_type,
                            piece.start,
                            piece.end
                        );
                        report.failed_pieces.push(format!(
                            "{} {}..{}: {e}",
                            piece.log_type, piece.start, piece.end
                        ));
                        broken_types.push(piece.log_type.clone());
                    }
                },
            }
        }
        report.events.append(&mut store.events);
        crate::failpoint::hit("pull.after_store");
        // Durable first, acknowledged second.
        store
            .commit()
            .map_err(|e| failed(format!("{host}: cannot commit: {e}")))?;
        crate::failpoint::hit("pull.after_commit");
        if !acks.is_empty() {
            match conn
                .request(&Message::Ack(acks), ctx.io_timeout)
                .map_err(io_failed)?
            {
                Message::AckOk => {}
                other => return Err(failed(format!("expected AckOk, got {}", other.kind()))),
            }
        }
        if !more || !broken_types.is_empty() {
            break;
        }
    }
    if let Some(mut data) = data {
        let _ = data
            .allow(ctx.io_timeout)
            .and_then(|()| data.send(&Message::Bye));
    }
    let _ = conn
        .allow(ctx.io_timeout)
        .and_then(|()| conn.send(&Message::Bye));
    report.elapsed = started.elapsed();
    if report.failed_pieces.is_empty() {
        Ok(report)
    } else {
        Err(failed(format!(
            "{}: {} piece(s) failed, first: {}",
            report.host,
            report.failed_pieces.len(),
            report.failed_pieces[0]
        )))
    }
}

/// Fetch one piece over the pull's data connection (dialled if there is
/// none yet) into the archive.
#[allow(clippy::too_many_arguments)]
fn fetch(
    ctx: &PullContext,
    data: &mut Option<Connection<TimedStream>>,
    host: &str,
    control: SocketAddr,
    data_addr: SocketAddr,
    offer: &Offer,
    skip: u64,
    store: &mut HostArchive,
) -> io::Result<u64> {
    let conn = match data {
        Some(conn) => conn,
        None => data.insert(ctx.dial(data_addr, Purpose::Data, host)?),
    };
    conn.allow(ctx.io_timeout)?;
    conn.send(&Message::Fetch { token: offer.token })?;
    let mut reader = ChunkReader {
        conn,
        frame_timeout: ctx.io_timeout,
        frame: Vec::new(),
        chunk: 0..0,
        received: 0,
        expected: offer.size,
        done: false,
        progress: ctx.progress.as_deref().map(|p| (p, control)),
    };
    let stored = match offer.piece.kind {
        PieceKind::Current => store.store_current(&offer.piece, skip, &mut reader),
        PieceKind::Archive => store.store_archive(&offer.piece, skip, offer.size, &mut reader),
    }?;
    // Read on to the piece's `End` (checked there) even if the archive
    // stopped short of it: the connection then stands at the next piece.
    loop {
        let n = reader.fill_buf()?.len();
        if n == 0 {
            break;
        }
        reader.consume(n);
    }
    Ok(stored)
}

/// The bytes of a piece as they arrive in `Chunk` frames; ends at `End`,
/// which must agree with what arrived and with the size offered. As a
/// `BufRead` it hands out each chunk where it was received, so the
/// archive writes it to its file with no copy in between.
struct ChunkReader<'a> {
    conn: &'a mut Connection<TimedStream>,
    /// How long each frame may take to arrive whole: the deadline of a
    /// bulk transfer moves with its progress (see `Connection::allow`).
    frame_timeout: Duration,
    /// The last frame received (reused for every frame of the piece).
    frame: Vec<u8>,
    /// What of the current chunk's data in `frame` is not yet consumed.
    chunk: Range<usize>,
    received: u64,
    expected: u64,
    done: bool,
    progress: Option<(&'a Progress, SocketAddr)>,
}

impl BufRead for ChunkReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.chunk.is_empty() {
            if self.done {
                return Ok(&[]);
            }
            self.conn.allow(self.frame_timeout)?;
            match self.conn.recv_into(&mut self.frame)? {
                Received::Chunk(data) => {
                    let n = data.len() as u64;
                    self.received += n;
                    if self.received > self.expected {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "agent sent more than it offered",
                        ));
                    }
                    if let Some((p, control)) = self.progress {
                        p.update(control, |a| a.received += n);
                    }
                    self.chunk = data;
                }
                Received::Message(Message::End { len }) => {
                    if len != self.received || len != self.expected {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "piece ended at {len} bytes; received {}, offered {}",
                                self.received, self.expected
                            ),
                        ));
                    }
                    self.done = true;
                }
                Received::Message(other) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("expected Chunk, got {}", other.kind()),
                    ))
                }
            }
        }
        Ok(&self.frame[self.chunk.clone()])
    }

    fn consume(&mut self, n: usize) {
        self.chunk.start = (self.chunk.start + n).min(self.chunk.end);
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let data = self.fill_buf()?;
        let n = out.len().min(data.len());
        out[..n].copy_from_slice(&data[..n]);
        self.consume(n);
        Ok(n)
    }
}
