//! `pihealth-agent`, the lean binary the agent unit runs: the same daemon
//! as `pihealth agent`, the same exit codes, the same data on the master.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

const BLOCK: u8 = 201;
const LEAN: &str = env!("CARGO_BIN_EXE_pihealth-agent");

fn lean(c: &Cluster, args: &[&str]) -> std::process::Output {
    Command::new(LEAN)
        .args(args)
        .current_dir(c.dir.path())
        .output()
        .expect("run pihealth-agent")
}

#[test]
fn the_lean_agent_is_pulled_and_stops_cleanly() {
    let c = Cluster::new(BLOCK);
    let master_cfg = c.master_config(1, "");
    let agent_cfg = c.agent_config(0, &counter_collector(&c, "100ms"), "");
    let _master = c.start("master", &master_cfg, "master");
    let mut agent = Command::new(LEAN)
        .arg("-c")
        .arg(&agent_cfg)
        .current_dir(c.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pihealth-agent");
    wait_for("the lean agent's values on the master", || {
        counter_values(&c.archived("pi1", "counter")).len() >= 5
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = agent.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "pihealth-agent ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_lean_agent_exits_2_on_bad_config_key_or_arguments() {
    let c = Cluster::new(BLOCK);
    let good = c.agent_config(0, &counter_collector(&c, "1s"), "");
    let bad = c.write("bad.yaml", "name: pi1\nrotate_size: huge\n");
    let no_key = c.write("nokey.yaml", "name: pi1\nkey_file: missing.key\n");
    for (args, says) in [
        (vec!["-c", bad.to_str().unwrap()], "rotate_size"),
        (vec!["-c", no_key.to_str().unwrap()], "missing.key"),
        (vec!["-c"], "needs a FILE"),
        (vec!["--frobnicate"], "usage"),
        (vec!["-c", good.to_str().unwrap(), "extra"], "usage"),
    ] {
        let out = lean(&c, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(stderr.starts_with("pihealth-agent: "), "{args:?}: {stderr}");
    }
    // Nothing was created by a refused start.
    assert!(!c.path("agents").exists());
    let out = lean(&c, &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("usage: pihealth-agent"));
    let out = lean(&c, &["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pihealth-agent "));
}
