//! Blocking sockets: connect with timeouts, and accept loops that hand each
//! connection to a fixed thread pool.
//!
//! Every socket gets read and write timeouts (our select-style timeouts), so
//! no peer can hold a worker forever. An accept error (out of file
//! descriptors, an aborted connection) backs off and goes on; it never ends
//! the loop. Shutdown sets a flag and connects once to the listener to wake
//! the blocked `accept`.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use threadpool::ThreadPool;

/// Connect with a deadline, then set I/O timeouts and disable Nagle (our
/// frames are small request/response pairs).
pub fn connect(
    addr: SocketAddr,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, connect_timeout)
        .map_err(|e| io::Error::new(e.kind(), format!("connect to {addr}: {e}")))?;
    prepare(&stream, io_timeout)?;
    Ok(stream)
}

pub fn prepare(stream: &TcpStream, io_timeout: Duration) -> io::Result<()> {
    stream.set_read_timeout(Some(io_timeout))?;
    stream.set_write_timeout(Some(io_timeout))?;
    stream.set_nodelay(true)
}

/// How far past its deadline a handshake may run before a blocked read or
/// write ends (see `TimedStream::arm`).
const DEADLINE_SLACK: Duration = Duration::from_millis(50);

/// A server-side stream with an optional overall deadline on top of the
/// per-read timeout: a peer trickling one byte at a time cannot stretch a
/// handshake past it. Cleared (`set_deadline(None)`) once the peer has
/// proved the key.
pub struct TimedStream {
    stream: TcpStream,
    io_timeout: Duration,
    deadline: Cell<Option<Instant>>,
    /// The socket's read and write timeouts as last set, so that a call
    /// whose timeout does not change costs no `setsockopt` (two per read
    /// and write showed in the agent's profile of a pull).
    read_timeout: Cell<Duration>,
    write_timeout: Cell<Duration>,
    /// The peer address's handshake slot, held until the peer has proved
    /// the key (or the connection ends).
    slot: Cell<Option<AddressSlot>>,
}

impl TimedStream {
    /// `stream` must have been through [`prepare`] with `io_timeout`.
    pub fn new(stream: TcpStream, io_timeout: Duration, deadline: Option<Instant>) -> TimedStream {
        TimedStream {
            stream,
            io_timeout,
            deadline: Cell::new(deadline),
            read_timeout: Cell::new(io_timeout),
            write_timeout: Cell::new(io_timeout),
            slot: Cell::new(None),
        }
    }

    /// Change the per-read/write timeout (e.g. for a session that may idle
    /// while its peer works elsewhere).
    pub fn set_io_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.io_timeout = timeout;
        self.set_timeouts(timeout, timeout)
    }

    /// `None` means the peer has proved the key: the handshake deadline and
    /// the address's handshake slot are released.
    pub fn set_deadline(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.deadline.set(deadline);
        if deadline.is_none() {
            if let Some(slot) = self.slot.take() {
                slot.proved();
            }
            self.set_timeouts(self.io_timeout, self.io_timeout)?;
        }
        Ok(())
    }

    /// Set the socket timeouts that differ from what they are.
    fn set_timeouts(&self, read: Duration, write: Duration) -> io::Result<()> {
        if self.read_timeout.get() != read {
            self.stream.set_read_timeout(Some(read))?;
            self.read_timeout.set(read);
        }
        if self.write_timeout.get() != write {
            self.stream.set_write_timeout(Some(write))?;
            self.write_timeout.set(write);
        }
        Ok(())
    }

    /// Half-close: tell the peer no more bytes come (for a lingering close,
    /// so unread request bytes do not turn our FIN into a reset).
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Write)
    }

    /// Shrink the timeout of the socket direction about to be used to what
    /// is left before the deadline. It is left alone while it is at most
    /// `DEADLINE_SLACK` longer than that: a handshake that goes at normal
    /// speed then costs no `setsockopt` at all, and a stalled read still
    /// ends at most that much after the deadline.
    fn arm(&self, reading: bool) -> io::Result<()> {
        let Some(deadline) = self.deadline.get() else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer too slow: deadline passed",
            ));
        }
        let timeout = left.min(self.io_timeout);
        let current = if reading {
            self.read_timeout.get()
        } else {
            self.write_timeout.get()
        };
        if current >= timeout && current - timeout <= DEADLINE_SLACK {
            return Ok(());
        }
        if reading {
            self.set_timeouts(timeout, self.write_timeout.get())
        } else {
            self.set_timeouts(self.read_timeout.get(), timeout)
        }
    }
}

