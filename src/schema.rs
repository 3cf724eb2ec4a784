//! Named fields with units for the six standard types (SPEC §5: "Every
//! type has a schema"; issue 14).
//!
//! A stored line is words: `0.62 0.67 0.79 89.32 - warning` means nothing
//! to a newcomer. The schema says what each word of a standard type is
//! (`load1`, … `usage` in %, `temperature` in °C, `level`), so readers can
//! show `cpu usage 89.32 %` and `logs --json` can give
//! `{"usage": 89.32, "temperature": null, …}`. The field lists are the
//! scripts' headers (`scripts/*.sh`), which the built-in checks print
//! exactly. A line that does not fit its schema (an `unknown` line saying
//! why a run failed, or a collector of another kind under a standard name)
//! is not named: readers fall back to the plain words.
//!
//! Readers: `pihealth logs --json` (`"named"`); the agent's alarm messages
//! (labelled with the thresholds it judged by: `usage 89.32 % ≥ warning
//! 80 %`); `pihealth alarms` and the status page (which label a message
//! still in the plain words, without thresholds: the master does not know
//! an agent's); `/metrics` (every numeric field with a metric name is a
//! gauge, see [`samples`]; Nagios performance data in `perfdata`).

use crate::level::Level;

/// What a field's number means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Load average: runnable tasks, no unit.
    Load,
    Percent,
    MiB,
    Bytes,
    Milliseconds,
    Celsius,
    Seconds,
    /// A whole number of things (users, a pid).
    Count,
    /// A word (mount point, host name); `_` stands for spaces.
    Text,
    /// Comma-separated words, `-` when empty.
    List,
    /// normal, note, warning, critical or unknown.
    Level,
}

impl Unit {
    /// What follows a value when shown: `89.3 %`, `512 MiB`, `48.2 °C`.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Unit::Percent => "%",
            Unit::MiB => "MiB",
            Unit::Bytes => "B",
            Unit::Milliseconds => "ms",
            Unit::Celsius => "°C",
            Unit::Seconds => "s",
            Unit::Load | Unit::Count | Unit::Text | Unit::List | Unit::Level => "",
        }
    }
}

/// One field of a type's line.
#[derive(Debug, PartialEq)]
pub struct Field {
    pub(crate) name: &'static str,
    pub(crate) unit: Unit,
    /// What `/metrics` makes of it.
    pub(crate) metric: Metric,
}

/// How a field shows in `/metrics`.
#[derive(Debug, PartialEq)]
pub(crate) enum Metric {
    /// Not exported (levels, lists).
    None,
    /// A gauge `pihealth_NAME` (the name carries the unit suffix:
    /// `_percent`, `_celsius`, `_seconds`, `_bytes`; MiB are scaled to bytes).
    Gauge(&'static str, &'static str),
    /// A label of the row's gauges (disk's mount, proc's name).
    Label,
    /// A label of the type's `pihealth_TYPE_info` series (sysinfo's os).
    Info,
}

const fn f(name: &'static str, unit: Unit) -> Field {
    let metric = match unit {
        Unit::Text => Metric::Label,
        _ => Metric::None,
    };
    Field { name, unit, metric }
}

const fn g(name: &'static str, unit: Unit, metric: &'static str, help: &'static str) -> Field {
    Field {
        name,
        unit,
        metric: Metric::Gauge(metric, help),
    }
}

const fn info(name: &'static str) -> Field {
    Field {
        name,
        unit: Unit::Text,
        metric: Metric::Info,
    }
}

