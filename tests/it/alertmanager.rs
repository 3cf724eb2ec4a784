//! Forwarding to the real Alertmanager (issue 15; Debian package
//! `prometheus-alertmanager`, started here on a loopback port with its own
//! storage directory): a host alarm appears in its v2 API with the labels
//! host, type and level, and resolves on recovery; a silenced one never
//! reaches it; alarms raised while it is down (and across a crash of the
//! master) reach it once it is up. A missing binary is SKIPPED outside CI
//! and a failure in CI (CI=true).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::host_alarms::{http_get, up_in_status};
use crate::util::*;

const BINARY: &str = "/usr/bin/prometheus-alertmanager";

/// A running Alertmanager, killed on drop.
pub struct Alertmanager {
    child: Child,
    pub addr: String,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the binary is there; SKIPPED (a failure in CI) when it is not.
pub fn available(test: &str) -> bool {
    if Path::new(BINARY).exists() {
        return true;
    }
    skipped(&format!(
        "{test}: {BINARY} is missing (apt install prometheus-alertmanager; .ci/run does)"
    ));
    false
}

impl Alertmanager {
    /// Start it on `addr` with storage under the cluster directory; waits
    /// until it is ready.
    pub fn start(c: &Cluster, addr: &str, name: &str) -> Alertmanager {
        let config = c.write(
            &format!("{name}/alertmanager.yml"),
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        );
        let storage = c.path(&format!("{name}/data"));
        std::fs::create_dir_all(&storage).unwrap();
        let log = std::fs::File::create(c.path(&format!("{name}/stderr"))).unwrap();
        let child = Command::new(BINARY)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start alertmanager");
        let am = Alertmanager {
            child,
            addr: addr.to_string(),
        };
        wait_for("alertmanager ready", || {
            std::net::TcpStream::connect(addr).is_ok()
                && http_get(addr, "/-/ready").to_lowercase().contains("ok")
        });
        am
    }

    /// The active alerts: (host, type, level) of each.
    pub fn alerts(&self) -> Vec<(String, String, String)> {
        let body = http_get(&self.addr, "/api/v2/alerts");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let mut out: Vec<(String, String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let l = &a["labels"];
                let s = |k: &str| l[k].as_str().unwrap_or("").to_string();
                (s("host"), s("type"), s("level"))
            })
            .collect();
        out.sort();
        out
    }
}

fn host_alert(host: &str) -> (String, String, String) {
    (host.into(), "host".into(), "critical".into())
}

