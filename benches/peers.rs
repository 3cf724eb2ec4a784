//! `cargo bench --bench peers -- ARGS`: pihealth beside the real peers,
//! measured in one run on one machine. `scripts/bench-peers.sh` installs
//! and starts the peers (zabbix_agentd, node_exporter, NRPE and a pihealth
//! agent with the six standard scripts), all on loopback, then runs this
//! with their PIDs and addresses; alone (no peer arguments, or under
//! `cargo test`) it only says so and exits.
//!
//! For each daemon:
//! - idle resident memory: VmRSS summed over the daemon's process and all
//!   its descendants, after a settle time and before any fetch;
//! - one health snapshot, N times: latency median and p95, and the
//!   daemon's CPU per snapshot from /proc (utime + stime + cutime + cstime
//!   of every process of the daemon, before and after, minus its idle CPU
//!   rate measured in the same run, divided by N). For the pihealth agent,
//!   whose collectors run on their own schedule in the same process, the
//!   pull's CPU is the run time of the threads that serve pulls
//!   (`accept-*`, `agent-worker`, from /proc/PID/task/*/schedstat, ns).
//!
//! A snapshot is: node_exporter, one GET /metrics; zabbix_agentd, six
//! passive keys (six connections); NRPE, five checks (five connections,
//! NRPE v2 packets, no SSL); pihealth, one pull of all six log types with
//! small deltas by the master's own pull code, as in `benches/cluster.rs`.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pihealth::master::pull::{pull_agent, PullContext};
use pihealth::protocol::Key;

/// USER_HZ: /proc times are in 1/100 s on Linux.
const TICK_MS: f64 = 10.0;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

const ZABBIX_KEYS: [&str; 6] = [
    "system.cpu.load[all,avg1]",
    "vm.memory.size[available]",
    "vfs.fs.size[/,pused]",
    "proc.num[]",
    "system.users.num",
    "system.uptime",
];
const NRPE_CHECKS: [&str; 5] = [
    "check_load",
    "check_disk",
    "check_users",
    "check_procs",
    "check_swap",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Pihealth,
    Zabbix,
    Nrpe,
    NodeExporter,
}

impl Kind {
    fn flag(self) -> &'static str {
        match self {
            Kind::Pihealth => "--pihealth",
            Kind::Zabbix => "--zabbix",
            Kind::Nrpe => "--nrpe",
            Kind::NodeExporter => "--node-exporter",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Pihealth => "pihealth agent",
            Kind::Zabbix => "zabbix_agentd",
            Kind::Nrpe => "NRPE",
            Kind::NodeExporter => "node_exporter",
        }
    }

    fn snapshot(self) -> &'static str {
        match self {
            Kind::Pihealth => "one pull of the 6 log types (small deltas), authenticated",
            Kind::Zabbix => "6 passive keys, one TCP connection each",
            Kind::Nrpe => "5 checks (a plugin forked per check), one TCP connection each",
            Kind::NodeExporter => "GET /metrics (default collectors, no gzip)",
        }
    }
}

struct Peer {
    kind: Kind,
    pid: u32,
    addr: SocketAddr,
    /// A subreaper the daemon runs under (`--subreaper`): NRPE double-forks
    /// its connection handlers, which then belong to the subreaper; their
    /// CPU reaches its cutime. Its own memory is not counted.
    reaper: Option<u32>,
}

impl Peer {
    /// Every process of the daemon (for RSS): the reaper's other children,
    /// orphans of the daemon, included; the reaper itself left out.
    fn processes(&self) -> Vec<u32> {
        match self.reaper {
            Some(r) => process_tree(r).into_iter().filter(|&p| p != r).collect(),
            None => process_tree(self.pid),
        }
    }
}

struct Args {
    peers: Vec<Peer>,
    key: Option<PathBuf>,
    out: Option<PathBuf>,
    n: usize,
    max_phase: Duration,
    settle: Duration,
    idle: Duration,
    gap: Duration,
    pull_period: Duration,
    collect_interval: Duration,
    notes: Vec<String>,
}

