//! Issue 16 item 3: a key change-over does not flood the logs. The master
//! remembers which key each agent answered to, so an agent still on the
//! old key sees one refused attempt for the whole change-over, not one per
//! probe and pull; a peer that keeps failing is logged once; an agent the
//! master refuses says `wrong key`, not "failed to fill whole buffer".
//! Block 92.

use std::time::Duration;

use crate::util::*;

const BLOCK: u8 = 92;

fn lines_with(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn key_change_over_logs_each_refusal_once() {
    let c = Cluster::new(BLOCK);
    assert!(c.run(&["keygen", "new.key"]).status.success());
    assert!(c.run(&["keygen", "rogue.key"]).status.success());
    // The master has moved to new.key and still accepts the old one; pi1
    // is still on the old key; pi2 holds a key the master never had.
    let master_cfg = c.master_config(1, "key_file: new.key\nprevious_key_files: [pihealth.key]\n");
    let pi1 = c.agent_config(0, &counter_collector(&c, "100ms"), "");
    let pi2 = c.agent_config(1, &counter_collector(&c, "100ms"), "key_file: rogue.key\n");
    let _master = c.start("master", &master_cfg, "master");
    let agent1 = c.start("agent", &pi1, "pi1");
    let agent2 = c.start("agent", &pi2, "pi2");

    // Many pulls and probes (500 ms) and heartbeats (500 ms) go by.
    wait_for("pi1's data to arrive", || {
        counter_values(&c.archived("pi1", "counter")).len() >= 5
    });
    std::thread::sleep(Duration::from_secs(4));
    wait_for_delivery(&c, 0, "pi1 pulled with the old key");

    let (master_log, pi1_log, pi2_log) = (
        std::fs::read_to_string(&_master.log).unwrap_or_default(),
        agent1.stderr(),
        agent2.stderr(),
    );
    // pi1: the master's first attempt with the new key, then never again.
    assert_eq!(lines_with(&pi1_log, "wrong key"), 1, "pi1:\n{pi1_log}");
    assert!(
        master_log.contains("now answers to key 2 of 2"),
        "{master_log}"
    );
    // pi2: refused on every heartbeat, logged once on each side, in words.
    assert_eq!(
        lines_with(&master_log, "wrong key"),
        1,
        "master:\n{master_log}"
    );
    assert_eq!(
        lines_with(&pi2_log, "refused our key: wrong key"),
        1,
        "pi2:\n{pi2_log}"
    );
    assert!(!pi2_log.contains("fill whole buffer"), "pi2:\n{pi2_log}");
}
