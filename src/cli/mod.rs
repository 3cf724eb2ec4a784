//! Operator commands beyond the two daemons: `keygen`, `status`, `alarms`,
//! `logs` and `demo`.
pub mod alarms;
pub mod demo;
pub mod logs;
pub mod status;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::protocol::Key;

/// Write a fresh key, readable by its owner only. Refuses to replace an
/// existing key unless `force`.
pub fn keygen(path: &Path, force: bool) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let key = Key::generate()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            format!("{} exists; use --force to replace it", path.display())
        }
        _ => format!("{}: {e}", path.display()),
    })?;
    // An existing file keeps its old mode on truncate: set it explicitly.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    writeln!(file, "{}", key.to_hex())
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Parse `--since`/`--until`: RFC 3339, or a duration back from now (`2h`).
pub fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t);
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        format!(
            "expected a time like 2026-11-21T10:00:00+00:00 or a duration like 2h, got `{text}`"
        )
    })?;
    let ago = chrono::Duration::from_std(ago).map_err(|e| e.to_string())?;
    Ok((chrono::Local::now() - ago).fixed_offset())
}
