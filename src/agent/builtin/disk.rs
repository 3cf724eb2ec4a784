//! disk.sh: per real filesystem `MOUNT TOTAL_MIB FREE_MIB USED_PCT LEVEL`,
//! then `total TOTAL_MIB FREE_MIB USED_PCT LEVEL`.
//!
//! The script reads `df -P -T -k -l` and filters it; this follows df's own
//! choice of filesystems (coreutils `filter_mount_list`: local only, no
//! pseudo filesystems, one entry per device as `stat` sees it, zero-sized
//! ones hidden) and then the script's (its skip list, cgroups, one line per
//! device name), so both list the same mounts in the same order.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::error::CheckError;
use super::{fixed2, level, read, value_of, Context};
use crate::level::Level;

/// Sizes of one filesystem in KiB, as df prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FsUsage {
    pub(crate) total_kib: u64,
    /// Total less the blocks free for root.
    pub(crate) used_kib: u64,
    /// Free for ordinary users.
    pub(crate) avail_kib: u64,
}

/// `stat` and `statvfs` of a mount point: the real calls in the agent, a
/// table in tests (the fixture's mount points do not exist).
pub(crate) trait FsProbe: Send + Sync {
    /// `st_dev` of the path.
    fn device(&self, path: &Path) -> Option<u64>;
    fn usage(&self, path: &Path) -> Option<FsUsage>;
}

/// The real `stat(2)` and `statvfs(3)`.
pub(crate) struct LiveFs;

impl FsProbe for LiveFs {
    fn device(&self, path: &Path) -> Option<u64> {
        std::fs::metadata(path).ok().map(|m| m.dev())
    }

    fn usage(&self, path: &Path) -> Option<FsUsage> {
        let s = nix::sys::statvfs::statvfs(path).ok()?;
        let unit = match s.fragment_size() {
            0 => s.block_size(),
            f => f,
        } as u128;
        // df rounds up to whole KiB (coreutils: human_ceiling).
        let kib = |blocks: u64| u64::try_from((blocks as u128 * unit).div_ceil(1024)).ok();
        let blocks = s.blocks() as u64;
        Some(FsUsage {
            total_kib: kib(blocks)?,
            used_kib: kib(blocks.saturating_sub(s.blocks_free() as u64))?,
            avail_kib: kib(s.blocks_available() as u64)?,
        })
    }
}

/// The script's skip list: pseudo and memory-backed filesystems, read-only
/// images (always 100% used); and every `cgroup*`.
const SKIPPED_TYPES: [&str; 28] = [
    "tmpfs",
    "devtmpfs",
    "ramfs",
    "overlay",
    "aufs",
    "squashfs",
    "iso9660",
    "udf",
    "proc",
    "sysfs",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "efivarfs",
    "rpc_pipefs",
    "nsfs",
    "fuse.lxcfs",
    "fuse.gvfsd-fuse",
    "fuse.portal",
];

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
struct Mount {
    /// `major:minor` as the kernel lists it.
    dev: u64,
    root: String,
    dir: String,
    fstype: String,
    source: String,
}

/// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL…] - TYPE SOURCE SUPER`;
/// lines that do not parse are left out, as df leaves them.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let mut r = right.split(' ');
            let (major, minor) = l.get(2)?.split_once(':')?;
            let (major, minor): (u64, u64) = (major.parse().ok()?, minor.parse().ok()?);
            Some(Mount {
                dev: (major << 32) | minor,
                root: unescape(l.get(3)?),
                dir: unescape(l.get(4)?),
                fstype: unescape(r.next()?),
                source: unescape(r.next()?),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// gnulib's ME_REMOTE: what `df -l` leaves out (and never stats: a dead
/// NFS server would hang it).
fn is_remote(m: &Mount) -> bool {
    let s = m.source.as_str();
    s.contains(':')
        || (s.starts_with("//") && matches!(m.fstype.as_str(), "smbfs" | "smb3" | "cifs"))
        || matches!(
            m.fstype.as_str(),
            "acfs" | "afs" | "coda" | "auristorfs" | "fhgfs" | "gpfs" | "ibrix" | "ocfs2" | "vxfs"
        )
        || s == "-hosts"
}

/// gnulib's ME_DUMMY: what df shows only with `-a`.
fn is_dummy(m: &Mount) -> bool {
    matches!(
        m.fstype.as_str(),
        "autofs"
            | "proc"
            | "subfs"
            | "debugfs"
            | "devpts"
            | "fusectl"
            | "fuse.portal"
            | "mqueue"
            | "rpc_pipefs"
            | "sysfs"
            | "devfs"
            | "kernfs"
            | "ignore"
            | "none"
            | "rootfs"
    )
}

/// coreutils df's `filter_mount_list`: one entry per device (`stat`'s
/// st_dev of the mount point, so an overmounted point counts as its top
/// filesystem); among duplicates a real device path wins, then the entry
/// nearer the root, then one mounted over the same point.
///
/// Only entries the script may print are stat'ed (each `stat` of a mount
/// point costs 5–20 µs, and a host has a dozen cgroup and pseudo mounts):
/// an entry of a skipped type can take a printed one's place only by being
/// mounted later on its mount point or above it, and then all are stat'ed
/// as df does.
fn df_mounts(mounts: Vec<Mount>, fs: &dyn FsProbe) -> Vec<Mount> {
    let covers = |upper: &Mount, lower: &Mount| {
        lower.dir == upper.dir
            || upper.dir == "/"
            || lower
                .dir
                .strip_prefix(upper.dir.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let overmounted = mounts.iter().enumerate().any(|(i, lower)| {
        printable_type(lower)
            && mounts[i + 1..]
                .iter()
                .any(|upper| !printable_type(upper) && covers(upper, lower))
    });
    let mut kept: Vec<(u64, Mount)> = Vec::new();
    for me in mounts {
        let skip = is_remote(&me) || is_dummy(&me) || !(overmounted || printable_type(&me));
        let stat_dev = if skip {
            None
        } else {
            fs.device(Path::new(&me.dir))
        };
        let Some(dev) = stat_dev else {
            // Listed for df's complaints, never printed.
            if !kept.iter().any(|(d, _)| *d == me.dev) {
                kept.push((me.dev, me));
            }
            continue;
        };
        match kept.iter_mut().find(|(d, _)| *d == dev) {
            None => kept.push((dev, me)),
            Some((_, seen)) => {
                let target_nearer_root = seen.dir.len() > me.dir.len();
                let source_below_root = seen.root.len() < me.root.len();
                if (me.source.contains('/') && !seen.source.contains('/'))
                    || (target_nearer_root && !source_below_root)
                    || (seen.source != me.source && seen.dir == me.dir)
                {
                    *seen = me;
                }
            }
        }
    }
    kept.into_iter().map(|(_, m)| m).collect()
}

/// The mount points df would list, kept between runs while the mount
/// table stays the same.
///
/// Reading and parsing `/proc/self/mountinfo` and `stat`ing the mount
/// points is most of the disk check's cost. The
/// kernel says when the table changed: poll(2) on an open mountinfo file
/// reports POLLPRI (and POLLERR) after any mount or unmount since the
/// file was opened or last polled. So the file stays open and the list is
/// rebuilt only then. A change between opening and reading is reported by
/// the next poll, so no change is missed. Only for the real `/proc`: a
/// fixture tree's plain file never reports a change, and is read each run.
#[derive(Default)]
pub(super) struct MountTable {
    cached: std::sync::Mutex<Option<(std::fs::File, Vec<Mount>)>>,
}

impl MountTable {
    fn mounts(&self, ctx: &Context) -> Result<Vec<Mount>, CheckError> {
        let path = ctx.proc_path("self/mountinfo");
        if ctx.roots.proc != Path::new("/proc") {
            return Ok(df_mounts(parse_mountinfo(&read(&path)?), ctx.fs.as_ref()));
        }
        let mut cached = crate::sync::lock(&self.cached);
        if let Some((file, mounts)) = cached.as_ref() {
            if !changed(file) {
                return Ok(mounts.clone());
            }
        }
        *cached = None;
        let mut file = std::fs::File::open(&path).map_err(|e| CheckError::read(&path, e))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text)
            .map_err(|e| CheckError::read(&path, e))?;
        let mounts = df_mounts(parse_mountinfo(&text), ctx.fs.as_ref());
        *cached = Some((file, mounts.clone()));
        Ok(mounts)
    }
}

/// Whether the mount table changed since `file` was opened or last polled
/// (an error counts as a change: read it again).
fn changed(file: &std::fs::File) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLPRI)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => fds[0].revents().is_none_or(|r| {
            r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR | PollFlags::POLLNVAL)
        }),
        Err(_) => true,
    }
}

