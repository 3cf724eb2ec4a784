//! The master: registry and liveness, the pull scheduler, the per-host
//! archive and the alarm receiver; it serves the status page and metrics
//! of `crate::web`. `run` starts them in named steps (`Master`).
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
pub(crate) mod alarm_command;
pub mod alarms;
pub(crate) mod alertmanager;
pub mod archive;
pub(crate) mod events;
pub(crate) mod files;
pub(crate) mod host_alarms;
pub(crate) mod oneshot;
pub mod pull;
pub mod registry;
pub(crate) mod scheduler;
pub(crate) mod silences;

pub use oneshot::{pull_once, PullOnceError};

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use threadpool::ThreadPool;

use crate::config::{MasterConfig, StaticAgent};
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

/// Serve one connection on the registration/heartbeat port: one message.
/// The handshake and that message stay under the accept deadline; once the
/// message decrypts (the key is proved) the deadline is lifted and only the
/// socket timeouts bound the answer.
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
    if let Err(e) = serve_register(registry, refusals, &mut conn, peer) {
        log::warn!("registration connection from {peer}: {e}");
    }
}

fn serve_register(
    registry: &Registry,
    refusals: &RefusalLog,
    conn: &mut Connection<net::TimedStream>,
    peer: SocketAddr,
) -> io::Result<()> {
    let message = conn.recv()?;
    // Proved the key only now (a recorded first handshake message can
    // be replayed; no frame after it decrypts without the key): the
    // address is trusted past the handshake cap (many agents behind
    // one NAT heartbeat from one address).
    refusals.accepted(format_args!("registration connection"), peer);
    conn.stream().set_deadline(None)?;
    if let Message::Lost { .. } = message {
        return note_lost(registry, conn, message);
    }
    let said = Announcement::from_message(message)?;
    let name = &said.name;
    check_announcer(conn, name)?;
    // The agent's own word for its listening address, else where it came from.
    let ip = said.control_ip.parse().unwrap_or(peer.ip());
    let control = SocketAddr::new(ip, said.control_port);
    if said.data_port.is_some() {
        log::info!("{name}: registration from {control}");
    }
    if let Err(e) = registry.heartbeat(
        name,
        control,
        peer.ip(),
        said.time_ms,
        said.backlog,
        said.data_port,
    ) {
        let why = e.to_string();
        return Err(refuse(
            conn,
            io::ErrorKind::PermissionDenied,
            why.clone(),
            why,
        ));
    }
    conn.send(&Message::Welcome {
        time_ms: registry::now_ms(),
    })
}

/// A host registers, heartbeats and moves only itself, under a name that
/// may become a directory name.
fn check_announcer(conn: &mut Connection<net::TimedStream>, name: &str) -> io::Result<()> {
    if name != conn.host() {
        let why = format!(
            "registration for host {name:?} on a connection authenticated as {:?}",
            conn.host()
        );
        return Err(refuse(
            conn,
            io::ErrorKind::PermissionDenied,
            why.clone(),
            why,
        ));
    }
    if let Err(why) = crate::names::check_host_name(name) {
        return Err(refuse(
            conn,
            io::ErrorKind::InvalidData,
            format!("host name refused: {why}"),
            format!("host name {name:?} refused: {why}"),
        ));
    }
    Ok(())
}

/// What a registration or a heartbeat says about its agent.
struct Announcement {
    name: String,
    control_ip: String,
    control_port: u16,
    time_ms: i64,
    /// Heartbeats only: log bytes waiting on the agent.
    backlog: Option<u64>,
    /// Registrations only (so also what tells one from a heartbeat).
    data_port: Option<u16>,
}

impl Announcement {
    fn from_message(message: Message) -> io::Result<Announcement> {
        match message {
            Message::Register {
                name,
                control_ip,
                control_port,
                data_port,
                time_ms,
            } => Ok(Announcement {
                name,
                control_ip,
                control_port,
                time_ms,
                backlog: None,
                data_port: Some(data_port),
            }),
            Message::Heartbeat {
                name,
                control_ip,
                control_port,
                time_ms,
                backlog,
            } => Ok(Announcement {
                name,
                control_ip,
                control_port,
                time_ms,
                backlog: Some(backlog),
                data_port: None,
            }),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected {}", other.kind()),
            )),
        }
    }
}

