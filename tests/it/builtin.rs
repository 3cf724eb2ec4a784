//! Issue 14: the checks built into the agent print what the standard
//! scripts print. Both run over the same fixture trees (the scripts pointed
//! at them with PIHEALTH_PROC_DIR, PIHEALTH_ETC_DIR, PIHEALTH_THERMAL_DIR
//! and PIHEALTH_UTMP) and on this machine, field by field: exact on
//! fixtures; on the live machine loads and names equal, percentages within
//! a few points, process and user lists as sets. Then an agent with the six
//! built-ins delivers their lines to a master (block 80).
//!
//! A check whose script needs a tool this machine lacks prints SKIPPED.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use pihealth::agent::builtin::{Check, Context, Limits, Roots};
use pihealth::config::Builtin;

use crate::util::*;

const BLOCK: u8 = 80;

/// The tools the scripts call, per script.
fn tools(script: &str) -> &'static [&'static str] {
    match script {
        "cpu" | "mem" => &["sh", "dirname", "awk", "sleep", "mktemp"],
        "disk" => &["sh", "dirname", "awk", "df"],
        "proc" => &["sh", "dirname", "awk", "cat", "ls", "sleep", "sort"],
        "users" => &[
            "sh", "dirname", "awk", "od", "ls", "sort", "head", "sed", "tail",
        ],
        "sysinfo" => &["sh", "dirname", "awk", "df", "uname", "tail", "tr"],
        _ => &["sh"],
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// False (and SKIPPED printed) when a tool of the script is missing.
fn can_run(script: &str) -> bool {
    let missing: Vec<&str> = tools(script)
        .iter()
        .copied()
        .filter(|t| !on_path(t))
        .collect();
    if missing.is_empty() {
        return true;
    }
    skipped(&format!(
        "{script}.sh needs {} (not on this machine)",
        missing.join(", ")
    ));
    false
}

/// Run `scripts/<name>.sh` with only `env` among PIHEALTH_* variables.
fn script_lines(name: &str, env: &[(String, String)]) -> Vec<String> {
    success_lines(
        script_command(name, env).output().expect("run the script"),
        &format!("{name}.sh"),
    )
}

fn script_command(name: &str, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(format!("{SCRIPTS}/{name}.sh"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PIHEALTH_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    cmd
}

fn builtin_lines(check: &mut Check, ctx: &Context) -> Vec<String> {
    check
        .run(ctx)
        .unwrap_or_else(|e| panic!("built-in failed: {e}"))
}

fn fields(line: &str) -> Vec<&str> {
    line.split(' ').collect()
}

fn num(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

fn close(what: &str, a: &str, b: &str, tolerance: f64) {
    let (x, y) = (num(a), num(b));
    assert!(
        (x - y).abs() <= tolerance,
        "{what}: script {a} vs built-in {b} (tolerance {tolerance})"
    );
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---- fixtures ----

/// A fake root: proc/, sys/class/thermal/, etc/, usr/lib/, utmp.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        f.write("proc/loadavg", "0.42 1.50 2.75 3/321 4242\n");
        f.write(
            "proc/stat",
            "cpu  1000 20 500 8000 300 10 20 5 0 0\ncpu0 1 2 3 4\n",
        );
        f.write("proc/uptime", "98765.43 12345.67\n");
        f.write("proc/sys/kernel/hostname", "fixture-pi\n");
        f.write("proc/sys/kernel/osrelease", "6.6.31+rpt-rpi-v8\n");
        f.write("proc/sys/kernel/ostype", "Linux\n");
        f.write(
            "proc/meminfo",
            "MemTotal:        3884136 kB\nMemFree:          912344 kB\nMemAvailable:    2811032 kB\nBuffers:           81232 kB\nCached:          1843240 kB\n",
        );
        // The live mount table: df (which the scripts run) reads it too.
        f.write(
            "proc/self/mountinfo",
            &fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
        );
        f.write("sys/class/thermal/thermal_zone0/temp", "47123\n");
        f.write("sys/class/thermal/thermal_zone1/temp", "49876\n");
        f.write("sys/class/thermal/thermal_zone2/temp", "garbage\n");
        f.write(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n\
             # a comment\npi:x:1000:1000:,,,:/home/pi:/bin/bash\nops:x:1001:27::/home/ops:/bin/bash\n\
             +nisuser::::::\nbackup:x:0:0::/:/bin/sh\n",
        );
        f.write(
            "etc/group",
            "root:x:0:\nsudo:x:27:pi,remote\nwheel:x:10:\nadmin:x:115:pi\nusers:x:100:\n",
        );
        f.write(
            "etc/os-release",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n",
        );
        // Sessions: who lists them all (it is given the file); their pids
        // exist in the fixture's proc, as the built-in checks.
        let mut utmp = Vec::new();
        for (pid, line, user, host) in [
            (501, "pts/0", "pi", "192.168.1.20"),
            (502, "tty7", "pi", ":0"),
            (503, "pts/1", "ops", "mosh [4242]"),
            (504, "tty1", "root", ""),
        ] {
            f.write(&format!("proc/{pid}/stat"), "");
            utmp.extend(utmp_record(7, pid, line, user, host));
        }
        utmp.extend(utmp_record(8, 505, "pts/2", "gone", ""));
        fs::write(f.path("utmp"), utmp).expect("write utmp");
        f
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        // Atomic, so a script reading meanwhile sees old or new, never half.
        let tmp = path.with_extension("tmp~");
        fs::write(&tmp, text).expect("write fixture");
        fs::rename(&tmp, &path).expect("rename fixture");
    }

    fn roots(&self) -> Roots {
        Roots {
            proc: self.path("proc"),
            sys: self.path("sys"),
            etc: self.path("etc"),
            utmp: self.path("utmp"),
        }
    }

    /// The scripts' view of the same tree, plus `extra`.
    fn env(&self, state: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut e = env(&[
            ("PIHEALTH_PROC_DIR", self.path("proc").to_str().unwrap()),
            ("PIHEALTH_ETC_DIR", self.path("etc").to_str().unwrap()),
            (
                "PIHEALTH_THERMAL_DIR",
                self.path("sys/class/thermal").to_str().unwrap(),
            ),
            ("PIHEALTH_UTMP", self.path("utmp").to_str().unwrap()),
            ("PIHEALTH_STATE_DIR", state.to_str().unwrap()),
            ("PIHEALTH_CPU_WINDOW", "0"),
        ]);
        e.extend(env(extra));
        e
    }

    fn context(&self, env: &[(String, String)]) -> Context {
        Context::new(self.roots(), Limits::from_env(env))
    }
}

/// A glibc `struct utmp` record (384 bytes).
fn utmp_record(kind: i16, pid: i32, line: &str, user: &str, host: &str) -> Vec<u8> {
    let mut r = vec![0u8; 384];
    r[0..2].copy_from_slice(&kind.to_ne_bytes());
    r[4..8].copy_from_slice(&pid.to_ne_bytes());
    r[8..8 + line.len()].copy_from_slice(line.as_bytes());
    r[44..44 + user.len()].copy_from_slice(user.as_bytes());
    r[76..76 + host.len()].copy_from_slice(host.as_bytes());
    r
}

/// Threshold sets that put the fixture at each level.
const THRESHOLDS: [&[(&str, &str)]; 4] = [
    &[],
    &[
        ("PIHEALTH_CPU_NOTE", "10"),
        ("PIHEALTH_MEM_NOTE", "20"),
        ("PIHEALTH_TEMP_NOTE", "45.5"),
        ("PIHEALTH_DISK_NOTE", "1"),
    ],
    &[
        ("PIHEALTH_CPU_WARNING", "5"),
        ("PIHEALTH_MEM_WARNING", "25"),
        ("PIHEALTH_TEMP_WARNING", "49.88"),
        ("PIHEALTH_DISK_WARNING", "2"),
    ],
    CRITICAL,
];

/// Low enough that the fixture reaches critical everywhere (issue 15).
const CRITICAL: &[(&str, &str)] = &[
    ("PIHEALTH_CPU_WARNING", "5"),
    ("PIHEALTH_CPU_CRITICAL", "6"),
    ("PIHEALTH_MEM_WARNING", "25"),
    ("PIHEALTH_MEM_CRITICAL", "26.5"),
    ("PIHEALTH_TEMP_WARNING", "45"),
    ("PIHEALTH_TEMP_CRITICAL", "49.88"),
    ("PIHEALTH_DISK_WARNING", "0.5"),
    ("PIHEALTH_DISK_CRITICAL", "1"),
];

#[test]
fn fixture_cpu_equals_script() {
    if !can_run("cpu") {
        return;
    }
    let f = Fixture::new();
    let state = tempfile::tempdir().expect("temp dir");
    for extra in THRESHOLDS {
        let e = f.env(state.path(), extra);
        let ctx = f.context(&e);
        let mut check = Check::new(Builtin::Cpu);
        // First run: since boot; the script with no window sees 0 usage,
        // so compare from the second run on (a static /proc/stat: 0 both).
        builtin_lines(&mut check, &ctx);
        assert_eq!(
            script_lines("cpu", &e),
            builtin_lines(&mut check, &ctx),
            "{extra:?}"
        );
    }
    // Usage over a window: /proc/stat changes while the script sleeps.
    let before = "cpu  1000 20 500 8000 300 10 20 5 0 0\n";
    let after = "cpu  1700 20 650 8200 330 10 20 5 0 0\n";
    let e = f.env(state.path(), &[("PIHEALTH_CPU_WINDOW", "2")]);
    let ctx = f.context(&e);
    let mut check = Check::new(Builtin::Cpu);
    f.write("proc/stat", before);
    builtin_lines(&mut check, &ctx);
    let child = script_command("cpu", &e)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn cpu.sh");
    thread::sleep(Duration::from_millis(1000));
    f.write("proc/stat", after);
    let out = child.wait_with_output().expect("cpu.sh");
    let script = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
    let builtin = builtin_lines(&mut check, &ctx);
    assert_eq!(builtin, vec!["0.42 1.50 2.75 78.70 49.88 note".to_string()]);
    assert_eq!(vec![script], builtin);
}

#[test]
fn fixture_mem_equals_script_run_after_run() {
    if !can_run("mem") {
        return;
    }
    let f = Fixture::new();
    for extra in THRESHOLDS {
        let state = tempfile::tempdir().expect("temp dir");
        let e = f.env(state.path(), extra);
        let ctx = f.context(&e);
        let mut check = Check::new(Builtin::Mem);
        for avail in [2811032, 811032, 3500000, 100] {
            f.write(
                "proc/meminfo",
                &format!("MemTotal: 3884136 kB\nMemFree: 1 kB\nMemAvailable: {avail} kB\n"),
            );
            assert_eq!(
                script_lines("mem", &e),
                builtin_lines(&mut check, &ctx),
                "{extra:?}"
            );
        }
        // Without MemAvailable (kernels before 3.14).
        f.write(
            "proc/meminfo",
            "MemTotal: 1000000 kB\nMemFree: 100000 kB\nBuffers: 20000 kB\nCached: 300000 kB\n",
        );
        assert_eq!(script_lines("mem", &e), builtin_lines(&mut check, &ctx));
    }
}

#[test]
fn fixture_users_equals_script() {
    if !can_run("users") {
        return;
    }
    let f = Fixture::new();
    let state = tempfile::tempdir().expect("temp dir");
    let e = f.env(state.path(), &[]);
    let ctx = f.context(&e);
    let script = script_lines("users", &e);
    let builtin = builtin_lines(&mut Check::new(Builtin::Users), &ctx);
    assert_eq!(script.len(), 1);
    let (s, b) = (fields(&script[0]), fields(&builtin[0]));
    assert_eq!(s.len(), 5, "{script:?}");
    assert_eq!(b.len(), 5, "{builtin:?}");
    // Both count the owners of the fixture's /proc entries.
    for i in 0..5 {
        assert_eq!(
            s[i], b[i],
            "field {i}: script {script:?} built-in {builtin:?}"
        );
    }
    assert_eq!(
        b[3],
        "pi@192.168.1.20:pts/0,pi@:tty7,ops@mosh_[4242]:pts/1,root@:tty1"
    );
    assert_eq!(b[2], "root,pi,ops,backup,remote");
    assert_eq!(b[4], "note");
}

#[test]
fn fixture_sysinfo_equals_script() {
    if !can_run("sysinfo") {
        return;
    }
    let f = Fixture::new();
    let state = tempfile::tempdir().expect("temp dir");
    for extra in THRESHOLDS {
        let e = f.env(state.path(), extra);
        let ctx = f.context(&e);
        let script = script_lines("sysinfo", &e);
        let builtin = builtin_lines(&mut Check::new(Builtin::Sysinfo), &ctx);
        let (s, b) = (fields(&script[0]), fields(&builtin[0]));
        assert_eq!(s.len(), 13, "{script:?}");
        assert_eq!(b.len(), 13, "{builtin:?}");
        for i in 0..13 {
            // Disk figures are live (df): others write while we read.
            if i == 6 {
                close("disk used %", s[i], b[i], 1.0);
            } else {
                assert_eq!(
                    s[i], b[i],
                    "field {i}: script {script:?} built-in {builtin:?}"
                );
            }
        }
    }
    // No os-release in /etc: the one in usr/lib beside it; then uname.
    fs::remove_file(f.path("etc/os-release")).expect("rm");
    f.write(
        "usr/lib/os-release",
        "PRETTY_NAME='Raspbian GNU/Linux 11 (bullseye)'\n",
    );
    let e = f.env(state.path(), &[]);
    let ctx = f.context(&e);
    let os = |lines: Vec<String>| lines[0].split(' ').nth(1).unwrap().to_string();
    let builtin = os(builtin_lines(&mut Check::new(Builtin::Sysinfo), &ctx));
    assert_eq!(os(script_lines("sysinfo", &e)), builtin);
    assert_eq!(builtin, "Raspbian_GNU/Linux_11_(bullseye)");
    fs::remove_file(f.path("usr/lib/os-release")).expect("rm");
    assert_eq!(
        os(script_lines("sysinfo", &e)),
        os(builtin_lines(&mut Check::new(Builtin::Sysinfo), &ctx))
    );
}

#[test]
fn fixture_bad_threshold_fails_both() {
    if !can_run("cpu") {
        return;
    }
    let f = Fixture::new();
    let state = tempfile::tempdir().expect("temp dir");
    let e = f.env(state.path(), &[("PIHEALTH_CPU_NOTE", "-3")]);
    let out = script_command("cpu", &e).output().expect("cpu.sh");
    assert!(!out.status.success());
    let err = Check::new(Builtin::Cpu)
        .run(&f.context(&e))
        .unwrap_err()
        .to_string();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&err),
        "script said {:?}, built-in {err:?}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fixture_critical_levels_in_both() {
    for name in ["cpu", "mem", "disk", "sysinfo"] {
        if !can_run(name) {
            return;
        }
    }
    let f = Fixture::new();
    let state = tempfile::tempdir().expect("temp dir");
    let e = f.env(state.path(), CRITICAL);
    let ctx = f.context(&e);
    // cpu: 49.88 °C reaches the temperature's critical; usage is 0 (a
    // static /proc/stat) on the second run.
    let mut cpu = Check::new(Builtin::Cpu);
    builtin_lines(&mut cpu, &ctx);
    let b = builtin_lines(&mut cpu, &ctx);
    assert_eq!(script_lines("cpu", &e), b);
    assert_eq!(b, ["0.42 1.50 2.75 0.00 49.88 critical"]);
    // mem: 27.63 % used.
    let b = builtin_lines(&mut Check::new(Builtin::Mem), &ctx);
    assert_eq!(script_lines("mem", &e), b);
    assert!(b[0].ends_with(" critical"), "{b:?}");
    // disk: live (df), any file system with 1 % used or more.
    let (s, b) = (
        script_lines("disk", &e),
        builtin_lines(&mut Check::new(Builtin::Disk), &ctx),
    );
    assert_eq!(s.len(), b.len());
    let last = |l: &[String]| fields(l.last().unwrap())[4].to_string();
    assert_eq!(last(&s), last(&b));
    // sysinfo: the three levels.
    let (s, b) = (
        script_lines("sysinfo", &e),
        builtin_lines(&mut Check::new(Builtin::Sysinfo), &ctx),
    );
    assert_eq!(fields(&s[0])[10..], fields(&b[0])[10..]);
    assert_eq!(fields(&b[0])[11..], ["critical", "critical"]);
    // Critical below warning is the user's choice: critical wins.
    let e = f.env(state.path(), &[("PIHEALTH_MEM_CRITICAL", "1")]);
    let ctx = f.context(&e);
    let b = builtin_lines(&mut Check::new(Builtin::Mem), &ctx);
    assert_eq!(script_lines("mem", &e), b);
    assert!(b[0].ends_with(" critical"), "{b:?}");
}

/// A `/proc/PID/stat` line: comm, CPU ticks, start (ticks after boot), rss pages.
fn proc_stat(pid: u32, comm: &str, ticks: u64, start: u64, rss: u64) -> String {
    format!(
        "{pid} ({comm}) R 1 {pid} {pid} 0 -1 4194304 100 0 0 0 {ticks} 0 0 0 20 0 1 0 {start} 1000000 {rss} 18446744073709551615\n"
    )
}

#[test]
fn fixture_proc_equals_script() {
    if !can_run("proc") {
        return;
    }
    let f = Fixture::new();
    // uptime 98765.43 s; MemTotal 3884136 kB.
    f.write(
        "proc/601/stat",
        &proc_stat(601, "busy one", 9_000_000, 0, 1000),
    );
    f.write(
        "proc/602/stat",
        &proc_stat(602, "hog", 10, 9_876_000, 800_000),
    );
    f.write("proc/603/stat", &proc_stat(603, "idle", 10, 100, 10));
    f.write(
        "proc/604/stat",
        &proc_stat(604, "a)b (c", 16_000_000, 100, 10),
    );
    f.write("proc/605/stat", "garbage\n");
    let state = tempfile::tempdir().expect("temp dir");
    for threshold in ["50", "80", "0.5"] {
        let e = f.env(
            state.path(),
            &[
                ("PIHEALTH_PROC_THRESHOLD", threshold),
                ("PIHEALTH_PROC_RECHECK", "0"),
            ],
        );
        let ctx = f.context(&e);
        let mut check = Check::new(Builtin::Proc);
        // The built-in's first look is its previous run.
        builtin_lines(&mut check, &ctx);
        let b = builtin_lines(&mut check, &ctx);
        assert_eq!(script_lines("proc", &e), b, "threshold {threshold}");
        if threshold == "50" {
            let names: Vec<&str> = b.iter().map(|l| fields(l)[0]).collect();
            assert_eq!(names, ["a)b_(c", "busy_one", "hog"], "{b:?}");
        }
    }
}

// ---- the live machine ----

fn live() -> Context {
    Context::new(Roots::default(), Limits::from_env(&[]))
}

/// Retry a comparison a few times: loads and disk figures move under us.
fn settle(what: &str, mut attempt: impl FnMut() -> Result<(), String>) {
    let mut last = String::new();
    for _ in 0..5 {
        match attempt() {
            Ok(()) => return,
            Err(e) => last = e,
        }
        thread::sleep(Duration::from_millis(300));
    }
    panic!("{what}: {last}");
}

fn within(what: &str, a: &str, b: &str, tolerance: f64) -> Result<(), String> {
    let (x, y) = (num(a), num(b));
    if (x - y).abs() <= tolerance {
        Ok(())
    } else {
        Err(format!(
            "{what}: script {a} vs built-in {b} (tolerance {tolerance})"
        ))
    }
}

fn equal(what: &str, a: &str, b: &str) -> Result<(), String> {
    if a == b {
        Ok(())
    } else {
        Err(format!("{what}: script {a:?} vs built-in {b:?}"))
    }
}

#[test]
fn live_cpu_and_mem_match_the_scripts() {
    if !(can_run("cpu") && can_run("mem")) {
        return;
    }
    let ctx = live();
    let state = tempfile::tempdir().expect("temp dir");
    let e = env(&[
        ("PIHEALTH_CPU_WINDOW", "1"),
        ("PIHEALTH_STATE_DIR", state.path().to_str().unwrap()),
    ]);
    let mut cpu = Check::new(Builtin::Cpu);
    settle("cpu", || {
        // The built-in's window (previous run to this one) spans the
        // script's one-second window.
        builtin_lines(&mut cpu, &ctx);
        let s = script_lines("cpu", &e);
        let b = builtin_lines(&mut cpu, &ctx);
        let (s, b) = (fields(&s[0]), fields(&b[0]));
        for i in 0..3 {
            equal("load", s[i], b[i])?;
        }
        within("cpu usage %", s[3], b[3], 12.0)?;
        equal("temperature", s[4], b[4])
    });
    let mut mem = Check::new(Builtin::Mem);
    settle("mem", || {
        let s = script_lines("mem", &e);
        let b = builtin_lines(&mut mem, &ctx);
        let (s, b) = (fields(&s[0]), fields(&b[0]));
        equal("total", s[0], b[0])?;
        within("used MiB", s[1], b[1], num(s[0]) * 0.02)?;
        within("used %", s[2], b[2], 2.0)?;
        within("average", s[3], b[3], 2.0)
    });
}

#[test]
fn live_disk_matches_the_script() {
    if !can_run("disk") {
        return;
    }
    let ctx = live();
    settle("disk", || {
        let s = script_lines("disk", &[]);
        let b = builtin_lines(&mut Check::new(Builtin::Disk), &ctx);
        let mounts = |l: &[String]| {
            l.iter()
                .map(|x| x.split(' ').next().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        };
        if mounts(&s) != mounts(&b) {
            return Err(format!("mounts differ: script {s:?} built-in {b:?}"));
        }
        for (sl, bl) in s.iter().zip(&b) {
            let (sf, bf) = (fields(sl), fields(bl));
            equal("total MiB", sf[1], bf[1])?;
            within("free MiB", sf[2], bf[2], 1.0 + num(sf[1]) * 0.01)?;
            within("used %", sf[3], bf[3], 1.0)?;
        }
        Ok(())
    });
}

#[test]
fn live_sysinfo_matches_the_script() {
    if !can_run("sysinfo") {
        return;
    }
    let ctx = live();
    let state = tempfile::tempdir().expect("temp dir");
    let e = env(&[("PIHEALTH_STATE_DIR", state.path().to_str().unwrap())]);
    settle("sysinfo", || {
        let s = script_lines("sysinfo", &e);
        let b = builtin_lines(&mut Check::new(Builtin::Sysinfo), &ctx);
        let (s, b) = (fields(&s[0]), fields(&b[0]));
        for (i, what) in [
            (0, "host"),
            (1, "os"),
            (2, "kernel"),
            (4, "load1"),
            (5, "disk total"),
            (7, "mem total"),
            (9, "temp"),
        ] {
            equal(what, s[i], b[i])?;
        }
        within("uptime", s[3], b[3], 3.0)?;
        within("disk used %", s[6], b[6], 1.0)?;
        within("mem used %", s[8], b[8], 2.0)
    });
}

#[test]
fn live_users_match_the_script() {
    if !can_run("users") {
        return;
    }
    let ctx = live();
    settle("users", || {
        let s = script_lines("users", &[]);
        let b = builtin_lines(&mut Check::new(Builtin::Users), &ctx);
        let (s, b) = (fields(&s[0]), fields(&b[0]));
        let set = |f: &str| f.split(',').map(str::to_string).collect::<BTreeSet<_>>();
        equal("user count", s[0], b[0])?;
        // Ties among the most active users may fall either way as
        // processes come and go: the top one must agree, the rest overlap.
        let (sa, ba) = (
            s[1].split(',').collect::<Vec<_>>(),
            b[1].split(',').collect::<Vec<_>>(),
        );
        equal("most active user", sa[0], ba[0])?;
        equal("root users", s[2], b[2])?;
        if set(s[3]) != set(b[3]) {
            return Err(format!("logged in: script {} vs built-in {}", s[3], b[3]));
        }
        equal("level", s[4], b[4])
    });
}

/// A child process killed (and reaped) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn live_proc_finds_the_same_busy_loop() {
    if !can_run("proc") {
        return;
    }
    let child = KillOnDrop(
        Command::new("bash")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn a busy loop"),
    );
    let pid = child.0.id().to_string();
    // Low, so a loop sharing two cores with a loaded machine still counts.
    let e = env(&[
        ("PIHEALTH_PROC_THRESHOLD", "20"),
        ("PIHEALTH_PROC_RECHECK", "0.2"),
    ]);
    let ctx = Context::new(Roots::default(), Limits::from_env(&e));
    let mut check = Check::new(Builtin::Proc);
    builtin_lines(&mut check, &ctx);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(300));
        let s = script_lines("proc", &e);
        let b = builtin_lines(&mut check, &ctx);
        let find = |lines: &[String]| {
            lines
                .iter()
                .find(|l| l.split(' ').nth(1) == Some(pid.as_str()))
                .cloned()
        };
        if let (Some(sl), Some(bl)) = (find(&s), find(&b)) {
            let (sf, bf) = (fields(&sl), fields(&bl));
            assert_eq!(sf[0], "bash");
            assert_eq!(sf[0], bf[0], "name");
            assert_eq!(sf[2], bf[2], "user");
            close("cpu %", sf[3], bf[3], 5.0);
            close("mem %", sf[4], bf[4], 0.5);
            // Processes both list (by pid and name) show the same figures;
            // the lists may differ at the threshold's edge.
            for bl in &b {
                let bf = fields(bl);
                if let Some(sl) = s.iter().find(|l| fields(l)[..2] == bf[..2]) {
                    let sf = fields(sl);
                    assert_eq!(sf[2], bf[2], "user of {bl}");
                    close(&format!("cpu % of {bl}"), sf[3], bf[3], 5.0);
                }
            }
            return;
        }
        last = (s, b);
    }
    panic!(
        "busy loop {pid} not listed by both: script {:?}, built-in {:?}",
        last.0, last.1
    );
}

// ---- the agent ----

#[test]
fn agent_with_builtins_delivers_the_six_types() {
    const TYPES: [&str; 6] = ["cpu", "mem", "disk", "proc", "users", "sysinfo"];
    let c = Cluster::new(BLOCK);
    let master_cfg = c.master_config(1, "");
    let _master = c.start("master", &master_cfg, "master");
    let collectors: String = TYPES
        .iter()
        .map(|t| format!("  - {{name: {t}, builtin: {t}, interval: 1s}}\n"))
        .collect();
    let cfg = c.agent_config(0, &collectors, "");
    let mut agent = c.start("agent", &cfg, "agent");
    let deadline = Instant::now() + PATIENCE;
    for t in TYPES {
        while c.archived("pi1", t).lines().count() < 3 {
            assert!(
                Instant::now() < deadline,
                "pi1/{t} never reached the master: {}",
                agent.stderr()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
    let width = |t: &str| match t {
        "cpu" => 6,
        "mem" => 5,
        "disk" => 5,
        "users" => 5,
        "sysinfo" => 13,
        _ => 0,
    };
    for t in TYPES {
        for line in c.archived("pi1", t).lines() {
            let (time, rest) = line.split_once(' ').expect("timestamp then output");
            chrono::DateTime::parse_from_rfc3339(time).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert!(!rest.ends_with("unknown"), "{t}: {line:?}");
            // Every word has a name in the type's schema.
            let words: Vec<&str> = rest.split(' ').collect();
            assert!(
                pihealth::schema::name_fields(t, &words).is_some(),
                "{t}: {line:?} does not fit its schema"
            );
            if width(t) > 0 {
                assert_eq!(rest.split(' ').count(), width(t), "{t}: {line:?}");
            }
        }
    }
    // No process started for a check: the agent has no children.
    // (Children are listed per thread: the scheduler is not the main one.)
    let children: String = fs::read_dir(format!("/proc/{}/task", agent.pid()))
        .expect("the agent's threads")
        .flatten()
        .map(|task| fs::read_to_string(task.path().join("children")).unwrap_or_default())
        .collect();
    assert!(children.trim().is_empty(), "the agent started {children:?}");
    assert_eq!(agent.terminate(), Some(0));
}
