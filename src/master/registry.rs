//! The agents the master knows, their liveness, and what the last pulls did.
//!
//! Kept in memory behind one lock and written to `log/.master/registry.json`
//! (atomically, at most about once a second) so registrations survive a
//! restart and `pihealth status` can read the fleet without the daemon.
//! Every change of an agent's state goes to `events.log` (`super::events`).
//!
//! The file is derived state: heartbeats, probes and pulls change times and
//! counters every second, and all of it is learnt again within a heartbeat
//! after a restart. Only what a restart could not learn again soon — which
//! agents exist and where (name, addresses, origin) — is worth an fsync on
//! a Pi's SD card. So a write is fsynced (file and directory) only when
//! that set differs from the last durable write; every other write is a
//! plain atomic rename, which the kernel writes back in its own time. A
//! crash may then lose the last seconds of times and counters, or on a
//! file system that does not order a rename after its data, leave an empty
//! or torn file: `open` sets that aside as `registry.json.bad` and starts
//! from the static list, and registered agents come back with their next
//! heartbeat.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::events::EventLog;
use super::files::MasterFiles;
use super::pull::{FailureKind, PullError};
use crate::config::StaticAgent;
use crate::protocol::AgentInfo;
use crate::storage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    NeverSeen,
    Up,
    Down,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::NeverSeen => "never seen",
            State::Up => "up",
            State::Down => "down",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Static,
    Registered,
}

/// One agent as the master sees it. Times are milliseconds since the Unix
/// epoch (UTC) so they survive restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Host name as the agent (or the config) gives it; `None` until known.
    pub name: Option<String>,
    pub control: SocketAddr,
    pub data_port: u16,
    pub origin: Origin,
    pub state: State,
    pub state_since_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    pub last_heartbeat_ms: Option<i64>,
    pub last_pull_ms: Option<i64>,
    pub last_pull_ok_ms: Option<i64>,
    pub last_pull_error: Option<String>,
    /// How long the last pull took, successful or not. Absent in registry
    /// files written before it existed.
    #[serde(default)]
    pub last_pull_duration_ms: Option<u64>,
    pub bytes_pulled: u64,
    pub backlog: u64,
    /// Agent clock minus master clock, from the last exchange.
    pub clock_skew_ms: Option<i64>,
}

impl AgentRecord {
    fn new(
        name: Option<String>,
        control: SocketAddr,
        data_port: u16,
        origin: Origin,
    ) -> AgentRecord {
        AgentRecord {
            name,
            control,
            data_port,
            origin,
            state: State::NeverSeen,
            state_since_ms: None,
            last_seen_ms: None,
            last_heartbeat_ms: None,
            last_pull_ms: None,
            last_pull_ok_ms: None,
            last_pull_error: None,
            last_pull_duration_ms: None,
            bytes_pulled: 0,
            backlog: 0,
            clock_skew_ms: None,
        }
    }

    /// Name for logs and tables: the host name, or the address until known.
    pub(crate) fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.control.to_string())
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RegistryFile {
    written_ms: i64,
    agents: Vec<AgentRecord>,
}

/// Upper bounds, in seconds, of the pull-duration histogram's buckets.
pub(crate) const PULL_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A heartbeat claiming another host's address from elsewhere (see
/// `Registry::heartbeat`): answered with this message, and noted.
#[derive(Debug, thiserror::Error)]
#[error("{name} says it listens on {control}, {owner}'s address, from {peer_ip}: refused")]
pub(crate) struct ClaimRefused {
    name: String,
    control: SocketAddr,
    /// The label of the host whose address it is.
    owner: String,
    peer_ip: IpAddr,
}

/// Every pull since the master started (kept in memory only: `/metrics`
/// counters may start over with the process).
#[derive(Debug, Clone, Default)]
pub struct PullStats {
    pub ok: u64,
    pub failed: u64,
    /// Pulls that took at most each bound of `PULL_BUCKETS` (cumulative).
    pub buckets: [u64; PULL_BUCKETS.len()],
    pub seconds_sum: f64,
    /// Failed pulls by host and kind of failure (`/metrics`).
    pub failures: BTreeMap<(String, FailureKind), u64>,
}

impl PullStats {
    pub(crate) fn record(&mut self, ok: bool, elapsed: Duration) {
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        let secs = elapsed.as_secs_f64();
        self.seconds_sum += secs;
        for (bound, n) in PULL_BUCKETS.iter().zip(self.buckets.iter_mut()) {
            if secs <= *bound {
                *n += 1;
            }
        }
    }
}

