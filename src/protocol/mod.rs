//! The wire protocol (docs/PROTOCOL.md), in layers: `frame`
//! (length-prefixed bytes), `auth` (keys, host identities, the Noise
//! handshake), `message` (what the frames mean) and `conn` (a stream that
//! speaks all three, every frame encrypted).
pub mod auth;
pub mod conn;
pub mod frame;
pub mod key_memory;
pub mod message;

pub use auth::{Credentials, Key, KeyFile, Purpose};
pub use conn::Connection;
pub(crate) use conn::{is_wrong_key, Received};
pub use key_memory::{KeyMemory, RefusalLog};
pub use message::{AgentInfo, Alarm, Message, Offer, PieceKind, PieceRef};
pub mod vectors;
