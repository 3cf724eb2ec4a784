//! Blocking sockets: connect with timeouts, and accept loops that hand each
//! connection to a fixed thread pool.
//!
//! Every socket gets read and write timeouts (our select-style timeouts), so
//! no peer can hold a worker forever. An accept error (out of file
//! descriptors, an aborted connection) backs off and goes on; it never ends
//! the loop. Shutdown sets a flag and connects once to the listener to wake
//! the blocked `accept`.

mod lane;
mod peers;
mod waiting_room;

pub(crate) use lane::UntrustedLane;
pub(crate) use peers::PeerBook;
pub(crate) use waiting_room::{Readiness, WaitingRoom};

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use threadpool::ThreadPool;

use lane::{Entrant, LaneTicket, Origin};
use peers::AddressSlot;
use waiting_room::Guest;

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
    /// whose timeout does not change costs no `setsockopt` system call.
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
    pub(crate) fn set_io_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.io_timeout = timeout;
        self.set_timeouts(timeout, timeout)
    }

    /// `None` means the peer has proved the key: the handshake deadline and
    /// the address's handshake slot are released.
    pub(crate) fn set_deadline(&self, deadline: Option<Instant>) -> io::Result<()> {
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
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
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
pub(crate) type Handler = Arc<dyn Fn(TimedStream, SocketAddr) + Send + Sync>;

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
pub(crate) struct AcceptLimits {
    /// Per read/write, and for the whole handshake.
    pub io_timeout: Duration,
    /// Connections waiting for a worker beyond this are closed at once.
    pub max_queued: usize,
    /// Connections from one address (an IPv6 /64) still in their handshake,
    /// queued, waiting to speak or on a worker, on all the ports that share
    /// `peers`; more are closed at once. A peer without the key never gets
    /// past its handshake, so this caps what one address can hold.
    /// Addresses that proved the key in the last ten minutes are exempt.
    pub max_handshakes_per_address: usize,
    /// If set, connections from addresses not exempt go through this lane
    /// (shared by the loops that feed one pool), so they can hold only part
    /// of the pool.
    pub untrusted_lane: Option<UntrustedLane>,
    /// Who proved the key lately and how many handshakes each address has
    /// open; one per daemon, shared by all of its loops.
    pub peers: PeerBook,
    /// If set, connections from addresses not exempt wait here, off the
    /// workers, until they have said what `Readiness` asks.
    pub waiting_room: Option<(WaitingRoom, Readiness)>,
    /// If not empty, only these addresses (the agent's `allowed_masters`);
    /// others are closed by the accept thread before they reach a worker.
    pub allowed: Vec<IpAddr>,
}

/// A running accept loop; `stop` ends it.
pub(crate) struct AcceptLoop {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How an admitted connection reaches a worker: straight to the pool for an
/// address that proved the key lately, through the untrusted lane (if any)
/// for the others. Shared by the accept thread and the waiting room.
struct Dispatch {
    label: String,
    pool: ThreadPool,
    handler: Handler,
    io_timeout: Duration,
    lane: Option<UntrustedLane>,
    refusals: Mutex<Refusals>,
}

impl Dispatch {
    fn refuse(&self, peer: SocketAddr, why: &str) {
        crate::sync::lock(&self.refusals).note(peer, why);
    }

    fn send(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, slot: AddressSlot) {
        let lane = self.lane.as_ref().filter(|_| !slot.trusted).cloned();
        let me = self.clone();
        match lane {
            None => self
                .pool
                .execute(move || me.serve(stream, peer, slot, None)),
            Some(lane) => {
                let origin = Origin {
                    book: slot.book(),
                    ip: peer.ip(),
                    suspect: slot.suspect,
                };
                // A second handle, so that a clean newcomer can cut this
                // connection off if it turns out a suspect holding a place.
                let socket = stream.try_clone().ok();
                let entrant = Entrant {
                    job: Box::new(move |ticket| me.serve(stream, peer, slot, ticket)),
                    origin,
                    socket,
                };
                if !lane.submit(entrant) {
                    self.refuse(peer, "too many connections from addresses without the key");
                }
            }
        }
    }

    /// On a worker: the handler, with the handshake deadline running.
    fn serve(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        mut slot: AddressSlot,
        ticket: Option<LaneTicket>,
    ) {
        slot.lane = ticket;
        // The handshake clock starts when a worker takes the connection,
        // so queueing behind slow peers does not expire a good one.
        let stream = TimedStream::new(
            stream,
            self.io_timeout,
            Some(Instant::now() + self.io_timeout),
        );
        stream.slot.set(Some(slot));
        if catch_unwind(AssertUnwindSafe(|| (self.handler)(stream, peer))).is_err() {
            log::error!(
                "{}: handler for {peer} panicked; connection dropped",
                self.label
            );
        }
    }
}

impl AcceptLoop {
    /// Accept on `listener`, handing connections to `pool`. When more than
    /// `max_queued` connections already wait for a worker, new ones are
    /// closed at once, so a flood cannot build an unbounded queue.
    #[cfg(test)]
    fn start(
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
            peers: PeerBook::default(),
            waiting_room: None,
            allowed: Vec::new(),
        };
        AcceptLoop::start_with(name, listener, pool, limits, handler)
    }

    /// Accept on `listener` within `limits`, handing connections to `pool`.
    pub(crate) fn start_with(
        name: &str,
        listener: TcpListener,
        pool: ThreadPool,
        limits: AcceptLimits,
        handler: Handler,
    ) -> io::Result<AcceptLoop> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let dispatch = Arc::new(Dispatch {
            label: name.to_string(),
            pool,
            handler,
            io_timeout: limits.io_timeout,
            lane: limits.untrusted_lane.clone(),
            refusals: Mutex::new(Refusals::new(name.to_string())),
        });
        let gate = Gate {
            limits,
            dispatch,
            stop: stop.clone(),
        };
        let thread = thread::Builder::new()
            .name(format!("accept-{name}"))
            .spawn(move || gate.run(listener))?;
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

/// The accept thread's side: what is refused at the door, what waits to
/// speak, what goes to the pool.
struct Gate {
    limits: AcceptLimits,
    dispatch: Arc<Dispatch>,
    stop: Arc<AtomicBool>,
}

impl Gate {
    fn run(self, listener: TcpListener) {
        let mut backoff = Duration::from_millis(5);
        while !self.stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    if self.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    self.admit(stream, peer);
                }
                Err(e) => {
                    log::warn!(
                        "{}: accept failed: {e}; retrying in {backoff:?}",
                        self.dispatch.label
                    );
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        let limits = &self.limits;
        // `::ffff:a.b.c.d` on a dual-stack listener is a.b.c.d.
        if !limits.allowed.is_empty() && !limits.allowed.contains(&peer.ip().to_canonical()) {
            self.dispatch.refuse(peer, "not in allowed_masters");
            return;
        }
        if self.dispatch.pool.queued_count() >= limits.max_queued {
            self.dispatch
                .refuse(peer, "too many connections waiting for a worker");
            return;
        }
        let keyed = limits.untrusted_lane.is_some();
        let Some(slot) = limits
            .peers
            .claim(peer.ip(), limits.max_handshakes_per_address, keyed)
        else {
            self.dispatch
                .refuse(peer, "too many handshakes from this address");
            return;
        };
        if let Err(e) = prepare(&stream, limits.io_timeout) {
            log::debug!("{}: {peer}: {e}", self.dispatch.label);
            return;
        }
        match &limits.waiting_room {
            Some((room, ready)) if !slot.trusted => {
                let dispatch = self.dispatch.clone();
                room.park(Guest {
                    stream,
                    peer,
                    ready: *ready,
                    until: Instant::now() + limits.io_timeout,
                    admit: Box::new(move |stream| dispatch.send(stream, peer, slot)),
                });
            }
            _ => self.dispatch.send(stream, peer, slot),
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

/// Raise this process's soft limit on open files to its hard limit. A
/// daemon holds a descriptor per connection waiting to speak, and systemd's
/// default soft limit (1024) would let a flood make `accept` fail for real
/// peers long before the per-address caps and the waiting room's bound do
/// their job. Returns the limit now in force.
pub(crate) fn raise_open_files_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// Wait until the pool has no running or queued jobs, at most `limit`.
/// Returns whether it drained.
pub(crate) fn drain_pool(pool: &ThreadPool, limit: Duration) -> bool {
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
pub(crate) fn sleep_unless(stop: &AtomicBool, d: Duration) {
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
        // `stop` returns once the accept thread has ended; the pool drains.
        l.stop();
        assert!(drain_pool(&pool, Duration::from_secs(5)));
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
