//! The standard monitoring scripts in `scripts/`, run for real on this
//! machine's /proc. The agent parses their output, so the format is checked
//! strictly: field counts, numbers that parse, percentages in range, level
//! words last. Thresholds are forced through the environment to check the
//! level rule. Nothing here depends on how fast the machine is.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// A command for `scripts/<name>` with no PIHEALTH_* variable inherited from
/// the outside, then `env` set (a value of `None` leaves the variable unset).
fn command(name: &str, env: &[(&str, Option<&str>)]) -> Command {
    let mut cmd = Command::new(script(name));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PIHEALTH_") {
            cmd.env_remove(key);
        }
    }
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn output(name: &str, env: &[(&str, Option<&str>)]) -> Output {
    command(name, env)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

/// Runs a script that must succeed and returns its stdout lines, each
/// checked against the common contract: single spaces between non-empty
/// fields, and a level word last.
fn run(name: &str, env: &[(&str, Option<&str>)]) -> Vec<String> {
    let out = output(name, env);
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed ({}): stdout {stdout:?} stderr {stderr:?}",
        out.status
    );
    assert!(
        stdout.ends_with('\n'),
        "{name}: output not newline-terminated: {stdout:?}"
    );
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    assert!(!lines.is_empty(), "{name} printed nothing");
    for line in &lines {
        assert!(!line.is_empty(), "{name}: empty line in {stdout:?}");
        assert!(
            line.split(' ').all(|f| !f.is_empty()) && !line.contains(['\t', '\r']),
            "{name}: fields must be separated by single spaces: {line:?}"
        );
        let last = line.rsplit(' ').next().unwrap();
        level(last);
    }
    lines
}

/// Runs a script that prints exactly one line and returns its fields.
fn run_one(name: &str, env: &[(&str, Option<&str>)], fields: usize) -> Vec<String> {
    let lines = run(name, env);
    assert_eq!(lines.len(), 1, "{name} must print one line: {lines:?}");
    let f: Vec<String> = lines[0].split(' ').map(str::to_owned).collect();
    assert_eq!(f.len(), fields, "{name}: field count in {:?}", lines[0]);
    f
}

/// A level word, ordered so that comparisons mean "worse than".
fn level(word: &str) -> u8 {
    match word {
        "normal" => 0,
        "note" => 1,
        "warning" => 2,
        "critical" => 3,
        other => panic!("not a level word: {other:?}"),
    }
}

/// The level rule: value >= critical → critical, >= warning → warning,
/// >= note → note, else normal.
fn expected(value: f64, note: f64, warning: f64, critical: f64) -> &'static str {
    if value >= critical {
        "critical"
    } else if value >= warning {
        "warning"
    } else if value >= note {
        "note"
    } else {
        "normal"
    }
}

fn int(s: &str) -> u64 {
    s.parse()
        .unwrap_or_else(|_| panic!("not an integer: {s:?}"))
}

fn float(s: &str) -> f64 {
    let v: f64 = s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}"));
    assert!(
        v.is_finite() && v >= 0.0,
        "not a non-negative number: {s:?}"
    );
    v
}

/// A number printed with exactly two decimals, like `31.56`.
fn two_decimals(s: &str) -> f64 {
    let (whole, frac) = s
        .split_once('.')
        .unwrap_or_else(|| panic!("no decimals: {s:?}"));
    assert!(
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && frac.len() == 2
            && frac.bytes().all(|b| b.is_ascii_digit()),
        "not a number with two decimals: {s:?}"
    );
    float(s)
}

fn percent(s: &str) -> f64 {
    let v = two_decimals(s);
    assert!((0.0..=100.0).contains(&v), "percentage out of range: {s:?}");
    v
}

/// A directory shaped like /sys/class/thermal with the given zone contents
/// (millidegrees, or anything else to test that junk is skipped).
fn thermal(zones: &[&str]) -> TempDir {
    let dir = TempDir::new().unwrap();
    for (i, content) in zones.iter().enumerate() {
        let zone = dir.path().join(format!("thermal_zone{i}"));
        fs::create_dir(&zone).unwrap();
        fs::write(zone.join("temp"), format!("{content}\n")).unwrap();
    }
    dir
}

