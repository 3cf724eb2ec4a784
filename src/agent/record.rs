//! What becomes of each collector run: its alarm first, then its lines.
//!
//! The order is the crash safety of alarms (see `AlarmMonitor`): a level
//! change is saved with the alarm it raised before the alarm is spooled,
//! and both before the run's lines are stored; a crash between any two
//! steps finds the alarm pending (spooled at the next start) or the level
//! unchanged (the next run raises it again).
//!
//! Output that cannot be stored (a full disk) is counted per type in the
//! [`LostLedger`] and, once the disk takes it again, written as a line in
//! the type's log, raised as an alarm and reported to the master.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam::channel::Sender;

use crate::agent::alarms::{AlarmMonitor, AlarmSpool};
use crate::agent::collector::Outcome;
use crate::agent::logstore::{Dropped, LogStore};
use crate::agent::lost::{LostLedger, LostOutput, Throttle, ERROR_SUMMARY_INTERVAL};
use crate::config::CollectorSpec;
use crate::level::Level;
use crate::protocol::Alarm;
use crate::storage::now_rfc3339;

/// Log `text` as an error, at most once per interval of `throttle`.
fn log_throttled(throttle: &mut Throttle, text: &str) {
    if let Some(line) = throttle.error(text, Instant::now()) {
        log::error!("{line}");
    }
}

/// Raises alarms in order: saved with the levels, then spooled, then the
/// uplink woken to deliver them.
pub(crate) struct Alarms {
    name: String,
    monitor: AlarmMonitor,
    spool: Arc<AlarmSpool>,
    wake: Sender<()>,
    // A full disk fails every write of every run: each kind of error is
    // logged once, then summarised at most every ERROR_SUMMARY_INTERVAL.
    spool_errors: Throttle,
    level_errors: Throttle,
    /// Alarms about lost output, kept until spooled.
    lost: Vec<Alarm>,
}

impl Alarms {
    pub(crate) fn new(
        name: String,
        monitor: AlarmMonitor,
        spool: Arc<AlarmSpool>,
        wake: Sender<()>,
    ) -> Alarms {
        Alarms {
            name,
            monitor,
            spool,
            wake,
            spool_errors: Throttle::new(ERROR_SUMMARY_INTERVAL),
            level_errors: Throttle::new(ERROR_SUMMARY_INTERVAL),
            lost: Vec::new(),
        }
    }

    fn recovered(name: &str, throttle: &mut Throttle) {
        if let Some(line) = throttle.ok(Instant::now()) {
            log::info!("{name}: recovered: {line}");
        }
    }

    /// Spool `alarm` and wake the uplink; logged once spooled. False if
    /// it cannot be spooled yet (tried again after a later run; its
    /// failures are throttled).
    fn raise(&mut self, alarm: io::Result<Alarm>) -> bool {
        let name = &self.name;
        let spooled = alarm.and_then(|a| {
            let text = format!("{name}: alarm {} {} {}", a.log_type, a.level, a.message);
            self.spool.push(a).map(|()| log::warn!("{text}"))
        });
        match spooled {
            Ok(()) => {
                Self::recovered(name, &mut self.spool_errors);
                let _ = self.wake.try_send(());
                true
            }
            Err(e) => {
                let text = format!("{name}: cannot spool an alarm: {e}");
                log_throttled(&mut self.spool_errors, &text);
                false
            }
        }
    }

    /// Raise a warning about the agent itself on `log_type`.
    fn warn(&mut self, log_type: &str, message: String, time: String) -> bool {
        let alarm = self.monitor.alarm(log_type, Level::Warning, message, time);
        self.raise(alarm)
    }

    /// Spool the alarms a level change raised (AlarmMonitor's crash
    /// safety: already saved with the levels), unless there already; then
    /// save the levels.
    pub(crate) fn spool_pending(&mut self) {
        while let Some(alarm) = self.monitor.pending().cloned() {
            if !(self.spool.contains(&alarm.id) || self.raise(Ok(alarm))) {
                break; // kept pending: tried again after the next run
            }
            self.monitor.spooled();
        }
        match self.monitor.save() {
            Ok(()) => Self::recovered(&self.name, &mut self.level_errors),
            Err(e) => {
                let text = format!("{}: cannot save alarm levels: {e}", self.name);
                log_throttled(&mut self.level_errors, &text);
            }
        }
    }

    /// Take one run's level: the alarm it raises is saved with the levels,
    /// then spooled.
    fn observe(&mut self, spec: &CollectorSpec, outcome: &Outcome) {
        let observed = self
            .monitor
            .observe(&spec.name, &spec.trigger, outcome, Instant::now());
        match observed {
            Ok(Some(alarm)) => {
                if let Err(e) = self.monitor.save_pending(alarm) {
                    let text = format!("{}: cannot save alarm levels: {e}", self.name);
                    log_throttled(&mut self.level_errors, &text);
                }
                crate::failpoint::hit("agent.alarm_saved");
                self.spool_pending();
                crate::failpoint::hit("agent.alarm_spooled");
            }
            Ok(None) => self.spool_pending(),
            Err(e) => {
                self.raise(Err(e));
            }
        }
    }

