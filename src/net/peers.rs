//! Who is knocking: per-address bookkeeping shared by every port of one
//! daemon.
//!
//! Three facts per address: whether it proved the key lately (then it is
//! exempt from the caps: a master opening a control, a data and a probe
//! connection at once is not an attacker), how many of its connections
//! are still in their handshake, and whether one of its connections lately
//! ended without proving the key. An address with more than one connection
//! in its handshake, or a recent failure, is a suspect: the untrusted lane
//! lets clean addresses go first (see `super::lane`). Both are counted
//! across all of a daemon's ports, so an address cannot hold the cap on
//! each port at once (the caps of two ports together could outnumber the
//! master's pool). IPv6 addresses count by their /64: one host is given a
//! whole /64 and can pick a new address in it for every connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::LaneTicket;

/// How long an address that proved the key stays exempt from the caps.
const TRUSTED_FOR: Duration = Duration::from_secs(600);
/// Bound on remembered trusted addresses (oldest forgotten first).
const MAX_TRUSTED: usize = 4096;
/// How long an address whose connection ended without proving the key
/// stays a suspect.
const SUSPECT_FOR: Duration = Duration::from_secs(600);
/// Bound on remembered suspects (oldest forgotten first).
const MAX_SUSPECTS: usize = 16384;

/// The unit the caps count by: an IPv4 address (`::ffff:a.b.c.d` on a
/// dual-stack listener is a.b.c.d), or an IPv6 /64.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[derive(Default, Debug)]
struct Peers {
    /// Address key → when it last proved the key.
    trusted: HashMap<IpAddr, Instant>,
    /// Address key → its connections not yet past their handshake.
    open: HashMap<IpAddr, usize>,
    /// Address key → when a connection of it last ended without proving
    /// the key (on a port that asks for it).
    failed: HashMap<IpAddr, Instant>,
}

impl Peers {
    fn suspects(&self, key: IpAddr) -> bool {
        self.open.get(&key).is_some_and(|n| *n > 1)
            || self
                .failed
                .get(&key)
                .is_some_and(|t| t.elapsed() < SUSPECT_FOR)
    }
}

/// Remember `key` at `now` in a bounded map, forgetting the oldest entry
/// when full.
fn remember(map: &mut HashMap<IpAddr, Instant>, key: IpAddr, max: usize) {
    if map.len() >= max && !map.contains_key(&key) {
        let oldest = map.iter().min_by_key(|(_, t)| **t).map(|(ip, _)| *ip);
        if let Some(ip) = oldest {
            map.remove(&ip);
        }
    }
    map.insert(key, Instant::now());
}

/// One per daemon; clones share it (every accept loop of the daemon gets
/// a clone).
#[derive(Clone, Default, Debug)]
pub(crate) struct PeerBook(Arc<Mutex<Peers>>);

impl PeerBook {
    fn lock(&self) -> MutexGuard<'_, Peers> {
        crate::sync::lock(&self.0)
    }

    /// Whether `ip` proved the key within `TRUSTED_FOR`.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let key = address_key(ip);
        self.lock()
            .trusted
            .get(&key)
            .is_some_and(|t| t.elapsed() < TRUSTED_FOR)
    }

    fn trust(&self, key: IpAddr) {
        let mut peers = self.lock();
        peers.failed.remove(&key);
        remember(&mut peers.trusted, key, MAX_TRUSTED);
    }

    /// Whether `ip`'s address is a suspect: it has more than one connection
    /// still in its handshake (a real peer that has not proved the key yet
    /// opens one at a time: a registration, a master's first control
    /// connection), or one of its connections lately ended without proving
    /// the key.
    pub(crate) fn suspects(&self, ip: IpAddr) -> bool {
        self.lock().suspects(address_key(ip))
    }

    /// A handshake slot for `ip`, or `None` if its address already holds
    /// `limit` unfinished handshakes on any of the daemon's ports and has not
    /// proved the key lately. `keyed`: the port asks for the key, so a
    /// connection that ends without proving it makes its address a suspect
    /// (the status page asks for no key).
    pub(super) fn claim(&self, ip: IpAddr, limit: usize, keyed: bool) -> Option<AddressSlot> {
        let key = address_key(ip);
        let trusted = self.trusts(ip);
        let mut peers = self.lock();
        let n = peers.open.entry(key).or_default();
        if *n >= limit && !trusted {
            return None;
        }
        *n += 1;
        let suspect = !trusted && peers.suspects(key);
        Some(AddressSlot {
            book: self.clone(),
            key,
            trusted,
            suspect,
            keyed,
            proved: false,
            lane: None,
        })
    }

    /// Unfinished handshakes of `ip`'s address, on all ports.
    #[cfg(test)]
    pub(crate) fn open_handshakes(&self, ip: IpAddr) -> usize {
        self.lock().open.get(&address_key(ip)).copied().unwrap_or(0)
    }
}

