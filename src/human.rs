//! Quantities as an operator reads them in a table or on a page.

/// `secs` seconds back as `45s ago`, `12m ago`, `5h ago`; past two days
/// `3d ago` when `days`, else hours still (`pihealth status` has always
/// said hours: its columns are read by scripts).
pub(crate) fn ago(secs: i64, days: bool) -> String {
    let secs = secs.max(0);
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        7200..=172_799 => format!("{}h ago", secs / 3600),
        _ if days => format!("{}d ago", secs / 86_400),
        _ => format!("{}h ago", secs / 3600),
    }
}

/// `1536` → `1.5 KiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::{ago, human_bytes};

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn seconds_minutes_hours_days() {
        assert_eq!(ago(-5, true), "0s ago");
        assert_eq!(ago(119, true), "119s ago");
        assert_eq!(ago(120, false), "2m ago");
        assert_eq!(ago(7200, false), "2h ago");
        assert_eq!(ago(3 * 86_400, false), "72h ago");
        assert_eq!(ago(3 * 86_400, true), "3d ago");
    }
}
