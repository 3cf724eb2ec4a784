//! SPEC §7 from the outside, against real processes: garbage, peers
//! without the key, altered and replayed frames, stolen or reused data
//! tokens, hostile host names, and addresses not in `allowed_masters`.
//! Each must learn nothing beyond a random nonce and change nothing.
//!
//! Address blocks: 13 (a master and an agent; its tests take turns through
//! a lock because they share the addresses), 14 (agents alone, one address
//! each, no master), 15 (fake agents written here, and a master).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use pihealth::protocol::auth;
use pihealth::protocol::frame::{read_frame, write_frame, MAX_HANDSHAKE_FRAME};
use pihealth::protocol::message::TOKEN_LEN;
use pihealth::protocol::{
    AgentInfo, Alarm, Connection, Credentials, Key, Message, Offer, PieceKind, PieceRef, Purpose,
};

use crate::util::{agent_ip, counter_collector, master_ip, wait_for, Cluster, Proc};

/// How long a test waits for a server to answer or close. Far beyond the
/// servers' own `io_timeout`, so reaching it means a server hung.
const READ_PATIENCE: Duration = Duration::from_secs(30);

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("a test address")
}

fn connect(to: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(to).unwrap_or_else(|e| panic!("connect to {to}: {e}"));
    stream
        .set_read_timeout(Some(READ_PATIENCE))
        .expect("timeout");
    stream
        .set_write_timeout(Some(READ_PATIENCE))
        .expect("timeout");
    stream
}

fn wait_listening(to: SocketAddr) {
    wait_for(&format!("{to} to listen"), || {
        TcpStream::connect(to).is_ok()
    });
}

fn the_key(cluster: &Cluster) -> Key {
    Key::load(&cluster.path("pihealth.key")).expect("the cluster's key")
}

fn wrong_key() -> Key {
    Key::from_bytes([7; 32])
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Read once: the server must close without sending a single byte. A reset
/// counts as closing only when `reset_ok` (the server closed with bytes of
/// ours unread, which makes the kernel reset instead of closing).
fn assert_closed_silently(stream: &mut TcpStream, what: &str, reset_ok: bool) {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: the server sent {n} byte(s): {:02x?}", &buf[..n]),
        Err(e)
            if reset_ok
                && matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) => {}
        Err(e) => panic!("{what}: expected the server to close silently, got {e}"),
    }
}

/// A `recv` on a wrong-key connection: it must fail because the server
/// closed, not because the server proved a key (that would be PermissionDenied
/// from our side: the server proved the real key, which we do not hold).
fn assert_refused(result: io::Result<Message>, what: &str) {
    match result {
        Ok(m) => panic!("{what}: the server answered {m:?}"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ),
            "{what}: expected the server to close without proving itself, got {e} ({:?})",
            e.kind()
        ),
    }
}

fn alarm(id: &str, host: &str, message: &str) -> Alarm {
    Alarm {
        id: id.into(),
        host: host.into(),
        log_type: "counter".into(),
        level: "warning".into(),
        message: message.into(),
        time: "2026-01-01T00:00:00+00:00".into(),
    }
}

fn register(name: &str, control_ip: &str) -> Message {
    Message::Register {
        name: name.into(),
        control_ip: control_ip.into(),
        control_port: 8000,
        data_port: 8001,
        time_ms: now_ms(),
    }
}

fn heartbeat(name: &str, control_ip: &str) -> Message {
    Message::Heartbeat {
        name: name.into(),
        control_ip: control_ip.into(),
        control_port: 8000,
        time_ms: now_ms(),
        backlog: 0,
    }
}

/// One request over a fresh connection authenticated as `host` (its key
/// derived from the fleet key `key`); its first answer.
fn ask(
    to: SocketAddr,
    key: &Key,
    host: &str,
    purpose: Purpose,
    request: &Message,
) -> io::Result<Message> {
    let mut conn = Connection::client(connect(to), &key.for_host(host), purpose, host)?;
    conn.send(request)?;
    conn.recv()
}

/// The name of the agent a test cluster runs at `ip` (`agent_ip(block, i)`
/// is `pi{i+1}`).
fn host_of(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        panic!("{ip}: not a test address")
    };
    format!("pi{}", v4.octets()[3] - 1)
}

/// A connection to the agent at `to`, as the master makes it: with that
/// agent's key, derived from the fleet key.
fn open(to: SocketAddr, fleet: &Key, purpose: Purpose) -> io::Result<Connection<TcpStream>> {
    let host = host_of(to.ip());
    Connection::client(connect(to), &fleet.for_host(&host), purpose, &host)
}