const USAGE: &str = "usage: cargo bench --bench peers -- [--pihealth PID@ADDR --key FILE] \
[--zabbix PID@ADDR] [--nrpe PID@ADDR] [--node-exporter PID@ADDR] [--out FILE] [--n 200] \
[--max-phase 90s] [--settle 3s] [--idle 5s] [--gap 10ms] [--pull-period 400ms] \
[--collect-interval 400ms] [--note TEXT]... [--nrpe-reaper PID]
       cargo bench --bench peers -- --subreaper COMMAND [ARGS]...   (run COMMAND as a child subreaper)";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        peers: Vec::new(),
        key: None,
        out: None,
        n: 200,
        max_phase: Duration::from_secs(90),
        settle: Duration::from_secs(3),
        idle: Duration::from_secs(5),
        gap: Duration::from_millis(10),
        pull_period: Duration::from_millis(400),
        collect_interval: Duration::from_millis(400),
        notes: Vec::new(),
    };
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    let duration = |v: String| humantime::parse_duration(&v).map_err(|e| format!("{v}: {e}"));
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        let kind = [Kind::Pihealth, Kind::Zabbix, Kind::Nrpe, Kind::NodeExporter]
            .into_iter()
            .find(|k| k.flag() == flag);
        if let Some(kind) = kind {
            let v = value()?;
            let (pid, addr) = v
                .split_once('@')
                .ok_or(format!("{flag} {v}: expected PID@IP:PORT"))?;
            args.peers.push(Peer {
                kind,
                pid: pid.parse().map_err(|e| format!("{flag} {v}: {e}"))?,
                addr: addr.parse().map_err(|e| format!("{flag} {v}: {e}"))?,
                reaper: None,
            });
            continue;
        }
        match flag.as_str() {
            "--nrpe-reaper" => {
                let v = value()?;
                let reaper = v.parse().map_err(|e| format!("{flag} {v}: {e}"))?;
                let nrpe = args.peers.iter_mut().find(|p| p.kind == Kind::Nrpe);
                nrpe.ok_or("--nrpe-reaper after --nrpe")?.reaper = Some(reaper);
            }
            "--key" => args.key = Some(value()?.into()),
            "--out" => args.out = Some(value()?.into()),
            "--n" => args.n = value()?.parse().map_err(|e| format!("--n: {e}"))?,
            "--max-phase" => args.max_phase = duration(value()?)?,
            "--settle" => args.settle = duration(value()?)?,
            "--idle" => args.idle = duration(value()?)?,
            "--gap" => args.gap = duration(value()?)?,
            "--pull-period" => args.pull_period = duration(value()?)?,
            "--collect-interval" => args.collect_interval = duration(value()?)?,
            "--note" => args.notes.push(value()?),
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    if args.n < 20 {
        return Err("--n: at least 20 (for a p95)".into());
    }
    if args.peers.iter().any(|p| p.kind == Kind::Pihealth) && args.key.is_none() {
        return Err("--pihealth needs --key FILE".into());
    }
    Ok(args)
}

// ---------------------------------------------------------------- /proc

/// Fields of /proc/PID/stat after the command name and the state: ppid is [0].
fn stat_fields(path: &str) -> Option<Vec<u64>> {
    let stat = fs::read_to_string(path).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(
        after
            .split_whitespace()
            .skip(1) // state
            .map(|f| f.parse::<i64>().map(|v| v.max(0) as u64).unwrap_or(0))
            .collect(),
    )
}

/// (utime + stime, cutime + cstime) of a process, in ticks. The
/// children's part holds only children that have exited and been reaped.
fn proc_times(pid: u32) -> Option<(u64, u64)> {
    // After the state: utime [10] stime [11] cutime [12] cstime [13].
    let f = stat_fields(&format!("/proc/{pid}/stat"))?;
    Some((f.get(10)? + f.get(11)?, f.get(12)? + f.get(13)?))
}

