//! The page assembly of the HTTP port: the status page, the `/metrics`
//! text and `/api/status.json`, from what the master keeps (the registry,
//! the alarms, the archives). Changes nothing.

use std::sync::{Arc, Mutex};

use crate::config::MasterConfig;
use crate::master::registry::{now_ms, AgentRecord, Registry};
use crate::web::alarm_summary::{AlarmFollower, AlarmSummary};
use crate::web::metrics::{self, Snapshot};
use crate::web::page::{self, Chart, HostCharts, Page};
use crate::web::samples::{points, ArchiveReader, Window};

/// What the pages are made of; one per master.
pub(crate) struct Views {
    registry: Arc<Registry>,
    reader: ArchiveReader,
    alarms: Mutex<AlarmFollower>,
    started_ms: i64,
    master_name: String,
    silences: crate::master::silences::SilenceStore,
    log_dir: std::path::PathBuf,
    alertmanagers: Vec<String>,
}

impl Views {
    pub(crate) fn new(config: &MasterConfig, registry: Arc<Registry>) -> Views {
        Views {
            registry,
            reader: ArchiveReader::new(&config.log_dir, &config.backup_dir),
            alarms: Mutex::new(AlarmFollower::new(&config.log_dir)),
            started_ms: now_ms(),
            master_name: crate::names::local_host_name(),
            silences: crate::master::silences::SilenceStore::new(&config.log_dir),
            log_dir: config.log_dir.clone(),
            alertmanagers: config.alertmanagers.clone(),
        }
    }

    fn alarm_summary(&self) -> AlarmSummary {
        let mut follower = crate::sync::lock(&self.alarms);
        if let Err(e) = follower.refresh() {
            // Keep showing what was read before rather than "no alarms".
            log::warn!("http: cannot read alarms.log: {e}");
        }
        follower.summary().clone()
    }

    pub(crate) fn metrics(&self) -> String {
        let agents = self.registry.snapshot();
        let alarms = self.alarm_summary();
        let pulls = self.registry.pull_stats();
        let hosts = host_names(&agents)
            .iter()
            .map(|h| metrics::host_values(&self.reader, h))
            .collect();
        let mut text = metrics::render(&Snapshot {
            agents: &agents,
            alarms: &alarms,
            pulls: &pulls,
            started_ms: self.started_ms,
            hosts,
        });
        let silences = self.silences.list().map_or(0, |l| l.len());
        text.push_str(&metrics::alerting(
            &self.log_dir,
            &self.alertmanagers,
            silences,
        ));
        text
    }

    pub(crate) fn page(&self, hours: u32) -> String {
        let agents = self.registry.snapshot();
        let alarms = self.alarm_summary();
        let now = now_ms();
        let names = host_names(&agents);
        let full = Window::new(now.div_euclid(1000), i64::from(hours) * 3600);
        let mut window = full;
        let mut hosts: Vec<HostCharts> = names
            .iter()
            .map(|host| self.host_charts(host, &full))
            .collect();
        // A young fleet (a fresh install, the demo) would fill only the
        // right edge of the window: span the history there is instead. A
        // second pass, with finer buckets, finds the first sample closer.
        for _ in 0..2 {
            let Some(zoomed) = zoom(&window, &hosts) else {
                break;
            };
            window = zoomed;
            hosts = names
                .iter()
                .map(|host| self.host_charts(host, &window))
                .collect();
        }
        let silences = self.silences.list().unwrap_or_else(|e| {
            log::warn!("silences for the status page: {e}");
            Vec::new()
        });
        page::render(&Page {
            master: &self.master_name,
            agents: &agents,
            alarms: &alarms,
            silences: &silences,
            now_ms: now,
            hours,
            window,
            zoomed: window != full,
            hosts,
        })
    }

    fn host_charts(&self, host: &str, w: &Window) -> HostCharts {
        let series = |log_type: &str| match self.reader.series(host, log_type, w) {
            Ok(b) => points(&b, w),
            Err(e) => {
                log::warn!("{host}: cannot read the {log_type} log for the status page: {e}");
                Vec::new()
            }
        };
        let charts = vec![
            Chart {
                title: "CPU usage",
                color: "#2563eb",
                points: series("cpu"),
            },
            Chart {
                title: "Memory used",
                color: "#7c3aed",
                points: series("mem"),
            },
            Chart {
                title: "Disk used (all local file systems)",
                color: "#0d9488",
                points: series("disk"),
            },
        ];
        HostCharts {
            host: host.to_string(),
            charts,
        }
    }

    pub(crate) fn status_json(&self) -> String {
        let agents = self.registry.snapshot();
        let alarms = self.alarm_summary();
        let value = serde_json::json!({
            "generated_ms": now_ms(),
            "agents": agents,
            "open_alarms": alarms.open(),
        });
        let mut text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| "{}".into());
        text.push('\n');
        text
    }
}

/// The shorter window to draw when every series starts well inside `full`:
/// from the oldest point to the end, in steps of 15 s, a minute or 5
/// minutes by length, so that bucket widths repeat and archives' buckets
/// come from the cache.
fn zoom(full: &Window, hosts: &[HostCharts]) -> Option<Window> {
    let first = hosts
        .iter()
        .flat_map(|h| &h.charts)
        .filter_map(|c| c.points.first())
        .map(|(t, _)| *t)
        .min()?;
    // A point stands at the middle of its bucket: the sample may be half a
    // bucket older.
    let history = full.end - first + full.bucket / 2 + 1;
    let step = match history {
        ..=300 => 15,
        301..=900 => 60,
        _ => 300,
    };
    let span = (history + step - 1) / step * step;
    (span * 10 < (full.end - full.start) * 9).then(|| Window::new(full.end, span))
}

/// The distinct host names of the fleet that may be directories, in
/// registry order (an agent not yet named has no archive).
fn host_names(agents: &[AgentRecord]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in agents.iter().filter_map(|a| a.name.as_ref()) {
        if crate::names::check_host_name(name).is_ok() && !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_young_fleet_is_drawn_over_the_history_it_has() {
        let full = Window::new(1_800_000_000, 6 * 3600);
        let host = |first: i64| HostCharts {
            host: "pi1".into(),
            charts: vec![Chart {
                title: "CPU usage",
                color: "#000",
                points: vec![(first, 1.0), (full.end, 2.0)],
            }],
        };
        // Ten minutes of data, plus half a bucket: an 11-minute window.
        let z = zoom(&full, &[host(full.end - 600)]).expect("zoomed");
        assert_eq!(z.end, full.end);
        assert_eq!(z.end - z.start, 660);
        assert_eq!(z.bucket, 2);
        // Two minutes: steps of 15 s.
        let z = zoom(&full, &[host(full.end - 120)]).expect("zoomed");
        assert_eq!(z.end - z.start, 165);
        // Nearly the whole window: left alone; no data: left alone.
        assert_eq!(zoom(&full, &[host(full.start + 600)]), None);
        assert_eq!(zoom(&full, &[]), None);
    }
}