fn path_str(dir: &TempDir) -> &str {
    dir.path().to_str().unwrap()
}

// ---------------------------------------------------------------- cpu.sh

const FAST_CPU: (&str, Option<&str>) = ("PIHEALTH_CPU_WINDOW", Some("0.1"));

#[test]
fn cpu_prints_loads_usage_temperature_and_level() {
    let f = run_one("cpu.sh", &[FAST_CPU], 6);
    for load in &f[0..3] {
        two_decimals(load); // as in /proc/loadavg
    }
    let usage = percent(&f[3]);
    let mut want = expected(usage, 70.0, 80.0, 95.0);
    if f[4] != "-" {
        let temp: f64 = f[4].parse().expect("temperature");
        assert!(
            f[4].split_once('.').is_some_and(|(_, d)| d.len() == 2),
            "temp {:?}",
            f[4]
        );
        let t = expected(temp, 50.0, 70.0, 80.0);
        if level(t) > level(want) {
            want = t;
        }
    }
    assert_eq!(f[5], want, "level of {f:?} with default thresholds");
}

#[test]
fn cpu_thresholds_force_the_level() {
    // Usage is 0..=100, so these thresholds pin the level whatever the load.
    let always_note = [FAST_CPU, ("PIHEALTH_CPU_NOTE", Some("0"))];
    assert_ne!(run_one("cpu.sh", &always_note, 6)[5], "normal");
    let always_warn = [
        FAST_CPU,
        ("PIHEALTH_CPU_NOTE", Some("0")),
        ("PIHEALTH_CPU_WARNING", Some("0")),
        ("PIHEALTH_CPU_CRITICAL", Some("100.5")),
    ];
    assert_eq!(run_one("cpu.sh", &always_warn, 6)[5], "warning");
    let always_critical = [FAST_CPU, ("PIHEALTH_CPU_CRITICAL", Some("0"))];
    assert_eq!(run_one("cpu.sh", &always_critical, 6)[5], "critical");
    let no_sensor = thermal(&[]);
    let never = [
        FAST_CPU,
        ("PIHEALTH_CPU_NOTE", Some("100.5")),
        ("PIHEALTH_CPU_WARNING", Some("101")),
        ("PIHEALTH_CPU_CRITICAL", Some("102")),
        ("PIHEALTH_THERMAL_DIR", Some(path_str(&no_sensor))),
    ];
    assert_eq!(run_one("cpu.sh", &never, 6)[5], "normal");
}

#[test]
fn cpu_temperature_is_the_hottest_zone_and_can_raise_the_level() {
    // Zone 2 is junk and zone 3 looks like a zone that cannot be read: skipped.
    let zones = thermal(&["48312", "55100", "bogus", ""]);
    let dir = path_str(&zones);
    let calm = |extra: &[(&'static str, Option<&'static str>)]| {
        let mut env = vec![
            FAST_CPU,
            ("PIHEALTH_CPU_NOTE", Some("100.5")),
            ("PIHEALTH_CPU_WARNING", Some("101")),
            ("PIHEALTH_CPU_CRITICAL", Some("102")),
            ("PIHEALTH_THERMAL_DIR", Some(dir)),
        ];
        env.extend_from_slice(extra);
        run_one("cpu.sh", &env, 6)
    };
    let f = calm(&[]);
    assert_eq!(f[4], "55.10");
    assert_eq!(
        f[5], "note",
        "55.10 °C is above the default 50 °C note threshold"
    );
    // Boundary: value >= warning threshold is a warning.
    assert_eq!(
        calm(&[("PIHEALTH_TEMP_WARNING", Some("55.1"))])[5],
        "warning"
    );
    assert_eq!(calm(&[("PIHEALTH_TEMP_NOTE", Some("55.11"))])[5], "normal");
    assert_eq!(
        calm(&[("PIHEALTH_TEMP_CRITICAL", Some("55.1"))])[5],
        "critical"
    );
    // The worse of usage and temperature wins.
    let hot_and_busy = [
        FAST_CPU,
        ("PIHEALTH_CPU_NOTE", Some("0")),
        ("PIHEALTH_CPU_WARNING", Some("100.5")),
        ("PIHEALTH_CPU_CRITICAL", Some("101")),
        ("PIHEALTH_TEMP_WARNING", Some("20")),
        ("PIHEALTH_THERMAL_DIR", Some(dir)),
    ];
    assert_eq!(run_one("cpu.sh", &hot_and_busy, 6)[5], "warning");
    // No sensor: temperature is "-" and does not count.
    let none = thermal(&[]);
    let f = run_one(
        "cpu.sh",
        &[
            FAST_CPU,
            ("PIHEALTH_CPU_NOTE", Some("100.5")),
            ("PIHEALTH_CPU_WARNING", Some("101")),
            ("PIHEALTH_CPU_CRITICAL", Some("102")),
            ("PIHEALTH_TEMP_NOTE", Some("0")),
            ("PIHEALTH_THERMAL_DIR", Some(path_str(&none))),
        ],
        6,
    );
    assert_eq!(&f[4..], ["-", "normal"]);
}

