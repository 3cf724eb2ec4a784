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
//! Used by `pihealth logs --json` (`"named"`); alarms, the status page and
//! `/metrics` do not use it yet.

use crate::level::Level;

/// What a field's number means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Load average: runnable tasks, no unit.
    Load,
    Percent,
    MiB,
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
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Percent => "%",
            Unit::MiB => "MiB",
            Unit::Celsius => "°C",
            Unit::Seconds => "s",
            Unit::Load | Unit::Count | Unit::Text | Unit::List | Unit::Level => "",
        }
    }
}

/// One field of a type's line.
#[derive(Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub unit: Unit,
}

const fn f(name: &'static str, unit: Unit) -> Field {
    Field { name, unit }
}

/// The words of a standard type's line, in order.
#[derive(Debug)]
pub struct Schema {
    pub log_type: &'static str,
    pub fields: &'static [Field],
    /// Another layout a line may have (proc's `none normal`).
    pub alternative: Option<&'static [Field]>,
}

pub const SCHEMAS: [Schema; 6] = [
    Schema {
        log_type: "cpu",
        fields: &[
            f("load1", Unit::Load),
            f("load5", Unit::Load),
            f("load15", Unit::Load),
            f("usage", Unit::Percent),
            f("temperature", Unit::Celsius),
            f("level", Unit::Level),
        ],
        alternative: None,
    },
    Schema {
        log_type: "mem",
        fields: &[
            f("total", Unit::MiB),
            f("used", Unit::MiB),
            f("used_pct", Unit::Percent),
            f("average_pct", Unit::Percent),
            f("level", Unit::Level),
        ],
        alternative: None,
    },
    Schema {
        log_type: "disk",
        fields: &[
            // A mount point, or `total` on the last line.
            f("mount", Unit::Text),
            f("total", Unit::MiB),
            f("free", Unit::MiB),
            f("used_pct", Unit::Percent),
            f("level", Unit::Level),
        ],
        alternative: None,
    },
    Schema {
        log_type: "proc",
        fields: &[
            f("name", Unit::Text),
            f("pid", Unit::Count),
            f("user", Unit::Text),
            f("cpu_pct", Unit::Percent),
            f("mem_pct", Unit::Percent),
            f("level", Unit::Level),
        ],
        // `none normal`: no busy process.
        alternative: Some(&[f("none", Unit::Text), f("level", Unit::Level)]),
    },
    Schema {
        log_type: "users",
        fields: &[
            f("user_count", Unit::Count),
            f("most_active", Unit::List),
            f("root_users", Unit::List),
            f("logged_in", Unit::List),
            f("level", Unit::Level),
        ],
        alternative: None,
    },
    Schema {
        log_type: "sysinfo",
        fields: &[
            f("hostname", Unit::Text),
            f("os", Unit::Text),
            f("kernel", Unit::Text),
            f("uptime", Unit::Seconds),
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
    },
];

/// The schema of a standard type.
pub fn for_type(log_type: &str) -> Option<&'static Schema> {
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
    pub fn to_json(&self) -> serde_json::Value {
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
pub fn to_json(named: &[(&'static Field, Value<'_>)]) -> serde_json::Value {
    serde_json::Value::Object(
        named
            .iter()
            .map(|(field, value)| (field.name.to_string(), value.to_json()))
            .collect(),
    )
}

/// Labelled values for people: `usage 89.32 %, temperature -, …` (levels left out).
pub fn describe(named: &[(&'static Field, Value<'_>)]) -> String {
    named
        .iter()
        .filter(|(field, _)| field.unit != Unit::Level)
        .map(|(field, value)| {
            let shown = match value {
                Value::Number(n) => format!("{n}"),
                Value::Text(t) => t.to_string(),
                Value::List(l) if l.is_empty() => "-".to_string(),
                Value::List(l) => l.join(","),
                Value::Level(l) => l.as_str().to_string(),
                Value::Missing => "-".to_string(),
            };
            let unit = if matches!(value, Value::Number(_)) {
                field.unit.symbol()
            } else {
                ""
            };
            if unit.is_empty() {
                format!("{} {shown}", field.name)
            } else {
                format!("{} {shown} {unit}", field.name)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
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
        let named = name_fields("cpu", &words("0.62 0.67 0.79 89.32 - warning")).unwrap();
        assert_eq!(
            describe(&named),
            "load1 0.62, load5 0.67, load15 0.79, usage 89.32 %, temperature -"
        );
        assert_eq!(Unit::Celsius.symbol(), "°C");
    }
}