    /// Try again to spool the alarms about lost output.
    fn retry_lost(&mut self) {
        let mut lost = std::mem::take(&mut self.lost);
        lost.retain(|alarm| !self.raise(Ok(alarm.clone())));
        self.lost = lost;
    }

    /// Raise the alarm about output lost on `log_type`, keeping it until
    /// it can be spooled.
    fn lost_output(&mut self, log_type: &str, lost: &LostOutput, time: String) {
        let alarm = self
            .monitor
            .alarm(log_type, Level::Warning, lost.alarm_message(), time);
        if let Ok(alarm) = alarm {
            if !self.raise(Ok(alarm.clone())) {
                self.lost.push(alarm);
            }
        }
    }

    /// Alarms about data `max_backlog` dropped.
    fn dropped(&mut self, drops: Vec<Dropped>) {
        for d in drops {
            let message = format!(
                "max_backlog reached: dropped {} bytes of {} log in {} archive(s) not yet pulled",
                d.bytes, d.log_type, d.archives
            );
            self.warn(&d.log_type, message, now_rfc3339());
        }
    }
}

/// Stores each run's lines, and counts what it cannot store.
pub(crate) struct Recorder {
    name: String,
    store: Arc<LogStore>,
    ledger: LostLedger,
    /// Losses written in their logs, for the uplink to report.
    reports: Arc<Mutex<Vec<LostOutput>>>,
    store_errors: Throttle,
    /// The alarm raised when output cannot be stored, at most this often.
    store_alarms: Throttle,
}

impl Recorder {
    pub(crate) fn new(
        name: String,
        store: Arc<LogStore>,
        reports: Arc<Mutex<Vec<LostOutput>>>,
    ) -> Recorder {
        Recorder {
            name,
            store,
            ledger: LostLedger::default(),
            reports,
            store_errors: Throttle::new(ERROR_SUMMARY_INTERVAL),
            store_alarms: Throttle::new(ERROR_SUMMARY_INTERVAL),
        }
    }

    /// One run finished: the alarm first, then the lines (AlarmMonitor's
    /// crash safety).
    pub(crate) fn take(&mut self, spec: &CollectorSpec, outcome: Outcome, alarms: &mut Alarms) {
        alarms.observe(spec, &outcome);
        alarms.retry_lost();
        // What `max_backlog` dropped on either append below.
        let mut drops = Vec::new();
        // Output lost earlier goes first: its line keeps time order.
        if let Some(lost) = self.ledger.due(&spec.name, Instant::now()).cloned() {
            let now = now_rfc3339();
            if let Ok(dropped) = self.store.append(&spec.name, lost.line(&now).as_bytes()) {
                drops.extend(dropped);
                self.ledger.take(&spec.name);
                alarms.lost_output(&spec.name, &lost, now);
                crate::sync::lock(&self.reports).push(lost);
            }
        }
        let record = outcome.render();
        match self.store.append(&spec.name, record.as_bytes()) {
            Ok(dropped) => {
                if let Some(line) = self.store_errors.ok(Instant::now()) {
                    log::info!("{}: storing output again: {line}", self.name);
                }
                drops.extend(dropped);
            }
            Err(e) => self.lost(&spec.name, record.len(), &e, alarms),
        }
        alarms.dropped(drops);
    }

    /// `bytes` of `log_type`'s output could not be stored: counted, logged
    /// and alarmed (throttled).
    fn lost(&mut self, log_type: &str, bytes: usize, e: &io::Error, alarms: &mut Alarms) {
        let now = now_rfc3339();
        let error = e.to_string();
        self.ledger
            .record(log_type, bytes as u64, &now, Instant::now(), &error);
        let text = format!(
            "{}: cannot store {log_type} output: {e}; counting what is lost until it can be",
            self.name
        );
        log_throttled(&mut self.store_errors, &text);
        // The spool may be on a disk that still works (this may not be a
        // full disk); if not, the count is reported later. Throttled: a
        // nearly full disk fails and works in turns.
        let text = format!("{log_type}: {e}");
        if self.store_alarms.error(&text, Instant::now()).is_some() {
            let message = format!("cannot store collector output: {e}");
            alarms.warn(log_type, message, now);
        }
    }

    /// At the stop: a loss not reported yet goes into its log and the
    /// spool now, if the disk takes it (the master hears of it from them).
    pub(crate) fn flush(&mut self, alarms: &mut Alarms) {
        for alarm in std::mem::take(&mut alarms.lost) {
            alarms.raise(Ok(alarm));
        }
        for log_type in self.ledger.types() {
            let Some(lost) = self.ledger.take(&log_type) else {
                continue;
            };
            let now = now_rfc3339();
            match self.store.append(&log_type, lost.line(&now).as_bytes()) {
                Ok(_) => {
                    alarms.warn(&log_type, lost.alarm_message(), now);
                }
                Err(e) => log::error!(
                    "{}: {log_type}: {} runs ({} bytes) of output from {} to {} could not be stored, and cannot be recorded: {e}",
                    self.name, lost.runs, lost.bytes, lost.first, lost.last
                ),
            }
        }
    }
}