#[test]
fn cpu_window_may_be_zero_or_fractional() {
    for w in ["0", "0.05", "0.25"] {
        let f = run_one("cpu.sh", &[("PIHEALTH_CPU_WINDOW", Some(w))], 6);
        percent(&f[3]);
    }
}

// ---------------------------------------------------------------- mem.sh

fn meminfo_total_mib() -> u64 {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    let line = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap();
    int(line.split_whitespace().nth(1).unwrap()) / 1024
}

fn mem(state: &TempDir, extra: &[(&str, Option<&str>)]) -> Vec<String> {
    let mut env = vec![("PIHEALTH_STATE_DIR", Some(path_str(state)))];
    env.extend_from_slice(extra);
    run_one("mem.sh", &env, 5)
}

#[test]
fn mem_prints_total_used_percent_average_and_level() {
    let state = TempDir::new().unwrap();
    let f = mem(&state, &[]);
    let (total, used) = (int(&f[0]), int(&f[1]));
    assert_eq!(total, meminfo_total_mib());
    assert!(used <= total, "{f:?}");
    let pct = percent(&f[2]);
    // used/total in MiB is floored, the percentage is exact: within 1 MiB.
    assert!(
        (pct / 100.0 * total as f64 - used as f64).abs() <= 1.0 + total as f64 / 10_000.0,
        "{f:?}"
    );
    // First run: the average is the current value, and it is saved.
    assert_eq!(f[3], f[2]);
    let saved = fs::read_to_string(state.path().join("mem.dynavg")).unwrap();
    assert_eq!(saved.trim(), f[3]);
    assert_eq!(f[4], expected(pct, 70.0, 80.0, 90.0));
    // Nothing but the state file is left behind (the temp file was renamed).
    let names: Vec<_> = fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["mem.dynavg"]);
}

#[test]
fn mem_dynamic_average_is_30_percent_previous_70_percent_current() {
    let state = TempDir::new().unwrap();
    let file = state.path().join("mem.dynavg");
    // Seeded: exact up to the final rounding to two decimals.
    fs::write(&file, "10.00\n").unwrap();
    let f = mem(&state, &[]);
    let (cur, avg) = (percent(&f[2]), percent(&f[3]));
    assert!((avg - (0.3 * 10.0 + 0.7 * cur)).abs() <= 0.0051, "{f:?}");
    assert_eq!(fs::read_to_string(&file).unwrap().trim(), f[3]);
    // Chained: the next run starts from what this one saved.
    let g = mem(&state, &[]);
    let (cur2, avg2) = (percent(&g[2]), percent(&g[3]));
    assert!(
        (avg2 - (0.3 * avg + 0.7 * cur2)).abs() <= 0.0051,
        "{f:?} then {g:?}"
    );
    assert_eq!(fs::read_to_string(&file).unwrap().trim(), g[3]);
    // A high previous average pulls it up.
    fs::write(&file, "100").unwrap();
    let h = mem(&state, &[]);
    let (cur3, avg3) = (percent(&h[2]), percent(&h[3]));
    assert!((avg3 - (30.0 + 0.7 * cur3)).abs() <= 0.0051, "{h:?}");
}

