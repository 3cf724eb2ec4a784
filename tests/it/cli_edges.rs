//! Issue 16 item 6: the operator commands' rough edges. `alarms` on an
//! empty directory says so; a reader that closes the pipe early ends the
//! output quietly with status 0; `--since`/`--until` take dates and words;
//! an empty or inverted interval is refused (exit 2). No daemon needed:
//! the master's files are written directly. Block 91 (addresses only).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::util::*;

const BLOCK: u8 = 91;

#[test]
fn alarms_with_no_data_says_so() {
    let cluster = Cluster::new(BLOCK);
    cluster.master_config(0, "");
    for args in [
        &["alarms", "-c", "master.yaml"][..],
        &["alarms", "-c", "master.yaml", "--open"],
    ] {
        let out = cluster.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert!(stdout.contains("no alarms recorded yet"), "{stdout}");
        assert!(stdout.contains("alarms.log"), "{stdout}");
    }
    // JSON stays empty: a program reading it expects objects or nothing.
    let out = cluster.run(&["alarms", "-c", "master.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
}

/// `pi1`'s cpu log as one archive: `lines` lines, the last ones the most
/// recent: one 3 days ago, then the rest 30 minutes ago.
fn write_archive(cluster: &Cluster, lines: usize) {
    let now = chrono::Utc::now();
    // The recent lines are half an hour old, but never before local
    // midnight: `--until today` must find them after it at 00:10 as well.
    let midnight = chrono::Local::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(chrono::Local).earliest())
        .expect("local midnight")
        .with_timezone(&chrono::Utc);
    let recent = (now - chrono::Duration::minutes(30))
        .max(midnight + chrono::Duration::seconds(1))
        .min(now);
    let mut text = String::new();
    for i in 0..lines {
        let t = if i == 0 {
            now - chrono::Duration::days(3)
        } else {
            recent
        };
        text.push_str(&format!(
            "{} {i} 0.1 0.1 normal\n",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    let dir = cluster.path("master/logbackup/pi1");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::create_dir_all(cluster.path("master/log/pi1")).expect("mkdir");
    let name = pihealth::storage::archive_name("cpu", now);
    let file = std::fs::File::create(dir.join(name)).expect("archive");
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(text.as_bytes()).expect("gzip");
    gz.finish().expect("gzip");
}

/// Run `args` reading one line of its output, then close the pipe, as
/// `| head -1` does; the exit status and stderr.
fn head_1(cluster: &Cluster, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cluster.dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut first)
        .expect("a first line");
    assert!(!first.is_empty(), "{args:?} printed nothing");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn closed_pipe_ends_output_quietly() {
    let cluster = Cluster::new(BLOCK);
    cluster.master_config(0, "");
    // Far more than a pipe holds, so the writer surely meets the closed end.
    write_archive(&cluster, 50_000);
    let statics: Vec<pihealth::config::StaticAgent> = (0..2000)
        .map(|i| pihealth::config::StaticAgent {
            name: Some(format!("pi{i}")),
            control: format!("10.1.{}.{}:8000", i / 250, i % 250 + 1)
                .parse()
                .expect("address"),
        })
        .collect();
    pihealth::master::registry::Registry::open(&cluster.master_log(), &statics, 8001)
        .and_then(|r| r.flush())
        .expect("registry");
    for args in [
        &["logs", "-c", "master.yaml", "pi1", "cpu"][..],
        &["logs", "-c", "master.yaml", "pi1", "cpu", "--json"],
        &["logs", "-c", "master.yaml", "pi1", "cpu", "--follow"],
        &["status", "-c", "master.yaml"],
    ] {
        let (code, stderr) = head_1(&cluster, args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[test]
fn since_and_until_take_dates_and_words() {
    let cluster = Cluster::new(BLOCK);
    cluster.master_config(0, "");
    write_archive(&cluster, 3);
    let count = |extra: &[&str]| -> usize {
        let mut args = vec!["logs", "-c", "master.yaml", "pi1", "cpu"];
        args.extend_from_slice(extra);
        cluster.run_lines(&args).len()
    };
    let day_before = (chrono::Local::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(count(&[]), 3);
    assert_eq!(count(&["--since", "yesterday"]), 2);
    assert_eq!(count(&["--since", &day_before]), 2);
    assert_eq!(count(&["--since", "2h"]), 2);
    assert_eq!(count(&["--until", "2h"]), 1);
    assert_eq!(count(&["--until", "now"]), 3);
    assert_eq!(count(&["--since", "4d", "--until", "today"]), 1);

    // An empty or inverted interval, and a time that is none: exit 2.
    for (extra, word) in [
        (
            &["--since", "1h", "--until", "2h"][..],
            "not before --until",
        ),
        (
            &["--since", "today", "--until", "today"],
            "not before --until",
        ),
        (&["--since", "sometime"], "yesterday"),
        (&["--until", "2026-02-30"], "2026-02-30"),
    ] {
        let mut args = vec!["logs", "-c", "master.yaml", "pi1", "cpu"];
        args.extend_from_slice(extra);
        let out = cluster.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(word), "{extra:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{extra:?}");
    }
    let out = cluster.run(&["alarms", "-c", "master.yaml", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
