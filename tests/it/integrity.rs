//! Issue 12, items 3 and 5: the master stores exactly the bytes of an
//! offered range, and a run orphaned by `kill -9` of its agent never
//! writes into a later agent's runs.
//!
//! Address blocks: 122 (exact archives), 123 (orphaned runs).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pihealth::storage::ArchiveHeader;

use crate::util::*;

/// The agent's archives of `log_type`, oldest first.
fn agent_archives(c: &Cluster, log_type: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(c.path("agents/pi1/logbackup"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with(&format!("{log_type}-")) && n.ends_with(".log.gz")
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// One gzip member of `data`, with `comment` in its header if given.
fn gzip_member(comment: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut builder = flate2::GzBuilder::new();
    if let Some(c) = comment {
        builder = builder.comment(c);
    }
    let mut enc = builder.write(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

/// Issue 12, item 3: a piece offered as a 38-byte range arrived as a
/// two-member gzip whose last member's length field said 38; the master
/// stored 230 bytes, acknowledged them, and `pihealth logs` showed 8
/// injected lines.
#[test]
fn an_archive_carrying_more_than_its_range_is_refused_and_changes_nothing() {
    let c = Cluster::new(122);
    let master_cfg = c.master_config(1, "");
    let agent_cfg = c.agent_config(0, &counter_collector(&c, "20ms"), "rotate_size: 1KiB\n");
    // No master yet: archives pile up on the agent.
    let mut agent = c.start("agent", &agent_cfg, "agent");
    wait_for("three archives on the agent", || {
        agent_archives(&c, "counter").len() >= 3
    });
    assert_eq!(agent.terminate(), Some(0));

    // The oldest archive becomes two members: the first, under the real
    // header, injected lines; the last, the real range (its trailer fits).
    let target = agent_archives(&c, "counter")[0].clone();
    let header = ArchiveHeader::read(&target).expect("header");
    let mut real = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(&target).expect("open"))
        .read_to_end(&mut real)
        .expect("inflate");
    assert_eq!(real.len() as u64, header.end - header.start);
    let injected = "2026-01-01T00:00:00+00:00 999999 injected normal\n".repeat(8);
    let crafted = [
        gzip_member(Some(&header.comment()), injected.as_bytes()),
        gzip_member(None, &real),
    ]
    .concat();
    assert_eq!(
        u32::from_le_bytes(crafted[crafted.len() - 4..].try_into().unwrap()) as u64,
        header.end - header.start,
        "the last trailer tells the range's length"
    );
    fs::write(&target, &crafted).expect("write crafted archive");

    agent.restart();
    let mut master = c.start("master", &master_cfg, "master");
    wait_for("the master to refuse the archive on several pulls", || {
        master.stderr().matches("archive refused").count() >= 3
    });
    master.terminate();
    agent.terminate();

    // Not acknowledged: the agent still holds it, as it was.
    assert_eq!(fs::read(&target).expect("still on the agent"), crafted);
    // Nothing of it on the master: no injected line, no range of it, no
    // temp file left behind.
    let stored = c.archived("pi1", "counter");
    assert!(!stored.contains("injected"), "{stored}");
    let out = c.run(&["logs", "-c", "master.yaml", "pi1", "counter"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("injected"));
    let backup = c.master_backup().join("pi1");
    let leftovers: Vec<_> = fs::read_dir(&backup)
        .map(|e| e.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let log = master.stderr();
    // The first member alone is less than the range; it says so.
    assert!(
        log.contains(&format!(
            "archive refused: it holds {} bytes of log, its range {}..{} has {}",
            injected.len(),
            header.start,
            header.end,
            header.end - header.start
        )),
        "the refusal says why: {log}"
    );
}

/// Issue 12, item 5: each collector wrote a fixed scratch file; a run
/// orphaned by `kill -9` of its agent kept writing to it after the
/// restarted agent reused it, and its lines were stored inside another
/// run's output.
#[test]
fn an_orphaned_run_never_writes_into_the_next_agents_runs() {
    let c = Cluster::new(123);
    let runs = c.path("runs");
    let script = c.write(
        "slow.sh",
        &format!(
            "#!/bin/sh\n\
             n=0\n[ -r {runs} ] && read -r n < {runs}\nn=$((n+1))\necho $n > {runs}\n\
             echo \"$$\" > {pids}.$n\n\
             sleep 2\n\
             if [ $n -eq 1 ]; then\n\
               for i in 1 2 3 4 5; do echo \"orphan $$ line $i normal\"; done\n\
             else\n\
               echo \"run $n normal\"\n\
             fi\n",
            runs = runs.display(),
            pids = c.path("pid").display(),
        ),
    );
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let collectors = format!(
        "  - {{name: slow, command: {}, interval: 3s, timeout: 20s}}\n",
        script.display()
    );
    let agent_cfg = c.agent_config(0, &collectors, "");
    let mut agent = c.start("agent", &agent_cfg, "agent");
    // Run 1 is sleeping: kill its agent, and start the next at once.
    wait_for("run 1 to start", || c.path("pid.1").exists());
    let orphan: i32 = {
        let mut text = String::new();
        wait_for("run 1's pid", || {
            text = fs::read_to_string(c.path("pid.1")).unwrap_or_default();
            text.trim().parse::<i32>().is_ok()
        });
        text.trim().parse().expect("pid")
    };
    agent.kill9();
    agent.restart();
    wait_for("the orphaned run to be ended", || !alive(orphan));
    // Well past the orphan's wake-up, a few runs of the new agent.
    let log = c.path("agents/pi1/log/slow.log");
    wait_for("three runs stored", || {
        fs::read_to_string(&log).unwrap_or_default().lines().count() >= 3
    });
    agent.terminate();

    let stored = fs::read_to_string(&log).expect("slow.log");
    assert!(
        !stored.contains("orphan"),
        "an orphan's line was stored:\n{stored}"
    );
    for line in stored.lines() {
        let text = line.split_once(' ').expect("timestamp").1;
        let n: u64 = text
            .strip_prefix("run ")
            .and_then(|t| t.strip_suffix(" normal"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not one run's own line: {line:?}"));
        assert!(n >= 2, "{line}");
    }
    // And no scratch file is left of any run.
    let scratch: Vec<_> = fs::read_dir(c.path("agents/pi1/log/.pihealth/run"))
        .expect("scratch dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(scratch.is_empty(), "{scratch:?}");
}

fn alive(pid: i32) -> bool {
    match fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")) {
        Err(_) => false,
        Ok(stat) => !matches!(
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next()),
            Some("Z") | Some("X")
        ),
    }
}
