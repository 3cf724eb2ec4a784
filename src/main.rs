//! `pihealth`: one binary, the agent and the master plus operator commands.
//! Thin: parse arguments, set up logging and signals, load the config, run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use pihealth::cli::silence::{self, Action, SilenceError};
use pihealth::config::MasterConfig;
use pihealth::level::Level;

type Time = chrono::DateTime<chrono::FixedOffset>;

#[derive(Parser)]
#[command(
    name = "pihealth",
    version,
    about = "Health monitoring for fleets of Linux hosts: agents collect, a master pulls and archives."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the master daemon.
    Master {
        #[arg(short, long, default_value = "config/master.yaml")]
        config: PathBuf,
    },
    /// Run the agent daemon.
    Agent {
        #[arg(short, long, default_value = "config/agent.yaml")]
        config: PathBuf,
    },
    /// One pull cycle now, then exit (for cron); exit 1 if any agent failed.
    Pull {
        #[arg(short, long, default_value = "config/master.yaml")]
        config: PathBuf,
        /// Only this host (name or control address); repeatable.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Print one host's log of one type, oldest first, archives included.
    Logs(LogsArgs),
    /// Table of agents: state, last heartbeat and pull, backlog, alarms, skew.
    Status {
        #[arg(short, long, default_value = "config/master.yaml")]
        config: PathBuf,
        /// One JSON object: the state's age and one entry per agent.
        #[arg(long)]
        json: bool,
    },
    /// Recent alarms, newest last, then the open and recovered problems.
    Alarms(AlarmsArgs),
    /// Silence a host's alarms (or one type's) for a while: they are still
    /// stored and shown, but run no alarm_command and are not forwarded to
    /// Alertmanager. Also --list and --remove ID.
    Silence(SilenceArgs),
    /// Write a new random fleet key file with mode 0600 (for the master);
    /// with --host, write that host's own key, derived from the fleet key
    /// (for that host's agent).
    Keygen(KeygenArgs),
    /// A master and N agents on 127.0.0.x in a temporary directory.
    Demo {
        #[arg(long, default_value_t = 3)]
        agents: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Keep the demo directory here instead of deleting it.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
}

/// A configuration, key or usage problem: exit 2 without touching any data.
fn config_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("pihealth: {e}");
    ExitCode::from(2)
}

fn failure(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("pihealth: {e}");
    ExitCode::from(1)
}

/// Ctrl-C and SIGTERM set the returned flag.
fn stop_on_signals() -> Result<Arc<AtomicBool>, ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| failure(format!("cannot handle signals: {e}")))?;
    Ok(stop)
}

fn master_config(path: &Path) -> Result<MasterConfig, ExitCode> {
    MasterConfig::load(path).map_err(config_error)
}

/// Check the key files a command will use before it touches anything: a
/// missing key, one others can read or one with bad contents is the
/// operator's to fix, so it exits 2 like any configuration problem (the
/// units' `RestartPreventExitStatus=2` relies on it to stop a restart loop).
fn check_keys(key_file: &Path, previous: &[PathBuf]) -> Result<(), ExitCode> {
    pihealth::protocol::Key::load_ring(key_file, previous)
        .map(|_| ())
        .map_err(config_error)
}

/// Success, or exit 1 with the error; a reader that closed our standard
/// output (`| head`) is no failure: exit 0 without a word.
fn done(result: Result<(), impl std::fmt::Display>) -> Result<ExitCode, ExitCode> {
    result.map(|()| ExitCode::SUCCESS).map_err(|e| {
        if pihealth::cli::pipe_closed() {
            ExitCode::SUCCESS
        } else {
            failure(e)
        }
    })
}

/// `Ok(false)` from a command means "ran, but something failed": exit 1.
fn verdict(result: Result<bool, impl std::fmt::Display>) -> Result<ExitCode, ExitCode> {
    match result {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::from(1)),
        Err(e) => Err(failure(e)),
    }
}

#[derive(Args)]
struct LogsArgs {
    #[arg(short, long, default_value = "config/master.yaml")]
    config: PathBuf,
    host: String,
    #[arg(value_name = "TYPE")]
    log_type: String,
    /// Only lines at or after this time: RFC 3339, a date (2026-11-21),
    /// a duration back from now (2h), now, today or yesterday.
    #[arg(long, value_parser = pihealth::cli::parse_time)]
    since: Option<Time>,
    /// Only lines before this time: same forms as --since.
    #[arg(long, value_parser = pihealth::cli::parse_time)]
    until: Option<Time>,
    /// Keep printing new lines as pulls land.
    #[arg(short, long)]
    follow: bool,
    /// Only lines at or above this level: normal, note, warning, critical, unknown.
    #[arg(long, value_name = "LEVEL")]
    level: Option<Level>,
    /// One JSON object per line: time, host, type, fields, level.
    #[arg(long)]
    json: bool,
}

impl LogsArgs {
    fn run(self) -> Result<ExitCode, ExitCode> {
        pihealth::cli::check_interval(self.since, self.until).map_err(config_error)?;
        let query = pihealth::cli::logs::Query {
            host: self.host,
            log_type: self.log_type,
            since: self.since,
            until: self.until,
            follow: self.follow,
            min_level: self.level,
            json: self.json,
        };
        done(pihealth::cli::logs::run(
            &master_config(&self.config)?,
            &query,
        ))
    }
}

