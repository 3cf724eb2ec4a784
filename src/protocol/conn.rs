//! An authenticated, encrypted connection: the handshake of `auth`, then
//! messages as Noise transport frames (docs/PROTOCOL.md).
//!
//! On the wire every frame is a 4-byte big-endian length and a Noise
//! ciphertext of at most 65,535 bytes. Its plaintext is a fragment of a
//! message followed by one byte: 0 for the last fragment, 1 if more
//! follow, so a message may be larger than one Noise message (up to
//! `MAX_FRAME`). A data chunk always fits one frame.
//!
//! Generic over the byte stream so tests can run both ends over any pipe.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::auth::{self, Credentials, Key, Purpose, Refusal};
use super::frame::{read_frame, read_frame_len, write_frame, MAX_FRAME, MAX_HANDSHAKE_FRAME};
use super::message::Message;
use crate::net::TimedStream;

/// Largest Noise message (ciphertext) of one frame.
pub(crate) const MAX_NOISE_MSG: usize = 65_535;
/// Poly1305 tag of every Noise message.
pub(crate) const TAG_LEN: usize = 16;
/// Largest message fragment per frame: room for the tag and the
/// last-fragment byte.
pub(crate) const MAX_FRAGMENT: usize = MAX_NOISE_MSG - TAG_LEN - 1;

fn auth_error(why: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why)
}

pub struct Connection<S: Read + Write> {
    reader: BufReader<S>,
    noise: snow::TransportState,
    /// The host this connection is authenticated as (named in the hello,
    /// proved by its key).
    host: String,
    /// Ciphertext of the frame being sent or received (reused).
    sealed: Vec<u8>,
    /// Plaintext of the frame being sent (reused).
    plain: Vec<u8>,
}

