//! `pihealth alarms`: recent alarms, newest last.

use std::path::Path;

use crate::master::alarms::read_alarms;

pub fn print(log_dir: &Path, since: Option<&str>) -> Result<(), String> {
    let since = since.map(super::parse_time).transpose()?;
    let alarms = read_alarms(&log_dir.join("alarms.log")).map_err(|e| e.to_string())?;
    for a in alarms {
        if let Some(since) = since {
            if chrono::DateTime::parse_from_rfc3339(&a.time)
                .map(|t| t < since)
                .unwrap_or(false)
            {
                continue;
            }
        }
        println!(
            "{} {:<16} {:<10} {:<8} {}",
            a.time, a.host, a.log_type, a.level, a.message
        );
    }
    Ok(())
}
