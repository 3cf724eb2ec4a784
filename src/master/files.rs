//! Where the master keeps its own files: `log/.master/`.
//!
//! `log/` also holds one directory per host (`log/HOST/`) and, when an
//! agent shares the working directory, the agent's `log/TYPE.log` files and
//! `log/.pihealth/`. Host names never start with `.` (`crate::names`), so no
//! host can reach `log/.master/`: `alarms.log`, `events.log`,
//! `registry.json`, `.alarm-commands.done` and anything the master keeps
//! for itself later live there. Agent type names have no dot, so an agent
//! cannot write there either.
//!
//! Versions before this one kept those files directly in `log/`; the
//! daemon and `pihealth pull` move them on start (`MasterFiles::prepare`).
//! Readers (`status`, `alarms`, the demo) use `MasterFiles::find`, which
//! still reads the old place while an old master has not been restarted.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub(crate) use crate::storage::legacy_master_in;
use crate::storage::{self, LEGACY_EVIDENCE, MASTER_OWN_DIR as OWN_DIR};

/// Where `prepare` gathers the old files before one rename makes the move
/// visible. Not `.tmp`: an agent sharing `log/` removes its own `.*.tmp`
/// leftovers there, and this directory must survive a crash.
const MOVING_DIR: &str = ".master.moving";
/// The files older versions kept in `log/`. The two only a master ever
/// writes (an agent's type name has no dot) come last: while either is
/// still in `log/`, the move is not finished.
const LEGACY_FILES: [&str; 4] = [
    "alarms.log",
    "events.log",
    ".alarm-commands.done",
    "registry.json",
];

/// The paths of the master's own files.
#[derive(Debug, Clone)]
pub(crate) struct MasterFiles {
    dir: PathBuf,
}

impl MasterFiles {
    /// The files in `log_dir/.master/`, whether or not they exist yet.
    pub(crate) fn new(log_dir: &Path) -> MasterFiles {
        MasterFiles {
            dir: log_dir.join(OWN_DIR),
        }
    }

    /// For readers: `log_dir/.master/`, or `log_dir` itself while an old
    /// master (not yet restarted on this version) still keeps its files
    /// there. Never writes anything.
    pub(crate) fn find(log_dir: &Path) -> MasterFiles {
        let own = log_dir.join(OWN_DIR);
        if legacy_master_in(log_dir) {
            MasterFiles {
                dir: log_dir.to_path_buf(),
            }
        } else {
            MasterFiles { dir: own }
        }
    }

