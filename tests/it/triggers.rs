//! Trigger rules end to end (issue 15): a real agent and master, script
//! collectors whose levels the test controls, and exactly which alarms
//! reach the master's `alarms.log`: spikes shorter than `for` raise
//! nothing, a sustained problem raises one alarm, a flapping recovery is
//! held back by `recover_for`, `note` never alarms, every line is stored
//! as collected, and a `kill -9` of the agent neither repeats an alarm nor
//! loses a recovery.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chrono::DateTime;
use pihealth::master::alarms::{read_alarms, AlarmLine};

use crate::util::*;

const BLOCK: u8 = 180;

/// The alarms `alarms.log` holds for `pi1`'s `log_type`, oldest first.
fn alarms_of(c: &Cluster, log_type: &str) -> Vec<AlarmLine> {
    read_alarms(&c.master_own().join("alarms.log"))
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.host == "pi1" && a.log_type == log_type)
        .collect()
}

fn levels(alarms: &[AlarmLine]) -> Vec<String> {
    alarms.iter().map(|a| a.level.clone()).collect()
}

fn executable(c: &Cluster, name: &str, text: &str) -> String {
    let path = c.write(name, text);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// Lines of `pi1`'s `log_type` stored on the agent or the master.
fn stored_lines(c: &Cluster, log_type: &str) -> Vec<String> {
    let mut text = c.archived("pi1", log_type);
    text.push_str(
        &fs::read_to_string(c.path(&format!("agents/pi1/log/{log_type}.log"))).unwrap_or_default(),
    );
    text.lines().map(str::to_string).collect()
}

/// Replace a level file at once: a script never reads it half written.
fn set_level(file: &Path, level: &str) {
    let tmp = file.with_extension("tmp");
    fs::write(&tmp, format!("{level}\n")).unwrap();
    fs::rename(&tmp, file).unwrap();
}

#[test]
fn only_problems_that_hold_reach_alarms_log() {
    let c = Cluster::new(BLOCK);
    // `seq`: run N prints line N of the queue file (the last one once the
    // queue is done), so the runs' levels are exactly the queue's.
    let queue = c.write(
        "queue",
        // 1-6: a two-run spike and notes: nothing. 7-9: three problem runs
        // of mixed levels: one alarm, `warning` (run 9). 10-15: calm runs
        // never two in a row: no recovery. 16: the second calm run in a
        // row: the recovery alarm.
        "normal\nwarning\nwarning\nnormal\nnote\nnote\n\
         warning\ncritical\nwarning\n\
         critical\nnormal\nwarning\nnote\nwarning\nnormal\n\
         normal\nnormal\n",
    );
    let seq = executable(
        &c,
        "seq.sh",
        &format!(
            "#!/bin/sh\nf=\"$PIHEALTH_STATE_DIR/seq\"\nn=0\n[ -r \"$f\" ] && read -r n < \"$f\"\nn=$((n+1))\n\
             echo $n > \"$f.tmp\" && mv \"$f.tmp\" \"$f\"\n\
             level=$(sed -n \"${{n}}p\" {q})\n[ -n \"$level\" ] || level=$(tail -n 1 {q})\n\
             echo \"$n $level\"\n",
            q = queue.display()
        ),
    );
    // `dur` and `ctl`: `NAME N LEVEL`, N counting the runs, the level
    // read from a file the test replaces atomically (`set_level`).
    let level_script = |name: &str| {
        let file = c.write(&format!("{name}.level"), "normal\n");
        let script = executable(
            &c,
            &format!("{name}.sh"),
            &format!(
                "#!/bin/sh\nf=\"$PIHEALTH_STATE_DIR/{name}\"\nn=0\n[ -r \"$f\" ] && read -r n < \"$f\"\nn=$((n+1))\n\
                 echo $n > \"$f.tmp\" && mv \"$f.tmp\" \"$f\"\necho \"{name} $n $(cat {})\"\n",
                file.display()
            ),
        );
        (file, script)
    };
    let (dur_level, dur) = level_script("dur");
    let (ctl_level, ctl) = level_script("ctl");
    let collectors = format!(
        "  - {{name: seq, command: {seq}, interval: 100ms, for: 3 runs, recover_for: 2 runs}}\n\
         \x20 - {{name: dur, command: {dur}, interval: 100ms, for: 2s}}\n\
         \x20 - {{name: ctl, command: {ctl}, interval: 100ms, for: 3 runs, recover_for: 3 runs}}\n"
    );
    let _master = c.start("master", &c.master_config(1, ""), "master");
    let agent_cfg = c.agent_config(0, &collectors, "realarm_interval: 1h\n");
    let mut agent = c.start("agent", &agent_cfg, "agent");

    // --- seq: the queue, run by run.
    wait_for("seq's recovery alarm", || alarms_of(&c, "seq").len() >= 2);
    wait_for("seq's queue played out", || {
        stored_lines(&c, "seq")
            .iter()
            .any(|l| l.ends_with(" 17 normal"))
    });
    let seq_alarms = alarms_of(&c, "seq");
    assert_eq!(levels(&seq_alarms), ["warning", "normal"], "{seq_alarms:?}");
    assert_eq!(seq_alarms[0].message, "9 warning");
    assert_eq!(seq_alarms[1].message, "recovered from warning: 16 normal");
    // Only alarms waited: every run's line is stored, in order.
    let numbers: BTreeSet<u64> = stored_lines(&c, "seq")
        .iter()
        .filter_map(|l| l.split(' ').nth(1)?.parse().ok())
        .collect();
    assert!((1..=17).all(|n| numbers.contains(&n)), "{numbers:?}");
    assert!(stored_lines(&c, "seq")
        .iter()
        .any(|l| l.ends_with(" 2 warning")));

    // --- dur: `for: 2s`, measured from the first warning run.
    set_level(&dur_level, "warning");
    wait_for("dur's warning alarm", || !alarms_of(&c, "dur").is_empty());
    let alarm = alarms_of(&c, "dur").remove(0);
    let first_warning = stored_lines(&c, "dur")
        .into_iter()
        .find(|l| l.ends_with(" warning"))
        .expect("a warning line is stored before its alarm");
    let stamp = |s: &str| DateTime::parse_from_rfc3339(s).unwrap();
    let line_time = stamp(first_warning.split(' ').next().unwrap());
    // The line's stamp is cut to the second: the run was at most 1s later.
    let held = stamp(&alarm.time) - line_time;
    assert!(
        held >= chrono::Duration::seconds(2),
        "alarm at {} but the first warning at {line_time}: held {held}",
        alarm.time
    );
    set_level(&dur_level, "normal");
    wait_for("dur's recovery", || alarms_of(&c, "dur").len() >= 2);
    assert_eq!(levels(&alarms_of(&c, "dur")), ["warning", "normal"]);

    // --- ctl: a kill -9 of the agent while the problem lasts.
    set_level(&ctl_level, "warning");
    wait_for("ctl's warning alarm", || !alarms_of(&c, "ctl").is_empty());
    agent.kill9();
    let before = stored_lines(&c, "ctl").len();
    agent.restart();
    wait_for("ten more ctl runs after the restart", || {
        stored_lines(&c, "ctl").len() >= before + 10
    });
    set_level(&ctl_level, "normal");
    wait_for("ctl's recovery", || alarms_of(&c, "ctl").len() >= 2);
    // The spool is first in, first out: an alarm repeated after the
    // restart would have arrived before the recovery.
    let ctl_alarms = alarms_of(&c, "ctl");
    assert_eq!(levels(&ctl_alarms), ["warning", "normal"], "{ctl_alarms:?}");
    // The recovery came with the third calm run in a row.
    let run_of = |l: &String, level: &str| -> Option<u64> {
        let mut f = l.split(' ').skip(2);
        let n = f.next()?.parse().ok()?;
        (f.next()? == level).then_some(n)
    };
    let lines = stored_lines(&c, "ctl");
    let last_warning = lines.iter().filter_map(|l| run_of(l, "warning")).max();
    let first_calm = lines
        .iter()
        .filter_map(|l| run_of(l, "normal"))
        .filter(|&n| Some(n) > last_warning)
        .min()
        .expect("calm runs after the warnings");
    assert_eq!(
        ctl_alarms[1].message,
        format!("recovered from warning: ctl {} normal", first_calm + 2)
    );
    // No `note` and no spike ever reached the master.
    let all = read_alarms(&c.master_own().join("alarms.log")).unwrap();
    assert!(all.iter().all(|a| a.level != "note"), "{all:?}");
}
