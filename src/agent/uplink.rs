//! The agent's connections to the master: registration at start, a
//! heartbeat every `heartbeat_interval`, and delivery of spooled alarms,
//! all from one thread over short-lived authenticated connections.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam::channel::Receiver;

use crate::agent::alarms::AlarmSpool;
use crate::agent::logstore::LogStore;
use crate::agent::lost::{LostOutput, Throttle, ERROR_SUMMARY_INTERVAL};
use crate::net::TimedStream;
use crate::protocol::{is_wrong_key, Connection, Key, KeyMemory, Message, Purpose};

pub(crate) struct Uplink {
    pub(crate) name: String,
    pub(crate) master: SocketAddr,
    pub(crate) master_alarm: SocketAddr,
    /// This host's keys: `key_file` first, then `previous_key_files` (see
    /// `Connection::dial`); the master knows them as `name`'s.
    pub(crate) keys: Vec<Key>,
    /// Which key the master answered to, tried first next time.
    pub(crate) key_memory: KeyMemory,
    /// Where our control port listens; unspecified (0.0.0.0) means "ask
    /// the master to use the address our connections come from".
    pub(crate) control_listen: SocketAddr,
    pub(crate) data_port: u16,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) io_timeout: Duration,
    pub(crate) store: Arc<LogStore>,
    pub(crate) spool: Arc<AlarmSpool>,
    /// Lost output already written in its log, not yet told to the
    /// master (`crate::agent::lost`); sent after a heartbeat, kept until
    /// the master answers.
    pub(crate) lost: Arc<Mutex<Vec<LostOutput>>>,
}

/// Longest wait between alarm delivery attempts while the master is away.
/// Under a second, so that a spooled alarm reaches the master within a
/// second of it being reachable again (a backoff growing to tens of
/// seconds delays it by as much). An attempt at a master that is down
/// costs one refused connection, so two a second is cheap; a successful
/// heartbeat also triggers an attempt at once.
const MAX_ALARM_BACKOFF: Duration = Duration::from_millis(500);
/// First wait after a failed alarm delivery.
const FIRST_ALARM_BACKOFF: Duration = Duration::from_millis(250);
/// While alarm delivery keeps failing, a warning at most this often (the
/// first failure of an outage is always logged).
const ALARM_WARN_EVERY: Duration = Duration::from_secs(60);
/// Between heartbeats the uplink sleeps on its wake channel (a new alarm,
/// or the agent stopping), looking at the stop flag at least this often.
const STOP_CHECK: Duration = Duration::from_millis(500);

impl Uplink {
    /// A connection whose handshake, master's proof checked, is done
    /// within `io_timeout`; each request on it then gets `io_timeout` for
    /// its answer (see `Connection<TimedStream>`).
    fn connect(&self, addr: SocketAddr, purpose: Purpose) -> io::Result<Connection<TimedStream>> {
        self.key_memory.dial(
            addr,
            &self.keys,
            purpose,
            &self.name,
            self.connect_timeout,
            self.io_timeout,
        )
    }

