//! The result table: one row per figure, printed and written as Markdown.

use std::fmt::Write as _;
use std::time::Duration;

use super::procs;

/// One line of the table. `load` is the load average when the figure was
/// taken: on a busy machine the figures move with it.
pub struct Row {
    pub figure: String,
    pub value: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    pub load: String,
}

impl Row {
    pub fn new(figure: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            figure: figure.into(),
            value: value.into(),
            baseline: String::new(),
            ratio: String::new(),
            target: String::new(),
            load: procs::loadavg(),
        }
    }

    pub fn baseline(mut self, text: impl Into<String>) -> Row {
        self.baseline = text.into();
        self
    }

    pub fn ratio(mut self, text: impl Into<String>) -> Row {
        self.ratio = text.into();
        self
    }

    pub fn target(mut self, text: impl Into<String>) -> Row {
        self.target = text.into();
        self
    }

    /// A phase that could not run: say why in place of the figure.
    pub fn failed(figure: impl Into<String>, why: &str) -> Row {
        Row::new(figure, format!("**failed**: {}", why.replace('|', "/")))
    }
}

/// Everything the bench prints at the end.
#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| figure | pihealth | baseline (same run) | ratio | SPEC §9 target | load 1/5/15 min |\n",
        );
        out.push_str("| --- | --- | --- | --- | --- | --- |\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                r.figure, r.value, r.baseline, r.ratio, r.target, r.load
            );
        }
        out.push('\n');
        for n in &self.notes {
            let _ = writeln!(out, "- {n}");
        }
        out
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub fn p95(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() * 95 / 100).copied().unwrap_or_default()
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
