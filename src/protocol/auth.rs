//! Keys, identities and the protocol-2 handshake (docs/PROTOCOL.md).
//!
//! Every connection, every port, starts with one frame each way:
//!
//! ```text
//! client → server  hello ‖ noise₁   hello = "PH" 2 purpose len host
//! server → client  noise₂
//! ```
//!
//! `noise₁`/`noise₂` are the two messages of
//! `Noise_NNpsk0_25519_ChaChaPoly_SHA256` (through the `snow` crate), keyed
//! with the *host key* of the host named in the hello and with the whole
//! hello as prologue: the version, purpose and host name are bound into
//! every key, and the two ephemeral public keys are the nonces. A fresh
//! X25519 exchange per connection gives forward secrecy: a key stolen later
//! does not open recorded traffic.
//!
//! A client without the host key cannot make a `noise₁` the server can
//! open, and the server then hangs up without a byte: it learns nothing.
//! A server without it cannot make a `noise₂` the client can open, and the
//! client sends nothing more. Every later frame is a Noise transport
//! message (ChaCha20-Poly1305 with an implicit counter per direction), so
//! frames cannot be read, altered, replayed, reordered or moved to another
//! connection.
//!
//! Identity: the fleet key stays on the master; each agent holds only its
//! host key, `HKDF-SHA256(salt = "pihealth/2 host key", ikm = fleet key,
//! info = host name)`. The master derives the key of whichever host a hello
//! names, so a connection authenticates *as that host*; an agent accepts
//! only hellos naming itself, so only a peer that knows its key (the
//! master, or the agent itself) can pull it.

use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroize;

pub(crate) const VERSION: u8 = 2;
const MAGIC: &[u8; 2] = b"PH";
/// The Noise protocol name; also the Noise hash's starting point.
pub(crate) const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
/// Each Noise handshake message: an ephemeral key and the tag of an empty
/// payload.
pub const NOISE_MSG_LEN: usize = 32 + 16;
/// HKDF salt of host keys.
const HOST_KEY_SALT: &[u8] = b"pihealth/2 host key";
/// What starts a host key file (a fleet key file is bare hex).
const HOST_KEY_TAG: &str = "pihealth-host-key";

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

/// A secret: 32 random bytes (the fleet key) or derived from them (a host
/// key), stored as 64 hex digits; wiped from memory when dropped.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }
}

/// Why a key could not be made, read or taken; the text is what the
/// daemons and `pihealth keygen` print before exiting.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no randomness: {0}")]
    NoRandomness(#[source] std::io::Error),
    #[error("expected 64 hex digits (made by `pihealth keygen`)")]
    NotHex,
    #[error("expected `{HOST_KEY_TAG} NAME HEX`")]
    NotHostKeyLine,
    /// The host name of a host key file is not an allowed host name.
    #[error("{0}")]
    HostName(String),
    #[error("{}: cannot read the key file: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: key file has mode {mode:o}; expected 600 (chmod 600 {})", .path.display(), .path.display())]
    Exposed { path: PathBuf, mode: u32 },
    /// The file's text is not a key (`source` says why).
    #[error("{}: {source}", .path.display())]
    Content {
        path: PathBuf,
        #[source]
        source: Box<KeyError>,
    },
    #[error("{}: this is the host key of {owner:?}; expected the fleet key (a master needs the key made by `pihealth keygen`)", .path.display())]
    NotFleetKey { path: PathBuf, owner: String },
    #[error("{}: this is the host key of {owner:?}; expected the key of {name:?} (pihealth keygen --host {name})", .path.display())]
    OtherHostsKey {
        path: PathBuf,
        owner: String,
        name: String,
    },
}

/// A key file's content: the fleet key, or one host's key.
#[derive(Debug)]
pub enum KeyFile {
    Fleet(Key),
    Host { name: String, key: Key },
}