/// Where a threshold comes from.
#[derive(Debug, PartialEq)]
pub(crate) enum Bound {
    /// A `PIHEALTH_*` variable (the agent config's `thresholds`).
    Env(&'static str),
    /// Fixed in the check (proc: 80 % is warning).
    Fixed(f64),
}

/// A field whose value sets the line's level: at or above each bound, that
/// level (bounds in rising order).
#[derive(Debug, PartialEq)]
pub(crate) struct Judged {
    pub(crate) field: &'static str,
    pub(crate) bounds: &'static [(Level, Bound)],
}

/// The words of a standard type's line, in order.
#[derive(Debug)]
pub(crate) struct Schema {
    pub(crate) log_type: &'static str,
    pub(crate) fields: &'static [Field],
    /// Another layout a line may have (proc's `none normal`).
    pub(crate) alternative: Option<&'static [Field]>,
    /// Which fields the levels judge, against which thresholds.
    pub(crate) judged: &'static [Judged],
    /// The first word of a summary row (disk's `total`): its gauges are
    /// named `pihealth_disk_total_…` and carry no row label.
    pub(crate) total_row: Option<&'static str>,
}

use Bound::{Env, Fixed};

/// The standard note/warning/critical thresholds from three variables.
const fn three(
    note: &'static str,
    warning: &'static str,
    critical: &'static str,
) -> [(Level, Bound); 3] {
    [
        (Level::Note, Env(note)),
        (Level::Warning, Env(warning)),
        (Level::Critical, Env(critical)),
    ]
}

const CPU: &[(Level, Bound)] = &three(
    "PIHEALTH_CPU_NOTE",
    "PIHEALTH_CPU_WARNING",
    "PIHEALTH_CPU_CRITICAL",
);
const MEM: &[(Level, Bound)] = &three(
    "PIHEALTH_MEM_NOTE",
    "PIHEALTH_MEM_WARNING",
    "PIHEALTH_MEM_CRITICAL",
);
const DISK: &[(Level, Bound)] = &three(
    "PIHEALTH_DISK_NOTE",
    "PIHEALTH_DISK_WARNING",
    "PIHEALTH_DISK_CRITICAL",
);
const TEMP: &[(Level, Bound)] = &three(
    "PIHEALTH_TEMP_NOTE",
    "PIHEALTH_TEMP_WARNING",
    "PIHEALTH_TEMP_CRITICAL",
);
const PROC: &[(Level, Bound)] = &[
    (Level::Note, Env("PIHEALTH_PROC_THRESHOLD")),
    (Level::Warning, Fixed(80.0)),
];

/// `none normal`: no row (no busy process, no interface, no firmware flags).
const NONE: &[Field] = &[
    Field {
        name: "none",
        unit: Unit::Text,
        metric: Metric::None,
    },
    f("level", Unit::Level),
];

pub(crate) const SCHEMAS: [Schema; 9] = [
    Schema {
        log_type: "cpu",
        fields: &[
            g("load1", Unit::Load, "cpu_load1", "One-minute load average (cpu log)."),
            g("load5", Unit::Load, "cpu_load5", "Five-minute load average (cpu log)."),
            g("load15", Unit::Load, "cpu_load15", "Fifteen-minute load average (cpu log)."),
            g(
                "usage",
                Unit::Percent,
                "cpu_usage_percent",
                "CPU busy time over the collector's sampling window, 0-100 (cpu log).",
            ),
            g(
                "temperature",
                Unit::Celsius,
                "cpu_temperature_celsius",
                "Hottest thermal zone (cpu log); absent without a sensor.",
            ),
            f("level", Unit::Level),
        ],
        alternative: None,
        judged: &[
            Judged {
                field: "usage",
                bounds: CPU,
            },
            Judged {
                field: "temperature",
                bounds: TEMP,
            },
        ],
        total_row: None,
    },
    Schema {
        log_type: "mem",
        fields: &[
            g("total", Unit::MiB, "memory_total_bytes", "Total memory (mem log)."),
            g(
                "used",
                Unit::MiB,
                "memory_used_bytes",
                "Memory in use, total minus available (mem log).",
            ),
            g(
                "used_pct",
                Unit::Percent,
                "memory_used_percent",
                "Memory in use, 0-100 (mem log).",
            ),
            g(
                "average_pct",
                Unit::Percent,
                "memory_average_percent",
                "Dynamic average of memory in use, 0.3 x previous + 0.7 x current, 0-100 (mem log).",
            ),
            f("level", Unit::Level),
        ],
        alternative: None,
        judged: &[Judged {
            field: "used_pct",
            bounds: MEM,
        }],
        total_row: None,
    },
    Schema {
        log_type: "disk",
        fields: &[
            // A mount point, or `total` on the last line.
            f("mount", Unit::Text),
            g("total", Unit::MiB, "disk_size_bytes", "Size of the file system (disk log)."),
            g(
                "free",
                Unit::MiB,
                "disk_free_bytes",
                "Space available to unprivileged users (disk log).",
            ),
            g(
                "used_pct",
                Unit::Percent,
                "disk_used_percent",
                "Used space of the file system, 0-100 (disk log).",
            ),
            f("level", Unit::Level),
        ],
        alternative: None,
        judged: &[Judged {
            field: "used_pct",
            bounds: DISK,
        }],
        total_row: Some("total"),
    },
    Schema {
        log_type: "proc",
        fields: &[
            f("name", Unit::Text),
            Field {
                name: "pid",
                unit: Unit::Count,
                metric: Metric::Label,
            },
            f("user", Unit::Text),
            g(
                "cpu_pct",
                Unit::Percent,
                "proc_cpu_percent",
                "A busy process's CPU time over its lifetime, per core (proc log).",
            ),
            g(
                "mem_pct",
                Unit::Percent,
                "proc_memory_percent",
                "A busy process's share of memory, 0-100 (proc log).",
            ),
            f("level", Unit::Level),
        ],
        alternative: Some(NONE),
        judged: &[
            Judged {
                field: "cpu_pct",
                bounds: PROC,
            },
            Judged {
                field: "mem_pct",
                bounds: PROC,
            },
        ],
        total_row: None,
    },
    Schema {
        log_type: "users",
        fields: &[
            g(
                "user_count",
                Unit::Count,
                "users_logged_in",
                "Distinct users logged in (users log).",
            ),
            f("most_active", Unit::List),
            f("root_users", Unit::List),
            f("logged_in", Unit::List),
            f("level", Unit::Level),
        ],
        alternative: None,
        judged: &[],
        total_row: None,
    },
    Schema {
        log_type: "sysinfo",
        fields: &[
            info("hostname"),
            info("os"),
            info("kernel"),
            g("uptime", Unit::Seconds, "sysinfo_uptime_seconds", "Time since boot (sysinfo log)."),
            f("load1", Unit::Load),
            f("disk_total", Unit::MiB),
            f("disk_used_pct", Unit::Percent),
            f("mem_total", Unit::MiB),
            f("mem_used_pct", Unit::Percent),
            f("temperature", Unit::Celsius),
            f("disk_level", Unit::Level),
            f("mem_level", Unit::Level),
            f("temp_level", Unit::Level),
        ],
        alternative: None,
        judged: &[
            Judged {
                field: "disk_used_pct",
                bounds: DISK,
            },
            Judged {
                field: "mem_used_pct",
                bounds: MEM,
            },
            Judged {
                field: "temperature",
                bounds: TEMP,
            },
        ],
        total_row: None,
    },
    Schema {
        log_type: "net",
        fields: &[
            f("interface", Unit::Text),
            g("rx_bytes", Unit::Bytes, "net_received_bytes", "Bytes received by the interface since boot (net log)."),
            g("tx_bytes", Unit::Bytes, "net_transmitted_bytes", "Bytes sent by the interface since boot (net log)."),
            g("rx_packets", Unit::Count, "net_received_packets", "Packets received since boot (net log)."),
            g("tx_packets", Unit::Count, "net_transmitted_packets", "Packets sent since boot (net log)."),
            g("rx_errors", Unit::Count, "net_receive_errors", "Receive errors since boot (net log)."),
            g("tx_errors", Unit::Count, "net_transmit_errors", "Transmit errors since boot (net log)."),
            g("rx_dropped", Unit::Count, "net_receive_drops", "Received packets dropped since boot (net log)."),
            g("tx_dropped", Unit::Count, "net_transmit_drops", "Packets to send dropped since boot (net log)."),
            f("level", Unit::Level),
        ],
        alternative: Some(NONE),
        judged: &[],
        total_row: None,
    },
    Schema {
        log_type: "diskio",
        fields: &[
            f("device", Unit::Text),
            g("reads", Unit::Count, "diskio_reads", "Reads completed since boot (diskio log)."),
            g("read_bytes", Unit::Bytes, "diskio_read_bytes", "Bytes read since boot (diskio log)."),
            g("writes", Unit::Count, "diskio_writes", "Writes completed since boot (diskio log)."),
            g("written_bytes", Unit::Bytes, "diskio_written_bytes", "Bytes written since boot (diskio log)."),
            g("io_time", Unit::Milliseconds, "diskio_io_time_seconds", "Time the device was busy since boot (diskio log)."),
            f("level", Unit::Level),
        ],
        alternative: Some(NONE),
        judged: &[],
        total_row: None,
    },
    Schema {
        log_type: "throttle",
        fields: &[
            g("undervoltage", Unit::Count, "throttle_undervoltage", "1 while the Pi's supply is under-voltage (throttle log)."),
            g("freq_capped", Unit::Count, "throttle_freq_capped", "1 while the ARM frequency is capped (throttle log)."),
            g("throttled", Unit::Count, "throttle_throttled", "1 while the Pi is throttled (throttle log)."),
            g("soft_temp_limit", Unit::Count, "throttle_soft_temp_limit", "1 while the soft temperature limit is active (throttle log)."),
            g("undervoltage_seen", Unit::Count, "throttle_undervoltage_seen", "1 when under-voltage occurred since boot (throttle log)."),
            g("freq_capped_seen", Unit::Count, "throttle_freq_capped_seen", "1 when the frequency was capped since boot (throttle log)."),
            g("throttled_seen", Unit::Count, "throttle_throttled_seen", "1 when throttling occurred since boot (throttle log)."),
            g("soft_temp_limit_seen", Unit::Count, "throttle_soft_temp_limit_seen", "1 when the soft temperature limit was reached since boot (throttle log)."),
            f("level", Unit::Level),
        ],
        alternative: Some(NONE),
        judged: &[],
        total_row: None,
    },
];

/// The schema of a standard type.
pub(crate) fn for_type(log_type: &str) -> Option<&'static Schema> {
    SCHEMAS.iter().find(|s| s.log_type == log_type)
}

