//! Quiet key change-overs (issue 16): during a change-over a daemon holds
//! several keys and its peers move one by one. Without memory, every probe,
//! pull and heartbeat would first try the key the peer no longer (or not
//! yet) holds, and the peer would log `authentication failed: wrong key`
//! each time.
//!
//! - `KeyMemory`: the dialling side remembers which key each peer address
//!   answered to and tries it first, so a working peer sees no refusal.
//! - `RefusalLog`: the refusing side logs a wrong-key peer once, when it
//!   starts being refused, and again only after it has proved a key (a
//!   change), not on every attempt.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[cfg(test)]
use super::auth::Credentials;
use super::auth::{Key, Purpose};
use super::conn::{is_wrong_key, Connection};
use crate::net::TimedStream;

/// Most peer addresses either memory holds: far above a fleet one master
/// serves; past it, a flood from many addresses cannot grow memory (a
/// forgotten peer costs at most one more refused attempt or log line).
const MAX_PEERS: usize = 65_536;

/// Which of our keys each peer (by IP address: the control and data ports
/// of one agent share its key) accepted last.
#[derive(Debug, Default)]
pub struct KeyMemory {
    accepted: Mutex<HashMap<IpAddr, usize>>,
    /// The host name each agent known only by address gave (see
    /// `Connection::ask_name`), so it is asked once, not on every dial.
    names: Mutex<HashMap<SocketAddr, String>>,
}