/// A process and all its descendants, the root first (from the
/// `children` lists of every thread: cheap enough to sample often).
fn process_tree(root: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        out.push(p);
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(children) = fs::read_to_string(task.path().join("children")) {
                stack.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU ticks of every process of a daemon: each one's own time plus its
/// reaped children's (a live child is counted by itself, not twice).
fn tree_ticks(root: u32) -> u64 {
    process_tree(root)
        .into_iter()
        .filter_map(proc_times)
        .map(|(own, reaped)| own + reaped)
        .sum()
}

/// Time on CPU, ns, of the threads of `pid` whose name passes `keep`.
fn threads_ns(pid: u32, keep: impl Fn(&str) -> bool) -> u64 {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .filter(|t| {
            keep(
                fs::read_to_string(t.path().join("comm"))
                    .unwrap_or_default()
                    .trim(),
            )
        })
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Time on CPU, ns, of the main thread (it runs the agent's collectors).
fn main_thread_ns(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn serving_thread(name: &str) -> bool {
    name.starts_with("accept-") || name.starts_with("agent-worker")
}

/// SIGTERM, then wait (5 s at most) until the process has exited.
fn stop(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        match stat.rsplit_once(") ") {
            Some((_, rest)) if !rest.starts_with('Z') => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => return,
        }
    }
}

fn alive(pid: u32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}

fn loadavg() -> String {
    let l = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------- clients

struct Got {
    bytes: u64,
    pieces: usize,
}

fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    s.write_all(request)?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    Ok(response)
}

fn node_exporter_scrape(addr: SocketAddr) -> Result<Got, String> {
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: pihealth-bench\r\nConnection: close\r\n\r\n"
    );
    let r = exchange(addr, request.as_bytes()).map_err(|e| format!("GET /metrics: {e}"))?;
    if !r.starts_with(b"HTTP/1.1 200") {
        let line = r.split(|&b| b == b'\n').next().unwrap_or_default();
        return Err(format!("GET /metrics: {}", String::from_utf8_lossy(line)));
    }
    Ok(Got {
        bytes: r.len() as u64,
        pieces: 1,
    })
}

/// One passive check: "ZBXD" 0x01, u32 LE length, u32 LE reserved, key.
fn zabbix_get(addr: SocketAddr, key: &str) -> Result<u64, String> {
    let mut request = b"ZBXD\x01".to_vec();
    request.extend((key.len() as u32).to_le_bytes());
    request.extend(0u32.to_le_bytes());
    request.extend(key.as_bytes());
    let r = exchange(addr, &request).map_err(|e| format!("{key}: {e}"))?;
    if r.len() < 13 || &r[..4] != b"ZBXD" {
        return Err(format!("{key}: not a ZBXD reply ({} bytes)", r.len()));
    }
    let len = u32::from_le_bytes(r[5..9].try_into().unwrap()) as usize;
    let value = r.get(13..13 + len).ok_or(format!("{key}: short reply"))?;
    if value.starts_with(b"ZBX_NOTSUPPORTED") {
        return Err(format!("{key}: {}", String::from_utf8_lossy(value)));
    }
    Ok(r.len() as u64)
}

fn zabbix_snapshot(addr: SocketAddr) -> Result<Got, String> {
    let mut bytes = 0;
    for key in ZABBIX_KEYS {
        bytes += zabbix_get(addr, key)?;
    }
    Ok(Got {
        bytes,
        pieces: ZABBIX_KEYS.len(),
    })
}

const NRPE_PACKET: usize = 1036; // v2: i16 version, i16 type, u32 crc, i16 result, [u8; 1024], pad 2

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

/// One NRPE v2 query, no SSL (the daemon runs with -n).
fn nrpe_check(addr: SocketAddr, command: &str) -> Result<u64, String> {
    let mut p = vec![0u8; NRPE_PACKET];
    p[0..2].copy_from_slice(&2i16.to_be_bytes()); // version 2
    p[2..4].copy_from_slice(&1i16.to_be_bytes()); // query
    p[10..10 + command.len()].copy_from_slice(command.as_bytes());
    let crc = crc32(&p);
    p[4..8].copy_from_slice(&crc.to_be_bytes());
    let mut r = exchange(addr, &p).map_err(|e| format!("{command}: {e}"))?;
    if r.len() != NRPE_PACKET || r[0..4] != [0, 2, 0, 2] {
        return Err(format!(
            "{command}: not an NRPE v2 reply ({} bytes)",
            r.len()
        ));
    }
    let sent = u32::from_be_bytes(r[4..8].try_into().unwrap());
    r[4..8].fill(0);
    if crc32(&r) != sent {
        return Err(format!("{command}: bad CRC in reply"));
    }
    let text = &r[10..10 + 1024];
    let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(1024)];
    if text.starts_with(b"NRPE: ") {
        return Err(format!("{command}: {}", String::from_utf8_lossy(text)));
    }
    Ok(r.len() as u64)
}

fn nrpe_snapshot(addr: SocketAddr) -> Result<Got, String> {
    let mut bytes = 0;
    for check in NRPE_CHECKS {
        bytes += nrpe_check(addr, check)?;
    }
    Ok(Got {
        bytes,
        pieces: NRPE_CHECKS.len(),
    })
}

fn pihealth_pull(ctx: &PullContext, addr: SocketAddr) -> Result<Got, String> {
    let r = pull_agent(ctx, addr, None).map_err(|e| format!("pull: {e}"))?;
    if !r.failed_pieces.is_empty() {
        return Err(format!("pull: failed pieces {:?}", r.failed_pieces));
    }
    Ok(Got {
        bytes: r.wire_bytes,
        pieces: r.pieces,
    })
}

// ---------------------------------------------------------------- measuring

#[derive(Default)]
struct Result1 {
    idle_rss_kib: u64,
    idle_note: String,
    /// pihealth: the agent process alone, when collector scripts were counted too.
    idle_agent_only: Option<(u64, usize)>,
    /// pihealth: the largest RSS seen during its phase, and the process count then.
    peak: (u64, usize),
    idle_procs: usize,
    idle_ms_per_s: f64,
    times: Vec<Duration>,
    bytes: u64,
    pieces: usize,
    cpu_ms: f64,
    cpu_note: String,
    rss_after_kib: u64,
    procs_after: usize,
}

fn quantile(times: &[Duration], q: f64) -> f64 {
    let mut v = times.to_vec();
    v.sort();
    let i = ((v.len() as f64 * q) as usize).min(v.len() - 1);
    v[i].as_secs_f64() * 1e3
}

/// Idle resident memory of every process of the daemon. The pihealth
/// agent is idle between collector runs: it is measured at the first instant
/// (within `patience`) when no collector script is running; if there is
/// none, the scripts running then are counted, and the note says so.
fn idle_rss(peer: &Peer, r: &mut Result1, patience: Duration) {
    let waited = Instant::now();
    let tree = quiet_processes(peer, patience);
    r.idle_procs = tree.len();
    r.idle_rss_kib = tree.iter().map(|&p| rss_kib(p)).sum();
    if peer.kind == Kind::Pihealth {
        let own = rss_kib(peer.pid);
        r.idle_note = if tree.len() > 1 {
            r.idle_agent_only = Some((own, tree.len() - 1));
            format!(
                "agent process {:.2} MiB + {} collector process(es) running at that instant {:.2} MiB \
                 (no instant without one in {patience:?})",
                own as f64 / 1024.0,
                tree.len() - 1,
                (r.idle_rss_kib - own) as f64 / 1024.0
            )
        } else {
            format!(
                "the agent process alone, at the first instant after the settle time with no collector \
                 script running (after {} ms)",
                waited.elapsed().as_millis()
            )
        };
    }
}

/// The daemon's processes at the first instant (within `patience`) when
/// the pihealth agent runs no collector script; at once for the others.
fn quiet_processes(peer: &Peer, patience: Duration) -> Vec<u32> {
    let deadline = Instant::now() + patience;
    let mut tree = peer.processes();
    while peer.kind == Kind::Pihealth && tree.len() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        tree = peer.processes();
    }
    tree
}

/// Largest RSS of all the daemon's processes and their count, sampled
/// every 20 ms until `stop` (pihealth: the agent with its scripts running).
fn peak_rss(peer: &Peer, stop: &AtomicBool) -> (u64, usize) {
    let mut peak = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let tree = peer.processes();
        let kib: u64 = tree.iter().map(|&p| rss_kib(p)).sum();
        if kib > peak.0 {
            peak = (kib, tree.len());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    peak
}

/// CPU meters of a daemon: all its processes' ticks; for pihealth, the
/// agent's own ticks (collector children excluded) and its serving threads.
struct Meter {
    at: Instant,
    ticks: u64,
    serving_ns: u64,
    collect_ticks: u64,
    main_ns: u64,
}

fn meter(peer: &Peer) -> Meter {
    let at = Instant::now();
    if peer.kind == Kind::Pihealth {
        let (own, reaped) = proc_times(peer.pid).unwrap_or_default();
        Meter {
            at,
            ticks: own,
            serving_ns: threads_ns(peer.pid, serving_thread),
            collect_ticks: reaped,
            main_ns: main_thread_ns(peer.pid),
        }
    } else {
        Meter {
            at,
            ticks: tree_ticks(peer.reaper.unwrap_or(peer.pid)),
            serving_ns: 0,
            collect_ticks: 0,
            main_ns: 0,
        }
    }
}

fn elapsed_s(a: &Meter, b: &Meter) -> f64 {
    (b.at - a.at).as_secs_f64()
}

/// `--subreaper COMMAND...`: become a child subreaper, run COMMAND, reap
/// every process that ends up ours (its orphans included) until COMMAND
/// exits, and exit with its status. Orphans' CPU so lands in our cutime.
fn subreaper(command: &[String]) -> ExitCode {
    use nix::sys::wait::{waitpid, WaitStatus};
    let Some((program, rest)) = command.split_first() else {
        eprintln!("--subreaper needs a command");
        return ExitCode::from(2);
    };
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("--subreaper: prctl: {e}");
        return ExitCode::from(2);
    }
    let child = match std::process::Command::new(program).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("--subreaper: {program}: {e}");
            return ExitCode::from(2);
        }
    };
    let main = nix::unistd::Pid::from_raw(child.id() as i32);
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == main => {
                return ExitCode::from(u8::try_from(code).unwrap_or(1))
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == main => {
                return ExitCode::from(128u8.saturating_add(signal as u8))
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                eprintln!("--subreaper: waitpid: {e}");
                return ExitCode::from(1);
            }
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(i) = argv.iter().position(|a| a == "--subreaper") {
        return subreaper(&argv[i + 1..]);
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("peers bench: {e}");
            return ExitCode::from(2);
        }
    };
    if args.peers.is_empty() {
        println!("peers bench: skipped (run scripts/bench-peers.sh, which starts the peers)");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peers bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    for p in &args.peers {
        if !alive(p.pid) {
            return Err(format!("{} (pid {}) is not running", p.kind.label(), p.pid));
        }
    }
    let load_start = loadavg();
    let started = Instant::now();
    let master = tempfile::Builder::new()
        .prefix("pihealth-bench-peers-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let ctx = match &args.key {
        Some(k) => Some(PullContext {
            credentials: pihealth::protocol::Credentials::Fleet {
                keys: vec![Key::load(k).map_err(|e| e.to_string())?],
                revoked: Vec::new(),
            },
            key_memory: Default::default(),
            log_root: master.path().join("log"),
            backup_root: master.path().join("logbackup"),
            rotate_size: 512 << 20,
            connect_timeout: Duration::from_secs(2),
            io_timeout: IO_TIMEOUT,
            progress: None,
        }),
        None => None,
    };
    let fetch = |peer: &Peer| -> Result<Got, String> {
        match peer.kind {
            Kind::NodeExporter => node_exporter_scrape(peer.addr),
            Kind::Zabbix => zabbix_snapshot(peer.addr),
            Kind::Nrpe => nrpe_snapshot(peer.addr),
            Kind::Pihealth => pihealth_pull(ctx.as_ref().expect("key checked"), peer.addr),
        }
    };

    // 1. Settle, then idle memory of everyone, then an idle window for each
    //    daemon's background CPU rate (zabbix's collector, pihealth's scripts).
    eprintln!("settling {:?} ...", args.settle);
    std::thread::sleep(args.settle);
    let mut results: Vec<Result1> = args.peers.iter().map(|_| Result1::default()).collect();
    for (peer, r) in args.peers.iter().zip(&mut results) {
        idle_rss(peer, r, args.collect_interval * 3);
    }
    eprintln!("idle CPU window {:?} ...", args.idle);
    let before: Vec<Meter> = args.peers.iter().map(meter).collect();
    std::thread::sleep(args.idle);
    let after: Vec<Meter> = args.peers.iter().map(meter).collect();
    for ((r, a), b) in results.iter_mut().zip(&before).zip(&after) {
        r.idle_ms_per_s = b.ticks.saturating_sub(a.ticks) as f64 * TICK_MS / elapsed_s(a, b);
    }
    let bench_start: Vec<Meter> = before;

    // 2. The snapshots, one daemon at a time. The pihealth agent goes first
    //    and is stopped after its phase: its collectors (six scripts every
    //    --collect-interval) would otherwise load the machine under the others.
    let mut order: Vec<usize> = (0..args.peers.len()).collect();
    order.sort_by_key(|&i| args.peers[i].kind != Kind::Pihealth);
    let mut collection_per_round_ms = None;
    for i in order {
        let peer = &args.peers[i];
        let r = &mut results[i];
        eprintln!(
            "{}: {} snapshots ({}) ...",
            peer.kind.label(),
            args.n,
            peer.kind.snapshot()
        );
        for _ in 0..2 {
            fetch(peer).map_err(|e| format!("{}: warm-up fetch: {e}", peer.kind.label()))?;
        }
        let period = if peer.kind == Kind::Pihealth {
            std::thread::sleep(args.pull_period);
            args.pull_period
        } else {
            Duration::ZERO
        };
        let m0 = meter(peer);
        let t0 = Instant::now();
        let stop_sampling = AtomicBool::new(false);
        let (fetched, peak) = std::thread::scope(|s| {
            let sampler =
                (peer.kind == Kind::Pihealth).then(|| s.spawn(|| peak_rss(peer, &stop_sampling)));
            let mut fetched = Ok(());
            for k in 0..args.n {
                if period > Duration::ZERO {
                    let due = t0 + period * k as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                } else if k > 0 {
                    std::thread::sleep(args.gap);
                }
                let t = Instant::now();
                match fetch(peer) {
                    Ok(got) => {
                        r.times.push(t.elapsed());
                        r.bytes += got.bytes;
                        r.pieces += got.pieces;
                    }
                    Err(e) => {
                        fetched = Err(format!("{}: fetch {k}: {e}", peer.kind.label()));
                        break;
                    }
                }
                if t0.elapsed() > args.max_phase {
                    eprintln!(
                        "  time bound {:?} reached after {} snapshots",
                        args.max_phase,
                        k + 1
                    );
                    break;
                }
            }
            stop_sampling.store(true, Ordering::Relaxed);
            let peak = sampler.map(|h| h.join().unwrap_or_default());
            (fetched, peak)
        });
        fetched?;
        r.peak = peak.unwrap_or_default();
        // Let the last connections' processes exit and be reaped.
        std::thread::sleep(Duration::from_millis(300));
        let m1 = meter(peer);
        let n = r.times.len() as f64;
        let wall = elapsed_s(&m0, &m1);
        let whole =
            (m1.ticks.saturating_sub(m0.ticks) as f64 * TICK_MS - r.idle_ms_per_s * wall) / n;
        if peer.kind == Kind::Pihealth {
            r.cpu_ms = m1.serving_ns.saturating_sub(m0.serving_ns) as f64 / 1e6 / n;
            r.cpu_note = format!(
                "threads serving pulls (schedstat); whole agent process, idle rate subtracted: {:.3} ms",
                whole.max(0.0)
            );
            let start = &bench_start[i];
            let rounds = elapsed_s(start, &m1) / args.collect_interval.as_secs_f64();
            let collect_ms = m1.collect_ticks.saturating_sub(start.collect_ticks) as f64 * TICK_MS
                + m1.main_ns.saturating_sub(start.main_ns) as f64 / 1e6;
            collection_per_round_ms = Some((collect_ms / rounds, rounds));
        } else {
            r.cpu_ms = whole.max(0.0);
        }
        let tree = quiet_processes(peer, args.collect_interval * 3);
        r.procs_after = tree.len();
        r.rss_after_kib = tree.iter().map(|&p| rss_kib(p)).sum();
        if peer.kind == Kind::Pihealth {
            stop(peer.pid);
        }
    }
    let load_end = loadavg();

    // 3. The tables.
    let md = render(
        args,
        &results,
        collection_per_round_ms,
        &load_start,
        &load_end,
        started.elapsed(),
    );
    println!("\n{md}");
    if let Some(out) = &args.out {
        fs::write(out, &md).map_err(|e| format!("{}: {e}", out.display()))?;
        eprintln!("written to {}", out.display());
    }
    Ok(())
}

