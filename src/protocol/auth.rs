//! The shared key, the mutual challenge–response, and per-frame MACs.
//!
//! Handshake (every connection, every port), all frames plain until done:
//!
//! ```text
//! client → server  hello      "PH" version purpose nonce_c(32)
//! server → client  challenge  version nonce_s(32)
//! client → server  proof_c    HMAC(K, "pihealth/1 client" purpose nonce_c nonce_s)
//! server → client  proof_s    HMAC(K, "pihealth/1 server" purpose nonce_c nonce_s)
//! ```
//!
//! The server proves itself only after the client has, so a client without
//! the key learns a random nonce and nothing else. The client, in turn,
//! checks `proof_s` before it sends any request, so a server without the
//! key (an impostor at the master's or an agent's address) learns our
//! nonce and `proof_c` and nothing else. (Clients before issue 11 sent
//! their first request right behind `proof_c` to save a round trip;
//! servers still accept that order, so old clients keep working.) Both directions then
//! derive their own session key from both nonces; every later frame is
//! `payload || HMAC(session_key, seq || payload)` with an implicit sequence
//! number per direction, so frames cannot be altered, replayed, reordered
//! or moved to another connection. The purpose byte binds a session to the
//! port it was made for.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const VERSION: u8 = 1;
pub const NONCE_LEN: usize = 32;
pub const MAC_LEN: usize = 32;
const MAGIC: &[u8; 2] = b"PH";

/// What a connection is for; each listening port accepts exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Control = 1,
    Data = 2,
    Register = 3,
    Alarm = 4,
}

impl Purpose {
    fn from_byte(b: u8) -> Option<Purpose> {
        match b {
            1 => Some(Purpose::Control),
            2 => Some(Purpose::Data),
            3 => Some(Purpose::Register),
            4 => Some(Purpose::Alarm),
            _ => None,
        }
    }
}

