//! `/metrics`: the fleet, the alarms, the pulls and the newest values of
//! every host's logs, in the Prometheus text format.
//!
//! The values come from the type's schema (`schema::samples`: every
//! numeric field with a metric name, e.g. `pihealth_cpu_usage_percent`,
//! `pihealth_disk_used_percent{mount}`, `pihealth_proc_cpu_percent{name,pid,user}`);
//! a type without a schema (a Nagios plugin's) gives its performance data
//! as `pihealth_perfdata_value{type,label,unit}` (see `perfdata`).
//!
//! Units are base units (seconds, bytes); percentages are 0–100 and named
//! `_percent`. Per-agent series carry `host` and `address`; values read
//! from a host's logs carry `host` only (they belong to the host, whatever
//! address it has now). A value the agent has not sent (no temperature
//! sensor, a field `-`) is left out rather than written as 0.

use crate::level::Level;
use crate::logline::LogLine;
use crate::master::registry::{AgentRecord, PullStats, State, PULL_BUCKETS};
use crate::web::alarm_summary::AlarmSummary;
use crate::web::exposition::{Exposition, Kind};
use crate::web::samples::ArchiveReader;
use crate::{perfdata, schema};

/// Everything one scrape reports, gathered before writing (the format
/// wants each family's samples together, so hosts cannot be written one
/// after the other).
pub(crate) struct Snapshot<'a> {
    pub(crate) agents: &'a [AgentRecord],
    pub(crate) alarms: &'a AlarmSummary,
    pub(crate) pulls: &'a PullStats,
    pub(crate) started_ms: i64,
    pub(crate) hosts: Vec<HostValues>,
}

/// The newest values from one host's logs, every type.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct HostValues {
    pub(crate) host: String,
    pub(crate) types: Vec<TypeValues>,
}

/// The newest run of one log type, as samples (without the host label).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TypeValues {
    pub(crate) log_type: String,
    /// Timestamp of the run (agent clock), seconds since the epoch.
    pub(crate) time: i64,
    pub(crate) samples: Vec<schema::Sample>,
}

/// The samples of one run of `log_type`: a standard type's lines through
/// its schema, any other type's Nagios performance data. `None` when the
/// run has no line with a timestamp.
pub(crate) fn type_values(log_type: &str, run: &[String]) -> Option<TypeValues> {
    let lines: Vec<LogLine> = run.iter().filter_map(|l| LogLine::parse(l)).collect();
    let time = lines.last()?.time.timestamp();
    let mut samples = Vec::new();
    for l in &lines {
        if schema::for_type(log_type).is_some() {
            samples.extend(schema::samples(log_type, &l.words));
        } else {
            samples.extend(perfdata_samples(&l.fields.join(" ")));
        }
    }
    Some(TypeValues {
        log_type: log_type.to_string(),
        time,
        samples,
    })
}

fn perfdata_samples(text: &str) -> Vec<schema::Sample> {
    let mut out = Vec::new();
    for item in perfdata::parse(text) {
        let labels = vec![
            ("label", item.label.clone()),
            ("unit", item.unit.to_string()),
        ];
        let parts = [
            ("perfdata_value", PERF_VALUE, Some(item.value)),
            ("perfdata_warning", PERF_WARNING, item.warning),
            ("perfdata_critical", PERF_CRITICAL, item.critical),
            ("perfdata_min", PERF_MIN, item.min),
            ("perfdata_max", PERF_MAX, item.max),
        ];
        for (name, help, value) in parts {
            if let Some(value) = value {
                out.push(schema::Sample {
                    name: name.to_string(),
                    help,
                    labels: labels.clone(),
                    value,
                });
            }
        }
    }
    out
}

const PERF_VALUE: &str = "Nagios performance data of a check's newest run, in base units (seconds, bytes; percent 0-100).";
const PERF_WARNING: &str =
    "The warning threshold in a check's performance data, when a plain number.";
const PERF_CRITICAL: &str =
    "The critical threshold in a check's performance data, when a plain number.";
const PERF_MIN: &str = "The minimum in a check's performance data.";
const PERF_MAX: &str = "The maximum in a check's performance data.";

