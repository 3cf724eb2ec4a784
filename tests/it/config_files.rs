//! The shipped `config/master.yaml` and `config/agent.yaml` load, and hold
//! the documented defaults; a bad value is an error naming file and key.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use pihealth::config::{AgentConfig, MasterConfig};
use pihealth::config::{Hold, Trigger};
use pihealth::level::Level;

fn shipped(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

/// Where a path written in a shipped config points: it is relative to
/// `config/`, so `../log` is the repository's `log/`.
fn in_repo(rel: &str) -> PathBuf {
    std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .expect("config/")
        .join(rel)
}

/// `path` with `..` taken out lexically (the directories need not exist).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn shipped_master_config_loads_with_defaults() {
    let c = MasterConfig::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/master.yaml"
    )))
    .unwrap_or_else(|e| panic!("config/master.yaml must load: {e}"));
    assert_eq!(c.workers, 10);
    assert_eq!(c.pull_interval.0, Duration::from_secs(30));
    assert_eq!(c.heartbeat_interval.0, Duration::from_secs(10));
    assert_eq!(c.heartbeat_misses, 3);
    assert_eq!(c.rotate_size.0, 8 << 20);
    assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.alarm_listen, "0.0.0.0:8081".parse().unwrap());
    assert_eq!(c.http_listen, Some("127.0.0.1:8082".parse().unwrap()));
    assert_eq!(c.agent_control_port, 8000);
    assert_eq!(c.agent_data_port, 8001);
    assert_eq!(c.log_dir, in_repo("../log"));
    assert_eq!(c.backup_dir, in_repo("../logbackup"));
    assert_eq!(c.key_file, in_repo("pihealth.key"));
    assert!(c.agents.is_empty());
    assert!(c.alarm_command.is_none());
}

#[test]
fn shipped_agent_config_loads_with_defaults() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/agent.yaml"));
    let c = AgentConfig::load(path).unwrap_or_else(|e| panic!("config/agent.yaml must load: {e}"));
    assert_eq!(c.heartbeat_interval.0, Duration::from_secs(10));
    assert_eq!(c.rotate_size.0, 8 << 20);
    assert_eq!(c.control_listen, "0.0.0.0:8000".parse().unwrap());
    assert_eq!(c.data_listen, "0.0.0.0:8001".parse().unwrap());
    assert_eq!(c.key_file, in_repo("pihealth.key"));
    assert_eq!(c.log_dir, in_repo("../log"));
    assert_eq!(c.backup_dir, in_repo("../logbackup"));
    assert!(c.name.is_none());
    let names: Vec<&str> = c.collectors.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["cpu", "mem", "disk", "proc", "users", "sysinfo"]);
    let specs = c.collector_specs(path).expect("collectors are valid");
    // The six standard checks run built in (issue 14), each its own kind.
    for spec in &specs {
        assert_eq!(spec.builtin.map(|b| b.as_str()), Some(spec.name.as_str()));
        assert!(spec.argv.is_empty());
    }
    let proc = specs.iter().find(|s| s.name == "proc").expect("proc");
    assert_eq!(proc.interval, Duration::from_secs(30));
    assert_eq!(proc.timeout, Duration::from_secs(30));
    let sysinfo = specs.iter().find(|s| s.name == "sysinfo").expect("sysinfo");
    assert_eq!(sysinfo.interval, Duration::from_secs(300));
    // cpu spikes are damped (issue 15): two minutes to alarm, one to recover.
    let cpu = &specs[0];
    assert_eq!(cpu.trigger.hold, Hold::For(Duration::from_secs(120)));
    assert_eq!(cpu.trigger.recover, Hold::For(Duration::from_secs(60)));
    assert_eq!(specs[1].trigger, Trigger::default());
}