#[test]
fn mem_garbled_state_counts_as_first_run() {
    let state = TempDir::new().unwrap();
    for junk in ["", "abc\n", "-5\n", "1e3\n"] {
        fs::write(state.path().join("mem.dynavg"), junk).unwrap();
        let f = mem(&state, &[]);
        assert_eq!(f[3], f[2], "state {junk:?} → {f:?}");
    }
}

#[test]
fn mem_state_dir_defaults_to_tmpdir() {
    let tmp = TempDir::new().unwrap();
    let f = run_one(
        "mem.sh",
        &[
            ("PIHEALTH_STATE_DIR", None),
            ("TMPDIR", Some(path_str(&tmp))),
        ],
        5,
    );
    let saved = fs::read_to_string(tmp.path().join("mem.dynavg")).unwrap();
    assert_eq!(saved.trim(), f[3]);
}

#[test]
fn mem_unwritable_state_dir_still_reports() {
    let state = TempDir::new().unwrap();
    let missing = state.path().join("does-not-exist");
    let out = output(
        "mem.sh",
        &[("PIHEALTH_STATE_DIR", Some(missing.to_str().unwrap()))],
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    assert_eq!(stdout.trim_end().split(' ').count(), 5, "{stdout:?}");
    assert!(
        !out.stderr.is_empty(),
        "the lost average is reported on stderr"
    );
}

#[test]
fn mem_thresholds_force_the_level() {
    let state = TempDir::new().unwrap();
    assert_eq!(
        mem(&state, &[("PIHEALTH_MEM_WARNING", Some("0"))])[4],
        "warning"
    );
    let note = [
        ("PIHEALTH_MEM_NOTE", Some("0")),
        ("PIHEALTH_MEM_WARNING", Some("100.5")),
    ];
    assert_eq!(mem(&state, &note)[4], "note");
    let never = [
        ("PIHEALTH_MEM_NOTE", Some("100.5")),
        ("PIHEALTH_MEM_WARNING", Some("101")),
    ];
    assert_eq!(mem(&state, &never)[4], "normal");
    // Empty means default.
    let f = mem(
        &state,
        &[
            ("PIHEALTH_MEM_NOTE", Some("")),
            ("PIHEALTH_MEM_WARNING", Some("")),
        ],
    );
    assert_eq!(f[4], expected(percent(&f[2]), 70.0, 80.0, 90.0));
    // The level follows the used %, not the average.
    fs::write(state.path().join("mem.dynavg"), "100.00").unwrap();
    let f = mem(&state, &[]);
    assert_eq!(f[4], expected(percent(&f[2]), 70.0, 80.0, 90.0));
    // Boundary: used % equal to the threshold is a warning (memory moves
    // between runs: retry until two runs agree).
    for _ in 0..50 {
        let pct = mem(&state, &[])[2].clone();
        let f = mem(&state, &[("PIHEALTH_MEM_WARNING", Some(pct.as_str()))]);
        if f[2] == pct {
            assert_eq!(f[4], "warning", "{f:?} with warning threshold {pct}");
            return;
        }
    }
    panic!("memory use never stood still for two runs");
}

// ---------------------------------------------------------------- disk.sh

/// Lines of disk.sh split into fields, each line checked; the last one is
/// the total line.
fn disk(env: &[(&str, Option<&str>)]) -> Vec<Vec<String>> {
    let lines = run("disk.sh", env);
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| l.split(' ').map(str::to_owned).collect())
        .collect();
    for (i, f) in rows.iter().enumerate() {
        assert_eq!(f.len(), 5, "disk.sh field count: {f:?}");
        let (total, free) = (int(&f[1]), int(&f[2]));
        assert!(free <= total, "{f:?}");
        percent(&f[3]);
        let last = i + 1 == rows.len();
        assert_eq!(
            f[0] == "total",
            last,
            "only the last line is the total: {lines:?}"
        );
        if !last {
            assert!(f[0].starts_with('/'), "mount point: {f:?}");
            assert!(total > 0, "empty filesystems are skipped: {f:?}");
        }
    }
    rows
}

