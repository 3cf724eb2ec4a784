//! A real master and real agents on loopback: what lands on disk.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;

use sha2::{Digest, Sha256};

use crate::util::*;

const LEVELS: [&str; 5] = ["normal", "note", "warning", "critical", "unknown"];
const TYPES: [&str; 6] = ["cpu", "mem", "disk", "proc", "users", "sysinfo"];

fn standard_collectors() -> String {
    TYPES
        .iter()
        .map(|t| {
            let (interval, timeout) = if *t == "proc" { ("2s", "20s") } else { ("1s", "10s") };
            format!("  - {{name: {t}, command: {SCRIPTS}/{t}.sh, interval: {interval}, timeout: {timeout}}}\n")
        })
        .collect()
}

const CHECK_LOAD: &str = "/usr/lib/nagios/plugins/check_load";

/// A Monitoring-Plugins check, unchanged, as a `nagios` collector (when the
/// Debian package `monitoring-plugins-basic` is installed; `.ci/run` does).
fn nagios_collector() -> String {
    if std::path::Path::new(CHECK_LOAD).exists() {
        format!("  - {{name: load, command: \"{CHECK_LOAD} -w 10000,10000,10000 -c 20000,20000,20000\", interval: 1s, mode: nagios}}\n")
    } else {
        skipped(&format!(
            "{CHECK_LOAD} missing (monitoring-plugins-basic): nagios collector not tested end to end"
        ));
        String::new()
    }
}

/// Strictly increasing: nothing twice, nothing out of order.
fn assert_strictly_increasing(values: &[u64], what: &str) {
    for w in values.windows(2) {
        assert!(
            w[0] < w[1],
            "{what}: {} then {} (duplicate or reordered)",
            w[0],
            w[1]
        );
    }
}

