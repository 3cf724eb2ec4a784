//! Soak (issue 4): a master and many agents with fast intervals for a long
//! time; resident memory, open file descriptors and threads of both sides
//! must not grow beyond noise, and every counter value arrives exactly once.
//!
//! `cargo test` runs a short version (5 agents, 15 s). The long one:
//! `PIHEALTH_SOAK_AGENTS=50 PIHEALTH_SOAK_SECS=3600 PIHEALTH_SOAK_BLOCK=31 \
//!  cargo test --release --test it soak -- --nocapture`.

use std::fs;
use std::time::{Duration, Instant};

use crate::util::*;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// RSS (KiB), open file descriptors and threads of one process.
#[derive(Debug, Clone, Copy, Default)]
struct Footprint {
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

fn footprint(pid: i32) -> Footprint {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Footprint {
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
        fds: fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0),
    }
}

/// Master footprint, and the sum and maximum over the agents.
fn measure(master: &Proc, agents: &[Proc]) -> (Footprint, Footprint, Footprint) {
    let m = footprint(master.pid());
    let (mut sum, mut max) = (Footprint::default(), Footprint::default());
    for a in agents {
        let f = footprint(a.pid());
        sum.rss_kib += f.rss_kib;
        sum.fds += f.fds;
        sum.threads += f.threads;
        max.rss_kib = max.rss_kib.max(f.rss_kib);
        max.fds = max.fds.max(f.fds);
        max.threads = max.threads.max(f.threads);
    }
    (m, sum, max)
}

#[test]
fn soak_many_agents_footprint_stays_flat_and_nothing_is_lost() {
    let agents_n = env_u64("PIHEALTH_SOAK_AGENTS", 5) as usize;
    let secs = env_u64("PIHEALTH_SOAK_SECS", 15);
    assert!(
        agents_n <= 200,
        "at most 200 agents (127.0.BLOCK.2 to .201)"
    );
    // A long run takes its own block so `cargo test` can run beside it.
    let c = Cluster::new(env_u64("PIHEALTH_SOAK_BLOCK", 30) as u8);
    let master_cfg = c.master_config(
        agents_n,
        "pull_interval: 2s\nheartbeat_interval: 1s\nrotate_size: 64KiB\n",
    );
    let mut agents: Vec<Proc> = (0..agents_n)
        .map(|i| {
            let cfg = c.agent_config(
                i,
                &counter_collector(&c, "500ms"),
                "rotate_size: 16KiB\nheartbeat_interval: 1s\n",
            );
            c.start("agent", &cfg, &format!("agent{i}"))
        })
        .collect();
    let mut master = c.start("master", &master_cfg, "master");
    for i in 0..agents_n {
        wait_for(&format!("pi{} on the master", i + 1), || {
            counter_values(&c.archived(&format!("pi{}", i + 1), "counter")).len() >= 2
        });
    }
    // Warm-up done: every agent pulled at least once.
    let start = measure(&master, &agents);
    let began = Instant::now();
    let mut samples = 0;
    while began.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1).min(Duration::from_secs(secs)));
        samples += 1;
        if samples % 300 == 0 {
            let (m, sum, _) = measure(&master, &agents);
            eprintln!(
                "soak {}s: master rss {} KiB fds {} threads {}; agents rss {} KiB fds {} threads {}",
                began.elapsed().as_secs(),
                m.rss_kib,
                m.fds,
                m.threads,
                sum.rss_kib,
                sum.fds,
                sum.threads
            );
        }
        assert!(master.is_running(), "the master died");
        for a in agents.iter_mut() {
            assert!(a.is_running(), "{} died", a.label);
        }
    }
    let end = measure(&master, &agents);
    // Everything produced so far reaches the master, exactly once.
    let produced: Vec<u64> = (0..agents_n).map(|i| counter_file(&c, i)).collect();
    let mut checked = 0;
    for (i, &p) in produced.iter().enumerate() {
        let host = format!("pi{}", i + 1);
        wait_for(&format!("{host} to deliver everything"), || {
            counter_values(&c.archived(&host, "counter"))
                .last()
                .is_some_and(|&v| v >= p)
        });
        let text = c.archived(&host, "counter");
        let values = counter_values(&text);
        for pair in values.windows(2) {
            assert!(
                pair[0] < pair[1],
                "{host}: out of order or duplicated: {pair:?}"
            );
        }
        // No process dies here; only a run that failed (killed at its
        // timeout on an overloaded machine) may leave a value unprinted.
        let failed = values_lost_to_failed_runs(&text);
        let last = *values.last().unwrap();
        let lost: Vec<u64> = (1..=last)
            .filter(|v| values.binary_search(v).is_err() && !failed.contains(v))
            .collect();
        assert!(lost.is_empty(), "{host}: lost values {lost:?}");
        if !failed.is_empty() {
            eprintln!("{host}: values {failed:?} consumed by failed runs (stored as such)");
        }
        checked += values.len();
    }
    for a in agents.iter_mut() {
        a.terminate();
    }
    master.terminate();
    let (m0, s0, x0) = start;
    let (m1, s1, x1) = end;
    eprintln!(
        "soak: {agents_n} agents, {secs} s, {checked} values exactly once\n\
         master: rss {} → {} KiB, fds {} → {}, threads {} → {}\n\
         agents (sum): rss {} → {} KiB, fds {} → {}, threads {} → {}\n\
         agents (max): rss {} → {} KiB, fds {} → {}, threads {} → {}",
        m0.rss_kib,
        m1.rss_kib,
        m0.fds,
        m1.fds,
        m0.threads,
        m1.threads,
        s0.rss_kib,
        s1.rss_kib,
        s0.fds,
        s1.fds,
        s0.threads,
        s1.threads,
        x0.rss_kib,
        x1.rss_kib,
        x0.fds,
        x1.fds,
        x0.threads,
        x1.threads,
    );
    // Noise: a few connections in flight, allocator slack. Growth per hour
    // beyond this would be a leak.
    assert!(
        m1.fds <= m0.fds + 2 * agents_n as u64 + 10,
        "master fds grew"
    );
    assert!(m1.threads <= m0.threads + 2, "master threads grew");
    assert!(m1.rss_kib <= m0.rss_kib * 2 + 4096, "master RSS grew");
    assert!(x1.fds <= x0.fds + 6, "an agent's fds grew");
    assert!(x1.threads <= x0.threads + 2, "an agent's threads grew");
    assert!(x1.rss_kib <= x0.rss_kib * 2 + 2048, "an agent's RSS grew");
}
