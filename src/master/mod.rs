//! The master: registry and liveness, the pull scheduler, the per-host
//! archive, the alarm receiver, and the status page and metrics (`http`).
//! Its own files live in `log/.master/` (`files`), out of reach of host
//! names and of an agent sharing the directory; `events` is the one writer
//! of its `events.log`.
//!
//! Threads: one accept thread per listening port (registration 8080,
//! alarms 8081, HTTP 8082), one waiting room for connections that have not
//! spoken yet (`net::WaitingRoom`), one forwarder per Alertmanager
//! (`alertmanager`) and the scheduler (`scheduler`, which also raises the
//! `host` alarms, `host_alarms`), handing
//! work to three fixed `threadpool::ThreadPool`s: `inbound_workers` for the
//! registration and alarm ports, `http_workers` for the status page, and
//! `workers` for outbound pulls and probes. Separate pools, so that a flood
//! on a port cannot delay a pull and a dead agent address cannot delay a
//! heartbeat. Every socket has timeouts and every handshake a deadline, so
//! no job holds a worker forever; addresses that have not proved the key
//! hold at most half of the inbound pool (`net::UntrustedLane`) and are
//! capped per address across all ports (`net::PeerBook`).
pub mod alarm_command;
pub mod alarms;
pub mod alertmanager;
pub mod archive;
pub mod events;
pub mod files;
pub mod host_alarms;
pub mod oneshot;
pub mod pull;
pub mod registry;
pub mod scheduler;
pub mod silences;

pub use oneshot::pull_once;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use threadpool::ThreadPool;

use crate::config::MasterConfig;
use crate::net::{self, AcceptLimits, AcceptLoop};
use crate::protocol::{Connection, Credentials, Key, Message, Purpose, RefusalLog};
use crate::web::http;
use alarms::AlarmLog;
use pull::PullContext;
use registry::Registry;

/// How long in-flight pulls may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Most connections waiting to say their first bytes, all ports together
/// (each is one file descriptor for at most `io_timeout`).
const MAX_WAITING_TO_SPEAK: usize = 4096;

/// What the master authenticates with: any host's key, derived from the
/// fleet keys, except revoked hosts'.
pub(crate) fn fleet_credentials(config: &MasterConfig, keys: Vec<Key>) -> Credentials {
    Credentials::Fleet {
        keys,
        revoked: config.revoked_hosts.clone(),
    }
}

pub(crate) fn pull_context(config: &MasterConfig, keys: Vec<Key>) -> PullContext {
    PullContext {
        credentials: fleet_credentials(config, keys),
        log_root: config.log_dir.clone(),
        backup_root: config.backup_dir.clone(),
        rotate_size: config.rotate_size.0,
        key_memory: Default::default(),
        connect_timeout: config.connect_timeout.0,
        io_timeout: config.io_timeout.0,
        progress: None,
    }
}

