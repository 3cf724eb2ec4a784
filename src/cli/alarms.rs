//! `pihealth alarms`: recent alarms, newest last, then which problems are
//! still open and which recovered. Reads `log/.master/alarms.log`, so it works
//! with or without the master running.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use crate::level::Level;
use crate::master::alarms::{problems, read_alarms, AlarmLine, Problem};
use crate::master::silences::{Silence, SilenceStore};
use crate::schema::label_message;

pub struct Query {
    /// Parsed by `cli::parse_time`.
    pub since: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Only these hosts (any of them); empty means all.
    pub hosts: Vec<String>,
    /// Only alarms at or above this level.
    pub min_level: Option<Level>,
    /// Only the open problems.
    pub open_only: bool,
    pub json: bool,
}

impl Query {
    fn wants_host(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h == host)
    }

    fn wants_level(&self, level: &str) -> bool {
        // An alarm with a level we cannot read is shown rather than hidden.
        self.min_level
            .is_none_or(|m| level.parse::<Level>().map_or(true, |l| l >= m))
    }
}

fn after(time: &str, since: Option<chrono::DateTime<chrono::FixedOffset>>) -> bool {
    since.is_none_or(|s| chrono::DateTime::parse_from_rfc3339(time).map_or(true, |t| t >= s))
}

/// `silenced`: the silence that held the alarm back (`#ID until T:
/// REASON`), if one did.
fn alarm_json(a: &AlarmLine, silenced: Option<&String>) -> serde_json::Value {
    serde_json::json!({
        "time": a.time, "host": a.host, "type": a.log_type,
        "level": a.level, "id": a.id, "message": a.message,
        "labelled": label_message(&a.log_type, &a.message, None),
        "silenced": silenced,
    })
}

/// `silences`: those in force, to mark the open problems they cover.
fn problem_line(p: &Problem, silences: &[Silence]) -> String {
    let word = if p.open { "since" } else { "at" };
    let now = chrono::Utc::now().timestamp_millis();
    let mark = silences
        .iter()
        .find(|s| p.open && s.active(now) && s.matches(&p.host, &p.log_type))
        .map(|s| format!("  [silenced #{} until {}]", s.id, s.until_text()))
        .unwrap_or_default();
    format!(
        "  {:<16} {:<10} {:<8} {word} {}  {}{mark}",
        p.host,
        p.log_type,
        p.level,
        p.since,
        label_message(&p.log_type, &p.message, None)
    )
}

/// Everything `alarms` does can fail only reading the files or writing
/// the answer: an `io::Error` says which (a JSON encoding error too, by
/// its message).
fn json_error(e: serde_json::Error) -> io::Error {
    io::Error::other(e)
}

pub fn print(log_dir: &Path, q: &Query, out: &mut dyn Write) -> io::Result<()> {
    let files = crate::master::files::MasterFiles::find(log_dir);
    let path = files.alarms();
    let alarms = read_alarms(&path)?;
    let silenced = crate::master::silences::read_silenced(&files.silenced())?;
    let silences = SilenceStore::new(log_dir).list()?;
    // Say so rather than print a blank line: an empty answer should not
    // look like a broken command. (JSON output stays empty: a program
    // reading it expects objects or nothing.)
    if alarms.is_empty() && !q.json {
        return writeln!(
            out,
            "no alarms recorded yet ({} is empty or does not exist)",
            path.display()
        );
    }
    // Problems are judged on the whole history (a problem may have begun
    // before --since), then filtered like the alarms.
    let summary: Vec<Problem> = problems(&alarms)
        .into_iter()
        .filter(|p| q.wants_host(&p.host) && (!p.open || q.wants_level(&p.level)))
        .collect();
    let (open, recovered): (Vec<&Problem>, Vec<&Problem>) = summary.iter().partition(|p| p.open);
    if q.open_only {
        return print_open(q, &open, &silences, out);
    }
    print_alarms(q, &alarms, &silenced, out)?;
    if q.json {
        return Ok(());
    }
    let recovered: Vec<&Problem> = recovered
        .into_iter()
        .filter(|p| after(&p.since, q.since))
        .collect();
    writeln!(out, "\nopen problems: {}", open.len())?;
    for p in &open {
        writeln!(out, "{}", problem_line(p, &silences))?;
    }
    if !recovered.is_empty() {
        writeln!(out, "recovered: {}", recovered.len())?;
        for p in &recovered {
            writeln!(out, "{}", problem_line(p, &silences))?;
        }
    }
    Ok(())
}

/// `--open`: the open problems alone.
fn print_open(
    q: &Query,
    open: &[&Problem],
    silences: &[Silence],
    out: &mut dyn Write,
) -> io::Result<()> {
    if open.is_empty() && !q.json {
        return writeln!(out, "no open problems");
    }
    for p in open {
        if q.json {
            writeln!(out, "{}", serde_json::to_string(p).map_err(json_error)?)
        } else {
            writeln!(out, "{}", problem_line(p, silences).trim_start())
        }?;
    }
    Ok(())
}

/// The alarms that pass the query, each marked with the silence that held
/// it back.
fn print_alarms(
    q: &Query,
    alarms: &[AlarmLine],
    silenced: &HashMap<String, String>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let shown = alarms
        .iter()
        .filter(|a| after(&a.time, q.since) && q.wants_host(&a.host) && q.wants_level(&a.level));
    let mut count = 0;
    for a in shown {
        count += 1;
        let held = silenced.get(&a.id);
        if q.json {
            writeln!(out, "{}", alarm_json(a, held))
        } else {
            let mark = held
                .map(|s| format!("  [silenced {s}]"))
                .unwrap_or_default();
            writeln!(
                out,
                "{} {:<16} {:<10} {:<8} {}{mark}",
                a.time,
                a.host,
                a.log_type,
                a.level,
                label_message(&a.log_type, &a.message, None)
            )
        }?;
    }
    if count == 0 && !q.json {
        writeln!(out, "no alarms match ({} recorded in all)", alarms.len())?;
    }
    Ok(())
}