/// The shared secret: 32 random bytes, stored as 64 hex digits.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn generate() -> Result<Key, String> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
        Ok(Key(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Result<Key, String> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("expected 64 hex digits (made by `pihealth keygen`)".into());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| "expected 64 hex digits".to_string())?;
        }
        Ok(Key(bytes))
    }

    /// Load a key file, refusing one that others can read.
    pub fn load(path: &Path) -> Result<Key, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("{}: cannot read the key file: {e}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{}: key file has mode {mode:o}; expected 600 (chmod 600 {})",
                path.display(),
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the key file: {e}", path.display()))?;
        Key::from_hex(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The keys a daemon holds: `key_file` first (the one it proves itself
    /// with), then `previous_key_files`, still accepted from peers and tried
    /// as a fallback while a key change-over is under way.
    pub fn load_ring(primary: &Path, previous: &[std::path::PathBuf]) -> Result<Vec<Key>, String> {
        let mut keys = vec![Key::load(primary)?];
        for path in previous {
            let key = Key::load(path)?;
            if !keys.iter().any(|k| k.to_hex() == key.to_hex()) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// HMAC(K, label || purpose || nonce_c || nonce_s), ready to finalize or verify.
    fn keyed(&self, label: &[u8], purpose: Purpose, nc: &[u8; 32], ns: &[u8; 32]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(label);
        mac.update(&[purpose as u8]);
        mac.update(nc);
        mac.update(ns);
        mac
    }

    fn mac(&self, label: &[u8], purpose: Purpose, nc: &[u8; 32], ns: &[u8; 32]) -> [u8; 32] {
        self.keyed(label, purpose, nc, ns)
            .finalize()
            .into_bytes()
            .into()
    }
}

/// Fresh random bytes for nonces and tokens.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).map_err(std::io::Error::other)?;
    Ok(out)
}

pub fn encode_hello(purpose: Purpose, nonce: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + NONCE_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(purpose as u8);
    out.extend_from_slice(nonce);
    out
}

pub fn decode_hello(body: &[u8]) -> Result<(Purpose, [u8; 32]), String> {
    if body.len() != 4 + NONCE_LEN || &body[..2] != MAGIC {
        return Err("not a pihealth hello".into());
    }
    if body[2] != VERSION {
        return Err(format!(
            "protocol version {} not supported (want {VERSION})",
            body[2]
        ));
    }
    let purpose = Purpose::from_byte(body[3]).ok_or("unknown connection purpose")?;
    let mut nonce = [0u8; 32];
    nonce.copy_from_slice(&body[4..]);
    Ok((purpose, nonce))
}

pub fn encode_challenge(nonce: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + NONCE_LEN);
    out.push(VERSION);
    out.extend_from_slice(nonce);
    out
}

pub fn decode_challenge(body: &[u8]) -> Result<[u8; 32], String> {
    if body.len() != 1 + NONCE_LEN || body[0] != VERSION {
        return Err("not a pihealth challenge".into());
    }
    let mut nonce = [0u8; 32];
    nonce.copy_from_slice(&body[1..]);
    Ok(nonce)
}

/// The nonces and purpose of one handshake, and the proofs derived from them.
pub struct Handshake {
    pub purpose: Purpose,
    pub client_nonce: [u8; 32],
    pub server_nonce: [u8; 32],
}

impl Handshake {
    pub fn client_proof(&self, key: &Key) -> [u8; 32] {
        key.mac(
            b"pihealth/1 client",
            self.purpose,
            &self.client_nonce,
            &self.server_nonce,
        )
    }

    pub fn server_proof(&self, key: &Key) -> [u8; 32] {
        key.mac(
            b"pihealth/1 server",
            self.purpose,
            &self.client_nonce,
            &self.server_nonce,
        )
    }

    /// Which of `keys` (current and, during a key change, previous) made
    /// this client proof; compared in constant time.
    pub fn check_client_proof<'k>(&self, keys: &'k [Key], proof: &[u8]) -> Option<&'k Key> {
        keys.iter().find(|key| {
            key.keyed(
                b"pihealth/1 client",
                self.purpose,
                &self.client_nonce,
                &self.server_nonce,
            )
            .verify_slice(proof)
            .is_ok()
        })
    }

    /// Whether the server proved `key`; compared in constant time.
    pub fn check_server_proof(&self, key: &Key, proof: &[u8]) -> bool {
        key.keyed(
            b"pihealth/1 server",
            self.purpose,
            &self.client_nonce,
            &self.server_nonce,
        )
        .verify_slice(proof)
        .is_ok()
    }

    /// Session MAC states: (client→server, server→client).
    pub fn session(&self, key: &Key) -> (FrameMac, FrameMac) {
        let c2s = key.mac(
            b"pihealth/1 c2s",
            self.purpose,
            &self.client_nonce,
            &self.server_nonce,
        );
        let s2c = key.mac(
            b"pihealth/1 s2c",
            self.purpose,
            &self.client_nonce,
            &self.server_nonce,
        );
        (FrameMac::new(&c2s), FrameMac::new(&s2c))
    }
}

/// MACs the frames of one direction of one connection, counting them.
pub struct FrameMac {
    keyed: HmacSha256,
    seq: u64,
}

impl FrameMac {
    fn new(session_key: &[u8; 32]) -> FrameMac {
        FrameMac {
            keyed: HmacSha256::new_from_slice(session_key).expect("any key length"),
            seq: 0,
        }
    }

    /// The MAC to send after `payload` as the next frame.
    pub fn seal(&mut self, payload: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.keyed.clone();
        mac.update(&self.seq.to_be_bytes());
        mac.update(payload);
        self.seq += 1;
        mac.finalize().into_bytes().into()
    }

    /// Like `seal` for a payload given in parts.
    pub fn seal_parts(&mut self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut mac = self.keyed.clone();
        mac.update(&self.seq.to_be_bytes());
        for part in parts {
            mac.update(part);
        }
        self.seq += 1;
        mac.finalize().into_bytes().into()
    }

