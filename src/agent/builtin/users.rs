//! users.sh: `USER_COUNT MOST_ACTIVE ROOT_USERS LOGGED_IN LEVEL`.
//!
//! Sessions come from utmp as `who` reads them (user processes whose
//! process still exists), process owners from `/proc`, root rights from
//! `/etc/passwd` and `/etc/group` with the script's rules.
//!
//! A process's owner is the owner of its `/proc/PID` directory: a `stat`
//! each, ~5 µs of kernel time, half a millisecond on a host with 100
//! processes. So owners are kept between runs by pid and the directory's
//! inode number (readdir gives it without a stat; another number is
//! another process) and looked at again after [`OWNER_RECHECK`], which
//! bounds how long a process that changes its user after we saw it
//! (a login's child between fork and setuid) is counted under the old one.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use super::error::CheckError;
use super::proc::user_name;
use super::Context;

/// glibc's `struct utmp` (the same 384 bytes on 32- and 64-bit Linux).
const UTMP_SIZE: usize = 384;
const USER_PROCESS: i16 = 7;

/// One `who` line's worth of a utmp record.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Session {
    pub(crate) user: String,
    pub(crate) line: String,
    pub(crate) host: String,
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// `who`: USER_PROCESS records with a user name whose process is alive
/// (coreutils checks with kill(pid, 0); here: /proc/PID exists, which a
/// fixture tree can say too). A missing utmp means nobody is logged in.
pub(super) fn sessions(ctx: &Context) -> Vec<Session> {
    let Ok(bytes) = fs::read(&ctx.roots.utmp) else {
        return Vec::new();
    };
    bytes
        .chunks_exact(UTMP_SIZE)
        .filter_map(|r| {
            let kind = i16::from_ne_bytes([r[0], r[1]]);
            let pid = i32::from_ne_bytes([r[4], r[5], r[6], r[7]]);
            let user = c_string(&r[44..76]);
            if kind != USER_PROCESS || user.is_empty() {
                return None;
            }
            if pid > 0 && !ctx.roots.proc.join(pid.to_string()).exists() {
                return None;
            }
            Some(Session {
                user,
                line: c_string(&r[8..40]),
                host: c_string(&r[76..332]),
            })
        })
        .collect()
}

/// The script's `join`: comma-separated, or `-` when empty.
fn join(words: &[String]) -> String {
    if words.is_empty() {
        "-".to_string()
    } else {
        words.join(",")
    }
}

/// `user@source:tty`; the source is who's `(comment)`: empty when local or
/// an X display (`:0`), blanks as `_`.
fn logged_in(s: &Session) -> String {
    let mut src = if s.host.starts_with(':') {
        ""
    } else {
        s.host.as_str()
    }
    .to_string();
    src = blanks_to_underscore(&src);
    format!("{}@{src}:{}", s.user, s.line)
}

/// awk's gsub(/[ \t]+/, "_").
fn blanks_to_underscore(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_blank = false;
    for c in s.chars() {
        if c == ' ' || c == '\t' {
            if !in_blank {
                out.push('_');
            }
            in_blank = true;
        } else {
            out.push(c);
            in_blank = false;
        }
    }
    out
}

/// How long a process's owner is trusted without a new `stat`.
const OWNER_RECHECK: Duration = Duration::from_secs(300);

/// The users check with the owners it has seen.
#[derive(Debug, Default)]
pub(crate) struct Users {
    /// pid → (inode of /proc/PID, owner, when stat'ed).
    owners: HashMap<u32, (u64, u32, Instant)>,
}

impl Users {
    pub(crate) fn run(&mut self, ctx: &Context) -> Result<String, CheckError> {
        run_with(ctx, |ctx, passwd| self.most_active(ctx, passwd))
    }

    /// Up to three users owning the most processes (ties by name).
    fn most_active(&mut self, ctx: &Context, passwd: &str) -> Result<Vec<String>, CheckError> {
        let now = Instant::now();
        let mut per_uid: HashMap<u32, usize> = HashMap::new();
        let mut owners = HashMap::with_capacity(self.owners.len() + 16);
        let mut path = ctx.roots.proc.clone();
        for entry in ctx.pid_entries()?.iter() {
            let uid = match self.owners.get(&entry.pid) {
                Some(&(ino, uid, at))
                    if ino == entry.ino && now.duration_since(at) < OWNER_RECHECK =>
                {
                    owners.insert(entry.pid, (ino, uid, at));
                    uid
                }
                _ => {
                    path.push(entry.pid.to_string());
                    let meta = fs::metadata(&path);
                    path.pop();
                    // A process that ended meanwhile is not counted.
                    let Ok(m) = meta else {
                        continue;
                    };
                    owners.insert(entry.pid, (entry.ino, m.uid(), now));
                    m.uid()
                }
            };
            *per_uid.entry(uid).or_default() += 1;
        }
        // Gone processes are forgotten.
        self.owners = owners;
        Ok(rank(per_uid, passwd))
    }
}

