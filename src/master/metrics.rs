//! `/metrics`: the fleet, the alarms, the pulls and the newest values of
//! every host's cpu, mem and disk logs, in the Prometheus text format.
//!
//! Units are base units (seconds, bytes); percentages are 0–100 and named
//! `_percent`. Per-agent series carry `host` and `address`; values read
//! from a host's logs carry `host` only (they belong to the host, whatever
//! address it has now). A value the agent has not sent (no temperature
//! sensor, a field `-`) is left out rather than written as 0.

use crate::level::Level;
use crate::logline::LogLine;
use crate::master::alarm_summary::AlarmSummary;
use crate::master::exposition::{Exposition, Kind};
use crate::master::registry::{AgentRecord, PullStats, State, PULL_BUCKETS};
use crate::master::samples::{is_standard, ArchiveReader};

const MIB: f64 = 1024.0 * 1024.0;

/// Everything one scrape reports, gathered before writing (the format
/// wants each family's samples together, so hosts cannot be written one
/// after the other).
pub struct Snapshot<'a> {
    pub agents: &'a [AgentRecord],
    pub alarms: &'a AlarmSummary,
    pub pulls: &'a PullStats,
    pub started_ms: i64,
    pub hosts: Vec<HostValues>,
}

/// The newest values from one host's logs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HostValues {
    pub host: String,
    pub cpu: Option<Cpu>,
    pub mem: Option<Mem>,
    pub disk: Option<Disk>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cpu {
    pub time: i64,
    pub load1: Option<f64>,
    pub usage_percent: Option<f64>,
    pub temperature: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mem {
    pub time: i64,
    pub total_bytes: Option<f64>,
    pub used_bytes: Option<f64>,
    pub used_percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    pub time: i64,
    pub mounts: Vec<Mount>,
    pub total_used_percent: Option<f64>,
}

/// One file system of a disk run (`MOUNT TOTAL_MIB FREE_MIB USED_PCT`).
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub mount: String,
    pub size_bytes: Option<f64>,
    pub free_bytes: Option<f64>,
    pub used_percent: Option<f64>,
}

/// The lines of a run in the standard script's shape.
fn standard<'a>(log_type: &str, run: &'a [String]) -> Vec<LogLine<'a>> {
    run.iter()
        .filter_map(|l| LogLine::parse(l))
        .filter(|l| is_standard(log_type, l))
        .collect()
}

pub fn cpu_from(run: &[String]) -> Option<Cpu> {
    let l = standard("cpu", run).pop()?;
    Some(Cpu {
        time: l.time.timestamp(),
        load1: l.number(0),
        usage_percent: l.number(3),
        temperature: l.number(4),
    })
}

pub fn mem_from(run: &[String]) -> Option<Mem> {
    let l = standard("mem", run).pop()?;
    Some(Mem {
        time: l.time.timestamp(),
        total_bytes: l.number(0).map(|m| m * MIB),
        used_bytes: l.number(1).map(|m| m * MIB),
        used_percent: l.number(2),
    })
}

pub fn disk_from(run: &[String]) -> Option<Disk> {
    let lines = standard("disk", run);
    let mut disk = Disk {
        time: lines.last()?.time.timestamp(),
        mounts: Vec::new(),
        total_used_percent: None,
    };
    for l in &lines {
        let Some(mount) = l.fields.first() else {
            continue;
        };
        if *mount == "total" {
            disk.total_used_percent = l.number(3);
        } else {
            disk.mounts.push(Mount {
                mount: mount.to_string(),
                size_bytes: l.number(1).map(|m| m * MIB),
                free_bytes: l.number(2).map(|m| m * MIB),
                used_percent: l.number(3),
            });
        }
    }
    Some(disk)
}