/// One field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Number(f64),
    Text(&'a str),
    List(Vec<&'a str>),
    Level(Level),
    /// `-`: no value (no temperature sensor, an empty list is a `List`).
    Missing,
}

impl Value<'_> {
    /// As JSON: numbers as numbers, `-` as null, lists as arrays.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            // Whole numbers (pids, MiB, counts) without a `.0`.
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 9e15 => serde_json::json!(*n as i64),
            Value::Number(n) => serde_json::json!(n),
            Value::Text(t) => serde_json::json!(t),
            Value::List(l) => serde_json::json!(l),
            Value::Level(l) => serde_json::json!(l.as_str()),
            Value::Missing => serde_json::Value::Null,
        }
    }
}

fn value<'a>(unit: Unit, word: &'a str) -> Option<Value<'a>> {
    Some(match unit {
        Unit::Text => Value::Text(word),
        Unit::List if word == "-" => Value::List(Vec::new()),
        Unit::List => Value::List(word.split(',').collect()),
        Unit::Level => Value::Level(word.parse().ok()?),
        _ if word == "-" => Value::Missing,
        _ => Value::Number(word.parse::<f64>().ok().filter(|v| v.is_finite())?),
    })
}

/// The words of one line of `log_type` (after the timestamp, level words
/// included) by name; `None` when the type has no schema or the line does
/// not fit it (wrong count, a number that is not one, a level that is not).
pub fn name_fields<'a>(
    log_type: &str,
    words: &[&'a str],
) -> Option<Vec<(&'static Field, Value<'a>)>> {
    let schema = for_type(log_type)?;
    let fit = |fields: &'static [Field]| -> Option<Vec<(&'static Field, Value<'a>)>> {
        if fields.len() != words.len() {
            return None;
        }
        fields
            .iter()
            .zip(words)
            .map(|(field, word)| Some((field, value(field.unit, word)?)))
            .collect()
    };
    fit(schema.fields).or_else(|| schema.alternative.and_then(fit))
}

