//! The standard scripts under busybox (issue 14): run with `busybox sh` and
//! a PATH holding nothing but busybox's applets (its df without -l, its ps
//! without %CPU, its who without a file argument), every line they print
//! fits its type's schema; on a fixture tree their lines equal the
//! built-in checks'. Block 190 (no network used).
//!
//! Needs Debian's `busybox` (installed by .ci/run): SKIPPED without it,
//! a failure in CI.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pihealth::agent::builtin::{Check, Context, Limits, Roots};
use pihealth::config::Builtin;

use crate::util::*;

const _BLOCK: u8 = 190; // reserved; these tests use no network

fn busybox() -> Option<PathBuf> {
    let found = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        skipped("busybox is not installed (.ci/run installs it)");
    }
    found
}

/// A directory of busybox applet links: the only PATH the scripts get.
fn applets(busybox: &Path, dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).expect("mkdir");
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for name in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            std::os::unix::fs::symlink(busybox, bin.join(name)).expect("symlink");
        }
    }
    bin
}

/// `busybox sh scripts/NAME.sh` with only busybox on PATH and `env`.
fn run(busybox: &Path, bin: &Path, name: &str, env: &[(&str, String)]) -> Vec<String> {
    let mut cmd = Command::new(busybox);
    cmd.arg("sh")
        .arg(format!("{SCRIPTS}/{name}.sh"))
        .env_clear()
        .env("PATH", bin);
    for (k, v) in env {
        cmd.env(k, v);
    }
    success_lines(
        cmd.output().expect("run busybox sh"),
        &format!("busybox sh {name}.sh"),
    )
}

#[test]
fn scripts_run_under_busybox_and_fit_their_schemas() {
    let Some(bb) = busybox() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = applets(&bb, dir.path());
    let env = [
        ("PIHEALTH_CPU_WINDOW", "0.1".to_string()),
        ("PIHEALTH_PROC_RECHECK", "0.1".to_string()),
        // Low, so that proc lists something on a busy machine too.
        ("PIHEALTH_PROC_THRESHOLD", "0.1".to_string()),
        (
            "PIHEALTH_STATE_DIR",
            dir.path().to_str().unwrap().to_string(),
        ),
    ];
    for name in ["cpu", "mem", "disk", "proc", "users", "sysinfo"] {
        let lines = run(&bb, &bin, name, &env);
        assert!(!lines.is_empty(), "{name}.sh printed nothing");
        for line in &lines {
            let words: Vec<&str> = line.split(' ').collect();
            assert!(
                pihealth::schema::name_fields(name, &words).is_some(),
                "{name}.sh under busybox: {line:?} does not fit the {name} schema"
            );
        }
        if name == "disk" {
            assert!(lines.last().unwrap().starts_with("total "), "{lines:?}");
        }
    }
}

/// A small tree: loadavg, stat, meminfo, uptime, a thermal zone, busy
/// processes, passwd and group, a utmp with one live session.
fn fixture(root: &Path) {
    let write = |rel: &str, text: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    write("proc/loadavg", b"0.42 1.50 2.75 3/321 4242\n");
    write("proc/stat", b"cpu  1000 20 500 8000 300 10 20 5 0 0\n");
    write("proc/uptime", b"98765.43 12345.67\n");
    write(
        "proc/meminfo",
        b"MemTotal: 3884136 kB\nMemFree: 912344 kB\nMemAvailable: 311032 kB\n",
    );
    write("sys/class/thermal/thermal_zone0/temp", b"81234\n");
    for (pid, comm, ticks, start, rss) in [
        (601, "busy one", 9_000_000u64, 0u64, 1000u64),
        (602, "hog", 10, 9_876_000, 800_000),
        (603, "idle", 10, 100, 10),
    ] {
        write(
            &format!("proc/{pid}/stat"),
            format!("{pid} ({comm}) R 1 {pid} {pid} 0 -1 4194304 100 0 0 0 {ticks} 0 0 0 20 0 1 0 {start} 1000000 {rss} 0\n").as_bytes(),
        );
    }
    write(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\npi:x:1000:1000::/home/pi:/bin/sh\ntoor:x:0:0::/:/bin/sh\n",
    );
    write("etc/group", b"root:x:0:\nsudo:x:27:pi\n");
    let mut utmp = vec![0u8; 384];
    utmp[0..2].copy_from_slice(&7i16.to_le_bytes());
    utmp[4..8].copy_from_slice(&601i32.to_le_bytes());
    utmp[8..13].copy_from_slice(b"pts/0");
    utmp[44..46].copy_from_slice(b"pi");
    utmp[76..84].copy_from_slice(b"10.0.0.9");
    write("utmp", &utmp);
}

#[test]
fn busybox_scripts_equal_the_builtins_on_a_fixture() {
    let Some(bb) = busybox() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = applets(&bb, dir.path());
    let root = dir.path().join("tree");
    fixture(&root);
    let state = dir.path().join("state");
    fs::create_dir_all(&state).unwrap();
    let p = |rel: &str| root.join(rel).to_str().unwrap().to_string();
    let env = [
        ("PIHEALTH_PROC_DIR", p("proc")),
        ("PIHEALTH_ETC_DIR", p("etc")),
        ("PIHEALTH_THERMAL_DIR", p("sys/class/thermal")),
        ("PIHEALTH_UTMP", p("utmp")),
        ("PIHEALTH_STATE_DIR", state.to_str().unwrap().to_string()),
        ("PIHEALTH_CPU_WINDOW", "0".to_string()),
        ("PIHEALTH_PROC_RECHECK", "0".to_string()),
    ];
    let roots = Roots {
        proc: root.join("proc"),
        sys: root.join("sys"),
        etc: root.join("etc"),
        utmp: root.join("utmp"),
    };
    let ctx = Context::new(roots, Limits::defaults());
    let builtin = |kind: Builtin, runs: usize| {
        let mut check = Check::new(kind);
        let mut lines = Vec::new();
        for _ in 0..runs {
            lines = check.run(&ctx).expect("built-in run");
        }
        lines
    };
    // cpu and proc compare their second runs (the first has no previous look).
    let cpu = builtin(Builtin::Cpu, 2);
    assert_eq!(run(&bb, &bin, "cpu", &env), cpu);
    assert_eq!(cpu, ["0.42 1.50 2.75 0.00 81.23 critical"]);
    let mem = builtin(Builtin::Mem, 1);
    assert_eq!(run(&bb, &bin, "mem", &env), mem);
    assert!(mem[0].ends_with(" critical"), "{mem:?}");
    let procs = builtin(Builtin::Proc, 2);
    assert_eq!(run(&bb, &bin, "proc", &env), procs);
    assert_eq!(procs.len(), 2, "{procs:?}");
    let users = builtin(Builtin::Users, 1);
    assert_eq!(run(&bb, &bin, "users", &env), users);
    assert!(users[0].starts_with("1 "), "{users:?}");
    assert!(users[0].ends_with(" pi@10.0.0.9:pts/0 note"), "{users:?}");
}
