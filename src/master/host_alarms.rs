//! Host alarms: the master's own alarms of type `host`, `critical` when it
//! marks an agent down (missed heartbeats and probes) and `normal` when the
//! agent is back. They go through the same path as an agent's alarms
//! (`AlarmLog::raise`): `alarms.log`, `alarm_command`, silences,
//! Alertmanager, the status page and `/metrics`.
//!
//! Damping (a host that flaps must not page every few seconds):
//! - **down** alarms at once, the tick after the registry marks it down;
//! - **up** alarms only once the host has stayed up for
//!   `host_recovery_hold` without a break. A host that goes down again
//!   within the hold was never reported up, so it raises no new `critical`:
//!   however often a host flaps, it gives one `critical` and, once it is
//!   steady for the hold, one `normal`.
//! - **master start**: the registry read from disk may say `up` for an
//!   agent last seen before the master stopped; it is then marked down at
//!   the first tick although it may be fine. No down alarm is raised until
//!   the master has run for `heartbeat_interval × heartbeat_misses` (long
//!   enough for every live agent to heartbeat); a host still down then
//!   alarms.
//!
//! What was last alarmed per host is read back from `alarms.log` at start,
//! so a restart neither repeats a `critical` nor forgets to send the
//! `normal` of a host that came back while the master was stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::level::Level;
use crate::master::alarms::{AlarmLine, AlarmLog};
use crate::master::registry::{AgentRecord, State};

use crate::names::HOST_TYPE;

#[derive(Debug, Default)]
struct HostState {
    /// The last host alarm raised for it was `critical`.
    alarmed_down: bool,
    /// Up since then (the recovery hold runs from here).
    up_since: Option<Instant>,
}

/// The host-alarm state machine; fed the registry's states every tick.
pub(crate) struct HostAlarms {
    started: Instant,
    /// No down alarm before `started + grace` (module doc).
    grace: Duration,
    hold: Duration,
    hosts: HashMap<String, HostState>,
}

impl HostAlarms {
    pub(crate) fn new(grace: Duration, hold: Duration, now: Instant) -> HostAlarms {
        HostAlarms {
            started: now,
            grace,
            hold,
            hosts: HashMap::new(),
        }
    }

    /// Learn from one stored alarm, oldest first (only `host` ones count):
    /// what was last raised for each host.
    pub(crate) fn learn(&mut self, a: &AlarmLine) {
        if a.log_type == HOST_TYPE {
            self.hosts.entry(a.host.clone()).or_default().alarmed_down = a.level == "critical";
        }
    }

    /// The registry says `host` is in `state` at `now`: the level of the
    /// host alarm to raise, if one is due.
    pub(crate) fn observe(&mut self, host: &str, state: State, now: Instant) -> Option<Level> {
        let past_grace = now.saturating_duration_since(self.started) >= self.grace;
        let h = self.hosts.entry(host.to_string()).or_default();
        match state {
            State::Down => {
                h.up_since = None;
                if !h.alarmed_down && past_grace {
                    h.alarmed_down = true;
                    return Some(Level::Critical);
                }
                None
            }
            State::Up if h.alarmed_down => {
                let since = *h.up_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= self.hold {
                    h.alarmed_down = false;
                    h.up_since = None;
                    return Some(Level::Normal);
                }
                None
            }
            State::Up | State::NeverSeen => None,
        }
    }

    /// An alarm `observe` asked for could not be stored: undo it, so the
    /// next observation asks again.
    fn forget(&mut self, host: &str) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.alarmed_down = !h.alarmed_down;
            h.up_since = None;
        }
    }
}

/// Feeds the registry to `HostAlarms` and raises what it says, through
/// the alarm log.
pub(crate) struct HostAlarmRaiser {
    machine: Mutex<HostAlarms>,
    log: Arc<AlarmLog>,
    /// `heartbeat_interval × heartbeat_misses`, for the message.
    limit: Duration,
}

impl HostAlarmRaiser {
    /// `limit`: `heartbeat_interval × heartbeat_misses` (also the start
    /// grace); `hold`: `host_recovery_hold`.
    pub(crate) fn new(
        log: Arc<AlarmLog>,
        limit: Duration,
        hold: Duration,
    ) -> std::io::Result<Self> {
        let mut machine = HostAlarms::new(limit, hold, Instant::now());
        log.replay(|a| machine.learn(&a))?;
        Ok(HostAlarmRaiser {
            machine: Mutex::new(machine),
            log,
            limit,
        })
    }

