//! The master's HTTP port with real agents and the real scripts: `/metrics`
//! parses strictly and carries every host's values, the status page shows
//! the fleet and charts, bad requests get 4xx, and a killed agent shows
//! up as down.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::prom_text::{self, Sample};

use crate::util::*;

const BLOCK: u8 = 20;

fn collectors() -> String {
    ["cpu", "mem", "disk"]
        .iter()
        .map(|t| format!("  - {{name: {t}, command: {SCRIPTS}/{t}.sh, interval: 1s}}\n"))
        .collect()
}

fn http_addr() -> SocketAddr {
    format!("{}:8082", master_ip(BLOCK)).parse().unwrap()
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// Send `raw` as is, read the whole answer (the server closes after one).
fn exchange(raw: &[u8]) -> Reply {
    let mut s = TcpStream::connect_timeout(&http_addr(), Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).expect("send");
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).expect("read the answer");
    let text = String::from_utf8(bytes).expect("answer is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn get(path: &str) -> Reply {
    exchange(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: it\r\n\r\n",
            http_addr()
        )
        .as_bytes(),
    )
}

fn value(samples: &[Sample], name: &str, host: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && s.label("host") == Some(host))
        .map(|s| s.value)
}

fn metrics() -> Vec<Sample> {
    let r = get("/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    prom_text::parse(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body))
}

/// When python3 has `prometheus_client`, its parser reads our text too.
fn python_reads(text: &str) {
    let available = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        return;
    }
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as f\n\
             fams = list(f(sys.stdin.read()))\nassert any(m.name == 'pihealth_agent_up' for m in fams)\n\
             print(sum(len(m.samples) for m in fams))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused /metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn status_page_and_metrics_over_http() {
    let c = Cluster::new(BLOCK);
    let master_cfg = c.master_config(2, "");
    let master = c.start("master", &master_cfg, "master");
    let mut agents: Vec<Proc> = (0..2)
        .map(|i| {
            let cfg = c.agent_config(i, &collectors(), "");
            c.start("agent", &cfg, &format!("agent{i}"))
        })
        .collect();
    for host in ["pi1", "pi2"] {
        for t in ["cpu", "mem", "disk"] {
            wait_for(&format!("{host}/{t} on the master"), || {
                c.archived(host, t).lines().count() >= 2
            });
        }
    }

    // /metrics: strict format, both agents up, values of both hosts.
    wait_for("both agents up with cpu, memory and disk values", || {
        let m = metrics();
        ["pi1", "pi2"].iter().all(|h| {
            value(&m, "pihealth_agent_up", h) == Some(1.0)
                && value(&m, "pihealth_cpu_usage_percent", h).is_some()
                && value(&m, "pihealth_memory_used_percent", h).is_some()
                && value(&m, "pihealth_disk_total_used_percent", h).is_some()
        })
    });
    let r = get("/metrics");
    assert!(
        r.head
            .contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        r.head
    );
    assert!(r.head.contains("Connection: close"), "{}", r.head);
    let m = prom_text::parse(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body));
    python_reads(&r.body);
    for h in ["pi1", "pi2"] {
        let up = m
            .iter()
            .find(|s| s.name == "pihealth_agent_up" && s.label("host") == Some(h))
            .unwrap();
        assert_eq!(
            up.label("address"),
            Some(format!("{}:8000", agent_ip(BLOCK, if h == "pi1" { 0 } else { 1 })).as_str())
        );
        let total = value(&m, "pihealth_memory_total_bytes", h).unwrap();
        assert!(total > 1e6, "{h}: memory total {total}");
        let used = value(&m, "pihealth_cpu_usage_percent", h).unwrap();
        assert!((0.0..=100.0).contains(&used), "{h}: cpu {used}");
        assert!(
            m.iter().any(|s| s.name == "pihealth_disk_used_percent"
                && s.label("host") == Some(h)
                && s.label("mount").is_some()),
            "{h}: no disk mount"
        );
        assert!(value(&m, "pihealth_agent_last_pull_duration_seconds", h).is_some());
        let stamp = m
            .iter()
            .find(|s| {
                s.name == "pihealth_sample_timestamp_seconds"
                    && s.label("host") == Some(h)
                    && s.label("type") == Some("cpu")
            })
            .expect("sample time")
            .value;
        let now = chrono::Utc::now().timestamp() as f64;
        assert!(
            (now - stamp).abs() < 120.0,
            "{h}: cpu sample at {stamp}, now {now}"
        );
    }
    assert!(m
        .iter()
        .any(|s| s.name == "pihealth_pull_duration_seconds_count" && s.value >= 2.0));

    // The page: both hosts, their state, charts.
    wait_for("the page to show both hosts up with chart lines", || {
        let r = get("/?hours=1");
        r.status == 200
            && ["pi1", "pi2"]
                .iter()
                .all(|h| r.body.contains(&format!(">{h}<")))
            && r.body.matches("class=\"badge up\">up<").count() >= 4
            && r.body.contains("<svg")
            && r.body.contains("<polyline")
    });
    let r = get("/");
    assert!(
        r.head.contains("Content-Type: text/html; charset=utf-8"),
        "{}",
        r.head
    );
    assert!(r
        .head
        .contains("Content-Security-Policy: default-src 'none'"));
    assert!(r.body.starts_with("<!DOCTYPE html>") && r.body.trim_end().ends_with("</html>"));
    assert_eq!(r.body.matches("<svg").count(), 6, "3 charts per host");
    assert_eq!(get("/healthz").body, "ok\n");
    let json: serde_json::Value =
        serde_json::from_str(&get("/api/status.json").body).expect("status JSON");
    assert_eq!(json["agents"].as_array().map(Vec::len), Some(2));

    // Bad requests: answered, not served.
    assert_eq!(exchange(b"\x16\x03\x01\x02\x00garbage\r\n\r\n").status, 400);
    assert_eq!(exchange(b"GET / HTTP/1.1\nHost: x\n\n").status, 400);
    assert_eq!(get("/no/such/page").status, 404);
    assert_eq!(get("/?hours=99").status, 400);
    let r = exchange(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 405);
    assert!(r.head.contains("Allow: GET, HEAD"));
    // An oversize head is refused, and the refusal still arrives whole.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(exchange(big.as_bytes()).status, 431);
    let r = exchange(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty() && r.head.contains("Content-Length: "));
    // A client that connects and says nothing is cut off, and the port
    // still serves afterwards.
    let idle = TcpStream::connect(http_addr()).unwrap();
    assert_eq!(get("/healthz").status, 200);
    drop(idle);

    // kill -9 of one agent: down in the metrics and on the page.
    agents[1].kill9();
    wait_for("pi2 down in /metrics", || {
        let m = metrics();
        value(&m, "pihealth_agent_up", "pi2") == Some(0.0)
            && value(&m, "pihealth_agent_up", "pi1") == Some(1.0)
    });
    let m = metrics();
    assert!(m.iter().any(|s| s.name == "pihealth_agents"
        && s.label("state") == Some("down")
        && s.value == 1.0));
    wait_for("pi2 down on the page", || {
        get("/").body.contains("class=\"badge down\">down<")
    });
    drop(master);
}
