//! One agent: pull latency and agent CPU per pull, idle memory; and the
//! raw loopback baselines every other figure is compared with.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use pihealth::master::pull::pull_agent;

use super::agents::{self, AgentSpec, MASTER_IP};
use super::procs::{self, TICK_MS};
use super::report::{median, mib, ms, p95, Report, Row};
use super::{Bench, TYPES};

const PULLS: usize = 200;
/// Collector interval of the latency agent, and the pause between its pulls
/// (a little longer, so every type has gained a line).
const FAST_INTERVAL: Duration = Duration::from_millis(50);
const PULL_PAUSE: Duration = Duration::from_millis(60);

/// A collector that only prints a line: pulls are measured here, not scripts.
fn line_script(b: &Bench) -> Result<String, String> {
    let path = b.dir.join("line.sh");
    fs::write(&path, "#!/bin/sh\necho \"0.01 0.02 0.03 1.00 - normal\"\n")
        .and_then(|_| {
            fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.display().to_string())
}

/// Pulls of the fsync-counting phase (under strace, not timed).
const COUNTED_PULLS: usize = 50;

/// What `PULLS` pulls of one agent took.
struct Latency {
    times: Vec<Duration>,
    pieces: usize,
    /// fsync + fdatasync calls of the master's pull code per pull (its
    /// own counter, `storage::syncs`, over the timed pulls).
    master_syncs: f64,
    /// The agent's per pull, counted by strace over `COUNTED_PULLS` more
    /// pulls: every flush but the collectors' appends to `log/TYPE.log`;
    /// and those appends' own flushes per pull, for the record.
    agent_syncs: Option<(f64, f64)>,
    /// Agent CPU per pull, its collectors' share subtracted.
    agent_cpu_ms: f64,
    /// CPU per pull of the agent threads that serve the master.
    serving_cpu_ms: f64,
}

/// `PULLS` pulls of one agent living in `root`, stored by the master's pull
/// code under `root/master`.
fn latency_run(b: &Bench, name: &str, last: u8, root: &Path) -> Result<Latency, String> {
    let script = line_script(b)?;
    let collectors: String = TYPES
        .iter()
        .map(|t| {
            format!(
                "  - {{name: {t}, command: {script}, interval: {}ms}}\n",
                FAST_INTERVAL.as_millis()
            )
        })
        .collect();
    let ip = agents::single_ip(last);
    let dir = root.join(name);
    let mut agent = AgentSpec {
        name: name.into(),
        ip,
        dir: dir.clone(),
        key_file: &b.key_file,
        master: agents::NOWHERE.into(),
        extra: "heartbeat_interval: 1h\n".into(),
        collectors,
    }
    .start()?;
    let control = agents::control_addr(ip);
    let ctx = b.pull_context(&dir.join("master"), 512 << 20);
    thread::sleep(Duration::from_millis(500));
    pull_agent(&ctx, control, None).map_err(|e| format!("first pull: {e}"))?;

    let mut times = Vec::with_capacity(PULLS);
    let mut pieces = 0;
    let ticks_before = procs::cpu_ticks(agent.pid());
    let serving_before = procs::serving_threads_ns(agent.pid());
    let syncs_before = pihealth::storage::syncs();
    for _ in 0..PULLS {
        thread::sleep(PULL_PAUSE);
        let t = Instant::now();
        let r = pull_agent(&ctx, control, None).map_err(|e| format!("pull: {e}"))?;
        times.push(t.elapsed());
        pieces += r.pieces;
    }
    let master_syncs = (pihealth::storage::syncs() - syncs_before) as f64 / PULLS as f64;
    let serving_ns = procs::serving_threads_ns(agent.pid()) - serving_before;
    // The agent also ran its collectors meanwhile; measure that alone next.
    let ticks_pulls = procs::cpu_ticks(agent.pid()) - ticks_before;
    let ticks_before = procs::cpu_ticks(agent.pid());
    thread::sleep(PULL_PAUSE * PULLS as u32);
    let ticks_idle = procs::cpu_ticks(agent.pid()) - ticks_before;
    let agent_syncs = count_agent_syncs(b, agent.pid(), &ctx, control)?;
    agent.kill9();
    Ok(Latency {
        times,
        pieces,
        master_syncs,
        agent_syncs,
        agent_cpu_ms: ticks_pulls.saturating_sub(ticks_idle) as f64 * TICK_MS / PULLS as f64,
        serving_cpu_ms: serving_ns as f64 / 1e6 / PULLS as f64,
    })
}

/// The agent's flushes during `COUNTED_PULLS` pulls, from `strace -y`
/// attached to it (None without strace or ptrace): per pull, those not on
/// a `log/TYPE.log` (a collector's append), and those on one.
fn count_agent_syncs(
    b: &Bench,
    pid: u32,
    ctx: &pihealth::master::pull::PullContext,
    control: SocketAddr,
) -> Result<Option<(f64, f64)>, String> {
    let out = b.dir.join(format!("strace-{pid}.txt"));
    // Every thread by its id, not `-f`: following the collectors' forks
    // (20 a second here) stalled strace and the agent with it.
    let threads: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("/proc/{pid}/task: {e}"))?
        .flatten()
        .map(|t| t.file_name().to_string_lossy().into_owned())
        .collect();
    let mut command = std::process::Command::new("strace");
    command
        .args([
            "-qq",
            "-y",
            "-e",
            "trace=fsync,fdatasync,syncfs,sync_file_range",
        ])
        .arg("-o")
        .arg(&out);
    for t in &threads {
        command.args(["-p", t]);
    }
    let Ok(mut strace) = command.stderr(std::process::Stdio::null()).spawn() else {
        return Ok(None);
    };
    // strace attaches to every thread before it starts reporting.
    thread::sleep(Duration::from_millis(500));
    // A pull first: whatever the earlier pulls left for it does not count.
    pull_agent(ctx, control, None).map_err(|e| format!("pull: {e}"))?;
    let start = fs::read_to_string(&out)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    for _ in 0..COUNTED_PULLS {
        thread::sleep(PULL_PAUSE);
        pull_agent(ctx, control, None).map_err(|e| format!("pull: {e}"))?;
    }
    thread::sleep(PULL_PAUSE);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(strace.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = strace.wait();
    let text = fs::read_to_string(&out).unwrap_or_default();
    let calls: Vec<&str> = text
        .lines()
        .skip(start)
        .filter(|l| l.contains("sync") && l.contains(" = "))
        .collect();
    if calls.is_empty() {
        return Ok(None);
    }
    let appends = calls
        .iter()
        .filter(|l| {
            // fdatasync(7</…/log/cpu.log>) = 0: a collector's append.
            l.split('<')
                .nth(1)
                .and_then(|p| p.split('>').next())
                .is_some_and(|p| p.ends_with(".log") && !p.contains("/.pihealth/"))
        })
        .count();
    let n = COUNTED_PULLS as f64;
    Ok(Some((
        (calls.len() - appends) as f64 / n,
        appends as f64 / n,
    )))
}

/// A pull of all six types with small deltas, beside a raw TCP connect and
/// round trip and beside the fdatasyncs a pull cannot do without; the
/// agent's CPU per pull. Again with agent and master on tmpfs: what the
/// fsyncs on both sides cost (the master fsyncs each piece and its state,
/// the agent its state).
pub fn pull_latency(b: &Bench, report: &mut Report) -> Result<(), String> {
    let disk = latency_run(b, "latency", 2, &b.dir)?;
    let tmpfs = match &b.shm {
        Some(shm) if !b.settings.skips("tmpfs") => Some(latency_run(b, "latency-tmpfs", 9, shm)?),
        _ => None,
    };
    let (raw_times, raw_server_ns) = raw_round_trips(PULLS);
    let raw = median(raw_times);
    let syncs = sync_floor(&b.dir, 1)?;
    let eight = sync_floor(&b.dir, 8)?;
    let syncs_tmpfs = match &b.shm {
        Some(shm) if !b.settings.skips("tmpfs") => Some(sync_floor(shm, 1)?),
        _ => None,
    };
    let row = |figure: &str, l: &Latency, syncs: Option<Duration>| {
        let (med, p) = (median(l.times.clone()), p95(l.times.clone()));
        let mut baseline = format!("raw TCP connect+round trip {:.3} ms", ms(raw));
        let mut ratio = format!("{:.1}x", med.as_secs_f64() / raw.as_secs_f64());
        if let Some(s) = syncs {
            // The floor of a pull that keeps SPEC §6 (issue 18): 7
            // connections and one fdatasync, before any byte of work.
            let floor = raw * 7 + s;
            baseline.push_str(&format!(
                "; 1 fdatasync of a small append {:.3} ms; together with 7 raw connections \
                 {:.3} ms",
                ms(s),
                ms(floor)
            ));
            ratio.push_str(&format!(
                "; {:.1}x the floor",
                med.as_secs_f64() / floor.as_secs_f64()
            ));
        }
        Row::new(figure, format!("{:.3} ms ({:.3} ms)", ms(med), ms(p)))
            .baseline(baseline)
            .ratio(ratio)
            .target("≤ 1 ms")
    };
    report.row(row(
        "pull of 6 types, small deltas, median (p95)",
        &disk,
        Some(syncs),
    ));
    if let Some(t) = &tmpfs {
        report.row(row(
            "same, agent and master on tmpfs (fsync costs nothing)",
            t,
            syncs_tmpfs,
        ));
    }
    report.row(
        Row::new(
            "pieces per pull",
            format!("{:.1}", disk.pieces as f64 / PULLS as f64),
        )
        .baseline("6 types"),
    );
    let agent_syncs = match disk.agent_syncs {
        Some((pull, appends)) => format!(
            "agent {pull:.2} (strace, {COUNTED_PULLS} pulls; its collectors' own appends \
             {appends:.2} per pull besides)"
        ),
        None => "agent not counted (no strace or ptrace)".to_string(),
    };
    report.row(
        Row::new(
            "fsyncs per pull (fsync + fdatasync)",
            format!("master {:.2}; {agent_syncs}", disk.master_syncs),
        )
        .baseline(format!(
            "before issue 18: 7 on the master (6 pieces + state), 1 on the agent at the \
             acknowledgement and 2 before its next append; 8 fdatasyncs of small appends take {:.3} ms",
            ms(eight)
        ))
        .target("≤ 1 each side"),
    );
    let mut cpu = format!("{:.3} ms", disk.serving_cpu_ms);
    if let Some(t) = &tmpfs {
        cpu.push_str(&format!(" ({:.3} ms on tmpfs)", t.serving_cpu_ms));
    }
    // One pull is 7 connections (control + one per piece): the floor
    // a connection per piece sets, before any byte of work.
    let floor_ms = raw_server_ns * 7.0 / 1e6;
    report.row(
        Row::new("agent CPU per pull, threads serving the master", cpu)
            .baseline(format!(
                "7 raw loopback connections (accept, 1 byte each way, close): {floor_ms:.3} ms server CPU"
            ))
            .ratio(format!("{:.1}x", disk.serving_cpu_ms / floor_ms.max(1e-9)))
            .target("≤ 0.5 ms"),
    );
    let mut cpu = format!("{:.3} ms", disk.agent_cpu_ms);
    if let Some(t) = &tmpfs {
        cpu.push_str(&format!(" ({:.3} ms on tmpfs)", t.agent_cpu_ms));
    }
    report.row(
        Row::new("agent CPU per pull, whole process", cpu)
            .baseline("minus the same time with collectors only (10 ms ticks; noisy)"),
    );
    report.note(format!(
        "Pull latency: one agent process on 127.0.50.2 (127.0.50.9 on tmpfs), pulled in-process by \
         the master's pull code (`pull_agent`), {PULLS} pulls, collectors every {FAST_INTERVAL:?}. \
         The whole-process CPU includes what a pull costs the collector thread later (a log \
         emptied by a pull, from 64 KiB, makes its next append fsync the directory and the state \
         first) and the noise of 120 script starts a second. fsyncs: the master's from its own \
         counter over the timed pulls (checkpoints included: one every ~100 pulls, when the host \
         journal compacts), the agent's from `strace -y` on each of its threads over {COUNTED_PULLS} more pulls."
    ));
    Ok(())
}

/// Idle memory of an agent with one collector that is not due for an hour:
/// the lean `pihealth-agent` the unit runs, and beside it the same daemon
/// as `pihealth agent` of the full binary (an idle process keeps the pages
/// the kernel mapped around those it touched: the binary's size shows).
pub fn idle_rss(b: &Bench, report: &mut Report) -> Result<(), String> {
    let script = line_script(b)?;
    for (program, what, target) in [
        (
            agents::LEAN_AGENT,
            "agent idle RSS, all processes (pihealth-agent)",
            Some("≤ 4 MiB"),
        ),
        (
            agents::FULL_AGENT,
            "the same as `pihealth agent` (full binary)",
            None,
        ),
    ] {
        let idle = AgentSpec {
            name: "idle".into(),
            ip: agents::single_ip(3),
            dir: b.dir.join("idle"),
            key_file: &b.key_file,
            master: agents::NOWHERE.into(),
            extra: "heartbeat_interval: 1h\n".into(),
            collectors: format!("  - {{name: cpu, command: {script}, interval: 1h}}\n"),
        }
        .start_as(program)?;
        thread::sleep(Duration::from_secs(2));
        let rss = procs::rss_tree_kib(idle.pid());
        drop(idle);
        let row = Row::new(what, format!("{:.2} MiB", mib(rss)));
        report.row(match target {
            Some(t) => row.target(t),
            None => row,
        });
    }
    Ok(())
}

fn raw_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind((MASTER_IP, 0)).expect("bind a raw baseline listener");
    let addr = listener.local_addr().expect("local address");
    (listener, addr)
}

