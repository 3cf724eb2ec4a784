//! pihealth beside the real Prometheus (issue 15): the Debian package's
//! `prometheus` server, started here on a loopback port with its own
//! storage, scrapes the master's `/metrics`, and a query through its HTTP
//! API returns the cpu, memory and disk values of every host; `promtool`
//! finds `/metrics` clean and the shipped alerting rules valid, and the
//! shipped Grafana dashboard asks only for metrics `/metrics` has; the
//! rules fire on real data (an open alarm). Then
//! "when one master is not enough": two masters, each with its own agents,
//! one Prometheus scraping both, every host in it.
//!
//! Without the binaries (Debian packages `prometheus`): SKIPPED, except in
//! CI (env CI=true), where that is a failure.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::prom_text;
use serde_json::Value;

use crate::alertmanager::Alertmanager;
use crate::util::*;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/prometheus/pihealth-rules.yml"
);
const RULES_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/prometheus/pihealth-rules.test.yml"
);
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/grafana/pihealth-fleet.json"
);

/// The installed binary, or `None` after `skipped` (a failure in CI).
fn installed(path: &str, package: &str) -> Option<PathBuf> {
    if Path::new(path).is_file() {
        return Some(PathBuf::from(path));
    }
    skipped(&format!(
        "{path} not installed (Debian package `{package}`, installed by .ci/run)"
    ));
    None
}

/// One plain HTTP/1.1 GET; the status and body (both servers close or
/// send Content-Length; we ask for the connection to close).
fn http_get(addr: SocketAddr, target: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.get(9..12)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)?
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn unchunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
}

