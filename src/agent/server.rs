//! The agent's two ports: control (8000: ping, list pending, acknowledge)
//! and data (8001: one short-lived connection per pull, carrying its
//! pieces one after another, each asked for with a one-time token handed
//! out on the control connection).
//!
//! Both accept only a peer that proves this host's own key (protocol 2,
//! `Credentials::Host`): another agent, holding only its own key, can
//! neither list, fetch nor acknowledge anything here.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::logstore::LogStore;
use crate::net::TimedStream;
use crate::protocol::message::{AgentInfo, Message, Offer, PieceRef, MAX_CHUNK, TOKEN_LEN};
use crate::protocol::{Connection, Credentials, Key, Purpose};
use crate::random::random_bytes;

/// Most messages one control connection may exchange (a pull needs a few
/// per round); past it the connection is closed.
const MAX_CONTROL_MESSAGES: usize = 1024;
/// Most outstanding data tokens; the oldest expire first.
const MAX_TOKENS: usize = 8192;

struct Token {
    piece: PieceRef,
    expires: Instant,
    /// The control connection that asked; its tokens die with it.
    connection: u64,
}

/// What both servers share.
pub(crate) struct AgentServer {
    pub(crate) name: String,
    pub(crate) store: Arc<LogStore>,
    /// This host's own keys, for this host only.
    pub(crate) credentials: Credentials,
    pub(crate) data_port: u16,
    pub(crate) allowed_masters: Vec<IpAddr>,
    pub(crate) token_lifetime: Duration,
    tokens: Mutex<HashMap<[u8; TOKEN_LEN], Token>>,
    next_connection: Mutex<u64>,
    /// Masters refused for a wrong key, logged once per change.
    refusals: crate::protocol::RefusalLog,
}

impl AgentServer {
    pub(crate) fn new(
        name: String,
        store: Arc<LogStore>,
        keys: Vec<Key>,
        data_port: u16,
        allowed_masters: Vec<IpAddr>,
        token_lifetime: Duration,
    ) -> AgentServer {
        AgentServer {
            credentials: Credentials::Host {
                name: name.clone(),
                keys,
            },
            name,
            store,
            data_port,
            allowed_masters,
            token_lifetime,
            tokens: Mutex::new(HashMap::new()),
            next_connection: Mutex::new(0),
            refusals: Default::default(),
        }
    }

    fn allowed(&self, peer: SocketAddr, port: &str) -> bool {
        let ok = self.allowed_masters.is_empty()
            || self.allowed_masters.contains(&peer.ip().to_canonical());
        if !ok {
            log::warn!(
                "{}: {port} connection from {peer} refused: not in allowed_masters",
                self.name
            );
        }
        ok
    }

    fn info(&self) -> AgentInfo {
        AgentInfo {
            name: self.name.clone(),
            time_ms: chrono::Utc::now().timestamp_millis(),
            data_port: self.data_port,
            backlog: self.store.backlog(),
        }
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; TOKEN_LEN], Token>> {
        crate::sync::lock(&self.tokens)
    }

    /// Serve one control connection until the master says `Bye` or leaves.
    pub(crate) fn handle_control(&self, stream: TimedStream, peer: SocketAddr) {
        if !self.allowed(peer, "control") {
            return;
        }
        let mut conn = match Connection::server(stream, &self.credentials, Purpose::Control) {
            Ok(c) => c,
            Err(e) => {
                let what = format_args!("{}: control connection", self.name);
                self.refusals.refused(what, peer, &e);
                return;
            }
        };
        let id = {
            let mut n = crate::sync::lock(&self.next_connection);
            *n += 1;
            *n
        };
        if let Err(e) = self.control_session(&mut conn, id, peer) {
            if e.kind() != io::ErrorKind::UnexpectedEof {
                log::warn!("{}: control connection from {peer}: {e}", self.name);
            }
        }
        self.tokens().retain(|_, t| t.connection != id);
    }

