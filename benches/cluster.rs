//! `cargo bench --bench cluster`: the figures of SPEC §9 that the core can
//! measure, each beside a baseline taken in the same run, on loopback only.
//!
//! - pull latency: one real agent process (six log types with small
//!   deltas), pulled by the master's own pull code, against a raw TCP
//!   connect + round trip on the same loopback;
//! - agent CPU per pull and idle resident memory (all its processes);
//! - bulk: pulling a 64 MiB backlog against raw loopback TCP throughput.
//!
//! Bounded in count and time; stops by itself. Under `cargo test` (no
//! `--bench` argument) it only says so and exits.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pihealth::master::pull::{pull_agent, PullContext};
use pihealth::protocol::Key;

const BIN: &str = env!("CARGO_BIN_EXE_pihealth");
const TYPES: [&str; 6] = ["cpu", "mem", "disk", "proc", "users", "sysinfo"];
const PULLS: usize = 200;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p95(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() * 95 / 100]
}

/// utime + stime of a process, in clock ticks (100 Hz on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// Resident memory of a process and all its descendants, in KiB.
fn rss_tree_kib(pid: u32) -> u64 {
    let mut total = 0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        let status = fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        total += status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if let Ok(children) = fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}

fn start_agent(dir: &Path, ip: &str, collectors: &str) -> Agent {
    let config = dir.join(format!("agent-{ip}.yaml"));
    fs::write(
        &config,
        format!(
            "name: bench-{ip}\nmaster: 127.0.200.1:8080\ncontrol_listen: {ip}:8000\ndata_listen: {ip}:8001\n\
             key_file: pihealth.key\nlog_dir: {ip}/log\nbackup_dir: {ip}/logbackup\nheartbeat_interval: 1h\n\
             max_backlog: 1GiB\nrotate_size: 512MiB\ncollectors:\n{collectors}"
        ),
    )
    .expect("write config");
    let child = Command::new(BIN)
        .args(["agent", "-c"])
        .arg(&config)
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start agent");
    let addr: SocketAddr = format!("{ip}:8000").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "agent on {ip} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Agent(child)
}

/// Raw loopback: connect, one byte each way, close.
fn raw_round_trips(n: usize) -> Vec<Duration> {
    let listener = TcpListener::bind("127.0.200.9:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        for _ in 0..n {
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        }
    });
    let times = (0..n)
        .map(|_| {
            let t = Instant::now();
            let mut c = TcpStream::connect(addr).unwrap();
            c.set_nodelay(true).unwrap();
            c.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            t.elapsed()
        })
        .collect();
    server.join().unwrap();
    times
}

