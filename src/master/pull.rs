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
use crate::protocol::message::{AgentInfo, Offer, PieceKind, PieceRef};
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
pub(crate) struct AgentProgress {
    pub(crate) host: String,
    /// Bytes offered so far (grows when a pull takes several rounds).
    pub(crate) offered: u64,
    /// Bytes received over data connections so far.
    pub(crate) received: u64,
    pub(crate) finished: bool,
}

impl Progress {
    pub(crate) fn update(&self, control: SocketAddr, change: impl FnOnce(&mut AgentProgress)) {
        let mut agents = crate::sync::lock(&self.agents);
        change(agents.entry(control).or_default());
    }

    pub(crate) fn finished(&self, control: SocketAddr) {
        self.update(control, |a| a.finished = true);
    }

    pub(crate) fn snapshot(&self) -> Vec<(SocketAddr, AgentProgress)> {
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

/// What kind of failure ended a pull: the `kind` label of
/// `pihealth_pull_failures_total`, so an operator can tell a network
/// problem from a key problem from a full disk without reading logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// No answer in time (connect, handshake, or a frame).
    Timeout,
    /// Nothing listens at the address (the connection was refused).
    Refused,
    /// The agent does not hold this host's key (another fleet key, a
    /// revoked or unknown host), or the host may not be pulled at all.
    Key,
    /// The agent closed the connection.
    Closed,
    /// The agent answered something it should not have (a wrong message,
    /// another name, a piece not as offered).
    Protocol,
    /// The master could not store what it fetched (open, write, commit).
    Storage,
    /// Any other network error.
    Network,
}

impl FailureKind {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Refused => "refused",
            FailureKind::Key => "key",
            FailureKind::Closed => "closed",
            FailureKind::Protocol => "protocol",
            FailureKind::Storage => "storage",
            FailureKind::Network => "network",
        }
    }

    /// The kind of an error on a connection to the agent.
    pub(crate) fn of_network(e: &io::Error) -> FailureKind {
        if crate::protocol::is_wrong_key(e) {
            return FailureKind::Key;
        }
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FailureKind::Timeout,
            io::ErrorKind::ConnectionRefused => FailureKind::Refused,
            io::ErrorKind::PermissionDenied => FailureKind::Key,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => FailureKind::Closed,
            io::ErrorKind::InvalidData => FailureKind::Protocol,
            _ => FailureKind::Network,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{0}: another pull of this host is in progress")]
    Busy(String),
    /// Dialling the agent, or a request on the control connection.
    #[error("{}", describe(.0))]
    Connection(#[from] io::Error),
    /// The agent answered something it should not have.
    #[error("{0}")]
    Protocol(String),
    #[error("{host}: cannot open the archive: {source}")]
    OpenArchive { host: String, source: io::Error },
    #[error("{host}: cannot commit: {source}")]
    Commit { host: String, source: io::Error },
    /// Some pieces were not fetched; `kind` is the first one's.
    #[error("{host}: {count} piece(s) failed, first: {first}")]
    Pieces {
        host: String,
        count: usize,
        first: String,
        kind: FailureKind,
    },
}

impl PullError {
    /// What kind of failure this is (`None` for `Busy`, which is no failure).
    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            PullError::Busy(_) => None,
            PullError::Connection(e) => Some(FailureKind::of_network(e)),
            PullError::Protocol(_) => Some(FailureKind::Protocol),
            PullError::OpenArchive { .. } | PullError::Commit { .. } => Some(FailureKind::Storage),
            PullError::Pieces { kind, .. } => Some(*kind),
        }
    }
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

/// A piece not fetched: the error and its kind (a storage error and a
/// network error are both `io::Error`s; `fetch` knows which it was).
struct PieceFailure {
    kind: FailureKind,
    error: io::Error,
}

/// Ask an agent who it is (a liveness probe).
pub(crate) fn probe(
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
    let mut pull = Pull {
        ctx,
        control,
        conn: ctx.dial_control(control, name)?,
        data: None,
        archive: None,
        report: PullReport::default(),
        first_failure: None,
    };
    for _ in 0..MAX_ROUNDS {
        if !pull.round()? {
            break;
        }
    }
    pull.finish(started)
}

/// One pull under way: its connections, the host's archive (opened at the
/// first offer) and what it did so far.
struct Pull<'a> {
    ctx: &'a PullContext,
    control: SocketAddr,
    conn: Connection<TimedStream>,
    /// One data connection for the whole pull (SPEC §2).
    data: Option<Connection<TimedStream>>,
    archive: Option<HostArchive>,
    report: PullReport,
    /// The kind of the first piece that failed.
    first_failure: Option<FailureKind>,
}