#[test]
fn disk_lists_real_filesystems_then_a_total() {
    let rows = disk(&[]);
    let (fs_rows, total) = rows.split_at(rows.len() - 1);
    let total = &total[0];
    for f in &rows {
        assert_eq!(f[4], expected(percent(&f[3]), 80.0, 90.0, 95.0), "{f:?}");
    }
    let mounts: Vec<&str> = fs_rows.iter().map(|f| f[0].as_str()).collect();
    for pseudo in [
        "/proc",
        "/sys",
        "/dev",
        "/dev/shm",
        "/run",
        "/sys/fs/cgroup",
    ] {
        assert!(
            !mounts.contains(&pseudo),
            "{pseudo} is not a real filesystem: {mounts:?}"
        );
    }
    let mut unique = mounts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), mounts.len(), "{mounts:?}");
    // The total line sums the others (each MiB figure is floored: at most
    // one MiB lost per line).
    let n = fs_rows.len() as u64;
    for col in [1, 2] {
        let sum: u64 = fs_rows.iter().map(|f| int(&f[col])).sum();
        let t = int(&total[col]);
        assert!(t >= sum && t <= sum + n, "column {col}: {rows:?}");
    }
    if fs_rows.is_empty() {
        assert_eq!(total.join(" "), "total 0 0 0.00 normal");
    }
}

#[test]
fn disk_thresholds_force_the_level() {
    for f in disk(&[("PIHEALTH_DISK_NOTE", Some("0"))]) {
        assert_ne!(f[4], "normal", "{f:?}");
    }
    let all = [
        ("PIHEALTH_DISK_NOTE", Some("0")),
        ("PIHEALTH_DISK_WARNING", Some("0")),
    ];
    for f in disk(&all) {
        assert_eq!(f[4], "warning", "{f:?}");
    }
    let never = [
        ("PIHEALTH_DISK_NOTE", Some("100.5")),
        ("PIHEALTH_DISK_WARNING", Some("101")),
    ];
    for f in disk(&never) {
        assert_eq!(f[4], "normal", "{f:?}");
    }
    // Boundary: a value equal to the threshold reaches it. Usage may move
    // between two runs (other tests write files), so retry until the total
    // is the same in both.
    for _ in 0..20 {
        let pct = disk(&[]).pop().unwrap()[3].clone();
        let at = [
            ("PIHEALTH_DISK_NOTE", Some(pct.as_str())),
            ("PIHEALTH_DISK_WARNING", Some("101")),
        ];
        let total = disk(&at).pop().unwrap();
        if total[3] == pct {
            assert_eq!(total[4], "note", "{total:?} with note threshold {pct}");
            return;
        }
    }
    panic!("disk usage never stood still for two runs");
}

// ---------------------------------------------------------------- proc.sh

/// proc.sh lines as fields; each checked against the contract.
fn procs(env: &[(&str, Option<&str>)]) -> Vec<Vec<String>> {
    let lines = run("proc.sh", env);
    if lines == ["none normal"] {
        return Vec::new();
    }
    lines
        .iter()
        .map(|l| {
            let f: Vec<String> = l.split(' ').map(str::to_owned).collect();
            assert_eq!(f.len(), 6, "proc.sh field count: {l:?}");
            int(&f[1]);
            assert!(!f[2].is_empty());
            // ps prints one decimal; CPU may pass 100 for multi-threaded processes.
            let cpu = float(&f[3]);
            let mem = float(&f[4]);
            assert!(mem <= 100.0, "{l:?}");
            let want = if cpu >= 80.0 || mem >= 80.0 {
                "warning"
            } else {
                "note"
            };
            assert_eq!(f[5], want, "{l:?}");
            f
        })
        .collect()
}

#[test]
fn proc_lists_processes_seen_on_both_looks() {
    let rows = procs(&[
        ("PIHEALTH_PROC_RECHECK", Some("0.2")),
        ("PIHEALTH_PROC_THRESHOLD", Some("0")),
    ]);
    assert!(
        !rows.is_empty(),
        "with threshold 0 every lasting process is listed"
    );
    // This test process lives through both looks.
    let me = std::process::id().to_string();
    assert!(rows.iter().any(|f| f[1] == me), "pid {me} not in {rows:?}");
    let mut pids: Vec<&str> = rows.iter().map(|f| f[1].as_str()).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), rows.len(), "a pid is listed once");
}

