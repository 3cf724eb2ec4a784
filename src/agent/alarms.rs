//! Alarms on the agent: deciding when to raise one, and a spool on disk
//! that keeps every alarm until the master acknowledges it.
//!
//! Crash safety: an alarm is appended to `log/.pihealth/alarms.spool` and
//! fsynced before anyone tries to send it; it leaves the spool only after
//! the master's `AlarmAck`. A crash between the master's ack and our
//! rewrite of the spool re-sends it, and the master recognises the id.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::agent::collector::Outcome;
use crate::agent::trigger::{Step, TypeState};
use crate::config::Trigger;
use crate::level::Level;
use crate::protocol::message::{Alarm, MAX_TEXT};
use crate::storage;

pub(crate) struct AlarmSpool {
    path: PathBuf,
    queue: Mutex<VecDeque<Alarm>>,
}

impl AlarmSpool {
    pub(crate) fn open(path: &Path) -> io::Result<AlarmSpool> {
        storage::cut_torn_line(path)?;
        let mut queue = VecDeque::new();
        match File::open(path) {
            Ok(file) => {
                for line in BufReader::new(file).lines() {
                    let line = line?;
                    match serde_json::from_str::<Alarm>(&line) {
                        Ok(a) => queue.push_back(a),
                        // Torn lines are cut above (never acknowledged to
                        // anyone); this is a line damaged some other way.
                        Err(e) => log::warn!("{}: skipping unreadable alarm: {e}", path.display()),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(storage::with_path(e, path)),
        }
        Ok(AlarmSpool {
            path: path.to_path_buf(),
            queue: Mutex::new(queue),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Alarm>> {
        crate::sync::lock(&self.queue)
    }

    /// Keep an alarm durably until acknowledged.
    pub(crate) fn push(&self, alarm: Alarm) -> io::Result<()> {
        let mut queue = self.lock();
        let mut line = serde_json::to_string(&alarm).map_err(io::Error::other)?;
        line.push('\n');
        storage::append_synced(&self.path, line.as_bytes())?;
        queue.push_back(alarm);
        Ok(())
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.lock().iter().any(|a| a.id == id)
    }

    /// The oldest unacknowledged alarm.
    pub(crate) fn front(&self) -> Option<Alarm> {
        self.lock().front().cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The master has stored alarm `id`.
    pub(crate) fn acknowledged(&self, id: &str) -> io::Result<()> {
        let mut queue = self.lock();
        queue.retain(|a| a.id != id);
        let mut text = String::new();
        for a in queue.iter() {
            text.push_str(&serde_json::to_string(a).map_err(io::Error::other)?);
            text.push('\n');
        }
        storage::write_atomic(&self.path, text.as_bytes(), true)
    }
}

/// Decides when a collector's outcome is worth an alarm: when its level
/// changes to, between or from problem levels and the change has held for
/// the collector's trigger rules (`agent::trigger`), and every
/// `realarm_interval` while a problem lasts.
///
/// The level last alarmed per type is kept in a file, so a restart neither
/// forgets a problem (and its recovery alarm) nor raises it again under a
/// new id. A change still waiting for its hold is not kept: it is counted
/// again from the first run after the start (at most `for` late, never
/// twice).
///
/// Crash safety of a level change, in the caller's order: the new levels
/// are saved durably together with the alarm they raise (`save_pending`),
/// then the alarm is spooled, then the collector's lines are stored. A
/// crash after the first step leaves the alarm in the levels file, and the
/// next start spools it again under its own id (the master recognises an
/// id it has, so a delivered alarm is not stored twice). So no level
/// change is lost or raised twice, whatever moment the agent dies at; the
/// alarm's message carries the lines, even of a run whose lines the crash
/// kept from the log.
pub(crate) struct AlarmMonitor {
    host: String,
    realarm_interval: Duration,
    last: HashMap<String, Watch>,
    levels_path: Option<PathBuf>,
    levels_changed: bool,
    /// Alarms saved with the levels and not yet known to be in the spool
    /// (found in the levels file at start if the agent died first), oldest
    /// first. More than one only while the spool cannot be written.
    pending: Vec<Alarm>,
    /// The thresholds the standard checks judge by, to label alarm
    /// messages (`usage 89.32 % ≥ warning 80 %`); none: labels only.
    thresholds: Option<crate::agent::builtin::Limits>,
}

/// One type's trigger state and when it last alarmed (for
/// `realarm_interval`).
struct Watch {
    state: TypeState,
    alarmed_at: Instant,
}

/// `levels.json`: the level last alarmed per type (the latest calm level
/// while calm), and the alarm being raised.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LevelsFile {
    levels: HashMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<Alarm>,
}

/// What versions before 2026-11-22 kept: the levels alone.
#[derive(Deserialize)]
#[serde(untagged)]
enum AnyLevelsFile {
    Current(LevelsFile),
    Levels(HashMap<String, String>),
}

impl AlarmMonitor {
    pub(crate) fn new(
        host: &str,
        realarm_interval: Duration,
        levels_path: Option<&Path>,
    ) -> io::Result<AlarmMonitor> {
        let mut last = HashMap::new();
        let mut pending = Vec::new();
        if let Some(path) = levels_path {
            let saved = match storage::read_json::<AnyLevelsFile>(path)? {
                Some(AnyLevelsFile::Current(file)) => file,
                Some(AnyLevelsFile::Levels(levels)) => LevelsFile {
                    levels,
                    pending: Vec::new(),
                },
                None => LevelsFile::default(),
            };
            let now = Instant::now();
            for (log_type, level) in saved.levels {
                if let Ok(level) = level.parse::<Level>() {
                    let watch = Watch {
                        state: TypeState::with_level(level),
                        alarmed_at: now,
                    };
                    last.insert(log_type, watch);
                }
            }
            pending = saved.pending;
        }
        Ok(AlarmMonitor {
            host: host.to_string(),
            realarm_interval,
            last,
            levels_path: levels_path.map(Path::to_path_buf),
            levels_changed: false,
            pending,
            thresholds: None,
        })
    }

    /// Label alarm messages of the standard types with these thresholds.
    pub(crate) fn set_thresholds(&mut self, limits: crate::agent::builtin::Limits) {
        self.thresholds = Some(limits);
    }

    /// A run's lines as an alarm message, labelled by the type's schema.
    fn describe(&self, log_type: &str, lines: &[String]) -> String {
        match &self.thresholds {
            Some(limits) => {
                crate::schema::alarm_text(log_type, lines, Some(&|key: &str| limits.lookup(key)))
            }
            None => crate::schema::alarm_text(log_type, lines, None),
        }
    }

    /// The oldest alarm being raised: saved with the levels, not yet known
    /// to be in the spool.
    pub(crate) fn pending(&self) -> Option<&Alarm> {
        self.pending.first()
    }

    /// The oldest pending alarm is in the spool: the next save forgets it.
    pub(crate) fn spooled(&mut self) {
        if !self.pending.is_empty() {
            self.pending.remove(0);
            self.levels_changed = true;
        }
    }

    /// Persist the levels (and a pending alarm) if they changed since the
    /// last save. Not synced: a level change lost with it is seen again at
    /// the next run.
    pub(crate) fn save(&mut self) -> io::Result<()> {
        if self.levels_changed {
            self.write(false)?;
        }
        Ok(())
    }

    /// Persist the levels durably with `alarm`, the alarm their change
    /// raised, before it is spooled.
    pub(crate) fn save_pending(&mut self, alarm: Alarm) -> io::Result<()> {
        self.pending.push(alarm);
        self.write(true)
    }

    fn write(&mut self, durable: bool) -> io::Result<()> {
        let Some(path) = &self.levels_path else {
            return Ok(());
        };
        let file = LevelsFile {
            levels: self
                .last
                .iter()
                .filter_map(|(t, w)| Some((t.clone(), w.state.alarmed?.to_string())))
                .collect(),
            pending: self.pending.clone(),
        };
        self.levels_changed = true;
        storage::write_json_atomic(path, &file, durable)?;
        self.levels_changed = false;
        Ok(())
    }

    /// Take one run of `log_type`'s collector; the alarm it raises, if
    /// any, under the collector's trigger rules (`agent::trigger`) and
    /// `realarm_interval`.
    pub(crate) fn observe(
        &mut self,
        log_type: &str,
        trigger: &Trigger,
        outcome: &Outcome,
        now: Instant,
    ) -> io::Result<Option<Alarm>> {
        let level = outcome.level;
        let watch = self
            .last
            .entry(log_type.to_string())
            .or_insert_with(|| Watch {
                state: TypeState::default(),
                alarmed_at: now,
            });
        let previous = match watch.state.step(level, trigger, now) {
            Step::Same => {
                let due = now.saturating_duration_since(watch.alarmed_at) >= self.realarm_interval;
                if !(level.is_problem() && due) {
                    return Ok(None);
                }
                Some(level)
            }
            Step::Waiting => return Ok(None),
            Step::Settled => {
                self.levels_changed = true;
                return Ok(None);
            }
            Step::Raise { previous } => {
                self.levels_changed = true;
                previous
            }
        };
        watch.alarmed_at = now;
        let mut message = match previous {
            Some(previous) if previous.is_problem() && !level.is_problem() => {
                format!("recovered from {previous}: ")
            }
            _ => String::new(),
        };
        message.push_str(&self.describe(log_type, &outcome.lines));
        Ok(Some(self.alarm(
            log_type,
            level,
            message,
            outcome.finished_at.to_rfc3339(),
        )?))
    }

    /// An alarm about the agent itself (e.g. data dropped at `max_backlog`).
    pub(crate) fn alarm(
        &self,
        log_type: &str,
        level: Level,
        mut message: String,
        time: String,
    ) -> io::Result<Alarm> {
        if message.len() > MAX_TEXT {
            let mut cut = MAX_TEXT;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Ok(Alarm {
            id: crate::alarm_id::new_alarm_id()?,
            host: self.host.clone(),
            log_type: log_type.to_string(),
            level: level.to_string(),
            message,
            time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Take one `cpu` run at `level` now, without trigger rules.
    fn cpu_now(m: &mut AlarmMonitor, level: Level) -> Option<Alarm> {
        m.observe("cpu", &Trigger::default(), &outcome(level), Instant::now())
            .unwrap()
    }

    /// Restart the monitor on `path`, and take one `cpu` run at `level` now.
    fn observe_after_restart(path: &Path, level: Level) -> Option<Alarm> {
        let mut m = AlarmMonitor::new("pi1", Duration::from_secs(60), Some(path)).unwrap();
        let alarm = cpu_now(&mut m, level);
        m.save().unwrap();
        alarm
    }

    fn outcome(level: Level) -> Outcome {
        Outcome {
            finished_at: chrono::Local::now().fixed_offset(),
            level,
            lines: vec![format!("x {level}")],
        }
    }

    #[test]
    fn alarms_on_changes_to_and_from_problems_and_while_they_last() {
        let mut m = AlarmMonitor::new("pi1", Duration::from_secs(60), None).unwrap();
        let t0 = Instant::now();
        assert!(m
            .observe("cpu", &Trigger::default(), &outcome(Level::Normal), t0)
            .unwrap()
            .is_none());
        assert!(m
            .observe("cpu", &Trigger::default(), &outcome(Level::Note), t0)
            .unwrap()
            .is_none());
        let a = m
            .observe("cpu", &Trigger::default(), &outcome(Level::Warning), t0)
            .unwrap()
            .unwrap();
        assert_eq!(a.level, "warning");
        assert!(m
            .observe(
                "cpu",
                &Trigger::default(),
                &outcome(Level::Warning),
                t0 + Duration::from_secs(30)
            )
            .unwrap()
            .is_none());
        assert!(m
            .observe(
                "cpu",
                &Trigger::default(),
                &outcome(Level::Warning),
                t0 + Duration::from_secs(61)
            )
            .unwrap()
            .is_some());
        let r = m
            .observe(
                "cpu",
                &Trigger::default(),
                &outcome(Level::Normal),
                t0 + Duration::from_secs(62),
            )
            .unwrap()
            .unwrap();
        assert_eq!(r.level, "normal");
        assert!(r.message.starts_with("recovered from warning"));
        // A problem at the very first run is reported.
        assert!(m
            .observe("disk", &Trigger::default(), &outcome(Level::Critical), t0)
            .unwrap()
            .is_some());
    }

    #[test]
    fn levels_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("levels.json");
        let t0 = Instant::now();
        {
            let mut m = AlarmMonitor::new("pi1", Duration::from_secs(60), Some(&path)).unwrap();
            assert!(m
                .observe("cpu", &Trigger::default(), &outcome(Level::Warning), t0)
                .unwrap()
                .is_some());
            m.save().unwrap();
        }
        // Still in trouble after a restart: no second alarm under a new id.
        assert!(observe_after_restart(&path, Level::Warning).is_none());
        // Recovered while the agent was down: the recovery is reported.
        let mut m = AlarmMonitor::new("pi1", Duration::from_secs(60), Some(&path)).unwrap();
        let r = cpu_now(&mut m, Level::Normal).unwrap();
        assert!(r.message.starts_with("recovered from warning"));
        // Not saved (killed before the spool took it): raised again.
        assert!(observe_after_restart(&path, Level::Normal).is_some());
    }

    #[test]
    fn a_restart_keeps_the_alarmed_level_and_counts_a_waiting_change_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("levels.json");
        let rules = Trigger {
            hold: "3 runs".parse().unwrap(),
            recover: "2 runs".parse().unwrap(),
        };
        let t0 = Instant::now();
        let run = |m: &mut AlarmMonitor, level: Level| {
            let a = m.observe("cpu", &rules, &outcome(level), t0).unwrap();
            m.save().unwrap();
            a.map(|a| a.level)
        };
        {
            let mut m = AlarmMonitor::new("pi1", Duration::from_secs(60), Some(&path)).unwrap();
            assert_eq!(run(&mut m, Level::Normal), None);
            assert_eq!(run(&mut m, Level::Warning), None);
            assert_eq!(run(&mut m, Level::Warning), None);
        }
        // Two warnings before the stop are forgotten: three more are needed.
        let mut m = AlarmMonitor::new("pi1", Duration::from_secs(60), Some(&path)).unwrap();
        assert_eq!(run(&mut m, Level::Warning), None);
        assert_eq!(run(&mut m, Level::Warning), None);
        assert_eq!(run(&mut m, Level::Warning), Some("warning".into()));
        assert_eq!(run(&mut m, Level::Normal), None);
        drop(m);
        // The alarmed warning is kept: still warning after the start is no
        // news, and the recovery waits for its two calm runs.
        let mut m = AlarmMonitor::new("pi1", Duration::from_secs(60), Some(&path)).unwrap();
        assert_eq!(run(&mut m, Level::Warning), None);
        assert_eq!(run(&mut m, Level::Normal), None);
        assert_eq!(run(&mut m, Level::Normal), Some("normal".into()));
    }

    #[test]
    fn an_alarm_saved_with_its_levels_survives_a_crash_before_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("levels.json");
        let raised = {
            let mut m = AlarmMonitor::new("pi1", Duration::from_secs(60), Some(&path)).unwrap();
            let a = cpu_now(&mut m, Level::Warning).unwrap();
            m.save_pending(a.clone()).unwrap();
            a // killed here: never spooled
        };
        let mut m = AlarmMonitor::new("pi1", Duration::from_secs(60), Some(&path)).unwrap();
        assert_eq!(m.pending(), Some(&raised), "the same alarm, same id");
        // The level change is not seen again: no second alarm for it.
        assert!(cpu_now(&mut m, Level::Warning).is_none());
        m.spooled();
        m.save().unwrap();
        let m = AlarmMonitor::new("pi1", Duration::from_secs(60), Some(&path)).unwrap();
        assert_eq!(m.pending(), None);
    }

    #[test]
    fn levels_files_of_earlier_versions_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("levels.json");
        std::fs::write(&path, r#"{"cpu": "warning", "levels": "normal"}"#).unwrap();
        let mut m = AlarmMonitor::new("pi1", Duration::from_secs(60), Some(&path)).unwrap();
        assert_eq!(m.pending(), None);
        assert!(cpu_now(&mut m, Level::Warning).is_none());
        let r = m
            .observe(
                "levels",
                &Trigger::default(),
                &outcome(Level::Critical),
                Instant::now(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(r.level, "critical");
    }

    #[test]
    fn spool_survives_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alarms.spool");
        let m = AlarmMonitor::new("pi1", Duration::from_secs(60), None).unwrap();
        let a = m
            .alarm("cpu", Level::Warning, "hot".into(), "t".into())
            .unwrap();
        let b = m
            .alarm("mem", Level::Warning, "full".into(), "t".into())
            .unwrap();
        assert_ne!(a.id, b.id);
        {
            let s = AlarmSpool::open(&path).unwrap();
            s.push(a.clone()).unwrap();
            s.push(b.clone()).unwrap();
        }
        // A torn last line from a crash is skipped, the rest kept.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"{\"id\":\"tor").unwrap();
        let s = AlarmSpool::open(&path).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.front().unwrap(), a);
        // An alarm spooled after the torn line survives the next restart.
        let c = m
            .alarm("disk", Level::Warning, "full".into(), "t".into())
            .unwrap();
        s.push(c.clone()).unwrap();
        let s = AlarmSpool::open(&path).unwrap();
        assert_eq!(s.len(), 3);
        s.acknowledged(&a.id).unwrap();
        let s = AlarmSpool::open(&path).unwrap();
        assert_eq!(s.front().unwrap(), b);
    }
}