impl Read for TimedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm(true)?;
        self.stream.read(buf)
    }
}

impl Write for TimedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm(false)?;
        self.stream.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.arm(false)?;
        self.stream.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

pub fn bind(addr: SocketAddr, what: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}")))
}

/// What handles one accepted connection, on a pool thread. The stream comes
/// with a deadline one `io_timeout` after a worker took it, for the handshake;
/// the handler lifts it once the peer has proved the key.
pub type Handler = Arc<dyn Fn(TimedStream, SocketAddr) + Send + Sync>;

/// How long an address that proved the key stays exempt from the cap.
const TRUSTED_FOR: Duration = Duration::from_secs(600);
/// Bound on remembered trusted addresses (oldest forgotten first).
const MAX_TRUSTED: usize = 4096;

/// The addresses that proved the key lately: a master opening a control,
/// a data and a probe connection at once while a cron pull runs is not an
/// attacker, so the caps apply only to addresses that have not shown the
/// key lately. Clones share it: one per daemon, so a master that proved the
/// key on the control port is trusted on the data port too.
#[derive(Clone, Default, Debug)]
pub struct TrustBook(Arc<Mutex<HashMap<IpAddr, Instant>>>);

impl TrustBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.lock()
            .get(&ip)
            .is_some_and(|t| t.elapsed() < TRUSTED_FOR)
    }

    fn trust(&self, ip: IpAddr) {
        let mut trusted = self.lock();
        if trusted.len() >= MAX_TRUSTED && !trusted.contains_key(&ip) {
            let oldest = trusted.iter().min_by_key(|(_, t)| **t).map(|(ip, _)| *ip);
            if let Some(ip) = oldest {
                trusted.remove(&ip);
            }
        }
        trusted.insert(ip, Instant::now());
    }
}

/// Connections from one address that have not proved the key yet, on one
/// port.
struct HandshakeCounts {
    open: Mutex<HashMap<IpAddr, usize>>,
    trust: TrustBook,
}

impl HandshakeCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for `ip`, or `None` if it already holds `limit` and has not
    /// proved the key within `TRUSTED_FOR`.
    fn claim(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<AddressSlot> {
        let trusted = self.trust.trusts(ip);
        let mut open = self.lock();
        let n = open.entry(ip).or_default();
        if *n >= limit && !trusted {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: self.clone(),
            ip,
            trusted,
            lane: None,
        })
    }
}

/// One unauthenticated connection's claim on its address's quota (and, for
/// an untrusted address, on the untrusted lane); given back when the peer
/// proves the key or the connection ends.
struct AddressSlot {
    counts: Arc<HandshakeCounts>,
    ip: IpAddr,
    /// The address had proved the key within `TRUSTED_FOR` at accept.
    trusted: bool,
    lane: Option<LaneTicket>,
}

impl AddressSlot {
    /// The peer proved the key: trust its address for a while, and let the
    /// next untrusted connection have the lane's place.
    fn proved(self) {
        self.counts.trust.trust(self.ip);
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.counts.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
        // `lane` is dropped after this: its place goes to the next waiting.
    }
}

/// A connection's run on the pool; an untrusted one gets its place in the
/// lane, held until it proves the key or ends.
type Job = Box<dyn FnOnce(Option<LaneTicket>) + Send>;

/// A place in the untrusted lane; given back on drop.
struct LaneTicket(UntrustedLane);

impl Drop for LaneTicket {
    fn drop(&mut self) {
        self.0.finished();
    }
}