/// A named line as a JSON object, `{"usage": 89.32, "temperature": null, …}`.
pub(crate) fn to_json(named: &[(&'static Field, Value<'_>)]) -> serde_json::Value {
    serde_json::Value::Object(
        named
            .iter()
            .map(|(field, value)| (field.name.to_string(), value.to_json()))
            .collect(),
    )
}

/// A threshold by its `PIHEALTH_*` name, when the reader knows it (the
/// agent does: its config's `thresholds`; the master does not).
pub(crate) type Thresholds<'t> = &'t dyn Fn(&str) -> Option<f64>;

/// The highest level whose bound `value` reaches, with that bound.
fn judge(judged: &Judged, value: f64, thresholds: Thresholds) -> Option<(Level, f64)> {
    judged
        .bounds
        .iter()
        .filter_map(|(level, bound)| {
            let at = match bound {
                Bound::Env(key) => thresholds(key)?,
                Bound::Fixed(v) => *v,
            };
            (value >= at).then_some((*level, at))
        })
        .next_back()
}

/// One value for people: `89.32 %`, `-`, `pi,root`.
fn shown(field: &Field, word: &str, value: &Value) -> String {
    match value {
        Value::Number(_) if !field.unit.symbol().is_empty() => {
            format!("{word} {}", field.unit.symbol())
        }
        Value::List(l) if l.is_empty() => "-".to_string(),
        _ => word.to_string(),
    }
}