impl Pull<'_> {
    /// One `ListPending` round: fetch and store what is offered, commit,
    /// then acknowledge. Whether another round is worth asking for.
    fn round(&mut self) -> Result<bool, PullError> {
        let (data_port, offers, more) = self.list_pending()?;
        if offers.is_empty() {
            return Ok(false);
        }
        self.open_archive()?;
        let data_addr = SocketAddr::new(self.control.ip(), data_port);
        let (acks, broken_types) = self.store_offers(&offers, data_addr);
        let store = self.archive.as_mut().expect("opened above");
        self.report.events.append(&mut store.events);
        crate::failpoint::hit("pull.after_store");
        // Durable first, acknowledged second.
        store.commit().map_err(|source| PullError::Commit {
            host: self.report.host.clone(),
            source,
        })?;
        crate::failpoint::hit("pull.after_commit");
        if !acks.is_empty() {
            match self
                .conn
                .request(&Message::Ack(acks), self.ctx.io_timeout)?
            {
                Message::AckOk => {}
                other => return Err(unexpected("AckOk", &other)),
            }
        }
        Ok(more && !broken_types)
    }

    /// Ask what is pending; notes who answered (the host the connection
    /// proved: the agent cannot name another) and its clock.
    fn list_pending(&mut self) -> Result<(u16, Vec<Offer>, bool), PullError> {
        let sent = chrono::Utc::now().timestamp_millis();
        let (info, offers, more) = match self
            .conn
            .request(&Message::ListPending, self.ctx.io_timeout)?
        {
            Message::Pending { info, offers, more } => (info, offers, more),
            other => return Err(unexpected("Pending", &other)),
        };
        self.report.skew_ms = skew(sent, info.time_ms);
        let host = self.conn.host().to_string();
        if info.name != host {
            return Err(PullError::Protocol(format!(
                "agent at {} authenticated as {host:?} calls itself {:?}",
                self.control, info.name
            )));
        }
        if let Some(p) = &self.ctx.progress {
            let offered: u64 = offers.iter().map(|o| o.size).sum();
            p.update(self.control, |a| {
                a.host = host.clone();
                a.offered += offered;
            });
        }
        let data_port = info.data_port;
        self.report.host = host;
        self.report.info = Some(info);
        Ok((data_port, offers, more))
    }

    fn open_archive(&mut self) -> Result<(), PullError> {
        if self.archive.is_some() {
            return Ok(());
        }
        let (ctx, host) = (self.ctx, &self.report.host);
        match HostArchive::open(&ctx.log_root, &ctx.backup_root, host, ctx.rotate_size) {
            Ok(a) => self.archive = Some(a),
            Err(OpenError::Busy) => return Err(PullError::Busy(host.clone())),
            Err(OpenError::Io(source)) => {
                return Err(PullError::OpenArchive {
                    host: host.clone(),
                    source,
                })
            }
        }
        Ok(())
    }

    /// Store every offer that is new, in order; a failure stops its type
    /// for this round. The pieces to acknowledge, and whether a type broke.
    fn store_offers(&mut self, offers: &[Offer], data_addr: SocketAddr) -> (Vec<PieceRef>, bool) {
        let mut acks = Vec::new();
        let mut broken_types: Vec<String> = Vec::new();
        for offer in offers {
            let piece = &offer.piece;
            if broken_types.contains(&piece.log_type) {
                continue;
            }
            if crate::names::check_type_name(&piece.log_type).is_err() {
                self.report
                    .failed_pieces
                    .push(format!("{:?}: bad type name", piece.log_type));
                self.first_failure.get_or_insert(FailureKind::Protocol);
                broken_types.push(piece.log_type.clone());
                continue;
            }
            let store = self.archive.as_mut().expect("opened before");
            let fetched = match store.plan(piece) {
                Plan::AlreadyHave => {
                    self.report.already_had += 1;
                    Ok(None)
                }
                Plan::Fetch { skip } => fetch(
                    self.ctx,
                    &mut self.data,
                    (self.control, data_addr),
                    &self.report.host,
                    offer,
                    skip,
                    store,
                )
                .map(Some),
            };
            match fetched {
                Ok(stored) => {
                    if let Some(bytes) = stored {
                        self.report.pieces += 1;
                        self.report.bytes += bytes;
                        self.report.wire_bytes += offer.size;
                    }
                    acks.push(piece.clone());
                }
                Err(failure) => {
                    self.piece_failed(piece, failure);
                    broken_types.push(piece.log_type.clone());
                }
            }
        }
        (acks, !broken_types.is_empty())
    }

    fn piece_failed(&mut self, piece: &PieceRef, failure: PieceFailure) {
        // The data connection may be mid-piece: a new one for the next type.
        self.data = None;
        let e = describe(&failure.error);
        log::warn!(
            "{}: {} {}..{} not fetched: {e}",
            self.report.host,
            piece.log_type,
            piece.start,
            piece.end
        );
        self.report.failed_pieces.push(format!(
            "{} {}..{}: {e}",
            piece.log_type, piece.start, piece.end
        ));
        self.first_failure.get_or_insert(failure.kind);
    }

    /// Say goodbye on both connections; the report, or the failed pieces.
    fn finish(mut self, started: Instant) -> Result<PullReport, PullError> {
        let timeout = self.ctx.io_timeout;
        if let Some(mut data) = self.data.take() {
            let _ = data.allow(timeout).and_then(|()| data.send(&Message::Bye));
        }
        let conn = &mut self.conn;
        let _ = conn.allow(timeout).and_then(|()| conn.send(&Message::Bye));
        let mut report = self.report;
        report.elapsed = started.elapsed();
        match self.first_failure {
            None => Ok(report),
            Some(kind) => Err(PullError::Pieces {
                count: report.failed_pieces.len(),
                first: report.failed_pieces.swap_remove(0),
                host: report.host,
                kind,
            }),
        }
    }
}

