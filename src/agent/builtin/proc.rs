//! proc.sh: `NAME PID USER CPU_PCT MEM_PCT LEVEL` per busy process, or
//! `none normal`.
//!
//! The script looks twice, some seconds apart, and lists what was over the
//! threshold both times. Here the first look is the previous run's, so a
//! run never sleeps: a process is listed when it was over the threshold at
//! the previous run and still is (same pid and name), with this run's
//! values. The first run therefore lists nothing.
//!
//! The figures are ps's (procps-ng 4): %CPU is CPU time over the process's
//! lifetime in per-mille, truncated, printed with one decimal below 100 and
//! whole above; %MEM is resident memory over MemTotal, capped at 99.9. One
//! read of `/proc/PID/stat` per process gives both; the owner is looked up
//! only for the few processes listed.
//!
//! Reading `/proc/PID/stat` costs the kernel ~10 µs a process, so reading
//! all of them every run would alone exceed SPEC §9's 1 ms a round on a
//! host with 100 processes. A process is therefore read only when it could
//! be over the threshold, which is decided without approximation:
//! - %CPU: a process last read with t s of CPU in a life of L s cannot
//!   reach p (a fraction) before d = (p·L − t) / (N − p) more seconds with
//!   all N possible CPUs busy for it; until then it is not read again (with
//!   a margin). A pid whose /proc entry has another inode number is another
//!   process, read at once; so are new pids.
//! - %MEM: no process's resident set exceeds AnonPages + Mapped + Shmem of
//!   /proc/meminfo (plus slack for the kernel's per-CPU counter batching);
//!   below the threshold nobody needs reading for memory, else everybody does.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;

use super::error::CheckError;
use super::{awk_number, read, Context};

/// The kernel's USER_HZ, the unit of /proc/PID/stat times: 100 on every
/// architecture Linux runs pihealth on (alpha and ia64 aside).
const USER_HZ: u64 = 100;

#[derive(Debug, Default)]
pub(crate) struct Proc {
    /// (pid, name) of the processes over the threshold at the previous run.
    previous: Option<HashSet<(u32, String)>>,
    /// What the last read of each process allows skipping.
    known: HashMap<u32, Known>,
    /// Possible CPUs (`/sys/devices/system/cpu/possible`), read once;
    /// `None` when unknown: then every process is read every run.
    cpus: Option<Option<u32>>,
}

/// A process as last read.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// Inode of /proc/PID: another number is another process.
    ino: u64,
    /// The uptime before which its %CPU cannot reach the threshold.
    quiet_until: f64,
}

/// One process as ps would print it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample {
    pub(crate) pid: u32,
    pub(crate) name: String,
    /// %CPU × 10, truncated (ps's `pcpu`).
    pub(crate) cpu_permille: u64,
    /// %MEM × 10, truncated, at most 999.
    pub(crate) mem_permille: u64,
    /// CPU time, in USER_HZ ticks.
    pub(crate) ticks: u64,
    /// Start time after boot, in USER_HZ ticks.
    pub(crate) start: u64,
}

impl Sample {
    pub(crate) fn cpu_text(&self) -> String {
        let p = self.cpu_permille;
        if p > 999 {
            format!("{}", p / 10)
        } else {
            format!("{}.{}", p / 10, p % 10)
        }
    }

    pub(crate) fn mem_text(&self) -> String {
        format!("{}.{}", self.mem_permille / 10, self.mem_permille % 10)
    }
}

impl Proc {
    pub(crate) fn run(&mut self, ctx: &Context) -> Result<Vec<String>, CheckError> {
        let threshold = ctx.limits.get("PIHEALTH_PROC_THRESHOLD")?;
        let mut busy: Vec<Sample> = self
            .look(ctx, threshold)?
            .into_iter()
            .filter(|s| {
                awk_number(&s.cpu_text()) >= threshold || awk_number(&s.mem_text()) >= threshold
            })
            .collect();
        // ps --sort=-pcpu
        busy.sort_by(|a, b| b.cpu_permille.cmp(&a.cpu_permille).then(a.pid.cmp(&b.pid)));
        let now: HashSet<(u32, String)> = busy.iter().map(|s| (s.pid, s.name.clone())).collect();
        let previous = self.previous.replace(now).unwrap_or_default();
        let listed: Vec<&Sample> = busy
            .iter()
            .filter(|s| previous.contains(&(s.pid, s.name.clone())))
            .collect();
        if listed.is_empty() {
            return Ok(vec!["none normal".to_string()]);
        }
        // Owners' names only when somebody is listed.
        let passwd = fs::read_to_string(ctx.roots.etc.join("passwd")).unwrap_or_default();
        let lines: Vec<String> = listed
            .iter()
            .map(|s| {
                let (cpu, mem) = (s.cpu_text(), s.mem_text());
                let warn = awk_number(&cpu) >= 80.0 || awk_number(&mem) >= 80.0;
                format!(
                    "{} {} {} {cpu} {mem} {}",
                    s.name,
                    s.pid,
                    owner(ctx, s.pid, &passwd),
                    if warn { "warning" } else { "note" }
                )
            })
            .collect();
        Ok(lines)
    }
}

