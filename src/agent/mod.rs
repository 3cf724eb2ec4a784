//! The agent: collectors, log store, alarm spool and the control/data servers.
//!
//! Threads: the caller's thread runs the collector schedule (and one
//! worker thread the built-in checks, see `builtin`); one accept
//! thread per port hands connections to a fixed pool; one uplink thread
//! registers, beats and delivers alarms.
pub mod alarms;
pub mod builtin;
pub mod collector;
pub mod daemon;
pub mod logstore;
pub mod lost;
pub mod server;
pub mod trigger;
pub mod uplink;

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use threadpool::ThreadPool;

use crate::config::AgentConfig;
use crate::level::Level;
use crate::net::{self, AcceptLimits, AcceptLoop};
use crate::protocol::Key;
use alarms::{AlarmMonitor, AlarmSpool};
use logstore::LogStore;
use lost::{LostLedger, LostOutput, Throttle, ERROR_SUMMARY_INTERVAL};
use server::AgentServer;
use uplink::Uplink;

/// How long in-flight transfers may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Run the agent until `stop` is set.
pub fn run(config: &AgentConfig, config_path: &Path, stop: Arc<AtomicBool>) -> Result<(), String> {
    if let Err(e) = net::raise_open_files_limit() {
        log::warn!("cannot raise the limit on open files: {e}");
    }
    let name = config.agent_name();
    // The fleet key or this host's own: either gives this host's key.
    let keys = Key::load_host_ring(&config.key_file, &config.previous_key_files, &name)?;
    let specs = config
        .collector_specs(config_path)
        .map_err(|e| e.to_string())?;
    let type_names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    // Listen first: a port in use (another agent, or this one still
    // stopping) ends the start before any directory or file is made.
    let control_listener =
        net::bind(config.control_listen, "control").map_err(|e| e.to_string())?;
    let data_listener = net::bind(config.data_listen, "data").map_err(|e| e.to_string())?;
    let store = Arc::new(
        LogStore::open(
            &config.log_dir,
            &config.backup_dir,
            config.rotate_size.0,
            config.max_backlog.0,
            &type_names,
        )
        .map_err(|e| format!("cannot open the log store: {e}"))?,
    );
    let private = config.log_dir.join(".pihealth");
    let script_state = private.join("scripts");
    let scratch = private.join("run");
    for dir in [&script_state, &scratch] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // Runs an earlier agent left behind (killed with -9) must not write
    // into this agent's runs: end them and their scratch files first.
    collector::clean_scratch_dir(&scratch)
        .map_err(|e| format!("cannot clean {}: {e}", scratch.display()))?;
    let spool =
        Arc::new(AlarmSpool::open(&private.join("alarms.spool")).map_err(|e| e.to_string())?);

    let control_addr = control_listener.local_addr().map_err(|e| e.to_string())?;
    let data_port = data_listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .port();

    let io_timeout = config.io_timeout.0;
    let pool = ThreadPool::with_name("agent-worker".into(), config.workers);
    let server = Arc::new(AgentServer::new(
        name.clone(),
        store.clone(),
        keys.clone(),
        data_port,
        config.allowed_masters.clone(),
        io_timeout * 3,
    ));
    // Unknown addresses are closed by the accept thread, one address can
    // hold only a few workers with handshakes it cannot finish, and all
    // addresses that have not proved the key lately together at most half
    // the pool: the master (trusted once it has proved the key) always finds
    // the workers for a control and a data connection.
    let limits = AcceptLimits {
        io_timeout,
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
    let mut control = AcceptLoop::start_with(
        "control",
        control_listener,
        pool.clone(),
        limits.clone(),
        Arc::new(move |stream, peer| s.handle_control(stream, peer)),
    )
    .map_err(|e| e.to_string())?;
    let s = server.clone();
    let mut data = AcceptLoop::start_with(
        "data",
        data_listener,
        pool.clone(),
        limits.clone(),
        Arc::new(move |stream, peer| s.handle_data(stream, peer)),
    )
    .map_err(|e| e.to_string())?;

    let (wake_tx, wake_rx) = crossbeam::channel::bounded::<()>(1);
    let lost_reports: Arc<Mutex<Vec<LostOutput>>> = Arc::default();
    let uplink = Uplink {
        name: name.clone(),
        master: config.master_address()?,
        master_alarm: config.master_alarm_address()?,
        keys,
        key_memory: Default::default(),
        control_listen: control_addr,
        data_port,
        heartbeat_interval: config.heartbeat_interval.0,
        connect_timeout: config.connect_timeout.0,
        io_timeout,
        store: store.clone(),
        spool: spool.clone(),
        lost: lost_reports.clone(),
    };
    let uplink_stop = stop.clone();
    let uplink_thread = std::thread::Builder::new()
        .name("uplink".into())
        .spawn(move || uplink.run(&uplink_stop, &wake_rx))
        .map_err(|e| e.to_string())?;

    log::info!(
        "agent {name}: control on {}, data on {}, {} collector(s), master {}",
        control.local_addr(),
        data.local_addr(),
        specs.len(),
        config.master
    );

    let mut env = config.thresholds.env();
    env.push(("PIHEALTH_STATE_DIR".into(), absolute(&script_state)));
    env.push(("PIHEALTH_HOST".into(), name.clone()));
    let work_dir = std::env::current_dir().map_err(|e| e.to_string())?;
    let mut monitor = AlarmMonitor::new(
        &name,
        config.realarm_interval.0,
        Some(&private.join("levels.json")),
    )
    .map_err(|e| format!("alarm levels: {e}"))?;
    monitor.set_thresholds(crate::agent::builtin::Limits::from_env(&env));
    // A full disk fails every write of every run: each kind of error is
    // logged once, then summarised at most every ERROR_SUMMARY_INTERVAL.
    let spool_errors = RefCell::new(Throttle::new(ERROR_SUMMARY_INTERVAL));
    let level_errors = RefCell::new(Throttle::new(ERROR_SUMMARY_INTERVAL));
    let mut store_errors = Throttle::new(ERROR_SUMMARY_INTERVAL);
    // The alarm raised when output cannot be stored, at most this often.
    let mut store_alarms = Throttle::new(ERROR_SUMMARY_INTERVAL);
    let throttled = |throttle: &RefCell<Throttle>, text: String| {
        if let Some(line) = throttle.borrow_mut().error(&text, Instant::now()) {
            log::error!("{line}");
        }
    };
    let recovered = |throttle: &RefCell<Throttle>| {
        if let Some(line) = throttle.borrow_mut().ok(Instant::now()) {
            log::info!("{name}: recovered: {line}");
        }
    };
    // Logged once spooled: an alarm that cannot be spooled yet is tried
    // again after every run, and its failures are throttled.
    let raise = |alarm: std::io::Result<crate::protocol::Alarm>| match alarm.and_then(|a| {
        let text = format!("{name}: alarm {} {} {}", a.log_type, a.level, a.message);
        spool.push(a).map(|()| log::warn!("{text}"))
    }) {
        Ok(()) => {
            recovered(&spool_errors);
            let _ = wake_tx.try_send(());
            true
        }
        Err(e) => {
            throttled(&spool_errors, format!("{name}: cannot spool an alarm: {e}"));
            false
        }
    };
    // Spool the alarm a level change raised (AlarmMonitor's crash safety:
    // it is already saved with the levels), unless it is there already.
    let spool_pending = |monitor: &mut AlarmMonitor| {
        while let Some(alarm) = monitor.pending().cloned() {
            if !(spool.contains(&alarm.id) || raise(Ok(alarm))) {
                break; // kept pending: tried again after the next run
            }
            monitor.spooled();
        }
        match monitor.save() {
            Ok(()) => recovered(&level_errors),
            Err(e) => throttled(
                &level_errors,
                format!("{name}: cannot save alarm levels: {e}"),
            ),
        }
    };
    // Output that could not be stored (`lost`): counted per type while the
    // disk is full, then written as a line in the type's log, raised as an
    // alarm (kept in `lost_alarms` until spooled) and reported to the
    // master (`lost_reports`, sent by the uplink).
    let mut ledger = LostLedger::default();
    let mut lost_alarms: Vec<crate::protocol::Alarm> = Vec::new();
    // The alarm being raised when the agent last stopped.
    spool_pending(&mut monitor);
    collector::run_schedule(
        &specs,
        &env,
        &work_dir,
        &scratch,
        &stop,
        &mut |spec, outcome| {
            // The alarm first, then the lines (AlarmMonitor's crash safety).
            match monitor.observe(&spec.name, &spec.trigger, &outcome, Instant::now()) {
                Ok(Some(alarm)) => {
                    if let Err(e) = monitor.save_pending(alarm) {
                        throttled(
                            &level_errors,
                            format!("{name}: cannot save alarm levels: {e}"),
                        );
                    }
                    crate::failpoint::hit("agent.alarm_saved");
                    spool_pending(&mut monitor);
                    crate::failpoint::hit("agent.alarm_spooled");
                }
                Ok(None) => spool_pending(&mut monitor),
                Err(e) => {
                    raise(Err(e));
                }
            }
            lost_alarms.retain(|alarm| !raise(Ok(alarm.clone())));
            // What `max_backlog` dropped on either append below.
            let mut drops = Vec::new();
            // Output lost earlier goes first: its line keeps time order.
            if let Some(lost) = ledger.due(&spec.name, Instant::now()).cloned() {
                let now = crate::storage::now_rfc3339();
                if let Ok(dropped) = store.append(&spec.name, lost.line(&now).as_bytes()) {
                    drops.extend(dropped);
                    ledger.take(&spec.name);
                    if let Ok(alarm) =
                        monitor.alarm(&spec.name, Level::Warning, lost.alarm_message(), now)
                    {
                        if !raise(Ok(alarm.clone())) {
                            lost_alarms.push(alarm);
                        }
                    }
                    crate::sync::lock(&lost_reports).push(lost);
                }
            }
            let record = outcome.render();
            match store.append(&spec.name, record.as_bytes()) {
                Ok(dropped) => {
                    if let Some(line) = store_errors.ok(Instant::now()) {
                        log::info!("{name}: storing output again: {line}");
                    }
                    drops.extend(dropped);
                }
                Err(e) => {
                    let now = crate::storage::now_rfc3339();
                    ledger.record(
                        &spec.name,
                        record.len() as u64,
                        &now,
                        Instant::now(),
                        &e.to_string(),
                    );
                    if let Some(line) = store_errors.error(
                        &format!(
                            "{name}: cannot store {} output: {e}; counting what is lost until it can be",
                            spec.name
                        ),
                        Instant::now(),
                    ) {
                        log::error!("{line}");
                    }
                    // The spool may be on a disk that still works (this may
                    // not be a full disk); if not, the count is reported
                    // later. Throttled: a nearly full disk fails and
                    // works in turns.
                    let text = format!("{}: {e}", spec.name);
                    if store_alarms.error(&text, Instant::now()).is_some() {
                        let message = format!("cannot store collector output: {e}");
                        raise(monitor.alarm(&spec.name, Level::Warning, message, now));
                    }
                }
            }
            for d in drops {
                let message = format!(
                    "max_backlog reached: dropped {} bytes of {} log in {} archive(s) not yet pulled",
                    d.bytes, d.log_type, d.archives
                );
                raise(monitor.alarm(
                    &d.log_type,
                    Level::Warning,
                    message,
                    crate::storage::now_rfc3339(),
                ));
            }
        },
    );

    // A loss not reported yet goes into its log and the spool now, if the
    // disk takes it (the master hears of it from them).
    for alarm in lost_alarms.drain(..) {
        raise(Ok(alarm));
    }
    for log_type in ledger.types() {
        let Some(lost) = ledger.take(&log_type) else {
            continue;
        };
        let now = crate::storage::now_rfc3339();
        match store.append(&log_type, lost.line(&now).as_bytes()) {
            Ok(_) => {
                raise(monitor.alarm(&log_type, Level::Warning, lost.alarm_message(), now));
            }
            Err(e) => log::error!(
                "{name}: {log_type}: {} runs ({} bytes) of output from {} to {} could not be stored, and cannot be recorded: {e}",
                lost.runs, lost.bytes, lost.first, lost.last
            ),
        }
    }

    // Stop: no new connections, let transfers in flight finish (bounded).
    log::info!("agent {name}: stopping");
    stop.store(true, Ordering::SeqCst);
    let _ = wake_tx.try_send(()); // the uplink need not finish its sleep
    control.stop();
    data.stop();
    let _ = uplink_thread.join();
    if !net::drain_pool(&pool, SHUTDOWN_GRACE) {
        log::warn!("agent {name}: transfers still running after {SHUTDOWN_GRACE:?}; leaving them (nothing acknowledged is lost)");
    }
    log::info!("agent {name}: stopped");
    Ok(())
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}
