//! Master and agent configuration: YAML files with defaults and validation.
//!
//! Every key has a default (documented in `config/*.yaml`), unknown keys are
//! refused, and every error names the file, the key and what was expected,
//! so `main` can print it and exit 2 before touching any data.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

mod collector;
mod http_url;

pub(crate) use collector::split_command;
pub use collector::{Builtin, CollectorSpec, Hold, HoldError, Mode, Trigger};
pub use http_url::HttpUrl;

/// A configuration problem: which file, which key, what was expected.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: key `{}`: {}",
                self.file.display(),
                self.key,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// A duration written like `30s`, `500ms`, `10m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|_| {
                de::Error::custom(format!(
                    "expected a duration like 30s, 500ms or 10m, got `{text}`"
                ))
            })
    }
}

/// A size written like `8MiB`, `512KiB`, `1GiB`, `100MB` or a plain byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Option<u64> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let number: u64 = digits.parse().ok()?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return None,
        };
        number.checked_mul(factor)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => ByteSize::parse(&text).map(ByteSize).ok_or_else(|| {
                de::Error::custom(format!(
                    "expected a size like 8MiB, 512KiB or 1GiB, got `{text}`"
                ))
            }),
        }
    }
}

/// One entry of the master's static agent list.
///
/// Deserialized by hand rather than as an untagged enum: serde's untagged
/// enums swallow the error of every variant ("data did not match any
/// variant"), so a typo like `adress` could not be named. A string is an
/// address; a mapping is read with its keys checked, then its shape decides.
#[derive(Debug, Clone)]
pub enum AgentEntry {
    /// `host` or `host:port` (control port; default `agent_control_port`).
    Address(String),
    /// `{name: pi1, address: 10.0.0.11:8000}`
    Named { name: String, address: String },
    /// The original's From/To: every IPv4 address from `from` to `to`.
    Range {
        from: Ipv4Addr,
        to: Ipv4Addr,
        port: Option<u16>,
    },
}

/// The keys an `agents` entry mapping may have, all optional while read;
/// which combination was given decides the kind of entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentEntryKeys {
    name: Option<String>,
    address: Option<String>,
    #[serde(default, deserialize_with = "option_ipv4")]
    from: Option<Ipv4Addr>,
    #[serde(default, deserialize_with = "option_ipv4")]
    to: Option<Ipv4Addr>,
    port: Option<u16>,
}

impl<'de> Deserialize<'de> for AgentEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> de::Visitor<'de> for EntryVisitor {
            type Value = AgentEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an agent: `host:port`, `{name, address}` or `{from, to, port}`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AgentEntry, E> {
                Ok(AgentEntry::Address(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<AgentEntry, A::Error> {
                let keys = AgentEntryKeys::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match keys {
                    AgentEntryKeys {
                        name: Some(name),
                        address: Some(address),
                        from: None,
                        to: None,
                        port: None,
                    } => Ok(AgentEntry::Named { name, address }),
                    AgentEntryKeys {
                        name: None,
                        address: None,
                        from: Some(from),
                        to: Some(to),
                        port,
                    } => Ok(AgentEntry::Range { from, to, port }),
                    _ => Err(de::Error::custom(
                        "expected either `{name, address}` (one agent) or `{from, to}` with an optional `port` (a range of IPv4 addresses)",
                    )),
                }
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}

/// Serde's own messages for addresses ("invalid socket address syntax")
/// neither show the value nor say what the syntax is.
fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map_err(|_| {
        de::Error::custom(format!(
            "expected host:port with an IP address, like 0.0.0.0:8080 or 127.0.0.1:8000, got `{text}`"
        ))
    })
}

fn option_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "socket_addr")] SocketAddr);
    Option::<Wrapped>::deserialize(d).map(|o| o.map(|w| w.0))
}

fn ip_addr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "ip_addr")] IpAddr);
    Vec::<Wrapped>::deserialize(d).map(|v| v.into_iter().map(|w| w.0).collect())
}

fn ip_addr<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map_err(|_| {
        de::Error::custom(format!(
            "expected an IP address like 192.168.1.10 or ::1 (no port), got `{text}`"
        ))
    })
}

fn option_ipv4<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv4Addr>, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "expected an IPv4 address like 10.0.0.1 (no port), got `{text}`"
        ))
    })
}

/// Most static agents a master config may list (ranges expanded): far
/// beyond any fleet one master serves, far below what would exhaust memory.
pub(crate) const MAX_STATIC_AGENTS: usize = 100_000;

