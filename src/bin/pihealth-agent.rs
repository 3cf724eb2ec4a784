//! `pihealth-agent -c FILE`: the agent alone, as the unit runs it.
//!
//! The same daemon as `pihealth agent -c FILE` (src/agent/daemon.rs), in a
//! binary without the master, the command-line tools and their argument
//! parser. An idle agent keeps resident every page of its binary that the
//! kernel mapped around the pages it touched (fault-around), so a smaller
//! binary is a smaller agent on the Pi (SPEC §9: idle RSS ≤ 4 MiB; the
//! figures are in BENCHMARKS.md).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: pihealth-agent [-c FILE]
Run the pihealth agent (as `pihealth agent`) with the config FILE
(default: config/agent.yaml).";

/// Arguments that are not `[-c FILE]`.
#[derive(Debug, thiserror::Error)]
enum ArgsError {
    #[error("-c needs a FILE")]
    MissingFile,
    #[error("unexpected argument {0:?}\n{USAGE}")]
    Unexpected(OsString),
}

/// The config path from the arguments: `-c FILE`, `--config FILE` or
/// `--config=FILE`; `None` after `--help` or `--version` (printed).
fn config_path(args: impl IntoIterator<Item = OsString>) -> Result<Option<PathBuf>, ArgsError> {
    let mut config = PathBuf::from("config/agent.yaml");
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-c" | "--config") => {
                config = args.next().ok_or(ArgsError::MissingFile)?.into();
            }
            Some(a) if a.starts_with("--config=") => config = a["--config=".len()..].into(),
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return Ok(None);
            }
            Some("-V" | "--version") => {
                println!("pihealth-agent {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            _ => return Err(ArgsError::Unexpected(arg)),
        }
    }
    Ok(Some(config))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match config_path(std::env::args_os().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pihealth-agent: {e}");
            return ExitCode::from(2);
        }
    };
    pihealth::failpoint::init();
    pihealth::agent::daemon::main("pihealth-agent", &config)
}
