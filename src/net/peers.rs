//! Who is knocking: per-address bookkeeping shared by every port of one
//! daemon.
//!
//! Two facts per address: whether it proved the key lately (then it is
//! exempt from the caps: a master opening a control, a data and a probe
//! connection at once is not an attacker), and how many of its connections
//! are still in their handshake. Both are counted across all of a daemon's
//! ports, so an address cannot hold the cap on each port at once (eight on
//! the registration port plus eight on the alarm port was more than the
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

/// The unit the caps count by: an IPv4 address (`::ffff:a.b.c.d` on a
/// dual-stack listener is a.b.c.d), or an IPv6 /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
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
}

/// One per daemon; clones share it (every accept loop of the daemon gets
/// a clone).
#[derive(Clone, Default, Debug)]
pub struct PeerBook(Arc<Mutex<Peers>>);

impl PeerBook {
    fn lock(&self) -> MutexGuard<'_, Peers> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
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
        let trusted = &mut peers.trusted;
        if trusted.len() >= MAX_TRUSTED && !trusted.contains_key(&key) {
            let oldest = trusted.iter().min_by_key(|(_, t)| **t).map(|(ip, _)| *ip);
            if let Some(ip) = oldest {
                trusted.remove(&ip);
            }
        }
        trusted.insert(key, Instant::now());
    }

    /// A handshake slot for `ip`, or `None` if its address already holds
    /// `limit` unfinished handshakes on any of the daemon's ports and has not
    /// proved the key lately.
    pub(super) fn claim(&self, ip: IpAddr, limit: usize) -> Option<AddressSlot> {
        let key = address_key(ip);
        let trusted = self.trusts(ip);
        let mut peers = self.lock();
        let n = peers.open.entry(key).or_default();
        if *n >= limit && !trusted {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            book: self.clone(),
            key,
            trusted,
            lane: None,
        })
    }

    /// Unfinished handshakes of `ip`'s address, on all ports (for tests).
    pub fn open_handshakes(&self, ip: IpAddr) -> usize {
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
    pub(super) lane: Option<LaneTicket>,
}

impl AddressSlot {
    /// The peer proved the key: trust its address for a while; dropping the
    /// slot then frees its quota and lets the next untrusted connection
    /// have the lane's place.
    pub(super) fn proved(self) {
        self.book.trust(self.key);
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut peers = self.book.lock();
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
        let first = book.claim(a, 2).unwrap();
        let _second = book.claim(b, 2).unwrap();
        assert!(book.claim(a, 2).is_none());
        assert!(book.claim(b, 2).is_none());
        assert_eq!(book.open_handshakes(a), 2);
        drop(first);
        assert!(book.claim(b, 2).is_some());
    }

    #[test]
    fn an_address_that_proved_the_key_is_exempt() {
        let book = PeerBook::default();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let slot = book.claim(ip, 1).unwrap();
        assert!(book.claim(ip, 1).is_none());
        slot.proved();
        let held: Vec<_> = (0..5).map(|_| book.claim(ip, 1).unwrap()).collect();
        assert!(held.iter().all(|s| s.trusted));
    }
}
