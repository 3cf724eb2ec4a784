//! The pull scheduler: when each agent is pulled and probed, on the
//! outbound pool.
//!
//! Agents that are up are pulled every `pull_interval` and probed every
//! `heartbeat_interval`. An address that is not up (never seen, or down) is
//! a suspect: it may be one of ninety empty addresses of a `{from, to}`
//! range, each costing a worker up to `connect_timeout` per try. So a
//! suspect is only probed (the cheapest contact; no pulls until it
//! answers), its probes back off after each failure from
//! `heartbeat_interval` up to `SEEN_BACKOFF_MAX` for an address that has
//! answered before and `NEVER_SEEN_BACKOFF_MAX` for one that never has,
//! and suspects together hold at most half of the pool: the agents that
//! are up always find the workers their pulls need. An agent that comes
//! back is pulled at once: its heartbeat (or a probe) marks it up, and the
//! scheduler drops its back-off when it sees that.
//!
//! A failing address is logged once when it starts failing and once when
//! it answers again, not at every try.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use threadpool::ThreadPool;

use super::pull::{self, PullContext, PullError};
use super::registry::{AgentRecord, Registry, State};
use crate::config::MasterConfig;
use crate::net;

/// Scheduler tick: liveness is checked this often.
const TICK: Duration = Duration::from_millis(100);
/// The registry file is rewritten at least this often, so its age shows
/// whether the master is running (see `pihealth status`).
const REGISTRY_REFRESH: Duration = Duration::from_secs(10);
/// Longest wait between tries of an address that has answered before.
pub(crate) const SEEN_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Longest wait between tries of an address that never answered.
pub(crate) const NEVER_SEEN_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// How long to wait before trying a suspect address again after `failures`
/// failed tries in a row: the normal interval, doubled per failure up to
/// the cap (never less than the normal interval).
pub(crate) fn retry_delay(interval: Duration, failures: u32, seen_before: bool) -> Duration {
    let cap = if seen_before {
        SEEN_BACKOFF_MAX
    } else {
        NEVER_SEEN_BACKOFF_MAX
    };
    let doubled = interval.saturating_mul(1u32 << failures.min(16));
    doubled.min(cap).max(interval)
}

/// Clears a busy flag when dropped, so a job that panics still frees its agent.
struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Gives a suspect's place in the pool back when its job ends.
struct SuspectPlace(Arc<AtomicUsize>);

impl Drop for SuspectPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Failed contacts (pulls or probes) in a row at one address; written by
/// the jobs, read by the scheduler.
#[derive(Default)]
struct Failures(AtomicU32);

impl Failures {
    /// Note a result; `true` if it changed whether the address answers (so
    /// it deserves a log line).
    fn note(&self, ok: bool) -> bool {
        if ok {
            self.0.swap(0, Ordering::SeqCst) > 0
        } else {
            self.0.fetch_add(1, Ordering::SeqCst) == 0
        }
    }

