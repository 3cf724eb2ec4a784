//! The agent daemon's entry point, shared by `pihealth agent -c FILE` and
//! the lean `pihealth-agent -c FILE` binary (src/bin/pihealth-agent.rs),
//! so both check, start and stop the same way.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::AgentConfig;

/// Load the config at `path` and check the key before anything is touched
/// (a problem: exit 2, which the unit's `RestartPreventExitStatus=2` does
/// not restart), then run the agent until Ctrl-C or SIGTERM (exit 0) or a
/// failure (exit 1). Messages go to stderr prefixed with `program`.
pub fn main(program: &str, path: &Path) -> ExitCode {
    let say = |code: u8, e: &dyn std::fmt::Display| {
        eprintln!("{program}: {e}");
        ExitCode::from(code)
    };
    let config = match AgentConfig::load(path) {
        Ok(config) => config,
        Err(e) => return say(2, &e),
    };
    if let Err(e) = crate::protocol::Key::load_host_ring(
        &config.key_file,
        &config.previous_key_files,
        &config.agent_name(),
    ) {
        return say(2, &e);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
        return say(1, &format!("cannot handle signals: {e}"));
    }
    match super::Agent::start(&config, path, stop) {
        Ok(agent) => {
            agent.run();
            ExitCode::SUCCESS
        }
        Err(e) => say(1, &e),
    }
}
