//! Issue 16: relative paths written in a config file are taken from the
//! file's own directory, so daemons started from anywhere (a unit's
//! working directory, a cron job's home) find their key, scripts and
//! directories, and create nothing where they were started.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::util::*;

const BLOCK: u8 = 200;

#[test]
fn daemons_started_elsewhere_use_paths_relative_to_their_config() {
    let c = Cluster::new(BLOCK);
    let (mip, aip) = (master_ip(BLOCK), agent_ip(BLOCK, 0));
    let check = c.write(
        "etc/checks/hello.sh",
        "#!/bin/sh\necho 'hello from a relative script normal'\n",
    );
    fs::set_permissions(&check, fs::Permissions::from_mode(0o755)).expect("chmod");
    let master_cfg = c.write(
        "etc/master.yaml",
        &format!(
            "listen: {mip}:8080\nalarm_listen: {mip}:8081\nhttp_listen: {mip}:8082\n\
             agents: [\"{aip}:8000\"]\npull_interval: 500ms\nheartbeat_interval: 500ms\n\
             connect_timeout: 1s\nio_timeout: 5s\n\
             key_file: ../pihealth.key\nlog_dir: ../data/master/log\n\
             backup_dir: ../data/master/logbackup\n"
        ),
    );
    let agent_cfg = c.write(
        "etc/agent.yaml",
        &format!(
            "name: pi1\nmaster: {mip}:8080\ncontrol_listen: {aip}:8000\ndata_listen: {aip}:8001\n\
             heartbeat_interval: 500ms\nconnect_timeout: 1s\nio_timeout: 5s\n\
             key_file: ../pihealth.key\nlog_dir: ../data/agent/log\n\
             backup_dir: ../data/agent/logbackup\n\
             collectors:\n  - {{name: hello, command: checks/hello.sh, interval: 300ms}}\n"
        ),
    );
    // Started from a directory that has nothing to do with either config.
    let elsewhere = c.path("elsewhere/deeper");
    fs::create_dir_all(&elsewhere).expect("mkdir");
    let mut master = Proc::start(&elsewhere, "master", &master_cfg, "master");
    let mut agent = Proc::start(&elsewhere, "agent", &agent_cfg, "agent");

    let landed = c.path("data/master/log/pi1/hello.log");
    wait_for("a pull of the relative script's line", || {
        fs::read_to_string(&landed).is_ok_and(|t| t.contains("hello from a relative script"))
    });
    assert!(c.path("data/agent/log/.pihealth").is_dir());
    assert_eq!(master.terminate(), Some(0));
    assert_eq!(agent.terminate(), Some(0));
    let created: Vec<_> = fs::read_dir(&elsewhere)
        .expect("read elsewhere")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(
        created
            .iter()
            .all(|n| n.to_string_lossy().ends_with(".stderr")),
        "the daemons created {created:?} in their working directory"
    );

    // The tools read the same config from any directory too.
    let out = std::process::Command::new(BIN)
        .args(["logs", "-c"])
        .arg(&master_cfg)
        .args(["pi1", "hello"])
        .current_dir("/")
        .output()
        .expect("run pihealth logs");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from a relative script"));
}
