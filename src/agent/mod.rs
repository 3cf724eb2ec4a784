//! The agent: collectors, log store, alarm spool and the control/data servers.
//!
//! Threads: the caller's thread runs the collector schedule (and one
//! worker thread the built-in checks, see `builtin`); one accept
//! thread per port hands connections to a fixed pool; one uplink thread
//! registers, beats and delivers alarms.
pub(crate) mod alarms;
pub mod builtin;
pub mod collector;
pub mod daemon;
pub mod logstore;
pub(crate) mod lost;
mod record;
pub(crate) mod server;
pub(crate) mod trigger;
pub(crate) mod uplink;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use threadpool::ThreadPool;

use crate::config::{AddressError, AgentConfig, CollectorSpec, ConfigError};
use crate::net::{self, AcceptLimits, AcceptLoop};
use crate::protocol::Key;
use alarms::{AlarmMonitor, AlarmSpool};
use logstore::LogStore;
use lost::LostOutput;
use record::{Alarms, Recorder};
use server::AgentServer;
use uplink::Uplink;

/// How long in-flight transfers may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentError {
    /// The key files (the message names the file).
    #[error(transparent)]
    Key(#[from] crate::protocol::auth::KeyError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Address(#[from] AddressError),
    /// Listening, starting a thread (the message names what failed).
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("cannot open the log store: {0}")]
    LogStore(#[source] io::Error),
    #[error("{}: {source}", path.display())]
    Dir { path: PathBuf, source: io::Error },
    #[error("cannot clean {}: {source}", path.display())]
    Scratch { path: PathBuf, source: io::Error },
    #[error("alarm levels: {0}")]
    Levels(#[source] io::Error),
}

/// The agent's files under `log_dir/.pihealth/`.
struct Private {
    dir: PathBuf,
    /// Where scripts keep state between runs (`PIHEALTH_STATE_DIR`).
    script_state: PathBuf,
    /// The collectors' run directories and scratch files.
    scratch: PathBuf,
}

/// What the agent opens before it starts any thread, in this order.
struct Opened {
    name: String,
    keys: Vec<Key>,
    specs: Vec<CollectorSpec>,
    control_listener: TcpListener,
    data_listener: TcpListener,
    store: Arc<LogStore>,
    private: Private,
    spool: Arc<AlarmSpool>,
}

impl Opened {
    /// The key and the config's collectors, then listen (a port in use,
    /// by another agent or this one still stopping, ends the start before
    /// any directory or file is made), then the store, the private
    /// directories and the alarm spool.
    fn open(config: &AgentConfig, config_path: &Path) -> Result<Opened, AgentError> {
        if let Err(e) = net::raise_open_files_limit() {
            log::warn!("cannot raise the limit on open files: {e}");
        }
        let name = config.agent_name();
        // The fleet key or this host's own: either gives this host's key.
        let keys = Key::load_host_ring(&config.key_file, &config.previous_key_files, &name)?;
        let specs = config.collector_specs(config_path)?;
        let control_listener = net::bind(config.control_listen, "control")?;
        let data_listener = net::bind(config.data_listen, "data")?;
        let store = Arc::new(open_store(config, &specs)?);
        let private = make_private_dirs(&config.log_dir)?;
        let spool = Arc::new(AlarmSpool::open(&private.dir.join("alarms.spool"))?);
        Ok(Opened {
            name,
            keys,
            specs,
            control_listener,
            data_listener,
            store,
            private,
            spool,
        })
    }

    /// The server of the control and data ports.
    fn server(&self, config: &AgentConfig, data_port: u16) -> AgentServer {
        AgentServer::new(
            self.name.clone(),
            self.store.clone(),
            self.keys.clone(),
            data_port,
            config.allowed_masters.clone(),
            config.io_timeout.0 * 3,
        )
    }

    /// The uplink: registration, heartbeats, alarms and lost-output
    /// reports to the master.
    fn uplink(
        &self,
        config: &AgentConfig,
        control_listen: SocketAddr,
        data_port: u16,
        lost: &Arc<Mutex<Vec<LostOutput>>>,
    ) -> Result<Uplink, AgentError> {
        Ok(Uplink {
            name: self.name.clone(),
            master: config.master_address()?,
            master_alarm: config.master_alarm_address()?,
            keys: self.keys.clone(),
            key_memory: Default::default(),
            control_listen,
            data_port,
            heartbeat_interval: config.heartbeat_interval.0,
            connect_timeout: config.connect_timeout.0,
            io_timeout: config.io_timeout.0,
            store: self.store.clone(),
            spool: self.spool.clone(),
            lost: lost.clone(),
        })
    }
}

/// A started agent: listening, its uplink running; [`Agent::run`] runs the
/// collector schedule until the stop flag is set, then stops the rest.
pub(crate) struct Agent {
    name: String,
    stop: Arc<AtomicBool>,
    specs: Vec<CollectorSpec>,
    /// The collectors' environment: thresholds, state directory, host.
    env: Vec<(String, String)>,
    work_dir: PathBuf,
    scratch: PathBuf,
    pool: ThreadPool,
    control: AcceptLoop,
    data: AcceptLoop,
    uplink: JoinHandle<()>,
    wake: Sender<()>,
    alarms: Alarms,
    recorder: Recorder,
}

impl Agent {
    /// Start the agent: open what it needs ([`Opened::open`]), start the
    /// servers and the uplink, and load the alarm levels.
    pub(crate) fn start(
        config: &AgentConfig,
        config_path: &Path,
        stop: Arc<AtomicBool>,
    ) -> Result<Agent, AgentError> {
        let opened = Opened::open(config, config_path)?;
        let control_addr = opened.control_listener.local_addr()?;
        let data_port = opened.data_listener.local_addr()?.port();
        let pool = ThreadPool::with_name("agent-worker".into(), config.workers);
        let server = Arc::new(opened.server(config, data_port));
        let (wake, wake_rx) = crossbeam::channel::bounded::<()>(1);
        let lost_reports: Arc<Mutex<Vec<LostOutput>>> = Arc::default();
        let uplink = opened.uplink(config, control_addr, data_port, &lost_reports)?;
        let (control, data) = start_servers(
            config,
            &pool,
            server,
            opened.control_listener,
            opened.data_listener,
        )?;
        let uplink = spawn_uplink(uplink, stop.clone(), wake_rx)?;

        log::info!(
            "agent {}: control on {}, data on {}, {} collector(s), master {}",
            opened.name,
            control.local_addr(),
            data.local_addr(),
            opened.specs.len(),
            config.master
        );

        let (name, private) = (opened.name, opened.private);
        let env = collector_env(config, &private, &name);
        let work_dir = std::env::current_dir()?;
        let monitor = alarm_monitor(config, &name, &private, &env)?;
        Ok(Agent {
            alarms: Alarms::new(name.clone(), monitor, opened.spool, wake.clone()),
            recorder: Recorder::new(name.clone(), opened.store, lost_reports),
            name,
            stop,
            specs: opened.specs,
            env,
            work_dir,
            scratch: private.scratch,
            pool,
            control,
            data,
            uplink,
            wake,
        })
    }

    /// Run the collector schedule until the stop flag is set, then stop.
    pub(crate) fn run(mut self) {
        // The alarm being raised when the agent last stopped.
        self.alarms.spool_pending();
        let (alarms, recorder) = (&mut self.alarms, &mut self.recorder);
        collector::run_schedule(
            &self.specs,
            &self.env,
            &self.work_dir,
            &self.scratch,
            &self.stop,
            &mut |spec, outcome| recorder.take(spec, outcome, alarms),
        );
        self.recorder.flush(&mut self.alarms);
        self.shut_down();
    }

    /// No new connections; transfers in flight may finish (bounded).
    fn shut_down(mut self) {
        let name = &self.name;
        log::info!("agent {name}: stopping");
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.try_send(()); // the uplink need not finish its sleep
        self.control.stop();
        self.data.stop();
        let _ = self.uplink.join();
        if !net::drain_pool(&self.pool, SHUTDOWN_GRACE) {
            log::warn!("agent {name}: transfers still running after {SHUTDOWN_GRACE:?}; leaving them (nothing acknowledged is lost)");
        }
        log::info!("agent {name}: stopped");
    }
}

/// The collectors' environment: the thresholds, the state directory and
/// the host name.
fn collector_env(config: &AgentConfig, private: &Private, name: &str) -> Vec<(String, String)> {
    let mut env = config.thresholds.env();
    env.push(("PIHEALTH_STATE_DIR".into(), absolute(&private.script_state)));
    env.push(("PIHEALTH_HOST".into(), name.to_string()));
    env
}

/// The alarm levels saved by the last run, with the thresholds that label
/// alarm messages.
fn alarm_monitor(
    config: &AgentConfig,
    name: &str,
    private: &Private,
    env: &[(String, String)],
) -> Result<AlarmMonitor, AgentError> {
    let mut monitor = AlarmMonitor::new(
        name,
        config.realarm_interval.0,
        Some(&private.dir.join("levels.json")),
    )
    .map_err(AgentError::Levels)?;
    monitor.set_thresholds(builtin::Limits::from_env(env));
    Ok(monitor)
}

fn open_store(config: &AgentConfig, specs: &[CollectorSpec]) -> Result<LogStore, AgentError> {
    let type_names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    LogStore::open(
        &config.log_dir,
        &config.backup_dir,
        config.rotate_size.0,
        config.max_backlog.0,
        &type_names,
    )
    .map_err(AgentError::LogStore)
}

/// Make the agent's private directories, and end the runs an earlier
/// agent left behind (killed with -9): they must not write into this
/// agent's runs.
fn make_private_dirs(log_dir: &Path) -> Result<Private, AgentError> {
    let dir = log_dir.join(".pihealth");
    let private = Private {
        script_state: dir.join("scripts"),
        scratch: dir.join("run"),
        dir,
    };
    for path in [&private.script_state, &private.scratch] {
        std::fs::create_dir_all(path).map_err(|source| AgentError::Dir {
            path: path.clone(),
            source,
        })?;
    }
    collector::clean_scratch_dir(&private.scratch).map_err(|source| AgentError::Scratch {
        path: private.scratch.clone(),
        source,
    })?;
    Ok(private)
}

/// Start the accept threads of the control and data ports.
///
/// Unknown addresses are closed by the accept thread, one address can
/// hold only a few workers with handshakes it cannot finish, and all
/// addresses that have not proved the key lately together at most half
/// the pool: the master (trusted once it has proved the key) always finds
/// the workers for a control and a data connection.
fn start_servers(
    config: &AgentConfig,
    pool: &ThreadPool,
    server: Arc<AgentServer>,
    control: TcpListener,
    data: TcpListener,
) -> io::Result<(AcceptLoop, AcceptLoop)> {
    let limits = AcceptLimits {
        io_timeout: config.io_timeout.0,
        max_queued: config.workers * 16,
        max_handshakes_per_address: config.max_handshakes_per_address,
        untrusted_lane: Some(net::UntrustedLane::new(
            pool.clone(),
            config.workers / 2,
            config.workers * 16,
        )),
        peers: net::PeerBook::default(),
        waiting_room: None,
        allowed: config.allowed_masters.clone(),
    };
    let s = server.clone();
    let control = AcceptLoop::start_with(
        "control",
        control,
        pool.clone(),
        limits.clone(),
        Arc::new(move |stream, peer| s.handle_control(stream, peer)),
    )?;
    let data = AcceptLoop::start_with(
        "data",
        data,
        pool.clone(),
        limits,
        Arc::new(move |stream, peer| server.handle_data(stream, peer)),
    )?;
    Ok((control, data))
}

fn spawn_uplink(
    uplink: Uplink,
    stop: Arc<AtomicBool>,
    wake: Receiver<()>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("uplink".into())
        .spawn(move || uplink.run(&stop, &wake))
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}