/// Serve one connection on the registration/heartbeat port.
/// The whole exchange stays under the accept deadline: it is one message.
fn handle_register(
    registry: &Registry,
    credentials: &Credentials,
    refusals: &RefusalLog,
    stream: net::TimedStream,
    peer: SocketAddr,
) {
    let mut conn = match Connection::server(stream, credentials, Purpose::Register) {
        Ok(c) => c,
        Err(e) => {
            refusals.refused(format_args!("registration connection"), peer, &e);
            return;
        }
    };
    let result: io::Result<()> = (|| {
        let message = conn.recv()?;
        // Proved the key only now (a recorded first handshake message can
        // be replayed; no frame after it decrypts without the key): the
        // address is trusted past the handshake cap (many agents behind
        // one NAT heartbeat from one address).
        refusals.accepted(format_args!("registration connection"), peer);
        conn.stream().set_deadline(None)?;
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
        if name != conn.host() {
            // A host registers, heartbeats and moves only itself.
            let why = format!(
                "registration for host {name:?} on a connection authenticated as {:?}",
                conn.host()
            );
            let _ = conn.send(&Message::Error(why.clone()));
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
        }
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
        if let Err(why) = registry.heartbeat(&name, control, peer.ip(), time_ms, backlog, data_port)
        {
            let _ = conn.send(&Message::Error(why.clone()));
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
        }
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
    let checked = (if name == conn.host() {
        crate::names::check_host_name(&name).map_err(String::from)
    } else {
        Err(format!(
            "report for host {name:?} on a connection authenticated as {:?}",
            conn.host()
        ))
    })
    .map_err(|why| format!("host name refused: {why}"))
    .and_then(|()| {
        crate::names::check_type_name(&log_type).map_err(|why| format!("type name refused: {why}"))
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

/// Run the master daemon until `stop` is set.
pub fn run(config: &MasterConfig, config_path: &Path, stop: Arc<AtomicBool>) -> Result<(), String> {
    if let Err(e) = net::raise_open_files_limit() {
        log::warn!("cannot raise the limit on open files: {e}");
    }
    let keys = Key::load_ring(&config.key_file, &config.previous_key_files)?;
    let statics = config
        .static_agents(config_path)
        .map_err(|e| e.to_string())?;
    // Listen first: a port in use (another master, or this one still
    // stopping) ends the start before any directory or file is made.
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
    // One daemon per log directory; `pihealth pull` holds the lock only
    // for the moment it records its pulls, so wait that out.
    let _writer_lock = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match registry::try_writer_lock(&config.log_dir)
                .map_err(|e| format!("registry lock: {e}"))?
            {
                Some(lock) => break lock,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                None => {
                    return Err(format!(
                        "another master daemon runs with log_dir {} (it holds {})",
                        config.log_dir.display(),
                        registry::writer_lock_path(&config.log_dir).display()
                    ))
                }
            }
        }
    };
    // First: older versions kept their files in `log/` itself.
    files::MasterFiles::prepare(&config.log_dir).map_err(|e| format!("log_dir: {e}"))?;
    let registry = Arc::new(
        Registry::open(&config.log_dir, &statics, config.agent_data_port)
            .map_err(|e| format!("registry: {e}"))?,
    );
    let alarm_log = Arc::new(
        AlarmLog::open(
            &config.log_dir,
            alarms::CommandSettings {
                command: config.alarm_command.clone(),
                timeout: config.alarm_command_timeout.0,
                workers: config.alarm_command_workers,
                queue: config.alarm_command_queue,
            },
        )
        .map_err(|e| format!("alarms.log: {e}"))?,
    );
    let targets = config
        .alertmanager_targets(config_path)
        .map_err(|e| e.to_string())?;
    if !targets.is_empty() {
        let wake = alertmanager::start(
            &config.log_dir,
            &targets,
            &alertmanager::Settings {
                resend: config.alertmanager_resend.0,
                connect_timeout: config.connect_timeout.0,
                io_timeout: config.io_timeout.0,
            },
            stop.clone(),
        )
        .map_err(|e| format!("alertmanagers: {e}"))?;
        alarm_log.on_stored(wake);
    }
    std::fs::create_dir_all(&config.backup_dir)
        .map_err(|e| format!("{}: {e}", config.backup_dir.display()))?;
    let (outbound, inbound, http_pool) = (
        ThreadPool::with_name("master-outbound".into(), config.workers),
        ThreadPool::with_name("master-inbound".into(), config.inbound_workers),
        ThreadPool::with_name("master-http".into(), config.http_workers),
    );
    let io_timeout = config.io_timeout.0;
    let room =
        net::WaitingRoom::start("master", MAX_WAITING_TO_SPEAK).map_err(|e| e.to_string())?;
    let peers = net::PeerBook::default();
    // Agents may share an address (NAT), so the cap on unfinished
    // handshakes per address is higher than on an agent. A fleet starting
    // at once registers from hundreds of new addresses: they go through
    // the lane in order, each in a few milliseconds.
    let limits = AcceptLimits {
        io_timeout,
        max_queued: config.inbound_workers * 64,
        max_handshakes_per_address: config.max_handshakes_per_address,
        untrusted_lane: Some(net::UntrustedLane::new(
            inbound.clone(),
            config.inbound_workers / 2,
            config.inbound_workers * 64,
        )),
        peers: peers.clone(),
        waiting_room: Some((room.clone(), net::Readiness::AnyBytes)),
        allowed: Vec::new(),
    };

    let credentials = Arc::new(fleet_credentials(config, keys.clone()));
    let (r, k) = (registry.clone(), credentials.clone());
    let refusals = Arc::new(RefusalLog::default());
    let mut register = AcceptLoop::start_with(
        "registration",
        register_listener,
        inbound.clone(),
        limits.clone(),
        Arc::new(move |stream, peer| handle_register(&r, &k, &refusals, stream, peer)),
    )
    .map_err(|e| e.to_string())?;
    let (a, k) = (alarm_log.clone(), credentials.clone());
    let mut alarm = AcceptLoop::start_with(
        "alarms",
        alarm_listener,
        inbound.clone(),
        limits,
        Arc::new(move |stream, peer| a.handle(stream, peer, &k)),
    )
    .map_err(|e| e.to_string())?;
    let mut web = match http_listener {
        Some(listener) => {
            let h = Arc::new(http::Http::new(config, registry.clone()));
            // No key on this port: every request waits in the room for its
            // whole head, then takes an HTTP worker only for as long as the
            // answer takes; one address holds at most the handshake cap.
            let limits = AcceptLimits {
                io_timeout,
                max_queued: config.http_workers * 64,
                max_handshakes_per_address: config.max_handshakes_per_address,
                untrusted_lane: None,
                peers: peers.clone(),
                waiting_room: Some((room.clone(), net::Readiness::HttpHead)),
                allowed: Vec::new(),
            };
            Some(
                AcceptLoop::start_with(
                    "http",
                    listener,
                    http_pool.clone(),
                    limits,
                    Arc::new(move |stream, peer| h.handle(stream, peer)),
                )
                .map_err(|e| e.to_string())?,
            )
        }
        None => None,
    };

    log::info!(
        "master: registration on {}, alarms on {}, status page and metrics on {}, {} static agent(s), {} outbound + {} inbound + {} http worker(s)",
        register.local_addr(),
        alarm.local_addr(),
        web.as_ref()
            .map_or("(off)".to_string(), |w| format!("http://{}/", w.local_addr())),
        statics.len(),
        config.workers,
        config.inbound_workers,
        config.http_workers
    );
    let ctx = pull_context(config, keys);
    let host_alarms = host_alarms::HostAlarmRaiser::new(
        alarm_log.clone(),
        config.heartbeat_interval.0 * config.heartbeat_misses,
        config.host_recovery_hold.0,
    )
    .map_err(|e| format!("alarms.log: {e}"))?;
    scheduler::Scheduler {
        config,
        registry: &registry,
        ctx: &ctx,
        pool: &outbound,
        host_alarms: Some(&host_alarms),
    }
    .run(&stop);

    log::info!("master: stopping");
    register.stop();
    alarm.stop();
    if let Some(w) = &mut web {
        w.stop();
    }
    room.stop();
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let drained = [&outbound, &inbound, &http_pool]
        .iter()
        .all(|pool| net::drain_pool(pool, deadline.saturating_duration_since(Instant::now())));
    if !drained {
        log::warn!("master: pulls still running after {SHUTDOWN_GRACE:?}; leaving them (nothing unacknowledged is lost)");
    }
    if let Err(e) = registry.flush() {
        log::error!("cannot write the registry: {e}");
    }
    let counts = registry.write_counts();
    log::info!(
        "master: registry.json written {} times since start, {} of them with fsync",
        counts.writes,
        counts.durable
    );
    log::info!("master: stopped");
    Ok(())
}