#[derive(Args)]
struct AlarmsArgs {
    #[arg(short, long, default_value = "config/master.yaml")]
    config: PathBuf,
    /// Only alarms at or after this time: RFC 3339, a date (2026-11-21),
    /// a duration back from now (2h), now, today or yesterday.
    #[arg(long, value_parser = pihealth::cli::parse_time)]
    since: Option<Time>,
    /// Only this host; repeatable.
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Only alarms at or above this level: normal, note, warning, critical, unknown.
    #[arg(long, value_name = "LEVEL")]
    level: Option<Level>,
    /// Only the problems still open (latest alarm at warning or worse).
    #[arg(long)]
    open: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

impl AlarmsArgs {
    fn run(self) -> Result<ExitCode, ExitCode> {
        let query = pihealth::cli::alarms::Query {
            since: self.since,
            hosts: self.hosts,
            min_level: self.level,
            open_only: self.open,
            json: self.json,
        };
        done(pihealth::cli::alarms::print(
            &master_config(&self.config)?.log_dir,
            &query,
            &mut pihealth::cli::stdout(),
        ))
    }
}

#[derive(Args)]
struct SilenceArgs {
    #[arg(short, long, default_value = "config/master.yaml")]
    config: PathBuf,
    /// The host to silence.
    #[arg(required_unless_present_any = ["list", "remove"])]
    host: Option<String>,
    /// Only this log type (collector) of the host; all types without it.
    #[arg(value_name = "TYPE")]
    log_type: Option<String>,
    /// How long: 30m, 2h, 1h30m, 7d (at most 366 days).
    #[arg(long = "for", value_name = "DURATION", required_unless_present_any = ["list", "remove"])]
    duration: Option<String>,
    /// Why (required): shown with every alarm the silence holds back.
    #[arg(long, required_unless_present_any = ["list", "remove"])]
    reason: Option<String>,
    /// List the silences in force.
    #[arg(long, conflicts_with_all = ["host", "duration", "reason", "remove"])]
    list: bool,
    /// Remove silence ID (as --list shows it).
    #[arg(long, value_name = "ID", conflicts_with_all = ["host", "duration", "reason"])]
    remove: Option<u64>,
    /// With --list: one JSON object per line.
    #[arg(long, requires = "list")]
    json: bool,
}

impl SilenceArgs {
    fn action(self) -> Result<Action, ExitCode> {
        Ok(match (self.list, self.remove, self.host, self.duration, self.reason) {
            (true, _, _, _, _) => Action::List { json: self.json },
            (_, Some(id), _, _, _) => Action::Remove { id },
            (_, _, Some(host), Some(duration), Some(reason)) => Action::Add {
                host,
                log_type: self.log_type,
                duration,
                reason,
            },
            _ => return Err(config_error("silence: expected HOST [TYPE] --for DURATION --reason TEXT, --list or --remove ID")),
        })
    }

    fn run(self) -> Result<ExitCode, ExitCode> {
        let config = self.config.clone();
        let action = self.action()?;
        silence::check(&action).map_err(config_error)?;
        let cfg = master_config(&config)?;
        // An unknown id is bad input too: exit 2.
        silence::run(&cfg.log_dir, &action, &mut pihealth::cli::stdout()).map_err(|e| match e {
            SilenceError::Unknown(_) => config_error(e),
            _ => failure(e),
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Args)]
struct KeygenArgs {
    #[arg(default_value = "config/pihealth.key")]
    path: PathBuf,
    /// Replace an existing key file.
    #[arg(long)]
    force: bool,
    /// Write the key of this host instead of a new fleet key.
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// The fleet key to derive a host key from (with --host).
    #[arg(long, value_name = "PATH", default_value = "config/pihealth.key")]
    fleet_key: PathBuf,
}

impl KeygenArgs {
    fn run(self) -> Result<ExitCode, ExitCode> {
        let path = self.path.display();
        match &self.host {
            None => {
                pihealth::cli::keygen(&self.path, self.force).map_err(failure)?;
                println!(
                    "wrote a new fleet key to {path} (mode 600); keep it on the master, and give \
                     each agent its own key (pihealth keygen --host NAME)"
                );
            }
            Some(name) => {
                pihealth::cli::keygen_host(&self.fleet_key, name, &self.path, self.force)
                    .map_err(failure)?;
                println!(
                    "wrote the key of host {name} to {path} (mode 600); copy it to that host's agent \
                     as its key_file"
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn run(command: Command) -> Result<ExitCode, ExitCode> {
    match command {
        Command::Master { config } => {
            let cfg = master_config(&config)?;
            check_keys(&cfg.key_file, &cfg.previous_key_files)?;
            done(
                pihealth::master::run(&cfg, &config, stop_on_signals()?).map_err(|e| e.to_string()),
            )
        }
        Command::Agent { config } => Ok(pihealth::agent::daemon::main("pihealth", &config)),
        Command::Pull { config, hosts } => {
            let cfg = master_config(&config)?;
            check_keys(&cfg.key_file, &cfg.previous_key_files)?;
            verdict(pihealth::master::pull_once(&cfg, &config, &hosts).map_err(|e| e.to_string()))
        }
        Command::Logs(args) => args.run(),
        Command::Status { config, json } => done(pihealth::cli::status::print(
            &master_config(&config)?.log_dir,
            json,
            &mut pihealth::cli::stdout(),
        )),
        Command::Alarms(args) => args.run(),
        Command::Silence(args) => args.run(),
        Command::Keygen(args) => args.run(),
        Command::Demo {
            agents,
            seconds,
            keep,
        } => verdict(pihealth::cli::demo::run(agents, seconds, keep.as_deref())),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    pihealth::failpoint::init();
    run(cli.command).unwrap_or_else(|code| code)
}
