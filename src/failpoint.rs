//! Crash points for fault-injection tests.
//!
//! `PIHEALTH_FAILPOINTS="pull.after_commit=0.05,logstore.mid_rotate=0.2"`
//! makes the process abort (as abruptly as `kill -9`: no destructors, no
//! flush) when it passes a named point, with the given probability each
//! time. `PIHEALTH_FAILPOINT_SEED` makes the choice repeatable. Without the
//! variable every point is a single relaxed atomic load, so the points stay
//! compiled into the real binary: the crash tests exercise exactly the code
//! that ships.
//!
//! The points sit where a crash is hardest to survive: between writing
//! data and making it durable, between fsync and acknowledgement, in the
//! middle of a rotation or a gzip. `src/agent/logstore.rs` and
//! `src/master/archive.rs` say what recovery does at each.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Every point a test may name; an unknown name in the variable is an error.
pub(crate) const POINTS: [&str; 12] = [
    "pull.after_store",
    "pull.after_commit",
    "archive.mid_seal",
    "archive.mid_checkpoint",
    "archive.mid_replay",
    "logstore.mid_gzip",
    "logstore.mid_rotate",
    "logstore.mid_release",
    "server.mid_send",
    "alarms.after_append",
    "agent.alarm_saved",
    "agent.alarm_spooled",
];

struct Plan {
    points: Vec<(&'static str, f64)>,
    rng: AtomicU64,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static PLAN: OnceLock<Plan> = OnceLock::new();

/// What is wrong with `PIHEALTH_FAILPOINTS`.
#[derive(Debug, thiserror::Error)]
enum PlanError {
    #[error("`{0}`: expected name=probability")]
    NotAPair(String),
    #[error("`{0}`: no such failpoint (known: {known})", known = POINTS.join(", "))]
    Unknown(String),
    #[error("`{0}`: expected a probability from 0 to 1")]
    Probability(String),
}

/// Parse `name=probability,…`.
fn parse(text: &str) -> Result<Vec<(&'static str, f64)>, PlanError> {
    let mut points = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, p) = item
            .split_once('=')
            .ok_or_else(|| PlanError::NotAPair(item.to_string()))?;
        let point = POINTS
            .iter()
            .find(|&&known| known == name)
            .ok_or_else(|| PlanError::Unknown(name.to_string()))?;
        let p: f64 = p
            .parse()
            .ok()
            .filter(|p| (0.0..=1.0).contains(p))
            .ok_or_else(|| PlanError::Probability(item.to_string()))?;
        points.push((*point, p));
    }
    Ok(points)
}

/// Read the environment once, at start. A malformed variable is reported
/// and ignored: a test that relies on it sees no crashes and fails.
pub fn init() {
    let Ok(text) = std::env::var("PIHEALTH_FAILPOINTS") else {
        return;
    };
    let points = match parse(&text) {
        Ok(p) => p,
        Err(e) => {
            log::error!("PIHEALTH_FAILPOINTS ignored: {e}");
            return;
        }
    };
    let seed = std::env::var("PIHEALTH_FAILPOINT_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15)
        | 1;
    log::warn!("failpoints armed (test only): {text}");
    if PLAN
        .set(Plan {
            points,
            rng: AtomicU64::new(splitmix64(seed)),
        })
        .is_ok()
    {
        ARMED.store(true, Ordering::Release);
    }
}

/// Spread a small seed over all bits: xorshift started from 1001 would
/// draw tiny numbers (and so crash at once) for its first steps.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

/// xorshift64: plenty for picking crash moments.
fn next(rng: &AtomicU64) -> u64 {
    let mut x = rng.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng.store(x, Ordering::Relaxed);
    x
}

/// Abort here if the test asked for it.
#[inline]
pub(crate) fn hit(name: &'static str) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let Some(plan) = PLAN.get() else { return };
    let Some(&(_, p)) = plan.points.iter().find(|(n, _)| *n == name) else {
        return;
    };
    let roll = (next(&plan.rng) >> 11) as f64 / (1u64 << 53) as f64;
    if roll < p {
        eprintln!("pihealth: failpoint {name}: aborting (test)");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_points_and_refuses_the_rest() {
        assert_eq!(
            parse("pull.after_commit=0.5, logstore.mid_rotate=1").unwrap(),
            vec![("pull.after_commit", 0.5), ("logstore.mid_rotate", 1.0)]
        );
        assert_eq!(
            parse("nope=0.1").unwrap_err().to_string(),
            format!("`nope`: no such failpoint (known: {})", POINTS.join(", "))
        );
        assert!(parse("pull.after_commit=2").is_err());
        assert!(parse("pull.after_commit").is_err());
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn unarmed_points_do_nothing() {
        hit("pull.after_commit");
    }
}