/// Raw loopback throughput in MB/s, sending `bytes` through one connection.
fn raw_throughput(bytes: usize) -> f64 {
    let listener = TcpListener::bind("127.0.200.9:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0;
        while total < bytes {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            total += n;
        }
    });
    let chunk = vec![7u8; 256 * 1024];
    let t = Instant::now();
    let mut c = TcpStream::connect(addr).unwrap();
    let mut sent = 0;
    while sent < bytes {
        c.write_all(&chunk).unwrap();
        sent += chunk.len();
    }
    server.join().unwrap();
    bytes as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster bench: skipped (run `cargo bench --bench cluster`)");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("pihealth-bench-")
        .tempdir()
        .expect("temp dir");
    let key_path = dir.path().join("pihealth.key");
    pihealth::cli::keygen(&key_path, false).expect("keygen");
    let key = Key::load(&key_path).expect("key");
    let ctx = |root: &str| PullContext {
        keys: vec![key.clone()],
        log_root: dir.path().join(root).join("log"),
        backup_root: dir.path().join(root).join("logbackup"),
        rotate_size: 512 << 20,
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(30),
        progress: None,
    };

    // A collector that only prints a line: the bench measures pulls, not scripts.
    let line = dir.path().join("line.sh");
    fs::write(&line, "#!/bin/sh\necho \"0.01 0.02 0.03 1.00 - normal\"\n").unwrap();
    fs::set_permissions(&line, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let collectors: String = TYPES
        .iter()
        .map(|t| {
            format!(
                "  - {{name: {t}, command: {}, interval: 50ms}}\n",
                line.display()
            )
        })
        .collect();

    // 1. Pull latency, small deltas of all six types.
    let agent = start_agent(dir.path(), "127.0.200.2", &collectors);
    let control: SocketAddr = "127.0.200.2:8000".parse().unwrap();
    let small = ctx("master-small");
    std::thread::sleep(Duration::from_millis(500));
    pull_agent(&small, control, None).expect("first pull");
    let raw = raw_round_trips(PULLS);
    let mut times = Vec::new();
    let mut pieces = 0;
    let ticks_before = cpu_ticks(agent.0.id());
    for _ in 0..PULLS {
        std::thread::sleep(Duration::from_millis(60)); // let every type gain a line
        let t = Instant::now();
        let r = pull_agent(&small, control, None).expect("pull");
        times.push(t.elapsed());
        pieces += r.pieces;
    }
    // The agent also ran its collectors meanwhile; measure that alone next.
    let ticks_pulls = cpu_ticks(agent.0.id()) - ticks_before;
    let ticks_before = cpu_ticks(agent.0.id());
    std::thread::sleep(Duration::from_millis(60) * PULLS as u32);
    let ticks_idle = cpu_ticks(agent.0.id()) - ticks_before;
    let cpu_per_pull_ms = (ticks_pulls.saturating_sub(ticks_idle)) as f64 * 10.0 / PULLS as f64;
    drop(agent);

    // 2. Idle memory: an agent with the standard collectors' shape but idle.
    let idle = start_agent(
        dir.path(),
        "127.0.200.3",
        &format!(
            "  - {{name: cpu, command: {}, interval: 1h}}\n",
            line.display()
        ),
    );
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_tree_kib(idle.0.id());
    drop(idle);

    // 3. Bulk: a 64 MiB backlog in one current log, against raw TCP.
    let bulk_bytes: usize = 64 << 20;
    let bulk_log = dir.path().join("127.0.200.4/log");
    fs::create_dir_all(&bulk_log).unwrap();
    let mut text = String::with_capacity(bulk_bytes + 100);
    let mut i = 0u64;
    while text.len() < bulk_bytes {
        text.push_str(&format!(
            "2026-11-21T10:31:09+08:00 {i} 0.02 0.08 0.08 31.56 49.38 normal\n"
        ));
        i += 1;
    }
    fs::write(bulk_log.join("bulk.log"), &text).unwrap();
    let bulk_agent = start_agent(dir.path(), "127.0.200.4", "");
    let t = Instant::now();
    let r = pull_agent(
        &ctx("master-bulk"),
        "127.0.200.4:8000".parse().unwrap(),
        None,
    )
    .expect("bulk pull");
    let bulk_mbps = r.wire_bytes as f64 / t.elapsed().as_secs_f64() / 1e6;
    drop(bulk_agent);
    let raw_mbps = raw_throughput(bulk_bytes);

    let (med, p) = (median(times.clone()), p95(times));
    let raw_med = median(raw);
    println!();
    println!("| figure | pihealth | baseline (same run) | ratio | SPEC §9 target |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| pull of 6 types, small deltas, median (p95) | {:.3} ms ({:.3} ms) | raw TCP connect+round trip {:.3} ms | {:.1}x | ≤ 1 ms |",
        med.as_secs_f64() * 1e3,
        p.as_secs_f64() * 1e3,
        raw_med.as_secs_f64() * 1e3,
        med.as_secs_f64() / raw_med.as_secs_f64()
    );
    println!(
        "| pieces per pull | {:.1} | 6 types | | |",
        pieces as f64 / PULLS as f64
    );
    println!("| agent CPU per pull (collector work subtracted) | {cpu_per_pull_ms:.3} ms | | | ≤ 0.5 ms |");
    println!(
        "| agent idle RSS, all processes | {:.2} MiB | | | ≤ 4 MiB |",
        idle_rss as f64 / 1024.0
    );
    println!(
        "| bulk pull of 64 MiB | {bulk_mbps:.0} MB/s | raw loopback TCP {raw_mbps:.0} MB/s | {:.0}% | ≥ 50% |",
        100.0 * bulk_mbps / raw_mbps
    );
    println!();
    println!("(one agent process on 127.0.200.x, pulled in-process by the master's pull code; {PULLS} pulls)");
}