impl Key {
    pub(crate) fn generate() -> Result<Key, KeyError> {
        crate::random::random_bytes()
            .map(Key)
            .map_err(KeyError::NoRandomness)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(crate) fn from_hex(text: &str) -> Result<Key, KeyError> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KeyError::NotHex);
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| KeyError::NotHex)?;
        }
        Ok(Key(bytes))
    }

    /// The key of host `name`, derived from this fleet key.
    pub fn for_host(&self, name: &str) -> Key {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(HOST_KEY_SALT), &self.0);
        let mut out = [0u8; 32];
        hk.expand(name.as_bytes(), &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Key(out)
    }

    /// The text of a host key file for `name` (see `KeyFile::parse`).
    pub(crate) fn host_file_text(&self, name: &str) -> String {
        format!("{HOST_KEY_TAG} {name} {}\n", self.to_hex())
    }

    /// Load a fleet key file (the master's), refusing one that others can
    /// read or a host key file.
    pub fn load(path: &Path) -> Result<Key, KeyError> {
        match KeyFile::load(path)? {
            KeyFile::Fleet(key) => Ok(key),
            KeyFile::Host { name, .. } => Err(KeyError::NotFleetKey {
                path: path.to_path_buf(),
                owner: name,
            }),
        }
    }

    /// The fleet keys a master holds: `key_file` first (the one it proves
    /// itself with), then `previous_key_files`, still accepted from peers
    /// and tried as a fallback while a key change-over is under way.
    pub fn load_ring(primary: &Path, previous: &[PathBuf]) -> Result<Vec<Key>, KeyError> {
        let mut keys = vec![Key::load(primary)?];
        for path in previous {
            let key = Key::load(path)?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// The host keys of agent `name`: each file holds either that host's
    /// key or the fleet key (from which the host key is derived, so a fleet
    /// still on one shared key keeps working).
    pub(crate) fn load_host_ring(
        primary: &Path,
        previous: &[PathBuf],
        name: &str,
    ) -> Result<Vec<Key>, KeyError> {
        let mut keys: Vec<Key> = Vec::new();
        for path in std::iter::once(primary).chain(previous.iter().map(PathBuf::as_path)) {
            let key = match KeyFile::load(path)? {
                KeyFile::Fleet(fleet) => fleet.for_host(name),
                KeyFile::Host { name: owner, key } if owner == name => key,
                KeyFile::Host { name: owner, .. } => {
                    return Err(KeyError::OtherHostsKey {
                        path: path.to_path_buf(),
                        owner,
                        name: name.to_string(),
                    })
                }
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(keys)
    }
}

impl KeyFile {
    /// Parse a key file: 64 hex digits (the fleet key) or
    /// `pihealth-host-key NAME HEX` (one host's key).
    pub fn parse(text: &str) -> Result<KeyFile, KeyError> {
        let text = text.trim();
        match text.strip_prefix(HOST_KEY_TAG) {
            None => Key::from_hex(text).map(KeyFile::Fleet),
            Some(rest) => {
                let mut words = rest.split_whitespace();
                let (Some(name), Some(hex), None) = (words.next(), words.next(), words.next())
                else {
                    return Err(KeyError::NotHostKeyLine);
                };
                crate::names::check_host_name(name)
                    .map_err(|why| KeyError::HostName(why.to_string()))?;
                Ok(KeyFile::Host {
                    name: name.to_string(),
                    key: Key::from_hex(hex)?,
                })
            }
        }
    }

    /// Load a key file, refusing one that others can read. The mode is
    /// checked on the file opened, not on the path, so the file read is
    /// the one checked.
    pub fn load(path: &Path) -> Result<KeyFile, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let cannot = |source| KeyError::Unreadable {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(cannot)?;
        let mode = file.metadata().map_err(cannot)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = String::new();
        (&mut file)
            .take(4096)
            .read_to_string(&mut text)
            .map_err(cannot)?;
        let parsed = KeyFile::parse(&text).map_err(|e| KeyError::Content {
            path: path.to_path_buf(),
            source: Box::new(e),
        });
        text.zeroize();
        parsed
    }
}

/// Why a server does not serve the host a hello names, whatever key it
/// proves.
#[derive(Debug, thiserror::Error)]
pub enum HostRefused {
    #[error("host {0:?} is revoked (revoked_hosts)")]
    Revoked(String),
    /// Not an allowed host name.
    #[error("{0}")]
    BadName(String),
    #[error("hello for host {host:?}; this agent is {name:?}")]
    NotThisAgent { host: String, name: String },
}

/// The keys a server checks hellos against.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// The master: any host's key, derived from the fleet keys, except the
    /// hosts revoked.
    Fleet {
        keys: Vec<Key>,
        revoked: Vec<String>,
    },
    /// An agent: only its own keys (current first, then previous).
    Host { name: String, keys: Vec<Key> },
}

impl Credentials {
    /// The keys `host` may prove, or why it may not connect at all.
    pub(crate) fn keys_for(&self, host: &str) -> Result<Vec<Key>, HostRefused> {
        match self {
            Credentials::Fleet { keys, revoked } => {
                if revoked.iter().any(|r| r == host) {
                    return Err(HostRefused::Revoked(host.to_string()));
                }
                crate::names::check_host_name(host)
                    .map_err(|why| HostRefused::BadName(why.to_string()))?;
                Ok(keys.iter().map(|k| k.for_host(host)).collect())
            }
            Credentials::Host { name, keys } => {
                if name != host {
                    return Err(HostRefused::NotThisAgent {
                        host: host.to_string(),
                        name: name.clone(),
                    });
                }
                Ok(keys.clone())
            }
        }
    }
}

/// The hello: `"PH" VERSION purpose len host`.
pub fn encode_hello(purpose: Purpose, host: &str) -> Vec<u8> {
    let host = host.as_bytes();
    let mut out = Vec::with_capacity(5 + host.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(purpose as u8);
    out.push(u8::try_from(host.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&host[..host.len().min(255)]);
    out
}

/// Why a first frame is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// Not a pihealth hello at all.
    #[error("{0}")]
    Garbage(String),
    /// A pihealth hello of another protocol version.
    #[error(
        "peer speaks pihealth protocol {0}; this side speaks only protocol {VERSION} \
         (upgrade the peer: README, \"Upgrading to protocol 2\")"
    )]
    Version(u8),
}

/// A parsed first frame: the hello, its bytes (the Noise prologue), and
/// the Noise message after it.
#[derive(Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    pub purpose: Purpose,
    pub host: String,
    pub prologue: &'a [u8],
    pub noise: &'a [u8],
}

