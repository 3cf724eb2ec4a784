//! A failed pull says what kind of failure it was (the `kind` label of
//! `pihealth_pull_failures_total`): an agent holding another fleet key and
//! an address where nothing listens are different kinds, and the
//! registry counts them apart per host.

use std::net::SocketAddr;
use std::time::Duration;

use pihealth::master::pull::{pull_agent, FailureKind, PullContext};
use pihealth::master::registry::Registry;
use pihealth::protocol::{Credentials, Key};

use crate::util::*;

const BLOCK: u8 = 215;

fn context(c: &Cluster) -> PullContext {
    PullContext {
        credentials: Credentials::Fleet {
            keys: vec![Key::load(&c.path("pihealth.key")).expect("key")],
            revoked: Vec::new(),
        },
        key_memory: Default::default(),
        log_root: c.master_log(),
        backup_root: c.master_backup(),
        rotate_size: 1 << 20,
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(5),
        progress: None,
    }
}

#[test]
fn a_wrong_key_and_a_dead_port_are_different_kinds_of_failure() {
    let c = Cluster::new(BLOCK);
    // pi1 holds a key of another fleet; nothing ever listens at pi2's address.
    let out = c.run(&["keygen", "other.key"]);
    assert!(out.status.success(), "keygen");
    let agent_cfg = c.agent_config(0, &counter_collector(&c, "1s"), "key_file: other.key\n");
    let mut agent = c.start("agent", &agent_cfg, "agent");
    let wrong_key: SocketAddr = format!("{}:8000", agent_ip(BLOCK, 0)).parse().unwrap();
    let dead: SocketAddr = format!("{}:8000", agent_ip(BLOCK, 1)).parse().unwrap();
    wait_for("the agent to listen", || {
        std::net::TcpStream::connect(wrong_key).is_ok()
    });
    let ctx = context(&c);

    let key_error = pull_agent(&ctx, wrong_key, Some("pi1")).expect_err("another key");
    let dead_error = pull_agent(&ctx, dead, Some("pi2")).expect_err("nothing listens");
    assert!(agent.is_running(), "the agent outlives a refused pull");
    assert_eq!(key_error.kind(), Some(FailureKind::Key), "{key_error}");
    assert_eq!(
        dead_error.kind(),
        Some(FailureKind::Refused),
        "{dead_error}"
    );
    // Unnamed (the master asks the agent its name first): the same kinds.
    let unnamed = pull_agent(&ctx, wrong_key, None).expect_err("another key");
    assert_eq!(unnamed.kind(), Some(FailureKind::Key), "{unnamed}");
    let unnamed = pull_agent(&ctx, dead, None).expect_err("nothing listens");
    assert_eq!(unnamed.kind(), Some(FailureKind::Refused), "{unnamed}");
    assert_eq!(c.archived("pi1", "counter"), "", "nothing stored");

    // The registry counts them apart, per host, for /metrics.
    let statics = [
        pihealth::config::StaticAgent {
            name: Some("pi1".into()),
            control: wrong_key,
        },
        pihealth::config::StaticAgent {
            name: None,
            control: dead,
        },
    ];
    std::fs::create_dir_all(c.master_log()).unwrap();
    let registry = Registry::open(&c.master_log(), &statics, 8001).expect("registry");
    for (control, e) in [
        (wrong_key, &key_error),
        (wrong_key, &key_error),
        (dead, &dead_error),
    ] {
        registry.pull_finished(control, Err(e), Duration::from_millis(5));
    }
    let failures = registry.pull_stats().failures;
    assert_eq!(
        failures.into_iter().collect::<Vec<_>>(),
        [
            (("127.0.215.3:8000".to_string(), FailureKind::Refused), 1),
            (("pi1".to_string(), FailureKind::Key), 2),
        ]
    );
    agent.terminate();
}