/// An agent the master knows from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticAgent {
    /// The name given in the config, if any; otherwise learnt from the agent.
    pub name: Option<String>,
    pub control: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MasterConfig {
    /// Registration and heartbeats from agents.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Alarms from agents.
    #[serde(deserialize_with = "socket_addr")]
    pub alarm_listen: SocketAddr,
    /// Status page and Prometheus metrics (no key needed: loopback by
    /// default); `None` (`null` in YAML) turns the port off.
    #[serde(deserialize_with = "option_socket_addr")]
    pub http_listen: Option<SocketAddr>,
    pub agents: Vec<AgentEntry>,
    pub agent_control_port: u16,
    pub agent_data_port: u16,
    /// Outbound jobs: pulls and probes.
    pub workers: usize,
    /// Connections on the registration and alarm ports.
    pub inbound_workers: usize,
    /// Requests to the status page and metrics.
    pub http_workers: usize,
    pub pull_interval: HumanDuration,
    pub heartbeat_interval: HumanDuration,
    pub heartbeat_misses: u32,
    pub connect_timeout: HumanDuration,
    pub io_timeout: HumanDuration,
    pub log_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub rotate_size: ByteSize,
    pub key_file: PathBuf,
    /// Older keys still accepted during a key change-over (see the README).
    pub previous_key_files: Vec<PathBuf>,
    /// Hosts whose keys are no longer accepted, nor used to pull (a stolen
    /// or retired host; see the README, "Revoking one host").
    pub revoked_hosts: Vec<String>,
    /// Connections from one address still in their handshake; more are
    /// closed at once (see `net::AcceptLimits`).
    pub max_handshakes_per_address: usize,
    /// Program (and fixed arguments) run once per new alarm, never through a shell.
    pub alarm_command: Option<Vec<String>>,
    pub alarm_command_timeout: HumanDuration,
    /// Threads running `alarm_command` (a fixed set; see `master::alarm_command`).
    pub alarm_command_workers: usize,
    /// Alarms whose command may wait for a thread, in all.
    pub alarm_command_queue: usize,
    /// How long a host reported down must stay up before its `normal`
    /// host alarm (damps flapping; `master::host_alarms`).
    pub host_recovery_hold: HumanDuration,
    /// Alertmanagers alarms are forwarded to (`master::alertmanager`).
    pub alertmanagers: Vec<String>,
    /// How often firing alerts are re-sent to them.
    pub alertmanager_resend: HumanDuration,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            alarm_listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8082))),
            agents: Vec::new(),
            agent_control_port: 8000,
            agent_data_port: 8001,
            workers: 10,
            inbound_workers: 8,
            http_workers: 2,
            pull_interval: HumanDuration(Duration::from_secs(30)),
            heartbeat_interval: HumanDuration(Duration::from_secs(10)),
            heartbeat_misses: 3,
            connect_timeout: HumanDuration(Duration::from_secs(3)),
            io_timeout: HumanDuration(Duration::from_secs(10)),
            log_dir: PathBuf::from("log"),
            backup_dir: PathBuf::from("logbackup"),
            rotate_size: ByteSize(8 << 20),
            key_file: PathBuf::from("config/pihealth.key"),
            previous_key_files: Vec::new(),
            revoked_hosts: Vec::new(),
            max_handshakes_per_address: 8,
            alarm_command: None,
            alarm_command_timeout: HumanDuration(Duration::from_secs(30)),
            alarm_command_workers: 2,
            alarm_command_queue: 1024,
            host_recovery_hold: HumanDuration(Duration::from_secs(60)),
            alertmanagers: Vec::new(),
            alertmanager_resend: HumanDuration(Duration::from_secs(60)),
        }
    }
}

/// Alarm thresholds handed to the standard scripts as `PIHEALTH_*` variables
/// (and read by the built-in checks): at or above `*_note` level note,
/// `*_warning` warning, `*_critical` critical.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    pub cpu_note: f64,
    pub cpu_warning: f64,
    pub cpu_critical: f64,
    pub mem_note: f64,
    pub mem_warning: f64,
    pub mem_critical: f64,
    pub disk_note: f64,
    pub disk_warning: f64,
    pub disk_critical: f64,
    pub temp_note: f64,
    pub temp_warning: f64,
    pub temp_critical: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            cpu_note: 70.0,
            cpu_warning: 80.0,
            cpu_critical: 95.0,
            mem_note: 70.0,
            mem_warning: 80.0,
            mem_critical: 90.0,
            disk_note: 80.0,
            disk_warning: 90.0,
            disk_critical: 95.0,
            temp_note: 50.0,
            temp_warning: 70.0,
            temp_critical: 80.0,
        }
    }
}

impl Thresholds {
    /// The environment the standard scripts read their thresholds from.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("CPU_NOTE", self.cpu_note),
            ("CPU_WARNING", self.cpu_warning),
            ("CPU_CRITICAL", self.cpu_critical),
            ("MEM_NOTE", self.mem_note),
            ("MEM_WARNING", self.mem_warning),
            ("MEM_CRITICAL", self.mem_critical),
            ("DISK_NOTE", self.disk_note),
            ("DISK_WARNING", self.disk_warning),
            ("DISK_CRITICAL", self.disk_critical),
            ("TEMP_NOTE", self.temp_note),
            ("TEMP_WARNING", self.temp_warning),
            ("TEMP_CRITICAL", self.temp_critical),
        ]
        .into_iter()
        .map(|(k, v)| (format!("PIHEALTH_{k}"), v.to_string()))
        .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    pub name: String,
    /// A command line split like a shell would (quotes work) but never run by one.
    /// Exactly one of `command` and `builtin`.
    #[serde(default)]
    pub command: Option<String>,
    /// One of the checks built into the agent (`cpu`, `mem`, … ): the
    /// standard script's lines without starting a process.
    #[serde(default)]
    pub builtin: Option<Builtin>,
    pub interval: HumanDuration,
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// How long a problem level must hold before it alarms.
    #[serde(default, rename = "for")]
    pub hold: Hold,
    /// How long calm must hold, once alarmed, before the recovery alarm.
    #[serde(default)]
    pub recover_for: Hold,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Host name used by the master for this agent's archive directory.
    pub name: Option<String>,
    /// The master's registration/heartbeat address.
    pub master: String,
    /// The master's alarm address; default: the master's host on port 8081.
    pub master_alarm: Option<String>,
    #[serde(deserialize_with = "socket_addr")]
    pub control_listen: SocketAddr,
    #[serde(deserialize_with = "socket_addr")]
    pub data_listen: SocketAddr,
    /// IP addresses allowed to connect to the control and data ports; empty = any.
    #[serde(deserialize_with = "ip_addr_list")]
    pub allowed_masters: Vec<IpAddr>,
    pub key_file: PathBuf,
    /// Older keys still accepted during a key change-over (see the README).
    pub previous_key_files: Vec<PathBuf>,
    /// Connections from one address still in their handshake; more are
    /// closed at once (see `net::AcceptLimits`).
    pub max_handshakes_per_address: usize,
    pub log_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub rotate_size: ByteSize,
    pub max_backlog: ByteSize,
    pub realarm_interval: HumanDuration,
    pub heartbeat_interval: HumanDuration,
    pub connect_timeout: HumanDuration,
    pub io_timeout: HumanDuration,
    pub workers: usize,
    pub thresholds: Thresholds,
    pub collectors: Vec<CollectorConfig>,
    /// The directory relative collector programs resolve against: the
    /// config file's own (set by `load`; none for text parsed alone).
    #[serde(skip)]
    pub config_dir: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            name: None,
            master: "127.0.0.1:8080".into(),
            master_alarm: None,
            control_listen: SocketAddr::from(([0, 0, 0, 0], 8000)),
            data_listen: SocketAddr::from(([0, 0, 0, 0], 8001)),
            allowed_masters: Vec::new(),
            key_file: PathBuf::from("config/pihealth.key"),
            previous_key_files: Vec::new(),
            max_handshakes_per_address: 2,
            log_dir: PathBuf::from("log"),
            backup_dir: PathBuf::from("logbackup"),
            rotate_size: ByteSize(8 << 20),
            max_backlog: ByteSize(256 << 20),
            realarm_interval: HumanDuration(Duration::from_secs(30 * 60)),
            heartbeat_interval: HumanDuration(Duration::from_secs(10)),
            connect_timeout: HumanDuration(Duration::from_secs(3)),
            io_timeout: HumanDuration(Duration::from_secs(10)),
            workers: 4,
            thresholds: Thresholds::default(),
            collectors: Vec::new(),
            config_dir: None,
        }
    }
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        key: String::new(),
        message: format!("cannot read the configuration file: {e}"),
    })
}

