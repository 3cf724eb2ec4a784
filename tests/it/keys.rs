//! Key change-over as the README describes it: master first (new key plus
//! the old one as `previous_key_files`), then each agent at its own pace,
//! then the master drops the old key. Pulls and heartbeats keep working at
//! every step; a peer with only a retired key gets nothing.

use std::fs;

use crate::util::*;

fn with_keys(c: &Cluster, config: &std::path::Path, primary: &str, previous: &[&str]) {
    let text = fs::read_to_string(config).expect("config");
    let mut keys = format!("key_file: {primary}\n");
    if !previous.is_empty() {
        keys.push_str(&format!("previous_key_files: [{}]\n", previous.join(", ")));
    }
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("key_file:") && !l.starts_with("previous_key_files:"))
        .map(|l| format!("{l}\n"))
        .collect();
    // Keys go first: `collectors:` is a block that runs to the end.
    fs::write(config, keys + &text).expect("write config");
    assert!(c.path(primary).exists());
}

/// Counter values on the master right now.
fn stored(c: &Cluster) -> usize {
    counter_values(&c.archived("pi1", "counter")).len()
}

/// Pulls (master → agent) and heartbeats (agent → master) both get
/// through: more values arrive, and a heartbeat newer than now is recorded.
fn wait_for_both_directions(c: &Cluster, step: &str) {
    let before = stored(c);
    wait_for(&format!("pulls to continue ({step})"), || {
        stored(c) >= before + 5
    });
    let now = chrono::Utc::now();
    wait_for(&format!("a heartbeat to be accepted ({step})"), || {
        let out = c.run(&["status", "-c", "master.yaml", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|v| {
            v["agents"][0]["last_heartbeat"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t >= now - chrono::Duration::seconds(1))
        })
    });
}

#[test]
fn key_change_over_keeps_pulls_and_heartbeats_working() {
    let c = Cluster::new(23);
    let master_cfg = c.master_config(1, "");
    let agent_cfg = c.agent_config(0, &counter_collector(&c, "100ms"), "");
    let mut master = c.start("master", &master_cfg, "master");
    let mut agent = c.start("agent", &agent_cfg, "agent");
    wait_for_both_directions(&c, "old key everywhere");

    let out = c.run(&["keygen", "new.key"]);
    assert!(out.status.success());

    // 1. The master moves first; the agent still proves the old key.
    master.terminate();
    with_keys(&c, &master_cfg, "new.key", &["pihealth.key"]);
    master.restart();
    wait_for_both_directions(&c, "master on new+old, agent on old");

    // 2. The agent moves; its heartbeats now use the new key.
    agent.terminate();
    with_keys(&c, &agent_cfg, "new.key", &[]);
    agent.restart();
    wait_for_both_directions(&c, "both on the new key, master keeps the old");

    // 3. The master drops the old key.
    master.terminate();
    with_keys(&c, &master_cfg, "new.key", &[]);
    master.restart();
    wait_for_both_directions(&c, "old key retired");
    // A peer that only has the retired key is refused.
    agent.terminate();
    with_keys(&c, &agent_cfg, "pihealth.key", &[]);
    agent.restart();
    wait_for("the master to refuse the retired key", || {
        fs::read_to_string(&master.log)
            .unwrap_or_default()
            .contains("wrong key")
    });
    let out = c.run(&["pull", "-c", "master.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a pull with the retired key fails"
    );
    agent.terminate();
    master.terminate();
    let values = counter_values(&c.archived("pi1", "counter"));
    for pair in values.windows(2) {
        assert!(pair[0] < pair[1], "out of order or duplicated: {pair:?}");
    }
}