    /// One look at the agents (every scheduler tick).
    pub(crate) fn tick(&self, agents: &[AgentRecord]) {
        let now = Instant::now();
        let mut machine = crate::sync::lock(&self.machine);
        for agent in agents {
            // A record without a name was never up (it learns its name on
            // first contact), so it has nothing to alarm about.
            let Some(host) = agent.name.as_deref() else {
                continue;
            };
            let Some(level) = machine.observe(host, agent.state, now) else {
                continue;
            };
            let last_seen = agent
                .last_seen_ms
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.with_timezone(&chrono::Local).to_rfc3339())
                .unwrap_or_else(|| "never".into());
            let message = match level {
                Level::Critical => format!(
                    "{host} is down: no heartbeat or probe answer for {:?} (heartbeat_interval x heartbeat_misses); last seen {last_seen}",
                    self.limit
                ),
                _ => format!("{host} is up again (last seen {last_seen})"),
            };
            let alarm = match AlarmLog::master_alarm(host, HOST_TYPE, level, message) {
                Ok(a) => a,
                Err(e) => {
                    log::error!("cannot make a host alarm for {host}: {e}");
                    continue;
                }
            };
            log::warn!("host alarm: {host} {level}");
            if let Err(e) = self.log.raise(&alarm) {
                // Not stored: forget that it was raised, so the next tick
                // tries again.
                log::error!("cannot store the host alarm for {host}: {e}");
                machine.forget(host);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(host: &str, log_type: &str, level: &str) -> AlarmLine {
        AlarmLine {
            time: "2026-12-04T10:00:00+00:00".into(),
            host: host.into(),
            log_type: log_type.into(),
            level: level.into(),
            id: "x".into(),
            message: String::new(),
        }
    }

    #[test]
    fn a_flapping_host_alarms_once_down_and_once_up_when_steady() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut h = HostAlarms::new(s(0), s(60), t0);
        assert_eq!(h.observe("pi1", State::Up, t0), None);
        assert_eq!(
            h.observe("pi1", State::Down, t0 + s(1)),
            Some(Level::Critical)
        );
        assert_eq!(h.observe("pi1", State::Down, t0 + s(2)), None);
        // Flaps: up for less than the hold, down again, many times.
        for i in 0..20u64 {
            let t = t0 + s(10 + 40 * i);
            assert_eq!(h.observe("pi1", State::Up, t), None);
            assert_eq!(h.observe("pi1", State::Up, t + s(30)), None);
            assert_eq!(h.observe("pi1", State::Down, t + s(35)), None);
        }
        let t = t0 + s(2000);
        assert_eq!(h.observe("pi1", State::Up, t), None);
        assert_eq!(h.observe("pi1", State::Up, t + s(59)), None);
        assert_eq!(h.observe("pi1", State::Up, t + s(60)), Some(Level::Normal));
        assert_eq!(h.observe("pi1", State::Up, t + s(61)), None);
        // Down again later: a new critical.
        assert_eq!(
            h.observe("pi1", State::Down, t + s(90)),
            Some(Level::Critical)
        );
    }

    #[test]
    fn no_down_alarm_during_the_start_grace_and_history_is_remembered() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let history = [
            line("pi1", "host", "critical"),
            line("pi2", "host", "critical"),
            line("pi2", "host", "normal"),
            line("pi3", "cpu", "critical"),
        ];
        let mut h = HostAlarms::new(s(30), s(0), t0);
        history.iter().for_each(|a| h.learn(a));
        // pi1 was reported down before the restart: it is up now.
        assert_eq!(h.observe("pi1", State::Up, t0), Some(Level::Normal));
        // pi2 looks down at once (stale registry): not yet.
        assert_eq!(h.observe("pi2", State::Down, t0 + s(1)), None);
        assert_eq!(h.observe("pi2", State::Up, t0 + s(2)), None);
        assert_eq!(h.observe("pi3", State::Down, t0 + s(29)), None);
        assert_eq!(
            h.observe("pi3", State::Down, t0 + s(30)),
            Some(Level::Critical)
        );
        assert_eq!(h.observe("pi4", State::NeverSeen, t0 + s(40)), None);
        assert_eq!(h.observe("pi4", State::Up, t0 + s(41)), None);
    }
}
