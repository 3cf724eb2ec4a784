//! CPU of one collection cycle of the six standard scripts, then of one
//! round of the six built-in checks (`builtins.rs`) for comparison.
//!
//! Each script runs once per cycle via bash, as the agent would run it
//! (same threshold variables); its CPU, and that of everything it starts
//! (ps, awk, …), is the growth of this process's cutime + cstime across
//! the wait for it: Linux adds a child's CPU there when it is reaped. So
//! nothing else may be reaped meanwhile: this runs before any agent starts.

use std::path::Path;
use std::process::{Command, Stdio};

use pihealth::config::Thresholds;

use super::procs::{self, TICK_MS};
use super::report::{Report, Row};
use super::Bench;

const SCRIPTS: [&str; 6] = ["cpu", "mem", "disk", "proc", "users", "sysinfo"];

fn run_once(script: &Path, state_dir: &Path) -> Result<u64, String> {
    let before = procs::own_children_ticks();
    let out = Command::new("bash")
        .arg(script)
        .envs(Thresholds::default().env())
        .env("PIHEALTH_STATE_DIR", state_dir)
        // Both are sleeps between two looks (no CPU); shortened to keep
        // the bench short.
        .env("PIHEALTH_CPU_WINDOW", "0.1")
        .env("PIHEALTH_PROC_RECHECK", "0.1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("bash {}: {e}", script.display()))?;
    let ticks = procs::own_children_ticks() - before;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(ticks)
}

pub fn run(b: &Bench, report: &mut Report) -> Result<(), String> {
    let cycles = b.settings.script_cycles;
    let scripts_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let state_dir = b.dir.join("script-state");
    std::fs::create_dir_all(&state_dir).map_err(|e| e.to_string())?;
    let processes = procs::process_count();
    // One unmeasured cycle: page cache, mem.sh's first-run state.
    for s in SCRIPTS {
        run_once(&scripts_dir.join(format!("{s}.sh")), &state_dir)?;
    }
    let mut ticks = [0u64; SCRIPTS.len()];
    for _ in 0..cycles {
        for (i, s) in SCRIPTS.iter().enumerate() {
            ticks[i] += run_once(&scripts_dir.join(format!("{s}.sh")), &state_dir)?;
        }
    }
    let per_cycle = |t: u64| t as f64 * TICK_MS / cycles as f64;
    let total: u64 = ticks.iter().sum();
    let each = SCRIPTS
        .iter()
        .zip(ticks)
        .map(|(s, t)| format!("{s} {:.0}", per_cycle(t)))
        .collect::<Vec<_>>()
        .join(", ");
    report.row(Row::new(
        "CPU of one collection cycle of the six standard scripts (bash, children included)",
        format!(
            "{:.0} ms per cycle ({each} ms; mean of {cycles} cycles; {processes} processes on the machine)",
            per_cycle(total)
        ),
    ));
    // The built-ins beside them, in the same run (issue 14).
    super::builtins::in_process(report, Some(per_cycle(total)))
}
