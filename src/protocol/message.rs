//! The messages exchanged after authentication, and their byte encoding.
//!
//! Hand-written rather than derived so every length and count from the
//! network is checked before use, and so the decoder is a pure function
//! that tests and fuzzers can call on any byte slice.

use crate::storage::ArchiveHeader;

/// Longest name (host, log type, archive file) accepted on the wire.
pub(crate) const MAX_NAME: usize = 128;
/// Longest free text (alarm message, error) accepted on the wire.
pub(crate) const MAX_TEXT: usize = 4096;
/// Most offers in one `Pending` answer; more follow in the next round.
pub(crate) const MAX_OFFERS: usize = 256;
/// Largest data chunk on a data connection: with its 5-byte header it fits
/// one Noise frame (`conn::MAX_FRAGMENT`).
pub(crate) const MAX_CHUNK: usize = 64 * 1024 - 64;
/// An agent whose clock (`AgentInfo::time_ms`, `Register`, `Heartbeat`)
/// is further than this from the master's is flagged as skewed, on the
/// status page and by `pihealth status` alike.
pub(crate) const SKEW_LIMIT_MS: i64 = 30_000;
pub const TOKEN_LEN: usize = 16;

/// Where a piece of log lives on the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    /// A rotated, gzip-compressed archive, sent as it is.
    Archive = 1,
    /// The not-yet-acknowledged tail of the current plain log.
    Current = 2,
}

/// A range of one log type's byte stream on one agent.
///
/// Every type's output is one endless stream of bytes; `epoch` names the
/// stream (new when an agent starts with no state at all) and `start..end`
/// are offsets in it. The master stores a range only beyond what it has,
/// which makes re-sends harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceRef {
    pub log_type: String,
    pub kind: PieceKind,
    pub epoch: u64,
    pub start: u64,
    pub end: u64,
}

impl PieceRef {
    /// Whether an archive with `header` holds exactly this piece (the
    /// archive format is `storage`'s; the protocol only names ranges).
    pub(crate) fn matches_header(&self, header: &ArchiveHeader) -> bool {
        self.log_type == header.log_type
            && self.epoch == header.epoch
            && self.start == header.start
            && self.end == header.end
    }
}

/// A piece offered for fetching over a data connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub piece: PieceRef,
    /// Bytes that will cross the data connection (compressed size for archives).
    pub size: u64,
    /// One-time token that binds a data connection to this piece.
    pub token: [u8; TOKEN_LEN],
}

