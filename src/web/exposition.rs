//! The Prometheus text exposition format, version 0.0.4: a writer that
//! cannot produce an invalid document, and a strict reader that checks one.
//!
//! The writer puts `# HELP` and `# TYPE` before a family's samples, escapes
//! label values and help text, and drops a series it has already written
//! (two registry entries with one name must not make a scrape fail). The
//! reader is what the tests (and anyone curious) hold our output to; it is
//! stricter than Prometheus itself: HELP and TYPE are required, families may
//! not interleave, and duplicate series are errors.

use std::collections::HashSet;
use std::fmt::Write as _;

/// The media type of this format, for `Content-Type`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
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
pub struct Exposition {
    out: String,
    families: HashSet<String>,
    /// `name{labels}` of every sample written, to drop duplicates.
    series: HashSet<String>,
    current: Option<(String, Kind)>,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Start a family; its samples follow. A family started twice is a bug
    /// in our code, not in the data: the second start is ignored (its
    /// samples then land in the first, still valid).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
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
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.write_sample("", labels, value)
    }

    /// A whole histogram for the current family: cumulative bucket counts
    /// for `bounds` (upper bounds, ascending), then `+Inf`, `_sum`, `_count`.
    pub fn histogram(
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

    pub fn finish(self) -> String {
        self.out
    }
}

/// Go's float syntax, which Prometheus parses: integers without a fraction,
/// `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Rust prints every finite f64 in plain decimal notation that round-trips.
        format!("{v}")
    }
}

pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
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

/// One sample as read back by [`parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Read an exposition document strictly; the error names the line.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the document does not end with a newline".into());
    }
    let mut checker = Checker::default();
    for (i, line) in text.lines().enumerate() {
        checker
            .line(line)
            .map_err(|e| format!("line {}: {e}: {line:?}", i + 1))?;
    }
    Ok(checker.samples)
}

#[derive(Default)]
struct Checker {
    samples: Vec<Sample>,
    /// Families whose TYPE was seen, with their kind; and whether closed.
    types: Vec<(String, String)>,
    helps: HashSet<String>,
    /// The family samples currently belong to; a family may not come back.
    open: Option<String>,
    closed: HashSet<String>,
    series: HashSet<String>,
}

impl Checker {
    fn line(&mut self, line: &str) -> Result<(), String> {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').unwrap_or((rest, ""));
            if !is_metric_name(name) {
                return Err("HELP for a bad metric name".into());
            }
            if !self.helps.insert(name.to_string()) {
                return Err(format!("second HELP for {name}"));
            }
            return self.enter(name, false);
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or("TYPE without a type")?;
            if !is_metric_name(name) {
                return Err("TYPE for a bad metric name".into());
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("unknown type {kind:?}"));
            }
            if self.types.iter().any(|(n, _)| n == name) {
                return Err(format!("second TYPE for {name}"));
            }
            self.enter(name, true)?;
            self.types.push((name.to_string(), kind.to_string()));
            return Ok(());
        }
        if line.starts_with('#') || line.is_empty() {
            return Ok(());
        }
        let sample = parse_sample(line)?;
        let (family, kind) = self.family_of(&sample.name)?;
        if !self.helps.contains(&family) {
            return Err(format!("sample of {family} before its HELP"));
        }
        if self.open.as_deref() != Some(family.as_str()) {
            return Err(format!("sample of {family} outside its family's block"));
        }
        if kind == "histogram" && sample.name.ends_with("_bucket") && sample.label("le").is_none() {
            return Err("histogram bucket without `le`".into());
        }
        let mut key: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        key.sort();
        if !self
            .series
            .insert(format!("{}{{{}}}", sample.name, key.join(",")))
        {
            return Err("duplicate series".into());
        }
        self.samples.push(sample);
        Ok(())
    }

    /// A HELP or TYPE line opens `name`'s block (closing the previous one).
    fn enter(&mut self, name: &str, is_type: bool) -> Result<(), String> {
        if self.open.as_deref() == Some(name) {
            // HELP then TYPE (or TYPE then HELP) of one family: still no samples allowed before TYPE.
            if is_type && self.samples.iter().any(|s| self.belongs(&s.name, name)) {
                return Err(format!("TYPE of {name} after its samples"));
            }
            return Ok(());
        }
        if self.closed.contains(name) {
            return Err(format!("{name} comes back after other families"));
        }
        if let Some(prev) = self.open.take() {
            self.closed.insert(prev);
        }
        self.open = Some(name.to_string());
        Ok(())
    }

    fn belongs(&self, sample: &str, family: &str) -> bool {
        sample == family
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| sample.strip_suffix(s) == Some(family))
    }

    /// The TYPEd family a sample name belongs to.
    fn family_of(&self, sample: &str) -> Result<(String, String), String> {
        for (name, kind) in &self.types {
            let ok = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| sample.strip_suffix(s) == Some(name)),
                "summary" => {
                    sample == name
                        || ["_sum", "_count"]
                            .iter()
                            .any(|s| sample.strip_suffix(s) == Some(name))
                }
                _ => sample == name,
            };
            if ok {
                return Ok((name.clone(), kind.clone()));
            }
        }
        Err(format!("sample {sample} without a TYPE before it"))
    }
}

