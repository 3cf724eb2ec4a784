//! Nagios performance data: the part of a plugin's output after `|`,
//! `'label'=value[UOM];[warn];[crit];[min];[max]` separated by spaces
//! (Monitoring Plugins development guidelines, "Performance data").
//!
//! A `mode: nagios` collector stores the plugin's first line, so its
//! performance data is in the log (`LOAD OK - … |load1=0.600;5.000;10.000;0;`).
//! `/metrics` turns each item into `pihealth_perfdata_value` (and
//! `_warning`, `_critical`, `_min`, `_max` where given as plain numbers),
//! labelled with the log type, the item's label and its unit, the value in
//! base units (seconds, bytes; `%` stays 0–100). Items that do not parse
//! (`U` for "no value", a range threshold like `10:20`) are skipped, never
//! an error: one odd plugin must not break a scrape.

/// One item of performance data, in base units.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub(crate) label: String,
    /// `seconds`, `percent`, `bytes`, `counter` or empty.
    pub(crate) unit: &'static str,
    pub(crate) value: f64,
    pub(crate) warning: Option<f64>,
    pub(crate) critical: Option<f64>,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
}

/// The performance data of one line of plugin output (the text after the
/// first `|`); empty when there is none.
pub(crate) fn parse(text: &str) -> Vec<Item> {
    let Some((_, perf)) = text.split_once('|') else {
        return Vec::new();
    };
    let mut items = Vec::new();
    let mut rest = perf.trim_start();
    while !rest.is_empty() {
        let (label, after) = match take_label(rest) {
            Some(x) => x,
            None => break,
        };
        let end = after.find([' ', '\t']).unwrap_or(after.len());
        let (data, next) = after.split_at(end);
        if let Some(item) = item(label, data) {
            items.push(item);
        }
        rest = next.trim_start();
    }
    items
}

/// `'my label'=` or `label=`: the label and what follows the `=`.
fn take_label(s: &str) -> Option<(String, &str)> {
    if let Some(quoted) = s.strip_prefix('\'') {
        // '' inside quotes is one quote.
        let mut label = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if quoted[i + 1..].starts_with('\'') {
                    label.push('\'');
                    chars.next();
                    continue;
                }
                return quoted[i + 1..].strip_prefix('=').map(|a| (label, a));
            }
            label.push(c);
        }
        None
    } else {
        let eq = s.find('=')?;
        let label = &s[..eq];
        if label.is_empty() || label.contains([' ', '\t']) {
            return None;
        }
        Some((label.to_string(), &s[eq + 1..]))
    }
}

fn item(label: String, data: &str) -> Option<Item> {
    let mut parts = data.split(';');
    let first = parts.next()?;
    let split = first
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(first.len());
    let (number, uom) = first.split_at(split);
    let (unit, scale) = unit_of(uom)?;
    let value = plain(number)? * scale;
    let mut next = || parts.next().and_then(plain).map(|v| v * scale);
    Some(Item {
        label,
        unit,
        value,
        warning: next(),
        critical: next(),
        min: next(),
        max: next(),
    })
}

/// A plain finite number (a range such as `10:20` or `@5` is not one).
fn plain(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The unit a UOM stands for and its factor to base units; `None` for a
/// UOM we do not know (rather than export a wrong number).
fn unit_of(uom: &str) -> Option<(&'static str, f64)> {
    const K: f64 = 1024.0;
    Some(match uom {
        "" => ("", 1.0),
        "s" => ("seconds", 1.0),
        "ms" => ("seconds", 1e-3),
        "us" => ("seconds", 1e-6),
        "%" => ("percent", 1.0),
        "B" => ("bytes", 1.0),
        "KB" | "kB" => ("bytes", K),
        "MB" => ("bytes", K * K),
        "GB" => ("bytes", K * K * K),
        "TB" => ("bytes", K * K * K * K),
        "c" => ("counter", 1.0),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_load_and_check_disk_output() {
        let items = parse(
            "LOAD OK - total load average: 0.60, 0.50, 0.40|load1=0.600;5.000;10.000;0; load5=0.500;4.000;6.000;0; load15=0.400;3.000;4.000;0;",
        );
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[0],
            Item {
                label: "load1".into(),
                unit: "",
                value: 0.6,
                warning: Some(5.0),
                critical: Some(10.0),
                min: Some(0.0),
                max: None,
            }
        );
        let items =
            parse("DISK OK - free space: / 3326 MB (56%); | '/ root'=2643MB;5948;6292;0;6992");
        assert_eq!(items[0].label, "/ root");
        assert_eq!(items[0].unit, "bytes");
        assert_eq!(items[0].value, 2643.0 * 1024.0 * 1024.0);
        assert_eq!(items[0].max, Some(6992.0 * 1024.0 * 1024.0));
    }

    #[test]
    fn odd_items_are_skipped_not_errors() {
        assert!(parse("no perfdata here").is_empty());
        assert!(parse("x |").is_empty());
        let items = parse("x | a=U;1;2 'it''s'=5ms;10:20;@30 b=3furlongs c=7c =4 d=1e400");
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(items[0].label, "it's");
        assert_eq!(items[0].value, 0.005);
        assert_eq!(items[0].warning, None);
        assert_eq!(items[1].unit, "counter");
        // An unterminated quote ends the list.
        assert!(parse("x | 'open=1").is_empty());
    }
}