/// One unauthenticated connection's claim on its address's quota (and, for
/// an untrusted address, on the untrusted lane); given back when the peer
/// proves the key or the connection ends.
pub(super) struct AddressSlot {
    book: PeerBook,
    key: IpAddr,
    /// The address had proved the key within `TRUSTED_FOR` at accept.
    pub(super) trusted: bool,
    /// The address was a suspect at accept.
    pub(super) suspect: bool,
    keyed: bool,
    proved: bool,
    pub(super) lane: Option<LaneTicket>,
}

impl AddressSlot {
    pub(super) fn book(&self) -> PeerBook {
        self.book.clone()
    }

    /// The peer proved the key: trust its address for a while; dropping the
    /// slot then frees its quota and lets the next untrusted connection
    /// have the lane's place.
    pub(super) fn proved(mut self) {
        self.proved = true;
        self.book.trust(self.key);
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut peers = self.book.lock();
        if self.keyed && !self.trusted && !self.proved {
            remember(&mut peers.failed, self.key, MAX_SUSPECTS);
        }
        if let Some(n) = peers.open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                peers.open.remove(&self.key);
            }
        }
        // `lane` is dropped after this: its place goes to the next waiting.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(address_key(mapped), "10.0.0.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_cap_counts_one_address_across_ports_and_a_64_as_one() {
        let book = PeerBook::default();
        let (a, b): (IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        // Two loops (ports) share the book: the third claim fails wherever
        // it comes from, and from another address of the same /64.
        let first = book.claim(a, 2, true).unwrap();
        let _second = book.claim(b, 2, true).unwrap();
        assert!(book.claim(a, 2, true).is_none());
        assert!(book.claim(b, 2, true).is_none());
        assert_eq!(book.open_handshakes(a), 2);
        drop(first);
        assert!(book.claim(b, 2, true).is_some());
    }

    #[test]
    fn an_address_that_proved_the_key_is_exempt() {
        let book = PeerBook::default();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let slot = book.claim(ip, 1, true).unwrap();
        assert!(book.claim(ip, 1, true).is_none());
        slot.proved();
        let held: Vec<_> = (0..5).map(|_| book.claim(ip, 1, true).unwrap()).collect();
        assert!(held.iter().all(|s| s.trusted && !s.suspect));
    }

    #[test]
    fn an_address_whose_connection_ended_without_the_key_is_a_suspect_until_it_proves_it() {
        let book = PeerBook::default();
        let (ip, web): (IpAddr, IpAddr) =
            ("127.0.0.9".parse().unwrap(), "127.0.0.10".parse().unwrap());
        let first = book.claim(ip, 4, true).unwrap();
        assert!(!first.suspect);
        // A second connection while the first is in its handshake.
        let second = book.claim(ip, 4, true).unwrap();
        assert!(second.suspect && book.suspects(ip));
        drop(second);
        // Ended without proving the key: a suspect from now on.
        drop(first);
        assert!(book.suspects(ip));
        let again = book.claim(ip, 4, true).unwrap();
        assert!(again.suspect);
        again.proved();
        assert!(!book.suspects(ip));
        // A port without a key (the status page) makes nobody a suspect.
        drop(book.claim(web, 4, false).unwrap());
        assert!(!book.suspects(web));
    }
}