/// Labelled values for people: `usage 89.32 % ≥ warning 80 %, load1 0.62,
/// …, temperature -`. Values past a known threshold come first, with it;
/// a row's labels (disk's mount) lead as `mount /:`; levels are left out.
pub(crate) fn describe(
    log_type: &str,
    words: &[&str],
    named: &[(&'static Field, Value<'_>)],
    thresholds: Option<Thresholds>,
) -> String {
    let schema = for_type(log_type);
    let mut past = Vec::new();
    let mut rest = Vec::new();
    let mut labels = Vec::new();
    for ((field, value), word) in named.iter().zip(words) {
        if field.unit == Unit::Level {
            continue;
        }
        if field.name == *word {
            // proc's `none`.
            rest.push(word.to_string());
            continue;
        }
        let text = format!("{} {}", field.name, shown(field, word, value));
        let judged = schema.and_then(|s| s.judged.iter().find(|j| j.field == field.name));
        let verdict = match (judged, value, thresholds) {
            (Some(j), Value::Number(n), Some(t)) => judge(j, *n, t),
            _ => None,
        };
        match verdict {
            Some((level, at)) => past.push(format!(
                "{text} ≥ {level} {at}{}",
                match field.unit.symbol() {
                    "" => String::new(),
                    s => format!(" {s}"),
                }
            )),
            None if field.metric == Metric::Label => labels.push(text),
            None => rest.push(text),
        }
    }
    past.extend(rest);
    let body = past.join(", ");
    if labels.is_empty() {
        body
    } else {
        format!("{}: {body}", labels.join(", "))
    }
}

/// One line of `log_type` labelled (see [`describe`]); the line itself when
/// it does not fit the schema.
pub(crate) fn label_line(log_type: &str, line: &str, thresholds: Option<Thresholds>) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match name_fields(log_type, &words) {
        Some(named) => describe(log_type, &words, &named, thresholds),
        None => line.to_string(),
    }
}

/// An alarm's message with every line labelled: the agent writes the
/// lines of a run joined by ` / ` (after `recovered from LEVEL: ` on a
/// recovery); labelled lines are joined by `; `. A message that is no
/// such list of schema lines (already labelled, or of another kind) is
/// returned as it is.
pub(crate) fn label_message(
    log_type: &str,
    message: &str,
    thresholds: Option<Thresholds>,
) -> String {
    if for_type(log_type).is_none() {
        return message.to_string();
    }
    let (prefix, body) = match message.split_once(": ") {
        Some((p, b))
            if p.strip_prefix("recovered from ")
                .is_some_and(|l| l.parse::<Level>().is_ok()) =>
        {
            (format!("{p}: "), b)
        }
        _ => (String::new(), message),
    };
    let lines: Vec<&str> = body.split(" / ").collect();
    let mut any = false;
    let labelled: Vec<String> = lines
        .iter()
        .map(|l| {
            let out = label_line(log_type, l, thresholds);
            any |= out != *l;
            out
        })
        .collect();
    if !any {
        return message.to_string();
    }
    format!("{prefix}{}", labelled.join("; "))
}