/// Percent-encode a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server of ours: killed and its storage removed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Start `prometheus` on `addr` scraping `targets` (job `pihealth`,
    /// each with its own `shard` label) every second, with `rule_files`.
    pub fn start(
        bin: &Path,
        dir: &Path,
        addr: SocketAddr,
        targets: &[(&str, SocketAddr)],
        rule_files: &[&str],
    ) -> Prometheus {
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: pihealth\n    static_configs:\n",
        );
        for (shard, target) in targets {
            config.push_str(&format!(
                "      - targets: [\"{target}\"]\n        labels: {{shard: {shard}}}\n"
            ));
        }
        if !rule_files.is_empty() {
            config.push_str("rule_files:\n");
            for f in rule_files {
                config.push_str(&format!("  - \"{f}\"\n"));
            }
        }
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join("prometheus.stderr");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        let p = Prometheus { child, addr, log };
        wait_for("prometheus ready", || {
            http_get(addr, "/-/ready").is_some_and(|(s, _)| s == 200)
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query through the HTTP API: the result vector as
    /// (labels, value); panics on an error answer (a bad expression).
    pub fn query(&self, expr: &str) -> Vec<(Value, f64)> {
        let (status, body) = http_get(self.addr, &format!("/api/v1/query?query={}", encode(expr)))
            .unwrap_or_else(|| panic!("no answer from prometheus:\n{}", self.log()));
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert!(
            status == 200 && v["status"] == "success",
            "query `{expr}`: {status} {body}"
        );
        v["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| {
                        let value = s["value"][1].as_str().unwrap_or("NaN");
                        (s["metric"].clone(), value.parse().unwrap_or(f64::NAN))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The hosts a query's result has a value for.
    pub fn hosts(&self, expr: &str) -> BTreeSet<String> {
        self.query(expr)
            .into_iter()
            .filter(|(_, v)| v.is_finite())
            .filter_map(|(m, _)| m["host"].as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The master's `/metrics` text.
fn scrape(http: SocketAddr) -> String {
    let (status, body) = http_get(http, "/metrics").expect("master answers /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The metric names `/metrics` exposes: every family it declares (`# TYPE`,
/// there even while no host has a value, e.g. a temperature on a machine
/// without a sensor) and every sample's name (`_bucket`, `_count`, …).
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = prom_text::parse(text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .into_iter()
        .map(|s| s.name.to_string())
        .collect();
    names.extend(
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_string),
    );
    names
}

/// Metric names in a PromQL expression: identifiers that start with
/// `pihealth_` (ours; `up` and functions are Prometheus's own).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("pihealth_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// `promtool ARGS`, with `stdin`: (success, stdout + stderr).
fn promtool(bin: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Start a master with `agents` agents (built-in cpu, mem and disk every
/// second) in `c`, the agents named `{prefix}1`, `{prefix}2`, …; the first
/// one's config gets `first_extra` too.
fn fleet(
    c: &Cluster,
    agents: usize,
    prefix: &str,
    first_extra: &str,
    master_extra: &str,
) -> (Proc, Vec<Proc>, Vec<String>) {
    let collectors: String = ["cpu", "mem", "disk"]
        .iter()
        .map(|t| format!("  - {{name: {t}, builtin: {t}, interval: 1s}}\n"))
        .collect();
    let master = c.start("master", &c.master_config(agents, master_extra), "master");
    let mut procs = Vec::new();
    let mut names = Vec::new();
    for i in 0..agents {
        let name = format!("{prefix}{}", i + 1);
        let extra = if i == 0 { first_extra } else { "" };
        let cfg = c.agent_config(i, &collectors, &format!("name: {name}\n{extra}"));
        procs.push(c.start("agent", &cfg, &format!("agent-{name}")));
        names.push(name);
    }
    (master, procs, names)
}

fn http_of(block: u8) -> SocketAddr {
    format!("{}:8082", master_ip(block)).parse().unwrap()
}

/// Wait until `/metrics` has cpu, memory and disk values of every host.
fn wait_for_values(http: SocketAddr, hosts: &[String]) {
    wait_for("cpu, memory and disk of every host in /metrics", || {
        // The master may not listen yet.
        let Some((200, text)) = http_get(http, "/metrics") else {
            return false;
        };
        let samples = prom_text::parse(&text).unwrap_or_default();
        hosts.iter().all(|h| {
            [
                "pihealth_cpu_usage_percent",
                "pihealth_memory_used_percent",
                "pihealth_disk_used_percent",
            ]
            .iter()
            .all(|n| {
                samples
                    .iter()
                    .any(|s| s.name == *n && s.label("host") == Some(h.as_str()))
            })
        })
    });
}

/// Every host has a cpu, memory and disk value in Prometheus, all
/// percentages.
fn assert_every_host_in(prom: &Prometheus, hosts: &[String]) {
    let want: BTreeSet<String> = hosts.iter().cloned().collect();
    for expr in [
        "pihealth_cpu_usage_percent",
        "pihealth_memory_used_percent",
        "pihealth_disk_used_percent",
    ] {
        wait_for(&format!("{expr} of every host in prometheus"), || {
            prom.hosts(expr) == want
        });
        for (labels, value) in prom.query(expr) {
            assert!((0.0..=100.0).contains(&value), "{expr} {labels}: {value}");
        }
    }
    // Disk values are per filesystem: the root one is there for each host.
    let roots = prom.hosts("pihealth_disk_used_percent{mount=\"/\"}");
    assert_eq!(roots, want);
}

#[test]
fn prometheus_scrapes_the_master_and_promtool_finds_it_clean() {
    let (Some(prometheus), Some(promtool_bin)) = (
        installed(PROMETHEUS, "prometheus"),
        installed(PROMTOOL, "prometheus"),
    ) else {
        return;
    };
    let block = 181;
    let c = Cluster::new(block);
    // pi1's disk is "full" at 2 %: a disk warning alarm, open.
    let low_disk = "thresholds: {disk_note: 1, disk_warning: 2}\n";
    let (_master, mut agents, hosts) = fleet(&c, 2, "pi", low_disk, "");
    let http = http_of(block);
    wait_for_values(http, &hosts);

    // promtool: /metrics lints clean, the rules are valid and their own
    // unit tests (alerts firing on made-up series) pass.
    let text = scrape(http);
    let (ok, out) = promtool(&promtool_bin, &["check", "metrics"], &text);
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}"
    );
    let (ok, out) = promtool(&promtool_bin, &["check", "rules", RULES], "");
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(&promtool_bin, &["test", "rules", RULES_TESTS], "");
    assert!(ok, "promtool test rules:\n{out}");

    // The rules and the dashboard ask only for metrics /metrics has.
    let exposed = exposed_names(&text);
    let rules = std::fs::read_to_string(RULES).unwrap();
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap())
        .expect("the dashboard is valid JSON");
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 4, "{exprs:?}");
    for (what, names) in [
        ("the rules", metric_names(&rules)),
        (
            "the dashboard",
            exprs.iter().flat_map(|e| metric_names(e)).collect(),
        ),
    ] {
        assert!(!names.is_empty(), "{what} use no pihealth metric");
        let missing: Vec<_> = names.difference(&exposed).collect();
        assert!(
            missing.is_empty(),
            "{what} use {missing:?}, not in /metrics"
        );
    }

    // The real server scrapes the master, with the rules loaded.
    let addr: SocketAddr = format!("127.0.{block}.100:9090").parse().unwrap();
    let prom = Prometheus::start(&prometheus, c.dir.path(), addr, &[("a", http)], &[RULES]);
    wait_for("the master up in prometheus", || {
        prom.query("up{job=\"pihealth\"}")
            .first()
            .is_some_and(|(_, v)| *v == 1.0)
    });
    assert_every_host_in(&prom, &hosts);
    // Agents up as the master sees them, through Prometheus.
    wait_for("both agents up in prometheus", || {
        prom.hosts("pihealth_agent_up == 1").len() == hosts.len()
    });
    // Prometheus loaded the rules and evaluates them without error.
    wait_for("the rules evaluated", || {
        let (_, body) = http_get(addr, "/api/v1/rules").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        let rules: Vec<&Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        !rules.is_empty()
            && rules.iter().all(|r| {
                assert_ne!(r["health"], "err", "{r}");
                r["health"] == "ok"
            })
    });
    // Every dashboard query runs (with the variables filled in: a bad
    // expression is an error answer) and the cpu, memory and disk panels
    // have every host.
    let want: BTreeSet<String> = hosts.iter().cloned().collect();
    for expr in &exprs {
        let filled = expr
            .replace("$host", ".+")
            .replace("$shard", ".*")
            .replace("$__rate_interval", "1m");
        let result = prom.query(&filled);
        let per_host = ["cpu_usage", "memory_used", "disk_used"]
            .iter()
            .any(|m| expr.contains(&format!("pihealth_{m}_percent")));
        if per_host {
            let got: BTreeSet<String> = result
                .iter()
                .filter_map(|(m, _)| m["host"].as_str().map(str::to_string))
                .collect();
            assert_eq!(got, want, "dashboard query `{expr}`");
        }
    }
    // The shipped rules fire on real data: pi1's open disk alarm.
    wait_for("PiHealthAlarmOpen firing for pi1", || {
        firing(&prom).contains(&("PiHealthAlarmOpen".to_string(), "pi1".to_string()))
    });
    // A host down: the master says so, Prometheus sees it, and /metrics
    // with a down agent and open alarms still lints clean.
    agents[1].kill9();
    wait_for("pi2 down in prometheus", || {
        prom.hosts("pihealth_agent_up == 0") == BTreeSet::from(["pi2".to_string()])
    });
    let (ok, out) = promtool(&promtool_bin, &["check", "metrics"], &scrape(http));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics, pi2 down:\n{out}"
    );
}

/// The (alert name, host) of every firing alert.
fn firing(prom: &Prometheus) -> BTreeSet<(String, String)> {
    let (_, body) = http_get(prom.addr, "/api/v1/alerts").expect("alerts");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            let label = |k: &str| a["labels"][k].as_str().unwrap_or("").to_string();
            (label("alertname"), label("host"))
        })
        .collect()
}

/// Every `expr` of the dashboard's panels' targets.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(p) = panels.pop() {
        // Rows hold their own panels.
        panels.extend(p["panels"].as_array().into_iter().flatten());
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                exprs.push(e.to_string());
            }
        }
    }
    exprs
}

