//! Both sides of the protocol-2 handshake against a peer that sends
//! arbitrary bytes (docs/PROTOCOL.md §4, §5).
//!
//! The first input byte picks the mode and the connection purpose; the rest
//! is everything the peer sends.
//!
//! - server: `Connection::server` (an agent, `pi1`, holding two keys as in a
//!   change-over) reads the bytes as a client's first frame. It must fail
//!   (the bytes cannot hold a Noise message under a key they do not know),
//!   and before failing it may have sent nothing, or its name to a name
//!   query: a peer without the key learns nothing else.
//! - client: `Connection::client` reads the bytes as the server's answer.
//!   It must fail (the answer must be a Noise message under the host key and
//!   our random ephemeral key), and a failed client sent only its hello.
//! - session: an honest server completes the handshake with the right key
//!   (so the target is not vacuous: that must succeed), then the bytes are
//!   the transport frames that follow. None may be accepted: each needs a
//!   tag under a session key derived from the client's random ephemeral key.
#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::fuzz_target;
use pihealth::protocol::auth::{self, Credentials, Key, Purpose};
use pihealth::protocol::frame::{read_frame, write_frame, MAX_HANDSHAKE_FRAME};
use pihealth::protocol::Connection;

/// An in-memory stream: reads come from the peer's bytes, writes are kept
/// outside it (a failed `Connection::server` drops the stream).
struct Wire<'a, 'b> {
    input: &'a [u8],
    written: &'b mut Vec<u8>,
}

impl Read for Wire<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Wire<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A server that follows the protocol with `credentials`, answering the
/// client's first frame, then sends the fuzzer's bytes as transport frames.
struct HonestServer<'a> {
    credentials: Credentials,
    purpose: Purpose,
    written: Vec<u8>,
    to_read: Vec<u8>,
    answered: bool,
    frames: &'a [u8],
}

impl HonestServer<'_> {
    fn advance(&mut self) {
        if self.answered {
            self.to_read.clear();
            return;
        }
        let first = read_frame(&mut &self.written[..], MAX_HANDSHAKE_FRAME).expect("a hello");
        let (host, answer, _) = auth::server_accept(&first, self.purpose, &self.credentials, None)
            .unwrap_or_else(|r| panic!("an honest client is refused: {r:?}"));
        assert_eq!(host, "pi1");
        write_frame(&mut self.to_read, &[&answer]).expect("writing to a Vec");
        self.to_read.extend_from_slice(self.frames);
        self.answered = true;
    }
}

impl Read for HonestServer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.to_read.is_empty() {
            self.advance();
        }
        let n = buf.len().min(self.to_read.len());
        buf[..n].copy_from_slice(&self.to_read[..n]);
        self.to_read.drain(..n);
        Ok(n)
    }
}

impl Write for HonestServer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn keys() -> [Key; 2] {
    // Two keys, as during a key change-over: either must be proved.
    [Key::from_bytes([7; 32]), Key::from_bytes([8; 32])]
}

fn agent() -> Credentials {
    Credentials::Host {
        name: "pi1".into(),
        keys: keys().to_vec(),
    }
}

fn server_side(purpose: Purpose, input: &[u8]) {
    let mut sent = Vec::new();
    let wire = Wire {
        input,
        written: &mut sent,
    };
    let result = Connection::server(wire, &agent(), purpose);
    assert!(result.is_err(), "authenticated a client without the key");
    drop(result);
    // Nothing went out, or our name to a name query.
    if !sent.is_empty() {
        let body = read_frame(&mut &sent[..], MAX_HANDSHAKE_FRAME).expect("one frame");
        let hello = auth::decode_hello(&body).expect("our name");
        assert_eq!((hello.host.as_str(), hello.purpose), ("pi1", purpose));
        assert!(hello.noise.is_empty());
        assert_eq!(sent.len(), 4 + body.len(), "more than our name was sent");
    }
}

fn client_side(purpose: Purpose, input: &[u8]) {
    let mut sent = Vec::new();
    let wire = Wire {
        input,
        written: &mut sent,
    };
    let result = Connection::client(wire, &keys()[0], purpose, "pi1");
    assert!(result.is_err(), "accepted a server without the key");
    drop(result);
    let body = read_frame(&mut &sent[..], MAX_HANDSHAKE_FRAME).expect("our hello");
    assert_eq!(sent.len(), 4 + body.len(), "more than the hello was sent");
}

fn session(purpose: Purpose, frames: &[u8]) {
    let server = HonestServer {
        credentials: agent(),
        purpose,
        written: Vec::new(),
        to_read: Vec::new(),
        answered: false,
        frames,
    };
    let mut conn =
        Connection::client(server, &keys()[1], purpose, "pi1").expect("honest handshake");
    for _ in 0..4 {
        match conn.recv() {
            Ok(m) => panic!("accepted an unauthenticated frame: {}", m.kind()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(_) => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let purpose = match (control >> 2) & 3 {
        0 => Purpose::Control,
        1 => Purpose::Data,
        2 => Purpose::Register,
        _ => Purpose::Alarm,
    };
    match control & 3 {
        0 => server_side(purpose, input),
        1 => client_side(purpose, input),
        2 => session(purpose, input),
        _ => {
            server_side(purpose, input);
            client_side(purpose, input);
        }
    }
});
