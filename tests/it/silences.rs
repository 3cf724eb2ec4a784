//! Silences (issue 15): `pihealth silence` holds back a host's (or one
//! type's) alarms: still stored in `alarms.log` and shown as silenced by
//! `pihealth alarms` and the status page, but no `alarm_command`. Removed
//! or expired silences stop applying; bad input exits 2.

use std::fs;
use std::time::Duration;

use crate::host_alarms::{host_commands, http_get, recording_hook, up_in_status};
use crate::util::*;

fn silence(c: &Cluster, args: &[&str]) -> std::process::Output {
    let mut all = vec!["silence", "-c", "master.yaml"];
    all.extend_from_slice(args);
    c.run(&all)
}

fn host_lines(c: &Cluster) -> Vec<String> {
    fs::read_to_string(c.master_own().join("alarms.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" host "))
        .map(str::to_string)
        .collect()
}

#[test]
fn silenced_alarms_are_stored_and_shown_but_run_no_command() {
    let block = 172;
    let c = Cluster::new(block);
    let (hook, record) = recording_hook(&c);
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
    wait_for("pi1 up", || up_in_status(&c));

    // Bad input: exit 2 with the reason, nothing written.
    for (args, says) in [
        (&["pi1", "--for", "soon", "--reason", "x"][..], "--for"),
        (&["pi1", "--for", "0s", "--reason", "x"][..], "--for"),
        (&["pi1", "--for", "1h", "--reason", "  "][..], "--reason"),
        (&["pi1", "--for", "1h"][..], "--reason"),
        (&["../etc", "--for", "1h", "--reason", "x"][..], "HOST"),
        (&["--remove", "99"][..], "no silence #99"),
    ] {
        let out = silence(&c, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!c.master_own().join("silences.json").exists());

    // One silence on another type (does not cover host alarms), one on host.
    assert!(
        silence(&c, &["pi1", "disk", "--for", "1h", "--reason", "disk swap"])
            .status
            .success()
    );
    let out = silence(
        &c,
        &["pi1", "host", "--for", "1h", "--reason", "planned reboot"],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("#2"));
    let list = c.run_lines(&["silence", "-c", "master.yaml", "--list"]);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list[1].contains("planned reboot") && list[1].contains("host"));

    agent.kill9();
    wait_for("the host critical stored", || host_lines(&c).len() == 1);
    assert!(host_lines(&c)[0].contains("critical"));
    let alarms = c.run_lines(&["alarms", "-c", "master.yaml"]);
    assert!(
        alarms.iter().any(|l| l.contains("host")
            && l.contains("[silenced #2 until")
            && l.contains("planned reboot")),
        "{alarms:?}"
    );
    let open = c.run_lines(&["alarms", "-c", "master.yaml", "--open"]);
    assert!(
        open.iter()
            .any(|l| l.contains("host") && l.contains("[silenced #2 until")),
        "{open:?}"
    );
    let json = c.run_lines(&["alarms", "-c", "master.yaml", "--json"]);
    assert!(
        json.iter().any(|l| l.contains("\"silenced\":\"#2")),
        "{json:?}"
    );
    let metrics = http_get(&format!("{}:8082", master_ip(block)), "/metrics");
    assert!(
        metrics.contains("\npihealth_silences_active 2\n"),
        "{metrics}"
    );
    let page = http_get(&format!("{}:8082", master_ip(block)), "/");
    assert!(
        page.contains("planned reboot") && page.contains("silenced #2"),
        "{page}"
    );

    // Removed: the return runs the command again.
    assert!(silence(&c, &["--remove", "2"]).status.success());
    let list = c.run_lines(&["silence", "-c", "master.yaml", "--list"]);
    assert_eq!(list.len(), 1, "{list:?}");
    agent.restart();
    wait_for("host normal command", || !host_commands(&record).is_empty());
    assert_eq!(
        host_commands(&record)[0].0,
        "normal",
        "the silenced critical ran nothing"
    );

    // An expired silence stops applying.
    wait_for("pi1 up", || up_in_status(&c));
    assert!(silence(&c, &["pi1", "--for", "1s", "--reason", "short"])
        .status
        .success());
    std::thread::sleep(Duration::from_millis(1500));
    agent.kill9();
    wait_for("host critical command", || {
        host_commands(&record).len() == 2
    });
    assert_eq!(host_commands(&record)[1].0, "critical");
    let list = c.run_lines(&["silence", "-c", "master.yaml", "--list"]);
    assert!(!list.iter().any(|l| l.contains("short")), "{list:?}");
}