/// The registry file as written last; one torn by a crash after a write
/// without fsync (module doc) is kept aside and the start is from empty.
fn read_registry_file(path: &Path) -> io::Result<RegistryFile> {
    match storage::read_json(path) {
        Ok(file) => Ok(file.unwrap_or_default()),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            let bad = path.with_file_name("registry.json.bad");
            log::warn!(
                "{e}; keeping it as {} and starting from the static agent list \
                 (registered agents return with their next heartbeat)",
                bad.display()
            );
            std::fs::rename(path, &bad).map_err(|e| storage::with_path(e, path))?;
            Ok(RegistryFile::default())
        }
        Err(e) => Err(e),
    }
}

/// The configured agents: an entry at a configured address becomes
/// static (named as configured, if so); the others are added.
fn add_statics(agents: &mut Vec<AgentRecord>, statics: &[StaticAgent], default_data_port: u16) {
    for s in statics {
        match agents.iter_mut().find(|a| a.control == s.control) {
            Some(a) => {
                a.origin = Origin::Static;
                if s.name.is_some() {
                    a.name = s.name.clone();
                }
            }
            None => agents.push(AgentRecord::new(
                s.name.clone(),
                s.control,
                default_data_port,
                Origin::Static,
            )),
        }
    }
}

/// What of a record is worth an fsync (module doc): who and where.
type Identity = Vec<(Option<String>, SocketAddr, u16, Origin)>;

fn identity(agents: &[AgentRecord]) -> Identity {
    agents
        .iter()
        .map(|a| (a.name.clone(), a.control, a.data_port, a.origin))
        .collect()
}

/// How often the registry file was written since start, and how many of
/// those writes were fsynced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WriteCounts {
    pub(crate) writes: u64,
    pub(crate) durable: u64,
}

pub struct Registry {
    path: PathBuf,
    events: EventLog,
    agents: Mutex<Vec<AgentRecord>>,
    pulls: Mutex<PullStats>,
    dirty: AtomicBool,
    /// The identity last written durably; `None` forces the next write to
    /// be durable. Locked only by `flush`.
    durable_identity: Mutex<Option<Identity>>,
    writes: AtomicU64,
    durable_writes: AtomicU64,
    /// Data port assumed for an agent until it says otherwise.
    default_data_port: u16,
}

/// The registry's writer lock, `log/.registry.lock` (a leading dot: no
/// host name can be it), held with `flock` by the master daemon for as
/// long as it runs, and by `pihealth pull` while it records its pulls when
/// no daemon runs. So `pull` never writes the registry under a running
/// daemon (whose next write would undo it; the daemon records its own
/// pulls), and `status` can tell whether a daemon runs here.
pub(crate) fn writer_lock_path(log_dir: &Path) -> PathBuf {
    log_dir.join(".registry.lock")
}

/// Take the writer lock without waiting: `None` if someone holds it.
/// Creates `log_dir`.
pub(crate) fn try_writer_lock(log_dir: &Path) -> io::Result<Option<std::fs::File>> {
    std::fs::create_dir_all(log_dir).map_err(|e| storage::with_path(e, log_dir))?;
    let path = writer_lock_path(log_dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| storage::with_path(e, &path))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(storage::with_path(e, &path)),
    }
}

