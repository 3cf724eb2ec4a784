//! The untrusted lane: the way to the pool for connections from addresses
//! that have not proved the key lately.
//!
//! At most `max_in_pool` of them are queued or on a worker and not yet
//! past their handshake at once, so the rest of the pool stays free for
//! peers that proved the key, however many addresses an attacker has.
//! The others wait here (at most `max_waiting`; beyond that they are
//! closed). Clones share one lane, so it serves every accept loop that
//! feeds one pool.
//!
//! Who goes first: an attacker with fifty addresses keeps every place
//! taken by connections that trickle their handshake until its deadline,
//! and a first contact from a real peer (a new agent registering, a master
//! reaching an agent for the first time) would wait behind all of them. So
//! the lane tells **clean** addresses from **suspect** ones: an address
//! that holds more than one connection still in its handshake, or whose
//! earlier connection ended without proving the key (silent, too slow,
//! wrong key), is a suspect (`super::PeerBook`). Clean
//! connections wait ahead of suspect ones, and when every place is taken
//! a clean arrival takes the place of the oldest suspect: that connection
//! is shut down (its worker's blocked read ends at once) and the newcomer
//! runs. An attacker gets at most one clean connection at a time per
//! address, and none after its first failure; beyond that its connections
//! hold places only while no clean peer needs them.

use std::collections::VecDeque;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use threadpool::ThreadPool;

use super::PeerBook;

/// A connection's run on the pool; it holds its lane place (the ticket)
/// until it proves the key or ends.
pub(super) type Job = Box<dyn FnOnce(Option<LaneTicket>) + Send>;

/// Where a connection comes from, judged again whenever it matters: an
/// address that was clean when its connection arrived may have failed
/// since (its first trickler timed out), and its waiting or placed
/// connections then count as a suspect's.
pub(super) struct Origin {
    pub book: PeerBook,
    pub ip: IpAddr,
    /// A suspect already when the connection arrived.
    pub suspect: bool,
}

impl Origin {
    fn suspect(&self) -> bool {
        self.suspect || self.book.suspects(self.ip)
    }
}

/// A connection on its way through the lane.
pub(super) struct Entrant {
    pub job: Job,
    pub origin: Origin,
    /// Another handle to the connection's socket, to shut it down if a
    /// clean newcomer needs its place (`None`: it cannot be evicted).
    pub socket: Option<TcpStream>,
}

/// A place in the lane; given back on drop.
pub(super) struct LaneTicket {
    lane: UntrustedLane,
    id: u64,
}

impl Drop for LaneTicket {
    fn drop(&mut self) {
        self.lane.finished(self.id);
    }
}

#[derive(Clone)]
pub(crate) struct UntrustedLane(Arc<Lane>);

struct Lane {
    pool: ThreadPool,
    max_in_pool: usize,
    max_waiting: usize,
    state: Mutex<LaneState>,
}

struct Place {
    id: u64,
    since: Instant,
    origin: Origin,
    socket: Option<TcpStream>,
}

#[derive(Default)]
struct LaneState {
    next_id: u64,
    /// Connections queued or on a worker that hold a place.
    places: Vec<Place>,
    clean: VecDeque<Entrant>,
    suspects: VecDeque<Entrant>,
}

impl std::fmt::Debug for UntrustedLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UntrustedLane")
            .field("max_in_pool", &self.0.max_in_pool)
            .field("max_waiting", &self.0.max_waiting)
            .finish()
    }
}

