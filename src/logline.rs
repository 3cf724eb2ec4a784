//! One stored log line, taken apart: `TIME FIELD... LEVEL...`.
//!
//! Every line the agent stores starts with an RFC 3339 timestamp and ends
//! in one or more level words (`sysinfo` prints three: disk, memory,
//! temperature; `nagios` collectors get the level appended). The line's
//! level is the worst of them. The reader (`pihealth logs --level/--json`)
//! and the master's status page both read lines through this one parser.

use chrono::{DateTime, FixedOffset};

use crate::level::Level;

#[derive(Debug, Clone, PartialEq)]
pub struct LogLine<'a> {
    pub time: DateTime<FixedOffset>,
    /// The words between the timestamp and the trailing level words.
    pub fields: Vec<&'a str>,
    /// Worst trailing level word; `None` if the line ends in none.
    pub level: Option<Level>,
    /// Every word after the timestamp, level words included (what a
    /// type's schema names).
    pub words: Vec<&'a str>,
}

impl<'a> LogLine<'a> {
    /// Parse one line (with or without its `'\n'`). `None` if it does not
    /// start with a timestamp.
    pub fn parse(line: &'a str) -> Option<LogLine<'a>> {
        let line = line.trim_end_matches(['\n', '\r']);
        let (stamp, rest) = line.split_once(' ').unwrap_or((line, ""));
        let time = DateTime::parse_from_rfc3339(stamp).ok()?;
        let words: Vec<&str> = rest.split_whitespace().collect();
        let mut fields = words.clone();
        let mut level = None;
        while let Some(l) = fields.last().and_then(|w| w.parse::<Level>().ok()) {
            level = level.max(Some(l));
            fields.pop();
        }
        Some(LogLine {
            time,
            fields,
            level,
            words,
        })
    }

    /// Field `i` as a number, if it is one (`-` means "no value").
    pub fn number(&self, i: usize) -> Option<f64> {
        self.fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .filter(|v| v.is_finite())
    }

    /// One JSON object: `{"time","host","type","fields","level"}`, plus
    /// `"named"` (`{"usage": 89.32, …}`, see `schema`) when the line fits
    /// its type's schema.
    pub fn to_json(&self, host: &str, log_type: &str) -> serde_json::Value {
        let mut j = serde_json::json!({
            "time": self.time.to_rfc3339(),
            "host": host,
            "type": log_type,
            "fields": self.fields,
            "level": self.level.map(Level::as_str),
        });
        if let Some(named) = crate::schema::name_fields(log_type, &self.words) {
            j["named"] = crate::schema::to_json(&named);
        }
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_line() {
        let l = LogLine::parse("2026-11-21T10:31:09+08:00 0.02 0.08 0.08 31.56 49.38 normal\n")
            .unwrap();
        assert_eq!(l.fields, ["0.02", "0.08", "0.08", "31.56", "49.38"]);
        assert_eq!(l.level, Some(Level::Normal));
        assert_eq!(l.number(3), Some(31.56));
        assert_eq!(l.time.to_rfc3339(), "2026-11-21T10:31:09+08:00");
    }

    #[test]
    fn worst_of_several_levels() {
        let l = LogLine::parse("2026-11-21T10:31:09Z pi1 Debian 6.1 90 0.1 normal warning note")
            .unwrap();
        assert_eq!(l.level, Some(Level::Warning));
        assert_eq!(l.fields, ["pi1", "Debian", "6.1", "90", "0.1"]);
    }

    #[test]
    fn no_level_and_no_timestamp() {
        let l = LogLine::parse("2026-11-21T10:31:09Z just text").unwrap();
        assert_eq!(l.level, None);
        assert!(LogLine::parse("pihealth dropped 10 bytes").is_none());
        assert!(LogLine::parse("").is_none());
        assert_eq!(l.number(0), None);
    }

    #[test]
    fn json_shape() {
        let l = LogLine::parse("2026-11-21T10:31:09+00:00 / 100 20 80.00 warning").unwrap();
        let j = l.to_json("pi1", "disk");
        assert_eq!(j["host"], "pi1");
        assert_eq!(j["type"], "disk");
        assert_eq!(j["level"], "warning");
        assert_eq!(j["fields"][0], "/");
        assert_eq!(j["named"]["mount"], "/");
        assert_eq!(j["named"]["used_pct"], 80.0);
        assert_eq!(j["named"]["free"], 20);
        // Not the disk schema's shape: no names.
        let l = LogLine::parse("2026-11-21T10:31:09+00:00 df failed unknown").unwrap();
        assert!(l.to_json("pi1", "disk").get("named").is_none());
    }
}
