//! Trigger rules: how long a collector's new level must hold before it
//! raises an alarm (`for:`), and how long its return to calm must hold
//! before the recovery alarm (`recover_for:`).
//!
//! Only alarms wait: every run's lines are stored as collected.
//!
//! The rule, per collector type, against the level last alarmed on (the
//! *alarmed* level; `normal` for a type never seen):
//! - A run at the alarmed level ends any streak (the change did not hold).
//! - While the alarmed level is calm (`normal`, `note`, or none yet), a
//!   calm run is taken at once, without alarm (`note` never pages).
//! - Otherwise the run starts or extends a *streak*: consecutive runs in
//!   trouble (`warning`, `critical`, `unknown`, any mix) or consecutive
//!   calm runs (a recovery). A run of the other kind starts a new streak.
//!   When the streak has lasted `for` (trouble) or `recover_for` (calm),
//!   the alarm is raised with the level of the run that completed it.
//!
//! A hold is either a number of consecutive runs (`3 runs`) or a duration
//! (`2m`): the streak's first and latest runs at least that far apart. So
//! a level flapping faster than the hold never alarms, and once alarmed,
//! a recovery flapping faster than `recover_for` never clears it.

use std::time::{Duration, Instant};

use crate::config::{Hold, Trigger};
use crate::level::Level;

/// Consecutive runs away from the alarmed level.
#[derive(Debug, Clone, Copy)]
struct Streak {
    trouble: bool,
    since: Instant,
    runs: u32,
}

/// One type's place in the rule.
#[derive(Debug, Clone, Default)]
pub(crate) struct TypeState {
    /// The level last alarmed on (or, while calm, the latest calm level);
    /// kept across restarts. `None`: never seen.
    pub(crate) alarmed: Option<Level>,
    /// Not kept across restarts: a change still waiting when the agent
    /// stopped is counted again from the first run after the start.
    streak: Option<Streak>,
}

/// What a run means for alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The run is at the alarmed level.
    Same,
    /// A calm level replaced a calm one: recorded, no alarm.
    Settled,
    /// A change still waiting for its hold.
    Waiting,
    /// The change held: alarm now. `previous` is the level alarmed before.
    Raise { previous: Option<Level> },
}

impl TypeState {
    pub(crate) fn with_level(level: Level) -> TypeState {
        TypeState {
            alarmed: Some(level),
            streak: None,
        }
    }

    /// Take one run at `level`, finished at `now`.
    pub(crate) fn step(&mut self, level: Level, trigger: &Trigger, now: Instant) -> Step {
        if self.alarmed == Some(level) {
            self.streak = None;
            return Step::Same;
        }
        let calm_now = self.alarmed.is_none_or(|l| !l.is_problem());
        let trouble = level.is_problem();
        if calm_now && !trouble {
            self.alarmed = Some(level);
            self.streak = None;
            return Step::Settled;
        }
        let streak = match self.streak {
            Some(s) if s.trouble == trouble => Streak {
                runs: s.runs.saturating_add(1),
                ..s
            },
            _ => Streak {
                trouble,
                since: now,
                runs: 1,
            },
        };
        let hold = if trouble {
            trigger.hold
        } else {
            trigger.recover
        };
        if met(
            hold,
            streak.runs,
            now.saturating_duration_since(streak.since),
        ) {
            let previous = self.alarmed.replace(level);
            self.streak = None;
            Step::Raise { previous }
        } else {
            self.streak = Some(streak);
            Step::Waiting
        }
    }
}