    fn count(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Per-address bookkeeping of the scheduler (not persisted).
struct Slot {
    next_pull: Instant,
    next_probe: Instant,
    pulling: Arc<AtomicBool>,
    probing: Arc<AtomicBool>,
    failures: Arc<Failures>,
    /// Up at the last tick: a suspect turning up is pulled at once.
    was_up: bool,
}

pub(crate) struct Scheduler<'a> {
    pub(crate) config: &'a MasterConfig,
    pub(crate) registry: &'a Arc<Registry>,
    pub(crate) ctx: &'a PullContext,
    /// The outbound pool.
    pub(crate) pool: &'a ThreadPool,
    /// Raises `host` alarms on down and up (`None`: no alarms, e.g. tests).
    pub(crate) host_alarms: Option<&'a super::host_alarms::HostAlarmRaiser>,
}

impl Scheduler<'_> {
    /// Schedule pulls and probes until `stop` is set.
    pub(crate) fn run(&self, stop: &AtomicBool) {
        let mut slots: HashMap<SocketAddr, Slot> = HashMap::new();
        let suspects = Arc::new(AtomicUsize::new(0));
        let max_suspects = (self.config.workers / 2).max(1);
        let limit_ms =
            (self.config.heartbeat_interval.0 * self.config.heartbeat_misses).as_millis() as i64;
        // The first flush at the first tick: `pihealth status` right after
        // a start (or right after the first pull) finds the registry.
        let mut last_flush = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        let mut last_written = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            self.tend_all(&mut slots, &suspects, max_suspects);
            self.registry.check_liveness(limit_ms);
            if let Some(host_alarms) = self.host_alarms {
                host_alarms.tick(&self.registry.snapshot());
            }
            if last_flush.elapsed() >= Duration::from_secs(1) {
                if last_written.elapsed() >= REGISTRY_REFRESH {
                    self.registry.mark_dirty();
                    last_written = Instant::now();
                }
                if let Err(e) = self.registry.flush() {
                    log::error!("cannot write the registry: {e}");
                }
                last_flush = Instant::now();
            }
            net::sleep_unless(stop, TICK);
        }
    }

    /// One tick: every agent's pulls and probes that are due, at most
    /// `max_suspects` probes of agents not up at once.
    fn tend_all(
        &self,
        slots: &mut HashMap<SocketAddr, Slot>,
        suspects: &Arc<AtomicUsize>,
        max_suspects: usize,
    ) {
        let now = Instant::now();
        let mut agents = self.registry.snapshot();
        // Records merged away or moved to another address leave no slot
        // behind (a pull or probe still running keeps its own flag).
        if slots.len() > agents.len() {
            let current: HashSet<SocketAddr> = agents.iter().map(|a| a.control).collect();
            slots.retain(|control, _| current.contains(control));
        }
        // Agents that are up first: their jobs queue ahead of suspects'.
        agents.sort_by_key(|a| a.state != State::Up);
        for agent in agents {
            let slot = slots.entry(agent.control).or_insert_with(|| Slot {
                next_pull: now,
                next_probe: now,
                pulling: Arc::new(AtomicBool::new(false)),
                probing: Arc::new(AtomicBool::new(false)),
                failures: Arc::default(),
                was_up: false,
            });
            if agent.state == State::Up {
                if !slot.was_up {
                    // Back (its heartbeat or a probe said so): pulled now.
                    slot.next_pull = slot.next_pull.min(now);
                    slot.next_probe = slot.next_probe.min(now + self.config.heartbeat_interval.0);
                    slot.was_up = true;
                }
                self.tend_up(&agent, slot, now);
            } else {
                slot.was_up = false;
                if suspects.load(Ordering::SeqCst) < max_suspects
                    && self.tend_suspect(&agent, slot, now, suspects)
                {
                    suspects.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// An agent that is up: pull and probe on cadence.
    fn tend_up(&self, agent: &AgentRecord, slot: &mut Slot, now: Instant) {
        // Never two pulls of one agent at once.
        if now >= slot.next_pull && !slot.pulling.swap(true, Ordering::SeqCst) {
            slot.next_pull = now + self.config.pull_interval.0;
            self.launch_pull(agent, slot, None);
        }
        if now >= slot.next_probe && !slot.probing.swap(true, Ordering::SeqCst) {
            slot.next_probe = now + self.config.heartbeat_interval.0;
            let (flag, registry, ctx, control, failures, name) = (
                slot.probing.clone(),
                self.registry.clone(),
                self.ctx.clone(),
                agent.control,
                slot.failures.clone(),
                agent.name.clone(),
            );
            self.pool.execute(move || {
                let _clear = ClearOnDrop(flag);
                match pull::probe(&ctx, control, name.as_deref()) {
                    Ok((info, skew)) => {
                        failures.note(true);
                        registry.contact(control, &info, skew, "probe");
                    }
                    Err(e) => log::debug!("probe of {control} failed: {e}"),
                }
            });
        }
    }

    /// An address that is not up: one probe when its back-off has passed
    /// (a probe is the cheapest contact; one that answers is marked up and
    /// pulled at the next tick). Returns whether a job was started.
    fn tend_suspect(
        &self,
        agent: &AgentRecord,
        slot: &mut Slot,
        now: Instant,
        suspects: &Arc<AtomicUsize>,
    ) -> bool {
        if now < slot.next_probe || slot.probing.swap(true, Ordering::SeqCst) {
            return false;
        }
        let interval = self.config.heartbeat_interval.0;
        let seen_before = agent.last_seen_ms.is_some();
        slot.next_probe = now + retry_delay(interval, slot.failures.count(), seen_before);
        let place = SuspectPlace(suspects.clone());
        let (flag, registry, ctx, control, failures, label, name) = (
            slot.probing.clone(),
            self.registry.clone(),
            self.ctx.clone(),
            agent.control,
            slot.failures.clone(),
            agent.label(),
            agent.name.clone(),
        );
        self.pool.execute(move || {
            let _clear = ClearOnDrop(flag);
            let _place = place;
            match pull::probe(&ctx, control, name.as_deref()) {
                Ok((info, skew)) => {
                    if failures.note(true) {
                        log::info!("{label}: {control} answers again");
                    }
                    registry.contact(control, &info, skew, "probe");
                }
                Err(e) => {
                    if failures.note(false) {
                        log::warn!("{label}: no agent answers at {control}: {e}; trying again with back-off, logged again when it answers");
                    } else {
                        log::debug!("{label}: still no agent at {control}: {e}");
                    }
                }
            }
        });
        true
    }

    fn launch_pull(&self, agent: &AgentRecord, slot: &Slot, place: Option<SuspectPlace>) {
        let (flag, registry, ctx, control, failures) = (
            slot.pulling.clone(),
            self.registry.clone(),
            self.ctx.clone(),
            agent.control,
            slot.failures.clone(),
        );
        // The host the pull authenticates as: configured, registered or
        // learnt by a probe (otherwise asked, see `pull::pull_agent`).
        let configured = agent.name.clone();
        let label = agent.label();
        self.pool.execute(move || {
            let _clear = ClearOnDrop(flag);
            let _place = place;
            run_pull(
                &registry,
                &ctx,
                control,
                configured.as_deref(),
                &label,
                &failures,
            );
        });
    }
}

fn run_pull(
    registry: &Registry,
    ctx: &PullContext,
    control: SocketAddr,
    name: Option<&str>,
    label: &str,
    failures: &Failures,
) {
    let started = Instant::now();
    match pull::pull_agent(ctx, control, name) {
        Ok(report) => {
            if failures.note(true) {
                log::info!("{}: {control} answers again", report.host);
            }
            if let Some(info) = &report.info {
                registry.contact(control, info, report.skew_ms, "pull");
            }
            // Gaps and restarted streams are already in events.log (the
            // archive writes them as they happen).
            if report.pieces > 0 {
                log::info!(
                    "{}: pulled {} piece(s), {} bytes in {:?}",
                    report.host,
                    report.pieces,
                    report.bytes,
                    report.elapsed
                );
            }
            registry.pull_finished(control, Ok(report.bytes), report.elapsed);
        }
        Err(PullError::Busy(host)) => log::info!("{host}: skipped, another pull of it is running"),
        Err(e) => {
            if failures.note(false) {
                log::warn!("pull of {label} ({control}) failed: {e}; retrying with back-off, logged again when it answers");
            } else {
                log::debug!("pull of {label} ({control}) failed again: {e}");
            }
            registry.pull_finished(control, Err(&e), started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspects_back_off_to_a_cap_that_depends_on_whether_they_ever_answered() {
        let s = Duration::from_secs;
        assert_eq!(retry_delay(s(30), 0, true), s(30));
        assert_eq!(retry_delay(s(1), 1, false), s(2));
        assert_eq!(retry_delay(s(1), 3, false), s(8));
        assert_eq!(retry_delay(s(1), 30, true), SEEN_BACKOFF_MAX);
        assert_eq!(retry_delay(s(1), 30, false), NEVER_SEEN_BACKOFF_MAX);
        // Backing off never tries more often than the normal interval.
        assert_eq!(retry_delay(s(3600), 2, true), s(3600));
    }

    #[test]
    fn failures_are_worth_a_log_line_only_when_they_change_state() {
        let f = Failures::default();
        assert!(!f.note(true));
        assert!(f.note(false));
        assert!(!f.note(false));
        assert!(!f.note(false));
        assert_eq!(f.count(), 3);
        assert!(f.note(true));
        assert!(!f.note(true));
    }
}