/// The three users with the most processes, from counts per uid.
fn rank(per_uid: HashMap<u32, usize>, passwd: &str) -> Vec<String> {
    let mut per_user: HashMap<String, usize> = HashMap::new();
    for (uid, n) in per_uid {
        *per_user.entry(user_name(passwd, uid)).or_default() += n;
    }
    let mut ranked: Vec<(usize, String)> = per_user.into_iter().map(|(u, n)| (n, u)).collect();
    ranked.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.as_bytes().cmp(b.1.as_bytes()))
    });
    ranked.into_iter().take(3).map(|(_, u)| u).collect()
}

/// Accounts with uid 0 or in group sudo/wheel/admin (as primary group or
/// member), then members not in passwd; and the number of uid-0 accounts.
fn root_users(group: &str, passwd: &str) -> (Vec<String>, usize) {
    let mut gids: Vec<&str> = Vec::new();
    let mut members: Vec<&str> = Vec::new();
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if matches!(f[0], "sudo" | "wheel" | "admin") {
            if let Some(gid) = f.get(2) {
                gids.push(gid);
            }
            for m in f.get(3).map_or("", |m| m).split(',') {
                if !m.is_empty() && !members.contains(&m) {
                    members.push(m);
                }
            }
        }
    }
    let mut known: Vec<&str> = Vec::new();
    let mut out: Vec<String> = Vec::new();
    let mut uid0 = 0;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        // Comments, NIS compat entries, short lines.
        if line.starts_with(['#', '+', '-']) || line.is_empty() || f.len() < 4 {
            continue;
        }
        known.push(f[0]);
        let is_root = awk_is_zero(f[2]);
        if is_root {
            uid0 += 1;
        }
        if is_root || gids.contains(&f[3]) || members.contains(&f[0]) {
            out.push(f[0].to_string());
        }
    }
    for m in members {
        if !known.contains(&m) {
            out.push(m.to_string());
        }
    }
    let mut seen: Vec<String> = Vec::new();
    for u in out {
        if !seen.contains(&u) {
            seen.push(u);
        }
    }
    (seen, uid0)
}

/// awk's `$3 == 0`: numeric when the field looks like a number.
fn awk_is_zero(field: &str) -> bool {
    let t = field.trim();
    match t.parse::<f64>() {
        Ok(v)
            if !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            v == 0.0
        }
        _ => t == "0",
    }
}