/// The newest cpu, mem and disk values of `host` (a checked host name).
/// A log that cannot be read is logged and left out.
pub fn host_values(reader: &ArchiveReader, host: &str) -> HostValues {
    let run = |log_type: &str| match reader.latest_run(host, log_type) {
        Ok(run) => run,
        Err(e) => {
            log::warn!("{host}: cannot read the {log_type} log for /metrics: {e}");
            Vec::new()
        }
    };
    HostValues {
        host: host.to_string(),
        cpu: cpu_from(&run("cpu")),
        mem: mem_from(&run("mem")),
        disk: disk_from(&run("disk")),
    }
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

pub fn render(s: &Snapshot) -> String {
    let mut e = Exposition::new();
    master_families(&mut e, s);
    agent_families(&mut e, s.agents, s.alarms);
    alarm_families(&mut e, s.alarms);
    pull_families(&mut e, s.pulls);
    value_families(&mut e, &s.hosts);
    e.finish()
}

fn master_families(e: &mut Exposition, s: &Snapshot) {
    e.family(
        "pihealth_master_start_time_seconds",
        Kind::Gauge,
        "When this master process started, in seconds since the Unix epoch.",
    )
    .sample(&[], secs(s.started_ms));
    e.family(
        "pihealth_build_info",
        Kind::Gauge,
        "Always 1; the version of the running master.",
    )
    .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    e.family(
        "pihealth_agents",
        Kind::Gauge,
        "Agents the master knows, by state (up, down, never_seen).",
    );
    for (state, label) in [
        (State::Up, "up"),
        (State::Down, "down"),
        (State::NeverSeen, "never_seen"),
    ] {
        let n = s.agents.iter().filter(|a| a.state == state).count();
        e.sample(&[("state", label)], n as f64);
    }
}

/// One gauge family with a value per agent that has one.
fn per_agent(
    e: &mut Exposition,
    agents: &[AgentRecord],
    name: &str,
    kind: Kind,
    help: &str,
    value: impl Fn(&AgentRecord) -> Option<f64>,
) {
    e.family(name, kind, help);
    for a in agents {
        if let Some(v) = value(a) {
            let (host, address) = (a.label(), a.control.to_string());
            e.sample(&[("host", &host), ("address", &address)], v);
        }
    }
}

fn agent_families(e: &mut Exposition, agents: &[AgentRecord], alarms: &AlarmSummary) {
    per_agent(
        e,
        agents,
        "pihealth_agent_up",
        Kind::Gauge,
        "1 if the agent answered within heartbeat_interval x heartbeat_misses, else 0.",
        |a| Some(if a.state == State::Up { 1.0 } else { 0.0 }),
    );
    per_agent(
        e,
        agents,
        "pihealth_agent_last_heartbeat_timestamp_seconds",
        Kind::Gauge,
        "When the agent's last heartbeat arrived (master clock).",
        |a| a.last_heartbeat_ms.map(secs),
    );
    per_agent(
        e,
        agents,
        "pihealth_agent_last_pull_success_timestamp_seconds",
        Kind::Gauge,
        "When the last successful pull of the agent ended (master clock).",
        |a| a.last_pull_ok_ms.map(secs),
    );
    per_agent(
        e,
        agents,
        "pihealth_agent_last_pull_ok",
        Kind::Gauge,
        "1 if the last pull of the agent succeeded, 0 if it failed.",
        |a| {
            a.last_pull_ms.map(|_| {
                if a.last_pull_error.is_none() {
                    1.0
                } else {
                    0.0
                }
            })
        },
    );
    per_agent(
        e,
        agents,
        "pihealth_agent_last_pull_duration_seconds",
        Kind::Gauge,
        "How long the last pull of the agent took, successful or not.",
        |a| a.last_pull_duration_ms.map(|ms| ms as f64 / 1000.0),
    );
    per_agent(
        e,
        agents,
        "pihealth_agent_pulled_bytes_total",
        Kind::Counter,
        "Log bytes pulled from the agent and stored (uncompressed).",
        |a| Some(a.bytes_pulled as f64),
    );
    per_agent(
        e,
        agents,
        "pihealth_agent_backlog_bytes",
        Kind::Gauge,
        "Log bytes waiting on the agent to be pulled, as it last said.",
        |a| Some(a.backlog as f64),
    );
    per_agent(
        e,
        agents,
        "pihealth_agent_clock_skew_seconds",
        Kind::Gauge,
        "Agent clock minus master clock at the last exchange.",
        |a| a.clock_skew_ms.map(secs),
    );
    per_agent(
        e,
        agents,
        "pihealth_agent_alarms_open",
        Kind::Gauge,
        "Log types of the agent whose latest alarm is at warning or worse.",
        |a| Some(alarms.open_for(&a.label()) as f64),
    );
}

const PROBLEM_LEVELS: [Level; 3] = [Level::Warning, Level::Critical, Level::Unknown];

fn alarm_families(e: &mut Exposition, alarms: &AlarmSummary) {
    let open = alarms.open_by_level();
    e.family(
        "pihealth_alarms_open",
        Kind::Gauge,
        "Open problems (host x log type whose latest alarm is at this level).",
    );
    for level in PROBLEM_LEVELS {
        let n = open.get(&level).copied().unwrap_or(0);
        e.sample(&[("level", level.as_str())], n as f64);
    }
    e.family(
        "pihealth_alarms_total",
        Kind::Counter,
        "Alarms stored in alarms.log, by level.",
    );
    for level in Level::ALL {
        let n = alarms.totals.get(&level).copied().unwrap_or(0);
        e.sample(&[("level", level.as_str())], n as f64);
    }
}

fn pull_families(e: &mut Exposition, p: &PullStats) {
    e.family(
        "pihealth_pulls_total",
        Kind::Counter,
        "Pulls since the master started, by result.",
    )
    .sample(&[("result", "ok")], p.ok as f64)
    .sample(&[("result", "failed")], p.failed as f64);
    e.family(
        "pihealth_pull_duration_seconds",
        Kind::Histogram,
        "Duration of every pull since the master started, successful or not.",
    )
    .histogram(
        &[],
        &PULL_BUCKETS,
        &p.buckets,
        p.seconds_sum,
        p.ok + p.failed,
    );
}

/// A family of one value per host, from each host's values.
fn per_host<T>(
    e: &mut Exposition,
    hosts: &[HostValues],
    name: &str,
    help: &str,
    pick: impl Fn(&HostValues) -> Option<&T>,
    value: impl Fn(&T) -> Option<f64>,
) {
    e.family(name, Kind::Gauge, help);
    for h in hosts {
        if let Some(v) = pick(h).and_then(&value) {
            e.sample(&[("host", &h.host)], v);
        }
    }
}

fn value_families(e: &mut Exposition, hosts: &[HostValues]) {
    fn cpu(h: &HostValues) -> Option<&Cpu> {
        h.cpu.as_ref()
    }
    fn mem(h: &HostValues) -> Option<&Mem> {
        h.mem.as_ref()
    }
    fn disk(h: &HostValues) -> Option<&Disk> {
        h.disk.as_ref()
    }
    per_host(
        e,
        hosts,
        "pihealth_cpu_load1",
        "One-minute load average (cpu log).",
        cpu,
        |c| c.load1,
    );
    per_host(
        e,
        hosts,
        "pihealth_cpu_usage_percent",
        "CPU busy time over the collector's sampling window, 0-100 (cpu log).",
        cpu,
        |c| c.usage_percent,
    );
    per_host(
        e,
        hosts,
        "pihealth_cpu_temperature_celsius",
        "Hottest thermal zone (cpu log); absent without a sensor.",
        cpu,
        |c| c.temperature,
    );
    per_host(
        e,
        hosts,
        "pihealth_memory_total_bytes",
        "Total memory (mem log).",
        mem,
        |m| m.total_bytes,
    );
    per_host(
        e,
        hosts,
        "pihealth_memory_used_bytes",
        "Memory in use, total minus available (mem log).",
        mem,
        |m| m.used_bytes,
    );
    per_host(
        e,
        hosts,
        "pihealth_memory_used_percent",
        "Memory in use, 0-100 (mem log).",
        mem,
        |m| m.used_percent,
    );
    disk_families(e, hosts);
    per_host(
        e,
        hosts,
        "pihealth_disk_total_used_percent",
        "All local file systems together, used 0-100 (disk log `total` line).",
        disk,
        |d| d.total_used_percent,
    );
    e.family(
        "pihealth_sample_timestamp_seconds",
        Kind::Gauge,
        "Time of the newest stored sample of the host's log type (agent clock).",
    );
    for h in hosts {
        let times = [
            ("cpu", h.cpu.as_ref().map(|c| c.time)),
            ("mem", h.mem.as_ref().map(|m| m.time)),
            ("disk", h.disk.as_ref().map(|d| d.time)),
        ];
        for (t, time) in times {
            if let Some(time) = time {
                e.sample(&[("host", &h.host), ("type", t)], time as f64);
            }
        }
    }
}

fn disk_families(e: &mut Exposition, hosts: &[HostValues]) {
    type Pick = fn(&Mount) -> Option<f64>;
    let families: [(&str, &str, Pick); 3] = [
        (
            "pihealth_disk_size_bytes",
            "Size of the file system (disk log).",
            |m| m.size_bytes,
        ),
        (
            "pihealth_disk_free_bytes",
            "Space available to unprivileged users (disk log).",
            |m| m.free_bytes,
        ),
        (
            "pihealth_disk_used_percent",
            "Used space of the file system, 0-100 (disk log).",
            |m| m.used_percent,
        ),
    ];
    for (name, help, pick) in families {
        e.family(name, Kind::Gauge, help);
        for h in hosts {
            for m in h.disk.iter().flat_map(|d| &d.mounts) {
                if let Some(v) = pick(m) {
                    e.sample(&[("host", &h.host), ("mount", &m.mount)], v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::exposition::parse;
    use crate::master::registry::Origin;

    fn agent(name: Option<&str>, addr: &str, state: State) -> AgentRecord {
        let json = serde_json::json!({
            "name": name, "control": addr, "data_port": 8001, "origin": "static",
            "state": state, "state_since_ms": 1, "last_seen_ms": 2,
            "last_heartbeat_ms": 1_700_000_000_123i64, "last_pull_ms": 4,
            "last_pull_ok_ms": 4, "last_pull_error": null, "bytes_pulled": 1234,
            "backlog": 5, "clock_skew_ms": -1500,
        });
        // An old registry.json without last_pull_duration_ms still loads.
        let a: AgentRecord = serde_json::from_value(json).expect("record");
        assert_eq!(a.origin, Origin::Static);
        a
    }

    fn run(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_from_the_standard_scripts_lines() {
        let c = cpu_from(&run(&["2026-01-01T00:00:10Z 0.45 1.17 1.08 3.00 - normal"])).unwrap();
        assert_eq!(c.load1, Some(0.45));
        assert_eq!(c.usage_percent, Some(3.0));
        assert_eq!(c.temperature, None);
        let m = mem_from(&run(&["2026-01-01T00:00:10Z 1024 512 50.00 48.10 normal"])).unwrap();
        assert_eq!(m.total_bytes, Some(1024.0 * MIB));
        assert_eq!(m.used_percent, Some(50.0));
        let d = disk_from(&run(&[
            "2026-01-01T00:00:10Z / 100 25 75.00 normal",
            "2026-01-01T00:00:10Z /mnt/my_disk 10 9 10.00 normal",
            "2026-01-01T00:00:10Z total 110 34 69.09 normal",
        ]))
        .unwrap();
        assert_eq!(d.mounts.len(), 2);
        assert_eq!(d.mounts[1].mount, "/mnt/my_disk");
        assert_eq!(d.total_used_percent, Some(69.09));
        assert_eq!(d.time, 1767225610);
        assert!(cpu_from(&run(&["not a line"])).is_none());
        // A failed run stores `failed: ... unknown`: no numbers, no panic.
        assert!(cpu_from(&run(&[
            "2026-01-01T00:00:10Z failed: exit status 1 unknown"
        ]))
        .is_none());
        assert!(mem_from(&run(&[
            "2026-01-01T00:00:10Z failed: exit status 1: no stderr unknown"
        ]))
        .is_none());
    }

    #[test]
    fn a_scrape_is_valid_and_complete() {
        let mut agents = vec![
            agent(Some("pi1"), "127.0.0.2:8000", State::Up),
            agent(Some("we\"ird"), "127.0.0.3:8000", State::Down),
            agent(None, "127.0.0.4:8000", State::NeverSeen),
        ];
        agents[0].last_pull_duration_ms = Some(250);
        let mut pulls = PullStats::default();
        pulls.record(true, std::time::Duration::from_millis(250));
        pulls.record(false, std::time::Duration::from_secs(3));
        let hosts = vec![HostValues {
            host: "pi1".into(),
            cpu: cpu_from(&run(&[
                "2026-01-01T00:00:10Z 0.45 1.17 1.08 3.00 48.5 normal",
            ])),
            mem: None,
            disk: disk_from(&run(&[
                "2026-01-01T00:00:10Z / 100 25 75.00 normal",
                "2026-01-01T00:00:10Z / 100 25 75.00 normal",
                "2026-01-01T00:00:10Z total 100 25 75.00 normal",
            ])),
        }];
        let alarms = AlarmSummary::default();
        let text = render(&Snapshot {
            agents: &agents,
            alarms: &alarms,
            pulls: &pulls,
            started_ms: 1_700_000_000_000,
            hosts,
        });
        let samples = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let get = |name: &str, host: &str| {
            samples
                .iter()
                .find(|s| s.name == name && s.label("host") == Some(host))
                .map(|s| s.value)
        };
        assert_eq!(get("pihealth_agent_up", "pi1"), Some(1.0));
        assert_eq!(get("pihealth_agent_up", "we\"ird"), Some(0.0));
        assert_eq!(get("pihealth_agent_up", "127.0.0.4:8000"), Some(0.0));
        assert_eq!(get("pihealth_agent_clock_skew_seconds", "pi1"), Some(-1.5));
        assert_eq!(
            get("pihealth_agent_last_pull_duration_seconds", "pi1"),
            Some(0.25)
        );
        assert_eq!(
            get("pihealth_agent_last_pull_duration_seconds", "we\"ird"),
            None
        );
        assert_eq!(get("pihealth_cpu_temperature_celsius", "pi1"), Some(48.5));
        assert_eq!(get("pihealth_disk_total_used_percent", "pi1"), Some(75.0));
        assert_eq!(get("pihealth_memory_used_percent", "pi1"), None);
        assert!(text.contains("pihealth_agents{state=\"up\"} 1\n"));
        assert!(text.contains("pihealth_pulls_total{result=\"failed\"} 1\n"));
        assert!(text.contains("pihealth_pull_duration_seconds_bucket{le=\"0.25\"} 1\n"));
        assert!(text.contains("pihealth_pull_duration_seconds_count 2\n"));
        assert!(text.contains("pihealth_alarms_open{level=\"critical\"} 0\n"));
        assert!(text
            .contains("pihealth_sample_timestamp_seconds{host=\"pi1\",type=\"cpu\"} 1767225610\n"));
        // The duplicated `/` line is one series.
        assert_eq!(
            samples
                .iter()
                .filter(|s| s.name == "pihealth_disk_used_percent")
                .count(),
            1
        );
    }
}
