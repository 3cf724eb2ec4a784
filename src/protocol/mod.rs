//! The wire protocol, in layers: `frame` (length-prefixed bytes), `auth`
//! (key, handshake, per-frame MACs), `message` (what the frames mean) and
//! `conn` (a stream that speaks all three).
pub mod auth;
pub mod conn;
pub mod frame;
pub mod key_memory;
pub mod message;

pub use auth::{Key, Purpose};
pub use conn::{is_wrong_key, Connection, Received};
pub use key_memory::{KeyMemory, RefusalLog};
pub use message::{AgentInfo, Alarm, Message, Offer, PieceKind, PieceRef};
