//! Issue 11, the client side: an impostor without the key listening where
//! the master or an agent should be. Every kind of outbound connection
//! (the master's pulls, probes and data fetches, a one-shot `pihealth
//! pull`, the agent's registration, heartbeats and alarms) must end by its
//! deadline however slowly the impostor answers, and must send it nothing
//! but the client's own handshake frames (hello and proof): the client
//! checks the server's proof before any request.
//!
//! The impostor answers each connection one of two ways: *trickling* (a
//! well-formed challenge and then a made-up proof, one byte every 150 ms:
//! about 11 s in all, against an `io_timeout` of 1 s) or *fast* (the same
//! at once: a client that does not check the proof before its request
//! sends the request straight after its own proof).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pihealth::protocol::auth;
use pihealth::protocol::frame::write_frame;

use crate::util::*;

/// What the impostor does with each connection.
const ALTERNATE: u8 = 0;
const TRICKLE: u8 = 1;
const FAST: u8 = 2;

/// The longest a client may keep a connection to the impostor: the
/// handshake deadline (`io_timeout`, 1 s in these tests) plus generous
/// room for a busy machine. The impostor's answer takes ~11 s to trickle.
const BOUND: Duration = Duration::from_millis(2500);

/// One connection the impostor accepted.
#[derive(Debug, Clone)]
struct Seen {
    port: u16,
    opened: Instant,
    /// When the client closed it (EOF or reset), if it has.
    closed: Option<Instant>,
    received: Vec<u8>,
    trickled: bool,
}

struct Impostor {
    seen: Arc<Mutex<Vec<Seen>>>,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    accepters: Vec<thread::JoinHandle<()>>,
}