/// The host names `registry.json` lists (absent file: none).
fn registry_names(cluster: &Cluster) -> Vec<String> {
    let Ok(text) = fs::read_to_string(cluster.path("master/log/.master/registry.json")) else {
        return Vec::new();
    };
    let json: serde_json::Value = serde_json::from_str(&text).expect("registry.json is JSON");
    json["agents"]
        .as_array()
        .map(|agents| {
            agents
                .iter()
                .filter_map(|a| a["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn registry_written_ms(cluster: &Cluster) -> i64 {
    fs::read_to_string(cluster.path("master/log/.master/registry.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["written_ms"].as_i64())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Block 13: a master and an agent.

static BLOCK_13: Mutex<()> = Mutex::new(());

/// A master (127.0.13.1) and agent pi1 (127.0.13.2) with every port listening.
/// Fields drop in order: processes, then their directory, then the turn.
struct MasterAndAgent {
    master: Proc,
    agent: Proc,
    cluster: Cluster,
    _turn: MutexGuard<'static, ()>,
}

impl MasterAndAgent {
    fn start() -> MasterAndAgent {
        let turn = BLOCK_13.lock().unwrap_or_else(|p| p.into_inner());
        let cluster = Cluster::new(13);
        let collectors = counter_collector(&cluster, "100ms");
        let master = cluster.start("master", &cluster.master_config(1, PROTOCOL_ONLY), "master");
        let agent = cluster.start(
            "agent",
            &cluster.agent_config(0, &collectors, ""),
            "agent-pi1",
        );
        let running = MasterAndAgent {
            master,
            agent,
            cluster,
            _turn: turn,
        };
        for (to, _) in running.ports() {
            wait_listening(to);
        }
        running
    }

    fn agent_ip(&self) -> String {
        agent_ip(13, 0)
    }

    /// Every port with the purpose it serves.
    fn ports(&self) -> [(SocketAddr, Purpose); 4] {
        let (a, m) = (self.agent_ip(), master_ip(13));
        [
            (addr(&a, 8000), Purpose::Control),
            (addr(&a, 8001), Purpose::Data),
            (addr(&m, 8080), Purpose::Register),
            (addr(&m, 8081), Purpose::Alarm),
        ]
    }

    /// A right-key peer still gets its proper answer on every port.
    fn assert_all_ports_serve(&self, witness: &str) {
        let key = the_key(&self.cluster);
        let [control, data, registration, alarms] = self.ports();
        match ask(control.0, &key, "pi1", Purpose::Control, &Message::Ping) {
            Ok(Message::Pong(info)) => assert_eq!(info.name, "pi1"),
            other => panic!("control port: expected Pong, got {other:?}"),
        }
        let fetch = Message::Fetch {
            token: [0; TOKEN_LEN],
        };
        match ask(data.0, &key, "pi1", Purpose::Data, &fetch) {
            Ok(Message::Error(_)) => {}
            other => panic!("data port: expected Error for a made-up token, got {other:?}"),
        }
        let beat = heartbeat("pi1", &self.agent_ip());
        match ask(registration.0, &key, "pi1", Purpose::Register, &beat) {
            Ok(Message::Welcome { .. }) => {}
            other => panic!("registration port: expected Welcome, got {other:?}"),
        }
        let good = Message::Alarm(alarm(witness, "pi1", "witness alarm"));
        match ask(alarms.0, &key, "pi1", Purpose::Alarm, &good) {
            Ok(Message::AlarmAck { id }) => assert_eq!(id, witness),
            other => panic!("alarm port: expected AlarmAck, got {other:?}"),
        }
    }

    /// A wrong-key client on every port, with a plausible request each:
    /// the handshake fails because the server closed without answering, so
    /// the request is never even sent.
    fn wrong_key_attempts(&self) {
        let [control, data, registration, alarms] = self.ports();
        let attempts = [
            (control, Message::ListPending),
            (
                control,
                Message::Ack(vec![PieceRef {
                    log_type: "counter".into(),
                    kind: PieceKind::Current,
                    epoch: 1,
                    start: 0,
                    end: 1 << 20,
                }]),
            ),
            (
                data,
                Message::Fetch {
                    token: [0x42; TOKEN_LEN],
                },
            ),
            (registration, register("intruder", "127.0.13.200")),
            (registration, heartbeat("intruder", "127.0.13.200")),
            (
                alarms,
                Message::Alarm(alarm("intruder0001", "intruder", "intruder alarm")),
            ),
        ];
        for ((to, purpose), request) in attempts {
            let what = format!("wrong key, {purpose:?} port {to}, {}", request.kind());
            for host in ["pi1", "intruder"] {
                let refused = Connection::client(connect(to), &wrong_key(), purpose, host)
                    .and_then(|mut conn| {
                        conn.send(&request)?;
                        conn.recv()
                    });
                assert_refused(refused, &format!("{what} as {host}"));
            }
        }
    }
}

/// Random bytes of any length (the library's nonce source, in pieces).
fn noise(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        out.extend_from_slice(&pihealth::random::random_bytes::<1024>().expect("randomness"));
    }
    out.truncate(len);
    out
}

#[test]
fn garbage_gets_nothing_on_any_port() {
    let running = MasterAndAgent::start();
    let garbages: [(&str, Vec<u8>); 4] = [
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: pi\r\n\r\n".to_vec(),
        ),
        ("64 KiB of random bytes", noise(64 * 1024)),
        ("a length of 0xFFFFFFFF", u32::MAX.to_be_bytes().to_vec()),
        (
            "a length of 0xFFFFFFFF and 1 KiB",
            [&u32::MAX.to_be_bytes()[..], &noise(1024)].concat(),
        ),
    ];
    for (to, purpose) in running.ports() {
        for (name, garbage) in &garbages {
            let mut stream = connect(to);
            // The server may close before taking it all; that is its right.
            let _ = stream.write_all(garbage);
            assert_closed_silently(&mut stream, &format!("{name} to {purpose:?} {to}"), true);
        }
        // Half a frame, then silence from us: the server must not answer either.
        let mut stream = connect(to);
        stream.write_all(&[0, 0]).expect("send");
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        assert_closed_silently(&mut stream, &format!("half a length to {to}"), false);
    }
    // Nobody was hurt: every port still serves a peer with the key.
    running.assert_all_ports_serve("garbagewitness");
}

#[test]
fn wrong_key_learns_nothing_beyond_a_nonce() {
    let running = MasterAndAgent::start();
    running.wrong_key_attempts();

    for (to, purpose) in running.ports() {
        // Protocol 2: a hello with a made-up Noise message gets not a byte.
        let what = format!("raw wrong-key handshake on {purpose:?} {to}");
        let mut stream = connect(to);
        let mut first = auth::encode_hello(purpose, "pi1");
        first.extend_from_slice(
            &pihealth::random::random_bytes::<{ auth::NOISE_MSG_LEN }>().expect("rand"),
        );
        write_frame(&mut stream, &[&first]).expect("send hello");
        // The server read all we sent, so it closes cleanly: no answer.
        assert_closed_silently(&mut stream, &what, false);
    }

    // A hello for another port gets not even a nonce, even with the right key.
    let key = the_key(&running.cluster);
    let purposes = running.ports().map(|(_, p)| p);
    for (to, purpose) in running.ports() {
        for other in purposes.iter().filter(|p| **p != purpose) {
            let what = format!("{other:?} hello on the {purpose:?} port {to}");
            let (first, _) =
                auth::client_start(*other, "pi1", &key.for_host("pi1"), None).expect("hello");
            let mut stream = connect(to);
            write_frame(&mut stream, &[&first]).expect("send");
            assert_closed_silently(&mut stream, &what, false);
            let refused = Connection::client(connect(to), &key.for_host("pi1"), *other, "pi1")
                .and_then(|mut conn| {
                    conn.send(&Message::Ping)?;
                    conn.recv()
                });
            assert_refused(refused, &what);
        }
    }

    // The receiving side logs a clear error for each failed peer.
    wait_for("the agent to log the wrong key", || {
        running
            .agent
            .stderr()
            .contains("authentication failed: wrong key")
    });
    wait_for("the master to log the wrong key", || {
        let log = running.master.stderr();
        log.contains("registration connection from")
            && log.contains("alarm connection from")
            && log.contains("authentication failed: wrong key")
    });
}

#[test]
fn wrong_key_changes_nothing_on_the_master() {
    let running = MasterAndAgent::start();
    running.wrong_key_attempts();

    // Witnesses through the front door: once they are on disk, anything the
    // intruder had managed to do before them would be there too.
    let key = the_key(&running.cluster);
    let [_, _, registration, alarms] = running.ports();
    match ask(
        registration.0,
        &key,
        "witness",
        Purpose::Register,
        &register("witness", "127.0.13.250"),
    ) {
        Ok(Message::Welcome { .. }) => {}
        other => panic!("witness registration: expected Welcome, got {other:?}"),
    }
    let witness = Message::Alarm(alarm("witness0001", "pi1", "witness alarm"));
    match ask(alarms.0, &key, "pi1", Purpose::Alarm, &witness) {
        Ok(Message::AlarmAck { id }) => assert_eq!(id, "witness0001"),
        other => panic!("witness alarm: expected AlarmAck, got {other:?}"),
    }
    let cluster = &running.cluster;
    wait_for("registry.json to list the witness", || {
        registry_names(cluster).contains(&"witness".to_string())
    });
    let names = registry_names(cluster);
    assert!(
        !names.iter().any(|n| n.contains("intruder")),
        "registry lists the intruder: {names:?}"
    );
    let alarms_log =
        fs::read_to_string(cluster.path("master/log/.master/alarms.log")).unwrap_or_default();
    assert!(alarms_log.contains("witness0001"), "{alarms_log}");
    assert!(!alarms_log.contains("intruder"), "{alarms_log}");
    let events =
        fs::read_to_string(cluster.path("master/log/.master/events.log")).unwrap_or_default();
    assert!(!events.contains("intruder"), "{events}");
}

#[test]
fn hostile_registration_names_are_refused() {
    let running = MasterAndAgent::start();
    let key = the_key(&running.cluster);
    let [_, _, registration, _] = running.ports();
    let long = "a".repeat(300);
    let short_bad = ["../x", "../../etc", "a/b", "x\0y", ".hidden", "..", ""];
    for name in short_bad {
        for request in [
            register(name, "127.0.13.201"),
            heartbeat(name, "127.0.13.201"),
        ] {
            // As that host: the master derives no key for such a name, so
            // the handshake itself is refused.
            let refused = ask(registration.0, &key, name, Purpose::Register, &request);
            assert_refused(refused, &format!("{} as {name:?}", request.kind()));
            // As a real host naming another in the message: refused too.
            match ask(registration.0, &key, "pi1", Purpose::Register, &request) {
                Ok(Message::Error(why)) => assert!(why.contains("authenticated as"), "{why}"),
                other => panic!(
                    "{} for {name:?} as pi1: expected Error, got {other:?}",
                    request.kind()
                ),
            }
        }
    }
    // Longer than any name on the wire: refused while decoding, before any reply.
    match ask(
        registration.0,
        &key,
        "pi1",
        Purpose::Register,
        &register(&long, ""),
    ) {
        Ok(Message::Error(_)) | Err(_) => {}
        Ok(other) => panic!("300-character name: expected a refusal, got {other:?}"),
    }
    match ask(
        registration.0,
        &key,
        "witness",
        Purpose::Register,
        &register("witness", "127.0.13.250"),
    ) {
        Ok(Message::Welcome { .. }) => {}
        other => panic!("witness registration: expected Welcome, got {other:?}"),
    }
    let cluster = &running.cluster;
    wait_for("registry.json to list the witness", || {
        registry_names(cluster).contains(&"witness".to_string())
    });
    let names = registry_names(cluster);
    for bad in short_bad.iter().copied().chain([long.as_str()]) {
        assert!(
            !names.iter().any(|n| n == bad),
            "{bad:?} registered: {names:?}"
        );
    }
    assert_no_dotdot_under(&cluster.path("master"));
}

/// No file or directory below `root` has `..` in its name.
fn assert_no_dotdot_under(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(!name.contains(".."), "{} exists", entry.path().display());
            if entry.path().is_dir() {
                stack.push(entry.path());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Block 14: agents alone, each on its own address, no master.

/// Like `Cluster::agent_config`, but with an `io_timeout` (and so a token
/// lifetime) far beyond anything a slow machine could take between a
/// `ListPending` and its `Fetch`.
/// These tests open many connections from one address, some left idle on
/// purpose; they test the protocol's refusals, so the per-address cap on
/// handshakes (tested in overload.rs) is lifted out of their way.
const PROTOCOL_ONLY: &str = "max_handshakes_per_address: 1000\n";

fn patient_agent_config(cluster: &Cluster, i: usize, extra: &str) -> PathBuf {
    let (mip, ip, n) = (master_ip(cluster.block), agent_ip(cluster.block, i), i + 1);
    let text = format!(
        "name: pi{n}\nmaster: {mip}:8080\ncontrol_listen: {ip}:8000\ndata_listen: {ip}:8001\n\
         key_file: pihealth.key\nlog_dir: agents/pi{n}/log\nbackup_dir: agents/pi{n}/logbackup\n\
         heartbeat_interval: 500ms\nconnect_timeout: 1s\nio_timeout: 60s\n\
         max_handshakes_per_address: 1000\n{extra}collectors:\n{}",
        counter_collector(cluster, "100ms")
    );
    cluster.write(&format!("agent-pi{n}.yaml"), &text)
}

fn start_agent(cluster: &Cluster, i: usize, extra: &str) -> Proc {
    let config = patient_agent_config(cluster, i, extra);
    let agent = cluster.start("agent", &config, &format!("agent-pi{}", i + 1));
    let ip = agent_ip(cluster.block, i);
    wait_listening(addr(&ip, 8000));
    wait_listening(addr(&ip, 8001));
    agent
}

/// Ask for the pending pieces on `conn`.
fn list_pending(conn: &mut Connection<TcpStream>) -> io::Result<(AgentInfo, Vec<Offer>)> {
    conn.send(&Message::ListPending)?;
    match conn.recv()? {
        Message::Pending { info, offers, .. } => Ok((info, offers)),
        other => Err(io::Error::other(format!(
            "expected Pending, got {}",
            other.kind()
        ))),
    }
}

fn counter_offer(offers: Vec<Offer>) -> Option<Offer> {
    offers.into_iter().find(|o| {
        o.piece.log_type == "counter"
            && o.piece.kind == PieceKind::Current
            && o.piece.end > o.piece.start
    })
}

/// The counter log's current piece the agent at `ip` offers now, if any,
/// over a connection of its own.
fn pending_counter(key: &Key, ip: &str) -> io::Result<Option<Offer>> {
    let mut conn = open(addr(ip, 8000), key, Purpose::Control)?;
    let (_, offers) = list_pending(&mut conn)?;
    let _ = conn.send(&Message::Bye);
    Ok(counter_offer(offers))
}

fn wait_for_counter_piece(key: &Key, ip: &str) -> Offer {
    let mut found = None;
    wait_for(&format!("{ip} to offer counter data"), || {
        found = pending_counter(key, ip).ok().flatten();
        found.is_some()
    });
    found.expect("found above")
}

#[test]
fn wrong_key_ack_releases_nothing() {
    let cluster = Cluster::new(14);
    let (key, ip) = (the_key(&cluster), agent_ip(14, 0));
    let _agent = start_agent(&cluster, 0, "");
    let log_path = cluster.path("agents/pi1/log/counter.log");
    let offered = wait_for_counter_piece(&key, &ip);
    let piece = offered.piece.clone();
    let before = fs::read(&log_path).expect("the agent's counter log");

    // Through the library client…
    let refused = Connection::client(
        connect(addr(&ip, 8000)),
        &wrong_key(),
        Purpose::Control,
        "pi1",
    )
    .and_then(|mut conn| {
        conn.send(&Message::Ack(vec![piece.clone()]))?;
        conn.recv()
    });
    assert_refused(refused, "wrong-key Ack");
    // …and by hand: a made-up Noise message, then an Ack frame behind it.
    let mut stream = connect(addr(&ip, 8000));
    let (first, _) =
        auth::client_start(Purpose::Control, "pi1", &wrong_key(), None).expect("hello");
    let payload = Message::Ack(vec![piece.clone()]).encode();
    let mut wire = Vec::new();
    write_frame(&mut wire, &[&first]).expect("frame");
    write_frame(&mut wire, &[&payload, &[0][..], &[0x42; 16][..]]).expect("frame");
    let _ = stream.write_all(&wire);
    assert_closed_silently(&mut stream, "raw wrong-key Ack", true);

    // The piece is still offered from where it was, and still on disk.
    let again = pending_counter(&key, &ip)
        .expect("right-key ListPending")
        .expect("the counter piece is still pending");
    assert_eq!(again.piece.epoch, piece.epoch, "stream restarted");
    assert_eq!(
        again.piece.start, piece.start,
        "released by a wrong-key Ack"
    );
    assert!(again.piece.end >= piece.end);
    let after = fs::read(&log_path).expect("the agent's counter log");
    assert!(
        after.starts_with(&before),
        "the agent's log lost data: {} bytes before, {} after",
        before.len(),
        after.len()
    );

    // The same Ack with the key does release it: the check above can fail.
    let mut conn = open(addr(&ip, 8000), &key, Purpose::Control).expect("right-key handshake");
    conn.send(&Message::Ack(vec![piece.clone()])).expect("send");
    assert_eq!(conn.recv().expect("answer"), Message::AckOk);
    let _ = conn.send(&Message::Bye);
    if let Some(later) = pending_counter(&key, &ip).expect("right-key ListPending") {
        assert!(
            later.piece.start >= piece.end,
            "a right-key Ack did not release {}..{}: now offered from {}",
            piece.start,
            piece.end,
            later.piece.start
        );
    }
}

/// What a data connection gave for one `Fetch`.
#[derive(Debug)]
enum Fetched {
    Piece(Vec<u8>),
    Refused(String),
}

/// Fetch `token` on a fresh data connection; after `Error` the connection
/// must be closed by the agent, after `End` it takes the next `Fetch`.
fn fetch(key: &Key, ip: &str, token: [u8; TOKEN_LEN]) -> Fetched {
    let mut conn = open(addr(ip, 8001), key, Purpose::Data).expect("right-key data handshake");
    conn.send(&Message::Fetch { token }).expect("send Fetch");
    let mut data = Vec::new();
    let fetched = loop {
        match conn.recv().expect("an answer to Fetch") {
            Message::Chunk(bytes) => data.extend_from_slice(&bytes),
            Message::End { len } => {
                assert_eq!(len, data.len() as u64, "End disagrees with the chunks");
                break Fetched::Piece(data);
            }
            Message::Error(why) => {
                assert!(data.is_empty(), "Error after {} bytes of data", data.len());
                break Fetched::Refused(why);
            }
            other => panic!("unexpected {other:?} on the data port"),
        }
    };
    // The same token again on the same connection: refused (used, or
    // unknown), and the connection closed.
    let _ = conn.send(&Message::Fetch { token });
    match conn.recv() {
        Ok(Message::Error(_)) => assert!(conn.recv().is_err(), "open after an Error"),
        Err(_) => {}
        Ok(other) => panic!("a data connection served a token twice: {other:?}"),
    }
    fetched
}

#[test]
fn data_tokens_are_one_time_and_bound() {
    let cluster = Cluster::new(14);
    let (key, ip) = (the_key(&cluster), agent_ip(14, 1));
    let _agent = start_agent(&cluster, 1, "");
    wait_for_counter_piece(&key, &ip);

    // The control connection stays open: its tokens live as long as it does.
    let mut control =
        open(addr(&ip, 8000), &key, Purpose::Control).expect("right-key control handshake");
    let (_, offers) = list_pending(&mut control).expect("ListPending");
    let offer = counter_offer(offers).expect("the counter piece");
    assert_eq!(offer.piece.start, 0, "nothing acknowledged yet");

    let made_up = pihealth::random::random_bytes::<TOKEN_LEN>().expect("randomness");
    match fetch(&key, &ip, made_up) {
        Fetched::Refused(_) => {}
        Fetched::Piece(d) => panic!("a made-up token fetched {} bytes", d.len()),
    }

    // The real token: exactly the piece offered, the bytes of the agent's log.
    let data = match fetch(&key, &ip, offer.token) {
        Fetched::Piece(d) => d,
        Fetched::Refused(why) => panic!("the offered token was refused: {why}"),
    };
    assert_eq!(data.len() as u64, offer.size);
    assert_eq!(data.len() as u64, offer.piece.end - offer.piece.start);
    let log = fs::read(cluster.path("agents/pi2/log/counter.log")).expect("counter log");
    assert!(
        log.starts_with(&data),
        "fetched bytes are not the agent's log"
    );

    // Used once, gone.
    match fetch(&key, &ip, offer.token) {
        Fetched::Refused(_) => {}
        Fetched::Piece(d) => panic!("a used token fetched {} bytes again", d.len()),
    }

    // A token dies with the control connection that asked for it. The agent
    // forgets the tokens before it closes, so once we read its close, the
    // token must be gone.
    let mut short =
        open(addr(&ip, 8000), &key, Purpose::Control).expect("right-key control handshake");
    let (_, offers) = list_pending(&mut short).expect("ListPending");
    let orphan = counter_offer(offers).expect("the counter piece");
    short.send(&Message::Bye).expect("send Bye");
    assert!(short.recv().is_err(), "the agent answered Bye");
    match fetch(&key, &ip, orphan.token) {
        Fetched::Refused(_) => {}
        Fetched::Piece(d) => panic!("a closed connection's token fetched {} bytes", d.len()),
    }

    // The still-open control connection goes on working.
    let (_, offers) = list_pending(&mut control).expect("ListPending again");
    let fresh = counter_offer(offers).expect("the counter piece");
    assert!(matches!(fetch(&key, &ip, fresh.token), Fetched::Piece(_)));
    let _ = control.send(&Message::Bye);
}

/// A right-key handshake done by hand, to send frames the library would not.
struct RawSession {
    stream: TcpStream,
    noise: snow::TransportState,
}

impl RawSession {
    fn open(to: SocketAddr, key: &Key, purpose: Purpose) -> RawSession {
        let host = host_of(to.ip());
        let mut stream = connect(to);
        let (first, hs) =
            auth::client_start(purpose, &host, &key.for_host(&host), None).expect("hello");
        write_frame(&mut stream, &[&first]).expect("hello");
        let answer = read_frame(&mut stream, MAX_HANDSHAKE_FRAME).expect("server answer");
        let noise = auth::client_finish(hs, &answer).expect("server proved the key");
        RawSession { stream, noise }
    }

    /// A correctly sealed frame for `message`, as bytes on the wire.
    fn seal(&mut self, message: &Message) -> Vec<u8> {
        let mut plain = message.encode();
        plain.push(0);
        let mut sealed = vec![0u8; plain.len() + 16];
        let n = self.noise.write_message(&plain, &mut sealed).expect("seal");
        let mut wire = Vec::new();
        write_frame(&mut wire, &[&sealed[..n]]).expect("frame");
        wire
    }

    fn answer(&mut self) -> Message {
        let body = read_frame(&mut self.stream, 65_535).expect("a frame");
        let mut plain = vec![0u8; body.len()];
        let n = self
            .noise
            .read_message(&body, &mut plain)
            .expect("a good tag");
        assert_eq!(plain[n - 1], 0, "one fragment");
        Message::decode(&plain[..n - 1]).expect("a message")
    }
}

#[test]
fn altered_replayed_or_malformed_frames_get_nothing() {
    let cluster = Cluster::new(14);
    let (key, ip) = (the_key(&cluster), agent_ip(14, 2));
    let _agent = start_agent(&cluster, 2, "");
    let control = addr(&ip, 8000);

    // The raw client is right: a well-sealed Ping gets a Pong, twice.
    let mut first = RawSession::open(control, &key, Purpose::Control);
    let ping0 = first.seal(&Message::Ping);
    first.stream.write_all(&ping0).expect("send");
    assert!(matches!(first.answer(), Message::Pong(_)));
    let ping1 = first.seal(&Message::Ping);
    first.stream.write_all(&ping1).expect("send");
    assert!(matches!(first.answer(), Message::Pong(_)));

    // Replayed within the connection (sequence number 0 again).
    first.stream.write_all(&ping0).expect("send");
    assert_closed_silently(&mut first.stream, "a replayed frame", false);

    // Replayed onto another connection.
    let mut other = RawSession::open(control, &key, Purpose::Control);
    other.stream.write_all(&ping0).expect("send");
    assert_closed_silently(&mut other.stream, "a frame from another connection", false);

    // Reordered: the second frame sealed sent first.
    let mut session = RawSession::open(control, &key, Purpose::Control);
    let _first_sealed = session.seal(&Message::Ping);
    let second = session.seal(&Message::Ping);
    session.stream.write_all(&second).expect("send");
    assert_closed_silently(&mut session.stream, "a reordered frame", false);

    // Spliced: the front of one sealed frame joined to the back of another
    // of the same length (each valid alone).
    let mut session = RawSession::open(control, &key, Purpose::Control);
    let a = session.seal(&Message::ListPending);
    let b = session.seal(&Message::ListPending);
    assert_eq!(a.len(), b.len());
    let spliced = [&a[..a.len() / 2], &b[a.len() / 2..]].concat();
    session.stream.write_all(&spliced).expect("send");
    assert_closed_silently(&mut session.stream, "a spliced frame", false);

    // Altered: one bit of the ciphertext, or one bit of the tag.
    for (what, flip_at) in [("ciphertext", 4), ("tag", 4 + 1 + 1 + 5)] {
        let mut session = RawSession::open(control, &key, Purpose::Control);
        let mut wire = session.seal(&Message::ListPending);
        wire[flip_at] ^= 0x01;
        session.stream.write_all(&wire).expect("send");
        assert_closed_silently(&mut session.stream, &format!("altered {what}"), false);
    }

    // Too short to carry a MAC, and a length beyond any frame.
    let mut session = RawSession::open(control, &key, Purpose::Control);
    write_frame(&mut session.stream, &[&[1u8; 10]]).expect("send");
    assert_closed_silently(&mut session.stream, "a frame shorter than its MAC", false);
    let mut session = RawSession::open(control, &key, Purpose::Control);
    session
        .stream
        .write_all(&u32::MAX.to_be_bytes())
        .expect("send");
    assert_closed_silently(&mut session.stream, "a 4 GiB frame length", false);

    // The server's own answer sent back to it (reflection).
    let mut session = RawSession::open(control, &key, Purpose::Control);
    let ping = session.seal(&Message::Ping);
    session.stream.write_all(&ping).expect("send");
    let answer = read_frame(&mut session.stream, 65_535).expect("Pong");
    write_frame(&mut session.stream, &[&answer]).expect("send");
    assert_closed_silently(&mut session.stream, "a reflected frame", false);
}

#[test]
fn allowed_masters_refuses_other_addresses() {
    let cluster = Cluster::new(14);
    let (key, ip) = (the_key(&cluster), agent_ip(14, 3));
    let agent = start_agent(&cluster, 3, "allowed_masters: [127.0.0.9]\n");
    for port in [8000, 8001] {
        let to = addr(&ip, port);
        // Not even a nonce: the agent closes before reading a byte.
        let mut stream = connect(to);
        assert_closed_silently(&mut stream, &format!("port {port} from elsewhere"), false);
        let purpose = if port == 8000 {
            Purpose::Control
        } else {
            Purpose::Data
        };
        let request = if port == 8000 {
            Message::Ping
        } else {
            Message::Fetch {
                token: [0; TOKEN_LEN],
            }
        };
        // With the right key too.
        let refused = open(to, &key, purpose).and_then(|mut conn| {
            conn.send(&request)?;
            conn.recv()
        });
        assert_refused(refused, &format!("right key on port {port}"));
    }
    wait_for("the agent to log the refusal", || {
        let log = agent.stderr();
        log.contains("control: 127.0.0.1:") && log.contains("refused: not in allowed_masters")
    });
}

#[test]
fn allowed_masters_admits_listed_addresses() {
    let cluster = Cluster::new(14);
    let (key, ip) = (the_key(&cluster), agent_ip(14, 4));
    // The source address the kernel gives a connection to this block
    // (127.0.0.1 on Linux); std cannot bind a client socket to another.
    let probe = TcpListener::bind((agent_ip(14, 6).as_str(), 0)).expect("probe listener");
    let source: IpAddr = TcpStream::connect(probe.local_addr().expect("address"))
        .expect("probe connect")
        .local_addr()
        .expect("source address")
        .ip();
    drop(probe);
    let extra = format!("allowed_masters: [127.0.0.9, {source}]\n");
    let _agent = start_agent(&cluster, 4, &extra);
    match ask(
        addr(&ip, 8000),
        &key,
        "pi5",
        Purpose::Control,
        &Message::Ping,
    ) {
        Ok(Message::Pong(info)) => assert_eq!(info.name, "pi5"),
        other => panic!("from the allowed {source}: expected Pong, got {other:?}"),
    }
    wait_for_counter_piece(&key, &ip);
    let mut control = open(addr(&ip, 8000), &key, Purpose::Control).expect("handshake");
    let (_, offers) = list_pending(&mut control).expect("ListPending");
    let offer = counter_offer(offers).expect("the counter piece");
    assert!(matches!(fetch(&key, &ip, offer.token), Fetched::Piece(_)));
}

// ---------------------------------------------------------------------------
// Block 15: fake agents holding the key but lying about their name.

const FAKE_LINE: &[u8] = b"2026-01-01T00:00:00+00:00 1 normal\n";
const FAKE_TOKEN: [u8; TOKEN_LEN] = [0x5a; TOKEN_LEN];

/// What a fake agent was asked.
#[derive(Default)]
struct Seen {
    /// Control connections opened, whatever became of them.
    contacts: AtomicUsize,
    /// Hellos that asked our name (the master knows only the address).
    names: AtomicUsize,
    pings: AtomicUsize,
    lists: AtomicUsize,
    acks: AtomicUsize,
    fetches: AtomicUsize,
}

/// An agent written here: right key, one made-up piece of "counter" log,
/// and whatever name the test wants it to claim.
struct FakeAgent {
    stop: Arc<AtomicBool>,
    addrs: Vec<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
    seen: Arc<Seen>,
}

type ConnHandler = Arc<dyn Fn(TcpStream) + Send + Sync>;

impl FakeAgent {
    fn start(ip: &str, name: &str, key: &Key) -> FakeAgent {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let info = AgentInfo {
            name: name.into(),
            time_ms: 0,
            data_port: 8001,
            backlog: FAKE_LINE.len() as u64,
        };
        // The key of the name it claims: as if that host's key was stolen.
        let credentials = Credentials::Host {
            name: name.into(),
            keys: vec![key.for_host(name)],
        };
        let (k, s) = (credentials.clone(), seen.clone());
        let control: ConnHandler = Arc::new(move |stream| fake_control(stream, &k, &info, &s));
        let (k, s) = (credentials, seen.clone());
        let data: ConnHandler = Arc::new(move |stream| fake_data(stream, &k, &s));
        let mut agent = FakeAgent {
            stop,
            addrs: Vec::new(),
            threads: Vec::new(),
            seen,
        };
        for (port, handler) in [(8000, control), (8001, data)] {
            let listener = TcpListener::bind(addr(ip, port))
                .unwrap_or_else(|e| panic!("fake agent on {ip}:{port}: {e}"));
            agent.addrs.push(addr(ip, port));
            let stop = agent.stop.clone();
            agent.threads.push(thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(READ_PATIENCE));
                    let handler = handler.clone();
                    thread::spawn(move || handler(stream));
                }
            }));
        }
        agent
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for to in &self.addrs {
            let _ = TcpStream::connect(to);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn fake_offer() -> Offer {
    Offer {
        piece: PieceRef {
            log_type: "counter".into(),
            kind: PieceKind::Current,
            epoch: 7,
            start: 0,
            end: FAKE_LINE.len() as u64,
        },
        size: FAKE_LINE.len() as u64,
        token: FAKE_TOKEN,
    }
}

fn fake_control(stream: TcpStream, key: &Credentials, info: &AgentInfo, seen: &Seen) {
    seen.contacts.fetch_add(1, Ordering::SeqCst);
    let mut conn = match Connection::server(stream, key, Purpose::Control) {
        Ok(conn) => conn,
        Err(e) => {
            if e.get_ref()
                .is_some_and(|e| e.is::<pihealth::protocol::conn::NameGiven>())
            {
                seen.names.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
    };
    let info = AgentInfo {
        time_ms: now_ms(),
        ..info.clone()
    };
    for _ in 0..64 {
        let answer = match conn.recv() {
            Ok(Message::Ping) => {
                seen.pings.fetch_add(1, Ordering::SeqCst);
                Message::Pong(info.clone())
            }
            Ok(Message::ListPending) => {
                seen.lists.fetch_add(1, Ordering::SeqCst);
                Message::Pending {
                    info: info.clone(),
                    offers: vec![fake_offer()],
                    more: false,
                }
            }
            Ok(Message::Ack(_)) => {
                seen.acks.fetch_add(1, Ordering::SeqCst);
                Message::AckOk
            }
            _ => return,
        };
        if conn.send(&answer).is_err() {
            return;
        }
    }
}

fn fake_data(stream: TcpStream, key: &Credentials, seen: &Seen) {
    let Ok(mut conn) = Connection::server(stream, key, Purpose::Data) else {
        return;
    };
    if let Ok(Message::Fetch { token }) = conn.recv() {
        seen.fetches.fetch_add(1, Ordering::SeqCst);
        if token == FAKE_TOKEN {
            let _ = conn.send(&Message::Chunk(FAKE_LINE.to_vec()));
            let _ = conn.send(&Message::End {
                len: FAKE_LINE.len() as u64,
            });
        } else {
            let _ = conn.send(&Message::Error("unknown token".into()));
        }
    }
}

/// Names of the directories directly under `dir` (none if it is missing).
fn subdirs(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pull_refuses_hostile_host_names() {
    let cluster = Cluster::new(15);
    let key = the_key(&cluster);
    let ip = agent_ip(15, 0);
    cluster.master_config(0, &format!("{PROTOCOL_ONLY}agents:\n  - \"{ip}:8000\"\n"));
    let pull = || cluster.run(&["pull", "-c", "master.yaml"]);

    // The fake is good enough to be archived when its name is fine.
    {
        let fake = FakeAgent::start(&ip, "fake-good", &key);
        let out = pull();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        assert!(
            stdout.contains("fake-good") && stdout.contains(" ok"),
            "{stdout}"
        );
        assert_eq!(
            cluster.archived("fake-good", "counter").as_bytes(),
            FAKE_LINE
        );
        assert_eq!(fake.seen.acks.load(Ordering::SeqCst), 1);
    }

    let escape = cluster.path("escaped");
    let etc_outside = cluster
        .dir
        .path()
        .parent()
        .expect("temp dir has a parent")
        .join("etc");
    let etc_outside_existed = etc_outside.exists();
    let hostile = [
        "../../etc".to_string(),
        "..".to_string(),
        "x/y".to_string(),
        escape.display().to_string(),
        "evil\0name".to_string(),
        ".hidden".to_string(),
        "a".repeat(300),
        // Issue 12: would take the place of an agent's `log/cpu.log` in a
        // directory shared with an agent.
        "cpu.log".to_string(),
    ];
    for name in &hostile {
        let fake = FakeAgent::start(&ip, name, &key);
        let out = pull();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let shown: String = name.chars().take(40).collect();
        assert_eq!(out.status.code(), Some(1), "{shown:?}: {stdout}");
        assert!(stdout.contains("FAILED"), "{shown:?}: {stdout}");
        // Protocol 2: the master asks the name (refused before any key is
        // tried) or dials as the host it knows there (fake-good, whose key
        // the fake lacks): either way the handshake fails, nothing is listed.
        assert!(
            fake.seen.contacts.load(Ordering::SeqCst) >= 1,
            "{shown:?}: never contacted"
        );
        assert_eq!(fake.seen.lists.load(Ordering::SeqCst), 0, "{shown:?}");
        assert_eq!(
            fake.seen.fetches.load(Ordering::SeqCst),
            0,
            "{shown:?}: fetched"
        );
        assert_eq!(fake.seen.acks.load(Ordering::SeqCst), 0, "{shown:?}: acked");
        for (root, own) in [("master/log", Some(".master")), ("master/logbackup", None)] {
            let dirs = subdirs(&cluster.path(root));
            // Besides the host, only the master's own `log/.master/`.
            let mut expected: BTreeSet<String> = ["fake-good".to_string()].into();
            expected.extend(own.map(str::to_string));
            assert_eq!(dirs, expected, "{shown:?}: {root} holds {dirs:?}");
        }
        assert!(!cluster.path("etc").exists(), "{shown:?}: made etc");
        assert_eq!(etc_outside.exists(), etc_outside_existed, "{shown:?}");
        assert!(!escape.exists(), "{shown:?}: made {}", escape.display());
        assert_no_dotdot_under(&cluster.path("master"));
    }
}

#[test]
fn probe_does_not_record_hostile_host_names() {
    let cluster = Cluster::new(15);
    let key = the_key(&cluster);
    let ip = agent_ip(15, 1);
    let name = "../../etc";
    let fake = FakeAgent::start(&ip, name, &key);
    let config = cluster.master_config(0, &format!("{PROTOCOL_ONLY}agents:\n  - \"{ip}:8000\"\n"));
    let _master = cluster.start("master", &config, "master");
    // The second probe starts only after the first one's answer was recorded.
    wait_for("two probes of the fake agent", || {
        fake.seen.names.load(Ordering::SeqCst) >= 2
    });
    assert_eq!(fake.seen.pings.load(Ordering::SeqCst), 0);
    let after = now_ms();
    // Failed pulls mark the registry dirty every cycle, so it is written again.
    wait_for("registry.json to be written again", || {
        registry_written_ms(&cluster) > after
    });
    let names = registry_names(&cluster);
    assert!(
        !names.iter().any(|n| n == name),
        "registry.json lists an agent named {name:?}: {names:?}"
    );
    assert_eq!(fake.seen.fetches.load(Ordering::SeqCst), 0);
    assert!(!cluster.path("etc").exists());
}