/// Client deadlines (issue 11): a peer at the address we dial may be an
/// impostor without the key, or a real peer gone slow. Per-read timeouts
/// alone do not bound either: a peer sending one byte just inside each
/// timeout holds the connection for ever. So every client connection has
/// an overall deadline on top of them (the same `TimedStream` the servers
/// use for their handshakes):
///
/// - the handshake, hello to the server's answer checked, must finish
///   within one `io_timeout` of the connection opening (a connect has its
///   own `connect_timeout` before that);
/// - each request and its answer after it must finish within one
///   `io_timeout` of the request ([`Connection::request`]);
/// - a bulk transfer is bounded by progress, not by a fixed time: each
///   frame (at most 64 KiB) must arrive whole within one `io_timeout` of
///   the one before ([`Connection::allow`] before each), so a large
///   backlog may take as long as it needs while data flows.
impl Connection<TimedStream> {
    /// Connect to `addr` and authenticate as `host` with the first of
    /// `keys` (that host's keys) the server accepts; the server has proved
    /// the key when this returns. A server that hangs up on a key (it holds
    /// another one: a key change-over) is tried again with the next key,
    /// each attempt on a fresh connection with its own deadlines.
    pub fn dial(
        addr: SocketAddr,
        keys: &[Key],
        purpose: Purpose,
        host: &str,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> io::Result<Connection<TimedStream>> {
        Connection::dial_from(addr, keys, 0, purpose, host, connect_timeout, io_timeout)
            .map(|(conn, _)| conn)
    }

    /// `dial`, trying `keys[first]` first (the key this peer answered to
    /// last time, see `KeyMemory`), then the others in order; also says
    /// which key the server accepted.
    pub(crate) fn dial_from(
        addr: SocketAddr,
        keys: &[Key],
        first: usize,
        purpose: Purpose,
        host: &str,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> io::Result<(Connection<TimedStream>, usize)> {
        if keys.is_empty() {
            return Err(auth_error("no key to authenticate with"));
        }
        let first = if first < keys.len() { first } else { 0 };
        let order: Vec<usize> = std::iter::once(first)
            .chain((0..keys.len()).filter(|&i| i != first))
            .collect();
        let (last, earlier) = order.split_last().expect("keys is not empty");
        let one = |key: &Key| -> io::Result<Connection<TimedStream>> {
            let stream = crate::net::connect(addr, connect_timeout, io_timeout)?;
            let stream = TimedStream::new(stream, io_timeout, Some(Instant::now() + io_timeout));
            Connection::client(stream, key, purpose, host).map_err(|e| handshake_error(addr, e))
        };
        for &i in earlier {
            match one(&keys[i]) {
                Ok(conn) => return Ok((conn, i)),
                Err(e) if refused_key(&e) => {
                    log::debug!("{addr} refused a key ({e}); trying the next one");
                }
                Err(e) => return Err(e),
            }
        }
        one(&keys[*last]).map(|conn| (conn, *last))
    }

    /// Ask the agent at `addr` its host name, for a master that knows only
    /// its address: a hello naming no host, answered (unauthenticated)
    /// with the agent's name. The name only chooses the key to dial with;
    /// the connection that follows proves it.
    pub(crate) fn ask_name(
        addr: SocketAddr,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> io::Result<String> {
        let stream = crate::net::connect(addr, connect_timeout, io_timeout)?;
        let mut stream = TimedStream::new(stream, io_timeout, Some(Instant::now() + io_timeout));
        write_frame(&mut stream, &[&auth::encode_hello(Purpose::Control, "")])?;
        let answer =
            read_frame(&mut stream, MAX_HANDSHAKE_FRAME).map_err(|e| handshake_error(addr, e))?;
        let hello = auth::decode_hello(&answer)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        crate::names::check_host_name(&hello.host).map_err(|why| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{addr} gave an unusable host name {:?}: {why}", hello.host),
            )
        })?;
        Ok(hello.host)
    }

    /// Give the connection `limit` from now: the overall deadline of what
    /// comes next (a request and its answer, or the next frame of a bulk
    /// transfer).
    pub fn allow(&self, limit: Duration) -> io::Result<()> {
        self.stream().set_deadline(Some(Instant::now() + limit))
    }

    /// Send `message` and receive its answer within `limit`, turning a
    /// peer's `Error` into an `io::Error`.
    pub fn request(&mut self, message: &Message, limit: Duration) -> io::Result<Message> {
        self.allow(limit)?;
        self.send(message)?;
        self.recv_ok()
    }
}

/// A handshake error that says which peer, and says "deadline" for a
/// peer that was too slow (a trickling impostor, or a peer too busy).
fn handshake_error(addr: SocketAddr, e: io::Error) -> io::Error {
    if is_wrong_key(&e) {
        return io::Error::new(
            e.kind(),
            WrongKey(format!(
                "{addr} hung up on our hello: it holds another key for this host, refuses \
                 this host, or still speaks protocol 1 (upgrade it)"
            )),
        );
    }
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("handshake with {addr} did not finish by its deadline ({e})"),
        ),
        kind => io::Error::new(kind, format!("handshake with {addr}: {e}")),
    }
}

/// The server hung up on our hello: how a server without our key answers
/// (it says nothing, so a client without the key learns nothing). Kept as
/// the error's payload so callers can tell it from a network fault
/// (`is_wrong_key`); the kind stays the I/O kind, which `dial` goes by.
#[derive(Debug, thiserror::Error)]
#[error("wrong key: {0}")]
pub(crate) struct WrongKey(pub String);

/// The server's side of the same: the client's hello opens with none of
/// the keys its host may hold.
#[derive(Debug, thiserror::Error)]
#[error("authentication failed: wrong key for host {host:?}")]
pub(crate) struct ClientWrongKey {
    pub host: String,
}

/// Whether `e` is a refusal for a wrong key, on either side (see
/// `WrongKey`, `ClientWrongKey`).
pub(crate) fn is_wrong_key(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<WrongKey>() || inner.is::<ClientWrongKey>())
}