/// Not on the script's skip list.
fn printable_type(m: &Mount) -> bool {
    !(SKIPPED_TYPES.contains(&m.fstype.as_str()) || m.fstype.starts_with("cgroup"))
}

/// The script's `pct`: used / (used + free), 0 for an empty filesystem.
fn pct(used: u64, free: u64) -> f64 {
    if used + free > 0 {
        used as f64 * 100.0 / (used + free) as f64
    } else {
        0.0
    }
}

/// The total line's fields, for sysinfo.
#[derive(Debug, Clone)]
pub(super) struct DiskTotal {
    pub(crate) total_mib: u64,
    pub(crate) total_pct: String,
    pub(crate) total_level: Level,
}

/// The lines, and the total line's fields.
pub(super) struct Disks {
    pub(crate) lines: Vec<String>,
    pub(crate) total: DiskTotal,
}

pub(super) fn disks(ctx: &Context) -> Result<Disks, CheckError> {
    let note = ctx.limits.get("PIHEALTH_DISK_NOTE")?;
    let warn = ctx.limits.get("PIHEALTH_DISK_WARNING")?;
    let crit = ctx.limits.get("PIHEALTH_DISK_CRITICAL")?;
    let mut seen_devices: Vec<String> = Vec::new();
    let mut lines = Vec::new();
    let (mut total, mut used, mut free) = (0u64, 0u64, 0u64);
    for m in ctx.mount_table.mounts(ctx)? {
        if is_remote(&m) || is_dummy(&m) || !printable_type(&m) {
            continue;
        }
        // df skips what it cannot statvfs (with a message) and what is empty.
        let Some(u) = ctx.fs.usage(Path::new(&m.dir)) else {
            continue;
        };
        if u.total_kib == 0 || !printable_type(&m) {
            continue;
        }
        // Bind mounts, btrfs subvolumes: the same device once.
        if seen_devices.contains(&m.source) {
            continue;
        }
        seen_devices.push(m.source.clone());
        // awk joins the mount point's words with "_".
        let mount = m.dir.split_whitespace().collect::<Vec<_>>().join("_");
        let p = fixed2(pct(u.used_kib, u.avail_kib));
        let lvl = level(value_of(&p), note, warn, crit);
        lines.push(format!(
            "{mount} {} {} {p} {lvl}",
            u.total_kib / 1024,
            u.avail_kib / 1024
        ));
        total += u.total_kib;
        used += u.used_kib;
        free += u.avail_kib;
    }
    let p = fixed2(pct(used, free));
    let lvl = level(value_of(&p), note, warn, crit);
    lines.push(format!("total {} {} {p} {lvl}", total / 1024, free / 1024));
    Ok(Disks {
        lines,
        total: DiskTotal {
            total_mib: total / 1024,
            total_pct: p,
            total_level: lvl,
        },
    })
}

pub(crate) fn run(ctx: &Context) -> Result<Vec<String>, CheckError> {
    let d = disks(ctx)?;
    ctx.remember_disk(d.total);
    Ok(d.lines)
}