    fn register(&self, first: bool) -> io::Result<()> {
        let mut conn = self.connect(self.master, Purpose::Register)?;
        let now = chrono::Utc::now().timestamp_millis();
        let control_ip = match self.control_listen.ip() {
            ip if ip.is_unspecified() => String::new(),
            ip => ip.to_string(),
        };
        let control_port = self.control_listen.port();
        let message = if first {
            Message::Register {
                name: self.name.clone(),
                control_ip,
                control_port,
                data_port: self.data_port,
                time_ms: now,
            }
        } else {
            Message::Heartbeat {
                name: self.name.clone(),
                control_ip,
                control_port,
                time_ms: now,
                backlog: self.store.backlog(),
            }
        };
        match conn.request(&message, self.io_timeout)? {
            Message::Welcome { .. } => Ok(()),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected Welcome, got {}", other.kind()),
            )),
        }
    }

    /// Tell the master about output that could not be stored, oldest
    /// first; each report leaves the queue once the master answers it.
    fn report_lost(&self) -> io::Result<()> {
        loop {
            let Some(lost) = crate::sync::lock(&self.lost).first().cloned() else {
                return Ok(());
            };
            let mut conn = self.connect(self.master, Purpose::Register)?;
            conn.send(&Message::Lost {
                name: self.name.clone(),
                log_type: lost.log_type.clone(),
                runs: lost.runs,
                bytes: lost.bytes,
                first: lost.first.clone(),
                last: lost.last.clone(),
            })?;
            match conn.recv_ok()? {
                Message::Welcome { .. } => {
                    crate::sync::lock(&self.lost).retain(|l| *l != lost);
                }
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("expected Welcome, got {}", other.kind()),
                    ))
                }
            }
        }
    }

    /// Send spooled alarms oldest first until the spool is empty.
    fn deliver_alarms(&self) -> io::Result<usize> {
        let mut sent = 0;
        let mut conn = None;
        while let Some(alarm) = self.spool.front() {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(self.connect(self.master_alarm, Purpose::Alarm)?),
            };
            match c.request(&Message::Alarm(alarm.clone()), self.io_timeout)? {
                Message::AlarmAck { id } if id == alarm.id => self.spool.acknowledged(&id)?,
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("expected AlarmAck, got {}", other.kind()),
                    ))
                }
            }
            sent += 1;
        }
        if let Some(mut c) = conn {
            let _ = c
                .allow(self.io_timeout)
                .and_then(|()| c.send(&Message::Bye));
        }
        Ok(sent)
    }

    /// Run until `stop`; `wake` is signalled when a new alarm is spooled.
    pub(crate) fn run(&self, stop: &AtomicBool, wake: &Receiver<()>) {
        let mut state = LoopState::new();
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= state.next_beat {
                self.beat(&mut state, now);
                state.next_beat = now + self.heartbeat_interval;
            }
            if !self.spool.is_empty() && now >= state.next_alarm_try {
                self.deliver(&mut state);
            }
            let now = Instant::now();
            let mut until = state.next_beat;
            if !self.spool.is_empty() {
                until = until.min(state.next_alarm_try);
            }
            let wait = until.saturating_duration_since(now).min(STOP_CHECK);
            let _ = wake.recv_timeout(wait);
        }
    }

    /// Register (the first time) or beat; once the master answers, report
    /// lost output and deliver waiting alarms now.
    fn beat(&self, state: &mut LoopState, now: Instant) {
        if let Err(e) = self.register(!state.registered) {
            if state.master_reachable && is_wrong_key(&e) {
                log::warn!(
                    "{}: master {} refused our key: {e}; check key_file (logged again when it accepts)",
                    self.name,
                    self.master
                );
            } else if state.master_reachable {
                log::warn!("{}: master {} unreachable: {e}", self.name, self.master);
            }
            state.master_reachable = false;
            return;
        }
        if !state.registered || !state.master_reachable {
            log::info!(
                "{}: {} with master {}",
                self.name,
                if state.registered {
                    "heartbeat back"
                } else {
                    "registered"
                },
                self.master
            );
        }
        state.registered = true;
        state.master_reachable = true;
        // The master answers: deliver what waits now, not at the end of a
        // backoff.
        state.next_alarm_try = now;
        state.alarm_backoff = FIRST_ALARM_BACKOFF;
        if let Err(e) = self.report_lost() {
            let text = format!(
                "{}: cannot report lost output to {}: {e}; retrying after the next heartbeat",
                self.name, self.master
            );
            if let Some(line) = state.lost_errors.error(&text, Instant::now()) {
                log::warn!("{line}");
            }
        }
    }

    /// Deliver the spooled alarms; on failure back off (doubling, at most
    /// MAX_ALARM_BACKOFF) and warn at most every ALARM_WARN_EVERY.
    fn deliver(&self, state: &mut LoopState) {
        match self.deliver_alarms() {
            Ok(n) => {
                if state.alarm_failures > 0 {
                    log::info!(
                        "{}: delivered {n} alarm(s) after {} failed attempt(s)",
                        self.name,
                        state.alarm_failures
                    );
                } else {
                    log::info!("{}: delivered {n} alarm(s)", self.name);
                }
                state.alarm_backoff = FIRST_ALARM_BACKOFF;
                state.alarm_failures = 0;
                state.alarm_warned = None;
            }
            Err(e) => {
                state.alarm_failures += 1;
                let failures = state.alarm_failures;
                if state
                    .alarm_warned
                    .is_none_or(|t| t.elapsed() >= ALARM_WARN_EVERY)
                {
                    log::warn!(
                        "{}: alarm delivery to {} failed ({e}); {} kept in the spool, retried every {MAX_ALARM_BACKOFF:?} or less ({failures} attempt(s) so far)",
                        self.name,
                        self.master_alarm,
                        self.spool.len()
                    );
                    state.alarm_warned = Some(Instant::now());
                } else {
                    log::debug!(
                        "{}: alarm delivery attempt {failures} failed: {e}",
                        self.name
                    );
                }
                state.next_alarm_try = Instant::now() + state.alarm_backoff;
                state.alarm_backoff = (state.alarm_backoff * 2).min(MAX_ALARM_BACKOFF);
            }
        }
    }
}

/// What the uplink's loop remembers between turns.
struct LoopState {
    registered: bool,
    master_reachable: bool,
    next_beat: Instant,
    next_alarm_try: Instant,
    alarm_backoff: Duration,
    /// Failed delivery attempts since the last success, and when the last
    /// warning about them was logged.
    alarm_failures: u64,
    alarm_warned: Option<Instant>,
    /// A master of an earlier version refuses `Lost` (tried after every
    /// heartbeat): said at most every ERROR_SUMMARY_INTERVAL.
    lost_errors: Throttle,
}

impl LoopState {
    fn new() -> LoopState {
        LoopState {
            registered: false,
            master_reachable: true,
            next_beat: Instant::now(),
            next_alarm_try: Instant::now(),
            alarm_backoff: FIRST_ALARM_BACKOFF,
            alarm_failures: 0,
            alarm_warned: None,
            lost_errors: Throttle::new(ERROR_SUMMARY_INTERVAL),
        }
    }
}
