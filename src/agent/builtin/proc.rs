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

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;

use super::{awk_number, read, Context};

/// The kernel's USER_HZ, the unit of /proc/PID/stat times: 100 on every
/// architecture Linux runs pihealth on (alpha and ia64 aside).
const USER_HZ: u64 = 100;

#[derive(Debug, Default)]
pub struct Proc {
    /// (pid, name) of the processes over the threshold at the previous run.
    previous: Option<HashSet<(u32, String)>>,
}

/// One process as ps would print it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample {
    pub pid: u32,
    pub name: String,
    /// %CPU × 10, truncated (ps's `pcpu`).
    pub cpu_permille: u64,
    /// %MEM × 10, truncated, at most 999.
    pub mem_permille: u64,
}

impl Sample {
    pub fn cpu_text(&self) -> String {
        let p = self.cpu_permille;
        if p > 999 {
            format!("{}", p / 10)
        } else {
            format!("{}.{}", p / 10, p % 10)
        }
    }

    pub fn mem_text(&self) -> String {
        format!("{}.{}", self.mem_permille / 10, self.mem_permille % 10)
    }
}

impl Proc {
    pub fn run(&mut self, ctx: &Context) -> Result<Vec<String>, String> {
        let threshold = ctx.limits.get("PIHEALTH_PROC_THRESHOLD")?;
        let mut busy: Vec<Sample> = look(ctx)?
            .into_iter()
            .filter(|s| {
                awk_number(&s.cpu_text()) >= threshold || awk_number(&s.mem_text()) >= threshold
            })
            .collect();
        // ps --sort=-pcpu
        busy.sort_by(|a, b| b.cpu_permille.cmp(&a.cpu_permille).then(a.pid.cmp(&b.pid)));
        let now: HashSet<(u32, String)> = busy.iter().map(|s| (s.pid, s.name.clone())).collect();
        let previous = self.previous.replace(now).unwrap_or_default();
        let passwd = fs::read_to_string(ctx.roots.etc.join("passwd")).unwrap_or_default();
        let lines: Vec<String> = busy
            .iter()
            .filter(|s| previous.contains(&(s.pid, s.name.clone())))
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
        if lines.is_empty() {
            return Ok(vec!["none normal".to_string()]);
        }
        Ok(lines)
    }
}

/// Every process (not thread) with ps's %CPU and %MEM. A process that ends
/// while we read is left out.
pub(super) fn look(ctx: &Context) -> Result<Vec<Sample>, String> {
    let uptime_path = ctx.proc_path("uptime");
    let uptime: f64 = read(&uptime_path)?
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("cannot parse {}", uptime_path.display()))?;
    let mem_total = mem_total_kib(ctx)?;
    let page_kib = page_size() / 1024;
    let dir = fs::read_dir(&ctx.roots.proc)
        .map_err(|e| format!("cannot read {}: {e}", ctx.roots.proc.display()))?;
    let mut out = Vec::new();
    let mut buf = String::with_capacity(512);
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        buf.clear();
        let Ok(mut f) = fs::File::open(entry.path().join("stat")) else {
            continue;
        };
        if std::io::Read::read_to_string(&mut f, &mut buf).is_err() {
            continue;
        }
        if let Some(s) = parse_stat(pid, &buf, uptime, mem_total, page_kib) {
            out.push(s);
        }
    }
    Ok(out)
}

fn mem_total_kib(ctx: &Context) -> Result<u64, String> {
    let path = ctx.proc_path("meminfo");
    read(&path)?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|v| awk_number(v.trim()) as u64)
        .filter(|&t| t > 0)
        .ok_or_else(|| format!("cannot parse {}", path.display()))
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
    fn user_names_from_passwd() {
        let passwd = "root:x:0:0::/:/bin/sh\nbob:x:1000:1000::/:/bin/sh\nthisnameisfarlongerthanthirtytwocharacters:x:1001:1::/:\n";
        assert_eq!(user_name(passwd, 0), "root");
        assert_eq!(user_name(passwd, 1000), "bob");
        assert_eq!(user_name(passwd, 1001), "1001");
        assert_eq!(user_name(passwd, 4242), "4242");
    }
}