// Relative paths written in a config file resolve against the file's own
// directory, so a config works wherever it is installed and whatever the
// working directory (a unit's `WorkingDirectory`, a cron job's home, the
// project root under `just`). Keys left out keep their defaults, which
// stay relative to the working directory: `log` and `logbackup` where the
// daemon runs, as before. A program path resolves only when it names a
// directory (`scripts/cpu.sh`, `./check`); a bare name (`check_load`) is
// looked up in PATH as a shell would.

/// The directory a config file's relative paths resolve against: its own,
/// made absolute so the daemons' log lines name real places.
fn config_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// The top-level keys written in a config file (the text already parsed
/// once, so it is a mapping or empty).
fn written_keys(text: &str) -> std::collections::BTreeSet<String> {
    serde_yaml::from_str::<serde_yaml::Mapping>(text)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The files both daemons' configs name.
struct FilePaths<'a> {
    log_dir: &'a mut PathBuf,
    backup_dir: &'a mut PathBuf,
    key_file: &'a mut PathBuf,
    previous_key_files: &'a mut Vec<PathBuf>,
}

/// Read and parse the config file at `path`, then resolve its files
/// against the file's directory: each of log_dir, backup_dir and key_file
/// only if written in it, and every previous key file. Returns the
/// directory too, for the program paths.
fn load_resolved<T>(
    path: &Path,
    parse: fn(&str, &Path) -> Result<T, ConfigError>,
    files: impl FnOnce(&mut T) -> FilePaths<'_>,
) -> Result<(T, PathBuf), ConfigError> {
    let text = read_text(path)?;
    let mut config = parse(&text, path)?;
    let dir = config_dir(path);
    let written = written_keys(&text);
    let f = files(&mut config);
    let named = [
        ("log_dir", f.log_dir),
        ("backup_dir", f.backup_dir),
        ("key_file", f.key_file),
    ];
    let chosen = named
        .into_iter()
        .filter(|(key, _)| written.contains(*key))
        .map(|(_, file)| file)
        .chain(f.previous_key_files.iter_mut());
    for file in chosen {
        if file.is_relative() {
            *file = dir.join(&*file);
        }
    }
    Ok((config, dir))
}

fn resolve_program(dir: &Path, program: &mut String) {
    if program.contains('/') && Path::new(program.as_str()).is_relative() {
        if let Some(joined) = dir.join(program.as_str()).to_str() {
            *program = joined.to_owned();
        }
    }
}

/// Deserialize YAML text; `path` only names the file in errors.
fn parse_yaml<T: for<'de> Deserialize<'de>>(text: &str, path: &Path) -> Result<T, ConfigError> {
    // An empty file means "all defaults"; YAML would call it null.
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        let message = readable(&e.into_inner().to_string(), &key);
        ConfigError {
            file: path.to_path_buf(),
            key,
            message,
        }
    })
}

/// Serde's and the YAML parser's messages in a person's words: "unknown
/// field `adress`, expected one of …" becomes "unknown key; did you mean
/// `address`?", "invalid type: string \"ten\", expected usize" becomes
/// "expected a whole number, got \"ten\"". The parser repeats the key path
/// in front, which `ConfigError` already shows: dropped. The position is
/// kept, at the end. Anything not recognised passes through unchanged.
fn readable(raw: &str, key: &str) -> String {
    let (body, position) = match raw.rfind(" at line ") {
        Some(i) => (
            &raw[..i],
            format!(
                " (line {})",
                raw[i + 9..].replacen(" column ", ", column ", 1)
            ),
        ),
        None => (raw, String::new()),
    };
    // "agents: invalid type…" or "collectors[0]: unknown field…"
    let body = match body.split_once(": ") {
        Some((prefix, rest))
            if !prefix.is_empty() && !prefix.contains(' ') && key.starts_with(prefix) =>
        {
            rest
        }
        _ => body,
    };
    let text = if let Some(rest) = body.strip_prefix("unknown field ") {
        unknown_name(rest, "key")
    } else if let Some(rest) = body.strip_prefix("unknown variant ") {
        unknown_name(rest, "value")
    } else if let Some(rest) = body
        .strip_prefix("invalid type: ")
        .or_else(|| body.strip_prefix("invalid value: "))
    {
        match rest.rsplit_once(", expected ") {
            Some((got, expected)) => format!(
                "expected {}, got {}",
                expected_in_words(expected),
                got_in_words(got)
            ),
            None => body.to_string(),
        }
    } else {
        body.to_string()
    };
    format!("{text}{position}")
}