#[test]
fn one_prometheus_sees_every_host_of_two_masters() {
    let Some(prometheus) = installed(PROMETHEUS, "prometheus") else {
        return;
    };
    // One Alertmanager for the whole fleet, started first.
    let (a, b) = (Cluster::new(182), Cluster::new(183));
    let am_addr = "127.0.182.101:9093";
    let am =
        crate::alertmanager::available("prometheus::one_prometheus_sees_every_host_of_two_masters")
            .then(|| Alertmanager::start(&a, am_addr, "am"));
    let forward = match am {
        Some(_) => format!(
            "alertmanagers: [\"http://{am_addr}\"]\nalertmanager_resend: 2s\nhost_recovery_hold: 0s\n"
        ),
        None => String::new(),
    };
    // Two shards, each a master with its own agents and its own key.
    let (_ma, mut agents_a, hosts_a) = fleet(&a, 2, "a-pi", "", &forward);
    let (_mb, mut agents_b, hosts_b) = fleet(&b, 2, "b-pi", "", &forward);
    wait_for_values(http_of(182), &hosts_a);
    wait_for_values(http_of(183), &hosts_b);
    let addr: SocketAddr = "127.0.182.100:9090".parse().unwrap();
    let prom = Prometheus::start(
        &prometheus,
        a.dir.path(),
        addr,
        &[("a", http_of(182)), ("b", http_of(183))],
        &[RULES],
    );
    let all: Vec<String> = hosts_a.iter().chain(&hosts_b).cloned().collect();
    assert_every_host_in(&prom, &all);
    // Each host under its own master's shard label.
    for (shard, hosts) in [("a", &hosts_a), ("b", &hosts_b)] {
        let want: BTreeSet<String> = hosts.iter().cloned().collect();
        let got = prom.hosts(&format!("pihealth_cpu_usage_percent{{shard=\"{shard}\"}}"));
        assert_eq!(got, want, "shard {shard}");
    }
    // The fleet-wide view is a plain PromQL aggregation.
    wait_for("four agents up fleet-wide", || {
        prom.query("sum(pihealth_agent_up)")
            .first()
            .is_some_and(|(_, v)| *v == 4.0)
    });

    // One Alertmanager receives from both masters: an agent of each shard
    // goes down, both host alerts arrive (labels host, type, level), and
    // both resolve when the agents are back.
    let Some(am) = am else {
        return;
    };
    agents_a[0].kill9();
    agents_b[0].kill9();
    let down = vec![
        (
            "a-pi1".to_string(),
            "host".to_string(),
            "critical".to_string(),
        ),
        (
            "b-pi1".to_string(),
            "host".to_string(),
            "critical".to_string(),
        ),
    ];
    // Only host alerts: a loaded machine may also raise cpu warnings.
    let host_alerts = || {
        let mut all = am.alerts();
        all.retain(|(_, t, _)| t == "host");
        all
    };
    wait_for("both shards' host alerts in the one Alertmanager", || {
        host_alerts() == down
    });
    agents_a[0].restart();
    agents_b[0].restart();
    wait_for("both resolved", || host_alerts().is_empty());
}
