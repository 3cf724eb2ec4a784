//! The waiting room: connections from addresses that have not proved the
//! key wait here, off the workers, until they have said something.
//!
//! A fixed pool cannot afford a worker per silent peer: a thousand idle
//! connections, each allowed its handshake timeout, would hold every worker
//! for that long, and a real agent's heartbeat would queue behind them.
//! So an accepted connection from an unknown address is parked here first;
//! one thread waits on all parked sockets at once with `poll(2)` (the
//! select-style wait of the design card, over the same blocking `std::net`
//! sockets), and hands a connection to its pool only once its first bytes
//! have arrived — for HTTP, once its whole request head has. A peer that
//! says nothing within its deadline is closed here without ever having
//! taken a worker. Trickling peers that do start talking are the untrusted
//! lane's business (`super::UntrustedLane`).
//!
//! Bounded: at most `max_guests` parked connections (beyond that new ones
//! are closed at once); the per-address caps in `super::peers` apply before
//! a connection gets here.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, TryRecvError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// When a parked connection has said enough to deserve a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Any byte (the key protocol: the handshake's deadline and the
    /// untrusted lane take it from there).
    AnyBytes,
    /// A whole HTTP request head (`\r\n\r\n`), or `HTTP_HEAD_MAX` bytes of one
    /// (which the handler then refuses): an HTTP request is handled in one
    /// go, so a worker is never left waiting for the rest of it.
    HttpHead,
}

/// Longest HTTP request head looked for; a longer one is handed over as
/// it is, for the handler to refuse.
pub(crate) const HTTP_HEAD_MAX: usize = 8192;
/// How often a connection that has sent part of an HTTP head is looked at
/// again (its socket stays readable, so `poll` cannot wait on it).
const PARTIAL_RECHECK: Duration = Duration::from_millis(20);
/// Longest `poll` when nothing is due: the stop flag is seen this often.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Run on the room's thread once a guest is ready: give the connection to
/// its pool (dropping it closes the connection and frees its slot).
pub(crate) type Admit = Box<dyn FnOnce(TcpStream) + Send>;

/// A parked connection.
pub(crate) struct Guest {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub ready: Readiness,
    /// Closed if still silent then.
    pub until: Instant,
    pub admit: Admit,
}

/// The handle the accept loops share; one room (one thread) per daemon.
#[derive(Clone)]
pub(crate) struct WaitingRoom(Arc<Shared>);

struct Shared {
    guests: Sender<Guest>,
    /// One byte written here wakes the room's `poll` for a new guest.
    bell: Mutex<UnixStream>,
    stop: AtomicBool,
    label: String,
}

impl std::fmt::Debug for WaitingRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitingRoom")
            .field("label", &self.0.label)
            .finish()
    }
}

impl WaitingRoom {
    /// Start the room's thread; at most `max_guests` connections wait at once.
    pub fn start(label: &str, max_guests: usize) -> io::Result<WaitingRoom> {
        let (tx, rx) = crossbeam::channel::unbounded();
        let (bell, ear) = UnixStream::pair()?;
        bell.set_nonblocking(true)?;
        ear.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            guests: tx,
            bell: Mutex::new(bell),
            stop: AtomicBool::new(false),
            label: label.to_string(),
        });
        let room = Room {
            shared: Arc::downgrade(&shared),
            arrivals: rx,
            ear,
            max_guests: max_guests.max(1),
            guests: Vec::new(),
            refused: super::Refusals::new(format!("{label} waiting room")),
        };
        thread::Builder::new()
            .name(format!("waiting-room-{label}"))
            .spawn(move || room.run())?;
        Ok(WaitingRoom(shared))
    }

    /// Park `guest` until it has spoken (or its time is up).
    pub(crate) fn park(&self, guest: Guest) {
        if guest.stream.set_nonblocking(true).is_err() {
            return;
        }
        if self.0.guests.send(guest).is_ok() {
            self.ring();
        }
    }

    fn ring(&self) {
        // A full bell already has a byte waiting: the room wakes anyway.
        let _ = crate::sync::lock(&self.0.bell).write(&[1]);
    }

    /// Close every parked connection and end the thread.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
        self.ring();
    }
}