impl Proc {
    /// Every process (not thread) that could be over `threshold`, with ps's
    /// %CPU and %MEM (see the module docs for what is skipped). A process
    /// that ends while we read is left out.
    fn look(&mut self, ctx: &Context, threshold: f64) -> Result<Vec<Sample>, CheckError> {
        let uptime_path = ctx.proc_path("uptime");
        let uptime: f64 = read(&uptime_path)?
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| CheckError::Parse(uptime_path.clone()))?;
        let mem = meminfo(ctx)?;
        let page_kib = page_size() / 1024;
        let cpus = *self.cpus.get_or_insert_with(|| possible_cpus(ctx));
        // A resident set can reach the threshold only if all mapped memory could.
        let mem_may_trigger = match mem.mapped_bound_kib {
            Some(bound) => bound as f64 * 100.0 / mem.total_kib as f64 >= threshold,
            None => true,
        };
        let entries = ctx.pid_entries()?;
        let mut out = Vec::new();
        let mut seen: HashMap<u32, Known> = HashMap::with_capacity(self.known.len() + 16);
        let mut buf = String::with_capacity(512);
        let mut path = ctx.roots.proc.clone();
        for entry in entries.iter() {
            let (pid, ino) = (entry.pid, entry.ino);
            if let Some(k) = self.known.get(&pid) {
                if !mem_may_trigger && k.ino == ino && uptime < k.quiet_until {
                    seen.insert(pid, *k);
                    continue;
                }
            }
            buf.clear();
            path.push(pid.to_string());
            path.push("stat");
            let opened = fs::File::open(&path);
            path.pop();
            path.pop();
            let Ok(mut f) = opened else {
                continue;
            };
            if std::io::Read::read_to_string(&mut f, &mut buf).is_err() {
                continue;
            }
            if let Some(s) = parse_stat(pid, &buf, uptime, mem.total_kib, page_kib) {
                let quiet_until = uptime + quiet_for(&s, uptime, threshold, cpus);
                seen.insert(pid, Known { ino, quiet_until });
                out.push(s);
            }
        }
        // Gone processes are forgotten.
        self.known = seen;
        Ok(out)
    }
}

/// Seconds before `s` could reach `threshold` % CPU with every one of
/// `cpus` CPUs busy for it, less a margin; 0 when it may already.
fn quiet_for(s: &Sample, uptime: f64, threshold: f64, cpus: Option<u32>) -> f64 {
    let Some(n) = cpus else {
        return 0.0;
    };
    let p = threshold / 100.0;
    let life = uptime - s.start as f64 / USER_HZ as f64;
    let cpu = s.ticks as f64 / USER_HZ as f64;
    if p <= 0.0 || life <= 0.0 || cpu >= p * life {
        return 0.0;
    }
    if f64::from(n) <= p {
        // More than all CPUs: never by CPU; still looked at once a minute.
        return 60.0;
    }
    let d = (p * life - cpu) / (f64::from(n) - p);
    // Margin for clock granularity (ticks, the uptime's 10 ms).
    (d * 0.9 - 0.5).clamp(0.0, 3600.0)
}

/// `0-3` or `0,2-5`: how many CPUs this kernel may ever bring online.
fn possible_cpus(ctx: &Context) -> Option<u32> {
    let text = fs::read_to_string(ctx.roots.sys.join("devices/system/cpu/possible")).ok()?;
    let mut n = 0u32;
    for part in text.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        n = n.checked_add(b.checked_sub(a)?.checked_add(1)?)?;
    }
    (n > 0).then_some(n)
}

struct MemInfo {
    total_kib: u64,
    /// AnonPages + Mapped + Shmem + slack: no resident set is larger.
    mapped_bound_kib: Option<u64>,
}

fn meminfo(ctx: &Context) -> Result<MemInfo, CheckError> {
    let path = ctx.proc_path("meminfo");
    let text = read(&path)?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(|v| awk_number(v.trim()) as u64)
    };
    let total_kib = field("MemTotal")
        .filter(|&t| t > 0)
        .ok_or_else(|| CheckError::Parse(path.clone()))?;
    let mapped_bound_kib = match (field("AnonPages"), field("Mapped"), field("Shmem")) {
        // Slack: per-CPU RSS counters may lag by 64 pages a thread; 2% of
        // memory covers that many times over.
        (Some(a), Some(m), Some(s)) => Some(a + m + s + total_kib / 50),
        _ => None,
    };
    Ok(MemInfo {
        total_kib,
        mapped_bound_kib,
    })
}

fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(size)) if size > 0 => size as u64,
        _ => 4096,
    }
}

/// `pid (comm) state ppid … utime(14) stime(15) … starttime(22) vsize rss(24)`.
fn parse_stat(pid: u32, text: &str, uptime: f64, mem_total: u64, page_kib: u64) -> Option<Sample> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?;
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is the state (field 3).
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = field(14)? + field(15)?;
    let start = field(22)?;
    let rss_kib = field(24)? * page_kib;
    // procps-ng 4: per-mille of CPU over the jiffies of the process's life
    // (from /proc/uptime, fractional).
    let life = (uptime - start as f64 / USER_HZ as f64) * USER_HZ as f64;
    let jiffies = if life > 0.0 { life as u64 } else { 0 };
    let cpu_permille = (ticks * 1000).checked_div(jiffies).unwrap_or(0);
    let mem_permille = (rss_kib * 1000 / mem_total).min(999);
    Some(Sample {
        pid,
        name: display_name(comm),
        cpu_permille,
        mem_permille,
        ticks,
        start,
    })
}

/// ps shows control characters as `?`; the script joins words with `_`.
fn display_name(comm: &str) -> String {
    let shown: String = comm
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect();
    shown.split_whitespace().collect::<Vec<_>>().join("_")
}

/// ps's `user:32`: the effective user's name, or the uid when unknown or
/// longer than 32 characters. /proc/PID belongs to the effective uid.
pub(super) fn owner(ctx: &Context, pid: u32, passwd: &str) -> String {
    let uid = match fs::metadata(ctx.roots.proc.join(pid.to_string())) {
        Ok(m) => m.uid(),
        Err(_) => return "?".to_string(),
    };
    user_name(passwd, uid)
}

pub(super) fn user_name(passwd: &str, uid: u32) -> String {
    let uid_text = uid.to_string();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[2] == uid_text && !f[0].is_empty())
        .map(|f| f[0].to_string())
        .filter(|name| name.chars().count() <= 32)
        .unwrap_or(uid_text)
}

#[cfg(test)]
mod tests {
    use super::super::tests::Tree;
    use super::*;

    fn stat(pid: u32, comm: &str, utime: u64, stime: u64, start: u64, rss: u64) -> String {
        format!(
            "{pid} ({comm}) R 1 {pid} {pid} 0 -1 4194304 100 0 0 0 {utime} {stime} 0 0 20 0 1 0 {start} 1000000 {rss} 18446744073709551615\n"
        )
    }

    #[test]
    fn ps_figures() {
        // 1000 s up, started at 500 s, 400 s of CPU: 80.0%.
        let s = parse_stat(
            7,
            &stat(7, "busy loop", 30000, 10000, 50000, 1000),
            1000.0,
            100_000,
            4,
        )
        .unwrap();
        assert_eq!(s.name, "busy_loop");
        assert_eq!(s.cpu_text(), "80.0");
        assert_eq!(s.mem_text(), "4.0");
        // Fractions of a second count (procps-ng 4): 400 s of 500.9.
        let s = parse_stat(7, &stat(7, "b", 30000, 10000, 50000, 1), 1000.9, 100_000, 4).unwrap();
        assert_eq!(s.cpu_text(), "79.8");
        // Two cores for its whole life: 200, whole.
        let s = parse_stat(
            8,
            &stat(8, "x) (y", 20000, 0, 0, 100_000),
            100.0,
            100_000,
            4,
        )
        .unwrap();
        assert_eq!(s.name, "x)_(y");
        assert_eq!(s.cpu_text(), "200");
        assert_eq!(s.mem_text(), "99.9");
        assert!(parse_stat(9, "9 (z) R 1", 1.0, 1, 4).is_none());
    }