/// The way to the pool for connections from addresses that have not proved
/// the key lately: at most `max_in_pool` of them queued or on a worker and
/// not yet proved the key at once; the rest wait here in order (at most `max_waiting`; beyond that
/// they are closed). Clones share it, so one lane serves every accept loop
/// that feeds one pool (an agent's control and data ports), and the rest of
/// the pool stays free for peers that proved the key, however many
/// addresses an attacker has. Without it, attackers holding every worker
/// until their handshake deadline made a master's fetch wait that long.
#[derive(Clone)]
pub struct UntrustedLane(Arc<Lane>);

struct Lane {
    pool: ThreadPool,
    max_in_pool: usize,
    max_waiting: usize,
    state: Mutex<LaneState>,
}

#[derive(Default)]
struct LaneState {
    in_pool: usize,
    waiting: VecDeque<Job>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `job` on the pool now or when the lane has room; `false` (and
    /// the job dropped, closing its connection) if the lane is full.
    fn submit(&self, job: Job) -> bool {
        let mut state = self.lock();
        if state.in_pool < self.0.max_in_pool {
            state.in_pool += 1;
            drop(state);
            self.run(job);
            true
        } else if state.waiting.len() < self.0.max_waiting {
            state.waiting.push_back(job);
            true
        } else {
            false
        }
    }

    fn run(&self, job: Job) {
        let ticket = LaneTicket(self.clone());
        self.0.pool.execute(move || job(Some(ticket)));
    }

    /// A place was given back (its peer proved the key, or its connection
    /// ended): the next waiting connection takes it.
    fn finished(&self) {
        let next = {
            let mut state = self.lock();
            let next = state.waiting.pop_front();
            if next.is_none() {
                state.in_pool -= 1;
            }
            next
        };
        if let Some(job) = next {
            self.run(job);
        }
    }
}

/// Logs refused connections without letting a flood flood the log: the
/// first refusal at once, then at most one summary line per second.
struct Refusals {
    label: String,
    last: Option<Instant>,
    suppressed: usize,
}

impl Refusals {
    fn new(label: String) -> Refusals {
        Refusals {
            label,
            last: None,
            suppressed: 0,
        }
    }