impl UntrustedLane {
    pub fn new(pool: ThreadPool, max_in_pool: usize, max_waiting: usize) -> UntrustedLane {
        UntrustedLane(Arc::new(Lane {
            pool,
            max_in_pool: max_in_pool.max(1),
            max_waiting,
            state: Mutex::new(LaneState::default()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, LaneState> {
        crate::sync::lock(&self.0.state)
    }

    /// Run the entrant on the pool now or when the lane has room; `false`
    /// (and the entrant dropped, closing its connection) if the lane is
    /// full of its kind.
    pub(super) fn submit(&self, entrant: Entrant) -> bool {
        let mut state = self.lock();
        if state.places.len() < self.0.max_in_pool {
            let (job, ticket) = self.take_place(&mut state, entrant);
            drop(state);
            self.run(job, ticket);
            return true;
        }
        if entrant.origin.suspect() {
            if state.clean.len() + state.suspects.len() >= self.0.max_waiting {
                return false;
            }
            state.suspects.push_back(entrant);
            return true;
        }
        // A clean arrival: make room among the suspects, waiting or placed.
        state.demote_suspects();
        if state.clean.len() + state.suspects.len() >= self.0.max_waiting
            && state.suspects.pop_front().is_none()
        {
            return false;
        }
        let oldest_suspect = state
            .places
            .iter()
            .filter(|p| p.socket.is_some() && p.origin.suspect())
            .min_by_key(|p| p.since)
            .map(|p| p.id);
        if let Some(id) = oldest_suspect {
            if let Some(place) = state.places.iter_mut().find(|p| p.id == id) {
                // Its worker's read fails at once; its ticket then frees
                // the place, which goes to the first clean entrant.
                if let Some(socket) = place.socket.take() {
                    let _ = socket.shutdown(Shutdown::Both);
                }
            }
        }
        state.clean.push_back(entrant);
        true
    }

    fn take_place(&self, state: &mut LaneState, entrant: Entrant) -> (Job, LaneTicket) {
        state.next_id += 1;
        let id = state.next_id;
        state.places.push(Place {
            id,
            since: Instant::now(),
            origin: entrant.origin,
            socket: entrant.socket,
        });
        let ticket = LaneTicket {
            lane: self.clone(),
            id,
        };
        (entrant.job, ticket)
    }

    fn run(&self, job: Job, ticket: LaneTicket) {
        self.0.pool.execute(move || job(Some(ticket)));
    }

    /// A place was given back (its peer proved the key, or its connection
    /// ended): the next waiting connection takes it, clean ones first.
    fn finished(&self, id: u64) {
        let next = {
            let mut state = self.lock();
            state.places.retain(|p| p.id != id);
            state.demote_suspects();
            let next = match state.clean.pop_front() {
                Some(e) => Some(e),
                None => state.suspects.pop_front(),
            };
            next.map(|e| self.take_place(&mut state, e))
        };
        if let Some((job, ticket)) = next {
            self.run(job, ticket);
        }
    }

    /// Places held now (for tests).
    #[cfg(test)]
    pub(super) fn in_pool(&self) -> usize {
        self.lock().places.len()
    }
}

impl LaneState {
    /// Move waiting connections whose address has turned suspect since
    /// they arrived behind the clean ones (keeping both orders).
    fn demote_suspects(&mut self) {
        if self.clean.iter().all(|e| !e.origin.suspect()) {
            return;
        }
        let (suspects, clean): (VecDeque<Entrant>, VecDeque<Entrant>) =
            self.clean.drain(..).partition(|e| e.origin.suspect());
        self.clean = clean;
        self.suspects.extend(suspects);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::Duration;

    fn origin(suspect: bool) -> Origin {
        Origin {
            book: PeerBook::default(),
            ip: "127.0.0.9".parse().unwrap(),
            suspect,
        }
    }

    fn entrant(job: Job, suspect: bool) -> Entrant {
        Entrant {
            job,
            origin: origin(suspect),
            socket: None,
        }
    }

    /// Submit `n` clean jobs that say their number when they start, then
    /// wait for a release each. With `proves`, a job drops its ticket first
    /// (the peer proved the key: what `AddressSlot::proved` does); else it
    /// holds its place until its run ends.
    fn blocking_jobs(
        lane: &UntrustedLane,
        n: usize,
        proves: bool,
    ) -> (
        crossbeam::channel::Receiver<usize>,
        crossbeam::channel::Sender<()>,
    ) {
        let (started_tx, started) = crossbeam::channel::unbounded::<usize>();
        let (release_tx, release) = crossbeam::channel::unbounded::<()>();
        for i in 0..n {
            let (started_tx, release) = (started_tx.clone(), release.clone());
            assert!(lane.submit(entrant(
                Box::new(move |ticket| {
                    if proves {
                        drop(ticket);
                    }
                    started_tx.send(i).unwrap();
                    release.recv().unwrap(); // its session goes on
                }),
                false
            )));
        }
        (started, release_tx)
    }

    #[test]
    fn the_lane_holds_part_of_the_pool_and_queues_the_rest_in_order() {
        let pool = ThreadPool::new(4);
        let lane = UntrustedLane::new(pool.clone(), 2, 3);
        let (started, release_tx) = blocking_jobs(&lane, 5, false);
        // Full: 2 on workers, 3 waiting.
        assert!(!lane.submit(entrant(Box::new(|_| {}), false)));
        let first: Vec<usize> = (0..2)
            .map(|_| started.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert!(started.recv_timeout(Duration::from_millis(100)).is_err());
        // A trusted connection goes straight to a free worker meanwhile.
        let (done_tx, done) = crossbeam::channel::bounded(1);
        pool.execute(move || done_tx.send(()).unwrap());
        done.recv_timeout(Duration::from_secs(5)).unwrap();
        // Each finished job lets the next waiting one in, oldest first.
        let mut order = first;
        for _ in 0..3 {
            release_tx.send(()).unwrap();
            order.push(started.recv_timeout(Duration::from_secs(5)).unwrap());
        }
        for _ in 0..2 {
            release_tx.send(()).unwrap();
        }
        let (mut head, tail) = (order[..2].to_vec(), order[2..].to_vec());
        head.sort();
        assert_eq!((head, tail), (vec![0, 1], vec![2, 3, 4]));
        assert!(super::super::drain_pool(&pool, Duration::from_secs(5)));
        assert_eq!(lane.in_pool(), 0);
    }

    #[test]
    fn a_peer_that_proves_the_key_gives_its_lane_place_back_at_once() {
        let pool = ThreadPool::new(3);
        let lane = UntrustedLane::new(pool.clone(), 1, 4);
        let (started, release_tx) = blocking_jobs(&lane, 2, true);
        // Both run at once although the lane has one place: a first-contact
        // master's control session does not keep its data connection out.
        for _ in 0..2 {
            started.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        for _ in 0..2 {
            release_tx.send(()).unwrap();
        }
        assert!(super::super::drain_pool(&pool, Duration::from_secs(5)));
        assert_eq!(lane.in_pool(), 0);
    }

    /// A connected pair: the server side for the lane, the client kept open.
    fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().unwrap().0, client)
    }

    #[test]
    fn a_clean_newcomer_takes_the_place_of_the_oldest_suspect_at_once() {
        let pool = ThreadPool::new(4);
        let lane = UntrustedLane::new(pool.clone(), 2, 8);
        let (ended_tx, ended) = crossbeam::channel::unbounded::<usize>();
        let mut clients = Vec::new();
        // Two suspects hold both places, blocked reading a silent peer
        // (as a trickler does), and two more wait.
        for i in 0..4 {
            let (server, client) = socket_pair();
            clients.push(client);
            let mut reader = server.try_clone().unwrap();
            let ended_tx = ended_tx.clone();
            assert!(lane.submit(Entrant {
                job: Box::new(move |_ticket| {
                    let _ = reader.read(&mut [0u8; 1]);
                    ended_tx.send(i).unwrap();
                }),
                origin: origin(true),
                socket: Some(server),
            }));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(lane.in_pool(), 2);
        // A clean first contact: the oldest suspect is cut off, and the
        // newcomer runs before any waiting suspect.
        let (ran_tx, ran) = crossbeam::channel::bounded(1);
        let started = Instant::now();
        assert!(lane.submit(entrant(
            Box::new(move |_ticket| ran_tx.send(()).unwrap()),
            false
        )));
        ran.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(ended.recv_timeout(Duration::from_secs(5)).unwrap(), 0);
        drop(clients);
        assert!(super::super::drain_pool(&pool, Duration::from_secs(5)));
        assert_eq!(lane.in_pool(), 0);
    }
}
