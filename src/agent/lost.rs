//! Output the agent could not store (its disk full, its log unwritable):
//! counted in memory while it lasts, reported once it can be.
//!
//! SPEC §6: loss that cannot be avoided is never silent. While the disk is
//! full nothing can be written, not even an alarm (the spool is on the
//! same disk), so the loss is counted here, per type, and reported when a
//! write works again, in this order:
//!
//! 1. a line in the type's own log, in the normal line format (timestamp
//!    first, level word last) so every reader parses it ([`LostOutput::line`]):
//!    `2026-12-03T20:15:09+00:00 pihealth lost 50 runs (1250 bytes) of output, not stored from 2026-12-03T20:14:10+00:00 to 2026-12-03T20:15:08+00:00: No space left on device (os error 28) warning`;
//! 2. an alarm at level `warning` with the same count;
//! 3. a `Lost` message to the master, which notes the gap in its
//!    `events.log`.
//!
//! Crash safety: the count lives in memory only (it could not be written:
//! that is the point), so an agent killed while its disk is full forgets
//! it. Once the line is appended (fsynced), it travels with the log and
//! reaches the master exactly once like every other line; the alarm and
//! the master's note are kept in memory and retried until they succeed.
//!
//! [`Throttle`] keeps the daemon's own log readable meanwhile: the first
//! error of a kind is logged at once, then at most one line per interval
//! with the count of those not logged (a full disk fails every write of
//! every run).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often a repeated error is summarised in the daemon's log.
pub(crate) const ERROR_SUMMARY_INTERVAL: Duration = Duration::from_secs(30);

/// One type's output that could not be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LostOutput {
    pub(crate) log_type: String,
    /// Runs whose output was lost.
    pub(crate) runs: u64,
    /// Bytes of log lines lost (as they would have been appended).
    pub(crate) bytes: u64,
    /// RFC 3339 times of the first and the last lost run.
    pub(crate) first: String,
    pub(crate) last: String,
    /// The first error, as text.
    pub(crate) error: String,
}

/// The marker that begins the text of a lost-output line (after the
/// timestamp): `pihealth lost N runs (B bytes) of output…`.
pub(crate) const LOST_LINE_MARKER: &str = "pihealth lost ";

impl LostOutput {
    /// The line appended to the type's log once it can be (module doc).
    pub(crate) fn line(&self, now: &str) -> String {
        format!(
            "{now} {LOST_LINE_MARKER}{} runs ({} bytes) of output, not stored from {} to {}: {} warning\n",
            self.runs, self.bytes, self.first, self.last, self.error
        )
    }

    /// The alarm's message.
    pub(crate) fn alarm_message(&self) -> String {
        format!(
            "could not store {} runs ({} bytes) of {} output from {} to {}: {}",
            self.runs, self.bytes, self.log_type, self.first, self.last, self.error
        )
    }
}

/// How long a type must store without a failure before its loss is
/// reported: a nearly full disk (or one freed a little by each pull) fails
/// and works in turns, and each turn must not make a line, an alarm and a
/// note of its own. A loss still going on is reported at least every
/// [`ERROR_SUMMARY_INTERVAL`].
pub(crate) const QUIET_BEFORE_REPORT: Duration = Duration::from_secs(5);

/// The lost output of every type, not yet reported in its log.
#[derive(Debug, Default)]
pub(crate) struct LostLedger {
    /// Each count with when its first and its last failure happened.
    types: BTreeMap<String, (LostOutput, Instant, Instant)>,
}

impl LostLedger {
    /// Count one run of `log_type` whose `bytes` could not be stored, at
    /// `at` (`now` as RFC 3339). Returns true for the first loss of an
    /// episode (nothing counted yet for the type).
    pub(crate) fn record(
        &mut self,
        log_type: &str,
        bytes: u64,
        now: &str,
        at: Instant,
        error: &str,
    ) -> bool {
        match self.types.get_mut(log_type) {
            Some((lost, _, last)) => {
                lost.runs += 1;
                lost.bytes += bytes;
                lost.last = now.to_string();
                *last = at;
                false
            }
            None => {
                let lost = LostOutput {
                    log_type: log_type.to_string(),
                    runs: 1,
                    bytes,
                    first: now.to_string(),
                    last: now.to_string(),
                    // One line in the log: no control characters.
                    error: error
                        .chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .collect(),
                };
                self.types.insert(log_type.to_string(), (lost, at, at));
                true
            }
        }
    }

    /// What is counted for `log_type`, if anything.
    #[cfg(test)]
    fn get(&self, log_type: &str) -> Option<&LostOutput> {
        self.types.get(log_type).map(|(lost, _, _)| lost)
    }

    /// What is counted for `log_type`, once it is time to report it: no
    /// failure for [`QUIET_BEFORE_REPORT`], or the count is
    /// [`ERROR_SUMMARY_INTERVAL`] old.
    pub(crate) fn due(&self, log_type: &str, at: Instant) -> Option<&LostOutput> {
        let (lost, first, last) = self.types.get(log_type)?;
        (at.duration_since(*last) >= QUIET_BEFORE_REPORT
            || at.duration_since(*first) >= ERROR_SUMMARY_INTERVAL)
            .then_some(lost)
    }