#[test]
fn a_host_alert_appears_in_alertmanager_and_resolves_silenced_ones_do_not() {
    if !available("alertmanager::a_host_alert_appears_in_alertmanager_and_resolves") {
        return;
    }
    let block = 173;
    let c = Cluster::new(block);
    let am_addr = format!("127.0.{block}.20:9093");
    let am = Alertmanager::start(&c, &am_addr, "am");
    let master_cfg = c.master_config(
        2,
        &format!(
            "alertmanagers: [\"http://{am_addr}\"]\nalertmanager_resend: 2s\nhost_recovery_hold: 0s\n"
        ),
    );
    let _master = c.start("master", &master_cfg, "master");
    let mut pi1 = c.start(
        "agent",
        &c.agent_config(0, &counter_collector(&c, "1s"), ""),
        "pi1",
    );
    let mut pi2 = c.start(
        "agent",
        &c.agent_config(1, &counter_collector(&c, "1s"), ""),
        "pi2",
    );
    wait_for("both up", || {
        up_in_status(&c) && {
            let out = c.run(&["status", "-c", "master.yaml"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.contains("pi2") && l.contains(" up "))
        }
    });
    let out = c.run(&[
        "silence",
        "-c",
        "master.yaml",
        "pi2",
        "--for",
        "1h",
        "--reason",
        "bench work",
    ]);
    assert!(out.status.success());
    pi1.kill9();
    pi2.kill9();
    wait_for("pi1's host alert in Alertmanager", || {
        am.alerts() == [host_alert("pi1")]
    });
    // The silenced pi2 is stored but never forwarded, resends included.
    wait_for("both host alarms stored", || {
        std::fs::read_to_string(c.master_own().join("alarms.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" host critical "))
            .count()
            == 2
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(am.alerts(), [host_alert("pi1")]);
    let body = http_get(&am_addr, "/api/v2/alerts");
    assert!(
        body.contains("pihealth_host") && body.contains("is down"),
        "{body}"
    );
    // Back: resolved (gone from the active alerts).
    pi1.restart();
    wait_for("pi1's alert resolved", || am.alerts().is_empty());
    // Resends do not bring it back.
    std::thread::sleep(Duration::from_secs(5));
    assert!(am.alerts().is_empty());
}

#[test]
fn alarms_raised_while_alertmanager_is_down_arrive_when_it_is_up() {
    if !available("alertmanager::alarms_raised_while_alertmanager_is_down_arrive") {
        return;
    }
    let block = 174;
    let c = Cluster::new(block);
    // Two Alertmanagers: one up all along, one down at first.
    let up_addr = format!("127.0.{block}.21:9093");
    let down_addr = format!("127.0.{block}.20:9093");
    let up = Alertmanager::start(&c, &up_addr, "am-up");
    let master_cfg = c.master_config(
        1,
        &format!(
            "alertmanagers: [\"http://{down_addr}\", \"http://{up_addr}\"]\nalertmanager_resend: 1h\n"
        ),
    );
    let mut master = c.start("master", &master_cfg, "master");
    let mut pi1 = c.start(
        "agent",
        &c.agent_config(0, &counter_collector(&c, "1s"), ""),
        "pi1",
    );
    wait_for("pi1 up", || up_in_status(&c));
    pi1.kill9();
    // The one that is up is not held back by the one that is down.
    wait_for("the alert in the Alertmanager that is up", || {
        up.alerts() == [host_alert("pi1")]
    });
    // The master tries the other, fails, and then dies with it unsent.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        master
            .stderr()
            .contains(&format!("Alertmanager http://{down_addr}")),
        "{}",
        master.stderr()
    );
    // /metrics says which one is behind (strictly valid exposition).
    let unsent = |url: &str| -> f64 {
        let text = http_get(&format!("{}:8082", master_ip(block)), "/metrics");
        let samples = crate::prom_text::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        samples
            .iter()
            .find(|s| s.name == "pihealth_alertmanager_unsent_bytes" && s.label("url") == Some(url))
            .unwrap_or_else(|| panic!("no unsent bytes for {url}: {text}"))
            .value
    };
    assert!(unsent(&format!("http://{down_addr}")) > 0.0);
    assert_eq!(unsent(&format!("http://{up_addr}")), 0.0);
    master.kill9();
    master.restart();
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let am = Alertmanager::start(&c, &down_addr, "am-down");
    // Resend is 1h: only the outbox can bring it, within the back-off.
    wait_for("the alert once Alertmanager is up", || {
        am.alerts() == [host_alert("pi1")]
    });
    eprintln!(
        "alert in Alertmanager {:?} after it started",
        started.elapsed()
    );
    assert_eq!(up.alerts(), [host_alert("pi1")]);
    wait_for("nothing unsent", || {
        unsent(&format!("http://{down_addr}")) == 0.0
    });
}

/// A flapping collector (normal, warning, critical in turn) that settles
/// on `last` once `stop` exists.
fn flap_script(c: &Cluster, name: &str, last: &str, stop: &Path) -> std::path::PathBuf {
    let path = c.write(
        name,
        &format!(
            "#!/bin/sh\nf=\"$PIHEALTH_STATE_DIR/n\"\nn=$(cat \"$f\" 2>/dev/null || echo 0)\nn=$((n+1))\n\
             echo $n > \"$f.tmp\" && mv \"$f.tmp\" \"$f\"\n\
             if [ -e {} ]; then echo \"$n {last}\"; exit 0; fi\n\
             case $((n % 3)) in 0) echo \"$n normal\";; 1) echo \"$n warning\";; *) echo \"$n critical\";; esac\n",
            stop.display()
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The open problems by `pihealth alarms --open --json`: (host, type, level).
fn open_problems(c: &Cluster) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = c
        .run_lines(&["alarms", "-c", "master.yaml", "--open", "--json"])
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (s("host"), s("type"), s("level"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn through_a_faulty_network_and_master_crashes_alertmanager_ends_in_the_masters_state() {
    if !available("alertmanager::through_a_faulty_network_and_master_crashes") {
        return;
    }
    let block = 175;
    let c = Cluster::new(block);
    let am_addr = format!("127.0.{block}.20:9093");
    let proxy_addr = format!("127.0.{block}.21:9093");
    let am = Alertmanager::start(&c, &am_addr, "am");
    // Three connections in ten are cut, stalled, slowed or half-closed.
    let proxy = crate::proxy::FaultProxy::start(&proxy_addr, &am_addr, 175, 300);
    // Resends every hour: only the outbox can make Alertmanager right.
    let master_cfg = c.master_config(
        2,
        &format!("alertmanagers: [\"http://{proxy_addr}\"]\nalertmanager_resend: 1h\n"),
    );
    let stop = c.path("stop-flapping");
    let a = flap_script(&c, "flap-a.sh", "warning", &stop);
    let b = flap_script(&c, "flap-b.sh", "normal", &stop);
    let collectors = format!(
        "  - {{name: a, command: {}, interval: 200ms}}\n  - {{name: b, command: {}, interval: 300ms}}\n",
        a.display(),
        b.display()
    );
    let mut master = c.start("master", &master_cfg, "master");
    let _pi1 = c.start(
        "agent",
        &c.agent_config(0, &collectors, "realarm_interval: 1h\n"),
        "pi1",
    );
    let _pi2 = c.start(
        "agent",
        &c.agent_config(1, &collectors, "realarm_interval: 1h\n"),
        "pi2",
    );
    let mut rng = crate::proxy::Rng::new(175);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500 + rng.below(1500)));
        master.kill9();
        master.restart();
    }
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&stop, "").unwrap();
    // Settled: the agents' spools drain, then no alarm comes any more.
    wait_for("the alarms to settle", || {
        let before = std::fs::read_to_string(c.master_own().join("alarms.log")).unwrap_or_default();
        std::thread::sleep(Duration::from_secs(2));
        let after = std::fs::read_to_string(c.master_own().join("alarms.log")).unwrap_or_default();
        before == after
            && (1..=2).all(|n| {
                std::fs::read_to_string(c.path(&format!("agents/pi{n}/log/.pihealth/alarms.spool")))
                    .map_or(true, |s| s.is_empty())
            })
    });
    let alarms = std::fs::read_to_string(c.master_own().join("alarms.log")).unwrap();
    let expected = open_problems(&c);
    assert_eq!(
        expected,
        [
            ("pi1".into(), "a".into(), "warning".into()),
            ("pi2".into(), "a".into(), "warning".into())
        ],
        "{alarms}"
    );
    // Whatever the proxy did, Alertmanager ends where the master is.
    wait_for("Alertmanager to agree with the master", || {
        am.alerts() == expected
    });
    eprintln!(
        "{} alarms forwarded through the faulty proxy ({}), master killed 3 times",
        alarms.lines().count(),
        proxy.stats.summary()
    );
    assert!(proxy.stats.faults() > 0, "the proxy did nothing");
}