fn render(
    args: &Args,
    results: &[Result1],
    collection: Option<(f64, f64)>,
    load_start: &str,
    load_end: &str,
    took: Duration,
) -> String {
    let base = args
        .peers
        .iter()
        .position(|p| p.kind == Kind::Pihealth)
        .map(|i| &results[i]);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let ratio = |v: f64, b: Option<f64>| match b {
        Some(b) if b > 0.0 => format!("{:.1}×", v / b),
        _ => "–".into(),
    };
    let mut rows: Vec<usize> = (0..args.peers.len()).collect();
    rows.sort_by_key(|&i| {
        [Kind::Pihealth, Kind::Zabbix, Kind::Nrpe, Kind::NodeExporter]
            .iter()
            .position(|&k| k == args.peers[i].kind)
    });

    let mut md = String::new();
    let _ = writeln!(
        md,
        "## pihealth beside the real peers (`scripts/bench-peers.sh`)\n"
    );
    let _ = writeln!(
        md,
        "{} snapshots per daemon, one daemon at a time, loopback only; load average {load_start} at the start, \
         {load_end} at the end ({} s in all). Ratios are the peer's figure over pihealth's.\n",
        args.n,
        took.as_secs()
    );
    let _ = writeln!(
        md,
        "| peer | idle RSS MiB | × pihealth | fetch median ms | × pihealth | fetch p95 ms | × pihealth | daemon CPU ms/fetch | × pihealth |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for &i in &rows {
        let (p, r) = (&args.peers[i], &results[i]);
        let (med, p95) = (quantile(&r.times, 0.5), quantile(&r.times, 0.95));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.3} | {} | {:.3} | {} | {:.3} | {} |",
            p.kind.label(),
            match r.idle_agent_only {
                Some((own, scripts)) => format!(
                    "{:.2} (agent {:.2} + {scripts} script process(es) running then)",
                    mib(r.idle_rss_kib),
                    mib(own)
                ),
                None => format!("{:.2}", mib(r.idle_rss_kib)),
            },
            ratio(mib(r.idle_rss_kib), base.map(|b| mib(b.idle_rss_kib))),
            med,
            ratio(med, base.map(|b| quantile(&b.times, 0.5))),
            p95,
            ratio(p95, base.map(|b| quantile(&b.times, 0.95))),
            r.cpu_ms,
            ratio(r.cpu_ms, base.map(|b| b.cpu_ms)),
        );
    }
    let _ = writeln!(md, "\n| peer | snapshot | processes idle / after | RSS after the fetches MiB | bytes received per snapshot | idle CPU ms/s | snapshots |");
    let _ = writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for &i in &rows {
        let (p, r) = (&args.peers[i], &results[i]);
        let n = r.times.len().max(1);
        let snapshot = if p.kind == Kind::Pihealth {
            format!(
                "{} — {:.1} pieces per pull on average",
                p.kind.snapshot(),
                r.pieces as f64 / n as f64
            )
        } else {
            p.kind.snapshot().to_string()
        };
        let _ = writeln!(
            md,
            "| {} | {snapshot} | {} / {} | {:.2} | {} | {:.2} | {} |",
            p.kind.label(),
            r.idle_procs,
            r.procs_after,
            mib(r.rss_after_kib),
            r.bytes / n as u64,
            r.idle_ms_per_s,
            r.times.len()
        );
    }
    let _ = writeln!(md);
    for &i in &rows {
        let (p, r) = (&args.peers[i], &results[i]);
        if p.kind == Kind::Pihealth {
            let _ = writeln!(
                md,
                "- pihealth idle RSS: {} (its RSS after the fetches likewise); the largest seen while it collected and \
                 was pulled: {:.2} MiB in {} processes (the agent and the scripts running then).",
                r.idle_note,
                mib(r.peak.0),
                r.peak.1
            );
            let _ = writeln!(md, "- pihealth CPU per pull: {}.", r.cpu_note);
            if let Some((ms, rounds)) = collection {
                let _ = writeln!(
                    md,
                    "- pihealth collection, not in the pull: one run of the six standard scripts costs {ms:.1} ms of CPU \
                     (scripts and agent main thread, over ≈{rounds:.0} rounds at {:?}); zabbix_agentd and NRPE do \
                     their collecting inside the fetch.",
                    args.collect_interval
                );
            }
            let _ = writeln!(
                md,
                "- pihealth pulls every {:?}, the collectors' interval, so each pull carries about one new line per type; \
                 the agent is measured first and stopped after its phase, so that its collectors do not load the machine \
                 while the others are measured.",
                args.pull_period
            );
        }
    }
    if args
        .peers
        .iter()
        .any(|p| p.kind == Kind::Nrpe && p.reaper.is_some())
    {
        let _ = writeln!(
            md,
            "- NRPE double-forks every connection's handler, which init would inherit: it runs under a child \
             subreaper (this bench's `--subreaper`), so handlers and plugins are counted when reaped; the \
             subreaper's own memory is not counted."
        );
    }
    for note in &args.notes {
        let _ = writeln!(md, "- {note}");
    }
    md
}
