//! A strict reader of the Prometheus text exposition format (0.0.4): what
//! the tests hold the master's `/metrics` output to. It is stricter than
//! Prometheus itself: HELP and TYPE are required, families may not
//! interleave, and duplicate series are errors.
//!
//! Test-only: the integration tests use it as `crate::prom_text`, and the
//! library's unit tests include this same file as `web::prom_text`, so the
//! binary does not ship it.
#![allow(dead_code)] // each of the two crates uses a part

use std::collections::HashSet;

fn is_metric_name(s: &str) -> bool {
    is_name(s, true)
}

fn is_label_name(s: &str) -> bool {
    is_name(s, false)
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, with `:` too in metric names.
fn is_name(s: &str, colon: bool) -> bool {
    let ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    let mut chars = s.chars();
    chars.next().is_some_and(ok) && chars.all(|c| ok(c) || c.is_ascii_digit())
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