    /// Every type with a count (to report what can be at shutdown).
    pub(crate) fn types(&self) -> Vec<String> {
        self.types.keys().cloned().collect()
    }

    /// Forget `log_type`'s count: its line is in its log now.
    pub(crate) fn take(&mut self, log_type: &str) -> Option<LostOutput> {
        self.types.remove(log_type).map(|(lost, _, _)| lost)
    }
}

/// Rate limit for one kind of repeated error in the daemon's log: at most
/// one line per interval, however often the error comes and goes (a
/// nearly full disk fails some writes and not others: every success
/// must not start a new series that is logged at once again).
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last_logged: Option<Instant>,
    /// Errors since the last line logged, and the last of them.
    suppressed: u64,
    last_text: String,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last_logged: None,
            suppressed: 0,
            last_text: String::new(),
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.last_logged
            .is_none_or(|at| now.duration_since(at) >= self.every)
    }

    /// An error happened: the line to log now, if any. The first is logged
    /// as is; later ones at most once per interval, with the count of those
    /// not logged since.
    pub(crate) fn error(&mut self, text: &str, now: Instant) -> Option<String> {
        if !self.due(now) {
            self.suppressed += 1;
            self.last_text = text.to_string();
            return None;
        }
        let line = match std::mem::take(&mut self.suppressed) {
            0 => text.to_string(),
            n => format!("{text} (and {n} more like it not logged)"),
        };
        self.last_logged = Some(now);
        self.last_text.clear();
        Some(line)
    }

    /// The operation worked: the count of errors not logged yet, once the
    /// interval allows a line.
    pub(crate) fn ok(&mut self, now: Instant) -> Option<String> {
        if self.suppressed == 0 || !self.due(now) {
            return None;
        }
        let n = std::mem::take(&mut self.suppressed);
        let text = std::mem::take(&mut self.last_text);
        self.last_logged = Some(now);
        Some(format!("{n} more error(s) not logged; the last: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse the counts back out of a lost-output line: `(runs, bytes)`.
    fn parse_lost_line(line: &str) -> Option<(u64, u64)> {
        let rest = line.split_once(' ')?.1.strip_prefix(LOST_LINE_MARKER)?;
        let (runs, rest) = rest.split_once(" runs (")?;
        let (bytes, _) = rest.split_once(" bytes)")?;
        Some((runs.parse().ok()?, bytes.parse().ok()?))
    }

    #[test]
    fn losses_are_counted_per_type_and_make_one_parseable_line() {
        let mut ledger = LostLedger::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(ledger.record("cpu", 40, "T1", at(0), "No space left\non device"));
        assert!(!ledger.record("cpu", 42, "T2", at(1), "other"));
        assert!(ledger.record("mem", 10, "T3", at(2), "x"));
        // Reported after a quiet while, or when the count gets old.
        assert!(ledger.due("cpu", at(5)).is_none());
        assert!(ledger.due("cpu", at(6)).is_some());
        for s in 3..40 {
            ledger.record("mem", 1, "T", at(s), "x");
        }
        assert!(ledger.due("mem", at(31)).is_none());
        assert!(ledger.due("mem", at(32)).is_some());
        let cpu = ledger.take("cpu").unwrap();
        assert_eq!((cpu.runs, cpu.bytes), (2, 82));
        assert_eq!((cpu.first.as_str(), cpu.last.as_str()), ("T1", "T2"));
        let line = cpu.line("2026-12-03T20:15:09+00:00");
        assert_eq!(
            line,
            "2026-12-03T20:15:09+00:00 pihealth lost 2 runs (82 bytes) of output, not stored \
             from T1 to T2: No space left on device warning\n"
        );
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(parse_lost_line(line.trim_end()), Some((2, 82)));
        assert_eq!(parse_lost_line("T 1 normal"), None);
        assert!(ledger.get("cpu").is_none());
        assert_eq!(ledger.get("mem").unwrap().runs, 38);
    }

    #[test]
    fn a_repeated_error_is_logged_first_then_summarised() {
        let start = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(10));
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(t.error("full", at(0)).as_deref(), Some("full"));
        // 15 a second for 9.9 s, with a success now and then: nothing
        // logged.
        for i in 1..150 {
            assert_eq!(t.error("full", at(i * 66)), None);
            assert_eq!(t.ok(at(i * 66 + 1)), None);
        }
        let summary = t.error("full", at(10_000)).unwrap();
        assert!(summary.contains("149 more"), "{summary}");
        assert_eq!(t.error("full", at(10_100)), None);
        assert_eq!(t.ok(at(10_200)), None);
        let end = t.ok(at(20_000)).unwrap();
        assert!(end.starts_with("1 more error(s)"), "{end}");
        assert_eq!(t.ok(at(40_000)), None);
        // A new series after a quiet interval is logged at once.
        assert_eq!(t.error("again", at(40_100)).as_deref(), Some("again"));
    }
}