#[test]
fn three_agents_deliver_every_type_and_keep_only_unpulled_data() {
    // Not block 0: 127.0.0.1:8080 is where `just run-master` listens.
    let c = Cluster::new(230);
    let master_cfg = c.master_config(3, "");
    let mut master = c.start("master", &master_cfg, "master");
    let mut agents: Vec<Proc> = (0..3)
        .map(|i| {
            let cfg = c.agent_config(i, &(standard_collectors() + &nagios_collector()), "");
            c.start("agent", &cfg, &format!("agent{i}"))
        })
        .collect();

    for host in ["pi1", "pi2", "pi3"] {
        for t in TYPES {
            wait_for(&format!("{host}/{t} on the master"), || {
                c.archived(host, t).lines().count() >= 2
            });
        }
    }
    // Every stored line: RFC 3339 timestamp with offset, output, level last.
    for host in ["pi1", "pi2", "pi3"] {
        for t in TYPES {
            for line in c.archived(host, t).lines() {
                let (time, rest) = line.split_once(' ').expect("timestamp then output");
                chrono::DateTime::parse_from_rfc3339(time)
                    .unwrap_or_else(|e| panic!("{line:?}: {e}"));
                let last = rest.rsplit(' ').next().unwrap_or("");
                assert!(
                    LEVELS.contains(&last),
                    "{host}/{t}: {line:?} does not end in a level"
                );
            }
        }
    }
    if std::path::Path::new(CHECK_LOAD).exists() {
        wait_for("pi1/load (nagios) on the master", || {
            c.archived("pi1", "load").lines().count() >= 2
        });
        // The plugin's status word and the stored level agree (the machine
        // may really be loaded, so any of them may come up).
        for line in c.archived("pi1", "load").lines() {
            let agrees = [
                (" LOAD OK", " normal"),
                (" LOAD WARNING", " warning"),
                (" LOAD CRITICAL", " critical"),
            ]
            .iter()
            .any(|(status, level)| line.contains(status) && line.ends_with(level));
            assert!(agrees, "{line:?}");
        }
    }
    // Pulled lines leave the agent: its cpu log no longer holds the first
    // line the master stored (SPEC §6: log/ holds only unstored data).
    let first = c.archived("pi1", "cpu").lines().next().unwrap().to_string();
    wait_for("pulled cpu line to leave pi1", || {
        !fs::read_to_string(c.path("agents/pi1/log/cpu.log"))
            .unwrap_or_default()
            .contains(&first)
    });

    wait_for("status to show all three up", || {
        let out = c.run(&["status", "-c", "master.yaml"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        out.status.success()
            && ["pi1", "pi2", "pi3"]
                .iter()
                .all(|h| text.lines().any(|l| l.starts_with(h) && l.contains(" up ")))
    });
    // The same as JSON, with the fields a script would read.
    wait_for("status --json to show three pulled agents", || {
        let out = c.run(&["status", "-c", "master.yaml", "--json"]);
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return false;
        };
        let agents = v["agents"].as_array().cloned().unwrap_or_default();
        v["age_seconds"].as_f64().is_some_and(|a| a < 30.0)
            && agents.len() == 3
            && agents.iter().all(|a| {
                a["state"] == "up"
                    && a["bytes_pulled"].as_u64() > Some(0)
                    && a["last_pull_ok"].is_string()
                    && a["last_heartbeat"].is_string()
                    && a["clock_skewed"] == false
                    && a["address"].as_str().is_some_and(|s| s.ends_with(":8000"))
            })
    });
    let events = fs::read_to_string(c.master_own().join("events.log")).expect("events.log");
    assert!(
        events.contains("pi1") && events.contains(" up "),
        "{events}"
    );

    // Ctrl-C / SIGTERM: both daemons exit 0.
    for a in &mut agents {
        assert_eq!(a.terminate(), Some(0), "agent stderr:\n{}", a.stderr());
    }
    assert_eq!(
        master.terminate(),
        Some(0),
        "master stderr:\n{}",
        master.stderr()
    );
}

/// Kill -9 the agent and the master at many moments; every counter value
/// the agent stored must reach the master exactly once, in order.
#[test]
fn kill_9_of_agent_and_master_loses_and_duplicates_nothing() {
    let c = Cluster::new(10);
    let master_cfg = c.master_config(1, "rotate_size: 2KiB\n");
    let agent_cfg = c.agent_config(0, &counter_collector(&c, "30ms"), "rotate_size: 1KiB\n");
    let mut master = c.start("master", &master_cfg, "master");
    let mut agent = c.start("agent", &agent_cfg, "agent");

    // Values a killed agent never got to store are allowed to be missing,
    // and only those (see `LossLedger`).
    let mut ledger = LossLedger::default();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..12 {
        let goal = counter_file(&c, 0) + 5 + next() % 20;
        wait_for("the counter to advance", || counter_file(&c, 0) >= goal);
        if round % 3 == 2 {
            master.kill9();
            // A one-shot pull (as from cron) while the daemon is down.
            let out = c.run(&["pull", "-c", "master.yaml"]);
            assert!(out.status.code().is_some());
            master.restart();
        } else {
            ledger.kill_and_restart(&c, &mut agent, 0);
        }
    }
    // Everything the agent has stored so far must arrive.
    wait_for_delivery(&c, 0, "all values to reach the master");
    agent.terminate();
    master.terminate();

    let values = counter_values(&c.archived("pi1", "counter"));
    assert_strictly_increasing(&values, "master archive of pi1/counter");
    let (died_with_agent, lost) = ledger.judge(&c, 0, &values);
    assert!(lost.is_empty(), "lost values: {lost:?}");
    // A kill loses at most the run in flight (and one orphaned before exec).
    assert!(
        died_with_agent.len() <= 2 * ledger.deaths(),
        "more values died with the agent than {} kills explain: {died_with_agent:?}",
        ledger.deaths()
    );
    // Both sides rotated: the stream crossed archives on agent and master.
    let archives = fs::read_dir(c.master_backup().join("pi1"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        archives >= 2,
        "expected master-side archives, found {archives}"
    );
}

#[test]
fn rotated_archives_arrive_byte_for_byte_and_stay_plain_gzip() {
    let c = Cluster::new(11);
    c.master_config(1, "");
    let agent_cfg = c.agent_config(0, &counter_collector(&c, "20ms"), "rotate_size: 1KiB\n");
    let mut agent = c.start("agent", &agent_cfg, "agent");
    let backup = c.path("agents/pi1/logbackup");
    wait_for("three archives on the agent", || {
        fs::read_dir(&backup)
            .map(|d| d.count() >= 3)
            .unwrap_or(false)
    });

    let digest = |path: &std::path::Path| {
        format!(
            "{:x}",
            Sha256::digest(fs::read(path).expect("read archive"))
        )
    };
    let on_agent: Vec<(std::path::PathBuf, String)> = fs::read_dir(&backup)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".log.gz"))
        .map(|p| {
            let d = digest(&p);
            (p, d)
        })
        .collect();
    let out = c.run(&["pull", "-c", "master.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pull failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("pi1") && stdout.contains("ok"), "{stdout}");

    let on_master: BTreeSet<String> = fs::read_dir(c.master_backup().join("pi1"))
        .unwrap()
        .flatten()
        .map(|e| digest(&e.path()))
        .collect();
    for (path, d) in &on_agent {
        assert!(
            on_master.contains(d),
            "{} not stored as it came",
            path.display()
        );
        assert!(
            !path.exists(),
            "{} still on the agent after the pull",
            path.display()
        );
    }
    // Plain gzip: the system's zcat reads every archive.
    for e in fs::read_dir(c.master_backup().join("pi1"))
        .unwrap()
        .flatten()
    {
        let out = std::process::Command::new("zcat")
            .arg(e.path())
            .output()
            .expect("zcat");
        assert!(out.status.success(), "zcat {}", e.path().display());
        assert!(!counter_values(&String::from_utf8_lossy(&out.stdout)).is_empty());
    }
    // `pihealth logs` reads archives and the current log as one stream.
    let out = c.run(&["logs", "-c", "master.yaml", "pi1", "counter"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values = counter_values(&String::from_utf8_lossy(&out.stdout));
    assert_strictly_increasing(&values, "pihealth logs");
    assert_eq!(values.first(), Some(&1));
    assert_eq!(
        values.len() as u64,
        *values.last().unwrap(),
        "a gap in {values:?}"
    );
    agent.terminate();
}

#[test]
fn alarms_spool_while_the_master_is_down_and_arrive_once() {
    let c = Cluster::new(12);
    let record = c.path("alarm-env.txt");
    let hook = c.write(
        "hook.sh",
        &format!("#!/bin/sh\necho \"$PIHEALTH_HOST|$PIHEALTH_TYPE|$PIHEALTH_LEVEL|$PIHEALTH_MESSAGE\" >> {}\n", record.display()),
    );
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let master_cfg = c.master_config(1, &format!("alarm_command: [\"{}\"]\n", hook.display()));
    // A check that is always in trouble, with a message that would be
    // dangerous in a shell.
    let check = c.write(
        "bad.sh",
        "#!/bin/sh\necho '$(touch /tmp/pwned) `id` ; rm -rf x warning'\n",
    );
    fs::set_permissions(&check, fs::Permissions::from_mode(0o755)).unwrap();
    let collectors = format!(
        "  - {{name: bad, command: {}, interval: 200ms}}\n",
        check.display()
    );
    let agent_cfg = c.agent_config(0, &collectors, "realarm_interval: 1h\n");

    // The agent starts alone: its alarm waits in the spool.
    let mut agent = c.start("agent", &agent_cfg, "agent");
    let spool = c.path("agents/pi1/log/.pihealth/alarms.spool");
    wait_for("the alarm to be spooled", || {
        fs::read_to_string(&spool)
            .map(|s| !s.is_empty())
            .unwrap_or(false)
    });
    let mut master = c.start("master", &master_cfg, "master");
    wait_for("the alarm to reach the master", || {
        fs::read_to_string(c.master_own().join("alarms.log")).is_ok()
    });
    wait_for("the spool to empty", || {
        fs::read_to_string(&spool)
            .map(|s| s.is_empty())
            .unwrap_or(true)
    });
    wait_for("alarm_command to run", || {
        fs::read_to_string(&record).is_ok()
    });
    // Let a few more runs at `warning` happen: no new alarm (realarm 1h).
    let runs = counter_values_len(&c);
    wait_for("more collector runs", || counter_values_len(&c) >= runs + 3);
    agent.terminate();
    master.terminate();

    let alarms = fs::read_to_string(c.master_own().join("alarms.log")).unwrap();
    assert_eq!(alarms.lines().count(), 1, "{alarms}");
    assert!(alarms.contains(" pi1 bad warning "), "{alarms}");
    let env = fs::read_to_string(&record).unwrap();
    assert_eq!(
        env.lines().count(),
        1,
        "alarm_command ran more than once: {env}"
    );
    assert!(
        env.starts_with("pi1|bad|warning|$(touch /tmp/pwned) `id`"),
        "{env}"
    );
    let out = c.run(&["alarms", "-c", "master.yaml"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("pi1"));
}

fn counter_values_len(c: &Cluster) -> usize {
    c.archived("pi1", "bad").lines().count()
        + fs::read_to_string(c.path("agents/pi1/log/bad.log"))
            .unwrap_or_default()
            .lines()
            .count()
}

#[test]
fn a_bad_config_exits_2_naming_file_and_key_and_touches_nothing() {
    let c = Cluster::new(16);
    c.write(
        "bad-master.yaml",
        "log_dir: fresh-log\nheartbeat_misses: lots\n",
    );
    let out = c.run(&["master", "-c", "bad-master.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad-master.yaml") && err.contains("heartbeat_misses"),
        "{err}"
    );
    assert!(!c.path("fresh-log").exists(), "a bad config created data");

    c.write(
        "bad-agent.yaml",
        "name: ../../etc\nlog_dir: fresh-agent-log\n",
    );
    let out = c.run(&["agent", "-c", "bad-agent.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad-agent.yaml") && err.contains("`name`"),
        "{err}"
    );
    assert!(!c.path("fresh-agent-log").exists());

    let out = c.run(&["master", "-c", "no-such.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such.yaml"));

    // A key file others can read is refused.
    c.write("open.key", &"ab".repeat(32));
    fs::set_permissions(
        c.path("open.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    c.write(
        "open-key.yaml",
        "key_file: open.key\nlisten: 127.0.16.1:8080\nalarm_listen: 127.0.16.1:8081\n",
    );
    let out = c.run(&["master", "-c", "open-key.yaml"]);
    // A key problem is a configuration problem: exit 2 (issue 16 item 4;
    // it was 1, and the units' RestartPreventExitStatus=2 missed it).
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("600"));
}

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite() {
    let c = Cluster::new(17);
    let mut text = String::new();
    fs::File::open(c.path("pihealth.key"))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text.trim().len(), 64);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(c.path("pihealth.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let out = c.run(&["keygen", "pihealth.key"]);
    assert_eq!(out.status.code(), Some(1));
    let mut again = String::new();
    fs::File::open(c.path("pihealth.key"))
        .unwrap()
        .read_to_string(&mut again)
        .unwrap();
    assert_eq!(text, again, "keygen overwrote a key without --force");
}

/// Clients without the key that send one byte now and then must not hold
/// the agent's workers: the handshake has a deadline, so a real pull still
/// gets through a two-worker agent under such an attack.
#[test]
fn trickling_clients_cannot_starve_a_real_pull() {
    let c = Cluster::new(18);
    let script = counter_script(&c);
    c.write(
        "agent.yaml",
        &format!(
            "name: pi1\nmaster: 127.0.18.1:8080\ncontrol_listen: 127.0.18.2:8000\ndata_listen: 127.0.18.2:8001\n\
             key_file: pihealth.key\nlog_dir: agents/pi1/log\nbackup_dir: agents/pi1/logbackup\n\
             workers: 2\nio_timeout: 1s\ncollectors:\n  - {{name: counter, command: {}, interval: 100ms}}\n",
            script.display()
        ),
    );
    c.write(
        "master.yaml",
        "key_file: pihealth.key\nlog_dir: master/log\nbackup_dir: master/logbackup\nio_timeout: 8s\nagents: [\"127.0.18.2:8000\"]\n",
    );
    let _agent = c.start("agent", &c.path("agent.yaml"), "agent");
    wait_for("the agent to listen", || {
        std::net::TcpStream::connect("127.0.18.2:8000").is_ok()
    });
    wait_for("a counter line on the agent", || {
        !agent_counter_values(&c, 0).is_empty()
    });

    // Three tricklers, each sending a well-formed hello and Noise message (wrong
    // key) one byte every 200 ms: 61 bytes, 12 s per connection if nothing
    // cuts them off.
    let mut bytes = Vec::new();
    let mut hello =
        pihealth::protocol::auth::encode_hello(pihealth::protocol::Purpose::Control, "pi-x");
    hello.extend_from_slice(&[1; pihealth::protocol::auth::NOISE_MSG_LEN]);
    pihealth::protocol::frame::write_frame(&mut bytes, &[&hello]).unwrap();
    let tricklers: Vec<_> = (0..3)
        .map(|_| {
            let bytes = bytes.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                // From an address of its own, as from another machine: the
                // one-shot pull below comes from 127.0.0.1.
                let mut s = crate::overload::connect_from("127.0.18.99", "127.0.18.2:8000")
                    .expect("a trickler connects (else the attack tests nothing)");
                for b in bytes {
                    if s.write_all(&[b]).is_err() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(100)); // let them queue first
    let out = c.run(&["pull", "-c", "master.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pull failed under a trickle attack: {stdout}"
    );
    assert!(!counter_values(&c.archived("pi1", "counter")).is_empty());
    for t in tricklers {
        t.join().unwrap();
    }
}