/// One run, with `most_active` counting the owners.
fn run_with(
    ctx: &Context,
    most_active: impl FnOnce(&Context, &str) -> Result<Vec<String>, CheckError>,
) -> Result<String, CheckError> {
    let sessions = sessions(ctx);
    let mut users: Vec<&str> = Vec::new();
    for s in &sessions {
        if !users.contains(&s.user.as_str()) {
            users.push(&s.user);
        }
    }
    let logged: Vec<String> = sessions.iter().map(logged_in).collect();
    let passwd_path = ctx.roots.etc.join("passwd");
    let group_path = ctx.roots.etc.join("group");
    let cannot = || CheckError::ReadEither(passwd_path.clone(), group_path.clone());
    // most_active names owners like ps, which needs passwd too.
    let passwd = fs::read_to_string(&passwd_path).map_err(|_| cannot())?;
    let group = fs::read_to_string(&group_path).map_err(|_| cannot())?;
    let active = most_active(ctx, &passwd)?;
    let (root, uid0) = root_users(&group, &passwd);
    let level = if uid0 > 1 { "note" } else { "normal" };
    Ok(format!(
        "{} {} {} {} {level}",
        users.len(),
        join(&active),
        join(&root),
        join(&logged)
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::tests::Tree;
    use super::*;

    /// A utmp record as glibc writes it.
    pub(crate) fn utmp_record(kind: i16, pid: i32, line: &str, user: &str, host: &str) -> Vec<u8> {
        let mut r = vec![0u8; UTMP_SIZE];
        r[0..2].copy_from_slice(&kind.to_ne_bytes());
        r[4..8].copy_from_slice(&pid.to_ne_bytes());
        r[8..8 + line.len()].copy_from_slice(line.as_bytes());
        r[44..44 + user.len()].copy_from_slice(user.as_bytes());
        r[76..76 + host.len()].copy_from_slice(host.as_bytes());
        r
    }

    #[test]
    fn sessions_activity_and_root_rights() {
        let t = Tree::new();
        t.write("etc/passwd", "root:x:0:0::/root:/bin/sh\n# comment\n+nis::0:0::/:\ntoor:x:0:0::/:/bin/sh\nalice:x:1000:27::/:/bin/sh\nbob:x:1001:1001::/:/bin/sh\n");
        t.write(
            "etc/group",
            "sudo:x:27:bob,carol\nwheel:x:10:\nusers:x:100:dave\n",
        );
        t.write("proc/100/stat", "");
        t.write("proc/101/stat", "");
        let mut utmp = Vec::new();
        utmp.extend(utmp_record(USER_PROCESS, 100, "pts/0", "alice", "10.0.0.5"));
        utmp.extend(utmp_record(USER_PROCESS, 101, "tty7", "bob", ":0"));
        utmp.extend(utmp_record(
            USER_PROCESS,
            101,
            "pts/1",
            "alice",
            "mosh [1234]",
        ));
        utmp.extend(utmp_record(USER_PROCESS, 999, "pts/2", "ghost", "gone"));
        utmp.extend(utmp_record(8, 100, "pts/3", "dead", ""));
        utmp.extend(utmp_record(USER_PROCESS, 100, "tty1", "", ""));
        std::fs::write(t.dir.path().join("utmp"), utmp).unwrap();
        let ctx = t.context();
        let line = Users::default().run(&ctx).unwrap();
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[0], "2");
        assert_eq!(f[2], "root,toor,alice,bob,carol");
        assert_eq!(
            f[3],
            "alice@10.0.0.5:pts/0,bob@:tty7,alice@mosh_[1234]:pts/1"
        );
        assert_eq!(f[4], "note");
        // The fixture's two pid dirs belong to whoever runs the test.
        let me = user_name(
            &std::fs::read_to_string(ctx.roots.etc.join("passwd")).unwrap(),
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(t.dir.path()).unwrap()),
        );
        assert_eq!(f[1], me);
    }

    #[test]
    fn owners_are_kept_by_pid_and_inode() {
        // Changing a fixture's owner needs root.
        if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
            crate::skipped("chown needs root");
            return;
        }
        let t = Tree::new();
        t.write(
            "etc/passwd",
            "root:x:0:0::/root:/bin/sh\npi:x:1000:1000::/:/bin/sh\n",
        );
        t.write("etc/group", "");
        t.write("proc/100/stat", "");
        let pid_dir = t.dir.path().join("proc/100");
        let mut users = Users::default();
        let active = |users: &mut Users| {
            let line = users.run(&t.context()).unwrap();
            line.split(' ').nth(1).unwrap().to_string()
        };
        assert_eq!(active(&mut users), "root");
        // The same process (same inode) changing hands is not seen before
        // OWNER_RECHECK: no stat.
        std::os::unix::fs::chown(&pid_dir, Some(1000), Some(1000)).unwrap();
        assert_eq!(active(&mut users), "root");
        // Another process under the same pid (another inode: made while
        // the old one still exists, then put in its place) is stat'ed.
        let new_dir = t.dir.path().join("proc/new");
        std::fs::create_dir(&new_dir).unwrap();
        std::os::unix::fs::chown(&new_dir, Some(1000), Some(1000)).unwrap();
        std::fs::remove_file(pid_dir.join("stat")).unwrap();
        std::fs::rename(&new_dir, &pid_dir).unwrap();
        assert_eq!(active(&mut users), "pi");
        // An old entry is stat'ed again (if the clock goes back that far).
        let Some(old) = Instant::now().checked_sub(OWNER_RECHECK) else {
            return;
        };
        let (ino, uid, _) = users.owners[&100];
        users.owners.insert(100, (ino, uid, old));
        std::os::unix::fs::chown(&pid_dir, Some(0), Some(0)).unwrap();
        assert_eq!(active(&mut users), "root");
    }

    #[test]
    fn nobody_and_missing_files() {
        let t = Tree::new();
        t.write("etc/passwd", "root:x:0:0::/root:/bin/sh\n");
        t.write("etc/group", "");
        t.write("proc/uptime", "1 1\n");
        assert_eq!(
            Users::default().run(&t.context()).unwrap(),
            "0 - root - normal"
        );
        std::fs::remove_file(t.dir.path().join("etc/group")).unwrap();
        assert!(Users::default()
            .run(&t.context())
            .unwrap_err()
            .to_string()
            .contains("group"));
    }

    #[test]
    fn awk_zero() {
        assert!(awk_is_zero("0"));
        assert!(awk_is_zero("00"));
        assert!(!awk_is_zero("x"));
        assert!(!awk_is_zero("1000"));
    }
}