/// How a server that lacks our key answers a hello: it hangs up. A wrong
/// answer from the server (PermissionDenied) is an impostor, not a server
/// on another key: never a reason to try the next key with it.
fn refused_key(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// A hello that named no host, answered with our name (see `ask_name`):
/// not a refusal worth a warning.
#[derive(Debug, thiserror::Error)]
#[error("asked for our host name, answered")]
pub struct NameGiven;

/// Read buffer per connection. Small on purpose: most connections carry a
/// handful of small messages, and a buffer of 128 KiB or more is an mmap
/// and munmap per connection in glibc (its mmap threshold). Big frames
/// bypass it (`read_body`).
const READ_BUFFER: usize = 16 * 1024;

impl<S: Read + Write> Connection<S> {
    /// Client side: authenticate as `host` with `key` (that host's key)
    /// and check that the server proves the same key before returning:
    /// nothing but the hello goes to a server that has not.
    pub fn client(stream: S, key: &Key, purpose: Purpose, host: &str) -> io::Result<Connection<S>> {
        let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
        let (first, hs) = auth::client_start(purpose, host, key, None).map_err(auth_error)?;
        write_frame(reader.get_mut(), &[&first])?;
        reader.get_mut().flush()?;
        let answer = read_frame(&mut reader, MAX_HANDSHAKE_FRAME).map_err(|e| {
            if refused_key(&e) {
                io::Error::new(
                    e.kind(),
                    WrongKey(format!("the server hung up on our hello ({e})")),
                )
            } else {
                e
            }
        })?;
        let noise = auth::client_finish(hs, &answer).map_err(auth_error)?;
        Ok(Connection::new(reader, noise, host.to_string()))
    }

    /// Server side: accept only a client proving a key `credentials` holds
    /// for the host it names, for `purpose`. On failure nothing has been
    /// sent (except our name to a hello that asked for it).
    pub fn server(
        stream: S,
        credentials: &Credentials,
        purpose: Purpose,
    ) -> io::Result<Connection<S>> {
        let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
        let first = read_frame(&mut reader, MAX_HANDSHAKE_FRAME)?;
        if let (Ok(hello), Credentials::Host { name, .. }) =
            (auth::decode_hello(&first), credentials)
        {
            if hello.host.is_empty() && hello.noise.is_empty() && hello.purpose == purpose {
                write_frame(reader.get_mut(), &[&auth::encode_hello(purpose, name)])?;
                reader.get_mut().flush()?;
                return Err(io::Error::other(NameGiven));
            }
        }
        match auth::server_accept(&first, purpose, credentials, None) {
            Ok((host, answer, noise)) => {
                write_frame(reader.get_mut(), &[&answer])?;
                reader.get_mut().flush()?;
                Ok(Connection::new(reader, noise, host))
            }
            Err(Refusal::WrongKey { host }) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                ClientWrongKey { host },
            )),
            // A version error says which versions, so both ends' logs do.
            Err(Refusal::Hello(e)) => Err(auth_error(e)),
            Err(Refusal::WrongPurpose(asked)) => Err(auth_error(format!(
                "wrong port: {asked:?} hello on the {purpose:?} port"
            ))),
            Err(Refusal::Host(why)) => Err(auth_error(why)),
        }
    }

    fn new(reader: BufReader<S>, noise: snow::TransportState, host: String) -> Connection<S> {
        Connection {
            reader,
            noise,
            host,
            sealed: Vec::new(),
            plain: Vec::new(),
        }
    }

    /// The host this connection authenticated as.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn send(&mut self, message: &Message) -> io::Result<()> {
        let payload = message.encode();
        self.send_parts(&[&payload])
    }

    /// Send a data chunk without building a `Message` for it.
    pub(crate) fn send_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        let header = Message::chunk_header(data.len());
        self.send_parts(&[&header, data])
    }

    /// Send one message given in parts, in as many frames as it needs.
    fn send_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("message of {total} bytes exceeds the limit of {MAX_FRAME}"),
            ));
        }
        let mut plain = std::mem::take(&mut self.plain);
        plain.clear();
        for part in parts {
            plain.extend_from_slice(part);
        }
        let result = (|| {
            if plain.len() <= MAX_FRAGMENT {
                plain.push(0);
                return self.seal_and_write(&plain);
            }
            let whole = std::mem::take(&mut plain);
            let count = whole.len().div_ceil(MAX_FRAGMENT);
            for (i, fragment) in whole.chunks(MAX_FRAGMENT).enumerate() {
                plain.clear();
                plain.extend_from_slice(fragment);
                plain.push(u8::from(i + 1 < count));
                self.seal_and_write(&plain)?;
            }
            Ok(())
        })();
        self.plain = plain;
        result?;
        self.reader.get_mut().flush()
    }

    fn seal_and_write(&mut self, plain: &[u8]) -> io::Result<()> {
        self.sealed.resize(4 + plain.len() + TAG_LEN, 0);
        let n = self
            .noise
            .write_message(plain, &mut self.sealed[4..])
            .map_err(|e| io::Error::other(format!("cannot encrypt a frame: {e}")))?;
        self.sealed[..4].copy_from_slice(&(n as u32).to_be_bytes());
        self.reader.get_mut().write_all(&self.sealed[..4 + n])
    }

    /// Read and decrypt one whole message into `out` (from its start);
    /// returns its length.
    fn read_message(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        let mut len = 0;
        loop {
            let n = read_frame_len(&mut self.reader, MAX_NOISE_MSG)?;
            if n <= TAG_LEN {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "frame too short for its tag",
                ));
            }
            self.sealed.resize(n, 0);
            read_body(&mut self.reader, &mut self.sealed[..n])?;
            if out.len() < len + n {
                out.resize(len + n, 0);
            }
            let got = self
                .noise
                .read_message(&self.sealed[..n], &mut out[len..])
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "frame failed authentication (altered, replayed, reordered or \
                         from another connection)",
                    )
                })?;
            // `got` > 0: a frame is at least tag plus the fragment byte.
            let more = out[len + got - 1];
            len += got - 1;
            if len > MAX_FRAME {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("message exceeds the limit of {MAX_FRAME} bytes"),
                ));
            }
            match more {
                0 => return Ok(len),
                1 => {}
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad fragment flag {other}"),
                    ))
                }
            }
        }
    }

    /// Receive the next message like `recv`, except that a `Chunk`'s data
    /// is left in `frame` (`Received::Chunk` gives where) instead of being
    /// copied into a new `Vec`. `frame` is reused from call to call, so a
    /// stream of chunks costs no allocation; it only grows.
    pub(crate) fn recv_into(&mut self, frame: &mut Vec<u8>) -> io::Result<Received> {
        let len = self.read_message(frame)?;
        let payload = &frame[..len];
        match Message::chunk_data(payload) {
            Some(data) => Ok(Received::Chunk(len - data?.len()..len)),
            None => match Message::decode(payload)? {
                Message::Error(text) => Err(io::Error::other(format!("peer refused: {text}"))),
                m => Ok(Received::Message(m)),
            },
        }
    }

    pub fn recv(&mut self) -> io::Result<Message> {
        let mut buf = Vec::new();
        let len = self.read_message(&mut buf)?;
        Ok(Message::decode(&buf[..len])?)
    }

    /// Receive, turning a peer's `Error` into an `io::Error`.
    pub fn recv_ok(&mut self) -> io::Result<Message> {
        match self.recv()? {
            Message::Error(text) => Err(io::Error::other(format!("peer refused: {text}"))),
            m => Ok(m),
        }
    }

    pub fn stream(&self) -> &S {
        self.reader.get_ref()
    }

    pub(crate) fn stream_mut(&mut self) -> &mut S {
        self.reader.get_mut()
    }
}