/// `config/agent.yaml` says which levels raise alarms; the code agrees
/// (issue 15: it used to list `note`, which never alarmed).
#[test]
fn shipped_agent_config_names_the_levels_that_alarm() {
    let text = std::fs::read_to_string(shipped("agent.yaml")).expect("read");
    // The comments as one line of words.
    let words: String = text
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .collect::<Vec<_>>()
        .join(" ");
    let problems: Vec<&str> = Level::ALL
        .into_iter()
        .filter(|l| l.is_problem())
        .map(Level::as_str)
        .collect();
    let (last, rest) = problems.split_last().expect("some levels alarm");
    let listed = format!("the problem levels {} and {last}.", rest.join(", "));
    assert!(
        words.contains(&listed),
        "config/agent.yaml must say `{listed}`"
    );
    for calm in Level::ALL.into_iter().filter(|l| !l.is_problem()) {
        assert!(!listed.contains(calm.as_str()));
    }
    assert!(!Level::Note.is_problem());
    assert!(words.contains("`note` alone never raises an alarm"));
    assert!(!words.contains("(note, warning"), "the old wording is gone");
}

/// Every value written in the shipped files is the struct default, so the
/// files document the defaults truthfully (collectors aside); the paths,
/// written relative to `config/`, name the places the defaults name from
/// the repository's root (where `just run-master` runs).
#[test]
fn shipped_values_are_the_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "").expect("write");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let from_root = |p: &mut PathBuf| *p = lexical(&std::fs::canonicalize(root).unwrap().join(&*p));

    let mut file = MasterConfig::load(&shipped("master.yaml")).expect("loads");
    let mut default = MasterConfig::load(&empty).expect("defaults load");
    for p in [&mut file.log_dir, &mut file.backup_dir, &mut file.key_file] {
        from_root(p);
    }
    for p in [
        &mut default.log_dir,
        &mut default.backup_dir,
        &mut default.key_file,
    ] {
        from_root(p);
    }
    assert_eq!(format!("{file:?}"), format!("{default:?}"));

    let mut file = AgentConfig::load(&shipped("agent.yaml")).expect("loads");
    let mut default = AgentConfig::load(&empty).expect("defaults load");
    file.collectors.clear();
    for c in [&mut file, &mut default] {
        for p in [&mut c.log_dir, &mut c.backup_dir, &mut c.key_file] {
            from_root(p);
        }
        c.config_dir = None;
    }
    assert_eq!(format!("{file:?}"), format!("{default:?}"));
}

/// Relative paths written in a config file are taken from the file's own
/// directory, whatever the working directory; keys left out keep their
/// defaults (relative to the working directory); absolute paths and bare
/// program names (looked up in PATH) stay as written.
#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etc = std::fs::canonicalize(dir.path())
        .unwrap()
        .join("etc/pihealth");
    std::fs::create_dir_all(&etc).expect("mkdir");

    let path = etc.join("agent.yaml");
    std::fs::write(
        &path,
        concat!(
            "key_file: keys/pi.key\n",
            "previous_key_files: [old.key, /abs/older.key]\n",
            "log_dir: ../../var/log\n",
            "collectors:\n",
            "  - {name: a, command: \"../scripts/a.sh --dir rel/arg\", interval: 1s}\n",
            "  - {name: b, command: \"./b.sh\", interval: 1s}\n",
            "  - {name: c, command: \"check_load -w 1\", interval: 1s}\n",
            "  - {name: d, command: /usr/bin/true, interval: 1s}\n",
        ),
    )
    .expect("write");
    let c = AgentConfig::load(&path).expect("loads");
    assert_eq!(c.key_file, etc.join("keys/pi.key"));
    assert_eq!(
        c.previous_key_files,
        [etc.join("old.key"), PathBuf::from("/abs/older.key")]
    );
    assert_eq!(lexical(&c.log_dir), lexical(&etc.join("../../var/log")));
    // Left out: the default, in the working directory.
    assert_eq!(c.backup_dir, Path::new("logbackup"));
    let specs = c.collector_specs(&path).expect("valid");
    let argv: Vec<&[String]> = specs.iter().map(|s| s.argv.as_slice()).collect();
    assert_eq!(
        argv[0],
        [
            etc.join("../scripts/a.sh").to_str().unwrap(),
            "--dir",
            "rel/arg"
        ]
    );
    assert_eq!(argv[1][0], etc.join("./b.sh").to_str().unwrap());
    assert_eq!(argv[2][0], "check_load");
    assert_eq!(argv[3][0], "/usr/bin/true");

    let path = etc.join("master.yaml");
    std::fs::write(
        &path,
        concat!(
            "key_file: fleet.key\n",
            "backup_dir: /srv/pihealth/backup\n",
            "alarm_command: [notify/send.sh, --to, ops/team]\n",
        ),
    )
    .expect("write");
    let c = MasterConfig::load(&path).expect("loads");
    assert_eq!(c.key_file, etc.join("fleet.key"));
    assert_eq!(c.backup_dir, Path::new("/srv/pihealth/backup"));
    assert_eq!(c.log_dir, Path::new("log"));
    assert_eq!(
        c.alarm_command.as_deref(),
        Some(
            &[
                etc.join("notify/send.sh").to_str().unwrap().to_owned(),
                "--to".into(),
                "ops/team".into()
            ][..]
        )
    );
}