/// What an agent says about itself on every control exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    pub name: String,
    /// Agent's clock, milliseconds since the Unix epoch (for skew).
    pub time_ms: i64,
    pub data_port: u16,
    /// Bytes not yet pulled (archives + unacknowledged current logs).
    pub backlog: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Alarm {
    /// Random id; re-sends carry the same id so the master stores it once.
    pub id: String,
    pub host: String,
    pub log_type: String,
    pub level: String,
    pub message: String,
    /// RFC 3339 with offset, when the agent raised it.
    pub time: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// master → agent control: are you alive?
    Ping,
    Pong(AgentInfo),
    /// master → agent control: what is pending?
    ListPending,
    Pending {
        info: AgentInfo,
        offers: Vec<Offer>,
        more: bool,
    },
    /// master → agent control: these pieces are stored and fsynced; release them.
    Ack(Vec<PieceRef>),
    AckOk,
    Bye,
    /// master → agent data: send the piece this token was issued for.
    Fetch {
        token: [u8; TOKEN_LEN],
    },
    Chunk(Vec<u8>),
    End {
        len: u64,
    },
    /// agent → master registration port. `control_ip` is where the agent
    /// listens, empty when it listens on every address (then the master
    /// uses the address the connection came from).
    Register {
        name: String,
        control_ip: String,
        control_port: u16,
        data_port: u16,
        time_ms: i64,
    },
    Heartbeat {
        name: String,
        control_ip: String,
        control_port: u16,
        time_ms: i64,
        backlog: u64,
    },
    Welcome {
        time_ms: i64,
    },
    /// agent → master alarm port.
    Alarm(Alarm),
    AlarmAck {
        id: String,
    },
    /// Either side: the request was refused; the connection closes after it.
    Error(String),
    /// agent → master registration port, answered by `Welcome`: the agent
    /// could not store `runs` runs (`bytes` bytes) of `log_type` output
    /// between the RFC 3339 times `first` and `last` (its disk was full),
    /// reported once it could write again; the master notes the gap.
    Lost {
        name: String,
        log_type: String,
        runs: u64,
        bytes: u64,
        first: String,
        last: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct DecodeError(pub String);

impl From<DecodeError> for std::io::Error {
    fn from(e: DecodeError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

mod tag {
    pub const PING: u8 = 1;
    pub const PONG: u8 = 2;
    pub const LIST_PENDING: u8 = 3;
    pub const PENDING: u8 = 4;
    pub const ACK: u8 = 5;
    pub const ACK_OK: u8 = 6;
    pub const BYE: u8 = 7;
    pub const FETCH: u8 = 8;
    pub const CHUNK: u8 = 9;
    pub const END: u8 = 10;
    pub const REGISTER: u8 = 11;
    pub const HEARTBEAT: u8 = 12;
    pub const WELCOME: u8 = 13;
    pub const ALARM: u8 = 14;
    pub const ALARM_ACK: u8 = 15;
    pub const ERROR: u8 = 16;
    pub const LOST: u8 = 32;
}

struct Encoder(Vec<u8>);

impl Encoder {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(&(v.len() as u32).to_be_bytes());
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn strs<const N: usize>(&mut self, fields: [&String; N]) {
        for field in fields {
            self.str(field);
        }
    }
    fn info(&mut self, i: &AgentInfo) {
        self.str(&i.name);
        self.i64(i.time_ms);
        self.u16(i.data_port);
        self.u64(i.backlog);
    }
    fn piece(&mut self, p: &PieceRef) {
        self.str(&p.log_type);
        self.u8(p.kind as u8);
        self.u64(p.epoch);
        self.u64(p.start);
        self.u64(p.end);
    }
}

struct Decoder<'a>(&'a [u8]);

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError(format!(
                "truncated: wanted {n} bytes, have {}",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("took 2"),
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("took 8"),
        ))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("took 8"),
        ))
    }
    fn bytes(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().expect("took 4")) as usize;
        if len > max {
            return Err(DecodeError(format!("field of {len} bytes exceeds {max}")));
        }
        self.take(len)
    }
    fn str(&mut self, max: usize) -> Result<String, DecodeError> {
        let raw = self.bytes(max)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError("text is not UTF-8".into()))
    }
    fn token(&mut self) -> Result<[u8; TOKEN_LEN], DecodeError> {
        Ok(self.take(TOKEN_LEN)?.try_into().expect("took TOKEN_LEN"))
    }
    fn info(&mut self) -> Result<AgentInfo, DecodeError> {
        Ok(AgentInfo {
            name: self.str(MAX_NAME)?,
            time_ms: self.i64()?,
            data_port: self.u16()?,
            backlog: self.u64()?,
        })
    }
    fn piece(&mut self) -> Result<PieceRef, DecodeError> {
        let log_type = self.str(MAX_NAME)?;
        let kind = match self.u8()? {
            1 => PieceKind::Archive,
            2 => PieceKind::Current,
            k => return Err(DecodeError(format!("unknown piece kind {k}"))),
        };
        let (epoch, start, end) = (self.u64()?, self.u64()?, self.u64()?);
        if start > end {
            return Err(DecodeError(format!(
                "piece range {start}..{end} is backwards"
            )));
        }
        Ok(PieceRef {
            log_type,
            kind,
            epoch,
            start,
            end,
        })
    }
    /// A control, data or error message after its tag `t`.
    fn exchange_body(&mut self, t: u8) -> Result<Message, DecodeError> {
        Ok(match t {
            tag::PING => Message::Ping,
            tag::PONG => Message::Pong(self.info()?),
            tag::LIST_PENDING => Message::ListPending,
            tag::PENDING => {
                let info = self.info()?;
                let more = self.u8()? != 0;
                let n = self.count(MAX_OFFERS)?;
                let mut offers = Vec::with_capacity(n);
                for _ in 0..n {
                    let piece = self.piece()?;
                    let size = self.u64()?;
                    let token = self.token()?;
                    offers.push(Offer { piece, size, token });
                }
                Message::Pending { info, offers, more }
            }
            tag::ACK => {
                let n = self.count(MAX_OFFERS)?;
                let mut pieces = Vec::with_capacity(n);
                for _ in 0..n {
                    pieces.push(self.piece()?);
                }
                Message::Ack(pieces)
            }
            tag::ACK_OK => Message::AckOk,
            tag::BYE => Message::Bye,
            tag::FETCH => Message::Fetch {
                token: self.token()?,
            },
            tag::CHUNK => Message::Chunk(self.bytes(MAX_CHUNK)?.to_vec()),
            tag::END => Message::End { len: self.u64()? },
            tag::ERROR => Message::Error(self.str(MAX_TEXT)?),
            t => return Err(DecodeError(format!("unknown message tag {t}"))),
        })
    }

    /// A message to the master's registration or alarm port, or the
    /// master's answer, after its tag `t`.
    fn uplink_body(&mut self, t: u8) -> Result<Message, DecodeError> {
        Ok(match t {
            tag::REGISTER => Message::Register {
                name: self.str(MAX_NAME)?,
                control_ip: self.str(MAX_NAME)?,
                control_port: self.u16()?,
                data_port: self.u16()?,
                time_ms: self.i64()?,
            },
            tag::HEARTBEAT => Message::Heartbeat {
                name: self.str(MAX_NAME)?,
                control_ip: self.str(MAX_NAME)?,
                control_port: self.u16()?,
                time_ms: self.i64()?,
                backlog: self.u64()?,
            },
            tag::WELCOME => Message::Welcome {
                time_ms: self.i64()?,
            },
            tag::ALARM => Message::Alarm(Alarm {
                id: self.str(MAX_NAME)?,
                host: self.str(MAX_NAME)?,
                log_type: self.str(MAX_NAME)?,
                level: self.str(MAX_NAME)?,
                message: self.str(MAX_TEXT)?,
                time: self.str(MAX_NAME)?,
            }),
            tag::ALARM_ACK => Message::AlarmAck {
                id: self.str(MAX_NAME)?,
            },
            tag::LOST => Message::Lost {
                name: self.str(MAX_NAME)?,
                log_type: self.str(MAX_NAME)?,
                runs: self.u64()?,
                bytes: self.u64()?,
                first: self.str(MAX_NAME)?,
                last: self.str(MAX_NAME)?,
            },
            t => return Err(DecodeError(format!("unknown message tag {t}"))),
        })
    }
    fn count(&mut self, max: usize) -> Result<usize, DecodeError> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(DecodeError(format!("count {n} exceeds {max}")));
        }
        Ok(n)
    }
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder(Vec::with_capacity(64));
        e.u8(self.tag());
        // Every variant named, so a new one must choose its side.
        match self {
            Message::Register { .. }
            | Message::Heartbeat { .. }
            | Message::Welcome { .. }
            | Message::Alarm(_)
            | Message::AlarmAck { .. }
            | Message::Lost { .. } => self.encode_uplink_body(&mut e),
            Message::Ping
            | Message::Pong(_)
            | Message::ListPending
            | Message::Pending { .. }
            | Message::Ack(_)
            | Message::AckOk
            | Message::Bye
            | Message::Fetch { .. }
            | Message::Chunk(_)
            | Message::End { .. }
            | Message::Error(_) => self.encode_exchange_body(&mut e),
        }
        e.0
    }

    fn tag(&self) -> u8 {
        match self {
            Message::Ping => tag::PING,
            Message::Pong(_) => tag::PONG,
            Message::ListPending => tag::LIST_PENDING,
            Message::Pending { .. } => tag::PENDING,
            Message::Ack(_) => tag::ACK,
            Message::AckOk => tag::ACK_OK,
            Message::Bye => tag::BYE,
            Message::Fetch { .. } => tag::FETCH,
            Message::Chunk(_) => tag::CHUNK,
            Message::End { .. } => tag::END,
            Message::Register { .. } => tag::REGISTER,
            Message::Heartbeat { .. } => tag::HEARTBEAT,
            Message::Welcome { .. } => tag::WELCOME,
            Message::Alarm(_) => tag::ALARM,
            Message::AlarmAck { .. } => tag::ALARM_ACK,
            Message::Error(_) => tag::ERROR,
            Message::Lost { .. } => tag::LOST,
        }
    }

    /// The fields after the tag of a control, data or error message.
    fn encode_exchange_body(&self, e: &mut Encoder) {
        match self {
            Message::Pong(info) => e.info(info),
            Message::Pending { info, offers, more } => {
                e.info(info);
                e.u8(*more as u8);
                e.u16(offers.len() as u16);
                for o in offers {
                    e.piece(&o.piece);
                    e.u64(o.size);
                    e.0.extend_from_slice(&o.token);
                }
            }
            Message::Ack(pieces) => {
                e.u16(pieces.len() as u16);
                for p in pieces {
                    e.piece(p);
                }
            }
            Message::Fetch { token } => e.0.extend_from_slice(token),
            Message::Chunk(data) => e.bytes(data),
            Message::End { len } => e.u64(*len),
            Message::Error(text) => e.str(text),
            // No fields (`Ping`, `ListPending`, `AckOk`, `Bye`), or not
            // an exchange message.
            _ => {}
        }
    }

    /// The fields after the tag of a message to the master's registration
    /// and alarm ports, or of the master's answer.
    fn encode_uplink_body(&self, e: &mut Encoder) {
        match self {
            Message::Register {
                name,
                control_ip,
                control_port,
                data_port,
                time_ms,
            } => {
                e.strs([name, control_ip]);
                e.u16(*control_port);
                e.u16(*data_port);
                e.i64(*time_ms);
            }
            Message::Heartbeat {
                name,
                control_ip,
                control_port,
                time_ms,
                backlog,
            } => {
                e.strs([name, control_ip]);
                e.u16(*control_port);
                e.i64(*time_ms);
                e.u64(*backlog);
            }
            Message::Welcome { time_ms } => e.i64(*time_ms),
            Message::Alarm(a) => {
                e.strs([&a.id, &a.host, &a.log_type, &a.level, &a.message, &a.time])
            }
            Message::AlarmAck { id } => e.str(id),
            Message::Lost {
                name,
                log_type,
                runs,
                bytes,
                first,
                last,
            } => {
                e.strs([name, log_type]);
                e.u64(*runs);
                e.u64(*bytes);
                e.strs([first, last]);
            }
            _ => {}
        }
    }

    /// The encoding of `Chunk(data)` up to `data`, for zero-copy sends.
    pub fn chunk_header(len: usize) -> [u8; 5] {
        let mut h = [tag::CHUNK, 0, 0, 0, 0];
        h[1..].copy_from_slice(&(len as u32).to_be_bytes());
        h
    }

    /// The data of an encoded `Chunk`, in place, checked exactly as
    /// `decode` checks it; `None` if `bytes` encode another message.
    pub fn chunk_data(bytes: &[u8]) -> Option<Result<&[u8], DecodeError>> {
        let mut d = Decoder(bytes);
        if d.u8().ok()? != tag::CHUNK {
            return None;
        }
        Some(d.bytes(MAX_CHUNK).and_then(|data| {
            if d.0.is_empty() {
                Ok(data)
            } else {
                Err(DecodeError(format!("{} trailing bytes", d.0.len())))
            }
        }))
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let mut d = Decoder(bytes);
        let msg = match d.u8()? {
            t @ (tag::REGISTER..=tag::ALARM_ACK | tag::LOST) => d.uplink_body(t)?,
            t => d.exchange_body(t)?,
        };
        if !d.0.is_empty() {
            return Err(DecodeError(format!("{} trailing bytes", d.0.len())));
        }
        Ok(msg)
    }

    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Ping => "Ping",
            Message::Pong(_) => "Pong",
            Message::ListPending => "ListPending",
            Message::Pending { .. } => "Pending",
            Message::Ack(_) => "Ack",
            Message::AckOk => "AckOk",
            Message::Bye => "Bye",
            Message::Fetch { .. } => "Fetch",
            Message::Chunk(_) => "Chunk",
            Message::End { .. } => "End",
            Message::Register { .. } => "Register",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::Welcome { .. } => "Welcome",
            Message::Alarm(_) => "Alarm",
            Message::AlarmAck { .. } => "AlarmAck",
            Message::Error(_) => "Error",
            Message::Lost { .. } => "Lost",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        let info = AgentInfo {
            name: "pi1".into(),
            time_ms: -5,
            data_port: 8001,
            backlog: 42,
        };
        let piece = PieceRef {
            log_type: "cpu".into(),
            kind: PieceKind::Archive,
            epoch: 7,
            start: 10,
            end: 20,
        };
        vec![
            Message::Ping,
            Message::Pong(info.clone()),
            Message::ListPending,
            Message::Pending {
                info,
                offers: vec![Offer {
                    piece: piece.clone(),
                    size: 99,
                    token: [3; 16],
                }],
                more: true,
            },
            Message::Ack(vec![piece]),
            Message::AckOk,
            Message::Bye,
            Message::Fetch { token: [1; 16] },
            Message::Chunk(vec![0, 1, 2]),
            Message::End { len: 3 },
            Message::Register {
                name: "pi".into(),
                control_ip: "127.0.0.2".into(),
                control_port: 8000,
                data_port: 8001,
                time_ms: 1,
            },
            Message::Heartbeat {
                name: "pi".into(),
                control_ip: String::new(),
                control_port: 8000,
                time_ms: 2,
                backlog: 3,
            },
            Message::Welcome { time_ms: 4 },
            Message::Alarm(Alarm {
                id: "ab".into(),
                host: "pi".into(),
                log_type: "mem".into(),
                level: "warning".into(),
                message: "high".into(),
                time: "2026-11-21T10:00:00+00:00".into(),
            }),
            Message::AlarmAck { id: "ab".into() },
            Message::Error("no".into()),
            Message::Lost {
                name: "pi".into(),
                log_type: "cpu".into(),
                runs: 50,
                bytes: 1250,
                first: "2026-12-03T20:14:10+00:00".into(),
                last: "2026-12-03T20:15:08+00:00".into(),
            },
        ]
    }

    #[test]
    fn chunk_data_agrees_with_decode() {
        let mut m = Message::Chunk(vec![9; 5]).encode();
        assert_eq!(Message::chunk_data(&m).unwrap().unwrap(), &[9; 5]);
        assert!(Message::chunk_data(&Message::End { len: 5 }.encode()).is_none());
        assert!(Message::chunk_data(&[]).is_none());
        m.push(0);
        assert!(Message::chunk_data(&m).unwrap().is_err());
        assert!(Message::decode(&m).is_err());
        assert!(Message::chunk_data(&m[..m.len() - 3]).unwrap().is_err());
        assert!(Message::decode(&m[..m.len() - 3]).is_err());
    }

    fn ack_of(n: usize, start: u64, end: u64) -> Message {
        let piece = PieceRef {
            log_type: "cpu".into(),
            kind: PieceKind::Current,
            epoch: 9,
            start,
            end,
        };
        Message::Ack(vec![piece; n])
    }

    #[test]
    fn counts_and_ranges_are_refused_just_past_their_limits() {
        // An empty range is a range; a backwards one is not.
        let empty = ack_of(1, 5, 5);
        assert_eq!(Message::decode(&empty.encode()).unwrap(), empty);
        assert!(Message::decode(&ack_of(1, 6, 5).encode()).is_err());
        // Exactly MAX_OFFERS pieces in one acknowledgement, not one more.
        let full = ack_of(MAX_OFFERS, 0, 1);
        assert_eq!(Message::decode(&full.encode()).unwrap(), full);
        assert!(Message::decode(&ack_of(MAX_OFFERS + 1, 0, 1).encode()).is_err());
        assert_eq!(
            Message::decode(&ack_of(0, 0, 1).encode()).unwrap(),
            ack_of(0, 0, 1)
        );
    }

    #[test]
    fn kinds_name_their_message() {
        assert_eq!(Message::Ping.kind(), "Ping");
        assert_eq!(Message::Chunk(vec![1]).kind(), "Chunk");
        assert_eq!(ack_of(1, 0, 1).kind(), "Ack");
    }

    #[test]
    fn the_largest_chunk_fills_one_noise_frame() {
        let framed = MAX_CHUNK + Message::chunk_header(0).len();
        let frame = crate::protocol::conn::MAX_FRAGMENT;
        assert!(framed <= frame, "{framed} > {frame}");
        assert!(
            framed + 64 > frame,
            "{framed}: a chunk should fill its frame"
        );
    }

    #[test]
    fn chunk_header_matches_encoding() {
        let m = Message::Chunk(vec![9; 5]);
        assert_eq!(&m.encode()[..5], &Message::chunk_header(5));
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m, "{}", m.kind());
        }
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        for m in samples() {
            let bytes = m.encode();
            for cut in 0..bytes.len() {
                assert!(
                    Message::decode(&bytes[..cut]).is_err(),
                    "{} cut at {cut}",
                    m.kind()
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Message::decode(&longer).is_err());
        }
    }

    #[test]
    fn hostile_fields_are_refused() {
        // A string length far beyond the limit.
        let mut bytes = vec![tag::ERROR];
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Message::decode(&bytes).is_err());
        // Too many offers.
        let mut bytes = Message::Pending {
            info: AgentInfo {
                name: "a".into(),
                time_ms: 0,
                data_port: 1,
                backlog: 0,
            },
            offers: vec![],
            more: false,
        }
        .encode();
        let n = bytes.len();
        bytes[n - 2..].copy_from_slice(&(MAX_OFFERS as u16 + 1).to_be_bytes());
        assert!(Message::decode(&bytes).is_err());
        // A backwards range.
        let mut ack = vec![tag::ACK, 0, 1];
        let mut e = Encoder(Vec::new());
        e.piece(&PieceRef {
            log_type: "x".into(),
            kind: PieceKind::Current,
            epoch: 0,
            start: 5,
            end: 1,
        });
        ack.extend_from_slice(&e.0);
        assert!(Message::decode(&ack).is_err());
        assert!(Message::decode(&[200]).is_err());
        assert!(Message::decode(&[]).is_err());
    }
}