/// Whether a streak of `runs` runs, its first and latest `held` apart,
/// meets `hold`.
fn met(hold: Hold, runs: u32, held: Duration) -> bool {
    match hold {
        Hold::Runs(n) => runs >= n,
        Hold::For(d) => held >= d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Level::*;

    fn rules(hold: &str, recover: &str) -> Trigger {
        Trigger {
            hold: hold.parse().unwrap(),
            recover: recover.parse().unwrap(),
        }
    }

    /// Feed runs `interval` apart from a fresh state; the levels raised.
    fn alarms(trigger: Trigger, interval: Duration, levels: &[Level]) -> Vec<Level> {
        let mut state = TypeState::default();
        let t0 = Instant::now();
        let mut raised = Vec::new();
        for (i, &level) in levels.iter().enumerate() {
            if let Step::Raise { .. } = state.step(level, &trigger, t0 + interval * i as u32) {
                raised.push(level);
            }
        }
        raised
    }

    const TEN_S: Duration = Duration::from_secs(10);

    #[test]
    fn without_rules_every_change_alarms_at_once() {
        let got = alarms(
            Trigger::default(),
            TEN_S,
            &[Normal, Warning, Normal, Critical, Critical, Unknown, Note],
        );
        assert_eq!(got, vec![Warning, Normal, Critical, Unknown, Note]);
    }

    #[test]
    fn a_spike_shorter_than_for_raises_nothing() {
        let spike = [Normal, Warning, Critical, Normal, Normal, Warning, Normal];
        assert!(alarms(rules("3 runs", "1 run"), TEN_S, &spike).is_empty());
        // 2m at 10s runs: a 1m50s streak is not enough either.
        let mut levels = vec![Normal];
        levels.extend([Warning; 12]);
        levels.push(Normal);
        assert!(alarms(rules("2m", "1 run"), TEN_S, &levels).is_empty());
    }

    #[test]
    fn sustained_trouble_raises_one_alarm_when_the_hold_is_met() {
        let mut state = TypeState::with_level(Normal);
        let trigger = rules("2m", "1 run");
        let t0 = Instant::now();
        let mut raised_at = Vec::new();
        for i in 0..40u32 {
            if let Step::Raise { previous } = state.step(Warning, &trigger, t0 + TEN_S * i) {
                assert_eq!(previous, Some(Normal));
                raised_at.push(i);
            }
        }
        // First warning at run 0, held 2m at run 12: once, then quiet.
        assert_eq!(raised_at, vec![12]);
        // Mixed trouble levels make one streak; the alarm has the last one.
        let got = alarms(
            rules("3 runs", "1 run"),
            TEN_S,
            &[Warning, Critical, Unknown, Unknown],
        );
        assert_eq!(got, vec![Unknown]);
    }

    #[test]
    fn recovery_is_debounced_by_recover_for() {
        let trigger = rules("1 run", "3 runs");
        let got = alarms(
            trigger,
            TEN_S,
            &[
                Warning, Normal, Normal, Warning, Normal, Note, Normal, Normal,
            ],
        );
        // Warning at once; the first calm streak (2 runs) is broken; the
        // second (Normal, Note, Normal) recovers at its third run.
        assert_eq!(got, vec![Warning, Normal]);
        let mut state = TypeState::with_level(Critical);
        let t0 = Instant::now();
        let trigger = rules("1 run", "1m");
        assert_eq!(state.step(Normal, &trigger, t0), Step::Waiting);
        assert_eq!(state.step(Normal, &trigger, t0 + TEN_S), Step::Waiting);
        assert_eq!(
            state.step(Normal, &trigger, t0 + Duration::from_secs(60)),
            Step::Raise {
                previous: Some(Critical)
            }
        );
    }

    #[test]
    fn flapping_faster_than_the_hold_never_alarms_or_recovers() {
        let flapping: Vec<Level> = (0..100)
            .map(|i| if i % 2 == 0 { Normal } else { Warning })
            .collect();
        assert!(alarms(rules("2 runs", "2 runs"), TEN_S, &flapping).is_empty());
        // Once alarmed, flapping calm never clears it.
        let mut levels = vec![Warning, Warning];
        levels.extend(&flapping);
        assert_eq!(
            alarms(rules("2 runs", "2 runs"), TEN_S, &levels),
            vec![Warning]
        );
        // Escalation flapping (warning/critical) under an alarmed warning:
        // critical never holds, warning is already alarmed.
        let mut state = TypeState::with_level(Warning);
        let t0 = Instant::now();
        for i in 0..50u32 {
            let level = if i % 2 == 0 { Critical } else { Warning };
            let step = state.step(level, &rules("2 runs", "1 run"), t0 + TEN_S * i);
            assert!(!matches!(step, Step::Raise { .. }), "run {i}: {step:?}");
        }
    }

    #[test]
    fn note_never_raises_an_alarm() {
        let got = alarms(
            Trigger::default(),
            TEN_S,
            &[Note, Normal, Note, Note, Normal],
        );
        assert!(got.is_empty(), "{got:?}");
        // A note breaks a trouble streak: it is calm.
        let got = alarms(
            rules("2 runs", "1 run"),
            TEN_S,
            &[Warning, Note, Warning, Note],
        );
        assert!(got.is_empty(), "{got:?}");
        // Recovering to note is a recovery.
        let got = alarms(Trigger::default(), TEN_S, &[Warning, Note]);
        assert_eq!(got, vec![Warning, Note]);
    }

    #[test]
    fn a_duration_hold_is_measured_between_runs_not_counted() {
        // A slow collector (one run every 5m) with `for: 2m`: the second
        // run of the streak meets it.
        let got = alarms(
            rules("2m", "1 run"),
            Duration::from_secs(300),
            &[Normal, Warning, Warning],
        );
        assert_eq!(got, vec![Warning]);
        // `for: 0s` is immediate.
        let got = alarms(rules("0s", "0s"), TEN_S, &[Warning, Normal]);
        assert_eq!(got, vec![Warning, Normal]);
    }
}