/// What `Connection::recv_into` received.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// A `Chunk`: its data is `frame[range]`.
    Chunk(std::ops::Range<usize>),
    /// Any other message (a peer's `Error` is returned as an error).
    Message(Message),
}

/// Fill `body` from `reader`: what is buffered first, then the rest
/// straight from the stream into `body`, not through the buffer (which
/// would copy every byte of a large frame once more).
fn read_body<S: Read>(reader: &mut BufReader<S>, body: &mut [u8]) -> io::Result<()> {
    let buffered = reader.buffer();
    let have = buffered.len().min(body.len());
    body[..have].copy_from_slice(&buffered[..have]);
    reader.consume(have);
    if have < body.len() {
        reader.get_mut().read_exact(&mut body[have..])?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    fn host(keys: Vec<Key>) -> Credentials {
        Credentials::Host {
            name: "pi1".into(),
            keys,
        }
    }

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn authenticated_exchange() {
        let key = Key::from_bytes([4; 32]);
        let (c, s) = pair();
        let server_key = key.clone();
        let server = thread::spawn(move || {
            let mut conn =
                Connection::server(s, &host(vec![server_key]), Purpose::Control).unwrap();
            assert_eq!(conn.recv().unwrap(), Message::Ping);
            conn.send(&Message::Bye).unwrap();
        });
        let mut conn = Connection::client(c, &key, Purpose::Control, "pi1").unwrap();
        conn.send(&Message::Ping).unwrap();
        assert_eq!(conn.recv().unwrap(), Message::Bye);
        server.join().unwrap();
    }

    #[test]
    fn chunks_received_in_place_match_what_was_sent() {
        let key = Key::from_bytes([4; 32]);
        let (c, s) = pair();
        let server_key = key.clone();
        let max = crate::protocol::message::MAX_CHUNK;
        let sizes = [0usize, 1, 5, 1000, max, 3, max, 17];
        let server = thread::spawn(move || {
            let mut conn = Connection::server(s, &host(vec![server_key]), Purpose::Data).unwrap();
            assert_eq!(conn.recv().unwrap(), Message::Ping);
            for (i, n) in sizes.iter().enumerate() {
                conn.send_chunk(&vec![i as u8; *n]).unwrap();
            }
            conn.send(&Message::End { len: 7 }).unwrap();
            conn.send(&Message::Error("no".into())).unwrap();
        });
        let mut conn = Connection::client(c, &key, Purpose::Data, "pi1").unwrap();
        conn.send(&Message::Ping).unwrap();
        let mut frame = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            match conn.recv_into(&mut frame).unwrap() {
                Received::Chunk(range) => assert_eq!(frame[range], vec![i as u8; *n]),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            conn.recv_into(&mut frame).unwrap(),
            Received::Message(Message::End { len: 7 })
        );
        assert!(conn.recv_into(&mut frame).is_err());
        server.join().unwrap();
    }

    #[test]
    fn wrong_key_learns_nothing() {
        let (c, s) = pair();
        let server = thread::spawn(move || {
            Connection::server(s, &host(vec![Key::from_bytes([1; 32])]), Purpose::Control)
                .map(|_| ())
                .unwrap_err()
        });
        // The server closes without a byte: the client's handshake fails.
        let err = Connection::client(c, &Key::from_bytes([2; 32]), Purpose::Control, "pi1")
            .map(|_| ())
            .unwrap_err();
        assert!(is_wrong_key(&err), "{err}");
        let err = server.join().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(is_wrong_key(&err), "{err}");
    }

    /// Issue 11: a peer that answers with its handshake one byte at a time
    /// keeps a dialling client no longer than one `io_timeout` (plus the
    /// slack of `TimedStream`), although each byte comes well inside it.
    #[test]
    fn a_trickling_server_cannot_stretch_the_handshake() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let impostor = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&48u32.to_be_bytes());
            bytes.extend_from_slice(&[0; 48]);
            let started = Instant::now();
            for b in bytes {
                if s.write_all(&[b]).is_err() || started.elapsed() > Duration::from_secs(20) {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        let io_timeout = Duration::from_millis(600);
        let started = Instant::now();
        let err = Connection::dial(
            addr,
            &[Key::from_bytes([5; 32])],
            Purpose::Control,
            "pi1",
            io_timeout,
            io_timeout,
        )
        .map(|_| ())
        .unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(took < io_timeout + Duration::from_millis(400), "{took:?}");
        impostor.join().unwrap();
    }

    /// A bulk transfer's deadline moves with its progress: a transfer far
    /// longer than the per-frame limit succeeds while frames keep coming,
    /// and one stalled frame ends it at that frame's deadline.
    #[test]
    fn a_bulk_transfer_runs_as_long_as_frames_keep_coming() {
        let key = Key::from_bytes([4; 32]);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server_key = key.clone();
        let server = thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut conn = Connection::server(s, &host(vec![server_key]), Purpose::Data).unwrap();
            assert_eq!(conn.recv().unwrap(), Message::Ping);
            // 12 chunks 100 ms apart: 1.2 s in all, each well inside 400 ms.
            for _ in 0..12 {
                thread::sleep(Duration::from_millis(100));
                conn.send_chunk(&[7; 1000]).unwrap();
            }
            // Then a frame that never completes: its length and 10 bytes.
            let stream = conn.stream_mut();
            stream.write_all(&2000u32.to_be_bytes()).unwrap();
            stream.write_all(&[0; 10]).unwrap();
            thread::sleep(Duration::from_secs(1));
        });
        let limit = Duration::from_millis(400);
        let mut conn = Connection::dial(addr, &[key], Purpose::Data, "pi1", limit, limit).unwrap();
        conn.allow(limit).unwrap();
        conn.send(&Message::Ping).unwrap();
        let started = Instant::now();
        let mut frame = Vec::new();
        for _ in 0..12 {
            conn.allow(limit).unwrap();
            assert!(matches!(
                conn.recv_into(&mut frame).unwrap(),
                Received::Chunk(_)
            ));
        }
        assert!(started.elapsed() > Duration::from_secs(1));
        let stalled = Instant::now();
        conn.allow(limit).unwrap();
        let err = conn.recv_into(&mut frame).unwrap_err();
        let took = stalled.elapsed();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            "{err}"
        );
        assert!(took < limit + Duration::from_millis(300), "{took:?}");
        server.join().unwrap();
    }

    /// A message larger than one Noise frame crosses in fragments; a
    /// tampered, replayed or dropped frame is refused.
    #[test]
    fn big_messages_fragment_and_tampering_is_refused() {
        let key = Key::from_bytes([4; 32]);
        let (c, s) = pair();
        let server_key = key.clone();
        let big = Message::Error("x".repeat(4000));
        let expected = big.clone();
        let server = thread::spawn(move || {
            let mut conn = Connection::server(s, &host(vec![server_key]), Purpose::Data).unwrap();
            // 200 KiB of chunk: four frames.
            let blob = vec![9u8; MAX_FRAME - 1024];
            conn.send_parts(&[&Message::chunk_header(0)[..1], &blob])
                .ok();
            conn.send(&big).unwrap();
            conn.send(&Message::Ping).unwrap();
            conn.send(&Message::Ping).unwrap();
        });
        let mut conn = Connection::client(c, &key, Purpose::Data, "pi1").unwrap();
        let mut buf = Vec::new();
        let len = conn.read_message(&mut buf).unwrap();
        assert_eq!(len, 1 + MAX_FRAME - 1024);
        assert!(buf[1..len].iter().all(|&b| b == 9));
        assert_eq!(conn.recv().unwrap(), expected);
        // Flip a bit of the next frame's ciphertext, as a relay could.
        let mut raw = [0u8; 4];
        conn.reader.read_exact(&mut raw).unwrap();
        let n = u32::from_be_bytes(raw) as usize;
        let mut body = vec![0u8; n];
        conn.reader.read_exact(&mut body).unwrap();
        // Replaying it unaltered after it was consumed is refused too.
        let good = body.clone();
        let mut out = vec![0u8; n];
        assert!(conn.noise.read_message(&good, &mut out).is_ok());
        assert!(conn.noise.read_message(&good, &mut out).is_err());
        body[0] ^= 1;
        assert!(conn.noise.read_message(&body, &mut out).is_err());
        server.join().unwrap();
    }

    #[test]
    fn a_protocol_1_hello_is_refused_by_name() {
        let (mut c, s) = pair();
        let server = thread::spawn(move || {
            Connection::server(s, &host(vec![Key::from_bytes([1; 32])]), Purpose::Control)
                .map(|_| ())
                .unwrap_err()
        });
        let mut v1 = b"PH\x01\x01".to_vec();
        v1.extend_from_slice(&[5; 32]);
        write_frame(&mut c, &[&v1]).unwrap();
        let err = server.join().unwrap().to_string();
        assert!(err.contains("protocol 1"), "{err}");
        assert!(err.contains("protocol 2"), "{err}");
        let mut rest = Vec::new();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.read_to_end(&mut rest);
        assert!(rest.is_empty(), "answered a protocol-1 hello: {rest:?}");
    }

    #[test]
    fn an_agent_gives_its_name_to_a_hello_naming_none() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let err =
                Connection::server(s, &host(vec![Key::from_bytes([1; 32])]), Purpose::Control)
                    .map(|_| ())
                    .unwrap_err();
            assert!(err.get_ref().is_some_and(|e| e.is::<NameGiven>()), "{err}");
        });
        let t = Duration::from_secs(5);
        assert_eq!(Connection::ask_name(addr, t, t).unwrap(), "pi1");
        server.join().unwrap();
    }

    #[test]
    fn wrong_purpose_is_refused() {
        let key = Key::from_bytes([4; 32]);
        let (c, s) = pair();
        let k = key.clone();
        let server =
            thread::spawn(move || Connection::server(s, &host(vec![k]), Purpose::Data).map(|_| ()));
        let _ = Connection::client(c, &key, Purpose::Control, "pi1");
        assert!(server
            .join()
            .unwrap()
            .unwrap_err()
            .to_string()
            .contains("wrong port"));
    }

    #[test]
    fn garbage_is_refused() {
        use std::io::Write;
        let (mut c, s) = pair();
        let server = thread::spawn(move || {
            Connection::server(s, &host(vec![Key::from_bytes([1; 32])]), Purpose::Control)
                .map(|_| ())
        });
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(server.join().unwrap().is_err());
    }

    /// A server holding only `server_keys`, answering one Ping per connection.
    fn key_server(
        server_keys: Vec<Key>,
        connections: usize,
    ) -> (SocketAddr, thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let mut served = 0;
            for _ in 0..connections {
                let (s, _) = listener.accept().unwrap();
                if let Ok(mut conn) =
                    Connection::server(s, &host(server_keys.clone()), Purpose::Control)
                {
                    if conn.recv().is_ok_and(|m| m == Message::Ping) {
                        conn.send(&Message::Bye).unwrap();
                        served += 1;
                    }
                }
            }
            served
        });
        (addr, handle)
    }

    #[test]
    fn dial_falls_back_to_a_previous_key_the_server_still_has() {
        let (old, new) = (Key::from_bytes([1; 32]), Key::from_bytes([2; 32]));
        let t = Duration::from_secs(5);
        let ping = |addr| {
            Connection::dial(
                addr,
                &[new.clone(), old.clone()],
                Purpose::Control,
                "pi1",
                t,
                t,
            )
            .and_then(|mut c| c.send(&Message::Ping).and_then(|_| c.recv()))
        };
        // Server still on the old key: the new one is refused, the old works.
        let (addr, server) = key_server(vec![old.clone()], 2);
        assert_eq!(ping(addr).unwrap(), Message::Bye);
        assert_eq!(server.join().unwrap(), 1);
        // Server already on the new key: the first try succeeds.
        let (addr, server) = key_server(vec![new.clone()], 1);
        assert_eq!(ping(addr).unwrap(), Message::Bye);
        assert_eq!(server.join().unwrap(), 1);
        // A server with neither key: refused in the end.
        let (addr, server) = key_server(vec![Key::from_bytes([3; 32])], 2);
        assert!(ping(addr).is_err());
        assert_eq!(server.join().unwrap(), 0);
    }
}
