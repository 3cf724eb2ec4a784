//! mem.sh: `TOTAL_MIB USED_MIB USED_PCT DYN_AVG_PCT LEVEL`.
//!
//! The dynamic average (0.3 × previous + 0.7 × current) lives in memory
//! instead of the script's state file: the agent is the one long-lived
//! process that runs the check, so nothing is written per run.

use super::error::CheckError;
use super::{fixed2, level, mem_usage, value_of, Context};

#[derive(Debug, Default)]
pub(crate) struct Mem {
    /// The previous run's average as printed (two decimals).
    average: Option<String>,
}

impl Mem {
    pub(crate) fn run(&mut self, ctx: &Context) -> Result<String, CheckError> {
        let note = ctx.limits.get("PIHEALTH_MEM_NOTE")?;
        let warn = ctx.limits.get("PIHEALTH_MEM_WARNING")?;
        let crit = ctx.limits.get("PIHEALTH_MEM_CRITICAL")?;
        let m = mem_usage(ctx)?;
        ctx.remember_mem(&m);
        // The script accepts a previous value of the form [0-9]+(.[0-9]+)?
        // only; anything else counts as a first run.
        let average = match self.average.as_deref().filter(|p| plain_number(p)) {
            Some(p) => fixed2(0.3 * value_of(p) + 0.7 * value_of(&m.used_pct)),
            None => m.used_pct.clone(),
        };
        self.average = Some(average.clone());
        Ok(format!(
            "{} {} {} {average} {}",
            m.total_mib,
            m.used_mib,
            m.used_pct,
            level(value_of(&m.used_pct), note, warn, crit)
        ))
    }
}

fn plain_number(s: &str) -> bool {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && digits(frac)
}

#[cfg(test)]
mod tests {
    use super::super::tests::Tree;
    use super::*;

    #[test]
    fn dynamic_average_is_30_percent_previous_70_percent_current() {
        let t = Tree::new();
        let meminfo =
            |avail: u64| format!("MemTotal: 1048576 kB\nMemFree: 1 kB\nMemAvailable: {avail} kB\n");
        t.write("proc/meminfo", &meminfo(524288));
        let ctx = t.context();
        let mut mem = Mem::default();
        assert_eq!(mem.run(&ctx).unwrap(), "1024 512 50.00 50.00 normal");
        t.write("proc/meminfo", &meminfo(104857));
        // 0.3 × 50 + 0.7 × 90.00 = 78.00; level from the current value.
        assert_eq!(mem.run(&ctx).unwrap(), "1024 921 90.00 78.00 critical");
        t.write("proc/meminfo", &meminfo(262144));
        // 0.3 × 78 + 0.7 × 75 = 75.90
        assert_eq!(mem.run(&ctx).unwrap(), "1024 768 75.00 75.90 note");
    }

    #[test]
    fn a_negative_average_counts_as_a_first_run() {
        assert!(plain_number("12.50"));
        assert!(!plain_number("-1.00"));
        assert!(!plain_number(""));
    }
}