/// The durable writes of a pull, alone: an append of 80 bytes to each of
/// `n` files, each followed by its fdatasync, in `dir`; the median of
/// `PULLS` rounds. One is the floor since issue 18; 8 was the floor before
/// (6 pieces, master and agent state).
fn sync_floor(dir: &Path, n: usize) -> Result<Duration, String> {
    let dir = dir.join("sync-floor");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = (0..n)
        .map(|i| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("f{i}")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let line = [b'x'; 80];
    let mut times = Vec::with_capacity(PULLS);
    for _ in 0..PULLS {
        let t = Instant::now();
        for f in &mut files {
            f.write_all(&line)
                .and_then(|()| f.sync_data())
                .map_err(|e| format!("sync floor: {e}"))?;
        }
        times.push(t.elapsed());
    }
    drop(files);
    let _ = fs::remove_dir_all(&dir);
    Ok(median(times))
}

/// Time on CPU of the calling thread, in ns.
fn thread_cpu_ns() -> u64 {
    fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Raw loopback: connect, one byte each way, close; `n` times. Also the
/// server side's CPU per connection (accept, read, write, close), in ns.
pub fn raw_round_trips(n: usize) -> (Vec<Duration>, f64) {
    let (listener, addr) = raw_listener();
    let server = thread::spawn(move || {
        let before = thread_cpu_ns();
        for _ in 0..n {
            let (mut s, _) = listener.accept().expect("accept");
            let mut b = [0u8; 1];
            s.read_exact(&mut b).expect("read");
            s.write_all(&b).expect("write");
        }
        (thread_cpu_ns() - before) as f64 / n as f64
    });
    let times = (0..n)
        .map(|_| {
            let t = Instant::now();
            let mut c = TcpStream::connect(addr).expect("connect");
            c.set_nodelay(true).expect("nodelay");
            c.write_all(b"x").expect("write");
            let mut b = [0u8; 1];
            c.read_exact(&mut b).expect("read");
            t.elapsed()
        })
        .collect();
    let server_ns = server.join().expect("raw server");
    (times, server_ns)
}

/// Raw loopback TCP: throughput and the CPU it took (both ends).
pub struct RawRate {
    pub streams: usize,
    pub mbps: f64,
    pub cpu_per_gb: f64,
}

/// `streams` connections at once, each carrying `bytes` from a writer
/// thread to a reader thread, all in this process (so its CPU is theirs).
pub fn raw_rate(bytes: usize, streams: usize) -> RawRate {
    let ticks = procs::own_ticks();
    let mbps = raw_throughput(bytes, streams);
    let cpu = (procs::own_ticks() - ticks) as f64 * TICK_MS / 1e3;
    RawRate {
        streams,
        mbps,
        cpu_per_gb: cpu / ((bytes * streams) as f64 / 1e9),
    }
}

/// Raw loopback throughput in MB/s: `streams` connections at once, each
/// carrying `bytes` from a writer thread to a reader thread.
fn raw_throughput(bytes: usize, streams: usize) -> f64 {
    const CHUNK: usize = 256 * 1024;
    // Whole chunks, so that readers stop exactly where writers do.
    let bytes = bytes.div_ceil(CHUNK).max(1) * CHUNK;
    let (listener, addr) = raw_listener();
    let readers = thread::spawn(move || {
        let handles: Vec<_> = (0..streams)
            .map(|_| {
                let (mut s, _) = listener.accept().expect("accept");
                thread::spawn(move || {
                    let mut buf = vec![0u8; CHUNK];
                    let mut total = 0;
                    while total < bytes {
                        let n = s.read(&mut buf).expect("read");
                        assert!(n > 0, "raw stream ended early");
                        total += n;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("raw reader");
        }
    });
    let t = Instant::now();
    let writers: Vec<_> = (0..streams)
        .map(|_| {
            thread::spawn(move || {
                let chunk = vec![7u8; CHUNK];
                let mut c = TcpStream::connect(addr).expect("connect");
                let mut sent = 0;
                while sent < bytes {
                    c.write_all(&chunk).expect("write");
                    sent += chunk.len();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("raw writer");
    }
    readers.join().expect("raw readers");
    (bytes * streams) as f64 / t.elapsed().as_secs_f64() / 1e6
}