fn unexpected(expected: &str, got: &Message) -> PullError {
    PullError::Protocol(format!("expected {expected}, got {}", got.kind()))
}

/// Fetch one piece over the pull's data connection (dialled if there is
/// none yet) into the archive. `addrs` are the agent's control and data
/// addresses.
fn fetch(
    ctx: &PullContext,
    data: &mut Option<Connection<TimedStream>>,
    (control, data_addr): (SocketAddr, SocketAddr),
    host: &str,
    offer: &Offer,
    skip: u64,
    store: &mut HostArchive,
) -> Result<u64, PieceFailure> {
    let network = |error: io::Error| PieceFailure {
        kind: FailureKind::of_network(&error),
        error,
    };
    let conn = match data {
        Some(conn) => conn,
        None => data.insert(ctx.dial(data_addr, Purpose::Data, host).map_err(network)?),
    };
    conn.allow(ctx.io_timeout).map_err(network)?;
    conn.send(&Message::Fetch { token: offer.token })
        .map_err(network)?;
    let mut reader = ChunkReader {
        conn,
        frame_timeout: ctx.io_timeout,
        frame: Vec::new(),
        chunk: 0..0,
        received: 0,
        expected: offer.size,
        done: false,
        failed: false,
        progress: ctx.progress.as_deref().map(|p| (p, control)),
    };
    let stored = match offer.piece.kind {
        PieceKind::Current => store.store_current(&offer.piece, skip, &mut reader),
        PieceKind::Archive => store.store_archive(&offer.piece, skip, offer.size, &mut reader),
    };
    let stored = stored.map_err(|error| PieceFailure {
        kind: if reader.failed {
            FailureKind::of_network(&error)
        } else if error.kind() == io::ErrorKind::InvalidData {
            // What arrived is not what was offered (a wrong length, an
            // archive that does not hold its range).
            FailureKind::Protocol
        } else {
            FailureKind::Storage
        },
        error,
    })?;
    // Read on to the piece's `End` (checked there) even if the archive
    // stopped short of it: the connection then stands at the next piece.
    loop {
        let n = reader.fill_buf().map_err(network)?.len();
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
    /// Whether receiving failed (else an error of the archive's is its own).
    failed: bool,
    progress: Option<(&'a Progress, SocketAddr)>,
}

impl BufRead for ChunkReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let Err(e) = self.receive() {
            self.failed = true;
            return Err(e);
        }
        Ok(&self.frame[self.chunk.clone()])
    }

    fn consume(&mut self, n: usize) {
        self.chunk.start = (self.chunk.start + n).min(self.chunk.end);
    }
}

impl ChunkReader<'_> {
    /// Receive frames until there is unconsumed chunk data or the piece ended.
    fn receive(&mut self) -> io::Result<()> {
        while self.chunk.is_empty() {
            if self.done {
                return Ok(());
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
        Ok(())
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
