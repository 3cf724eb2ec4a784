//! Issue 16 item 4: every configuration or key problem exits 2 before
//! touching anything, for the master, the agent and `pihealth pull`; a port
//! in use exits 1 (the environment, not the config: systemd may retry)
//! and creates nothing either. Block 90.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::util::*;

const BLOCK: u8 = 90;

/// Every path under `root` with its contents (directories as `None`):
/// compared before and after a refused start.
fn tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            if path.is_dir() {
                out.insert(rel, None);
                todo.push(path);
            } else {
                out.insert(rel, Some(fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out
}

/// Run `args` in the cluster directory; assert the exit code, that stderr
/// mentions each of `words`, and that the directory tree is unchanged.
fn refused(cluster: &Cluster, args: &[&str], code: i32, words: &[&str]) {
    let before = tree(cluster.dir.path());
    let out = cluster.run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    for w in words {
        assert!(stderr.contains(w), "{args:?}: expected {w:?} in {stderr}");
    }
    assert_eq!(
        tree(cluster.dir.path()).keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "{args:?} changed the directory tree"
    );
    assert!(
        tree(cluster.dir.path()) == before,
        "{args:?} changed a file"
    );
}

/// Each key problem, for each command that loads keys: master, agent, pull.
#[test]
fn key_problems_exit_2_and_touch_nothing() {
    let cluster = Cluster::new(BLOCK);
    cluster.master_config(1, "");
    cluster.agent_config(0, "  - {name: cpu, command: /bin/true, interval: 1s}\n", "");
    let commands: [&[&str]; 3] = [
        &["master", "-c", "master.yaml"],
        &["agent", "-c", "agent-pi1.yaml"],
        &["pull", "-c", "master.yaml"],
    ];
    let key = cluster.path("pihealth.key");
    let good = fs::read(&key).expect("key");

    // Missing.
    fs::remove_file(&key).expect("rm key");
    for args in commands {
        refused(
            &cluster,
            args,
            2,
            &["pihealth.key", "cannot read the key file"],
        );
    }
    // Readable by others.
    fs::write(&key, &good).expect("key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    for args in commands {
        refused(&cluster, args, 2, &["pihealth.key", "mode 644"]);
    }
    // Not a key.
    fs::write(&key, "not a key\n").expect("key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    for args in commands {
        refused(&cluster, args, 2, &["pihealth.key", "64 hex digits"]);
    }
    // A bad previous key counts as much as a bad current one.
    fs::write(&key, &good).expect("key");
    cluster.master_config(1, "previous_key_files: [old.key]\n");
    refused(&cluster, commands[0], 2, &["old.key"]);
    refused(&cluster, commands[2], 2, &["old.key"]);
}

#[test]
fn config_problems_exit_2_and_touch_nothing() {
    let cluster = Cluster::new(BLOCK);
    cluster.master_config(1, "workers: lots\n");
    cluster.agent_config(
        0,
        "  - {name: cpu, command: /bin/true, interval: soon}\n",
        "",
    );
    refused(
        &cluster,
        &["master", "-c", "master.yaml"],
        2,
        &["master.yaml", "workers"],
    );
    refused(
        &cluster,
        &["pull", "-c", "master.yaml"],
        2,
        &["master.yaml", "workers"],
    );
    refused(
        &cluster,
        &["agent", "-c", "agent-pi1.yaml"],
        2,
        &["agent-pi1.yaml", "collectors[0].interval"],
    );
    refused(
        &cluster,
        &["master", "-c", "nowhere.yaml"],
        2,
        &["nowhere.yaml"],
    );
    refused(
        &cluster,
        &["agent", "-c", "nowhere.yaml"],
        2,
        &["nowhere.yaml"],
    );
}

/// A port in use: exit 1 (a previous instance may still be stopping, so a
/// restart by systemd is right), and no directory made before the bind.
#[test]
fn port_in_use_exits_1_before_creating_directories() {
    let cluster = Cluster::new(BLOCK);
    cluster.master_config(1, "");
    cluster.agent_config(0, "  - {name: cpu, command: /bin/true, interval: 1s}\n", "");
    let taken = TcpListener::bind(format!("{}:8080", master_ip(BLOCK))).expect("bind 8080");
    refused(
        &cluster,
        &["master", "-c", "master.yaml"],
        1,
        &["8080", "in use"],
    );
    drop(taken);
    let taken = TcpListener::bind(format!("{}:8001", agent_ip(BLOCK, 0))).expect("bind 8001");
    refused(
        &cluster,
        &["agent", "-c", "agent-pi1.yaml"],
        1,
        &["8001", "in use"],
    );
    drop(taken);
    assert!(!cluster.path("master").exists() && !cluster.path("agents").exists());
}
