//! Operator commands over the master's files: `pihealth alarms` filters and
//! its open/recovered summary, and `pihealth status --json`.

use crate::util::*;

/// An `alarms.log` as the master writes it: `TIME HOST TYPE LEVEL ID MESSAGE`.
const ALARMS: &str = "\
2026-11-21T08:00:00+00:00 pi1 disk warning a1 / at 91% warning
2026-11-21T08:05:00+00:00 pi2 cpu warning a2 load 9.1 warning
2026-11-21T08:10:00+00:00 pi1 disk critical a3 / at 99% critical
2026-11-21T08:20:00+00:00 pi2 cpu normal a4 recovered from warning: load 0.2 normal
2026-11-21T09:00:00+00:00 pi3 mem warning a5 memory 85% warning
";

fn setup() -> Cluster {
    let c = Cluster::new(22);
    c.write(
        "master.yaml",
        "key_file: pihealth.key\nlog_dir: master/log\nbackup_dir: master/logbackup\n",
    );
    c.write("master/log/.master/alarms.log", ALARMS);
    c
}

/// `pihealth alarms -c master.yaml ARGS…`, which must succeed.
fn lines(c: &Cluster, args: &[&str]) -> Vec<String> {
    let mut all = vec!["alarms", "-c", "master.yaml"];
    all.extend_from_slice(args);
    c.run_lines(&all)
}

#[test]
fn alarms_filter_by_time_host_and_level_and_tell_open_from_recovered() {
    let c = setup();
    let all = lines(&c, &[]);
    assert_eq!(all.iter().filter(|l| l.starts_with("2026")).count(), 5);
    let summary = all
        .iter()
        .position(|l| l == "open problems: 2")
        .expect("summary");
    // pi1/disk is open since its first alarm (08:00), at its latest level.
    assert!(all[summary + 1].contains("pi1") && all[summary + 1].contains("critical"));
    assert!(all[summary + 1].contains("since 2026-11-21T08:00:00+00:00"));
    assert!(all[summary + 2].contains("pi3"));
    assert_eq!(all[summary + 3], "recovered: 1");
    assert!(all[summary + 4].contains("pi2") && all[summary + 4].contains("at 2026-11-21T08:20"));

    let pi1 = lines(&c, &["--host", "pi1"]);
    assert_eq!(pi1.iter().filter(|l| l.starts_with("2026")).count(), 2);
    assert!(pi1.contains(&"open problems: 1".to_string()));
    assert!(!pi1.iter().any(|l| l.contains("pi2") || l.contains("pi3")));

    let critical = lines(&c, &["--level", "critical"]);
    assert_eq!(critical.iter().filter(|l| l.starts_with("2026")).count(), 1);

    let since = lines(&c, &["--since", "2026-11-21T08:30:00+00:00"]);
    assert_eq!(since.iter().filter(|l| l.starts_with("2026")).count(), 1);
    // The open problem that began before --since is still listed as open.
    assert!(since.contains(&"open problems: 2".to_string()));

    let open = lines(&c, &["--open"]);
    assert_eq!(open.len(), 2);
    assert!(open[0].starts_with("pi1"));

    let json = lines(&c, &["--json", "--host", "pi2"]);
    assert_eq!(json.len(), 2);
    let v: serde_json::Value = serde_json::from_str(&json[1]).unwrap();
    assert_eq!(v["level"], "normal");
    assert_eq!(v["id"], "a4");
    let open_json = lines(&c, &["--open", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&open_json[0]).unwrap();
    assert_eq!(v["open"], true);
    assert_eq!(v["since"], "2026-11-21T08:00:00+00:00");

    let out = c.run(&["alarms", "-c", "master.yaml", "--since", "yesterday-ish"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a time"));
}

#[test]
fn alarms_and_status_without_any_data_say_so() {
    let c = Cluster::new(22);
    c.write(
        "master.yaml",
        "key_file: pihealth.key\nlog_dir: master/log\nbackup_dir: master/logbackup\n",
    );
    let out = c.run(&["alarms", "-c", "master.yaml"]);
    assert!(out.status.success());
    // Said in words (issue 16 item 6), not a blank line and a zero.
    assert!(String::from_utf8_lossy(&out.stdout).contains("no alarms recorded yet"));
    let out = c.run(&["status", "-c", "master.yaml", "--json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has the master run here?"));
}