    /// For the daemon and `pihealth pull`: make `log_dir/.master/` exist,
    /// moving the files an older version kept in `log_dir` into it.
    ///
    /// Crash safety, step by step (each step is a rename inside one file
    /// system, so a file is always in exactly one place, never copied):
    /// 1. `log/.master.moving/` is created (a crash here leaves an empty
    ///    directory; the next start goes on from step 2);
    /// 2. each old file is renamed into it, `registry.json` last; a crash
    ///    between renames leaves some in each place, and the next start,
    ///    seeing step 1's directory, moves the rest;
    /// 3. both directories are fsynced, then `.master.moving` is renamed
    ///    to `.master` and `log/` fsynced. Only now is anything written to
    ///    the new files, so nothing is appended to a file still being moved.
    ///
    /// A file present in both places (an older version ran again in
    /// between) is an error that names both: the master will not choose
    /// between two alarm histories.
    pub(crate) fn prepare(log_dir: &Path) -> io::Result<MasterFiles> {
        let files = MasterFiles::new(log_dir);
        if files.dir.is_dir() {
            return Ok(files);
        }
        fs::create_dir_all(log_dir).map_err(|e| storage::with_path(e, log_dir))?;
        let moving = log_dir.join(MOVING_DIR);
        let old_master = moving.is_dir()
            || LEGACY_EVIDENCE
                .iter()
                .any(|name| log_dir.join(name).is_file());
        if !old_master {
            // A new installation: `alarms.log` or `events.log` here, if
            // any, are an agent's collectors, not ours.
            match fs::create_dir(&files.dir) {
                Ok(()) => storage::sync_dir(log_dir)?,
                // `pihealth pull` and the daemon starting together.
                Err(_) if files.dir.is_dir() => {}
                Err(e) => return Err(storage::with_path(e, &files.dir)),
            }
            return Ok(files);
        }
        if let Err(e) = fs::create_dir(&moving) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(storage::with_path(e, &moving));
            }
        }
        let moved = files.move_into(log_dir, &moving)?;
        storage::sync_dir(&moving)?;
        storage::sync_dir(log_dir)?;
        match fs::rename(&moving, &files.dir) {
            Ok(()) => {}
            // The other process finished the move first.
            Err(_) if files.dir.is_dir() && !moving.exists() => {}
            Err(e) => return Err(storage::with_path(e, &moving)),
        }
        storage::sync_dir(log_dir)?;
        log::info!(
            "moved the master's own files {:?} from {} into {}",
            moved,
            log_dir.display(),
            files.dir.display()
        );
        Ok(files)
    }

    /// Step 2 of `prepare`: rename each old file found in `log_dir` into
    /// `moving`; the names moved.
    fn move_into(&self, log_dir: &Path, moving: &Path) -> io::Result<Vec<&'static str>> {
        let mut moved = Vec::new();
        for name in LEGACY_FILES {
            let old = log_dir.join(name);
            if !old.is_file() {
                continue;
            }
            let new = moving.join(name);
            if new.exists() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "both {} and {} exist (an older pihealth master ran again after this one \
                     began moving its files into {}/); keep one and remove the other",
                        old.display(),
                        new.display(),
                        self.dir.display()
                    ),
                ));
            }
            match fs::rename(&old, &new) {
                Ok(()) => moved.push(name),
                // Another process (`pihealth pull` starting with the
                // daemon) moved it first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(storage::with_path(e, &old)),
            }
        }
        Ok(moved)
    }

    /// The directory holding the master's own files.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every alarm stored, one line each (`crate::master::alarms`).
    pub(crate) fn alarms(&self) -> PathBuf {
        self.dir.join("alarms.log")
    }

    /// State changes, gaps and restarted streams (`crate::master::events`).
    pub(crate) fn events(&self) -> PathBuf {
        self.dir.join("events.log")
    }

    /// The agents known and their last state (`crate::master::registry`).
    pub(crate) fn registry(&self) -> PathBuf {
        self.dir.join("registry.json")
    }

    /// Which alarms' `alarm_command` has run (`crate::master::alarms`).
    pub(crate) fn alarm_commands_done(&self) -> PathBuf {
        self.dir.join(".alarm-commands.done")
    }

    /// The silences in force (`crate::master::silences`), written by
    /// `pihealth silence`, read by the master at each alarm.
    pub(crate) fn silences(&self) -> PathBuf {
        self.dir.join("silences.json")
    }

    /// Taken (flock) by `pihealth silence` for its read-modify-write.
    pub(crate) fn silences_lock(&self) -> PathBuf {
        self.dir.join(".silences.lock")
    }

    /// Which stored alarms a silence held back: `ALARM_ID SILENCE_ID
    /// REASON` per line (`crate::master::silences`).
    pub(crate) fn silenced(&self) -> PathBuf {
        self.dir.join("silenced.log")
    }

    /// How far the Alertmanager at `url` has accepted `alarms.log`
    /// (`crate::master::alertmanager`); named by a digest of the URL, so
    /// reordering the list keeps each one's place.
    pub(crate) fn alertmanager_cursor(&self, url: &str) -> PathBuf {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(url.as_bytes());
        let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!(".alertmanager-{short}.sent"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("alarms.log"), "a1\n").unwrap();
        fs::write(dir.path().join("events.log"), "e1\n").unwrap();
        fs::write(dir.path().join(".alarm-commands.done"), "@3\n").unwrap();
        fs::write(dir.path().join("registry.json"), "{}").unwrap();
        fs::create_dir(dir.path().join("pi1")).unwrap();
        dir
    }

    fn assert_moved(log: &Path) {
        let files = MasterFiles::new(log);
        assert_eq!(fs::read_to_string(files.alarms()).unwrap(), "a1\n");
        assert_eq!(fs::read_to_string(files.events()).unwrap(), "e1\n");
        assert_eq!(
            fs::read_to_string(files.alarm_commands_done()).unwrap(),
            "@3\n"
        );
        assert_eq!(fs::read_to_string(files.registry()).unwrap(), "{}");
        for name in LEGACY_FILES {
            assert!(!log.join(name).exists(), "{name} left behind");
        }
        assert!(!log.join(MOVING_DIR).exists());
        assert!(log.join("pi1").is_dir(), "a host directory was touched");
    }

    #[test]
    fn old_files_move_into_the_master_namespace() {
        let dir = legacy_dir();
        // Readers find the old place until the master has moved them.
        assert_eq!(
            MasterFiles::find(dir.path()).alarms(),
            dir.path().join("alarms.log")
        );
        MasterFiles::prepare(dir.path()).unwrap();
        assert_moved(dir.path());
        assert_eq!(
            MasterFiles::find(dir.path()).alarms(),
            dir.path().join(".master/alarms.log")
        );
        // A second start changes nothing.
        MasterFiles::prepare(dir.path()).unwrap();
        assert_moved(dir.path());
    }

    /// A crash after each rename of `prepare`: the next start finishes the
    /// move, and every file is in exactly one place throughout.
    #[test]
    fn a_move_cut_short_at_any_step_is_finished_on_the_next_start() {
        for done in 0..=LEGACY_FILES.len() {
            let dir = legacy_dir();
            let moving = dir.path().join(MOVING_DIR);
            fs::create_dir(&moving).unwrap();
            for name in &LEGACY_FILES[..done] {
                fs::rename(dir.path().join(name), moving.join(name)).unwrap();
            }
            MasterFiles::prepare(dir.path()).unwrap();
            assert_moved(dir.path());
        }
    }

    #[test]
    fn an_agents_alarms_log_in_a_new_directory_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("alarms.log"), "agent line\n").unwrap();
        let files = MasterFiles::prepare(dir.path()).unwrap();
        assert!(files.dir().is_dir());
        assert!(!files.alarms().exists());
        assert_eq!(
            fs::read_to_string(dir.path().join("alarms.log")).unwrap(),
            "agent line\n"
        );
    }

    #[test]
    fn a_file_in_both_places_is_a_clear_error() {
        let dir = legacy_dir();
        let moving = dir.path().join(MOVING_DIR);
        fs::create_dir(&moving).unwrap();
        fs::write(moving.join("alarms.log"), "other\n").unwrap();
        let e = MasterFiles::prepare(dir.path()).unwrap_err().to_string();
        assert!(e.contains("alarms.log") && e.contains("both"), "{e}");
        assert_eq!(
            fs::read_to_string(dir.path().join("alarms.log")).unwrap(),
            "a1\n"
        );
    }
}
