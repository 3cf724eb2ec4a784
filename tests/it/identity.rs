//! Protocol 2 (issue 13), from the outside: per-host keys, and what crosses
//! the wire.
//!
//! - an agent holding its own key cannot list, fetch or acknowledge another
//!   agent's data, raise another host's alarm, or register as or move
//!   another host; the same requests for itself still work (so each check
//!   can fail);
//! - a relay recording every byte between master and agent during pulls,
//!   alarms and registrations finds none of the log lines, alarm texts or
//!   registration contents sent;
//! - a protocol-1 peer is refused with a clear log line on our side, both
//!   as server and as client.
//!
//! - a revoked host is refused and not pulled; the others go on.
//!
//! Address blocks: 150 (per-host keys), 151 (relay), 152 (protocol 1),
//! 153 (revocation).

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use pihealth::protocol::auth;
use pihealth::protocol::frame::write_frame;
use pihealth::protocol::{Alarm, Connection, Key, KeyFile, Message, PieceKind, PieceRef, Purpose};

use crate::util::{agent_ip, counter_collector, master_ip, wait_for, Cluster};

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("a test address")
}

fn connect(to: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(to).unwrap_or_else(|e| panic!("connect to {to}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
}

/// The key in a host key file written by `pihealth keygen --host`.
fn host_key(c: &Cluster, file: &str) -> Key {
    match KeyFile::load(&c.path(file)).expect("a host key file") {
        KeyFile::Host { key, .. } => key,
        KeyFile::Fleet(_) => panic!("{file}: a fleet key"),
    }
}

/// One request as `host` with `key`; the answer, or the refusal.
fn ask(
    to: SocketAddr,
    key: &Key,
    host: &str,
    purpose: Purpose,
    m: &Message,
) -> io::Result<Message> {
    let mut conn = Connection::client(connect(to), key, purpose, host)?;
    conn.send(m)?;
    conn.recv()
}

fn registry_text(c: &Cluster) -> String {
    fs::read_to_string(c.master_own().join("registry.json")).unwrap_or_default()
}

fn alarm(id: &str, host: &str, message: &str) -> Message {
    Message::Alarm(Alarm {
        id: id.into(),
        host: host.into(),
        log_type: "counter".into(),
        level: "warning".into(),
        message: message.into(),
        time: chrono::Local::now().to_rfc3339(),
    })
}

#[test]
fn an_agent_holding_its_own_key_cannot_speak_for_another() {
    let block = 150;
    let c = Cluster::new(block);
    for name in ["pi1", "pi2"] {
        let out = c.run(&[
            "keygen",
            "--host",
            name,
            "--fleet-key",
            "pihealth.key",
            &format!("{name}.key"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mode = fs::metadata(c.path(&format!("{name}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}.key");
    }
    // pi1 and pi2 hold only their own keys; pi3 still holds the fleet key
    // (a fleet upgrading host by host) and works too.
    let collectors = counter_collector(&c, "100ms");
    let master = c.start("master", &c.master_config(3, ""), "master");
    let _pi1 = c.start(
        "agent",
        &c.agent_config(0, &collectors, "key_file: pi1.key\n"),
        "pi1",
    );
    let pi2 = c.start(
        "agent",
        &c.agent_config(1, &collectors, "key_file: pi2.key\n"),
        "pi2",
    );
    let _pi3 = c.start("agent", &c.agent_config(2, &collectors, ""), "pi3");
    for host in ["pi1", "pi2", "pi3"] {
        wait_for(&format!("{host}'s counter archived"), || {
            !c.archived(host, "counter").is_empty()
        });
    }
    wait_for("pi2 registered", || registry_text(&c).contains("\"pi2\""));

    let stolen = host_key(&c, "pi1.key");
    let (pi2_ip, mip) = (agent_ip(block, 1), master_ip(block));
    let (control, data) = (addr(&pi2_ip, 8000), addr(&pi2_ip, 8001));

    // pi1's key at pi2's ports, naming pi2 or itself: refused in the
    // handshake, so nothing is listed, fetched or acknowledged.
    let ack = Message::Ack(vec![PieceRef {
        log_type: "counter".into(),
        kind: PieceKind::Current,
        epoch: 1,
        start: 0,
        end: 1 << 30,
    }]);
    for host in ["pi2", "pi1"] {
        for (to, purpose, m) in [
            (control, Purpose::Control, Message::ListPending),
            (control, Purpose::Control, ack.clone()),
            (data, Purpose::Data, Message::Fetch { token: [0; 16] }),
        ] {
            let result = ask(to, &stolen, host, purpose, &m);
            assert!(result.is_err(), "pi1's key as {host} on {to}: {result:?}");
        }
    }
    assert!(
        pi2.stderr().contains("wrong key for host \"pi2\""),
        "pi2 did not log the wrong key: {}",
        pi2.stderr()
    );

    // At the master, as pi1 (which works), for pi2: refused by name.
    let (register_port, alarm_port) = (addr(&mip, 8080), addr(&mip, 8081));
    let thief_ip = "127.0.150.77";
    for m in [
        Message::Register {
            name: "pi2".into(),
            control_ip: thief_ip.into(),
            control_port: 8000,
            data_port: 8001,
            time_ms: chrono::Utc::now().timestamp_millis(),
        },
        Message::Heartbeat {
            name: "pi2".into(),
            control_ip: thief_ip.into(),
            control_port: 8000,
            time_ms: chrono::Utc::now().timestamp_millis(),
            backlog: 0,
        },
    ] {
        match ask(register_port, &stolen, "pi1", Purpose::Register, &m) {
            Ok(Message::Error(why)) => assert!(why.contains("authenticated as"), "{why}"),
            other => panic!("{} for pi2 as pi1: {other:?}", m.kind()),
        }
        // Naming pi2 in the hello with pi1's key: refused in the handshake.
        assert!(ask(register_port, &stolen, "pi2", Purpose::Register, &m).is_err());
    }
    match ask(
        alarm_port,
        &stolen,
        "pi1",
        Purpose::Alarm,
        &alarm("forged0001", "pi2", "forged alarm text"),
    ) {
        Ok(Message::Error(why)) => assert!(why.contains("authenticated as"), "{why}"),
        other => panic!("pi2's alarm as pi1: {other:?}"),
    }
    assert!(ask(
        alarm_port,
        &stolen,
        "pi2",
        Purpose::Alarm,
        &alarm("forged0002", "pi2", "forged")
    )
    .is_err());

    // Not even for itself may a host key raise or clear a `host` alarm
    // (the master's own down/up type): acknowledged, so a spool moves on,
    // but not stored.
    let mut forged_host = alarm("forgedhost1", "pi1", "forged host normal");
    if let Message::Alarm(a) = &mut forged_host {
        a.log_type = "host".into();
        a.level = "normal".into();
    }
    match ask(alarm_port, &stolen, "pi1", Purpose::Alarm, &forged_host) {
        Ok(Message::AlarmAck { id }) => assert_eq!(id, "forgedhost1"),
        other => panic!("a forged host alarm: {other:?}"),
    }

    // The same requests for pi1 itself go through: the refusals above are
    // about the host, not the key.
    match ask(
        alarm_port,
        &stolen,
        "pi1",
        Purpose::Alarm,
        &alarm("own0001", "pi1", "own alarm text"),
    ) {
        Ok(Message::AlarmAck { id }) => assert_eq!(id, "own0001"),
        other => panic!("pi1's own alarm: {other:?}"),
    }
    let alarms = fs::read_to_string(c.master_own().join("alarms.log")).unwrap_or_default();
    assert!(alarms.contains("own0001"), "{alarms}");
    assert!(!alarms.contains("forged"), "{alarms}");
    thread::sleep(Duration::from_secs(1));
    let registry = registry_text(&c);
    assert!(!registry.contains(thief_ip), "pi2 moved: {registry}");
    // And pi2's data still flows to the master, from pi2.
    let before = c.archived("pi2", "counter").len();
    wait_for("more of pi2's counter archived", || {
        c.archived("pi2", "counter").len() > before
    });
    assert!(
        master.stderr().contains("authenticated as"),
        "{}",
        master.stderr()
    );
}

/// A TCP relay that records every byte it forwards, both ways.
struct Relay {
    stop: Arc<AtomicBool>,
    listen: SocketAddr,
}

impl Relay {
    fn start(listen: SocketAddr, upstream: SocketAddr, recorded: Arc<Mutex<Vec<u8>>>) -> Relay {
        let listener = TcpListener::bind(listen).unwrap_or_else(|e| panic!("relay {listen}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, rec) = (stop.clone(), recorded);
        thread::spawn(move || {
            for client in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let rec = rec.clone();
                    thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    rec.lock().unwrap().extend_from_slice(&buf[..n]);
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Relay { stop, listen }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.listen);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_relay_recording_every_byte_sees_no_log_line_alarm_or_registration() {
    let block = 151;
    let c = Cluster::new(block);
    let (mip, aip) = (master_ip(block), agent_ip(block, 0));
    let relay_ip = format!("127.0.{block}.10");
    // Lines and alarm texts no protocol byte could spell by chance.
    let script = c.write(
        "secret.sh",
        "#!/bin/sh\nf=\"$PIHEALTH_STATE_DIR/n\"\nn=0\n[ -r \"$f\" ] && read -r n < \"$f\"\nn=$((n+1))\n\
         echo $n > \"$f\"\n\
         if [ $((n % 2)) = 1 ]; then echo \"zebraquartzline-$n warning\"; else echo \"zebraquartzline-$n normal\"; fi\n",
    );
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let _relays: Vec<Relay> = [
        (8000, aip.as_str()),
        (8001, aip.as_str()),
        (8080, mip.as_str()),
        (8081, mip.as_str()),
    ]
    .iter()
    .map(|(port, to)| Relay::start(addr(&relay_ip, *port), addr(to, *port), recorded.clone()))
    .collect();
    // The master pulls through the relay; the agent registers, heartbeats
    // and raises alarms through it, and names a control address only the
    // relay knows (so its registration carries it).
    let master_cfg = c.master_config(
        0,
        &format!("agents:\n  - {{name: pi1, address: \"{relay_ip}:8000\"}}\n"),
    );
    let agent_cfg = c.agent_config(
        0,
        &format!(
            "  - {{name: secret, command: {}, interval: 100ms}}\n",
            script.display()
        ),
        &format!("master: {relay_ip}:8080\nmaster_alarm: {relay_ip}:8081\n"),
    );
    let _master = c.start("master", &master_cfg, "master");
    let _agent = c.start("agent", &agent_cfg, "agent");
    wait_for("secret lines archived through the relay", || {
        c.archived("pi1", "secret").lines().count() >= 10
    });
    wait_for("alarms through the relay", || {
        fs::read_to_string(c.master_own().join("alarms.log"))
            .unwrap_or_default()
            .lines()
            .count()
            >= 4
    });
    wait_for("pi1 registered", || registry_text(&c).contains("\"pi1\""));
    let archived = c.archived("pi1", "secret");
    let alarms = fs::read_to_string(c.master_own().join("alarms.log")).unwrap();
    assert!(
        alarms.contains("zebraquartzline-"),
        "alarm texts carry the line: {alarms}"
    );
    let wire = recorded.lock().unwrap().clone();
    assert!(wire.len() > 1000, "the relay saw {} bytes", wire.len());
    // The relay did carry our protocol (hellos are in clear, by design)…
    assert!(contains(&wire, b"PH\x02"), "no protocol-2 hello seen");
    // …and none of what it carried.
    assert!(
        !contains(&wire, b"zebraquartz"),
        "a log line or alarm text crossed in clear"
    );
    for line in archived.lines().take(20) {
        assert!(
            !contains(&wire, line.as_bytes()),
            "line {line:?} crossed in clear"
        );
    }
    assert!(
        !contains(&wire, b"warning"),
        "a level word crossed in clear"
    );
    assert!(!contains(&wire, b"secret"), "the log type crossed in clear");
    // The registration's content: the address the agent says it listens on.
    assert!(
        !contains(&wire, aip.as_bytes()),
        "the registration crossed in clear"
    );
}

#[test]
fn a_protocol_1_peer_is_refused_with_a_clear_log_line_on_our_side() {
    let block = 152;
    let c = Cluster::new(block);
    let (mip, aip) = (master_ip(block), agent_ip(block, 0));
    let master = c.start("master", &c.master_config(0, ""), "master");
    let agent = c.start(
        "agent",
        &c.agent_config(0, &counter_collector(&c, "1s"), ""),
        "agent",
    );
    // A protocol-1 client (its hello: "PH" 1 purpose nonce) at each server.
    for (to, purpose) in [
        (addr(&aip, 8000), Purpose::Control),
        (addr(&mip, 8080), Purpose::Register),
    ] {
        wait_for(&format!("{to} to listen"), || {
            TcpStream::connect(to).is_ok()
        });
        let mut stream = connect(to);
        let mut v1 = vec![b'P', b'H', 1, purpose as u8];
        v1.extend_from_slice(&pihealth::random::random_bytes::<32>().unwrap());
        write_frame(&mut stream, &[&v1]).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{to} answered a protocol-1 hello");
    }
    for (who, p) in [("agent", &agent), ("master", &master)] {
        wait_for(&format!("the {who} to name protocol 1"), || {
            p.stderr().contains("peer speaks pihealth protocol 1")
        });
    }
    // A protocol-1 server (it hangs up on a hello it cannot parse): our
    // client says what may be wrong.
    let old = TcpListener::bind(addr(&agent_ip(block, 5), 8000)).unwrap();
    let old_addr = old.local_addr().unwrap();
    thread::spawn(move || {
        for s in old.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
        }
    });
    c.master_config(
        0,
        &format!("agents:\n  - {{name: old, address: \"{old_addr}\"}}\n"),
    );
    let out = c.run(&["pull", "-c", "master.yaml"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("protocol 1"), "{text}");
}

#[test]
fn a_revoked_host_is_refused_and_not_pulled_while_others_go_on() {
    let block = 153;
    let c = Cluster::new(block);
    let collectors = counter_collector(&c, "100ms");
    let master = c.start(
        "master",
        &c.master_config(2, "revoked_hosts: [pi2]\n"),
        "master",
    );
    let _pi1 = c.start("agent", &c.agent_config(0, &collectors, ""), "pi1");
    let pi2 = c.start("agent", &c.agent_config(1, &collectors, ""), "pi2");
    wait_for("pi1's counter archived", || {
        c.archived("pi1", "counter").lines().count() >= 5
    });
    wait_for("the master to refuse pi2", || {
        master.stderr().contains("host \"pi2\" is revoked")
    });
    wait_for("pi2 to be told", || pi2.stderr().contains("wrong key"));
    // pi2's own key, straight at the alarm port: refused.
    let fleet = Key::load(&c.path("pihealth.key")).unwrap();
    let m = alarm("revoked0001", "pi2", "from a revoked host");
    let to = addr(&master_ip(block), 8081);
    assert!(ask(to, &fleet.for_host("pi2"), "pi2", Purpose::Alarm, &m).is_err());
    assert!(
        c.archived("pi2", "counter").is_empty(),
        "a revoked host was pulled"
    );
    // pi1 goes on.
    let before = c.archived("pi1", "counter").len();
    wait_for("more of pi1 archived", || {
        c.archived("pi1", "counter").len() > before
    });
}

/// Review finding: NNpsk0's first message can be replayed, so completing
/// the handshake proves nothing yet. A replayed first frame must not make
/// the address trusted nor lift the handshake deadline: a replayer that
/// then trickles a frame is cut at the deadline (`io_timeout`, 5 s here),
/// on the master's alarm and registration ports and the agent's control
/// port alike. Before the fix the trickle held a worker indefinitely.
#[test]
fn a_replayed_first_frame_is_not_a_proof() {
    let block = 154;
    let c = Cluster::new(block);
    let master = c.start("master", &c.master_config(1, ""), "master");
    let _agent = c.start(
        "agent",
        &c.agent_config(0, &counter_collector(&c, "200ms"), ""),
        "pi1",
    );
    wait_for("pi1's values on the master", || {
        !c.archived("pi1", "counter").is_empty()
    });
    let key = Key::load(&c.path("pihealth.key")).unwrap().for_host("pi1");
    let (mip, aip) = (master_ip(block), agent_ip(block, 0));
    for (to, purpose) in [
        (addr(&mip, 8081), Purpose::Alarm),
        (addr(&mip, 8080), Purpose::Register),
        (addr(&aip, 8000), Purpose::Control),
    ] {
        // What an eavesdropper recorded: a real client's first frame.
        let (first, _) = auth::client_start(purpose, "pi1", &key, None).unwrap();
        let mut replay = connect(to);
        write_frame(&mut replay, &[&first]).unwrap();
        // The server answers (it cannot tell); then a frame of 200 bytes
        // trickles in, one byte a second.
        let started = std::time::Instant::now();
        replay.write_all(&200u32.to_be_bytes()).unwrap();
        replay
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut closed = false;
        while started.elapsed() < Duration::from_secs(20) {
            if replay.write_all(&[0]).is_err() {
                closed = true;
                break;
            }
            let mut buf = [0u8; 256];
            match replay.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    closed = true;
                    break;
                }
                _ => {}
            }
            thread::sleep(Duration::from_millis(900));
        }
        assert!(
            closed,
            "{purpose:?}: a replayed handshake kept its connection for 20 s"
        );
    }
    drop(master);
}
