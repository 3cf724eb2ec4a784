//! A TCP proxy that breaks connections on purpose, for the chaos tests.
//!
//! Each accepted connection gets a plan drawn from a seeded generator:
//! most pass cleanly; the rest, per direction, are cut after a random
//! number of bytes, stalled for a while, slowed chunk by chunk, or
//! half-closed. Byte counts are small (up to a few KiB) so faults land in
//! handshakes, requests and the middle of data transfers alike.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Counts of what the proxy did, for the test's report.
#[derive(Default, Debug)]
pub struct Stats {
    pub connections: AtomicU64,
    pub cuts: AtomicU64,
    pub stalls: AtomicU64,
    pub slowed: AtomicU64,
    pub half_closes: AtomicU64,
}

impl Stats {
    pub fn faults(&self) -> u64 {
        [&self.cuts, &self.stalls, &self.slowed, &self.half_closes]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} connections: {} cut, {} stalled, {} slowed, {} half-closed",
            self.connections.load(Ordering::Relaxed),
            self.cuts.load(Ordering::Relaxed),
            self.stalls.load(Ordering::Relaxed),
            self.slowed.load(Ordering::Relaxed),
            self.half_closes.load(Ordering::Relaxed)
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// Close both directions after this many bytes.
    Cut(u64),
    /// Stop forwarding for a while after this many bytes.
    Stall(u64, Duration),
    /// Sleep before forwarding each chunk.
    Slow(Duration),
    /// Stop this direction (FIN to the receiver) after this many bytes.
    HalfClose(u64),
}

/// xorshift64 shared by the accept thread.
pub struct Rng(u64);

impl Rng {
    /// Seeds are small numbers; splitmix64 spreads them over all bits.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

pub struct FaultProxy {
    pub stats: Arc<Stats>,
    /// Faults per thousand connections; 0 turns faults off.
    pub fault_per_mille: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(listen: &str, upstream: &str, seed: u64, fault_per_mille: u64) -> FaultProxy {
        let listener = TcpListener::bind(listen).unwrap_or_else(|e| panic!("proxy {listen}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let upstream: SocketAddr = upstream.parse().expect("upstream address");
        let stats = Arc::new(Stats::default());
        let rate = Arc::new(AtomicU64::new(fault_per_mille));
        let stop = Arc::new(AtomicBool::new(false));
        let rng = Arc::new(Mutex::new(Rng::new(seed)));
        let (s, r, st) = (stats.clone(), rate.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        s.connections.fetch_add(1, Ordering::Relaxed);
                        let plans = {
                            let mut rng = rng.lock().unwrap();
                            let rate = r.load(Ordering::Relaxed);
                            [draw(&mut rng, rate), draw(&mut rng, rate)]
                        };
                        let (s, st) = (s.clone(), st.clone());
                        thread::spawn(move || relay(client, upstream, plans, &s, &st));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            stats,
            fault_per_mille: rate,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn draw(rng: &mut Rng, per_mille: u64) -> Fault {
    if !rng.chance(per_mille) {
        return Fault::None;
    }
    let at = rng.below(4096);
    match rng.below(4) {
        0 => Fault::Cut(at),
        1 => Fault::Stall(at, Duration::from_millis(100 + rng.below(2500))),
        2 => Fault::Slow(Duration::from_millis(1 + rng.below(20))),
        _ => Fault::HalfClose(at),
    }
}

fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    plans: [Fault; 2],
    stats: &Stats,
    stop: &AtomicBool,
) {
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
        return;
    };
    for s in [&client, &server] {
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    }
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    thread::scope(|scope| {
        scope.spawn(|| pump(client, server, plans[0], stats, stop));
        scope.spawn(|| pump(s2, c2, plans[1], stats, stop));
    });
}

/// Copy `from` → `to` under `fault` until EOF, an error, or the fault ends it.
fn pump(mut from: TcpStream, mut to: TcpStream, fault: Fault, stats: &Stats, stop: &AtomicBool) {
    let mut buf = [0u8; 8192];
    let mut moved: u64 = 0;
    let mut fired = false;
    let mut idle_rounds = 0;
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                idle_rounds = 0;
                n
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // Both peers have timeouts; a connection idle this long is done.
                idle_rounds += 1;
                if idle_rounds > 150 {
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        let mut chunk = &buf[..n];
        match fault {
            Fault::Cut(at) | Fault::HalfClose(at) | Fault::Stall(at, _)
                if !fired && moved + n as u64 > at =>
            {
                let head = (at - moved) as usize;
                if to.write_all(&chunk[..head]).is_err() {
                    break;
                }
                fired = true;
                match fault {
                    Fault::Cut(_) => {
                        stats.cuts.fetch_add(1, Ordering::Relaxed);
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                        return;
                    }
                    Fault::HalfClose(_) => {
                        stats.half_closes.fetch_add(1, Ordering::Relaxed);
                        let _ = to.shutdown(Shutdown::Write);
                        return;
                    }
                    Fault::Stall(_, pause) => {
                        stats.stalls.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(pause);
                        moved += head as u64;
                        chunk = &chunk[head..];
                    }
                    _ => unreachable!(),
                }
            }
            Fault::Slow(pause) => {
                if !fired {
                    stats.slowed.fetch_add(1, Ordering::Relaxed);
                    fired = true;
                }
                thread::sleep(pause);
            }
            _ => {}
        }
        if to.write_all(chunk).is_err() {
            break;
        }
        moved += chunk.len() as u64;
    }
    // Pass the end on, as a real network would.
    let _ = to.shutdown(Shutdown::Write);
}