/// `` `adress`, expected one of `name`, `address` `` → "unknown key
/// `adress`; did you mean `address`?", or the valid names when none is near.
fn unknown_name(rest: &str, what: &str) -> String {
    let names: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let Some((given, valid)) = names.split_first() else {
        return format!("unknown {what} {rest}");
    };
    match nearest(given, valid) {
        // The key path already names an unknown key; a value needs naming.
        Some(near) if what == "key" => format!("unknown key; did you mean `{near}`?"),
        Some(near) => format!("unknown {what} `{given}`; did you mean `{near}`?"),
        None if valid.is_empty() => format!("unknown {what} `{given}`; none is expected here"),
        None => format!(
            "unknown {what} `{given}`; expected one of {}",
            valid
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The valid name closest to `given`, if it is close enough to be a typo:
/// at most a third of its letters (and at least one or two) wrong.
pub(crate) fn nearest<'a>(given: &str, valid: &[&'a str]) -> Option<&'a str> {
    let limit = (given.chars().count() / 3).max(2);
    valid
        .iter()
        .map(|v| (edit_distance(&given.to_lowercase(), v), *v))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

/// Edit distance counting a swap of two neighbouring letters as one edit
/// (optimal string alignment), since `prot` for `port` is the typical typo.
/// Written out (a few lines) rather than taken from `strsim`: config keys
/// are short and compared only when an error is printed, and every branch
/// of this repository shares one Cargo.lock.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Serde's name for what it expected, in words.
fn expected_in_words(expected: &str) -> String {
    match expected {
        "usize" | "u64" | "u32" => "a whole number".into(),
        "u16" => "a whole number from 0 to 65535".into(),
        "u8" => "a whole number from 0 to 255".into(),
        "isize" | "i64" | "i32" | "i16" | "i8" => "a whole number".into(),
        "f64" | "f32" => "a number".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping of keys to values".into(),
        other if other.starts_with("struct ") => "a mapping of keys to values".into(),
        other => other.into(),
    }
}

/// Serde's description of what it found (`string "ten"`, `integer `5``,
/// `unit value`), in words.
fn got_in_words(got: &str) -> String {
    for prefix in ["string ", "integer ", "floating point ", "boolean "] {
        if let Some(value) = got.strip_prefix(prefix) {
            return value.to_string();
        }
    }
    match got {
        "unit value" => "nothing (an empty value)".into(),
        "sequence" => "a list".into(),
        "map" => "a mapping".into(),
        other => other.into(),
    }
}

fn invalid(path: &Path, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        key: key.to_string(),
        message: message.into(),
    }
}

fn require_positive(path: &Path, key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(invalid(path, key, "expected a duration above zero"));
    }
    Ok(())
}

/// What both daemons ask of their durations (each above zero) and of
/// `rotate_size` (at least 1 KiB), in the order given.
fn require_durations_and_rotate_size(
    path: &Path,
    durations: &[(&str, Duration)],
    rotate_size: u64,
) -> Result<(), ConfigError> {
    for (key, d) in durations {
        require_positive(path, key, *d)?;
    }
    if rotate_size < 1024 {
        return Err(invalid(path, "rotate_size", "expected at least 1KiB"));
    }
    Ok(())
}

#[cfg(not(fuzzing))]
fn lookup(with_port: &str) -> std::io::Result<std::vec::IntoIter<SocketAddr>> {
    std::net::ToSocketAddrs::to_socket_addrs(with_port)
}

/// Under the fuzzer names are never looked up: every input would become a
/// DNS query, making runs slow, nondeterministic and noisy on the network.
/// Literal addresses take the same path as in a normal build.
#[cfg(fuzzing)]
fn lookup(with_port: &str) -> std::io::Result<std::vec::IntoIter<SocketAddr>> {
    with_port
        .parse::<SocketAddr>()
        .map(|a| vec![a].into_iter())
        .map_err(|_| std::io::Error::other("name lookup is off under the fuzzer"))
}

/// Why an address in the config does not resolve.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("expected host:port, cannot resolve `{text}`: {source}")]
    Unresolved {
        text: String,
        source: std::io::Error,
    },
    #[error("expected host:port, `{0}` resolves to nothing")]
    Nothing(String),
}