pub fn decode_hello(body: &[u8]) -> Result<Hello<'_>, HelloError> {
    let garbage = |why: &str| HelloError::Garbage(why.to_string());
    if body.len() < 3 || &body[..2] != MAGIC {
        return Err(garbage("not a pihealth hello"));
    }
    if body[2] != VERSION {
        return Err(HelloError::Version(body[2]));
    }
    if body.len() < 5 {
        return Err(garbage("hello too short"));
    }
    let purpose =
        Purpose::from_byte(body[3]).ok_or_else(|| garbage("unknown connection purpose"))?;
    let end = 5 + usize::from(body[4]);
    if body.len() < end {
        return Err(garbage("hello shorter than its host name"));
    }
    let host = std::str::from_utf8(&body[5..end])
        .map_err(|_| garbage("host name in hello is not UTF-8"))?
        .to_string();
    Ok(Hello {
        purpose,
        host,
        prologue: &body[..end],
        noise: &body[end..],
    })
}

fn noise_builder<'a>(psk: &'a Key, prologue: &'a [u8]) -> snow::Builder<'a> {
    let params = NOISE_PARAMS.parse().expect("a valid Noise protocol name");
    snow::Builder::new(params)
        .psk(0, psk.as_bytes())
        .prologue(prologue)
}

/// Why the client's side of a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    #[error("the server failed to prove the key")]
    ServerUnproved,
}

/// The client's first frame for `host`'s key, and the state that reads the
/// answer. `ephemeral` fixes the ephemeral key (test vectors only).
pub fn client_start(
    purpose: Purpose,
    host: &str,
    key: &Key,
    ephemeral: Option<&[u8; 32]>,
) -> Result<(Vec<u8>, snow::HandshakeState), HandshakeError> {
    let hello = encode_hello(purpose, host);
    let mut builder = noise_builder(key, &hello);
    if let Some(e) = ephemeral {
        builder = builder.fixed_ephemeral_key_for_testing_only(e);
    }
    let mut hs = builder.build_initiator()?;
    let mut noise = [0u8; NOISE_MSG_LEN];
    let n = hs.write_message(&[], &mut noise)?;
    let mut first = hello;
    first.extend_from_slice(&noise[..n]);
    Ok((first, hs))
}

/// The client reads the server's answer: it opens only if the server holds
/// the same host key.
pub fn client_finish(
    mut hs: snow::HandshakeState,
    answer: &[u8],
) -> Result<snow::TransportState, HandshakeError> {
    let mut payload = [0u8; 64];
    hs.read_message(answer, &mut payload)
        .map_err(|_| HandshakeError::ServerUnproved)?;
    Ok(hs.into_transport_mode()?)
}