#[test]
fn proc_prints_none_when_nothing_is_busy() {
    // No process reaches 100000% CPU or memory.
    let lines = run(
        "proc.sh",
        &[
            ("PIHEALTH_PROC_RECHECK", Some("0.2")),
            ("PIHEALTH_PROC_THRESHOLD", Some("100000")),
        ],
    );
    assert_eq!(lines, ["none normal"]);
}

/// A child process killed (and reaped) when dropped, even if the test panics.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ps_cpu(pid: u32) -> Option<f64> {
    let out = Command::new("ps")
        .args(["-o", "pcpu=", "-p", &pid.to_string()])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[test]
fn proc_finds_a_busy_loop() {
    let child = KillOnDrop(
        Command::new("bash")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn a busy loop"),
    );
    let pid = child.0.id();
    let env = [
        ("PIHEALTH_PROC_RECHECK", Some("0.5")),
        // Low, so a loop sharing two cores with a loaded machine still counts.
        ("PIHEALTH_PROC_THRESHOLD", Some("20")),
    ];
    // ps's %CPU is CPU time over the process's lifetime, so on a machine
    // crowded by parallel tests the loop can sit near 50% for a while. Ask
    // proc.sh each time ps shows the loop clearly above the threshold, until
    // it is found; the deadline only guards against a hang.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        if ps_cpu(pid).is_some_and(|c| c >= 25.0) {
            last = procs(&env);
            if let Some(f) = last.iter().find(|f| f[1] == pid.to_string()) {
                assert_eq!(f[0], "bash", "{f:?}");
                assert_eq!(f[2], current_user(), "{f:?}");
                assert!(float(&f[3]) >= 20.0, "{f:?}");
                return;
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    panic!("busy loop {pid} not found by proc.sh: {last:?}");
}

/// The user name ps shows for this process.
fn current_user() -> String {
    let out = Command::new("ps")
        .args(["-o", "user:32=", "-p", &std::process::id().to_string()])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

// ---------------------------------------------------------------- users.sh

fn list(s: &str) -> Vec<&str> {
    if s == "-" {
        return Vec::new();
    }
    let items: Vec<&str> = s.split(',').collect();
    assert!(
        items.iter().all(|i| !i.is_empty()),
        "empty item in list {s:?}"
    );
    items
}

#[test]
fn users_reports_sessions_activity_and_root_rights() {
    let f = run_one("users.sh", &[], 5);
    let count = int(&f[0]);
    let who = Command::new("who").output().unwrap();
    let who = String::from_utf8_lossy(&who.stdout).into_owned();
    let mut users: Vec<&str> = who
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    users.sort();
    users.dedup();
    assert_eq!(count, users.len() as u64, "who says {who:?}");
    let sessions = list(&f[3]);
    assert_eq!(
        sessions.len(),
        who.lines().filter(|l| !l.trim().is_empty()).count(),
        "{f:?}"
    );
    for s in &sessions {
        let (user, rest) = s
            .split_once('@')
            .unwrap_or_else(|| panic!("user@source:tty {s:?}"));
        assert!(users.contains(&user), "{s:?}");
        assert!(
            rest.rsplit_once(':')
                .is_some_and(|(_, tty)| !tty.is_empty()),
            "{s:?}"
        );
    }

    let active = list(&f[1]);
    assert!((1..=3).contains(&active.len()), "{f:?}");
    assert!(
        active.contains(&current_user().as_str()) || active.len() == 3,
        "{f:?}"
    );

    // Root rights, from the files as the test reads them.
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let uid0: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|p| p.len() >= 4 && p[2] == "0")
        .map(|p| p[0])
        .collect();
    let root_users = list(&f[2]);
    for u in &uid0 {
        assert!(root_users.contains(u), "{u} has uid 0: {f:?}");
    }
    let mut unique = root_users.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), root_users.len(), "{f:?}");
    assert_eq!(f[4], if uid0.len() > 1 { "note" } else { "normal" });
}

