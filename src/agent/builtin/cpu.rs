//! cpu.sh: `LOAD1 LOAD5 LOAD15 USAGE_PCT TEMP_C LEVEL`.
//!
//! The script sleeps half a second between two `/proc/stat` samples; here
//! the previous run's sample is the first one (the first run uses the
//! counters since boot), so a run never sleeps and usage covers the whole
//! interval instead of a half-second glimpse.

use super::error::CheckError;
use super::{first_line, fixed2, hottest_temp, level, read, value_of, Context};

#[derive(Debug, Default)]
pub(crate) struct Cpu {
    /// (total, idle) jiffies of the previous run.
    previous: Option<(u64, u64)>,
}

impl Cpu {
    pub(crate) fn run(&mut self, ctx: &Context) -> Result<String, CheckError> {
        let cpu_note = ctx.limits.get("PIHEALTH_CPU_NOTE")?;
        let cpu_warn = ctx.limits.get("PIHEALTH_CPU_WARNING")?;
        let cpu_crit = ctx.limits.get("PIHEALTH_CPU_CRITICAL")?;
        let temp_note = ctx.limits.get("PIHEALTH_TEMP_NOTE")?;
        let temp_warn = ctx.limits.get("PIHEALTH_TEMP_WARNING")?;
        let temp_crit = ctx.limits.get("PIHEALTH_TEMP_CRITICAL")?;

        let loadavg_path = ctx.proc_path("loadavg");
        let loadavg = read(&loadavg_path)?;
        let loads: Vec<&str> = first_line(&loadavg).split_whitespace().take(3).collect();
        if loads.len() < 3 {
            return Err(CheckError::Parse(loadavg_path.clone()));
        }

        let (total, idle) = sample(ctx)?;
        let (total0, idle0) = self.previous.unwrap_or((0, 0));
        self.previous = Some((total, idle));
        let usage = fixed2(usage_pct(total, idle, total0, idle0));

        let temp = hottest_temp(ctx);
        let mut lvl = level(value_of(&usage), cpu_note, cpu_warn, cpu_crit);
        if temp != "-" {
            // Keep the worse of the two.
            lvl = lvl.max(level(value_of(&temp), temp_note, temp_warn, temp_crit));
        }
        Ok(format!(
            "{} {} {} {usage} {temp} {lvl}",
            loads[0], loads[1], loads[2]
        ))
    }
}

/// The script's `(dt - di) * 100 / dt`, 0 when no time passed (or the
/// counters went back, e.g. a CPU went offline).
fn usage_pct(total: u64, idle: u64, total0: u64, idle0: u64) -> f64 {
    let dt = total as f64 - total0 as f64;
    let di = idle as f64 - idle0 as f64;
    if dt > 0.0 {
        (dt - di) * 100.0 / dt
    } else {
        0.0
    }
}

/// First line of /proc/stat: `cpu user nice system idle iowait irq softirq
/// steal guest guest_nice`; guest time is already in user, so only the
/// first eight are summed. Returns (total, idle + iowait).
fn sample(ctx: &Context) -> Result<(u64, u64), CheckError> {
    let path = ctx.proc_path("stat");
    let text = read(&path)?;
    let bad = || CheckError::Parse(path.clone());
    let fields: Vec<u64> = first_line(&text)
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if fields.len() < 8 {
        return Err(bad());
    }
    Ok((fields.iter().sum(), fields[3] + fields[4]))
}

#[cfg(test)]
mod tests {
    use super::super::tests::Tree;
    use super::*;

    #[test]
    fn usage_from_the_previous_sample_and_temperature_level() {
        let t = Tree::new();
        t.write("proc/loadavg", "1.00 0.50 0.25 2/300 99\n");
        t.write(
            "proc/stat",
            "cpu  100 0 100 700 100 0 0 0 5 5\ncpu0 1 2 3\n",
        );
        let ctx = t.context();
        let mut cpu = Cpu::default();
        // Since boot: busy 200 of 1000.
        assert_eq!(cpu.run(&ctx).unwrap(), "1.00 0.50 0.25 20.00 - normal");
        // Nothing moved: 0, like the script over an idle window.
        assert_eq!(cpu.run(&ctx).unwrap(), "1.00 0.50 0.25 0.00 - normal");
        // 75 busy of 100: note at 70.
        t.write("proc/stat", "cpu  150 0 125 725 100 0 0 0 5 5\n");
        assert_eq!(cpu.run(&ctx).unwrap(), "1.00 0.50 0.25 75.00 - note");
        // A hot zone makes it warning although usage is 0.
        t.write("sys/class/thermal/thermal_zone0/temp", "70000\n");
        assert_eq!(cpu.run(&ctx).unwrap(), "1.00 0.50 0.25 0.00 70.00 warning");
    }

    #[test]
    fn bad_input_is_an_error() {
        let t = Tree::new();
        t.write("proc/loadavg", "1.00\n");
        t.write("proc/stat", "cpu  1 2 3 4 5 6 7 8\n");
        assert!(Cpu::default()
            .run(&t.context())
            .unwrap_err()
            .to_string()
            .contains("loadavg"));
        t.write("proc/loadavg", "1.00 2.00 3.00 1/1 1\n");
        t.write("proc/stat", "cpu  1 2 x\n");
        assert!(Cpu::default()
            .run(&t.context())
            .unwrap_err()
            .to_string()
            .contains("stat"));
        assert_eq!(usage_pct(10, 5, 20, 5), 0.0);
    }
}
