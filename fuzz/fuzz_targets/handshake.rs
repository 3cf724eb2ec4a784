//! Both sides of the handshake against a peer that sends arbitrary bytes.
//!
//! The first input byte picks the mode and the connection purpose; the rest
//! is everything the peer sends.
//!
//! - server: `Connection::server` reads the bytes as a client's hello and
//!   proof. It must fail (the bytes cannot hold a proof over our random
//!   nonce), and before failing it may have sent nothing but one challenge
//!   frame: a peer without the key learns a random nonce and nothing else.
//! - client: `Connection::client` reads the bytes as the server's challenge
//!   and proof. It may return (it checks the server lazily), but confirming
//!   the server and every `recv` after that must fail.
//! - session: an honest server completes the handshake with the right key
//!   (so the target is not vacuous: that must succeed), then the bytes are
//!   the frames that follow. None may be accepted: each needs a MAC under a
//!   session key derived from the client's random nonce.
#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::fuzz_target;
use pihealth::protocol::auth::{self, Handshake, Key, Purpose};
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

/// A server that follows the protocol with `key`, reacting to what the
/// client wrote, then sends the fuzzer's bytes as post-handshake frames.
struct HonestServer<'a> {
    key: Key,
    purpose: Purpose,
    client_nonce: [u8; 32],
    written: Vec<u8>,
    to_read: Vec<u8>,
    stage: u8,
    frames: &'a [u8],
}

const SERVER_NONCE: [u8; 32] = [0x5a; 32];

impl HonestServer<'_> {
    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, &[body]).expect("writing to a Vec");
        out
    }

    /// Everything the client wrote so far, as frames.
    fn client_frames(&self) -> Vec<Vec<u8>> {
        let mut r = &self.written[..];
        let mut out = Vec::new();
        while let Ok(f) = read_frame(&mut r, MAX_HANDSHAKE_FRAME) {
            out.push(f);
        }
        out
    }

    /// Produce the next thing the server says, once the client has spoken.
    fn advance(&mut self) {
        let frames = self.client_frames();
        match self.stage {
            0 => {
                let (purpose, nonce) = auth::decode_hello(&frames[0]).expect("client hello");
                assert_eq!(purpose, self.purpose);
                self.client_nonce = nonce;
                self.to_read = Self::frame(&auth::encode_challenge(&SERVER_NONCE));
                self.stage = 1;
            }
            1 => {
                let hs = self.handshake();
                assert!(
                    hs.check_client_proof(std::slice::from_ref(&self.key), &frames[1])
                        .is_some(),
                    "an honest client's proof checks"
                );
                self.to_read = Self::frame(&hs.server_proof(&self.key));
                self.to_read.extend_from_slice(self.frames);
                self.stage = 2;
            }
            _ => self.to_read.clear(),
        }
    }

    fn handshake(&self) -> Handshake {
        Handshake {
            purpose: self.purpose,
            client_nonce: self.client_nonce,
            server_nonce: SERVER_NONCE,
        }
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

fn server_side(purpose: Purpose, input: &[u8]) {
    let mut sent = Vec::new();
    let wire = Wire {
        input,
        written: &mut sent,
    };
    let result = Connection::server(wire, &keys(), purpose);
    assert!(result.is_err(), "authenticated a client without the key");
    drop(result);
    // Nothing but (at most) the challenge with our nonce went out.
    if !sent.is_empty() {
        let body = read_frame(&mut &sent[..], MAX_HANDSHAKE_FRAME).expect("one frame");
        auth::decode_challenge(&body).expect("a challenge");
        assert_eq!(
            sent.len(),
            4 + body.len(),
            "more than the challenge was sent"
        );
    }
}

fn client_side(purpose: Purpose, input: &[u8], confirm_first: bool) {
    let mut sent = Vec::new();
    let wire = Wire {
        input,
        written: &mut sent,
    };
    let Ok(mut conn) = Connection::client(wire, &keys()[0], purpose) else {
        return;
    };
    if confirm_first {
        assert!(
            conn.confirm_server().is_err(),
            "accepted a server without the key"
        );
    }
    // A caller that ignores the failure and reads on must still get nothing.
    for _ in 0..4 {
        assert!(
            conn.recv().is_err(),
            "received from a server without the key"
        );
    }
}

fn session(purpose: Purpose, frames: &[u8]) {
    let key = keys()[1].clone();
    let server = HonestServer {
        key: key.clone(),
        purpose,
        client_nonce: [0; 32],
        written: Vec::new(),
        to_read: Vec::new(),
        stage: 0,
        frames,
    };
    let mut conn = Connection::client(server, &key, purpose).expect("honest handshake");
    conn.confirm_server()
        .expect("an honest server proves the key");
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
        1 => client_side(purpose, input, control & 0x10 != 0),
        2 => session(purpose, input),
        _ => {
            server_side(purpose, input);
            client_side(purpose, input, true);
        }
    }
});