/// Whether a master daemon holds the writer lock of `log_dir` now;
/// `None` when it cannot be told (no lock file: no daemon of this version
/// has run here). Creates nothing.
pub(crate) fn daemon_running(log_dir: &Path) -> Option<bool> {
    let file = std::fs::File::open(writer_lock_path(log_dir)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => Some(false),
        Err(std::fs::TryLockError::WouldBlock) => Some(true),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Registry {
    /// Load `log/.master/registry.json` and merge in the static agent list.
    /// The caller has run `MasterFiles::prepare` (moving older versions'
    /// files); a test may not have, so the directory is made here too.
    pub fn open(
        log_dir: &Path,
        statics: &[StaticAgent],
        default_data_port: u16,
    ) -> io::Result<Registry> {
        let files = MasterFiles::new(log_dir);
        std::fs::create_dir_all(files.dir()).map_err(|e| storage::with_path(e, files.dir()))?;
        let path = files.registry();
        let mut agents = read_registry_file(&path)?.agents;
        add_statics(&mut agents, statics, default_data_port);
        let registry = Registry {
            path,
            events: EventLog::open(&files.events())?,
            agents: Mutex::new(agents),
            pulls: Mutex::new(PullStats::default()),
            dirty: AtomicBool::new(true),
            // What was read is on disk; whether durably is unknown (the
            // last write may not have been fsynced), so the first write
            // is fsynced once either way.
            durable_identity: Mutex::new(None),
            writes: AtomicU64::new(0),
            durable_writes: AtomicU64::new(0),
            default_data_port,
        };
        // Twins kept by versions before merge_twins existed.
        {
            let mut agents = registry.lock();
            let mut i = 0;
            while i < agents.len() {
                if agents[i].origin == Origin::Static && agents[i].name.is_some() {
                    i = registry.merge_twins(&mut agents, i);
                }
                i += 1;
            }
        }
        Ok(registry)
    }

    /// Read the registry file without taking part in the daemon's life (for
    /// `status` and `pull`).
    pub fn read_snapshot(log_dir: &Path) -> io::Result<(Option<i64>, Vec<AgentRecord>)> {
        let file: Option<RegistryFile> =
            storage::read_json(&MasterFiles::find(log_dir).registry())?;
        Ok(match file {
            Some(f) => (Some(f.written_ms), f.agents),
            None => (None, Vec::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<AgentRecord>> {
        crate::sync::lock(&self.agents)
    }

    /// Have the next `flush` write the file (also used to keep its
    /// `written_ms` fresh, which tells `pihealth status` the master runs).
    pub(crate) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }

    pub(crate) fn snapshot(&self) -> Vec<AgentRecord> {
        self.lock().clone()
    }

    /// Append one line to `events.log` (and the program log); a failure
    /// is logged by the writer and does not stop the state change.
    pub(crate) fn event(&self, text: &str) {
        let _ = self.events.record(log::Level::Info, text);
    }

    fn set_state(&self, a: &mut AgentRecord, state: State, why: &str) {
        if a.state != state {
            self.event(&format!(
                "{} {} {} ({why})",
                a.label(),
                a.control,
                state.as_str()
            ));
            a.state = state;
            a.state_since_ms = Some(now_ms());
            self.mark_dirty();
        }
    }

    fn seen(&self, a: &mut AgentRecord, why: &str) {
        a.last_seen_ms = Some(now_ms());
        self.set_state(a, State::Up, why);
        self.mark_dirty();
    }

    /// A registration or heartbeat from host `name` (the connection proved
    /// its key), coming from `peer_ip` and saying it listens on `control`.
    ///
    /// An address is the agent's own word, so it claims another host's
    /// address, or names an entry listed by address only, only when it
    /// really connects from that address: otherwise one host's key could
    /// take over another host's entry (its pulls would then fail, or be
    /// credited to the wrong host). Refused claims are an error to answer.
    pub(crate) fn heartbeat(
        &self,
        name: &str,
        control: SocketAddr,
        peer_ip: IpAddr,
        agent_time_ms: i64,
        backlog: Option<u64>,
        data_port: Option<u16>,
    ) -> Result<(), ClaimRefused> {
        let mut agents = self.lock();
        let from_there = peer_ip == control.ip();
        if let Some(other) = agents
            .iter()
            .find(|a| a.control == control && a.name.as_deref() != Some(name))
        {
            if !from_there && other.name.is_none() {
                // Listed by address only: a probe or pull there names it
                // (that proves the key at that address); until then a
                // heartbeat from elsewhere is answered but not recorded.
                log::debug!(
                    "{name} says it listens on {control}, listed by address only: \
                     not recorded until a probe there names it"
                );
                return Ok(());
            }
            if !from_there {
                let refused = ClaimRefused {
                    name: name.to_string(),
                    control,
                    owner: other.label(),
                    peer_ip,
                };
                self.event(&refused.to_string());
                return Err(refused);
            }
        }
        let index = self.entry_for(&mut agents, name, control, from_there, data_port);
        let a = &mut agents[index];
        self.follow_address(a, name, control);
        if a.name.is_none() || (a.name.as_deref() != Some(name) && a.origin == Origin::Registered) {
            a.name = Some(name.to_string());
        }
        if let Some(p) = data_port {
            a.data_port = p;
        }
        if let Some(b) = backlog {
            a.backlog = b;
        }
        a.clock_skew_ms = Some(agent_time_ms.saturating_sub(now_ms()));
        a.last_heartbeat_ms = Some(now_ms());
        self.seen(a, "heartbeat");
        Ok(())
    }

    /// The entry a heartbeat from `name` belongs to, added if none: a name
    /// is the agent's identity; an address only for unnamed entries, and
    /// only from that address.
    fn entry_for(
        &self,
        agents: &mut Vec<AgentRecord>,
        name: &str,
        control: SocketAddr,
        from_there: bool,
        data_port: Option<u16>,
    ) -> usize {
        let index = agents
            .iter()
            .position(|a| a.name.as_deref() == Some(name))
            .or_else(|| {
                agents
                    .iter()
                    .position(|a| from_there && a.control == control && a.name.is_none())
            });
        index.unwrap_or_else(|| {
            self.event(&format!("{name} {control} registered"));
            agents.push(AgentRecord::new(
                Some(name.to_string()),
                control,
                data_port.unwrap_or(self.default_data_port),
                Origin::Registered,
            ));
            agents.len() - 1
        })
    }

    /// A registered agent moves to the address it says; a configured one
    /// stays where the operator put it.
    fn follow_address(&self, a: &mut AgentRecord, name: &str, control: SocketAddr) {
        if a.control == control {
            return;
        }
        if a.origin == Origin::Static {
            // The configured address is the operator's word (it may be
            // a proxy or a NAT address the agent cannot know).
            log::debug!(
                "{name} says it listens on {control}; keeping the configured {}",
                a.control
            );
        } else {
            self.event(&format!("{name} moved from {} to {control}", a.control));
            a.control = control;
        }
    }

    /// A probe or pull of the agent at `control` succeeded.
    pub(crate) fn contact(&self, control: SocketAddr, info: &AgentInfo, skew_ms: i64, what: &str) {
        let mut agents = self.lock();
        let Some(mut index) = agents.iter().position(|a| a.control == control) else {
            return;
        };
        if agents[index].name.is_none() {
            match crate::names::check_host_name(&info.name) {
                Ok(()) => agents[index].name = Some(info.name.clone()),
                Err(why) => {
                    log::warn!(
                        "agent at {control} calls itself {:?}: refused ({why})",
                        info.name
                    );
                    return;
                }
            }
            index = self.merge_twins(&mut agents, index);
        }
        {
            let a = &mut agents[index];
            a.data_port = info.data_port;
            a.backlog = info.backlog;
            a.clock_skew_ms = Some(skew_ms);
            self.seen(a, what);
        }
    }

    /// The record at `index` has just learned its name. An agent configured
    /// by address alone that registers from another address (behind NAT,
    /// or listening on another interface than the configured one) already
    /// has a registered record under that name: one agent, two records,
    /// one of them pulled at an address that may not reach it and marked
    /// down for ever. Keep one: the configured one if there is one (the
    /// operator's word), else the one just contacted. Returns where the
    /// record at `index` is now.
    fn merge_twins(&self, agents: &mut Vec<AgentRecord>, index: usize) -> usize {
        let name = agents[index].name.clone();
        // Two configured entries are both the operator's word: left alone.
        let either_registered = |j: usize| {
            agents[j].origin == Origin::Registered || agents[index].origin == Origin::Registered
        };
        let Some(twin) = (0..agents.len()).find(|&j| {
            j != index && name.is_some() && agents[j].name == name && either_registered(j)
        }) else {
            return index;
        };
        let (keep, drop) =
            if agents[twin].origin == Origin::Static && agents[index].origin != Origin::Static {
                (twin, index)
            } else {
                (index, twin)
            };
        let gone = agents.remove(drop);
        let keep = if drop < keep { keep - 1 } else { keep };
        let kept = &mut agents[keep];
        self.event(&format!(
            "{} {} is the agent at {}; one record kept",
            kept.label(),
            gone.control,
            kept.control
        ));
        // What the dropped record heard (heartbeats arrive there) is news
        // about the same agent.
        kept.last_heartbeat_ms = kept.last_heartbeat_ms.max(gone.last_heartbeat_ms);
        kept.last_seen_ms = kept.last_seen_ms.max(gone.last_seen_ms);
        self.mark_dirty();
        keep
    }

    pub fn pull_finished(
        &self,
        control: SocketAddr,
        result: Result<u64, &PullError>,
        elapsed: Duration,
    ) {
        let mut agents = self.lock();
        let agent = agents.iter_mut().find(|a| a.control == control);
        {
            let mut stats = crate::sync::lock(&self.pulls);
            stats.record(result.is_ok(), elapsed);
            if let Err(e) = &result {
                let host = agent.as_ref().map_or(control.to_string(), |a| a.label());
                let kind = e.kind().unwrap_or(FailureKind::Network);
                *stats.failures.entry((host, kind)).or_default() += 1;
            }
        }
        if let Some(a) = agent {
            let now = now_ms();
            a.last_pull_ms = Some(now);
            a.last_pull_duration_ms = Some(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
            match result {
                Ok(bytes) => {
                    a.last_pull_ok_ms = Some(now);
                    a.bytes_pulled += bytes;
                    a.last_pull_error = None;
                }
                Err(e) => a.last_pull_error = Some(e.to_string()),
            }
            self.mark_dirty();
        }
    }

    pub fn pull_stats(&self) -> PullStats {
        crate::sync::lock(&self.pulls).clone()
    }

    /// Mark agents `down` whose last sign of life is older than `limit_ms`.
    pub(crate) fn check_liveness(&self, limit_ms: i64) {
        let now = now_ms();
        let mut agents = self.lock();
        for a in agents.iter_mut() {
            if a.state == State::Up && a.last_seen_ms.is_some_and(|t| now - t > limit_ms) {
                self.set_state(a, State::Down, "missed heartbeats");
            }
        }
    }

    /// Write the registry file if anything changed; fsynced only when the
    /// set of agents or their addresses changed (module doc).
    pub fn flush(&self) -> io::Result<()> {
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let file = RegistryFile {
            written_ms: now_ms(),
            agents: self.snapshot(),
        };
        let now = identity(&file.agents);
        let mut durable_identity = crate::sync::lock(&self.durable_identity);
        let durable = durable_identity.as_ref() != Some(&now);
        storage::write_json_atomic(&self.path, &file, durable)
            .inspect_err(|_| self.mark_dirty())?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        if durable {
            self.durable_writes.fetch_add(1, Ordering::Relaxed);
            *durable_identity = Some(now);
        }
        Ok(())
    }

    /// Registry file writes since start (reported when the master stops).
    pub(crate) fn write_counts(&self) -> WriteCounts {
        WriteCounts {
            writes: self.writes.load(Ordering::Relaxed),
            durable: self.durable_writes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> AgentInfo {
        AgentInfo {
            name: name.into(),
            time_ms: now_ms(),
            data_port: 8001,
            backlog: 0,
        }
    }

    fn names_and_addresses(r: &Registry) -> Vec<(Option<String>, String, Origin)> {
        r.snapshot()
            .into_iter()
            .map(|a| (a.name, a.control.to_string(), a.origin))
            .collect()
    }

    #[test]
    fn an_agent_configured_by_address_behind_nat_keeps_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let configured: SocketAddr = "203.0.113.5:8000".parse().unwrap();
        let statics = [StaticAgent {
            name: None,
            control: configured,
        }];
        let r = Registry::open(dir.path(), &statics, 8001).unwrap();
        // It registers from the address it knows before the first pull.
        let inside: SocketAddr = "10.0.0.7:8000".parse().unwrap();
        r.heartbeat("pi7", inside, inside.ip(), now_ms(), Some(0), Some(8001))
            .unwrap();
        assert_eq!(r.snapshot().len(), 2, "not yet known to be one agent");
        // The first pull at the configured address learns the name.
        r.contact(configured, &info("pi7"), 0, "pull");
        assert_eq!(
            names_and_addresses(&r),
            [(Some("pi7".into()), configured.to_string(), Origin::Static)]
        );
        let a = &r.snapshot()[0];
        assert!(
            a.last_heartbeat_ms.is_some(),
            "the twin's heartbeat is kept"
        );
        // Later heartbeats from inside find it by name.
        r.heartbeat("pi7", inside, inside.ip(), now_ms(), Some(0), Some(8001))
            .unwrap();
        assert_eq!(r.snapshot().len(), 1);
        assert_eq!(r.snapshot()[0].control, configured);
        let events = std::fs::read_to_string(dir.path().join(".master/events.log")).unwrap();
        assert!(
            events.contains("pi7 10.0.0.7:8000 is the agent at 203.0.113.5:8000; one record kept"),
            "{events}"
        );
        // A registry file written with both records (by an earlier version)
        // is mended on open.
        r.flush().unwrap();
        drop(r);
        let mut file: RegistryFile = storage::read_json(&dir.path().join(".master/registry.json"))
            .unwrap()
            .unwrap();
        let mut twin = file.agents[0].clone();
        twin.control = inside;
        twin.origin = Origin::Registered;
        file.agents.push(twin);
        storage::write_json_atomic(&dir.path().join(".master/registry.json"), &file, true).unwrap();
        let r = Registry::open(dir.path(), &statics, 8001).unwrap();
        assert_eq!(
            names_and_addresses(&r),
            [(Some("pi7".into()), configured.to_string(), Origin::Static)]
        );
    }

    #[test]
    fn two_configured_entries_with_one_name_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let a: SocketAddr = "192.0.2.1:8000".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:8000".parse().unwrap();
        let statics = [
            StaticAgent {
                name: None,
                control: a,
            },
            StaticAgent {
                name: None,
                control: b,
            },
        ];
        let r = Registry::open(dir.path(), &statics, 8001).unwrap();
        r.contact(a, &info("same"), 0, "pull");
        r.contact(b, &info("same"), 0, "pull");
        assert_eq!(r.snapshot().len(), 2);
    }

    /// Heartbeats and pulls change the file every second;
    /// only a new agent or a move is worth an fsync.
    #[test]
    fn only_a_changed_set_of_agents_is_written_durably() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path(), &[], 8001).unwrap();
        let pi1: SocketAddr = "192.0.2.1:8000".parse().unwrap();
        r.flush().unwrap();
        assert_eq!(
            r.write_counts(),
            WriteCounts {
                writes: 1,
                durable: 1
            }
        );
        r.heartbeat("pi1", pi1, pi1.ip(), now_ms(), Some(0), Some(8001))
            .unwrap();
        r.flush().unwrap();
        assert_eq!(
            r.write_counts(),
            WriteCounts {
                writes: 2,
                durable: 2
            }
        );
        for _ in 0..10 {
            r.heartbeat("pi1", pi1, pi1.ip(), now_ms(), Some(5), Some(8001))
                .unwrap();
            r.contact(pi1, &info("pi1"), 0, "pull");
            r.flush().unwrap();
        }
        assert_eq!(
            r.write_counts(),
            WriteCounts {
                writes: 12,
                durable: 2
            }
        );
        // Nothing changed: nothing written.
        r.flush().unwrap();
        assert_eq!(r.write_counts().writes, 12);
        // A move is durable again.
        let moved: SocketAddr = "192.0.2.9:8000".parse().unwrap();
        r.heartbeat("pi1", moved, moved.ip(), now_ms(), None, None)
            .unwrap();
        r.flush().unwrap();
        assert_eq!(
            r.write_counts(),
            WriteCounts {
                writes: 13,
                durable: 3
            }
        );
        let (_, agents) = Registry::read_snapshot(dir.path()).unwrap();
        assert_eq!(agents[0].control.to_string(), "192.0.2.9:8000");
    }

    /// A write without fsync may come back empty after a power cut: the
    /// master still starts, from the static list.
    #[test]
    fn a_torn_registry_file_is_set_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let files = MasterFiles::new(dir.path());
        std::fs::create_dir_all(files.dir()).unwrap();
        std::fs::write(files.registry(), b"").unwrap();
        let statics = [StaticAgent {
            name: Some("pi1".into()),
            control: "192.0.2.1:8000".parse().unwrap(),
        }];
        let r = Registry::open(dir.path(), &statics, 8001).unwrap();
        assert_eq!(r.snapshot().len(), 1);
        assert!(files.dir().join("registry.json.bad").exists());
    }

    /// Review finding: a host key claimed another host's address. Now an
    /// address held by another host, or an entry listed by address only,
    /// is taken only by a host that connects from that address.
    #[test]
    fn a_host_cannot_take_another_hosts_address_from_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let x: SocketAddr = "10.0.0.12:8000".parse().unwrap();
        let elsewhere: std::net::IpAddr = "10.0.0.11".parse().unwrap();
        let statics = [StaticAgent {
            name: None,
            control: x,
        }];
        let r = Registry::open(dir.path(), &statics, 8001).unwrap();
        // pi1, from its own address, can neither name the entry listed
        // for X nor add one of its own there (answered, not recorded).
        r.heartbeat("pi1", x, elsewhere, now_ms(), None, None)
            .unwrap();
        assert_eq!(
            names_and_addresses(&r),
            [(None, x.to_string(), Origin::Static)]
        );
        // pi2 at X does.
        r.heartbeat("pi2", x, x.ip(), now_ms(), None, None).unwrap();
        assert!(names_and_addresses(&r).contains(&(
            Some("pi2".into()),
            x.to_string(),
            Origin::Static
        )));
        // And pi1 cannot move onto pi2's address from elsewhere.
        let e = r
            .heartbeat("pi1", x, elsewhere, now_ms(), None, None)
            .unwrap_err();
        assert!(e.to_string().contains("pi2"), "{e}");
    }
}