/// The room's own side, on its thread.
struct Room {
    shared: std::sync::Weak<Shared>,
    arrivals: Receiver<Guest>,
    ear: UnixStream,
    max_guests: usize,
    guests: Vec<Waiting>,
    refused: super::Refusals,
}

struct Waiting {
    guest: Guest,
    /// Sent part of an HTTP head: look again then (not through `poll`).
    recheck: Option<Instant>,
}

enum Verdict {
    Ready,
    NotYet,
    Partial,
    Gone,
}

impl Room {
    fn stopped(&self) -> bool {
        self.shared
            .upgrade()
            .is_none_or(|s| s.stop.load(Ordering::SeqCst))
    }

    fn run(mut self) {
        while !self.stopped() {
            self.take_arrivals();
            let now = Instant::now();
            self.guests.retain(|w| w.guest.until > now);
            let timeout = self.next_timeout(now);
            let readable = match self.wait(timeout) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("waiting room: poll failed: {e}");
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            self.look_at(readable);
        }
        // Dropping the guests closes them and frees their slots.
    }

    fn take_arrivals(&mut self) {
        let mut drained = [0u8; 64];
        while matches!(io::Read::read(&mut self.ear, &mut drained), Ok(n) if n > 0) {}
        loop {
            match self.arrivals.try_recv() {
                Ok(guest) => {
                    if self.guests.len() >= self.max_guests {
                        self.refused
                            .note(guest.peer, "too many connections waiting to speak");
                        continue;
                    }
                    self.guests.push(Waiting {
                        guest,
                        recheck: None,
                    });
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    /// Until the first deadline or recheck, at most `IDLE_POLL`.
    fn next_timeout(&self, now: Instant) -> Duration {
        self.guests
            .iter()
            .map(|w| w.recheck.unwrap_or(w.guest.until).min(w.guest.until))
            .min()
            .map_or(IDLE_POLL, |t| t.saturating_duration_since(now))
            .min(IDLE_POLL)
    }

    /// Wait for the bell or a parked socket; the indices of guests worth a
    /// look (readable, or due for a recheck).
    fn wait(&self, timeout: Duration) -> io::Result<Vec<usize>> {
        let polled: Vec<usize> = (0..self.guests.len())
            .filter(|&i| self.guests[i].recheck.is_none())
            .collect();
        let mut fds = Vec::with_capacity(polled.len() + 1);
        fds.push(PollFd::new(self.ear.as_fd(), PollFlags::POLLIN));
        for &i in &polled {
            fds.push(PollFd::new(
                self.guests[i].guest.stream.as_fd(),
                PollFlags::POLLIN,
            ));
        }
        // Whole milliseconds, rounded up so a due deadline is not polled for 0 ms in a loop.
        let ms = u16::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(Vec::new()),
            Err(e) => return Err(io::Error::from(e)),
        }
        let mut worth: Vec<usize> = polled
            .iter()
            .zip(&fds[1..])
            .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(&i, _)| i)
            .collect();
        let now = Instant::now();
        worth.extend(
            (0..self.guests.len()).filter(|&i| self.guests[i].recheck.is_some_and(|t| t <= now)),
        );
        Ok(worth)
    }

    fn look_at(&mut self, mut worth: Vec<usize>) {
        // Highest index first, so `swap_remove` leaves the others in place.
        worth.sort_unstable_by(|a, b| b.cmp(a));
        worth.dedup();
        for i in worth {
            match verdict(&self.guests[i].guest) {
                Verdict::NotYet => self.guests[i].recheck = None,
                Verdict::Partial => self.guests[i].recheck = Some(Instant::now() + PARTIAL_RECHECK),
                Verdict::Gone => {
                    self.guests.swap_remove(i);
                }
                Verdict::Ready => {
                    let Waiting { guest, .. } = self.guests.swap_remove(i);
                    if guest.stream.set_nonblocking(false).is_ok() {
                        (guest.admit)(guest.stream);
                    }
                }
            }
        }
    }
}

/// Has the guest said enough? Peeks, so the handler reads every byte.
fn verdict(guest: &Guest) -> Verdict {
    let mut buf = [0u8; HTTP_HEAD_MAX];
    let want = match guest.ready {
        Readiness::AnyBytes => 1,
        Readiness::HttpHead => HTTP_HEAD_MAX,
    };
    match guest.stream.peek(&mut buf[..want]) {
        Ok(0) => Verdict::Gone,
        Ok(n) => {
            let seen = &buf[..n];
            let ready = match guest.ready {
                Readiness::AnyBytes => true,
                Readiness::HttpHead => {
                    n == HTTP_HEAD_MAX || seen.windows(4).any(|w| w == b"\r\n\r\n")
                }
            };
            if ready {
                Verdict::Ready
            } else {
                Verdict::Partial
            }
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Verdict::NotYet,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Verdict::NotYet,
        Err(_) => Verdict::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A listener whose accepted connections are parked in `room`; the
    /// admitted ones come out of the returned channel.
    fn parked_pair(
        room: &WaitingRoom,
        ready: Readiness,
        wait: Duration,
    ) -> (TcpStream, Receiver<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let (tx, rx) = crossbeam::channel::unbounded();
        room.park(Guest {
            stream: server,
            peer,
            ready,
            until: Instant::now() + wait,
            admit: Box::new(move |s| {
                let _ = tx.send(s);
            }),
        });
        (client, rx)
    }

    #[test]
    fn a_silent_connection_never_leaves_the_room_and_is_closed_at_its_deadline() {
        let room = WaitingRoom::start("test", 16).unwrap();
        let (mut client, admitted) =
            parked_pair(&room, Readiness::AnyBytes, Duration::from_millis(300));
        assert!(admitted.recv_timeout(Duration::from_millis(150)).is_err());
        // Closed by the room: the client reads end of file.
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
        assert!(admitted.try_recv().is_err());
        room.stop();
    }

    #[test]
    fn a_connection_that_speaks_is_admitted_with_every_byte_unread() {
        let room = WaitingRoom::start("test", 16).unwrap();
        let (mut client, admitted) =
            parked_pair(&room, Readiness::AnyBytes, Duration::from_secs(5));
        client.write_all(b"hello").unwrap();
        let mut server = admitted.recv_timeout(Duration::from_secs(5)).unwrap();
        let mut got = [0u8; 5];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        room.stop();
    }

    #[test]
    fn an_http_request_waits_for_its_whole_head() {
        let room = WaitingRoom::start("test", 16).unwrap();
        let (mut client, admitted) =
            parked_pair(&room, Readiness::HttpHead, Duration::from_secs(5));
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        assert!(admitted.recv_timeout(Duration::from_millis(200)).is_err());
        client.write_all(b"\r\n").unwrap();
        let mut server = admitted.recv_timeout(Duration::from_secs(5)).unwrap();
        let mut head = String::new();
        server
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let _ = server.read_to_string(&mut head);
        assert!(head.starts_with("GET /healthz") && head.ends_with("\r\n\r\n"));
        room.stop();
    }

    #[test]
    fn a_full_room_closes_newcomers() {
        let room = WaitingRoom::start("test", 1).unwrap();
        let (_first, _a) = parked_pair(&room, Readiness::AnyBytes, Duration::from_secs(5));
        let (mut second, _b) = parked_pair(&room, Readiness::AnyBytes, Duration::from_secs(5));
        second
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(second.read(&mut [0u8; 1]).unwrap(), 0);
        room.stop();
    }
}
