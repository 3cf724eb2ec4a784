//! Blocking sockets: connect with timeouts, and accept loops that hand each
//! connection to a fixed thread pool.
//!
//! Every socket gets read and write timeouts (our select-style timeouts), so
//! no peer can hold a worker forever. An accept error (out of file
//! descriptors, an aborted connection) backs off and goes on; it never ends
//! the loop. Shutdown sets a flag and connects once to the listener to wake
//! the blocked `accept`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

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

pub fn bind(addr: SocketAddr, what: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}")))
}

/// What handles one accepted connection, on a pool thread.
pub type Handler = Arc<dyn Fn(TcpStream, SocketAddr) + Send + Sync>;

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
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let label = name.to_string();
        let thread = thread::Builder::new()
            .name(format!("accept-{name}"))
            .spawn(move || {
                let mut backoff = Duration::from_millis(5);
                while !flag.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            backoff = Duration::from_millis(5);
                            if flag.load(Ordering::SeqCst) {
                                break;
                            }
                            if pool.queued_count() >= max_queued {
                                log::warn!(
                                    "{label}: {peer} dropped: {} connections already waiting",
                                    pool.queued_count()
                                );
                                continue;
                            }
                            if let Err(e) = prepare(&stream, io_timeout) {
                                log::debug!("{label}: {peer}: {e}");
                                continue;
                            }
                            let handler = handler.clone();
                            let label = label.clone();
                            pool.execute(move || {
                                if catch_unwind(AssertUnwindSafe(|| handler(stream, peer))).is_err()
                                {
                                    log::error!(
                                        "{label}: handler for {peer} panicked; connection dropped"
                                    );
                                }
                            });
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
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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
    let deadline = std::time::Instant::now() + limit;
    while pool.active_count() + pool.queued_count() > 0 {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Sleep up to `d`, waking early when `stop` is set.
pub fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let deadline = std::time::Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let now = std::time::Instant::now();
        if now >= deadline {
            return;
        }
        thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn accept_loop_serves_and_stops() {
        let pool = ThreadPool::new(2);
        let listener = bind("127.0.0.1:0".parse().unwrap(), "test").unwrap();
        let handler: Handler = Arc::new(|mut s: TcpStream, _| {
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
    fn a_panicking_handler_does_not_take_the_server_down() {
        let pool = ThreadPool::new(1);
        let listener = bind("127.0.0.1:0".parse().unwrap(), "test").unwrap();
        let handler: Handler = Arc::new(|mut s: TcpStream, _| {
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