/// Tell the agent why it is refused (best effort) and return the error
/// to log.
fn refuse(
    conn: &mut Connection<net::TimedStream>,
    kind: io::ErrorKind,
    answer: String,
    logged: String,
) -> io::Error {
    let _ = conn.send(&Message::Error(answer));
    io::Error::new(kind, logged)
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
        crate::names::check_host_name(&name).map_err(|e| e.to_string())
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
        return Err(refuse(conn, io::ErrorKind::InvalidData, why.clone(), why));
    }
    registry.event(&format!(
        "{name} {log_type} lost {runs} runs ({bytes} bytes) of output the agent could not store, from {first} to {last}"
    ));
    conn.send(&Message::Welcome {
        time_ms: registry::now_ms(),
    })
}

/// Why the master daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key files (the message names the file).
    #[error(transparent)]
    Keys(#[from] crate::protocol::auth::KeyError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A port, the waiting room or an accept thread (the message names it).
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("registry lock: {0}")]
    Lock(io::Error),
    #[error("another master daemon runs with log_dir {} (it holds {})", .log_dir.display(), .lock.display())]
    AlreadyRunning { log_dir: PathBuf, lock: PathBuf },
    #[error("log_dir: {0}")]
    LogDir(io::Error),
    #[error("registry: {0}")]
    Registry(io::Error),
    #[error("alarms.log: {0}")]
    Alarms(io::Error),
    #[error("alertmanagers: {0}")]
    Alertmanagers(io::Error),
    #[error("{}: {source}", .path.display())]
    BackupDir { path: PathBuf, source: io::Error },
}

/// Run the master daemon until `stop` is set.
pub fn run(
    config: &MasterConfig,
    config_path: &Path,
    stop: Arc<AtomicBool>,
) -> Result<(), StartError> {
    if let Err(e) = net::raise_open_files_limit() {
        log::warn!("cannot raise the limit on open files: {e}");
    }
    let keys = Key::load_ring(&config.key_file, &config.previous_key_files)?;
    let statics = config.static_agents(config_path)?;
    // Listen first: a port in use (another master, or this one still
    // stopping) ends the start before any directory or file is made.
    let listeners = Listeners::bind(config)?;
    let _writer_lock = wait_for_writer_lock(&config.log_dir)?;
    let master = Master::open(config, config_path, keys, statics, &stop)?;
    let mut ports = master.serve(listeners)?;
    master.log_started(&ports);
    master.schedule(&stop)?;
    log::info!("master: stopping");
    ports.stop();
    master.shut_down();
    Ok(())
}

/// One daemon per log directory; `pihealth pull` holds the lock only for
/// the moment it records its pulls, so wait that out.
fn wait_for_writer_lock(log_dir: &Path) -> Result<std::fs::File, StartError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match registry::try_writer_lock(log_dir).map_err(StartError::Lock)? {
            Some(lock) => return Ok(lock),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            None => {
                return Err(StartError::AlreadyRunning {
                    log_dir: log_dir.to_path_buf(),
                    lock: registry::writer_lock_path(log_dir),
                })
            }
        }
    }
}

/// The master's listening sockets, bound before anything else is done.
struct Listeners {
    register: TcpListener,
    alarm: TcpListener,
    http: Option<TcpListener>,
}

impl Listeners {
    fn bind(config: &MasterConfig) -> io::Result<Listeners> {
        let register = net::bind(config.listen, "registration")?;
        let alarm = net::bind(config.alarm_listen, "alarms")?;
        let http = match config.http_listen {
            Some(addr) => Some(net::bind(
                addr,
                "http_listen: status page and metrics; null turns it off",
            )?),
            None => None,
        };
        Ok(Listeners {
            register,
            alarm,
            http,
        })
    }
}

