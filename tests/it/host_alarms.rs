//! Host alarms (issue 15): an agent killed with SIGKILL raises a `host`
//! alarm at `critical` within `heartbeat_interval × heartbeat_misses` + 1 s
//! (through `alarm_command`, `alarms.log`, `pihealth alarms` and
//! `/metrics`), `normal` when it is back, and a flapping host is damped to
//! one `critical` and one `normal`.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util::*;

/// A hook that appends `TYPE LEVEL HOST UNIX_TIME` per alarm.
pub fn recording_hook(c: &Cluster) -> (PathBuf, PathBuf) {
    let record = c.path("alarm-commands.txt");
    let hook = c.write(
        "hook.sh",
        &format!(
            "#!/bin/sh\necho \"$PIHEALTH_TYPE $PIHEALTH_LEVEL $PIHEALTH_HOST $(date +%s.%N)\" >> {}\n",
            record.display()
        ),
    );
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    (hook, record)
}

/// The recorded host alarms: (level, unix time).
pub fn host_commands(record: &PathBuf) -> Vec<(String, f64)> {
    fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() == 4 && f[0] == "host").then(|| (f[1].to_string(), f[3].parse().unwrap()))
        })
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// GET over plain HTTP/1.0; the body.
pub fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the status page");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

pub fn up_in_status(c: &Cluster) -> bool {
    // Fails until the master has written its registry.
    let out = c.run(&["status", "-c", "master.yaml"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.contains("pi1") && l.contains(" up "))
}

#[test]
fn a_killed_agent_raises_host_critical_within_the_bound_then_normal() {
    let block = 170;
    let c = Cluster::new(block);
    let (hook, record) = recording_hook(&c);
    // heartbeat_interval 500ms x heartbeat_misses 3 = 1.5 s.
    let master_cfg = c.master_config(
        1,
        &format!(
            "alarm_command: [\"{}\"]\nhost_recovery_hold: 0s\n",
            hook.display()
        ),
    );
    let agent_cfg = c.agent_config(0, &counter_collector(&c, "1s"), "");
    let _master = c.start("master", &master_cfg, "master");
    let mut agent = c.start("agent", &agent_cfg, "agent");
    let limit = 1.5;
    let mut delays = Vec::new();
    for round in 0..3 {
        wait_for("pi1 up", || up_in_status(&c));
        // Up for a few heartbeats, so it is a live agent that dies.
        std::thread::sleep(Duration::from_millis(1200));
        let killed = unix_now();
        agent.kill9();
        wait_for("the host critical alarm_command", || {
            host_commands(&record)
                .iter()
                .filter(|(l, _)| l == "critical")
                .count()
                > round
        });
        let ran = host_commands(&record)
            .into_iter()
            .filter(|(l, _)| l == "critical")
            .nth(round)
            .unwrap()
            .1;
        let delay = ran - killed;
        eprintln!("round {round}: kill -9 to host critical alarm_command: {delay:.3} s");
        delays.push(delay);
        // Not before the agent could have been judged down: its last sign
        // of life may precede the kill by one interval (0.5 s), more when
        // a loaded machine delays a heartbeat, hence another 0.5 s ...
        assert!(delay >= limit - 0.5 - 0.5, "alarm too early: {delay:.3} s");
        // ... and within the bound. A test may not depend on speed, so
        // a loaded machine gets 2 s on top of the bound's 1 s; the figure
        // itself is in RELIABILITY.md.
        assert!(delay <= limit + 1.0 + 2.0, "alarm late: {delay:.3} s");
        if round == 0 {
            // While down: an open host problem everywhere alarms are shown.
            let open = c.run_lines(&["alarms", "-c", "master.yaml", "--open"]);
            assert!(
                open.iter()
                    .any(|l| l.contains("pi1") && l.contains("host") && l.contains("critical")),
                "{open:?}"
            );
            let metrics = http_get(&format!("{}:8082", master_ip(block)), "/metrics");
            assert!(
                metrics.contains("pihealth_alarms_open{level=\"critical\"} 1"),
                "{metrics}"
            );
            let page = http_get(&format!("{}:8082", master_ip(block)), "/");
            assert!(page.contains("is down"), "status page: {page}");
        }
        agent.restart();
        wait_for("the host normal alarm_command", || {
            host_commands(&record)
                .iter()
                .filter(|(l, _)| l == "normal")
                .count()
                > round
        });
    }
    eprintln!(
        "kill -9 to host critical alarm_command, 3 rounds: {delays:.3?} s (bound {:.1} s)",
        limit + 1.0
    );
    let alarms = fs::read_to_string(c.master_own().join("alarms.log")).unwrap();
    let host_lines: Vec<&str> = alarms.lines().filter(|l| l.contains(" host ")).collect();
    assert_eq!(host_lines.len(), 6, "{alarms}");
    let open = c.run_lines(&["alarms", "-c", "master.yaml", "--open"]);
    assert!(!open.iter().any(|l| l.contains("host")), "{open:?}");
}

#[test]
fn a_flapping_host_alarms_once_and_recovers_once_steady() {
    let block = 171;
    let c = Cluster::new(block);
    let (hook, record) = recording_hook(&c);
    let master_cfg = c.master_config(
        1,
        &format!(
            "alarm_command: [\"{}\"]\nhost_recovery_hold: 4s\n",
            hook.display()
        ),
    );
    let agent_cfg = c.agent_config(0, &counter_collector(&c, "1s"), "");
    let mut master = c.start("master", &master_cfg, "master");
    let mut agent = c.start("agent", &agent_cfg, "agent");
    wait_for("pi1 up", || up_in_status(&c));
    agent.kill9();
    wait_for("host critical", || !host_commands(&record).is_empty());
    // Flaps: back for less than the hold, down again, three times.
    for _ in 0..3 {
        agent.restart();
        wait_for("pi1 up", || up_in_status(&c));
        agent.kill9();
        wait_for("pi1 down", || !up_in_status(&c));
    }
    // A master restart while it is down repeats nothing.
    master.terminate();
    master.restart();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        host_commands(&record)
            .iter()
            .map(|(l, _)| l.as_str())
            .collect::<Vec<_>>(),
        ["critical"],
        "one critical however often it flapped"
    );
    // Steady now: one normal after the hold.
    agent.restart();
    wait_for("host normal", || host_commands(&record).len() == 2);
    std::thread::sleep(Duration::from_secs(2));
    let levels: Vec<String> = host_commands(&record).into_iter().map(|(l, _)| l).collect();
    assert_eq!(levels, ["critical", "normal"]);
}
