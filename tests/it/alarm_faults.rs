//! Alarms under faults (SPEC §6, issue 4): with the network to the alarm
//! port cutting, stalling and half-closing connections, the master
//! crashing right after storing an alarm (before acknowledging it) or
//! killed outright, and the agent crashing between saving a level change
//! and spooling its alarm or between spooling it and storing the lines,
//! every alarm still lands in `alarms.log` exactly once and
//! `alarm_command` runs for each (again only if the master died in the
//! instant between starting it and noting that it ran).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::proxy::{FaultProxy, Rng};
use crate::util::*;

/// The counter value an alarm message is about (`"7 warning"`,
/// `"recovered from warning: 8 normal"`).
fn value_of(message: &str) -> Option<u64> {
    message
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .next_back()
}

#[test]
fn alarms_arrive_once_through_a_faulty_network_and_master_crashes() {
    let block = 29;
    let c = Cluster::new(block);
    let ip = |host: u8| format!("127.0.{block}.{host}");
    let record = c.path("alarm-commands.txt");
    let hook = c.write(
        "hook.sh",
        &format!(
            "#!/bin/sh\necho \"$PIHEALTH_ID|$PIHEALTH_MESSAGE\" >> {}\n",
            record.display()
        ),
    );
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    // Odd values warn, even ones recover: an alarm on every run.
    let flap = c.write(
        "flap.sh",
        "#!/bin/sh\nf=\"$PIHEALTH_STATE_DIR/n\"\nn=$(cat \"$f\" 2>/dev/null || echo 0)\nn=$((n+1))\n\
         echo $n > \"$f.tmp\" && mv \"$f.tmp\" \"$f\"\n\
         if [ $((n % 2)) = 1 ]; then echo \"$n warning\"; else echo \"$n normal\"; fi\n",
    );
    fs::set_permissions(&flap, fs::Permissions::from_mode(0o755)).unwrap();
    let master_cfg = c.master_config(1, &format!("alarm_command: [\"{}\"]\n", hook.display()));
    // The agent reaches the alarm port only through the faulty proxy.
    let agent_cfg = c.agent_config(
        0,
        &format!(
            "  - {{name: flap, command: {}, interval: 150ms}}\n",
            flap.display()
        ),
        &format!("master_alarm: {}:8081\nrealarm_interval: 1h\n", ip(3)),
    );
    let proxy = FaultProxy::start(
        &format!("{}:8081", ip(3)),
        &format!("{}:8081", ip(1)),
        29,
        300,
    );
    let mut master = c.start("master", &master_cfg, "master");
    master.env = vec![
        (
            "PIHEALTH_FAILPOINTS".into(),
            "alarms.after_append=0.15".into(),
        ),
        ("PIHEALTH_FAILPOINT_SEED".into(), "29".into()),
    ];
    master.kill9();
    master.restart();
    let mut agent = c.start("agent", &agent_cfg, "agent");
    agent.env = vec![
        (
            "PIHEALTH_FAILPOINTS".into(),
            "agent.alarm_saved=0.06,agent.alarm_spooled=0.06".into(),
        ),
        ("PIHEALTH_FAILPOINT_SEED".into(), "29".into()),
    ];
    agent.kill9();
    agent.restart();

    let mut rng = Rng::new(29);
    let (mut kills, mut aborts, mut agent_aborts) = (0, 0, 0);
    for round in 0..30u64 {
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        if agent.reap_if_dead() {
            agent_aborts += 1;
            agent.env[1].1 = (29 + round).to_string();
            agent.restart();
        }
        if master.reap_if_dead() {
            aborts += 1;
            master.env[1].1 = (29 + round).to_string();
            master.restart();
        } else if rng.chance(200) {
            master.kill9();
            kills += 1;
            master.restart();
        }
    }
    // Calm: stop the flapping, end faults and failpoints, let the spool drain.
    if !agent.reap_if_dead() {
        agent.terminate();
    }
    agent.env.clear();
    proxy
        .fault_per_mille
        .store(0, std::sync::atomic::Ordering::SeqCst);
    master.kill9();
    master.env.clear();
    master.restart();
    agent.restart();
    let spool = c.path("agents/pi1/log/.pihealth/alarms.spool");
    wait_for("the agent's alarm spool to drain", || {
        fs::read_to_string(&spool).is_ok_and(|s| s.is_empty())
    });
    let stored = counter_values(&c.archived("pi1", "flap"));
    wait_for("alarm_command to catch up", || {
        let alarms = fs::read_to_string(c.master_own().join("alarms.log")).unwrap_or_default();
        let commands = fs::read_to_string(&record).unwrap_or_default();
        !alarms.is_empty() && alarms.lines().count() == commands.lines().count()
    });
    agent.terminate();
    master.terminate();

    // alarms.log: one line per alarm id, one alarm per level change.
    let alarms = fs::read_to_string(c.master_own().join("alarms.log")).unwrap();
    let mut ids = BTreeSet::new();
    let mut values = BTreeMap::new();
    for line in alarms.lines() {
        let f: Vec<&str> = line.splitn(6, ' ').collect();
        assert!(ids.insert(f[4].to_string()), "alarm stored twice: {line}");
        let v = value_of(f[5]).unwrap_or_else(|| panic!("no value in {line}"));
        assert!(
            values.insert(v, f[3].to_string()).is_none(),
            "two alarms for {v}"
        );
    }
    // Every run after the first changed the level, so every stored value
    // but possibly the first (normal → normal is no change) has its alarm.
    // (A run the agent died in before storing its lines may have one too.)
    let expected: BTreeSet<u64> = stored.iter().copied().filter(|&v| v > 1).collect();
    let got: BTreeSet<u64> = values.keys().copied().collect();
    let missing: Vec<_> = expected.difference(&got).collect();
    assert!(missing.is_empty(), "alarms never arrived for {missing:?}");
    for (v, level) in &values {
        let want = if v % 2 == 1 { "warning" } else { "normal" };
        assert_eq!(level, want, "alarm for {v}");
    }
    // alarm_command: for every stored alarm, and again only when the master
    // died between starting it and noting that it ran (a window of one
    // fsync; PIHEALTH_ID lets a command drop such repeats).
    let commands = fs::read_to_string(&record).unwrap();
    let mut ran = BTreeSet::new();
    let mut repeats = 0;
    for line in commands.lines() {
        let id = line.split('|').next().unwrap().to_string();
        if !ran.insert(id) {
            repeats += 1;
        }
    }
    assert_eq!(ran, ids, "alarm_command ran for exactly the stored alarms");
    assert!(
        repeats <= kills + aborts,
        "{repeats} repeated alarm_command runs for {} master deaths",
        kills + aborts
    );
    eprintln!(
        "alarm faults: {} alarms once each, alarm_command repeated {repeats} time(s); master kill -9: {kills}, aborts after append: {aborts}; agent aborts around the spool: {agent_aborts}; proxy: {}",
        ids.len(),
        proxy.stats.summary()
    );
    assert!(
        proxy.stats.faults() > 0,
        "the proxy never broke a connection"
    );
    assert!(agent_aborts > 0, "the agent never crashed at a failpoint");
}