/// A glibc `struct utmp` record (384 bytes, little-endian).
fn utmp_record(kind: i16, pid: i32, line: &str, user: &str, host: &str) -> Vec<u8> {
    let mut r = vec![0u8; 384];
    r[0..2].copy_from_slice(&kind.to_le_bytes());
    r[4..8].copy_from_slice(&pid.to_le_bytes());
    r[8..8 + line.len()].copy_from_slice(line.as_bytes());
    r[44..44 + user.len()].copy_from_slice(user.as_bytes());
    r[76..76 + host.len()].copy_from_slice(host.as_bytes());
    r
}

#[test]
fn users_reads_utmp_sessions() {
    // Live sessions (this test's pid exists): remote, local console, a
    // source with a space (mosh), an X display (local); a session whose
    // process is gone and a dead record are not listed.
    let dir = TempDir::new().unwrap();
    let me = std::process::id() as i32;
    let mut utmp = Vec::new();
    for (kind, pid, line, user, host) in [
        (7, me, "pts/0", "pi", "192.168.1.20"),
        (7, me, "tty1", "pi", ""),
        (7, me, "pts/1", "alice", "mosh [1234]"),
        (7, me, "tty7", "bob", ":0"),
        (7, 999_999_999, "pts/5", "gone", "10.0.0.1"),
        (8, me, "pts/6", "dead", ""),
    ] {
        utmp.extend(utmp_record(kind, pid, line, user, host));
    }
    let file = dir.path().join("utmp");
    fs::write(&file, utmp).unwrap();
    let f = run_one(
        "users.sh",
        &[("PIHEALTH_UTMP", Some(file.to_str().unwrap()))],
        5,
    );
    assert_eq!(f[0], "3");
    assert_eq!(
        f[3],
        "pi@192.168.1.20:pts/0,pi@:tty1,alice@mosh_[1234]:pts/1,bob@:tty7"
    );
    // No utmp at all: nobody.
    let none = dir.path().join("none");
    let f = run_one(
        "users.sh",
        &[("PIHEALTH_UTMP", Some(none.to_str().unwrap()))],
        5,
    );
    assert_eq!((f[0].as_str(), f[3].as_str()), ("0", "-"));
}

// ---------------------------------------------------------------- sysinfo.sh

fn first_line(path: &str) -> String {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn sysinfo_summarises_the_host() {
    let state = TempDir::new().unwrap();
    let f = run_one("sysinfo.sh", &[], 13);
    assert_eq!(
        f[0],
        first_line("/proc/sys/kernel/hostname").replace(' ', "_")
    );
    assert!(!f[1].is_empty());
    if let Ok(release) = fs::read_to_string("/etc/os-release") {
        if let Some(l) = release.lines().find(|l| l.starts_with("PRETTY_NAME=")) {
            let name = l["PRETTY_NAME=".len()..].trim_matches(['"', '\'']);
            assert_eq!(f[1], name.replace(' ', "_"));
        }
    }
    assert_eq!(f[2], first_line("/proc/sys/kernel/osrelease"));
    let uptime = int(&f[3]);
    let proc_uptime: f64 = first_line("/proc/uptime")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        uptime as f64 <= proc_uptime,
        "uptime {uptime} vs {proc_uptime}"
    );
    float(&f[4]);

    // Same figures as disk.sh's total line and mem.sh.
    let disk_total = disk(&[]).pop().unwrap();
    assert_eq!(f[5], disk_total[1], "disk total MiB");
    let disk_pct = percent(&f[6]);
    assert!(
        (disk_pct - percent(&disk_total[3])).abs() < 1.0,
        "{f:?} vs {disk_total:?}"
    );
    let m = mem(&state, &[]);
    assert_eq!(f[7], m[0], "memory total MiB");
    let mem_pct = percent(&f[8]);

    assert_eq!(f[10], expected(disk_pct, 80.0, 90.0, 95.0));
    assert_eq!(f[11], expected(mem_pct, 70.0, 80.0, 90.0));
    if f[9] == "-" {
        assert_eq!(f[12], "normal");
    } else {
        assert_eq!(f[12], expected(float(&f[9]), 50.0, 70.0, 80.0));
    }
}