/// The lines of one run as an alarm message, labelled with the thresholds
/// the agent judged them by (see [`label_message`]).
pub(crate) fn alarm_text(
    log_type: &str,
    lines: &[String],
    thresholds: Option<Thresholds>,
) -> String {
    label_message(log_type, &lines.join(" / "), thresholds)
}

/// One sample for `/metrics`, before the host label is added.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Without the `pihealth_` prefix.
    pub(crate) name: String,
    pub(crate) help: &'static str,
    pub(crate) labels: Vec<(&'static str, String)>,
    pub(crate) value: f64,
}

const MIB: f64 = 1024.0 * 1024.0;

/// The gauges of one stored line of a standard type: one per numeric field
/// with a metric name, labelled by the row's label fields; plus a
/// `TYPE_info` series of 1 for the info fields. Nothing for a line that
/// does not fit (a failed run's `unknown` line).
pub(crate) fn samples(log_type: &str, words: &[&str]) -> Vec<Sample> {
    let (Some(schema), Some(named)) = (for_type(log_type), name_fields(log_type, words)) else {
        return Vec::new();
    };
    let total = schema.total_row.is_some_and(|t| words.first() == Some(&t));
    let mut labels = Vec::new();
    let mut infos = Vec::new();
    for ((field, _), word) in named.iter().zip(words) {
        match field.metric {
            Metric::Label if !total => labels.push((field.name, word.to_string())),
            Metric::Info => infos.push((field.name, word.to_string())),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (field, value) in &named {
        let (Metric::Gauge(name, help), Value::Number(n)) = (&field.metric, value) else {
            continue;
        };
        let name = match (total, name.split_once('_')) {
            (true, Some((first, rest))) => format!("{first}_total_{rest}"),
            _ => name.to_string(),
        };
        let value = match field.unit {
            Unit::MiB => n * MIB,
            Unit::Milliseconds => n / 1000.0,
            _ => *n,
        };
        out.push(Sample {
            name,
            help,
            labels: labels.clone(),
            value,
        });
    }
    if !infos.is_empty() {
        out.push(Sample {
            name: format!("{log_type}_info"),
            help: "Always 1; the labels are the host's words of this type's newest line.",
            labels: infos,
            value: 1.0,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<&str> {
        line.split(' ').collect()
    }

    #[test]
    fn every_standard_line_is_named() {
        for (t, line) in [
            ("cpu", "0.02 0.08 0.08 31.56 49.38 normal"),
            ("mem", "24105 938 3.89 3.89 normal"),
            ("disk", "/ 258019 71607 23.05 normal"),
            ("disk", "total 258019 71607 23.05 normal"),
            ("proc", "rustc 31482 root 85.1 1.8 warning"),
            ("proc", "none normal"),
            ("users", "0 root root - normal"),
            (
                "sysinfo",
                "vm Debian_GNU/Linux_12_(bookworm) 6.1.0 1787 6.24 258019 23.05 24105 3.89 - normal normal note",
            ),
        ] {
            let named = name_fields(t, &words(line)).unwrap_or_else(|| panic!("{t}: {line}"));
            assert_eq!(named.len(), line.split(' ').count(), "{t}");
        }
    }

    #[test]
    fn json_has_numbers_nulls_lists_and_levels() {
        let named = name_fields("cpu", &words("0.62 0.67 0.79 89.32 - warning")).unwrap();
        assert_eq!(
            to_json(&named),
            serde_json::json!({"load1": 0.62, "load5": 0.67, "load15": 0.79,
                               "usage": 89.32, "temperature": null, "level": "warning"})
        );
        let named = name_fields("users", &words("2 pi,root root - note")).unwrap();
        assert_eq!(
            to_json(&named),
            serde_json::json!({"user_count": 2, "most_active": ["pi", "root"],
                               "root_users": ["root"], "logged_in": [], "level": "note"})
        );
        assert_eq!(
            to_json(&name_fields("proc", &words("none normal")).unwrap()),
            serde_json::json!({"none": "none", "level": "normal"})
        );
    }

    #[test]
    fn lines_that_do_not_fit_are_not_named() {
        assert!(name_fields("cpu", &words("timeout: killed after 10s unknown")).is_none());
        assert!(name_fields("cpu", &words("0.62 0.67 0.79 lots - warning")).is_none());
        assert!(name_fields("cpu", &words("0.62 0.67 0.79 1 - fine")).is_none());
        assert!(name_fields("load", &words("OK - load average normal")).is_none());
    }

    #[test]
    fn described_with_units() {
        let w = words("0.62 0.67 0.79 89.32 - warning");
        let named = name_fields("cpu", &w).unwrap();
        assert_eq!(
            describe("cpu", &w, &named, None),
            "load1 0.62, load5 0.67, load15 0.79, usage 89.32 %, temperature -"
        );
        assert_eq!(Unit::Celsius.symbol(), "°C");
    }

    fn defaults(key: &str) -> Option<f64> {
        Some(match key {
            "PIHEALTH_CPU_NOTE" | "PIHEALTH_MEM_NOTE" => 70.0,
            "PIHEALTH_CPU_WARNING" | "PIHEALTH_MEM_WARNING" => 80.0,
            "PIHEALTH_CPU_CRITICAL" => 95.0,
            "PIHEALTH_DISK_NOTE" => 80.0,
            "PIHEALTH_DISK_WARNING" => 90.0,
            "PIHEALTH_DISK_CRITICAL" => 95.0,
            "PIHEALTH_TEMP_NOTE" => 50.0,
            "PIHEALTH_TEMP_WARNING" => 70.0,
            "PIHEALTH_PROC_THRESHOLD" => 50.0,
            // Unknown to this reader: no `≥` for it.
            _ => return None,
        })
    }

    #[test]
    fn values_past_a_threshold_come_first_with_it() {
        let t: Thresholds = &defaults;
        assert_eq!(
            label_line("cpu", "0.62 0.67 0.79 89.32 - warning", Some(t)),
            "usage 89.32 % ≥ warning 80 %, load1 0.62, load5 0.67, load15 0.79, temperature -"
        );
        assert_eq!(
            label_line("cpu", "0.62 0.67 0.79 96.5 71.2 critical", Some(t)),
            "usage 96.5 % ≥ critical 95 %, temperature 71.2 °C ≥ warning 70 °C, \
             load1 0.62, load5 0.67, load15 0.79"
        );
        assert_eq!(
            label_line("disk", "/srv 1000 50 95.00 critical", Some(t)),
            "mount /srv: used_pct 95.00 % ≥ critical 95 %, total 1000 MiB, free 50 MiB"
        );
        assert_eq!(
            label_line("proc", "rustc 31482 root 85.1 1.8 warning", Some(t)),
            "name rustc, pid 31482, user root: cpu_pct 85.1 % ≥ warning 80 %, mem_pct 1.8 %"
        );
        assert_eq!(label_line("proc", "none normal", Some(t)), "none");
        // Not a schema line: as it is.
        assert_eq!(
            label_line("cpu", "timeout: killed after 10s unknown", Some(t)),
            "timeout: killed after 10s unknown"
        );
    }

    #[test]
    fn alarm_messages_are_labelled_once() {
        let t: Thresholds = &defaults;
        let lines = vec![
            "/ 1000 50 95.00 critical".to_string(),
            "total 1000 50 95.00 critical".to_string(),
        ];
        let text = alarm_text("disk", &lines, Some(t));
        assert_eq!(
            text,
            "mount /: used_pct 95.00 % ≥ critical 95 %, total 1000 MiB, free 50 MiB; \
             mount total: used_pct 95.00 % ≥ critical 95 %, total 1000 MiB, free 50 MiB"
        );
        // The master labels a plain message (an older agent's) without
        // thresholds, and leaves a labelled one alone.
        let plain = "recovered from warning: 0.1 0.2 0.3 12.00 - normal";
        assert_eq!(
            label_message("cpu", plain, None),
            "recovered from warning: load1 0.1, load5 0.2, load15 0.3, usage 12.00 %, temperature -"
        );
        assert_eq!(label_message("cpu", &text, None), text);
        assert_eq!(
            label_message("load", "LOAD OK - fine ok", None),
            "LOAD OK - fine ok"
        );
        assert_eq!(
            label_message(
                "disk",
                "/ 1000 50 95.00 warning / total 1000 50 95.00 warning",
                None
            ),
            "mount /: total 1000 MiB, free 50 MiB, used_pct 95.00 %; \
             mount total: total 1000 MiB, free 50 MiB, used_pct 95.00 %"
        );
    }

    #[test]
    fn the_extra_builtins_lines_are_named() {
        let t: Thresholds = &defaults;
        assert_eq!(
            label_line("net", "eth0 1000 2000 10 20 1 3 2 4 note", Some(t)),
            "interface eth0: rx_bytes 1000 B, tx_bytes 2000 B, rx_packets 10, tx_packets 20, \
             rx_errors 1, tx_errors 3, rx_dropped 2, tx_dropped 4"
        );
        let io = samples("diskio", &words("mmcblk0 100 1024000 40 409600 90 normal"));
        assert_eq!(io[4].name, "diskio_io_time_seconds");
        assert_eq!(io[4].value, 0.09);
        assert_eq!(io[4].labels, vec![("device", "mmcblk0".to_string())]);
        assert_eq!(
            samples("throttle", &words("1 0 1 0 1 0 1 0 warning")).len(),
            8
        );
        for t in ["net", "diskio", "throttle"] {
            assert!(samples(t, &words("none normal")).is_empty());
            assert!(name_fields(t, &words("none normal")).is_some());
        }
    }

    #[test]
    fn metric_samples_of_every_type() {
        type Row = (String, Vec<(&'static str, String)>, f64);
        let names = |t: &str, line: &str| -> Vec<Row> {
            samples(t, &words(line))
                .into_iter()
                .map(|s| (s.name, s.labels, s.value))
                .collect()
        };
        let cpu = names("cpu", "0.62 0.67 0.79 89.32 - warning");
        assert_eq!(cpu.len(), 4, "no temperature: {cpu:?}");
        assert_eq!(cpu[3], ("cpu_usage_percent".into(), vec![], 89.32));
        let mem = names("mem", "2 1 50.00 48.00 normal");
        assert_eq!(mem[0], ("memory_total_bytes".into(), vec![], 2.0 * MIB));
        let disk = names("disk", "/mnt/my_disk 10 9 10.00 normal");
        assert_eq!(
            disk[2],
            (
                "disk_used_percent".into(),
                vec![("mount", "/mnt/my_disk".into())],
                10.0
            )
        );
        let total = names("disk", "total 10 9 10.00 normal");
        assert_eq!(total[2], ("disk_total_used_percent".into(), vec![], 10.0));
        let proc = names("proc", "rustc 31482 root 85.1 1.8 warning");
        assert_eq!(proc[0].0, "proc_cpu_percent");
        assert_eq!(proc[0].1.len(), 3);
        assert!(names("proc", "none normal").is_empty());
        assert_eq!(
            names("users", "2 pi,root root - note")[0].0,
            "users_logged_in"
        );
        let sys = names(
            "sysinfo",
            "vm Debian_GNU/Linux_12_(bookworm) 6.1.0 1787 6.24 258019 23.05 24105 3.89 - normal normal note",
        );
        assert_eq!(sys[0], ("sysinfo_uptime_seconds".into(), vec![], 1787.0));
        assert_eq!(sys[1].0, "sysinfo_info");
        assert_eq!(sys[1].1[1], ("os", "Debian_GNU/Linux_12_(bookworm)".into()));
        assert!(names("cpu", "failed: exit status 1 unknown").is_empty());
    }
}