    /// Check the next received frame (`payload || mac`) and return its payload.
    pub fn open<'a>(&mut self, body: &'a [u8]) -> Result<&'a [u8], String> {
        if body.len() < MAC_LEN {
            return Err("frame too short for its MAC".into());
        }
        let (payload, tag) = body.split_at(body.len() - MAC_LEN);
        let mut mac = self.keyed.clone();
        mac.update(&self.seq.to_be_bytes());
        mac.update(payload);
        mac.verify_slice(tag).map_err(|_| {
            format!(
                "bad MAC on frame {} (altered, replayed or reordered)",
                self.seq
            )
        })?;
        self.seq += 1;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake() -> Handshake {
        Handshake {
            purpose: Purpose::Control,
            client_nonce: [1; 32],
            server_nonce: [2; 32],
        }
    }

    #[test]
    fn proofs_check_with_the_right_key_only() {
        let (k1, k2) = (Key::from_bytes([7; 32]), Key::from_bytes([8; 32]));
        let h = handshake();
        let proof = h.client_proof(&k1);
        assert!(h
            .check_client_proof(std::slice::from_ref(&k1), &proof)
            .is_some());
        assert!(h
            .check_client_proof(std::slice::from_ref(&k2), &proof)
            .is_none());
        // A key change: the server holds new and old keys.
        assert!(h
            .check_client_proof(&[k2.clone(), k1.clone()], &proof)
            .is_some());
        // Client and server proofs are not interchangeable (no reflection).
        assert!(!h.check_server_proof(&k1, &proof));
        assert!(h.check_server_proof(&k1, &h.server_proof(&k1)));
        // Another purpose (port) gives another proof.
        let other = Handshake {
            purpose: Purpose::Data,
            ..handshake()
        };
        assert!(other.check_client_proof(&[k1], &proof).is_none());
    }

    #[test]
    fn frames_cannot_be_altered_replayed_or_reordered() {
        let key = Key::from_bytes([9; 32]);
        let (mut send, _) = handshake().session(&key);
        let (mut recv, _) = handshake().session(&key);
        let frames: Vec<Vec<u8>> = (0..3u8)
            .map(|i| {
                let mut f = vec![i; 5];
                f.extend_from_slice(&send.seal(&[i; 5]));
                f
            })
            .collect();
        // Reordered: frame 1 before frame 0.
        assert!(recv.open(&frames[1]).is_err());
        assert_eq!(recv.open(&frames[0]).unwrap(), &[0; 5]);
        // Replayed.
        assert!(recv.open(&frames[0]).is_err());
        // Altered.
        let mut bad = frames[1].clone();
        bad[0] ^= 1;
        assert!(recv.open(&bad).is_err());
        assert_eq!(recv.open(&frames[1]).unwrap(), &[1; 5]);
        // Truncated below MAC length.
        assert!(recv.open(&[0; 10]).is_err());
        // Directions use different keys: a frame sent one way fails the other.
        let (_, mut s2c) = handshake().session(&key);
        assert!(s2c.open(&frames[2]).is_err());
    }

    #[test]
    fn hello_and_challenge_parse_strictly() {
        let hello = encode_hello(Purpose::Alarm, &[3; 32]);
        assert_eq!(decode_hello(&hello).unwrap(), (Purpose::Alarm, [3; 32]));
        assert!(decode_hello(b"GET / HTTP/1.1\r\n").is_err());
        let mut wrong_version = hello.clone();
        wrong_version[2] = 9;
        assert!(decode_hello(&wrong_version)
            .unwrap_err()
            .contains("version"));
        let mut wrong_purpose = hello;
        wrong_purpose[3] = 77;
        assert!(decode_hello(&wrong_purpose).is_err());
        assert_eq!(
            decode_challenge(&encode_challenge(&[5; 32])).unwrap(),
            [5; 32]
        );
        assert!(decode_challenge(&[1, 2, 3]).is_err());
    }

    #[test]
    fn key_hex_round_trip() {
        let k = Key::generate().unwrap();
        assert_eq!(Key::from_hex(&k.to_hex()).unwrap().0, k.0);
        assert!(Key::from_hex("abc").is_err());
        assert!(Key::from_hex(&"zz".repeat(32)).is_err());
    }
}