/// The accept loops serving the master's ports.
struct Ports {
    register: AcceptLoop,
    alarm: AcceptLoop,
    web: Option<AcceptLoop>,
}

impl Ports {
    fn stop(&mut self) {
        self.register.stop();
        self.alarm.stop();
        if let Some(w) = &mut self.web {
            w.stop();
        }
    }
}

/// The running daemon's state and pools, opened in order by `open`.
struct Master<'a> {
    config: &'a MasterConfig,
    keys: Vec<Key>,
    statics: Vec<StaticAgent>,
    registry: Arc<Registry>,
    alarm_log: Arc<AlarmLog>,
    /// Outbound pulls and probes.
    outbound: ThreadPool,
    /// The registration and alarm ports.
    inbound: ThreadPool,
    /// The status page and metrics.
    http_pool: ThreadPool,
    room: net::WaitingRoom,
    peers: net::PeerBook,
}

impl<'a> Master<'a> {
    /// The master's files, registry, alarm log and forwarders, the backup
    /// directory, the pools and the waiting room.
    fn open(
        config: &'a MasterConfig,
        config_path: &Path,
        keys: Vec<Key>,
        statics: Vec<StaticAgent>,
        stop: &Arc<AtomicBool>,
    ) -> Result<Master<'a>, StartError> {
        // First: older versions kept their files in `log/` itself.
        files::MasterFiles::prepare(&config.log_dir).map_err(StartError::LogDir)?;
        let registry = Registry::open(&config.log_dir, &statics, config.agent_data_port)
            .map_err(StartError::Registry)?;
        let alarm_log = AlarmLog::open(
            &config.log_dir,
            alarms::CommandSettings {
                command: config.alarm_command.clone(),
                timeout: config.alarm_command_timeout.0,
                workers: config.alarm_command_workers,
                queue: config.alarm_command_queue,
            },
        )
        .map_err(StartError::Alarms)?;
        start_alertmanagers(config, config_path, &alarm_log, stop)?;
        std::fs::create_dir_all(&config.backup_dir).map_err(|source| StartError::BackupDir {
            path: config.backup_dir.clone(),
            source,
        })?;
        Ok(Master {
            config,
            keys,
            statics,
            registry: Arc::new(registry),
            alarm_log: Arc::new(alarm_log),
            outbound: ThreadPool::with_name("master-outbound".into(), config.workers),
            inbound: ThreadPool::with_name("master-inbound".into(), config.inbound_workers),
            http_pool: ThreadPool::with_name("master-http".into(), config.http_workers),
            room: net::WaitingRoom::start("master", MAX_WAITING_TO_SPEAK)?,
            peers: net::PeerBook::default(),
        })
    }

    /// Accept on the registration, alarm and (if configured) HTTP ports.
    fn serve(&self, listeners: Listeners) -> io::Result<Ports> {
        let config = self.config;
        // Agents may share an address (NAT), so the cap on unfinished
        // handshakes per address is higher than on an agent. A fleet starting
        // at once registers from hundreds of new addresses: they go through
        // the lane in order, each in a few milliseconds.
        let limits = AcceptLimits {
            io_timeout: config.io_timeout.0,
            max_queued: config.inbound_workers * 64,
            max_handshakes_per_address: config.max_handshakes_per_address,
            untrusted_lane: Some(net::UntrustedLane::new(
                self.inbound.clone(),
                config.inbound_workers / 2,
                config.inbound_workers * 64,
            )),
            peers: self.peers.clone(),
            waiting_room: Some((self.room.clone(), net::Readiness::AnyBytes)),
            allowed: Vec::new(),
        };
        let credentials = Arc::new(fleet_credentials(config, self.keys.clone()));
        let (r, k) = (self.registry.clone(), credentials.clone());
        let refusals = Arc::new(RefusalLog::default());
        let register = AcceptLoop::start_with(
            "registration",
            listeners.register,
            self.inbound.clone(),
            limits.clone(),
            Arc::new(move |stream, peer| handle_register(&r, &k, &refusals, stream, peer)),
        )?;
        let (a, k) = (self.alarm_log.clone(), credentials);
        let alarm = AcceptLoop::start_with(
            "alarms",
            listeners.alarm,
            self.inbound.clone(),
            limits,
            Arc::new(move |stream, peer| a.handle(stream, peer, &k)),
        )?;
        let web = match listeners.http {
            Some(listener) => Some(self.serve_http(listener)?),
            None => None,
        };
        Ok(Ports {
            register,
            alarm,
            web,
        })
    }

    fn serve_http(&self, listener: TcpListener) -> io::Result<AcceptLoop> {
        let config = self.config;
        let h = Arc::new(http::Http::new(config, self.registry.clone()));
        // No key on this port: every request waits in the room for its
        // whole head, then takes an HTTP worker only for as long as the
        // answer takes; one address holds at most the handshake cap.
        let limits = AcceptLimits {
            io_timeout: config.io_timeout.0,
            max_queued: config.http_workers * 64,
            max_handshakes_per_address: config.max_handshakes_per_address,
            untrusted_lane: None,
            peers: self.peers.clone(),
            waiting_room: Some((self.room.clone(), net::Readiness::HttpHead)),
            allowed: Vec::new(),
        };
        AcceptLoop::start_with(
            "http",
            listener,
            self.http_pool.clone(),
            limits,
            Arc::new(move |stream, peer| h.handle(stream, peer)),
        )
    }

    fn log_started(&self, ports: &Ports) {
        let config = self.config;
        log::info!(
            "master: registration on {}, alarms on {}, status page and metrics on {}, {} static agent(s), {} outbound + {} inbound + {} http worker(s)",
            ports.register.local_addr(),
            ports.alarm.local_addr(),
            ports.web.as_ref()
                .map_or("(off)".to_string(), |w| format!("http://{}/", w.local_addr())),
            self.statics.len(),
            config.workers,
            config.inbound_workers,
            config.http_workers
        );
    }

    /// Pull, probe and raise host alarms until `stop` is set.
    fn schedule(&self, stop: &AtomicBool) -> Result<(), StartError> {
        let config = self.config;
        let ctx = pull_context(config, self.keys.clone());
        let host_alarms = host_alarms::HostAlarmRaiser::new(
            self.alarm_log.clone(),
            config.heartbeat_interval.0 * config.heartbeat_misses,
            config.host_recovery_hold.0,
        )
        .map_err(StartError::Alarms)?;
        scheduler::Scheduler {
            config,
            registry: &self.registry,
            ctx: &ctx,
            pool: &self.outbound,
            host_alarms: Some(&host_alarms),
        }
        .run(stop);
        Ok(())
    }

    /// After the ports stopped: let running jobs finish (for a while),
    /// then write the registry.
    fn shut_down(self) {
        self.room.stop();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let drained = [&self.outbound, &self.inbound, &self.http_pool]
            .iter()
            .all(|pool| net::drain_pool(pool, deadline.saturating_duration_since(Instant::now())));
        if !drained {
            log::warn!("master: pulls still running after {SHUTDOWN_GRACE:?}; leaving them (nothing unacknowledged is lost)");
        }
        if let Err(e) = self.registry.flush() {
            log::error!("cannot write the registry: {e}");
        }
        let counts = self.registry.write_counts();
        log::info!(
            "master: registry.json written {} times since start, {} of them with fsync",
            counts.writes,
            counts.durable
        );
        log::info!("master: stopped");
    }
}

/// Forward stored alarms to the configured Alertmanagers, if any.
fn start_alertmanagers(
    config: &MasterConfig,
    config_path: &Path,
    alarm_log: &AlarmLog,
    stop: &Arc<AtomicBool>,
) -> Result<(), StartError> {
    let targets = config.alertmanager_targets(config_path)?;
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
        .map_err(StartError::Alertmanagers)?;
        alarm_log.on_stored(wake);
    }
    Ok(())
}
