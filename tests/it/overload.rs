//! Overload and slow peers (SPEC §7, issue 4): a thousand idle connections,
//! clients that connect and never speak, and clients trickling a byte a
//! second, from a few addresses other than the master's, must not starve
//! the agent's fixed pool: real pulls and heartbeats keep succeeding.
//!
//! Attackers connect from their own 127.0.24.x addresses (bind before
//! connect), as they would from other machines; the master and agents use
//! the default source address 127.0.0.1.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::util::*;

/// Upper bound on any attack thread's life, whatever happens to the test.
const ATTACK_LIMIT: Duration = Duration::from_secs(90);

/// A connection to `target` from the local address `source`; `None` when the
/// target refuses or does not answer within 2 s.
pub fn connect_from(source: &str, target: &str) -> Option<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    let source: SocketAddr = format!("{source}:0").parse().ok()?;
    let target: SocketAddr = target.parse().ok()?;
    // Every 127/8 address is local: a failed bind is a broken test, not a
    // refused attack, and must not let the attack silently do nothing.
    socket
        .bind(&source.into())
        .unwrap_or_else(|e| panic!("an attacker cannot bind {source}: {e}"));
    socket
        .connect_timeout(&target.into(), Duration::from_secs(2))
        .ok()?;
    Some(socket.into())
}

/// `count` connections from `source` to `target` that never send a byte,
/// held open (and re-opened when the server closes them) until `stop`.
fn idle_flood(
    source: &'static str,
    target: &'static str,
    count: usize,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let started = Instant::now();
        let mut opened = 0;
        let mut held: Vec<TcpStream> = Vec::new();
        while !stop.load(Ordering::SeqCst) && started.elapsed() < ATTACK_LIMIT {
            held.retain(|s| {
                let mut b = [0u8; 1];
                s.set_nonblocking(true).ok();
                // Closed by the server (EOF) or still open (WouldBlock)?
                !matches!(s.peek(&mut b), Ok(0))
            });
            while held.len() < count && started.elapsed() < ATTACK_LIMIT {
                match connect_from(source, target) {
                    Some(s) => {
                        held.push(s);
                        opened += 1;
                    }
                    None => break,
                }
            }
            thread::sleep(Duration::from_millis(200));
        }
        opened
    })
}

/// `count` clients sending a well-formed hello then garbage, one byte a
/// second, reconnecting when cut off.
fn tricklers(
    source: &'static str,
    target: &'static str,
    count: usize,
    stop: Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<()>> {
    let mut bytes = Vec::new();
    let mut hello =
        pihealth::protocol::auth::encode_hello(pihealth::protocol::Purpose::Control, "pi-x");
    hello.extend_from_slice(&[7; pihealth::protocol::auth::NOISE_MSG_LEN]);
    pihealth::protocol::frame::write_frame(&mut bytes, &[&hello]).unwrap();
    (0..count)
        .map(|_| {
            let (bytes, stop) = (bytes.clone(), stop.clone());
            thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < ATTACK_LIMIT {
                    let Some(mut s) = connect_from(source, target) else {
                        thread::sleep(Duration::from_millis(200));
                        continue;
                    };
                    for b in &bytes {
                        if stop.load(Ordering::SeqCst) || s.write_all(&[*b]).is_err() {
                            break;
                        }
                        thread::sleep(Duration::from_secs(1));
                    }
                }
            })
        })
        .collect()
}

#[test]
fn idle_floods_and_tricklers_cannot_starve_pulls_or_heartbeats() {
    let c = Cluster::new(24);
    let master_cfg = c.master_config(1, "");
    let agent_cfg = c.agent_config(0, &counter_collector(&c, "100ms"), "");
    let _master = c.start("master", &master_cfg, "master");
    let _agent = c.start("agent", &agent_cfg, "agent");
    wait_for("first values on the master", || {
        counter_values(&c.archived("pi1", "counter")).len() >= 3
    });

    let stop = Arc::new(AtomicBool::new(false));
    let mut floods = Vec::new();
    // A thousand idle connections at the agent's control and data ports
    // and at the master's registration port, from three addresses.
    for (source, target) in [
        ("127.0.24.100", "127.0.24.2:8000"),
        ("127.0.24.101", "127.0.24.2:8001"),
        ("127.0.24.102", "127.0.24.1:8080"),
    ] {
        floods.push(idle_flood(source, target, 340, stop.clone()));
    }
    let trickle = tricklers("127.0.24.103", "127.0.24.2:8000", 20, stop.clone());

    // Under attack: pulls keep landing new values, heartbeats keep the
    // agent up.
    let before = counter_values(&c.archived("pi1", "counter")).len();
    let attack_start = chrono::Utc::now();
    wait_for("pulls to go on during the attack", || {
        counter_values(&c.archived("pi1", "counter")).len() >= before + 20
    });
    wait_for("a heartbeat accepted during the attack", || {
        let out = c.run(&["status", "-c", "master.yaml", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|v| {
            v["agents"][0]["state"] == "up"
                && v["agents"][0]["last_heartbeat"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t > attack_start + chrono::Duration::seconds(2))
        })
    });
    // A one-shot pull gets through as well.
    let out = c.run(&["pull", "-c", "master.yaml"]);
    assert!(
        out.status.success(),
        "pull under attack: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stop.store(true, Ordering::SeqCst);
    let opened: usize = floods.into_iter().map(|f| f.join().unwrap()).sum();
    for t in trickle {
        t.join().unwrap();
    }
    assert!(opened >= 1000, "the flood opened only {opened} connections");
    let agent_log = std::fs::read_to_string(c.path("agent.stderr")).unwrap();
    assert!(
        agent_log.contains("too many handshakes from this address"),
        "the agent never capped an address"
    );
    let values = counter_values(&c.archived("pi1", "counter"));
    for pair in values.windows(2) {
        assert!(pair[0] < pair[1], "out of order or duplicated: {pair:?}");
    }
}
