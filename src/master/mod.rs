//! The master: registry and liveness, the pull scheduler, the per-host
//! archive, the alarm receiver, and the status page and metrics (`http`).
//!
//! Threads: one accept thread per listening port (registration 8080,
//! alarms 8081, HTTP 8082) and one scheduler thread, all handing work to
//! one fixed `threadpool::ThreadPool` of `workers` threads. Every socket
//! has timeouts, so no job holds a worker forever.
pub mod alarm_summary;
pub mod alarms;
pub mod archive;
pub mod exposition;
pub mod http;
pub mod metrics;
pub mod oneshot;
pub mod page;
pub mod pull;
pub mod registry;
pub mod samples;

pub use oneshot::pull_once;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use threadpool::ThreadPool;

use crate::config::MasterConfig;
use crate::net::{self, AcceptLimits, AcceptLoop};
use crate::protocol::{Connection, Key, Message, Purpose};
use alarms::AlarmLog;
use pull::{PullContext, PullError};
use registry::Registry;

/// How long in-flight pulls may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The registry file is rewritten at least this often, so its age shows
/// whether the master is running (see `pihealth status`).
const REGISTRY_REFRESH: Duration = Duration::from_secs(10);
/// Scheduler tick: liveness is checked this often.
const TICK: Duration = Duration::from_millis(100);

pub(crate) fn pull_context(config: &MasterConfig, keys: Vec<Key>) -> PullContext {
    PullContext {
        keys,
        log_root: config.log_dir.clone(),
        backup_root: config.backup_dir.clone(),
        rotate_size: config.rotate_size.0,
        connect_timeout: config.connect_timeout.0,
        io_timeout: config.io_timeout.0,
        progress: None,
    }
}

/// Serve one connection on the registration/heartbeat port.
/// The whole exchange stays under the accept deadline: it is one message.
fn handle_register(registry: &Registry, keys: &[Key], stream: net::TimedStream, peer: SocketAddr) {
    let mut conn = match Connection::server(stream, keys, Purpose::Register) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("registration connection from {peer} refused: {e}");
            return;
        }
    };
    // Proved the key: its address is trusted past the handshake cap (many
    // agents behind one NAT heartbeat from one address). The exchange is
    // one message, still bounded by the I/O timeout.
    if let Err(e) = conn.stream().set_deadline(None) {
        log::debug!("registration connection from {peer}: {e}");
        return;
    }
    let result: io::Result<()> = (|| {
        let message = conn.recv()?;
        if let Message::Lost { .. } = message {
            return note_lost(registry, &mut conn, message);
        }
        let (name, control_ip, control_port, time_ms, backlog, data_port, first) = match message {
            Message::Register {
                name,
                control_ip,
                control_port,
                data_port,
                time_ms,
            } => (
                name,
                control_ip,
                control_port,
                time_ms,
                None,
                Some(data_port),
                true,
            ),
            Message::Heartbeat {
                name,
                control_ip,
                control_port,
                time_ms,
                backlog,
            } => (
                name,
                control_ip,
                control_port,
                time_ms,
                Some(backlog),
                None,
                false,
            ),
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected {}", other.kind()),
                ))
            }
        };
        if let Err(why) = crate::names::check_host_name(&name) {
            let _ = conn.send(&Message::Error(format!("host name refused: {why}")));
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("host name {name:?} refused: {why}"),
            ));
        }
        // The agent's own word for its listening address, else where it came from.
        let ip = control_ip.parse().unwrap_or(peer.ip());
        let control = SocketAddr::new(ip, control_port);
        if first {
            log::info!("{name}: registration from {control}");
        }
        registry.heartbeat(&name, control, time_ms, backlog, data_port);
        conn.send(&Message::Welcome {
            time_ms: registry::now_ms(),
        })
    })();
    if let Err(e) = result {
        log::warn!("registration connection from {peer}: {e}");
    }
}