/// Resolve `host[:port]` to a socket address, using `default_port` when absent.
pub(crate) fn resolve_address(text: &str, default_port: u16) -> Result<SocketAddr, AddressError> {
    let with_port = if text.parse::<SocketAddr>().is_ok() || text.rsplit_once(':').is_some() {
        text.to_string()
    } else {
        format!("{text}:{default_port}")
    };
    lookup(&with_port)
        .map_err(|source| AddressError::Unresolved {
            text: text.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| AddressError::Nothing(text.to_string()))
}

impl MasterConfig {
    /// Read, parse and validate a config file; relative paths written in
    /// it resolve against its directory (see `load_resolved`).
    pub fn load(path: &Path) -> Result<MasterConfig, ConfigError> {
        let (mut config, dir) = load_resolved(path, Self::parse, |c| FilePaths {
            log_dir: &mut c.log_dir,
            backup_dir: &mut c.backup_dir,
            key_file: &mut c.key_file,
            previous_key_files: &mut c.previous_key_files,
        })?;
        if let Some(program) = config.alarm_command.as_mut().and_then(|c| c.first_mut()) {
            resolve_program(&dir, program);
        }
        Ok(config)
    }

    /// Parse and validate configuration text; `path` only names the file in
    /// errors. Separate from `load` so the fuzzer needs no files.
    pub fn parse(text: &str, path: &Path) -> Result<MasterConfig, ConfigError> {
        let config: MasterConfig = parse_yaml(text, path)?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if self.workers == 0 || self.workers > 1024 {
            return Err(invalid(
                path,
                "workers",
                "expected a pool size from 1 to 1024",
            ));
        }
        if self.inbound_workers < 2 || self.inbound_workers > 1024 {
            return Err(invalid(
                path,
                "inbound_workers",
                "expected a pool size from 2 to 1024 (half of it is the untrusted lane)",
            ));
        }
        if self.http_workers == 0 || self.http_workers > 256 {
            return Err(invalid(
                path,
                "http_workers",
                "expected a pool size from 1 to 256",
            ));
        }
        if self.max_handshakes_per_address == 0 {
            return Err(invalid(
                path,
                "max_handshakes_per_address",
                "expected at least 1",
            ));
        }
        if self.heartbeat_misses == 0 {
            return Err(invalid(path, "heartbeat_misses", "expected at least 1"));
        }
        if self.alarm_command_workers == 0 || self.alarm_command_workers > 64 {
            return Err(invalid(
                path,
                "alarm_command_workers",
                "expected a number of threads from 1 to 64",
            ));
        }
        if self.alarm_command_queue == 0 || self.alarm_command_queue > 1_000_000 {
            return Err(invalid(
                path,
                "alarm_command_queue",
                "expected a queue length from 1 to 1000000",
            ));
        }
        if let Some(http) = self.http_listen {
            if http == self.listen || http == self.alarm_listen {
                return Err(invalid(
                    path,
                    "http_listen",
                    "expected an address other than `listen` and `alarm_listen`",
                ));
            }
        }
        require_durations_and_rotate_size(
            path,
            &[
                ("pull_interval", self.pull_interval.0),
                ("heartbeat_interval", self.heartbeat_interval.0),
                ("connect_timeout", self.connect_timeout.0),
                ("io_timeout", self.io_timeout.0),
                ("alarm_command_timeout", self.alarm_command_timeout.0),
                ("alertmanager_resend", self.alertmanager_resend.0),
            ],
            self.rotate_size.0,
        )?;
        if let Some(cmd) = &self.alarm_command {
            if cmd.is_empty() || cmd[0].is_empty() {
                return Err(invalid(
                    path,
                    "alarm_command",
                    "expected a list: program then fixed arguments",
                ));
            }
        }
        self.alertmanager_targets(path)?;
        self.static_agents(path).map(|_| ())
    }

    /// The `alertmanagers` URLs, checked.
    pub fn alertmanager_targets(&self, path: &Path) -> Result<Vec<HttpUrl>, ConfigError> {
        let mut out: Vec<HttpUrl> = Vec::new();
        for (i, url) in self.alertmanagers.iter().enumerate() {
            let key = format!("alertmanagers[{i}]");
            let t = HttpUrl::parse(url).map_err(|m| invalid(path, &key, m.to_string()))?;
            if out.iter().any(|o| o.url == t.url) {
                return Err(invalid(path, &key, format!("`{url}` is listed twice")));
            }
            // The master's own ports are not an Alertmanager (a slip when
            // both run on one machine): every send would fail for ever.
            let own = [Some(self.listen), Some(self.alarm_listen), self.http_listen];
            if let Some(addr) = t.socket_addr() {
                let same = |o: &SocketAddr| {
                    *o == addr
                        || (o.port() == addr.port()
                            && o.ip().is_unspecified()
                            && addr.ip().is_loopback())
                };
                if own.iter().flatten().any(same) {
                    return Err(invalid(
                        path,
                        &key,
                        format!("an Alertmanager's address, not one of this master's own ports (`{url}`)"),
                    ));
                }
            }
            out.push(t);
        }
        Ok(out)
    }

    /// The static agent list with ranges expanded and addresses resolved.
    pub fn static_agents(&self, path: &Path) -> Result<Vec<StaticAgent>, ConfigError> {
        let mut out = Vec::new();
        // YAML anchors can make a small file list millions of entries.
        if self.agents.len() > MAX_STATIC_AGENTS {
            return Err(invalid(
                path,
                "agents",
                format!("expected at most {MAX_STATIC_AGENTS} agents"),
            ));
        }
        for (i, entry) in self.agents.iter().enumerate() {
            let key = format!("agents[{i}]");
            match entry {
                AgentEntry::Address(text) => out.push(StaticAgent {
                    name: None,
                    control: resolve_address(text, self.agent_control_port)
                        .map_err(|m| invalid(path, &key, m.to_string()))?,
                }),
                AgentEntry::Named { name, address } => {
                    crate::names::check_host_name(name)
                        .map_err(|m| invalid(path, &format!("{key}.name"), m.to_string()))?;
                    out.push(StaticAgent {
                        name: Some(name.clone()),
                        control: resolve_address(address, self.agent_control_port)
                            .map_err(|m| invalid(path, &format!("{key}.address"), m.to_string()))?,
                    });
                }
                AgentEntry::Range { from, to, port } => {
                    let (a, b) = (u32::from(*from), u32::from(*to));
                    if a > b || b - a >= 65_536 {
                        return Err(invalid(
                            path,
                            &key,
                            "expected `from` <= `to` and at most 65536 addresses",
                        ));
                    }
                    if out.len() + (b - a) as usize >= MAX_STATIC_AGENTS {
                        return Err(invalid(
                            path,
                            &key,
                            format!("expected at most {MAX_STATIC_AGENTS} agents in all"),
                        ));
                    }
                    for ip in a..=b {
                        out.push(StaticAgent {
                            name: None,
                            control: SocketAddr::from((
                                Ipv4Addr::from(ip),
                                port.unwrap_or(self.agent_control_port),
                            )),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

impl AgentConfig {
    /// Read, parse and validate a config file; relative paths written in
    /// it resolve against its directory (see `load_resolved`).
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let (mut config, dir) = load_resolved(path, Self::parse, |c| FilePaths {
            log_dir: &mut c.log_dir,
            backup_dir: &mut c.backup_dir,
            key_file: &mut c.key_file,
            previous_key_files: &mut c.previous_key_files,
        })?;
        config.config_dir = Some(dir);
        Ok(config)
    }

    /// Parse and validate configuration text; `path` only names the file in
    /// errors. Separate from `load` so the fuzzer needs no files.
    pub fn parse(text: &str, path: &Path) -> Result<AgentConfig, ConfigError> {
        let config: AgentConfig = parse_yaml(text, path)?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if let Some(name) = &self.name {
            crate::names::check_host_name(name)
                .map_err(|m| invalid(path, "name", m.to_string()))?;
        }
        self.master_address()
            .map_err(|m| invalid(path, "master", m.to_string()))?;
        self.master_alarm_address()
            .map_err(|m| invalid(path, "master_alarm", m.to_string()))?;
        if self.workers < 2 || self.workers > 256 {
            return Err(invalid(
                path,
                "workers",
                "expected a pool size from 2 to 256 (a pull holds a control and a data connection at once)",
            ));
        }
        if self.max_handshakes_per_address == 0 {
            return Err(invalid(
                path,
                "max_handshakes_per_address",
                "expected at least 1",
            ));
        }
        require_durations_and_rotate_size(
            path,
            &[
                ("realarm_interval", self.realarm_interval.0),
                ("heartbeat_interval", self.heartbeat_interval.0),
                ("connect_timeout", self.connect_timeout.0),
                ("io_timeout", self.io_timeout.0),
            ],
            self.rotate_size.0,
        )?;
        if self.max_backlog.0 < self.rotate_size.0 {
            return Err(invalid(
                path,
                "max_backlog",
                "expected at least rotate_size (the cap must hold one archive)",
            ));
        }
        self.collector_specs(path).map(|_| ())
    }

    pub fn master_address(&self) -> Result<SocketAddr, AddressError> {
        resolve_address(&self.master, 8080)
    }

    pub fn master_alarm_address(&self) -> Result<SocketAddr, AddressError> {
        match &self.master_alarm {
            Some(text) => resolve_address(text, 8081),
            None => self.master_address().map(|a| SocketAddr::new(a.ip(), 8081)),
        }
    }

    /// The agent's name: configured, or this machine's host name.
    pub fn agent_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(crate::names::local_host_name)
    }

    pub fn collector_specs(&self, path: &Path) -> Result<Vec<CollectorSpec>, ConfigError> {
        let mut specs: Vec<CollectorSpec> = Vec::new();
        for (i, c) in self.collectors.iter().enumerate() {
            let key = |field: &str| format!("collectors[{i}].{field}");
            crate::names::check_type_name(&c.name)
                .map_err(|m| invalid(path, &key("name"), m.to_string()))?;
            if c.name == crate::names::HOST_TYPE {
                return Err(invalid(
                    path,
                    &key("name"),
                    "another name: `host` is the type of the master's own host-down alarms",
                ));
            }
            if specs.iter().any(|s| s.name == c.name) {
                return Err(invalid(
                    path,
                    &key("name"),
                    format!("`{}` is used twice", c.name),
                ));
            }
            let argv = match (&c.command, c.builtin) {
                (Some(command), None) => {
                    let mut argv =
                        split_command(command).map_err(|m| invalid(path, &key("command"), m.to_string()))?;
                    if let (Some(dir), Some(program)) = (&self.config_dir, argv.first_mut()) {
                        resolve_program(dir, program);
                    }
                    argv
                }
                // A built-in runs no program.
                (None, Some(_)) => Vec::new(),
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        path,
                        &format!("collectors[{i}]"),
                        "expected `command` or `builtin`, not both",
                    ))
                }
                (None, None) => {
                    return Err(invalid(
                        path,
                        &format!("collectors[{i}]"),
                        "expected `command` (a program) or `builtin` (cpu, mem, disk, proc, users or sysinfo)",
                    ))
                }
            };
            if c.builtin.is_some() && c.mode.is_some_and(|m| m != Mode::Lines) {
                return Err(invalid(
                    path,
                    &key("mode"),
                    "expected no `mode` (or `lines`) with `builtin`: built-ins print the scripts' lines",
                ));
            }
            require_positive(path, &key("interval"), c.interval.0)?;
            let timeout = c.timeout.map(|t| t.0).unwrap_or_else(|| {
                // Default: the interval, but at least 10s (a loaded Pi can be
                // slow to start a script) and at most 60s (a hung script is
                // noticed soon).
                c.interval
                    .0
                    .clamp(Duration::from_secs(10), Duration::from_secs(60))
            });
            require_positive(path, &key("timeout"), timeout)?;
            specs.push(CollectorSpec {
                name: c.name.clone(),
                argv,
                builtin: c.builtin,
                interval: c.interval.0,
                timeout,
                mode: c.mode.unwrap_or(Mode::Lines),
                trigger: Trigger {
                    hold: c.hold,
                    recover: c.recover_for,
                },
            });
        }
        Ok(specs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, text).expect("temp dir is writable");
        path
    }

    #[test]
    fn trigger_rules_per_collector() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "collectors:\n  - {name: cpu, builtin: cpu, interval: 10s, for: 2m, recover_for: 3 runs}\n  - {name: mem, builtin: mem, interval: 10s}\n",
        );
        let c = AgentConfig::load(&path).unwrap();
        let specs = c.collector_specs(&path).unwrap();
        assert_eq!(specs[0].trigger.hold, Hold::For(Duration::from_secs(120)));
        assert_eq!(specs[0].trigger.recover, Hold::Runs(3));
        assert_eq!(specs[1].trigger, Trigger::default());
        for (bad, key) in [
            ("for: 3", "collectors[0].for"),
            ("for: 0 runs", "collectors[0].for"),
            ("recover_for: soon", "collectors[0].recover_for"),
        ] {
            let path = write(
                &dir,
                &format!("collectors:\n  - {{name: cpu, builtin: cpu, interval: 10s, {bad}}}\n"),
            );
            let e = AgentConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("3 runs"), "{bad}: {e}");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(ByteSize::parse("8MiB"), Some(8 << 20));
        assert_eq!(ByteSize::parse("100"), Some(100));
        assert_eq!(ByteSize::parse("3 KiB"), Some(3072));
        assert_eq!(ByteSize::parse("8 parsecs"), None);
        assert_eq!(ByteSize::parse("99999999999999GiB"), None);
    }

    #[test]
    fn master_defaults_and_ranges() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(
            &dir,
            "agents:\n  - 127.0.0.2\n  - {name: pi9, address: '127.0.0.9:9000'}\n  - {from: 10.0.0.1, to: 10.0.0.3}\npull_interval: 5s\n",
        );
        let c = MasterConfig::load(&path).expect("valid config");
        assert_eq!(c.pull_interval.0, Duration::from_secs(5));
        assert_eq!(c.workers, 10);
        let agents = c.static_agents(&path).expect("valid agents");
        assert_eq!(agents.len(), 5);
        assert_eq!(agents[0].control, "127.0.0.2:8000".parse().unwrap());
        assert_eq!(agents[1].name.as_deref(), Some("pi9"));
        assert_eq!(agents[4].control, "10.0.0.3:8000".parse().unwrap());
    }

    #[test]
    fn too_many_static_agents_is_a_clear_error() {
        // Two full ranges fit; a third crosses MAX_STATIC_AGENTS.
        let text = "agents:\n  - {from: 10.0.0.0, to: 10.0.255.255}\n  \
                    - {from: 10.1.0.0, to: 10.1.255.255}\n  - {from: 10.2.0.0, to: 10.2.0.1}\n";
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(&dir, text);
        let err = MasterConfig::load(&path).expect_err("over the cap");
        assert_eq!(err.key, "agents[1]");
        assert!(err.to_string().contains("at most 100000 agents"), "{err}");
    }

    #[test]
    fn http_listen_defaults_to_loopback_and_can_be_turned_off() {
        let dir = tempfile::tempdir().expect("temp dir");
        let c = MasterConfig::load(&write(&dir, "")).expect("defaults");
        assert_eq!(c.http_listen, Some("127.0.0.1:8082".parse().unwrap()));
        let c = MasterConfig::load(&write(&dir, "http_listen: null\n")).expect("null");
        assert_eq!(c.http_listen, None);
        let c = MasterConfig::load(&write(&dir, "http_listen: \"0.0.0.0:9100\"\n")).expect("set");
        assert_eq!(c.http_listen, Some("0.0.0.0:9100".parse().unwrap()));
        let e = MasterConfig::load(&write(&dir, "http_listen: localhost\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("http_listen"), "{e}");
        let e = MasterConfig::load(&write(&dir, "http_listen: \"0.0.0.0:8080\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`http_listen`"), "{e}");
    }

    #[test]
    fn errors_name_file_key_and_expectation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(&dir, "pull_interval: soon\n");
        let e = MasterConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("c.yaml"), "{e}");
        assert!(e.contains("pull_interval"), "{e}");
        assert!(e.contains("30s"), "{e}");

        let path = write(&dir, "pul_interval: 5s\n");
        let e = MasterConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("pul_interval"), "{e}");

        let path = write(&dir, "workers: 0\n");
        let e = MasterConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("`workers`"), "{e}");

        for (text, key) in [
            ("alarm_command_workers: 0\n", "`alarm_command_workers`"),
            ("alarm_command_queue: 0\n", "`alarm_command_queue`"),
            ("alarm_command_queue: lots\n", "alarm_command_queue"),
        ] {
            let path = write(&dir, text);
            let e = MasterConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }

        let e = MasterConfig::load(&dir.path().join("missing.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.yaml"), "{e}");
    }

    #[test]
    fn alerting_keys_are_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (text, says) in [
            ("alertmanagers: [\"https://am:9093\"]\n", "https"),
            ("alertmanagers: [\"am:9093\"]\n", "http://127.0.0.1:9093"),
            (
                "alertmanagers: [\"http://a:1\", \"http://a:1\"]\n",
                "listed twice",
            ),
            (
                "alertmanagers: [\"http://a:1\", \"http://a b\"]\n",
                "alertmanagers[1]",
            ),
            ("alertmanager_resend: 0s\n", "alertmanager_resend"),
            ("host_recovery_hold: soon\n", "host_recovery_hold"),
            (
                "http_listen: 127.0.0.1:8082\nalertmanagers: [\"http://127.0.0.1:8082\"]\n",
                "own ports",
            ),
            ("alertmanagers: [\"http://127.0.0.1:8081\"]\n", "own ports"),
        ] {
            let path = write(&dir, text);
            let e = MasterConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
        let path = write(&dir, "alertmanagers: [\"http://127.0.0.1:9093/am/\"]\n");
        let c = MasterConfig::load(&path).expect("valid");
        assert_eq!(c.alertmanager_targets(&path).unwrap().len(), 1);
        let path = write(
            &dir,
            "collectors:\n  - {name: host, command: scripts/cpu.sh, interval: 10s}\n",
        );
        let e = AgentConfig::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("collectors[0].name") && e.contains("host"),
            "{e}"
        );
    }

    #[test]
    fn agent_collectors_builtin_or_command() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(
            &dir,
            "collectors:\n  - {name: cpu, builtin: cpu, interval: 10s}\n  - {name: cpu2, command: scripts/cpu.sh, interval: 10s}\n",
        );
        let c = AgentConfig::load(&path).expect("valid");
        let specs = c.collector_specs(&path).expect("valid");
        assert_eq!(specs[0].builtin, Some(Builtin::Cpu));
        assert!(specs[0].argv.is_empty());
        assert_eq!(specs[0].mode, Mode::Lines);
        assert_eq!(specs[1].builtin, None);
        // A relative program path is taken from the config file's directory.
        let real_dir = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            specs[1].argv,
            [real_dir.join("scripts/cpu.sh").to_str().unwrap().to_owned()]
        );

        for (text, key, says) in [
            (
                "collectors:\n  - {name: cpu, builtin: cpu, command: scripts/cpu.sh, interval: 1s}\n",
                "collectors[0]",
                "not both",
            ),
            (
                "collectors:\n  - {name: x, interval: 1s}\n  - {name: y, interval: 1s}\n",
                "collectors[0]",
                "`builtin`",
            ),
            (
                "collectors:\n  - {name: cpu, builtin: cpux, interval: 1s}\n",
                "collectors[0].builtin",
                "cpu",
            ),
            (
                "collectors:\n  - {name: cpu, builtin: cpu, interval: 1s, mode: nagios}\n",
                "collectors[0].mode",
                "builtin",
            ),
        ] {
            let path = write(&dir, text);
            let e = AgentConfig::load(&path).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            let shown = e.to_string();
            assert!(shown.contains("c.yaml") && shown.contains(says), "{shown}");
        }
    }

    #[test]
    fn agent_collectors_validated() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(
            &dir,
            "name: pi1\ncollectors:\n  - {name: cpu, command: scripts/cpu.sh, interval: 10s}\n  - {name: load, command: \"/usr/lib/nagios/plugins/check_load -w '5,4,3' -c 10,8,6\", interval: 1m, mode: nagios}\n",
        );
        let c = AgentConfig::load(&path).expect("valid");
        let specs = c.collector_specs(&path).expect("valid");
        assert_eq!(specs[1].argv[2], "5,4,3");
        assert_eq!(specs[1].mode, Mode::Nagios);
        assert_eq!(specs[0].timeout, Duration::from_secs(10));

        let path = write(
            &dir,
            "collectors:\n  - {name: ../x, command: a, interval: 1s}\n",
        );
        let e = AgentConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("collectors[0].name"), "{e}");

        let path = write(
            &dir,
            "collectors:\n  - {name: x, command: a, interval: 1s, mode: nrpe}\n",
        );
        let e = AgentConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("collectors[0]"), "{e}");
    }

    /// Issue 16 item 5: the parser's internals never reach the operator.
    #[test]
    fn errors_are_in_words_with_the_nearest_key() {
        let master = |text: &str| {
            MasterConfig::parse(text, Path::new("/etc/pihealth/master.yaml"))
                .expect_err(text)
                .to_string()
        };
        let agent = |text: &str| {
            AgentConfig::parse(text, Path::new("agent.yaml"))
                .expect_err(text)
                .to_string()
        };
        for (text, want) in [
            (
                "agents:\n  - {name: pi1, adress: '10.0.0.1:8000'}\n",
                "/etc/pihealth/master.yaml: key `agents[0].adress`: unknown key; did you mean `address`?",
            ),
            (
                "pul_interval: 5s\n",
                "/etc/pihealth/master.yaml: key `pul_interval`: unknown key; did you mean `pull_interval`?",
            ),
            (
                "workers: ten\n",
                "/etc/pihealth/master.yaml: key `workers`: expected a whole number, got \"ten\" (line 1, column 10)",
            ),
            (
                "agent_control_port: 70000\n",
                "key `agent_control_port`: expected a whole number from 0 to 65535, got `70000`",
            ),
            ("listen: foo\n", "key `listen`: expected host:port"),
            ("http_listen: 8082\n", "got `8082`"),
            ("agents:\n  - {name: pi1}\n", "key `agents[0]`: expected either `{name, address}`"),
            ("agents:\n  - {from: 10.0.0.1, to: ten}\n", "key `agents[0].to`: expected an IPv4 address"),
            ("agents: 5\n", "key `agents`: expected a list, got `5`"),
            ("zzzzzz: 1\n", "unknown key `zzzzzz`; expected one of `listen`,"),
        ] {
            let e = master(text);
            assert!(e.contains(want), "{text:?}:\n{e}\nwanted {want}");
            for internal in ["untagged", "usize", "u16", "invalid type", "syntax"] {
                assert!(!e.contains(internal), "{text:?}: {e}");
            }
        }
        for (text, want) in [
            (
                "collectors:\n  - {name: a, comand: b, interval: 1s}\n",
                "agent.yaml: key `collectors[0].comand`: unknown key; did you mean `command`?",
            ),
            (
                "collectors:\n  - {name: a, command: b, interval: 1s, mode: nagio}\n",
                "key `collectors[0].mode`: unknown value `nagio`; did you mean `nagios`?",
            ),
            ("thresholds: {cpu_nte: 3}\n", "did you mean `cpu_note`?"),
            (
                "allowed_masters: [x]\n",
                "key `allowed_masters[0]`: expected an IP address",
            ),
            ("control_listen: localhost\n", "expected host:port"),
            ("workers: [1]\n", "expected a whole number, got a list"),
        ] {
            let e = agent(text);
            assert!(e.contains(want), "{text:?}:\n{e}\nwanted {want}");
        }
        // The shapes that were valid before stay valid.
        let c = MasterConfig::parse(
            "agents:\n  - 10.0.0.1\n  - {name: pi2, address: '10.0.0.2:8000'}\n  - {from: 10.0.1.1, to: 10.0.1.2, port: 9000}\nhttp_listen: null\n",
            Path::new("m.yaml"),
        )
        .expect("valid");
        assert_eq!(c.agents.len(), 3);
        assert_eq!(c.http_listen, None);
    }

    #[test]
    fn nearest_key_only_when_close() {
        let valid = ["name", "address", "from", "to", "port"];
        assert_eq!(nearest("adress", &valid), Some("address"));
        assert_eq!(nearest("Adress", &valid), Some("address"));
        assert_eq!(nearest("prot", &valid), Some("port"));
        assert_eq!(nearest("colour", &valid), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("prot", "port"), 1);
    }
}
