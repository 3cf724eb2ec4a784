//! The Prometheus text exposition format, version 0.0.4: a writer that
//! cannot produce an invalid document.
//!
//! It puts `# HELP` and `# TYPE` before a family's samples, escapes
//! label values and help text, and drops a series it has already written
//! (two registry entries with one name must not make a scrape fail). The
//! tests hold its output to the strict reader in `tests/it/prom_text.rs`.

use std::collections::HashSet;
use std::fmt::Write as _;

/// The media type of this format, for `Content-Type`.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Builds one exposition document, family by family.
#[derive(Default)]
pub(crate) struct Exposition {
    out: String,
    families: HashSet<String>,
    /// `name{labels}` of every sample written, to drop duplicates.
    series: HashSet<String>,
    current: Option<(String, Kind)>,
}

impl Exposition {
    pub(crate) fn new() -> Exposition {
        Exposition::default()
    }

    /// Start a family; its samples follow. A family started twice is a bug
    /// in our code, not in the data: the second start is ignored (its
    /// samples then land in the first, still valid).
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        debug_assert!(is_metric_name(name), "bad metric name {name}");
        if self.families.insert(name.to_string()) {
            let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
            let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        } else {
            debug_assert!(false, "family {name} started twice");
        }
        self.current = Some((name.to_string(), kind));
        self
    }

    /// One sample of the current family (counter or gauge).
    pub(crate) fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.write_sample("", labels, value)
    }

    /// A whole histogram for the current family: cumulative bucket counts
    /// for `bounds` (upper bounds, ascending), then `+Inf`, `_sum`, `_count`.
    pub(crate) fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        bounds: &[f64],
        cumulative: &[u64],
        sum: f64,
        count: u64,
    ) -> &mut Self {
        for (bound, n) in bounds.iter().zip(cumulative) {
            let le = format_value(*bound);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.write_sample("_bucket", &with_le, *n as f64);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.write_sample("_bucket", &with_le, count as f64);
        self.write_sample("_sum", labels, sum);
        self.write_sample("_count", labels, count as f64)
    }

    fn write_sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let Some((name, kind)) = &self.current else {
            debug_assert!(false, "sample before any family");
            return self;
        };
        debug_assert!(suffix.is_empty() || *kind == Kind::Histogram);
        let mut line = format!("{name}{suffix}");
        if !labels.is_empty() {
            line.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                debug_assert!(is_label_name(k), "bad label name {k}");
                if i > 0 {
                    line.push(',');
                }
                let _ = write!(line, "{k}=\"{}\"", escape_label_value(v));
            }
            line.push('}');
        }
        if !self.series.insert(line.clone()) {
            log::debug!("metrics: duplicate series {line} dropped");
            return self;
        }
        let _ = writeln!(self.out, "{line} {}", format_value(value));
        self
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// Go's float syntax, which Prometheus parses: integers without a fraction,
/// `NaN`, `+Inf`, `-Inf`.
pub(crate) fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Rust prints every finite f64 in plain decimal notation that round-trips.
        format!("{v}")
    }
}

pub(crate) fn escape_label_value(v: &str) -> String {
    super::escape_chars(v, |c| match c {
        '\\' => Some("\\\\"),
        '"' => Some("\\\""),
        '\n' => Some("\\n"),
        _ => None,
    })
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::prom_text::parse;

    fn doc() -> String {
        let mut e = Exposition::new();
        e.family("pihealth_agent_up", Kind::Gauge, "1 if the agent is up.")
            .sample(&[("host", "pi1"), ("address", "127.0.0.2:8000")], 1.0)
            .sample(&[("host", "we\"ird\\ho\nst"), ("address", "x")], 0.0)
            // A duplicate series is dropped, not written twice.
            .sample(&[("host", "pi1"), ("address", "127.0.0.2:8000")], 0.0);
        e.family(
            "pihealth_pulled_bytes_total",
            Kind::Counter,
            "Bytes.\nTwo lines \\ here",
        )
        .sample(&[], 12345.0);
        e.family("pihealth_pull_duration_seconds", Kind::Histogram, "Pulls.")
            .histogram(&[], &[0.1, 1.0], &[1, 3], 2.5, 4);
        e.finish()
    }

    #[test]
    fn written_documents_pass_the_strict_reader() {
        let text = doc();
        let samples = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(samples.len(), 2 + 1 + 5);
        assert_eq!(samples[1].label("host"), Some("we\"ird\\ho\nst"));
        assert!(text.contains(r#"host="we\"ird\\ho\nst""#), "{text}");
        assert!(text.contains("# HELP pihealth_pulled_bytes_total Bytes.\\nTwo lines \\\\ here\n"));
        assert!(text.contains("pihealth_pull_duration_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("pihealth_pull_duration_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(text.contains("pihealth_pulled_bytes_total 12345\n"));
        assert_eq!(samples[0].value, 1.0);
    }

    #[test]
    fn values_in_go_syntax() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(-3.5), "-3.5");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(1e21).parse::<f64>().unwrap(), 1e21);
        assert_eq!(format_value(1.7e-9).parse::<f64>().unwrap(), 1.7e-9);
    }
}