    fn note(&mut self, peer: SocketAddr, why: &str) {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        let more = match self.suppressed {
            0 => String::new(),
            n => format!(" ({n} more refused in the last second)"),
        };
        log::warn!("{}: {peer} refused: {why}{more}", self.label);
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

/// What an accept loop lets in, and how long it waits.
#[derive(Debug, Clone)]
pub struct AcceptLimits {
    /// Per read/write, and for the whole handshake.
    pub io_timeout: Duration,
    /// Connections waiting for a worker beyond this are closed at once.
    pub max_queued: usize,
    /// Connections from one address still in their handshake (queued or on
    /// a worker); more are closed at once. A peer without the key never
    /// gets past its handshake, so this caps what one address can hold.
    /// Addresses that proved the key in the last ten minutes are exempt.
    pub max_handshakes_per_address: usize,
    /// If set, connections from addresses not exempt go through this lane
    /// (shared by the loops that feed one pool), so they can hold only part
    /// of the pool.
    pub untrusted_lane: Option<UntrustedLane>,
    /// Who proved the key lately; share one among a daemon's loops.
    pub trust: TrustBook,
    /// If not empty, only these addresses (the agent's `allowed_masters`);
    /// others are closed by the accept thread before they reach a worker.
    pub allowed: Vec<IpAddr>,
}

/// A running accept loop; `stop` ends it.
pub struct AcceptLoop {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AcceptLoop {
    /// Accept on `listener`, handing connections to `pool`. When more than
    /// `max_queued` connections already wait for a worker, new ones are
    /// closed at once, so a flood cannot build an unbounded queue.
    pub fn start(
        name: &str,
        listener: TcpListener,
        pool: ThreadPool,
        io_timeout: Duration,
        max_queued: usize,
        handler: Handler,
    ) -> io::Result<AcceptLoop> {
        let limits = AcceptLimits {
            io_timeout,
            max_queued,
            max_handshakes_per_address: usize::MAX,
            untrusted_lane: None,
            trust: TrustBook::default(),
            allowed: Vec::new(),
        };
        AcceptLoop::start_with(name, listener, pool, limits, handler)
    }

    /// Accept on `listener` within `limits`, handing connections to `pool`.
    pub fn start_with(
        name: &str,
        listener: TcpListener,
        pool: ThreadPool,
        limits: AcceptLimits,
        handler: Handler,
    ) -> io::Result<AcceptLoop> {
        let AcceptLimits {
            io_timeout,
            max_queued,
            max_handshakes_per_address,
            untrusted_lane,
            trust,
            allowed,
        } = limits;
        let counts = Arc::new(HandshakeCounts {
            open: Mutex::new(HashMap::new()),
            trust,
        });
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let label = name.to_string();
        let thread = thread::Builder::new()
            .name(format!("accept-{name}"))
            .spawn(move || {
                let mut backoff = Duration::from_millis(5);
                let mut refusals = Refusals::new(label.clone());
                while !flag.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            backoff = Duration::from_millis(5);
                            if flag.load(Ordering::SeqCst) {
                                break;
                            }
                            // `::ffff:a.b.c.d` on a dual-stack listener is a.b.c.d.
                            if !allowed.is_empty() && !allowed.contains(&peer.ip().to_canonical()) {
                                refusals.note(peer, "not in allowed_masters");
                                continue;
                            }
                            if pool.queued_count() >= max_queued {
                                refusals.note(peer, "too many connections waiting for a worker");
                                continue;
                            }
                            let Some(slot) = counts.claim(peer.ip(), max_handshakes_per_address)
                            else {
                                refusals.note(peer, "too many handshakes from this address");
                                continue;
                            };
                            if let Err(e) = prepare(&stream, io_timeout) {
                                log::debug!("{label}: {peer}: {e}");
                                continue;
                            }
                            let handler = handler.clone();
                            let label = label.clone();
                            let lane = untrusted_lane.as_ref().filter(|_| !slot.trusted);
                            let job = move |ticket: Option<LaneTicket>| {
                                let mut slot = slot;
                                slot.lane = ticket;
                                // The handshake clock starts when a worker takes the connection,
                                // so queueing behind slow peers does not expire a good one.
                                let stream = TimedStream::new(
                                    stream,
                                    io_timeout,
                                    Some(Instant::now() + io_timeout),
                                );
                                stream.slot.set(Some(slot));
                                if catch_unwind(AssertUnwindSafe(|| handler(stream, peer))).is_err()
                                {
                                    log::error!(
                                        "{label}: handler for {peer} panicked; connection dropped"
                                    );
                                }
                            };
                            match lane {
                                None => pool.execute(move || job(None)),
                                Some(lane) => {
                                    if !lane.submit(Box::new(job)) {
                                        refusals.note(
                                            peer,
                                            "too many connections from addresses without the key",
                                        );
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            log::warn!("{label}: accept failed: {e}; retrying in {backoff:?}");
                            thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                    }
                }
            })?;
        Ok(AcceptLoop {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting and wait for the loop to end.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let wake = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.addr.port())
            }
            _ => self.addr,
        };
        let woken = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let Some(thread) = self.thread.take() else {
            return;
        };
        match woken {
            Ok(_) => {
                let _ = thread.join();
            }
            // Unwoken, the thread stays blocked in `accept`: leave it to end
            // with the process rather than wait for it forever.
            Err(e) => log::warn!(
                "cannot wake the accept loop on {}: {e}; not waiting for it",
                self.addr
            ),
        }
    }
}

impl Drop for AcceptLoop {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

/// Wait until the pool has no running or queued jobs, at most `limit`.
/// Returns whether it drained.
pub fn drain_pool(pool: &ThreadPool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while pool.active_count() + pool.queued_count() > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Sleep up to `d`, waking early when `stop` is set.
pub fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let deadline = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_loop_serves_and_stops() {
        let pool = ThreadPool::new(2);
        let listener = bind("127.0.0.1:0".parse().unwrap(), "test").unwrap();
        let handler: Handler = Arc::new(|mut s: TimedStream, _| {
            let _ = s.write_all(b"hi");
        });
        let mut l = AcceptLoop::start(
            "test",
            listener,
            pool.clone(),
            Duration::from_secs(1),
            100,
            handler,
        )
        .unwrap();
        let mut c = TcpStream::connect(l.local_addr()).unwrap();
        let mut buf = String::new();
        c.read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "hi");
        // A panicking handler does not end the loop.
        l.stop();
        assert!(drain_pool(&pool, Duration::from_secs(5)));
    }

    #[test]
    fn the_untrusted_lane_holds_part_of_the_pool_and_queues_the_rest_in_order() {
        let pool = ThreadPool::new(4);
        let lane = UntrustedLane::new(pool.clone(), 2, 3);
        let (started_tx, started) = crossbeam_channel::unbounded::<usize>();
        let (release_tx, release) = crossbeam_channel::unbounded::<()>();
        for i in 0..5 {
            let (started_tx, release) = (started_tx.clone(), release.clone());
            // The place is held until the ticket goes (here: the run ends).
            assert!(lane.submit(Box::new(move |_ticket| {
                started_tx.send(i).unwrap();
                release.recv().unwrap();
            })));
        }
        // Full: 2 on workers, 3 waiting.
        assert!(!lane.submit(Box::new(|_| {})));
        let first: Vec<usize> = (0..2)
            .map(|_| started.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert!(started.recv_timeout(Duration::from_millis(100)).is_err());
        // A trusted connection goes straight to a free worker meanwhile.
        let (done_tx, done) = crossbeam_channel::bounded(1);
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
        assert!(drain_pool(&pool, Duration::from_secs(5)));
        assert_eq!(lane.lock().in_pool, 0);
    }

    #[test]
    fn a_peer_that_proves_the_key_gives_its_lane_place_back_at_once() {
        let pool = ThreadPool::new(3);
        let lane = UntrustedLane::new(pool.clone(), 1, 4);
        let (started_tx, started) = crossbeam_channel::unbounded::<usize>();
        let (release_tx, release) = crossbeam_channel::unbounded::<()>();
        for i in 0..2 {
            let (started_tx, release) = (started_tx.clone(), release.clone());
            assert!(lane.submit(Box::new(move |ticket| {
                drop(ticket); // proved the key: what `AddressSlot::proved` does
                started_tx.send(i).unwrap();
                release.recv().unwrap(); // its session goes on
            })));
        }
        // Both run at once although the lane has one place: a first-contact
        // master's control session does not keep its data connection out.
        for _ in 0..2 {
            started.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        for _ in 0..2 {
            release_tx.send(()).unwrap();
        }
        assert!(drain_pool(&pool, Duration::from_secs(5)));
        assert_eq!(lane.lock().in_pool, 0);
    }

    #[test]
    fn a_trickling_peer_is_cut_off_at_the_deadline() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), "test").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            // One byte at a time, each well within the per-read timeout.
            for _ in 0..200 {
                if c.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let (s, _) = listener.accept().unwrap();
        let started = Instant::now();
        let mut timed = TimedStream::new(
            s,
            Duration::from_secs(1),
            Some(started + Duration::from_millis(200)),
        );
        let mut buf = [0u8; 1];
        let mut got = 0;
        let err = loop {
            match timed.read(&mut buf) {
                Ok(0) => panic!("peer closed first"),
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            "{err}"
        );
        // Cut off long before the peer's 200 bytes were in.
        assert!(got < 200, "read {got} bytes");
        drop(timed);
        client.join().unwrap();
    }

    #[test]
    fn a_panicking_handler_does_not_take_the_server_down() {
        let pool = ThreadPool::new(1);
        let listener = bind("127.0.0.1:0".parse().unwrap(), "test").unwrap();
        let handler: Handler = Arc::new(|mut s: TimedStream, _| {
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
            if b[0] == b'p' {
                panic!("bad peer");
            }
            let _ = s.write_all(b"ok");
        });
        let mut l = AcceptLoop::start("test", listener, pool, Duration::from_secs(1), 100, handler)
            .unwrap();
        let mut bad = TcpStream::connect(l.local_addr()).unwrap();
        bad.write_all(b"p").unwrap();
        let _ = bad.read(&mut [0u8; 1]);
        let mut good = TcpStream::connect(l.local_addr()).unwrap();
        good.write_all(b"g").unwrap();
        let mut buf = String::new();
        good.read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "ok");
        l.stop();
    }
}