impl Impostor {
    fn start(addresses: &[String]) -> Impostor {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(AtomicU8::new(ALTERNATE));
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let mut accepters = Vec::new();
        for address in addresses {
            let listener = bind_retrying(address);
            listener.set_nonblocking(true).unwrap();
            let (seen, mode, stop, count) =
                (seen.clone(), mode.clone(), stop.clone(), count.clone());
            accepters.push(thread::spawn(move || {
                let port = listener.local_addr().unwrap().port();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            let n = count.fetch_add(1, Ordering::SeqCst);
                            let trickle = match mode.load(Ordering::SeqCst) {
                                TRICKLE => true,
                                FAST => false,
                                _ => n % 2 == 0,
                            };
                            serve(stream, port, trickle, seen.clone(), stop.clone());
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
        }
        Impostor {
            seen,
            mode,
            stop,
            accepters,
        }
    }

    fn set_mode(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many connections so far (see `seen_since`): entries are never
    /// removed, their readers still write into them.
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn seen_since(&self, from: usize) -> Vec<Seen> {
        self.seen.lock().unwrap()[from..].to_vec()
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for a in self.accepters.drain(..) {
            a.join().unwrap();
        }
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A listener on `address`, retried for a while: the real daemon that held
/// it may still be closing.
fn bind_retrying(address: &str) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(address) {
            Ok(l) => return l,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot bind {address}: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Answer one connection like a server without the key; record what the
/// client sends and when it hangs up.
fn serve(
    stream: TcpStream,
    port: u16,
    trickle: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
) {
    let index = {
        let mut seen = seen.lock().unwrap();
        seen.push(Seen {
            port,
            opened: Instant::now(),
            closed: None,
            received: Vec::new(),
            trickled: trickle,
        });
        seen.len() - 1
    };
    let mut reader = stream.try_clone().unwrap();
    let reader_seen = seen.clone();
    thread::spawn(move || {
        reader
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => reader_seen.lock().unwrap()[index]
                    .received
                    .extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if started.elapsed() > Duration::from_secs(30) {
                        return;
                    }
                }
                // A reset: the client closed with our bytes unread.
                Err(_) => break,
            }
        }
        reader_seen.lock().unwrap()[index].closed = Some(Instant::now());
    });
    // A made-up Noise answer: right length, no key behind it.
    let mut answer = Vec::new();
    write_frame(&mut answer, &[&[0x5a; auth::NOISE_MSG_LEN]]).unwrap();
    let proof: Vec<u8> = Vec::new();
    thread::spawn(move || {
        let mut stream = stream;
        if trickle {
            answer.extend_from_slice(&proof);
            for b in answer {
                if stop.load(Ordering::SeqCst) || stream.write_all(&[b]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(150));
            }
        } else {
            let _ = stream.write_all(&answer);
            // Give a client time to send its proof (and, if it does not
            // wait for ours, its request).
            thread::sleep(Duration::from_millis(50));
            let _ = stream.write_all(&proof);
        }
        // Hold the connection until the client hangs up (or 30 s).
        let started = Instant::now();
        while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(30) {
            thread::sleep(Duration::from_millis(100));
        }
    });
}

/// The frames in `bytes` (4-byte big-endian length, body); an incomplete
/// tail is returned as a last "frame" as it is.
fn frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 4 {
            out.push(rest.to_vec());
            break;
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let end = (4 + len).min(rest.len());
        out.push(rest[4..end].to_vec());
        rest = &rest[end..];
    }
    out
}

/// Every connection opened before `judged_before` ended within `BOUND`,
/// and carried nothing but a hello and a proof; returns how many there
/// were.
fn judge(what: &str, seen: &[Seen], judged_before: Instant) -> usize {
    let mut judged = 0;
    for (i, s) in seen.iter().enumerate() {
        let frames = frames(&s.received);
        assert!(
            frames.len() <= 1,
            "{what}: connection {i} to port {} ({}) received {} frame(s), {} bytes: request content went to a server that never proved the key",
            s.port,
            if s.trickled { "trickled" } else { "fast" },
            frames.len(),
            s.received.len()
        );
        if let Some(hello) = frames.first() {
            assert!(
                hello.starts_with(b"PH\x02")
                    && hello.len() <= 5 + 64 + auth::NOISE_MSG_LEN
                    && pihealth::protocol::auth::decode_hello(hello).is_ok(),
                "{what}: connection {i}: first frame is not a hello: {hello:?}"
            );
        }
        if s.opened > judged_before {
            continue;
        }
        let took = s
            .closed
            .unwrap_or_else(Instant::now)
            .duration_since(s.opened);
        assert!(
            took <= BOUND,
            "{what}: connection {i} to port {} ({}) lasted {took:?}{}; the bound is {BOUND:?}",
            s.port,
            if s.trickled { "trickled" } else { "fast" },
            if s.closed.is_none() {
                " and is still open"
            } else {
                ""
            }
        );
        judged += 1;
    }
    judged
}

fn longest(seen: &[Seen]) -> Duration {
    seen.iter()
        .filter_map(|s| s.closed.map(|c| c.duration_since(s.opened)))
        .max()
        .unwrap_or_default()
}

/// The master's side: pulls and probes by the daemon, a one-shot `pihealth
/// pull`, and a fetch over the data port, all against the impostor.
#[test]
fn master_connections_to_an_impostor_end_by_their_deadline_and_carry_no_request() {
    let block = 171;
    let c = Cluster::new(block);
    // Agent 0's address is the impostor's control port; agent 1 is real,
    // but its data port is elsewhere (data_listen on .4) and the impostor
    // waits on its control address's data port.
    let impostor = Impostor::start(&[
        format!("{}:8000", agent_ip(block, 0)),
        format!("{}:8001", agent_ip(block, 1)),
    ]);
    let master_cfg = c.master_config(2, "connect_timeout: 1s\nio_timeout: 1s\n");
    let agent_cfg = c.agent_config(
        1,
        &counter_collector(&c, "200ms"),
        &format!("data_listen: {}:8001\n", agent_ip(block, 2)),
    );
    let _agent = c.start("agent", &agent_cfg, "agent");

    // The daemon: pulls and probes every 500 ms.
    let mut master = c.start("master", &master_cfg, "master");
    thread::sleep(Duration::from_secs(6));
    let judged_before = Instant::now() - BOUND;
    let seen = impostor.seen();
    master.kill9();
    let control: Vec<Seen> = seen.iter().filter(|s| s.port == 8000).cloned().collect();
    let data: Vec<Seen> = seen.iter().filter(|s| s.port == 8001).cloned().collect();
    let n_control = judge("daemon pulls and probes", &control, judged_before);
    let n_data = judge("daemon fetches", &data, judged_before);
    assert!(
        n_control >= 2,
        "the daemon tried the impostor {n_control} time(s) in 6 s"
    );
    assert!(n_data >= 1, "no fetch reached the impostor's data port");
    eprintln!(
        "daemon: {n_control} control and {n_data} data connection(s) to the impostor, longest {:?}",
        longest(&seen)
    );

    // One-shot pulls, once with every answer trickled, once fast.
    for mode in [TRICKLE, FAST] {
        let from = impostor.count();
        impostor.set_mode(mode);
        let started = Instant::now();
        let out = c.run(&["pull", "-c", "master.yaml"]);
        let took = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(
            stdout.contains(&format!("{}:8000 FAILED", agent_ip(block, 0))),
            "{stdout}"
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&format!("{}:8000 FAILED", agent_ip(block, 1)))),
            "the fetch from the impostor's data port must fail: {stdout}"
        );
        // Both agents are pulled in parallel: one handshake deadline, one
        // fetch handshake deadline after a real ListPending.
        assert!(
            took < BOUND + Duration::from_secs(1),
            "pihealth pull took {took:?} ({stdout})"
        );
        let seen = impostor.seen_since(from);
        judge("pihealth pull", &seen, Instant::now());
        assert!(seen.iter().any(|s| s.port == 8000) && seen.iter().any(|s| s.port == 8001));
        eprintln!(
            "pihealth pull ({}): {took:?}",
            if mode == TRICKLE { "trickled" } else { "fast" }
        );
    }
    impostor.stop();
}

/// The agent's side: registration, heartbeats and alarms to an impostor
/// at the master's addresses. Registration first (the impostor is there
/// from the start), then heartbeats (a real master came and went).
#[test]
fn agent_connections_to_an_impostor_end_by_their_deadline_and_carry_no_request() {
    let block = 172;
    let c = Cluster::new(block);
    let master_addrs = [
        format!("{}:8080", master_ip(block)),
        format!("{}:8081", master_ip(block)),
    ];
    let flag = c.path("problem");
    let script = c.write(
        "flag.sh",
        &format!(
            "#!/bin/sh\nif [ -e {} ]; then echo \"1 warning\"; else echo \"0 normal\"; fi\n",
            flag.display()
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent_cfg = c.agent_config(
        0,
        &format!(
            "  - {{name: flag, command: {}, interval: 200ms}}\n",
            script.display()
        ),
        "connect_timeout: 1s\nio_timeout: 1s\nrealarm_interval: 1h\n",
    );
    let master_cfg = c.master_config(0, "");

    // Registration and an alarm, to the impostor.
    let impostor = Impostor::start(&master_addrs);
    std::fs::write(&flag, "").unwrap();
    let _agent = c.start("agent", &agent_cfg, "agent");
    thread::sleep(Duration::from_secs(6));
    let judged_before = Instant::now() - BOUND;
    let seen = impostor.seen();
    let register: Vec<Seen> = seen.iter().filter(|s| s.port == 8080).cloned().collect();
    let alarms: Vec<Seen> = seen.iter().filter(|s| s.port == 8081).cloned().collect();
    let n_register = judge("registration", &register, judged_before);
    let n_alarm = judge("alarm delivery", &alarms, judged_before);
    assert!(n_register >= 1, "{n_register} registration attempt(s)");
    assert!(n_alarm >= 1, "{n_alarm} alarm delivery attempt(s)");
    eprintln!(
        "agent before registering: {n_register} registration and {n_alarm} alarm connection(s), longest {:?}",
        longest(&seen)
    );
    impostor.stop();

    // A real master: the agent registers and delivers the alarm.
    let mut master = c.start("master", &master_cfg, "master");
    let alarms_log = c.path("master/log/.master/alarms.log");
    wait_for("the spooled alarm on the real master", || {
        std::fs::read_to_string(&alarms_log).is_ok_and(|t| t.contains(" flag warning "))
    });
    master.kill9();

    // Heartbeats (and a new alarm) to the impostor.
    let impostor = Impostor::start(&master_addrs);
    std::fs::remove_file(&flag).unwrap();
    thread::sleep(Duration::from_secs(6));
    let judged_before = Instant::now() - BOUND;
    let seen = impostor.seen();
    let beats: Vec<Seen> = seen.iter().filter(|s| s.port == 8080).cloned().collect();
    let alarms: Vec<Seen> = seen.iter().filter(|s| s.port == 8081).cloned().collect();
    let n_beats = judge("heartbeats", &beats, judged_before);
    let n_alarm = judge("alarm delivery", &alarms, judged_before);
    assert!(n_beats >= 1, "{n_beats} heartbeat attempt(s)");
    assert!(n_alarm >= 1, "{n_alarm} alarm delivery attempt(s)");
    eprintln!(
        "agent after registering: {n_beats} heartbeat and {n_alarm} alarm connection(s), longest {:?}",
        longest(&seen)
    );
    impostor.stop();
}
