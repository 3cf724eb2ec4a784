//! Issue 11 on alarms: `alarm_command` runs on a bounded runner (a burst
//! of 1,000 alarms starts no more processes or threads than configured,
//! and every alarm's command still runs, in order per host and type), and
//! an alarm spooled while the master is down reaches it within a second of
//! its return.

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use pihealth::protocol::{Alarm, Connection, Key, Message, Purpose};

use crate::util::*;

/// Threads (tasks) of process `pid`.
fn threads_of(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Direct children of process `pid` (field 4 of /proc/N/stat, after the
/// parenthesised command name).
fn children_of(pid: i32) -> usize {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            fs::read_to_string(e.path().join("stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|ppid| ppid.parse::<i32>().ok())
                    == Some(pid)
            })
        })
        .count()
}

fn wait_for_port(addr: SocketAddr) -> Instant {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{addr} never listened");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_burst_of_1000_alarms_runs_every_command_on_a_bounded_runner() {
    let block = 173;
    let c = Cluster::new(block);
    let ran = c.path("ran.txt");
    const WORKERS: usize = 4;
    const ALARMS: usize = 1000;
    // Each command takes a while (20 ms), so that unbounded, they pile up.
    let master_cfg = c.master_config(
        0,
        &format!(
            "alarm_command: [\"/bin/sh\", \"-c\", \"echo \\\"$PIHEALTH_HOST $PIHEALTH_TYPE $PIHEALTH_ID\\\" >> {}; sleep 0.02\"]\n\
             alarm_command_workers: {WORKERS}\nalarm_command_queue: {ALARMS}\n",
            ran.display()
        ),
    );
    let mut master = c.start("master", &master_cfg, "master");
    master.env = vec![(
        "RUST_LOG".into(),
        "info,pihealth::master::alarm_command=debug".into(),
    )];
    master.kill9();
    master.restart();
    let alarm_addr: SocketAddr = format!("{}:8081", master_ip(block)).parse().unwrap();
    wait_for_port(alarm_addr);
    let pid = master.pid();
    thread::sleep(Duration::from_millis(300));
    let threads_before = threads_of(pid);

    // First 20 alarms one at a time (a quiet master), for the double-run
    // window of a lone alarm.
    let key = Key::load(&c.path("pihealth.key")).unwrap();
    {
        let mut conn = Connection::dial(
            alarm_addr,
            &[key.for_host("quiet")],
            Purpose::Alarm,
            "quiet",
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .expect("alarm connection");
        for j in 0..20 {
            let alarm = Alarm {
                id: format!("quiet{j}"),
                host: "quiet".into(),
                log_type: "cpu".into(),
                level: "warning".into(),
                message: format!("quiet {j}"),
                time: chrono::Local::now().to_rfc3339(),
            };
            conn.send(&Message::Alarm(alarm)).expect("send an alarm");
            match conn.recv_ok() {
                Ok(Message::AlarmAck { .. }) => {}
                other => panic!("alarm quiet{j}: {other:?}"),
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    let ran_count = || fs::read_to_string(&ran).unwrap_or_default().lines().count();
    wait_for("the quiet alarms' commands", || ran_count() >= 20);
    fs::remove_file(&ran).unwrap();

    // Sample threads and children while the burst lands and runs.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        thread::spawn(move || {
            let (mut threads, mut children) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                threads = threads.max(threads_of(pid));
                children = children.max(children_of(pid));
                thread::sleep(Duration::from_millis(5));
            }
            (threads, children)
        })
    };

    // 1,000 alarms at once: 5 connections (fewer than the master's cap on
    // handshakes per address), 5 hosts x 10 types, each connection one
    // host's alarms in order.
    let started = Instant::now();
    let senders: Vec<_> = (0..5)
        .map(|h| {
            let key = key.clone();
            thread::spawn(move || {
                let host = format!("host{h}");
                let mut conn = Connection::dial(
                    alarm_addr,
                    &[key.for_host(&host)],
                    Purpose::Alarm,
                    &host,
                    Duration::from_secs(5),
                    Duration::from_secs(30),
                )
                .expect("alarm connection");
                for j in 0..ALARMS / 5 {
                    let alarm = Alarm {
                        id: format!("b{h}x{j}"),
                        host: format!("host{h}"),
                        log_type: format!("ty{}", j % 10),
                        level: "warning".into(),
                        message: format!("burst {j}"),
                        time: chrono::Local::now().to_rfc3339(),
                    };
                    conn.send(&Message::Alarm(alarm)).expect("send an alarm");
                    match conn.recv_ok() {
                        Ok(Message::AlarmAck { .. }) => {}
                        other => panic!("alarm b{h}x{j}: {other:?}"),
                    }
                }
                let _ = conn.send(&Message::Bye);
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
    let delivered = started.elapsed();
    wait_for("every alarm_command to run", || ran_count() >= ALARMS);
    let all_ran = started.elapsed();
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let (max_threads, max_children) = sampler.join().unwrap();
    eprintln!(
        "1,000 alarms: delivered in {delivered:?}, all commands run after {all_ran:?}; master threads {threads_before} before, at most {max_threads} during; at most {max_children} alarm_command process(es) at once"
    );
    assert!(
        max_children <= WORKERS,
        "{max_children} alarm_command processes at once; the bound is {WORKERS}"
    );
    assert!(
        max_threads <= threads_before,
        "the master grew from {threads_before} to {max_threads} threads during the burst"
    );

    // Each alarm's command ran once, in order per host and type.
    let text = fs::read_to_string(&ran).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), ALARMS, "commands run");
    let mut per_key: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for line in &lines {
        let f: Vec<&str> = line.split(' ').collect();
        let j: usize = f[2].split_once('x').unwrap().1.parse().unwrap();
        per_key
            .entry((f[0].to_string(), f[1].to_string()))
            .or_default()
            .push(j);
    }
    assert_eq!(per_key.len(), 50);
    for (k, js) in &per_key {
        let mut sorted = js.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(js, &sorted, "{k:?}: commands out of order or repeated");
        assert_eq!(js.len(), ALARMS / 50);
    }
    assert!(
        !master.stderr().contains("skipped for alarm"),
        "a command was skipped with a queue big enough"
    );

    // The double-run window of each command (process start to its durable
    // note), from the runner's debug lines: the figure RELIABILITY.md gives.
    let log = master.stderr();
    for (what, quiet) in [("lone alarms", true), ("the burst", false)] {
        for (until, marker) in [
            (
                "note written",
                "from the process start to the note written (a kill of the master)",
            ),
            ("note durable", "to the note durable (a power loss)"),
        ] {
            let mut windows: Vec<f64> = log
                .lines()
                .filter(|l| l.contains("alarm quiet") == quiet)
                .filter_map(|l| {
                    let (before, _) = l.split_once(marker)?;
                    parse_debug_duration(before.trim().rsplit([' ', ',']).next()?)
                })
                .collect();
            windows.sort_by(|a, b| a.total_cmp(b));
            if !windows.is_empty() {
                let pick = |q: f64| windows[((windows.len() - 1) as f64 * q) as usize];
                eprintln!(
                    "double-run window to the {until}, {what}, {} commands: median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                    windows.len(),
                    pick(0.5),
                    pick(0.99),
                    pick(1.0)
                );
            }
        }
    }
}

/// `1.234567ms`, `812.5µs`, `1.2s` (Rust's `Debug` of a `Duration`) in ms.
fn parse_debug_duration(text: &str) -> Option<f64> {
    for (unit, scale) in [("ms", 1.0), ("µs", 0.001), ("ns", 0.000_001), ("s", 1000.0)] {
        if let Some(n) = text.strip_suffix(unit) {
            return n.parse::<f64>().ok().map(|v| v * scale);
        }
    }
    None
}

/// Every `alarms.log` under `dir` (the master may keep it in a
/// subdirectory of its log directory).
fn alarms_logs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n == "alarms.log") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn an_alarm_spooled_while_the_master_is_down_arrives_within_a_second_of_its_return() {
    let block = 174;
    let c = Cluster::new(block);
    let flag = c.path("problem");
    let script = c.write(
        "flag.sh",
        &format!(
            "#!/bin/sh\nif [ -e {} ]; then echo \"1 warning\"; else echo \"0 normal\"; fi\n",
            flag.display()
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let master_cfg = c.master_config(1, "");
    let agent_cfg = c.agent_config(
        0,
        &format!(
            "  - {{name: flag, command: {}, interval: 200ms}}\n",
            script.display()
        ),
        "realarm_interval: 1h\n",
    );
    let mut master = c.start("master", &master_cfg, "master");
    let agent = c.start("agent", &agent_cfg, "agent");
    wait_for("the agent to register", || {
        agent.stderr().contains("registered with master")
    });

    // The master goes away; the alarm is raised and spooled.
    master.kill9();
    fs::write(&flag, "").unwrap();
    wait_for("a failed alarm delivery", || {
        agent.stderr().contains("alarm delivery to")
    });
    // Long enough for a growing backoff to have grown (it reached 8 s,
    // then 16 s, before issue 11).
    thread::sleep(Duration::from_secs(9));
    let has_alarm = || {
        alarms_logs(&c.master_log())
            .iter()
            .any(|p| fs::read_to_string(p).is_ok_and(|t| t.contains(" pi1 flag warning ")))
    };
    assert!(!has_alarm(), "the alarm arrived while the master was down");

    master.restart();
    let back = wait_for_port(format!("{}:8081", master_ip(block)).parse().unwrap());
    let deadline = back + Duration::from_secs(30);
    while !has_alarm() {
        assert!(Instant::now() < deadline, "the spooled alarm never arrived");
        thread::sleep(Duration::from_millis(5));
    }
    let late = back.elapsed();
    eprintln!("spooled alarm stored {late:?} after the master's alarm port was back");
    assert!(
        late < Duration::from_millis(1500),
        "the spooled alarm arrived {late:?} after the master came back"
    );
}
