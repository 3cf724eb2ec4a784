//! Issue 16 item 2: with cron as the only scheduler (no master daemon),
//! `pihealth pull` keeps `pihealth status` true: the last pull per host,
//! bytes, failures and up/down come from the pulls, and status says no
//! daemon runs (so no registrations, heartbeats or alarms). Block 93.

use std::time::Duration;

use crate::util::*;

const BLOCK: u8 = 93;

fn status_json(c: &Cluster) -> serde_json::Value {
    let out = c.run(&["status", "-c", "master.yaml", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("status --json")
}

fn recent(value: &serde_json::Value, since: chrono::DateTime<chrono::Utc>) -> bool {
    value
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t >= since - chrono::Duration::seconds(1))
}

#[test]
fn pull_without_daemon_keeps_status_true() {
    let c = Cluster::new(BLOCK);
    let master_cfg = c.master_config(1, "");
    let agent_cfg = c.agent_config(0, &counter_collector(&c, "100ms"), "");
    let mut agent = c.start("agent", &agent_cfg, "pi1");
    wait_for("pi1 to produce", || counter_file(&c, 0) >= 3);

    let before = chrono::Utc::now();
    let lines = c.run_lines(&["pull", "-c", master_cfg.to_str().unwrap()]);
    assert!(lines[0].contains(" ok: "), "{lines:?}");
    let v = status_json(&c);
    let a = &v["agents"][0];
    assert_eq!(a["host"], "pi1", "{v}");
    assert_eq!(a["state"], "up", "{v}");
    assert!(recent(&a["last_pull"], before), "{v}");
    assert!(recent(&a["last_pull_ok"], before), "{v}");
    let first_bytes = a["bytes_pulled"].as_u64().expect("bytes");
    assert!(first_bytes > 0, "{v}");

    // A second run adds to the count.
    std::thread::sleep(Duration::from_millis(500));
    c.run_lines(&["pull", "-c", "master.yaml"]);
    let v = status_json(&c);
    assert!(
        v["agents"][0]["bytes_pulled"].as_u64().unwrap() > first_bytes,
        "{v}"
    );

    let text = c.run_lines(&["status", "-c", "master.yaml"]).join("\n");
    assert!(text.contains("no master daemon runs here"), "{text}");
    assert!(text.contains("heartbeats"), "{text}");

    // A failed pull shows as such, and the agent goes down once it has
    // not been seen for heartbeat_interval × heartbeat_misses (1.5 s).
    agent.kill9();
    std::thread::sleep(Duration::from_millis(1600));
    let out = c.run(&["pull", "-c", "master.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v = status_json(&c);
    let a = &v["agents"][0];
    assert!(a["last_pull_error"].is_string(), "{v}");
    assert_eq!(a["state"], "down", "{v}");

    // With the daemon running, status says so.
    let _master = c.start("master", &master_cfg, "master");
    wait_for("the daemon to hold the registry", || {
        c.run_lines(&["status", "-c", "master.yaml"])
            .join("\n")
            .contains("written by the master daemon")
    });
}