    fn control_session(
        &self,
        conn: &mut Connection<TimedStream>,
        id: u64,
        peer: SocketAddr,
    ) -> io::Result<()> {
        for i in 0..MAX_CONTROL_MESSAGES {
            let message = conn.recv()?;
            if i == 0 {
                // Proved only now: a recorded first handshake message can
                // be replayed, but no frame after it decrypts without the
                // key. Between its messages the master fetches pieces over
                // data connections, so the session may idle as long as its
                // tokens live.
                self.refusals
                    .accepted(format_args!("{}: control connection", self.name), peer);
                conn.stream().set_deadline(None)?;
                conn.stream_mut().set_io_timeout(self.token_lifetime)?;
            }
            match message {
                Message::Ping => conn.send(&Message::Pong(self.info()))?,
                Message::ListPending => {
                    let pending = self.offer_pending(id)?;
                    conn.send(&pending)?;
                }
                Message::Ack(pieces) => {
                    self.release_acknowledged(&pieces);
                    conn.send(&Message::AckOk)?;
                }
                Message::Bye => return Ok(()),
                other => {
                    let _ = conn.send(&Message::Error(format!(
                        "{} not expected on the control port",
                        other.kind()
                    )));
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected {}", other.kind()),
                    ));
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too many messages on one control connection",
        ))
    }

    /// The pieces waiting for the master, each offered with a token the
    /// data port takes for it until the token expires or this control
    /// connection ends.
    fn offer_pending(&self, id: u64) -> io::Result<Message> {
        let (pending, more) = self.store.pending();
        let now = Instant::now();
        let mut offers = Vec::with_capacity(pending.len());
        let mut tokens = self.tokens();
        tokens.retain(|_, t| t.expires > now);
        for p in pending {
            if tokens.len() >= MAX_TOKENS {
                break;
            }
            let token = random_bytes::<TOKEN_LEN>()?;
            tokens.insert(
                token,
                Token {
                    piece: p.piece.clone(),
                    expires: now + self.token_lifetime,
                    connection: id,
                },
            );
            offers.push(Offer {
                piece: p.piece,
                size: p.size,
                token,
            });
        }
        drop(tokens);
        Ok(Message::Pending {
            info: self.info(),
            offers,
            more,
        })
    }

    /// A failed release keeps data the master already has: it is offered
    /// again and acknowledged without being stored twice.
    fn release_acknowledged(&self, pieces: &[PieceRef]) {
        if let Err(e) = self.store.release_all(pieces) {
            log::error!(
                "{}: cannot release {} acknowledged piece(s): {e}",
                self.name,
                pieces.len()
            );
        }
    }

    /// Serve one data connection: pieces one after another, each for a
    /// token, until the master says `Bye` or leaves. A failed piece ends
    /// the connection (the stream may be mid-piece); the master dials anew.
    pub(crate) fn handle_data(&self, stream: TimedStream, peer: SocketAddr) {
        if !self.allowed(peer, "data") {
            return;
        }
        let mut conn = match Connection::server(stream, &self.credentials, Purpose::Data) {
            Ok(c) => c,
            Err(e) => {
                let what = format_args!("{}: data connection", self.name);
                self.refusals.refused(what, peer, &e);
                return;
            }
        };
        self.refusals
            .accepted(format_args!("{}: data connection", self.name), peer);
        for _ in 0..MAX_TOKENS {
            match self.send_piece(&mut conn) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return,
                Err(e) => {
                    log::warn!("{}: data connection from {peer}: {e}", self.name);
                    let _ = conn.send(&Message::Error(e.to_string()));
                    return;
                }
            }
        }
    }

    /// Send the piece of the next `Fetch`; false at `Bye`.
    fn send_piece(&self, conn: &mut Connection<TimedStream>) -> io::Result<bool> {
        let token = match conn.recv()? {
            Message::Fetch { token } => token,
            Message::Bye => return Ok(false),
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("expected Fetch, got {}", other.kind()),
                ))
            }
        };
        let piece = match self.tokens().remove(&token) {
            Some(t) if t.expires > Instant::now() => t.piece,
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "token expired",
                ))
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "unknown or used token",
                ))
            }
        };
        // A valid token: stream the piece under the per-write timeout only.
        conn.stream().set_deadline(None)?;
        let mut reader = self.store.open_piece(&piece)?;
        reader.file.seek(SeekFrom::Start(reader.offset))?;
        let mut source = (&mut reader.file).take(reader.len);
        // A small delta needs no 64 KiB buffer (zeroed on every connection).
        let mut buf = vec![
            0u8;
            MAX_CHUNK
                .min(usize::try_from(reader.len).unwrap_or(MAX_CHUNK))
                .max(1)
        ];
        let mut sent = 0u64;
        loop {
            let n = read_full(&mut source, &mut buf)?;
            if n == 0 {
                break;
            }
            conn.send_chunk(&buf[..n])?;
            sent += n as u64;
            crate::failpoint::hit("server.mid_send");
        }
        if sent != reader.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "piece shorter than offered",
            ));
        }
        conn.send(&Message::End { len: sent })?;
        // The master stores the piece, and between rounds commits and
        // acknowledges, before its next `Fetch`: as long as a token lives.
        conn.stream_mut().set_io_timeout(self.token_lifetime)?;
        Ok(true)
    }
}

/// Read until `buf` is full or the source ends.
fn read_full(source: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