#[test]
fn sysinfo_thresholds_force_the_levels() {
    let zones = thermal(&["61000", "40000"]);
    let dir = path_str(&zones);
    let f = run_one(
        "sysinfo.sh",
        &[
            ("PIHEALTH_DISK_NOTE", Some("0")),
            ("PIHEALTH_DISK_WARNING", Some("100.5")),
            ("PIHEALTH_MEM_WARNING", Some("0")),
            ("PIHEALTH_THERMAL_DIR", Some(dir)),
        ],
        13,
    );
    assert_eq!(&f[9..], ["61.00", "note", "warning", "note"]);
    let f = run_one(
        "sysinfo.sh",
        &[
            ("PIHEALTH_DISK_NOTE", Some("100.5")),
            ("PIHEALTH_DISK_WARNING", Some("101")),
            ("PIHEALTH_MEM_NOTE", Some("100.5")),
            ("PIHEALTH_MEM_WARNING", Some("101")),
            ("PIHEALTH_TEMP_WARNING", Some("61")),
            ("PIHEALTH_THERMAL_DIR", Some(dir)),
        ],
        13,
    );
    assert_eq!(&f[9..], ["61.00", "normal", "normal", "warning"]);
    let none = thermal(&[]);
    let f = run_one(
        "sysinfo.sh",
        &[
            ("PIHEALTH_TEMP_NOTE", Some("0")),
            ("PIHEALTH_THERMAL_DIR", Some(path_str(&none))),
        ],
        13,
    );
    assert_eq!(&f[9..10], ["-"]);
    assert_eq!(f[12], "normal");
}

// ---------------------------------------------------------------- all

#[test]
fn bad_threshold_is_an_error_on_stderr() {
    let state = TempDir::new().unwrap();
    let cases = [
        ("cpu.sh", "PIHEALTH_CPU_NOTE"),
        ("cpu.sh", "PIHEALTH_TEMP_WARNING"),
        ("cpu.sh", "PIHEALTH_CPU_WINDOW"),
        ("mem.sh", "PIHEALTH_MEM_WARNING"),
        ("disk.sh", "PIHEALTH_DISK_NOTE"),
        ("proc.sh", "PIHEALTH_PROC_THRESHOLD"),
        ("proc.sh", "PIHEALTH_PROC_RECHECK"),
        ("sysinfo.sh", "PIHEALTH_MEM_NOTE"),
        ("sysinfo.sh", "PIHEALTH_DISK_WARNING"),
    ];
    for (name, var) in cases {
        for bad in ["abc", "-1", "80%", "1e2"] {
            let out = output(
                name,
                &[
                    (var, Some(bad)),
                    ("PIHEALTH_STATE_DIR", Some(path_str(&state))),
                ],
            );
            assert!(!out.status.success(), "{name} with {var}={bad} must fail");
            assert!(
                out.stdout.is_empty(),
                "{name} with {var}={bad} printed {:?}",
                out.stdout
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(var),
                "{name}: stderr should name {var}: {err:?}"
            );
        }
    }
}

#[test]
fn scripts_are_executable_posix_sh() {
    use std::os::unix::fs::PermissionsExt;
    for name in [
        "cpu.sh",
        "mem.sh",
        "disk.sh",
        "proc.sh",
        "users.sh",
        "sysinfo.sh",
    ] {
        let path = script(name);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert!(mode & 0o111 == 0o111, "{name} is not executable: {mode:o}");
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"), "{name} shebang");
        assert!(text.lines().any(|l| l == "set -u"), "{name} lacks set -u");
        // Every shell the scripts are for parses them (busybox's is run
        // for real in tests/it/busybox.rs).
        for shell in ["sh", "bash", "dash"] {
            let Ok(check) = Command::new(shell).arg("-n").arg(&path).output() else {
                continue;
            };
            assert!(
                check.status.success(),
                "{shell} -n {name}: {}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
}