/// `name{label="value",...} value [timestamp]`
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels: Vec<(String, String)> = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or("expected one space before the value")?;
    let mut parts = rest.split(' ');
    let value = parse_value(parts.next().unwrap_or(""))?;
    if let Some(ts) = parts.next() {
        ts.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if parts.next().is_some() {
        return Err("trailing text after the value".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

type Labels = Vec<(String, String)>;

/// Labels after `{`; returns them and the text after `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels: Vec<(String, String)> = Vec::new();
    loop {
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("label without `=`")?;
        let key = &s[..eq];
        if !is_label_name(key) {
            return Err(format!("bad label name {key:?}"));
        }
        if labels.iter().any(|(k, _)| k == key) {
            return Err(format!("label {key} twice"));
        }
        s = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err("bad escape in a label value".into()),
                },
                Some((_, '\n')) => return Err("raw newline in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = &s[end + 1..];
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("expected `,` or `}` after a label".into());
        }
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')) =>
        {
            s.parse::<f64>().map_err(|_| format!("bad value {s:?}"))
        }
        _ => Err(format!("bad value {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_reader_refuses_what_prometheus_would_or_we_should_not_send() {
        let ok = "# HELP a_b x\n# TYPE a_b gauge\na_b{l=\"v\"} 1\n";
        assert!(parse(ok).is_ok());
        let bad = [
            // no TYPE
            "# HELP a x\na 1\n",
            // no HELP
            "# TYPE a gauge\na 1\n",
            // TYPE after samples
            "# HELP a x\na 1\n# TYPE a gauge\n",
            // duplicate series
            "# HELP a x\n# TYPE a gauge\na{l=\"1\"} 1\na{l=\"1\"} 2\n",
            // interleaved families
            "# HELP a x\n# TYPE a gauge\na 1\n# HELP b x\n# TYPE b gauge\nb 1\na{x=\"1\"} 1\n",
            // bad escape, raw quote, unterminated
            "# HELP a x\n# TYPE a gauge\na{l=\"\\t\"} 1\n",
            "# HELP a x\n# TYPE a gauge\na{l=\"x\"y\"} 1\n",
            "# HELP a x\n# TYPE a gauge\na{l=\"x} 1\n",
            // bad names and values
            "# HELP 1a x\n# TYPE 1a gauge\n1a 1\n",
            "# HELP a x\n# TYPE a gauge\na{1l=\"x\"} 1\n",
            "# HELP a x\n# TYPE a gauge\na one\n",
            "# HELP a x\n# TYPE a gauge\na  1\n",
            "# HELP a x\n# TYPE a gauge\na 1 2 3\n",
            "# HELP a x\n# TYPE a gauge\na{l=\"1\",l=\"2\"} 1\n",
            // unknown type, bucket without le, missing final newline
            "# HELP a x\n# TYPE a gaugeish\na 1\n",
            "# HELP a x\n# TYPE a histogram\na_bucket 1\n",
            "# HELP a x\n# TYPE a gauge\na 1",
        ];
        for text in bad {
            assert!(parse(text).is_err(), "accepted: {text:?}");
        }
    }
}