/// Why a server refused a first frame.
#[derive(Debug)]
pub enum Refusal {
    Hello(HelloError),
    /// A hello for another port.
    WrongPurpose(Purpose),
    /// A host this server does not serve (revoked, or not this agent).
    Host(HostRefused),
    /// No key we hold for this host opens the Noise message.
    WrongKey {
        host: String,
    },
}

/// The server reads a first frame for `purpose`, tries each key the host
/// may hold, and on success answers; `ephemeral` as in `client_start`.
pub fn server_accept(
    first: &[u8],
    purpose: Purpose,
    credentials: &Credentials,
    ephemeral: Option<&[u8; 32]>,
) -> Result<(String, Vec<u8>, snow::TransportState), Refusal> {
    let hello = decode_hello(first).map_err(Refusal::Hello)?;
    if hello.purpose != purpose {
        return Err(Refusal::WrongPurpose(hello.purpose));
    }
    let keys = credentials.keys_for(&hello.host).map_err(Refusal::Host)?;
    let mut payload = [0u8; 64];
    for key in &keys {
        let mut builder = noise_builder(key, hello.prologue);
        if let Some(e) = ephemeral {
            builder = builder.fixed_ephemeral_key_for_testing_only(e);
        }
        let Ok(mut hs) = builder.build_responder() else {
            continue;
        };
        if hs.read_message(hello.noise, &mut payload).is_err() {
            continue;
        }
        let mut answer = vec![0u8; NOISE_MSG_LEN];
        let finished = hs.write_message(&[], &mut answer).and_then(|n| {
            answer.truncate(n);
            hs.into_transport_mode()
        });
        if let Ok(transport) = finished {
            return Ok((hello.host, answer, transport));
        }
    }
    Err(Refusal::WrongKey { host: hello.host })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> Credentials {
        Credentials::Fleet {
            keys: vec![Key::from_bytes([7; 32])],
            revoked: vec!["gone".into()],
        }
    }

    fn handshake(
        client_key: &Key,
        host: &str,
        server: &Credentials,
    ) -> Result<(snow::TransportState, snow::TransportState), String> {
        let (first, hs) =
            client_start(Purpose::Control, host, client_key, None).map_err(|e| e.to_string())?;
        let (named, answer, server_side) =
            server_accept(&first, Purpose::Control, server, None).map_err(|r| format!("{r:?}"))?;
        assert_eq!(named, host);
        let client_side = client_finish(hs, &answer).map_err(|e| e.to_string())?;
        Ok((client_side, server_side))
    }

    #[test]
    fn a_host_key_authenticates_as_that_host_only() {
        let fleet_key = Key::from_bytes([7; 32]);
        let pi1 = fleet_key.for_host("pi1");
        assert!(handshake(&pi1, "pi1", &fleet()).is_ok());
        // pi1's key naming pi2: refused.
        let err = handshake(&pi1, "pi2", &fleet()).unwrap_err();
        assert!(err.contains("WrongKey"), "{err}");
        // A revoked host: refused whatever it holds.
        let err = handshake(&fleet_key.for_host("gone"), "gone", &fleet()).unwrap_err();
        assert!(err.contains(r#"Host(Revoked("gone"))"#), "{err}");
        // An agent takes hellos for itself only, and only with its key.
        let agent = Credentials::Host {
            name: "pi1".into(),
            keys: vec![pi1.clone()],
        };
        assert!(handshake(&pi1, "pi1", &agent).is_ok());
        let pi2 = fleet_key.for_host("pi2");
        assert!(handshake(&pi2, "pi2", &agent).unwrap_err().contains("Host"));
        assert!(handshake(&pi2, "pi1", &agent)
            .unwrap_err()
            .contains("WrongKey"));
        // The fleet key itself is not a host key.
        assert!(handshake(&fleet_key, "pi1", &fleet()).is_err());
    }

    #[test]
    fn a_server_without_the_key_is_refused_by_the_client() {
        let key = Key::from_bytes([7; 32]).for_host("pi1");
        let (first, hs) = client_start(Purpose::Data, "pi1", &key, None).unwrap();
        let impostor = Credentials::Host {
            name: "pi1".into(),
            keys: vec![Key::from_bytes([1; 32])],
        };
        assert!(server_accept(&first, Purpose::Data, &impostor, None).is_err());
        // An answer made for another handshake (a replay) does not open.
        let (first2, _) = client_start(Purpose::Data, "pi1", &key, None).unwrap();
        let honest = Credentials::Host {
            name: "pi1".into(),
            keys: vec![key],
        };
        let (_, answer2, _) = server_accept(&first2, Purpose::Data, &honest, None).unwrap();
        assert!(client_finish(hs, &answer2).is_err());
    }

    #[test]
    fn the_hello_is_bound_into_the_keys() {
        let key = Key::from_bytes([7; 32]).for_host("pi1");
        let agent = Credentials::Host {
            name: "pi1".into(),
            keys: vec![key.clone()],
        };
        let (first, _) = client_start(Purpose::Control, "pi1", &key, None).unwrap();
        // The same Noise message behind another purpose byte: refused.
        let mut other = first.clone();
        other[3] = Purpose::Data as u8;
        assert!(matches!(
            server_accept(&other, Purpose::Data, &agent, None),
            Err(Refusal::WrongKey { .. })
        ));
        assert!(matches!(
            server_accept(&first, Purpose::Data, &agent, None),
            Err(Refusal::WrongPurpose(Purpose::Control))
        ));
    }

    #[test]
    fn every_purpose_survives_its_byte_and_no_other_byte_is_one() {
        for p in [
            Purpose::Control,
            Purpose::Data,
            Purpose::Register,
            Purpose::Alarm,
        ] {
            assert_eq!(Purpose::from_byte(p as u8), Some(p));
        }
        for b in [0u8, 5, 255] {
            assert_eq!(Purpose::from_byte(b), None);
        }
    }

    #[test]
    fn the_first_message_is_the_hello_and_exactly_one_noise_message() {
        let key = Key::from_bytes([3; 32]);
        let hello = encode_hello(Purpose::Data, "pi2");
        let (first, _) = client_start(Purpose::Data, "pi2", &key, None).unwrap();
        assert_eq!(&first[..hello.len()], &hello[..]);
        assert_eq!(first.len() - hello.len(), NOISE_MSG_LEN);
        assert_eq!(
            NOISE_MSG_LEN, 48,
            "an X25519 key and an empty payload's tag"
        );
    }

    #[test]
    fn a_key_never_shows_in_debug_output() {
        let key = Key::from_bytes([0xab; 32]);
        let shown = format!("{key:?}");
        assert_eq!(shown, "Key(..)");
        assert!(!shown.contains("ab"));
        assert_eq!(key.as_bytes(), &[0xab; 32]);
    }

    #[test]
    fn key_rings_hold_the_primary_first_and_each_key_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            path
        };
        let (a, b) = (Key::from_bytes([1; 32]), Key::from_bytes([2; 32]));
        let a_path = write("a.key", &a.to_hex());
        let b_path = write("b.key", &b.to_hex());
        let again = write("a-again.key", &a.to_hex());
        let ring = Key::load_ring(&a_path, &[again.clone(), b_path.clone()]).unwrap();
        assert_eq!(ring, vec![a.clone(), b.clone()]);
        assert_eq!(Key::load_ring(&b_path, &[]).unwrap(), vec![b.clone()]);

        // An agent's ring: its own host key file, or the fleet key it
        // derives its own from; the same key twice is kept once.
        let own = write("pi1.key", &a.for_host("pi1").host_file_text("pi1"));
        let ring = Key::load_host_ring(&own, std::slice::from_ref(&a_path), "pi1").unwrap();
        assert_eq!(ring, vec![a.for_host("pi1")]);
        let ring = Key::load_host_ring(&a_path, &[b_path], "pi1").unwrap();
        assert_eq!(ring, vec![a.for_host("pi1"), b.for_host("pi1")]);
        assert!(Key::load_host_ring(&own, &[], "pi2").is_err());
    }

    #[test]
    fn hello_parses_strictly() {
        let hello = encode_hello(Purpose::Alarm, "pi7");
        let parsed = decode_hello(&hello).unwrap();
        assert_eq!(
            (parsed.purpose, parsed.host.as_str()),
            (Purpose::Alarm, "pi7")
        );
        assert!(parsed.noise.is_empty());
        assert!(decode_hello(b"GET / HTTP/1.1\r\n").is_err());
        assert!(decode_hello(b"P").is_err());
        assert!(decode_hello(b"XH\x02\x01\x00").is_err());
        assert!(decode_hello(b"PX\x02\x01\x00").is_err());
        assert!(decode_hello(b"PH\x02\x01").is_err());
        // Three bytes already tell an old peer's version.
        assert_eq!(decode_hello(b"PH\x01").unwrap_err(), HelloError::Version(1));
        // The shortest hello: no host name (the server refuses the name).
        let bare = decode_hello(b"PH\x02\x01\x00").unwrap();
        assert_eq!((bare.purpose, bare.host.as_str()), (Purpose::Control, ""));
        // Protocol 1's hello: a version error, said as such.
        let mut v1 = b"PH\x01\x01".to_vec();
        v1.extend_from_slice(&[0; 32]);
        let err = decode_hello(&v1).unwrap_err();
        assert_eq!(err, HelloError::Version(1));
        assert_eq!(
            err.to_string(),
            "peer speaks pihealth protocol 1; this side speaks only protocol 2 \
             (upgrade the peer: README, \"Upgrading to protocol 2\")"
        );
        let mut bad_purpose = encode_hello(Purpose::Alarm, "pi7");
        bad_purpose[3] = 77;
        assert!(decode_hello(&bad_purpose).is_err());
        let mut short = encode_hello(Purpose::Alarm, "pi7");
        short.pop();
        assert!(decode_hello(&short).is_err());
    }

    #[test]
    fn key_file_errors_name_the_file_and_what_was_expected() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let fleet = Key::from_bytes([7; 32]);
        let open = write("open.key", &fleet.to_hex(), 0o644);
        assert_eq!(
            Key::load(&open).unwrap_err().to_string(),
            format!(
                "{0}: key file has mode 644; expected 600 (chmod 600 {0})",
                open.display()
            )
        );
        let host = write(
            "pi1.key",
            &fleet.for_host("pi1").host_file_text("pi1"),
            0o600,
        );
        assert_eq!(
            Key::load(&host).unwrap_err().to_string(),
            format!(
                "{}: this is the host key of \"pi1\"; expected the fleet key (a master \
                 needs the key made by `pihealth keygen`)",
                host.display()
            )
        );
        assert_eq!(
            Key::load_host_ring(&host, &[], "pi2")
                .unwrap_err()
                .to_string(),
            format!(
                "{}: this is the host key of \"pi1\"; expected the key of \"pi2\" \
                 (pihealth keygen --host pi2)",
                host.display()
            )
        );
        let junk = write("junk.key", "not a key\n", 0o600);
        assert_eq!(
            Key::load(&junk).unwrap_err().to_string(),
            format!(
                "{}: expected 64 hex digits (made by `pihealth keygen`)",
                junk.display()
            )
        );
        let missing = dir.path().join("missing.key");
        assert!(Key::load(&missing)
            .unwrap_err()
            .to_string()
            .starts_with(&format!(
                "{}: cannot read the key file: ",
                missing.display()
            )));
    }

    #[test]
    fn key_files_parse_and_round_trip() {
        let k = Key::generate().unwrap();
        assert_eq!(Key::from_hex(&k.to_hex()).unwrap(), k);
        assert!(Key::from_hex("abc").is_err());
        assert!(Key::from_hex(&"zz".repeat(32)).is_err());
        let host = k.for_host("pi1");
        match KeyFile::parse(&host.host_file_text("pi1")).unwrap() {
            KeyFile::Host { name, key } => assert_eq!((name.as_str(), key), ("pi1", host)),
            other => panic!("{other:?}"),
        }
        assert!(KeyFile::parse("pihealth-host-key pi1").is_err());
        assert!(KeyFile::parse(&format!("pihealth-host-key ../x {}", k.to_hex())).is_err());
        assert!(matches!(
            KeyFile::parse(&k.to_hex()).unwrap(),
            KeyFile::Fleet(_)
        ));
        // Derivation depends on the name and the fleet key.
        assert_ne!(k.for_host("pi1"), k.for_host("pi2"));
        assert_ne!(k.for_host("pi1"), Key::generate().unwrap().for_host("pi1"));
    }
}