impl KeyMemory {
    /// The host name of the agent at `addr`: remembered, or asked.
    pub fn name_of(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> io::Result<String> {
        if let Some(name) = crate::sync::lock(&self.names).get(&addr) {
            return Ok(name.clone());
        }
        let name = Connection::ask_name(addr, connect_timeout, io_timeout)?;
        let mut names = crate::sync::lock(&self.names);
        if names.len() >= MAX_PEERS {
            names.clear();
        }
        names.insert(addr, name.clone());
        Ok(name)
    }

    /// Forget the name `addr` gave (its key did not open: another agent
    /// may answer there now).
    pub fn forget_name(&self, addr: SocketAddr) {
        let mut names = crate::sync::lock(&self.names);
        names.remove(&addr);
    }

    /// The index of the key `ip` accepted last; 0 (the primary key) when
    /// unknown.
    pub fn preferred(&self, ip: IpAddr) -> usize {
        let map = crate::sync::lock(&self.accepted);
        map.get(&ip).copied().unwrap_or(0)
    }

    fn remember(&self, ip: IpAddr, index: usize) {
        let mut map = crate::sync::lock(&self.accepted);
        if map.len() >= MAX_PEERS && !map.contains_key(&ip) {
            map.clear();
        }
        map.insert(ip, index);
    }

    /// `Connection::dial`, starting with the key `addr` accepted last and
    /// remembering the one it accepts now.
    pub fn dial(
        &self,
        addr: SocketAddr,
        keys: &[Key],
        purpose: Purpose,
        host: &str,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> io::Result<Connection<TimedStream>> {
        let first = self.preferred(addr.ip());
        let (conn, used) = Connection::dial_from(
            addr,
            keys,
            first,
            purpose,
            host,
            connect_timeout,
            io_timeout,
        )?;
        if used != first {
            log::info!("{addr} now answers to key {} of {}", used + 1, keys.len());
            self.remember(addr.ip(), used);
        }
        Ok(conn)
    }
}

/// A wrong-key peer is warned about at most this often. With `KeyMemory`
/// the daemons meet each change once, so this bounds the cases memory
/// cannot help: a peer holding no valid key at all (warned about once an
/// hour while it keeps trying), and `pihealth pull` from cron (a new
/// process each run, so its first try after a change-over is the primary
/// key every time).
pub const REWARN_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Refused {
    /// Refusals since the peer last proved a key.
    count: u64,
    last_warned: Instant,
}

/// Which peers are being refused for a wrong key, so that each is logged
/// once per change (and at most once per `REWARN_EVERY`) rather than on
/// every attempt.
#[derive(Debug, Default)]
pub struct RefusalLog {
    refused: Mutex<HashMap<IpAddr, Refused>>,
    /// Peers warned about lately that have proved a key since: a new
    /// refusal soon after is the same change-over, not a new one.
    recently_warned: Mutex<HashMap<IpAddr, Instant>>,
}

impl RefusalLog {
    /// Log the refusal of a handshake from `peer` with error `e`: a wrong
    /// key at `warn` the first time, then at `debug`; any other handshake
    /// failure at `warn` as before. `what` names the port, e.g. "pi1:
    /// control connection" (formatted only when a line is logged: this is
    /// on every connection's path). Returns whether it warned.
    pub fn refused(&self, what: fmt::Arguments, peer: SocketAddr, e: &io::Error) -> bool {
        if e.get_ref()
            .is_some_and(|inner| inner.is::<super::conn::NameGiven>())
        {
            log::debug!("{what} from {peer}: {e}");
            return false;
        }
        if !is_wrong_key(e) {
            log::warn!("{what} from {peer} refused: {e}");
            return true;
        }
        let ip = peer.ip();
        let mut map = crate::sync::lock(&self.refused);
        if !map.contains_key(&ip) && map.len() >= MAX_PEERS {
            // A flood from many addresses: bounded memory, quiet log.
            log::debug!("{what} from {peer} refused: {e}");
            return false;
        }
        let warned_lately = {
            let recent = crate::sync::lock(&self.recently_warned);
            recent.get(&ip).is_some_and(|t| t.elapsed() < REWARN_EVERY)
        };
        let now = Instant::now();
        let entry = map.entry(ip).or_insert(Refused {
            count: 0,
            last_warned: now,
        });
        entry.count += 1;
        let warn = if entry.count == 1 {
            !warned_lately
        } else {
            entry.last_warned.elapsed() >= REWARN_EVERY
        };
        if warn {
            entry.last_warned = now;
            let mut recent = crate::sync::lock(&self.recently_warned);
            if recent.len() >= MAX_PEERS {
                recent.clear();
            }
            recent.insert(ip, now);
            log::warn!(
                "{what} from {peer} refused: {e} (logged once, not on every attempt, until {ip} proves a key)"
            );
        } else {
            log::debug!("{what} from {peer} refused ({} times): {e}", entry.count);
        }
        warn
    }

    /// `peer` proved a key: a later refusal is a change.
    pub fn accepted(&self, what: fmt::Arguments, peer: SocketAddr) {
        let mut map = crate::sync::lock(&self.refused);
        if map.is_empty() {
            return;
        }
        if let Some(r) = map.remove(&peer.ip()) {
            // One refusal then success is a client trying its keys in
            // turn; several are a peer that was fixed.
            if r.count > 1 {
                log::info!(
                    "{what} from {peer}: proves a key again, after {} refusals",
                    r.count
                );
            } else {
                log::debug!("{what} from {peer}: proves a key after one refusal");
            }
        }
    }

    /// Whether `ip` is being refused now (for tests).
    pub fn is_refused(&self, ip: IpAddr) -> bool {
        let map = crate::sync::lock(&self.refused);
        map.contains_key(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A server holding only `keys`, answering a Ping per connection;
    /// counts the handshakes it refused.
    fn server(keys: Vec<Key>) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let refused = Arc::new(AtomicUsize::new(0));
        let count = refused.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let stream = TimedStream::new(stream, Duration::from_secs(5), None);
                let credentials = Credentials::Host {
                    name: "pi1".into(),
                    keys: keys.clone(),
                };
                match Connection::server(stream, &credentials, Purpose::Control) {
                    Ok(mut conn) => {
                        if let Ok(super::super::Message::Ping) = conn.recv() {
                            let _ = conn.send(&super::super::Message::Bye);
                        }
                    }
                    Err(_) => {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
        (addr, refused)
    }

    fn dial(memory: &KeyMemory, addr: SocketAddr, keys: &[Key]) -> io::Result<()> {
        let mut conn = memory.dial(
            addr,
            keys,
            Purpose::Control,
            "pi1",
            Duration::from_secs(2),
            Duration::from_secs(2),
        )?;
        conn.request(&super::super::Message::Ping, Duration::from_secs(2))
            .map(|_| ())
    }

    #[test]
    fn the_key_that_worked_is_tried_first() {
        let (new, old) = (Key::generate().unwrap(), Key::generate().unwrap());
        let (addr, refused) = server(vec![old.clone()]);
        let memory = KeyMemory::default();
        let ring = [new, old];
        for _ in 0..5 {
            dial(&memory, addr, &ring).expect("the old key works");
        }
        // One refused attempt for the whole change-over, not one per dial.
        assert_eq!(refused.load(Ordering::SeqCst), 1);
        assert_eq!(memory.preferred(addr.ip()), 1);
    }

    #[test]
    fn a_refused_client_is_told_wrong_key() {
        let (addr, _) = server(vec![Key::generate().unwrap()]);
        let err = dial(&KeyMemory::default(), addr, &[Key::generate().unwrap()])
            .expect_err("no key the server holds");
        assert!(is_wrong_key(&err), "{err}");
        let text = err.to_string();
        assert!(text.contains("wrong key"), "{text}");
        assert!(!text.contains("fill whole buffer"), "{text}");
    }

    #[test]
    fn a_wrong_key_peer_is_warned_about_once_per_change() {
        let log = RefusalLog::default();
        let peer: SocketAddr = "10.0.0.7:40000".parse().unwrap();
        let other: SocketAddr = "10.0.0.8:40000".parse().unwrap();
        let wrong = io::Error::new(
            io::ErrorKind::PermissionDenied,
            super::super::conn::ClientWrongKey { host: "pi1".into() },
        );
        let what = || format_args!("test connection");
        assert!(log.refused(what(), peer, &wrong));
        for _ in 0..100 {
            assert!(!log.refused(what(), peer, &wrong), "once, not per attempt");
        }
        assert!(log.is_refused(peer.ip()));
        // Another peer is its own change.
        assert!(log.refused(what(), other, &wrong));
        // Proving a key ends the episode; a new refusal within the hour is
        // the same change-over (a client trying its keys in turn).
        log.accepted(what(), peer);
        assert!(!log.is_refused(peer.ip()));
        assert!(!log.refused(what(), peer, &wrong));
        // Other failures are not wrong keys: logged as before.
        let garbage = io::Error::new(io::ErrorKind::InvalidData, "bad hello");
        assert!(log.refused(what(), peer, &garbage));
    }
}