/// The newest values of every log type of `host` (a checked host name).
/// A log that cannot be read is logged and left out.
pub(crate) fn host_values(reader: &ArchiveReader, host: &str) -> HostValues {
    let types = reader
        .log_types(host)
        .iter()
        .filter_map(|log_type| match reader.latest_run(host, log_type) {
            Ok(run) => type_values(log_type, &run),
            Err(e) => {
                log::warn!("{host}: cannot read the {log_type} log for /metrics: {e}");
                None
            }
        })
        .collect();
    HostValues {
        host: host.to_string(),
        types,
    }
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

pub(crate) fn render(s: &Snapshot) -> String {
    let mut e = Exposition::new();
    master_families(&mut e, s);
    agent_families(&mut e, s.agents, s.alarms);
    alarm_families(&mut e, s.alarms);
    pull_families(&mut e, s.pulls);
    value_families(&mut e, &s.hosts);
    e.finish()
}

/// The alerting families of `/metrics`: silences in force, and per
/// Alertmanager what it has not accepted yet (alert on it staying above 0).
pub(crate) fn alerting(
    log_dir: &std::path::Path,
    urls: &[String],
    silences_active: usize,
) -> String {
    let mut e = Exposition::new();
    e.family(
        "pihealth_silences_active",
        Kind::Gauge,
        "Silences in force (pihealth silence): their alarms are stored but run no command and are not forwarded.",
    )
    .sample(&[], silences_active as f64);
    if !urls.is_empty() {
        e.family(
            "pihealth_alertmanager_unsent_bytes",
            Kind::Gauge,
            "Bytes of alarms.log an Alertmanager has not accepted yet; above 0 for long means it is down or refuses.",
        );
        for url in urls {
            if let Some(n) = crate::master::alertmanager::unsent_bytes(log_dir, url) {
                e.sample(&[("url", url)], n as f64);
            }
        }
    }
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

/// A per-agent family: name, kind, help and the value of one agent.
type AgentFamily = (
    &'static str,
    Kind,
    &'static str,
    fn(&AgentRecord) -> Option<f64>,
);

const AGENT_FAMILIES: [AgentFamily; 8] = [
    (
        "pihealth_agent_up",
        Kind::Gauge,
        "1 if the agent answered within heartbeat_interval x heartbeat_misses, else 0.",
        |a| Some(if a.state == State::Up { 1.0 } else { 0.0 }),
    ),
    (
        "pihealth_agent_last_heartbeat_timestamp_seconds",
        Kind::Gauge,
        "When the agent's last heartbeat arrived (master clock).",
        |a| a.last_heartbeat_ms.map(secs),
    ),
    (
        "pihealth_agent_last_pull_success_timestamp_seconds",
        Kind::Gauge,
        "When the last successful pull of the agent ended (master clock).",
        |a| a.last_pull_ok_ms.map(secs),
    ),
    (
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
    ),
    (
        "pihealth_agent_last_pull_duration_seconds",
        Kind::Gauge,
        "How long the last pull of the agent took, successful or not.",
        |a| a.last_pull_duration_ms.map(|ms| ms as f64 / 1000.0),
    ),
    (
        "pihealth_agent_pulled_bytes_total",
        Kind::Counter,
        "Log bytes pulled from the agent and stored (uncompressed).",
        |a| Some(a.bytes_pulled as f64),
    ),
    (
        "pihealth_agent_backlog_bytes",
        Kind::Gauge,
        "Log bytes waiting on the agent to be pulled, as it last said.",
        |a| Some(a.backlog as f64),
    ),
    (
        "pihealth_agent_clock_skew_seconds",
        Kind::Gauge,
        "Agent clock minus master clock at the last exchange.",
        |a| a.clock_skew_ms.map(secs),
    ),
];

fn agent_families(e: &mut Exposition, agents: &[AgentRecord], alarms: &AlarmSummary) {
    for (name, kind, help, value) in AGENT_FAMILIES {
        per_agent(e, agents, name, kind, help, value);
    }
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
        "pihealth_pull_failures_total",
        Kind::Counter,
        "Failed pulls since the master started, by host and kind: timeout, refused, key, closed, protocol, storage, network.",
    );
    for ((host, kind), n) in &p.failures {
        e.sample(&[("host", host), ("kind", kind.as_str())], *n as f64);
    }
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

/// One family per metric name, in order of first appearance, with every
/// host's samples (the format wants a family's samples together); the
/// `type` label is added for Nagios performance data, whose names are
/// shared by every check.
fn value_families(e: &mut Exposition, hosts: &[HostValues]) {
    type Series = Vec<(Vec<(&'static str, String)>, f64)>;
    // Every gauge of the known types is declared even without a sample (no
    // temperature sensor, no host yet), so rules and dashboards that name
    // it find its HELP and TYPE, as they would on a host that has one.
    let mut families: Vec<(String, &'static str, Series)> = Vec::new();
    for field in schema::SCHEMAS.iter().flat_map(|t| t.fields) {
        if let schema::Metric::Gauge(name, help) = field.metric {
            let name = format!("pihealth_{name}");
            if !families.iter().any(|(n, _, _)| *n == name) {
                families.push((name, help, Vec::new()));
            }
        }
    }
    for h in hosts {
        for t in &h.types {
            for s in &t.samples {
                let mut labels = vec![("host", h.host.clone())];
                if s.name.starts_with("perfdata_") {
                    labels.push(("type", t.log_type.clone()));
                }
                labels.extend(s.labels.iter().cloned());
                let name = format!("pihealth_{}", s.name);
                match families.iter_mut().find(|(n, _, _)| *n == name) {
                    Some((_, _, series)) => series.push((labels, s.value)),
                    None => families.push((name, s.help, vec![(labels, s.value)])),
                }
            }
        }
    }
    for (name, help, series) in &families {
        e.family(name, Kind::Gauge, help);
        for (labels, value) in series {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            e.sample(&labels, *value);
        }
    }
    e.family(
        "pihealth_sample_timestamp_seconds",
        Kind::Gauge,
        "Time of the newest stored sample of the host's log type (agent clock).",
    );
    for h in hosts {
        for t in &h.types {
            e.sample(&[("host", &h.host), ("type", &t.log_type)], t.time as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::registry::Origin;
    use crate::web::prom_text::parse;

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

    fn value(t: &TypeValues, name: &str) -> Option<f64> {
        t.samples.iter().find(|s| s.name == name).map(|s| s.value)
    }

    #[test]
    fn values_from_the_standard_scripts_lines() {
        let c = type_values(
            "cpu",
            &run(&["2026-01-01T00:00:10Z 0.45 1.17 1.08 3.00 - normal"]),
        )
        .unwrap();
        assert_eq!(value(&c, "cpu_load1"), Some(0.45));
        assert_eq!(value(&c, "cpu_usage_percent"), Some(3.0));
        assert_eq!(value(&c, "cpu_temperature_celsius"), None);
        let m = type_values(
            "mem",
            &run(&["2026-01-01T00:00:10Z 1024 512 50.00 48.10 normal"]),
        )
        .unwrap();
        assert_eq!(
            value(&m, "memory_total_bytes"),
            Some(1024.0 * 1024.0 * 1024.0)
        );
        assert_eq!(value(&m, "memory_used_percent"), Some(50.0));
        let d = type_values(
            "disk",
            &run(&[
                "2026-01-01T00:00:10Z / 100 25 75.00 normal",
                "2026-01-01T00:00:10Z /mnt/my_disk 10 9 10.00 normal",
                "2026-01-01T00:00:10Z total 110 34 69.09 normal",
            ]),
        )
        .unwrap();
        let mounts: Vec<&str> = d
            .samples
            .iter()
            .filter(|s| s.name == "disk_used_percent")
            .map(|s| s.labels[0].1.as_str())
            .collect();
        assert_eq!(mounts, ["/", "/mnt/my_disk"]);
        assert_eq!(value(&d, "disk_total_used_percent"), Some(69.09));
        assert_eq!(d.time, 1767225610);
        assert!(type_values("cpu", &run(&["not a line"])).is_none());
        // A failed run stores `failed: ... unknown`: no numbers, no panic.
        let failed = type_values(
            "cpu",
            &run(&["2026-01-01T00:00:10Z failed: exit status 1 unknown"]),
        )
        .unwrap();
        assert!(failed.samples.is_empty());
        // A Nagios check: its performance data.
        let load = type_values(
            "load",
            &run(&["2026-01-01T00:00:10Z LOAD OK - total load average: 0.60, 0.50, 0.40|load1=0.600;5.000;10.000;0; load5=0.500;4.000;6.000;0; ok"]),
        )
        .unwrap();
        assert_eq!(value(&load, "perfdata_value"), Some(0.6));
        assert_eq!(value(&load, "perfdata_critical"), Some(10.0));
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
        pulls
            .failures
            .insert(("pi1".into(), crate::master::pull::FailureKind::Timeout), 1);
        let types = [
            ("cpu", vec!["2026-01-01T00:00:10Z 0.45 1.17 1.08 3.00 48.5 normal"]),
            (
                "disk",
                vec![
                    "2026-01-01T00:00:10Z / 100 25 75.00 normal",
                    "2026-01-01T00:00:10Z / 100 25 75.00 normal",
                    "2026-01-01T00:00:10Z total 100 25 75.00 normal",
                ],
            ),
            ("proc", vec!["2026-01-01T00:00:10Z a\"b 12 root 99.0 1.0 warning"]),
            (
                "sysinfo",
                vec!["2026-01-01T00:00:10Z pi1 Debian 6.1 100 0.5 10 1.00 10 2.00 - normal normal normal"],
            ),
            ("load", vec!["2026-01-01T00:00:10Z LOAD OK |'a b'=1s;2;3 ok"]),
            ("swap", vec!["2026-01-01T00:00:10Z SWAP OK |swap=3MB;;;0;10 ok"]),
            // Hostile labels: quotes, backslashes, a name with spaces and
            // `=`; a label repeated (one series).
            (
                "odd",
                vec![r#"2026-01-01T00:00:10Z X |'q"\ x=y'=1 'q"\ x=y'=2 ok"#],
            ),
        ];
        let two = |host: &str| HostValues {
            host: host.into(),
            types: types
                .iter()
                .filter_map(|(t, lines)| type_values(t, &run(lines)))
                .collect(),
        };
        let hosts = vec![two("pi1"), two("pi2")];
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
        assert_eq!(get("pihealth_proc_cpu_percent", "pi2"), Some(99.0));
        assert_eq!(get("pihealth_sysinfo_uptime_seconds", "pi1"), Some(100.0));
        assert_eq!(get("pihealth_sysinfo_info", "pi1"), Some(1.0));
        assert_eq!(
            get("pihealth_perfdata_max", "pi2"),
            Some(10.0 * 1024.0 * 1024.0)
        );
        // Three checks share the perfdata families, told apart by `type`.
        assert_eq!(
            samples
                .iter()
                .filter(|s| s.name == "pihealth_perfdata_value" && s.label("host") == Some("pi1"))
                .count(),
            3
        );
        assert!(text.contains("pihealth_agents{state=\"up\"} 1\n"));
        assert!(text.contains("pihealth_pulls_total{result=\"failed\"} 1\n"));
        assert!(text.contains("pihealth_pull_failures_total{host=\"pi1\",kind=\"timeout\"} 1\n"));
        assert!(text.contains("pihealth_pull_duration_seconds_bucket{le=\"0.25\"} 1\n"));
        assert!(text.contains("pihealth_pull_duration_seconds_count 2\n"));
        assert!(text.contains("pihealth_alarms_open{level=\"critical\"} 0\n"));
        assert!(text
            .contains("pihealth_sample_timestamp_seconds{host=\"pi1\",type=\"cpu\"} 1767225610\n"));
        // The duplicated `/` line is one series per host.
        assert_eq!(
            samples
                .iter()
                .filter(|s| s.name == "pihealth_disk_used_percent")
                .count(),
            2
        );
    }
}