/// An agent's report of output it could not store (its disk was full;
/// `crate::agent::lost`): noted in `events.log` through the registry's
/// writer, then answered; an agent that gets no answer reports again, so a
/// master killed in between notes it twice, never not at all. The report
/// is a note for the operator: the loss itself is also in the host's log
/// (the agent's `pihealth lost` line) and in `alarms.log`.
fn note_lost(
    registry: &Registry,
    conn: &mut Connection<net::TimedStream>,
    message: Message,
) -> io::Result<()> {
    let Message::Lost {
        name,
        log_type,
        runs,
        bytes,
        first,
        last,
    } = message
    else {
        return Ok(());
    };
    let checked = crate::names::check_host_name(&name)
        .map_err(|why| format!("host name refused: {why}"))
        .and_then(|()| {
            crate::names::check_type_name(&log_type)
                .map_err(|why| format!("type name refused: {why}"))
        })
        .and_then(|()| {
            [&first, &last]
                .iter()
                .all(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
                .then_some(())
                .ok_or_else(|| "times are not RFC 3339".to_string())
        });
    if let Err(why) = checked {
        let _ = conn.send(&Message::Error(why.clone()));
        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
    }
    registry.event(&format!(
        "{name} {log_type} lost {runs} runs ({bytes} bytes) of output the agent could not store, from {first} to {last}"
    ));
    conn.send(&Message::Welcome {
        time_ms: registry::now_ms(),
    })
}

/// Clears a busy flag when dropped, so a job that panics still frees its agent.
struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Per-agent bookkeeping of the scheduler (not persisted).
struct Slot {
    next_pull: Instant,
    next_probe: Instant,
    pulling: Arc<AtomicBool>,
    probing: Arc<AtomicBool>,
}

fn schedule(
    config: &MasterConfig,
    registry: &Arc<Registry>,
    ctx: &PullContext,
    pool: &ThreadPool,
    stop: &AtomicBool,
) {
    let mut slots: HashMap<SocketAddr, Slot> = HashMap::new();
    let limit_ms = (config.heartbeat_interval.0 * config.heartbeat_misses).as_millis() as i64;
    let mut last_flush = Instant::now();
    let mut last_written = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let agents = registry.snapshot();
        // Records merged away or moved to another address leave no slot
        // behind (a pull or probe still running keeps its own flag).
        if slots.len() > agents.len() {
            let current: HashSet<SocketAddr> = agents.iter().map(|a| a.control).collect();
            slots.retain(|control, _| current.contains(control));
        }
        for agent in agents {
            let slot = slots.entry(agent.control).or_insert_with(|| Slot {
                next_pull: now,
                next_probe: now,
                pulling: Arc::new(AtomicBool::new(false)),
                probing: Arc::new(AtomicBool::new(false)),
            });
            // Never two pulls of one agent at once.
            if now >= slot.next_pull && !slot.pulling.swap(true, Ordering::SeqCst) {
                slot.next_pull = now + config.pull_interval.0;
                let (flag, registry, ctx, control, name) = (
                    slot.pulling.clone(),
                    registry.clone(),
                    ctx.clone(),
                    agent.control,
                    agent.name.clone(),
                );
                let configured = if agent.origin == registry::Origin::Static {
                    name
                } else {
                    None
                };
                pool.execute(move || {
                    let _clear = ClearOnDrop(flag);
                    run_pull(&registry, &ctx, control, configured.as_deref());
                });
            }
            if now >= slot.next_probe && !slot.probing.swap(true, Ordering::SeqCst) {
                slot.next_probe = now + config.heartbeat_interval.0;
                let (flag, registry, ctx, control) = (
                    slot.probing.clone(),
                    registry.clone(),
                    ctx.clone(),
                    agent.control,
                );
                pool.execute(move || {
                    let _clear = ClearOnDrop(flag);
                    match pull::probe(&ctx, control) {
                        Ok((info, skew)) => registry.contact(control, &info, skew, "probe"),
                        Err(e) => log::debug!("probe of {control} failed: {e}"),
                    }
                });
            }
        }
        registry.check_liveness(limit_ms);
        if last_flush.elapsed() >= Duration::from_secs(1) {
            if last_written.elapsed() >= REGISTRY_REFRESH {
                registry.mark_dirty();
                last_written = Instant::now();
            }
            if let Err(e) = registry.flush() {
                log::error!("cannot write the registry: {e}");
            }
            last_flush = Instant::now();
        }
        net::sleep_unless(stop, TICK);
    }
}