    #[test]
    fn listed_only_when_busy_on_two_runs() {
        let t = Tree::new();
        t.write("proc/uptime", "1000.00 1.00\n");
        t.write("proc/meminfo", "MemTotal: 100000 kB\n");
        t.write("etc/passwd", "root:x:0:0::/root:/bin/sh\n");
        let page_kib = page_size() / 1024;
        t.write("proc/1/stat", &stat(1, "init", 1, 1, 0, 10));
        t.write("proc/10/stat", &stat(10, "hog", 50000, 0, 0, 1));
        t.write("proc/11/stat", &stat(11, "fat", 0, 0, 0, 60_000 / page_kib));
        let ctx = t.context();
        let mut p = Proc::default();
        assert_eq!(p.run(&ctx).unwrap(), vec!["none normal"]);
        let me = user_name(
            &fs::read_to_string(ctx.roots.etc.join("passwd")).unwrap(),
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(t.dir.path()).unwrap()),
        );
        assert_eq!(
            p.run(&ctx).unwrap(),
            vec![
                format!("hog 10 {me} 50.0 0.0 note"),
                format!("fat 11 {me} 0.0 60.0 note")
            ]
        );
        // pid 10 is now another program: not the same process.
        t.write("proc/10/stat", &stat(10, "other", 90000, 0, 0, 1));
        assert_eq!(
            p.run(&ctx).unwrap(),
            vec![format!("fat 11 {me} 0.0 60.0 note")]
        );
        assert_eq!(
            p.run(&ctx).unwrap(),
            vec![
                format!("other 10 {me} 90.0 0.0 warning"),
                format!("fat 11 {me} 0.0 60.0 note")
            ]
        );
    }

    #[test]
    fn quiet_time_is_a_bound_on_reaching_the_threshold() {
        let s = |ticks: u64, start: u64| Sample {
            pid: 1,
            name: "x".into(),
            cpu_permille: 0,
            mem_permille: 0,
            ticks,
            start,
        };
        // 1000 s old with 10 s of CPU: 50% needs (500 − 10) / (2 − 0.5) s
        // with both CPUs; 0.9 of that less half a second.
        let q = quiet_for(&s(1000, 0), 1000.0, 50.0, Some(2));
        assert!((q - (490.0 / 1.5 * 0.9 - 0.5)).abs() < 1e-9, "{q}");
        // Already there, or nothing known about the CPUs: read every run.
        assert_eq!(quiet_for(&s(60000, 0), 1000.0, 50.0, Some(2)), 0.0);
        assert_eq!(quiet_for(&s(1000, 0), 1000.0, 50.0, None), 0.0);
        // A threshold above all CPUs together: only a periodic look.
        assert_eq!(quiet_for(&s(1000, 0), 1000.0, 250.0, Some(2)), 60.0);
    }

    #[test]
    fn quiet_processes_are_not_read_again_new_ones_are() {
        let t = Tree::new();
        t.write("proc/uptime", "1000.00 1.00\n");
        t.write(
            "proc/meminfo",
            "MemTotal: 100000 kB\nAnonPages: 10000 kB\nMapped: 5000 kB\nShmem: 100 kB\n",
        );
        t.write("sys/devices/system/cpu/possible", "0-1\n");
        t.write("proc/1/stat", &stat(1, "idle", 100, 0, 0, 10));
        let ctx = t.context();
        let mut p = Proc::default();
        assert_eq!(p.run(&ctx).unwrap(), vec!["none normal"]);
        assert_eq!(p.run(&ctx).unwrap(), vec!["none normal"]);
        // pid 1 turns busy (impossible so fast for a real process): it is
        // not read again within its quiet time, so it stays unlisted...
        t.write("proc/1/stat", &stat(1, "idle", 90000, 0, 0, 10));
        p.run(&ctx).unwrap();
        assert_eq!(p.run(&ctx).unwrap(), vec!["none normal"]);
        // ... while a new pid is read at once.
        t.write("proc/2/stat", &stat(2, "new", 90000, 0, 0, 10));
        p.run(&ctx).unwrap();
        assert_eq!(p.run(&ctx).unwrap().len(), 1);
        // Past its quiet time pid 1 is read again.
        t.write("proc/uptime", "1400.00 1.00\n");
        p.run(&ctx).unwrap();
        let lines = p.run(&ctx).unwrap();
        assert!(lines.iter().any(|l| l.starts_with("idle 1 ")), "{lines:?}");
        // When memory could reach the threshold everybody is read.
        let mut q = Proc::default();
        t.write("proc/1/stat", &stat(1, "idle", 100, 0, 0, 10));
        q.run(&ctx).unwrap();
        t.write(
            "proc/meminfo",
            "MemTotal: 100000 kB\nAnonPages: 60000 kB\nMapped: 5000 kB\nShmem: 100 kB\n",
        );
        t.write("proc/1/stat", &stat(1, "idle", 90000, 0, 0, 10));
        q.run(&ctx).unwrap();
        let lines = q.run(&ctx).unwrap();
        assert!(lines.iter().any(|l| l.starts_with("idle 1 ")), "{lines:?}");
    }

    #[test]
    fn user_names_from_passwd() {
        let passwd = "root:x:0:0::/:/bin/sh\nbob:x:1000:1000::/:/bin/sh\nthisnameisfarlongerthanthirtytwocharacters:x:1001:1::/:\n";
        assert_eq!(user_name(passwd, 0), "root");
        assert_eq!(user_name(passwd, 1000), "bob");
        assert_eq!(user_name(passwd, 1001), "1001");
        assert_eq!(user_name(passwd, 4242), "4242");
    }
}