#[cfg(test)]
pub(crate) mod tests {
    #[test]
    fn a_mount_or_unmount_is_seen_by_poll() {
        // Mounting needs root; the tmpfs lives for a moment on a temp dir.
        // /proc/self belongs to the effective user.
        if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
            crate::skipped("mounting a tmpfs needs root");
            return;
        }
        let mut file = std::fs::File::open("/proc/self/mountinfo").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "pihealth-test", d])
            .status();
        if !mounted.is_ok_and(|s| s.success()) {
            crate::skipped("cannot mount a tmpfs here");
            return;
        }
        let after_mount = changed(&file);
        // Seen once: the next poll is quiet unless something else moved.
        let umounted = std::process::Command::new("umount").arg(d).status();
        assert!(umounted.is_ok_and(|s| s.success()), "umount {d}");
        assert!(after_mount, "the mount was not reported");
        assert!(changed(&file), "the unmount was not reported");
    }

    use super::super::tests::Tree;
    use super::*;
    use std::collections::HashMap;

    /// Mount point → (st_dev, usage).
    pub(crate) struct FakeFs(pub(crate) HashMap<String, (u64, Option<FsUsage>)>);

    impl FsProbe for FakeFs {
        fn device(&self, path: &Path) -> Option<u64> {
            self.0.get(path.to_str()?).map(|e| e.0)
        }
        fn usage(&self, path: &Path) -> Option<FsUsage> {
            self.0.get(path.to_str()?).and_then(|e| e.1)
        }
    }

    fn kib(total: u64, used: u64, avail: u64) -> Option<FsUsage> {
        Some(FsUsage {
            total_kib: total,
            used_kib: used,
            avail_kib: avail,
        })
    }

    #[test]
    fn filesystems_like_df_and_the_script() {
        let t = Tree::new();
        t.write(
            "proc/self/mountinfo",
            "22 27 0:21 / /proc rw - proc proc rw\n\
             27 1 254:0 / / rw - ext4 /dev/vda rw\n\
             25 24 0:23 / /dev/shm rw - tmpfs tmpfs rw\n\
             30 25 0:27 / /dev/shm rw - tmpfs tmpfs rw\n\
             40 27 254:1 / /home/my\\040disk rw - ext4 /dev/vdb rw\n\
             41 27 254:1 /sub /srv/bind rw - ext4 /dev/vdb rw\n\
             42 27 0:50 / /mnt/nfs rw - nfs4 server:/export rw\n\
             43 27 0:51 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw\n\
             44 27 254:2 / /boot rw - vfat /dev/vdc1 rw\n\
             45 27 254:3 / /empty rw - ext4 /dev/vdd rw\n\
             garbage line\n",
        );
        let mut fs = HashMap::new();
        fs.insert("/".to_string(), (1, kib(1_000_000, 800_000, 100_000)));
        fs.insert("/dev/shm".to_string(), (2, kib(1000, 0, 1000)));
        fs.insert(
            "/home/my disk".to_string(),
            (3, kib(2_048_000, 1_024_000, 1_024_000)),
        );
        fs.insert(
            "/srv/bind".to_string(),
            (3, kib(2_048_000, 1_024_000, 1_024_000)),
        );
        fs.insert("/boot".to_string(), (5, kib(524_288, 500_000, 10_000)));
        fs.insert("/empty".to_string(), (6, kib(0, 0, 0)));
        fs.insert("/mnt".to_string(), (99, kib(1000, 0, 1000)));
        let expected = vec![
            "/ 976 97 88.89 note",
            "/home/my_disk 2000 1000 50.00 normal",
            "/boot 512 9 98.04 critical",
            "total 3488 1107 67.21 normal",
        ];
        // Without any overmount the cgroup mount is not even stat'ed (it is
        // missing from the table); with a tmpfs mounted over an ext4 /mnt,
        // stat sees the tmpfs at both, df keeps the later one, and the
        // script skips it: /mnt is not listed with the tmpfs's figures.
        for extra in [
            "",
            "46 27 254:5 / /mnt rw - ext4 /dev/vde rw\n47 46 0:99 / /mnt rw - tmpfs tmpfs rw\n",
        ] {
            let text = std::fs::read_to_string(t.dir.path().join("proc/self/mountinfo")).unwrap();
            t.write("proc/self/mountinfo", &format!("{text}{extra}"));
            let mut ctx = t.context();
            ctx.fs = Box::new(FakeFs(fs.clone()));
            assert_eq!(run(&ctx).unwrap(), expected, "{extra}");
        }
    }

    #[test]
    fn no_filesystem_gives_a_zero_total() {
        let t = Tree::new();
        t.write("proc/self/mountinfo", "");
        let mut ctx = t.context();
        ctx.fs = Box::new(FakeFs(HashMap::new()));
        assert_eq!(run(&ctx).unwrap(), vec!["total 0 0 0.00 normal"]);
        assert!(run(&Tree::new().context())
            .unwrap_err()
            .to_string()
            .contains("mountinfo"));
    }

    #[test]
    fn unescapes_mountinfo_octal() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/x\\04"), "/x\\04");
    }
}