fn run_pull(registry: &Registry, ctx: &PullContext, control: SocketAddr, name: Option<&str>) {
    let started = Instant::now();
    match pull::pull_agent(ctx, control, name) {
        Ok(report) => {
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
            log::warn!("pull of {control} failed: {e}");
            registry.pull_finished(control, Err(e.to_string()), started.elapsed());
        }
    }
}

/// Run the master daemon until `stop` is set.
pub fn run(config: &MasterConfig, config_path: &Path, stop: Arc<AtomicBool>) -> Result<(), String> {
    let keys = Key::load_ring(&config.key_file, &config.previous_key_files)?;
    let statics = config
        .static_agents(config_path)
        .map_err(|e| e.to_string())?;
    let registry = Arc::new(
        Registry::open(&config.log_dir, &statics, config.agent_data_port)
            .map_err(|e| format!("registry: {e}"))?,
    );
    let alarm_log = Arc::new(
        AlarmLog::open(
            &config.log_dir,
            config.alarm_command.clone(),
            config.alarm_command_timeout.0,
        )
        .map_err(|e| format!("alarms.log: {e}"))?,
    );
    std::fs::create_dir_all(&config.backup_dir)
        .map_err(|e| format!("{}: {e}", config.backup_dir.display()))?;
    let register_listener = net::bind(config.listen, "registration").map_err(|e| e.to_string())?;
    let alarm_listener = net::bind(config.alarm_listen, "alarms").map_err(|e| e.to_string())?;
    let http_listener = match config.http_listen {
        Some(addr) => Some(
            net::bind(
                addr,
                "http_listen: status page and metrics; null turns it off",
            )
            .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let pool = ThreadPool::with_name("master-worker".into(), config.workers);
    let io_timeout = config.io_timeout.0;
    let max_queued = config.workers * 64;
    // Agents may share an address (NAT), so the cap on unfinished
    // handshakes per address is higher than on an agent.
    let limits = AcceptLimits {
        io_timeout,
        max_queued,
        max_handshakes_per_address: config.max_handshakes_per_address,
        // A fleet starting at once registers from hundreds of new
        // addresses; they are not held back.
        untrusted_lane: None,
        trust: net::TrustBook::default(),
        allowed: Vec::new(),
    };

    let (r, k) = (registry.clone(), keys.clone());
    let mut register = AcceptLoop::start_with(
        "registration",
        register_listener,
        pool.clone(),
        limits.clone(),
        Arc::new(move |stream, peer| handle_register(&r, &k, stream, peer)),
    )
    .map_err(|e| e.to_string())?;
    let (a, k) = (alarm_log.clone(), keys.clone());
    let mut alarm = AcceptLoop::start_with(
        "alarms",
        alarm_listener,
        pool.clone(),
        limits.clone(),
        Arc::new(move |stream, peer| a.handle(stream, peer, &k)),
    )
    .map_err(|e| e.to_string())?;
    let mut web = match http_listener {
        Some(listener) => {
            let h = Arc::new(http::Http::new(config, registry.clone()));
            Some(
                AcceptLoop::start(
                    "http",
                    listener,
                    pool.clone(),
                    io_timeout,
                    max_queued,
                    Arc::new(move |stream, peer| h.handle(stream, peer)),
                )
                .map_err(|e| e.to_string())?,
            )
        }
        None => None,
    };

    log::info!(
        "master: registration on {}, alarms on {}, status page and metrics on {}, {} static agent(s), {} worker(s)",
        register.local_addr(),
        alarm.local_addr(),
        web.as_ref()
            .map_or("(off)".to_string(), |w| format!("http://{}/", w.local_addr())),
        statics.len(),
        config.workers
    );
    let ctx = pull_context(config, keys);
    schedule(config, &registry, &ctx, &pool, &stop);

    log::info!("master: stopping");
    register.stop();
    alarm.stop();
    if let Some(w) = &mut web {
        w.stop();
    }
    if !net::drain_pool(&pool, SHUTDOWN_GRACE) {
        log::warn!("master: pulls still running after {SHUTDOWN_GRACE:?}; leaving them (nothing unacknowledged is lost)");
    }
    if let Err(e) = registry.flush() {
        log::error!("cannot write the registry: {e}");
    }
    log::info!("master: stopped");
    Ok(())
}
