//! sysinfo.sh: `HOSTNAME OS KERNEL UPTIME_S LOAD1 DISK_TOTAL_MIB
//! DISK_USED_PCT MEM_TOTAL_MIB MEM_USED_PCT TEMP DISK_LEVEL MEM_LEVEL
//! TEMP_LEVEL`, the disk figures being disk's total line.

use std::fs;

use super::error::CheckError;
use super::{disk, first_line, hottest_temp, level, mem_usage, read, value_of, Context};
use crate::level::Level;

/// bash's `read -r x`: the first line without surrounding blanks.
fn read_word(ctx: &Context, rel: &str) -> Result<String, CheckError> {
    let path = ctx.proc_path(rel);
    Ok(first_line(&read(&path)?)
        .trim_matches([' ', '\t'])
        .to_string())
}

/// PRETTY_NAME from os-release (`/etc`, then `/usr/lib` beside it), quotes
/// off, blanks as `_`; `uname -s` when there is none.
fn os_name(ctx: &Context) -> String {
    let usr_lib = ctx
        .roots
        .etc
        .parent()
        .map(|root| root.join("usr/lib/os-release"));
    let files = [Some(ctx.roots.etc.join("os-release")), usr_lib];
    for path in files.iter().flatten() {
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if key != "PRETTY_NAME" {
                continue;
            }
            let v = value.strip_prefix(['"', '\'']).unwrap_or(value);
            let v = v.strip_suffix(['"', '\'']).unwrap_or(v);
            let mut out = String::new();
            let mut blank = false;
            for c in v.chars() {
                if c == ' ' || c == '\t' {
                    if !blank {
                        out.push('_');
                    }
                    blank = true;
                } else {
                    out.push(c);
                    blank = false;
                }
            }
            if !out.is_empty() {
                return out;
            }
            // awk printed an empty line: the script falls back to uname.
            return uname(ctx);
        }
    }
    uname(ctx)
}

fn uname(ctx: &Context) -> String {
    read_word(ctx, "sys/kernel/ostype").unwrap_or_else(|_| "Linux".to_string())
}

pub(crate) fn run(ctx: &Context) -> Result<String, CheckError> {
    let mem_note = ctx.limits.get("PIHEALTH_MEM_NOTE")?;
    let mem_warn = ctx.limits.get("PIHEALTH_MEM_WARNING")?;
    let mem_crit = ctx.limits.get("PIHEALTH_MEM_CRITICAL")?;
    let temp_note = ctx.limits.get("PIHEALTH_TEMP_NOTE")?;
    let temp_warn = ctx.limits.get("PIHEALTH_TEMP_WARNING")?;
    let temp_crit = ctx.limits.get("PIHEALTH_TEMP_CRITICAL")?;
    let host = read_word(ctx, "sys/kernel/hostname")?;
    let kernel = read_word(ctx, "sys/kernel/osrelease")?;
    let uptime = read_word(ctx, "uptime")?;
    let uptime = uptime.split([' ', '\t']).next().unwrap_or("");
    // ${uptime%.*}
    let uptime = uptime.rsplit_once('.').map_or(uptime, |(whole, _)| whole);
    let load = read_word(ctx, "loadavg")?;
    let load1 = load.split([' ', '\t']).next().unwrap_or("");
    let os = os_name(ctx);
    let d = match ctx.recent_disk() {
        Some(total) => total,
        None => {
            disk::disks(ctx)
                .map_err(|e| CheckError::Disk(Box::new(e)))?
                .total
        }
    };
    let m = match ctx.recent_mem() {
        Some(m) => m,
        None => mem_usage(ctx)?,
    };
    let temp = hottest_temp(ctx);
    let temp_level = if temp == "-" {
        Level::Normal
    } else {
        level(value_of(&temp), temp_note, temp_warn, temp_crit)
    };
    Ok(format!(
        "{} {os} {} {uptime} {load1} {} {} {} {} {temp} {} {} {temp_level}",
        host.replace(' ', "_"),
        kernel.replace(' ', "_"),
        d.total_mib,
        d.total_pct,
        m.total_mib,
        m.used_pct,
        d.total_level,
        level(value_of(&m.used_pct), mem_note, mem_warn, mem_crit),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::disk::tests::FakeFs;
    use super::super::tests::Tree;
    use super::*;

    /// A host named `hostname` with 1 GiB of memory, `available_kib` of it
    /// available, and a load of 0.10.
    fn host(hostname: &str, osrelease: &str, uptime: &str, available_kib: u64) -> Tree {
        let t = Tree::new();
        t.write("proc/sys/kernel/hostname", &format!("{hostname}\n"));
        t.write("proc/sys/kernel/osrelease", &format!("{osrelease}\n"));
        t.write("proc/uptime", &format!("{uptime}\n"));
        t.write("proc/loadavg", "0.10 0.20 0.30 1/1 1\n");
        t.write(
            "proc/meminfo",
            &format!("MemTotal: 1048576 kB\nMemAvailable: {available_kib} kB\n"),
        );
        t
    }

    #[test]
    fn takes_disk_and_mem_from_the_same_round() {
        let t = host("pi", "6.1", "10.5 1", 524288);
        t.write(
            "proc/self/mountinfo",
            "27 1 254:0 / / rw - ext4 /dev/vda rw\n",
        );
        let mut table = std::collections::HashMap::new();
        table.insert(
            "/".to_string(),
            (
                1,
                Some(super::disk::FsUsage {
                    total_kib: 2048,
                    used_kib: 1024,
                    avail_kib: 1024,
                }),
            ),
        );
        let mut ctx = t.context();
        ctx.fs = Box::new(FakeFs(table));
        super::super::disk::run(&ctx).unwrap();
        super::super::mem::Mem::default().run(&ctx).unwrap();
        // Later reads would differ: sysinfo still shows this round's.
        t.write("proc/meminfo", "MemTotal: 1048576 kB\nMemAvailable: 1 kB\n");
        t.write("proc/self/mountinfo", "");
        assert_eq!(
            run(&ctx).unwrap(),
            "pi Linux 6.1 10 0.10 2 50.00 1024 50.00 - normal normal normal"
        );
    }

    #[test]
    fn summarises_the_host() {
        let t = host("pi 1", "6.1.0-rpi7", "12345.67 999.00", 104858);
        t.write("proc/self/mountinfo", "");
        t.write(
            "etc/os-release",
            "NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12  (bookworm)\"\n",
        );
        t.write("sys/class/thermal/thermal_zone0/temp", "52000\n");
        let mut ctx = t.context();
        ctx.fs = Box::new(FakeFs(Default::default()));
        assert_eq!(
            run(&ctx).unwrap(),
            "pi_1 Debian_GNU/Linux_12_(bookworm) 6.1.0-rpi7 12345 0.10 0 0.00 1024 90.00 52.00 normal critical note"
        );
        std::fs::remove_file(t.dir.path().join("etc/os-release")).unwrap();
        t.write("usr/lib/os-release", "PRETTY_NAME='Raspbian'\n");
        assert!(run(&ctx).unwrap().starts_with("pi_1 Raspbian 6.1.0-rpi7 "));
        std::fs::remove_file(t.dir.path().join("usr/lib/os-release")).unwrap();
        t.write("proc/sys/kernel/ostype", "Linux\n");
        assert!(run(&ctx).unwrap().starts_with("pi_1 Linux "));
    }
}
