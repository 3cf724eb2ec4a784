//! `pihealth logs`: two hours of history across rotated archives and the
//! current log, read as one stream with every filter and output form.
//!
//! The history is written by the master's own archive code
//! (`HostArchive`), the same path a pull takes, so the files on disk are
//! exactly what a real master leaves behind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use pihealth::master::archive::{archive_files, HostArchive};
use pihealth::protocol::{PieceKind, PieceRef};

use crate::util::*;

/// Stream state the test keeps to hand the archive contiguous pieces.
struct Writer {
    archive: HostArchive,
    offset: u64,
}

impl Writer {
    fn store(&mut self, log_type: &str, text: &str) {
        let piece = PieceRef {
            log_type: log_type.into(),
            kind: PieceKind::Current,
            epoch: 7,
            start: self.offset,
            end: self.offset + text.len() as u64,
        };
        self.archive
            .store_current(&piece, 0, &mut text.as_bytes())
            .expect("store");
        self.archive.commit().expect("commit");
        self.offset = piece.end;
    }
}

fn stamp(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// Line `i` of the fake cpu history: every 20th is a warning, every 7th a note.
fn cpu_line(t: DateTime<FixedOffset>, i: usize) -> String {
    let level = if i.is_multiple_of(20) {
        "warning"
    } else if i.is_multiple_of(7) {
        "note"
    } else {
        "normal"
    };
    format!("{} 0.{i} 0.08 0.08 {i}.5 - {level}\n", stamp(t))
}

fn setup() -> (Cluster, Writer, DateTime<FixedOffset>) {
    let c = Cluster::new(21);
    c.write(
        "master.yaml",
        "key_file: pihealth.key\nlog_dir: master/log\nbackup_dir: master/logbackup\n",
    );
    let archive = HostArchive::open(&c.master_log(), &c.master_backup(), "pi1", 4096)
        .unwrap_or_else(|_| panic!("open archive"));
    let mut w = Writer { archive, offset: 0 };
    // Two hours, one line every 10 s, stored in pulls of 6 lines: about a
    // dozen rotations at 4 KiB.
    let start = chrono::Local::now().fixed_offset() - chrono::Duration::hours(2);
    let mut batch = String::new();
    for i in 0..720 {
        batch.push_str(&cpu_line(
            start + chrono::Duration::seconds(10 * i as i64),
            i,
        ));
        if i % 6 == 5 {
            w.store("cpu", &batch);
            batch.clear();
        }
    }
    w.store(
        "mem",
        &format!("{} 100 50 50.00 50.00 normal\n", stamp(start)),
    );
    (c, w, start)
}

#[test]
fn logs_reads_archives_and_current_log_as_one_filtered_stream() {
    let (c, _w, start) = setup();
    let archives = archive_files(&c.master_backup(), "pi1", "cpu").unwrap();
    assert!(archives.len() >= 5, "history spans rotated archives");

    let all = c.run_lines(&["logs", "-c", "master.yaml", "pi1", "cpu"]);
    let expected: Vec<String> = (0..720)
        .map(|i| {
            cpu_line(start + chrono::Duration::seconds(10 * i as i64), i)
                .trim_end()
                .to_string()
        })
        .collect();
    assert_eq!(all, expected, "every line once, oldest first");

    // Relative --since: the last hour only.
    let hour = c.run_lines(&["logs", "-c", "master.yaml", "pi1", "cpu", "--since", "1h"]);
    assert!((355..=365).contains(&hour.len()), "{} lines", hour.len());
    assert_eq!(hour.last(), all.last());

    // RFC 3339 window: [start+10m, start+20m) holds 60 lines.
    let (from, to) = (
        stamp(start + chrono::Duration::minutes(10)),
        stamp(start + chrono::Duration::minutes(20)),
    );
    let window = c.run_lines(&[
        "logs",
        "-c",
        "master.yaml",
        "pi1",
        "cpu",
        "--since",
        &from,
        "--until",
        &to,
    ]);
    assert_eq!(window.len(), 60);
    assert!(window[0].starts_with(&from));

    // --level warning: exactly the warnings (every 20th line).
    let warnings = c.run_lines(&[
        "logs",
        "-c",
        "master.yaml",
        "pi1",
        "cpu",
        "--level",
        "warning",
    ]);
    assert_eq!(warnings.len(), 36);
    assert!(warnings.iter().all(|l| l.ends_with(" warning")));
    let notes = c.run_lines(&["logs", "-c", "master.yaml", "pi1", "cpu", "--level", "note"]);
    assert!(notes.len() > warnings.len());
    assert!(notes.iter().all(|l| !l.ends_with(" normal")));

    // --json: one object per line with the parsed parts.
    let json = c.run_lines(&[
        "logs",
        "-c",
        "master.yaml",
        "pi1",
        "cpu",
        "--json",
        "--since",
        "30m",
    ]);
    assert!(!json.is_empty());
    for line in &json {
        let v: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
        assert_eq!(v["host"], "pi1");
        assert_eq!(v["type"], "cpu");
        assert_eq!(v["fields"].as_array().map(Vec::len), Some(5));
        // Named by the cpu schema, numbers as numbers (issue 14).
        assert!(v["named"]["usage"].is_number(), "{line}");
        assert!(v["named"]["load1"].is_number(), "{line}");
        assert!(["normal", "note", "warning"].contains(&v["level"].as_str().unwrap()));
        DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).expect("time");
    }
}

#[test]
fn logs_names_the_hosts_and_types_that_exist() {
    let (c, _w, _) = setup();
    let out = c.run(&["logs", "-c", "master.yaml", "pi9", "cpu"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pi9") && err.contains("hosts: pi1"), "{err}");

    let out = c.run(&["logs", "-c", "master.yaml", "pi1", "disk"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("types: cpu, mem"), "{err}");

    let out = c.run(&["logs", "-c", "master.yaml", "pi1", "cpu", "--level", "loud"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a level"));

    let out = c.run(&["logs", "-c", "master.yaml", "../etc", "cpu"]);
    assert!(!out.status.success());
}

#[test]
fn logs_follow_keeps_printing_across_master_side_rotation() {
    let (c, mut w, _) = setup();
    let mut child = Command::new(BIN)
        .args([
            "logs",
            "-c",
            "master.yaml",
            "pi1",
            "cpu",
            "--follow",
            "--since",
            "1m",
        ])
        .current_dir(c.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start logs --follow");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Enough new lines to seal the current log at least twice (4 KiB).
    let now = chrono::Local::now().fixed_offset();
    let mut sent = Vec::new();
    let sealed_before = archive_files(&c.master_backup(), "pi1", "cpu")
        .unwrap()
        .len();
    for batch in 0..6 {
        let mut text = String::new();
        for j in 0..30 {
            let i = 10_000 + batch * 30 + j;
            let line = format!("{} {i} 0 0 1.0 - normal\n", stamp(now));
            sent.push(line.trim_end().to_string());
            text.push_str(&line);
        }
        w.store("cpu", &text);
        std::thread::sleep(Duration::from_millis(300));
    }
    let sealed_after = archive_files(&c.master_backup(), "pi1", "cpu")
        .unwrap()
        .len();
    assert!(sealed_after >= sealed_before + 2, "the follow spans seals");

    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !seen.ends_with(&sent[sent.len() - 1..]) && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let followed: Vec<String> = seen
        .into_iter()
        .filter(|l| {
            l.split(' ')
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= 10_000)
        })
        .collect();
    assert_eq!(followed, sent, "every new line once, in order");
}