#[test]
fn bad_value_names_file_key_and_expectation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken-master.yaml");
    std::fs::write(&path, "pull_interval: soon\n").expect("write");
    let e = MasterConfig::load(&path)
        .expect_err("`soon` is not a duration")
        .to_string();
    assert!(e.contains("broken-master.yaml"), "{e}");
    assert!(e.contains("pull_interval"), "{e}");
    assert!(e.contains("30s"), "{e}");

    let path = dir.path().join("broken-agent.yaml");
    std::fs::write(&path, "rotate_size: huge\n").expect("write");
    let e = AgentConfig::load(&path)
        .expect_err("`huge` is not a size")
        .to_string();
    assert!(e.contains("broken-agent.yaml"), "{e}");
    assert!(e.contains("rotate_size"), "{e}");
    assert!(e.contains("8MiB"), "{e}");
}

/// The file's text with every commented-out example switched on: the comment
/// lines right after each "Example (remove the leading `# ` ...)" line lose
/// their `# `, keeping their indentation.
fn with_examples_enabled(text: &str) -> String {
    let mut out = String::new();
    let mut in_example = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if trimmed.starts_with("# Example (remove the leading `# `") {
            in_example = true;
            continue;
        }
        match trimmed.strip_prefix("# ") {
            Some(rest) if in_example => {
                out.push_str(indent);
                out.push_str(rest);
            }
            _ => {
                in_example = false;
                out.push_str(line);
            }
        }
        out.push('\n');
    }
    out
}

#[test]
fn commented_examples_are_valid() {
    let dir = tempfile::tempdir().expect("temp dir");

    let text = std::fs::read_to_string(shipped("master.yaml")).expect("read");
    let text = with_examples_enabled(&text).replace("\nagents: []\n", "\n");
    let path = dir.path().join("master.yaml");
    std::fs::write(&path, text).expect("write");
    let c = MasterConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let agents = c.static_agents(&path).expect("valid agents");
    assert_eq!(agents.len(), 3 + 10, "{agents:?}");
    assert_eq!(agents[0].control, "10.0.0.11:8000".parse().unwrap());
    assert_eq!(agents[2].name.as_deref(), Some("pi3"));
    assert_eq!(agents[12].control, "10.0.0.30:8000".parse().unwrap());
    assert_eq!(
        c.alarm_command.as_deref(),
        Some(
            &[
                "/usr/local/bin/notify".to_string(),
                "--channel".into(),
                "ops".into()
            ][..]
        )
    );

    let text = std::fs::read_to_string(shipped("agent.yaml")).expect("read");
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, with_examples_enabled(&text)).expect("write");
    let c = AgentConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let specs = c.collector_specs(&path).expect("valid collectors");
    assert_eq!(specs.len(), 6 + 5);
    for spec in &specs[6..] {
        assert_eq!(spec.mode, pihealth::config::Mode::Nagios);
        assert!(spec.argv[0].starts_with("/usr/lib/nagios/plugins/check_"));
    }
    assert_eq!(
        specs[7].argv,
        [
            "/usr/lib/nagios/plugins/check_disk",
            "-w",
            "20%",
            "-c",
            "10%",
            "-p",
            "/"
        ]
    );
}
