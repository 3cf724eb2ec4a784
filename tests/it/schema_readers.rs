//! Issue 14's readers of the schema, end to end: an agent with the six
//! built-ins and two Nagios-mode checks delivers to a real master; its
//! `/metrics` (read strictly, and by `promtool check metrics` when the
//! Debian `prometheus` package is there) carries every type's fields and
//! the plugins' performance data; a critical cpu alarm reads
//! `usage … % ≥ critical 0 %` in alarms.log, `pihealth alarms` and the
//! status page. Block 191.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::prom_text::{self, Sample};

use crate::util::*;

const BLOCK: u8 = 191;

fn http_get(path: &str) -> String {
    try_get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// GET `path` from the master's HTTP port; the body of a 200.
fn try_get(path: &str) -> Result<String, String> {
    let addr: SocketAddr = format!("{}:8082", master_ip(BLOCK)).parse().unwrap();
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.to_string());
    }
    Ok(body.to_string())
}

fn find<'a>(m: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    m.iter().find(|s| {
        s.name == name
            && s.label("host") == Some("pi1")
            && labels.iter().all(|(k, v)| s.label(k) == Some(*v))
    })
}

/// `promtool check metrics` on `text`; false (SKIPPED) without promtool
/// outside CI.
fn promtool_accepts(text: &str) -> bool {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = spawned else {
        skipped("promtool check metrics: no promtool (Debian package prometheus)");
        return false;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // Exit 0: clean; 3: only lint remarks (naming advice), still valid.
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(3),
        "promtool check metrics refused /metrics ({:?}): {}{}",
        code,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if code == Some(3) {
        eprintln!(
            "promtool lint remarks: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    true
}

#[test]
fn metrics_alarms_and_page_read_the_schema() {
    let c = Cluster::new(BLOCK);
    // A plugin with awkward performance data: a quoted label with a space,
    // milliseconds, an item that is no number (skipped), a range threshold.
    let plugin = c.write(
        "fake_check",
        "#!/bin/sh\necho \"FAKE OK - fine |'a b'=5ms;10:20;30;0;100 junk=U bytes=2KB;;;0;\"\nexit 0\n",
    );
    Command::new("chmod")
        .arg("+x")
        .arg(&plugin)
        .status()
        .unwrap();
    let builtins = [
        "cpu", "mem", "disk", "proc", "users", "sysinfo", "net", "diskio", "throttle",
    ];
    let mut collectors: String = builtins
        .iter()
        .map(|t| format!("  - {{name: {t}, builtin: {t}, interval: 1s}}\n"))
        .collect();
    collectors.push_str(&format!(
        "  - {{name: fake, command: {}, mode: nagios, interval: 1s}}\n",
        plugin.display()
    ));
    let check_load = "/usr/lib/nagios/plugins/check_load";
    let have_load = std::path::Path::new(check_load).is_file();
    if have_load {
        collectors.push_str(&format!(
            "  - {{name: load, command: \"{check_load} -w 50,40,30 -c 100,80,60\", mode: nagios, interval: 1s}}\n"
        ));
    } else {
        skipped("(part) check_load is not installed (monitoring-plugins-basic)");
    }
    let master_cfg = c.master_config(1, "");
    let _master = c.start("master", &master_cfg, "master");
    // cpu is critical at every run: usage ≥ 0.
    let agent_cfg = c.agent_config(
        0,
        &collectors,
        "thresholds: {cpu_note: 0, cpu_warning: 0, cpu_critical: 0}\n",
    );
    let _agent = c.start("agent", &agent_cfg, "agent0");

    let mut types = builtins.to_vec();
    types.push("fake");
    if have_load {
        types.push("load");
    }
    wait_for("every type's values in /metrics", || {
        let Ok(body) = try_get("/metrics") else {
            return false;
        };
        let Ok(m) = prom_text::parse(&body) else {
            return false;
        };
        types
            .iter()
            .all(|t| find(&m, "pihealth_sample_timestamp_seconds", &[("type", t)]).is_some())
            && find(&m, "pihealth_perfdata_value", &[("type", "fake")]).is_some()
    });
    let body = http_get("/metrics");
    let m = prom_text::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    promtool_accepts(&body);
    for name in [
        "pihealth_cpu_load1",
        "pihealth_cpu_load5",
        "pihealth_cpu_load15",
        "pihealth_cpu_usage_percent",
        "pihealth_memory_used_percent",
        "pihealth_memory_average_percent",
        "pihealth_disk_total_used_percent",
        "pihealth_users_logged_in",
        "pihealth_sysinfo_uptime_seconds",
        "pihealth_sysinfo_info",
    ] {
        assert!(find(&m, name, &[]).is_some(), "{name} missing:\n{body}");
    }
    let ms = find(
        &m,
        "pihealth_perfdata_value",
        &[("type", "fake"), ("label", "a b"), ("unit", "seconds")],
    )
    .unwrap_or_else(|| panic!("fake's 'a b' missing:\n{body}"));
    assert!((ms.value - 0.005).abs() < 1e-12, "{}", ms.value);
    let crit = find(&m, "pihealth_perfdata_critical", &[("label", "a b")]).unwrap();
    assert_eq!(crit.value, 30.0 / 1000.0);
    // `10:20` is a range, not a number: no warning sample; `junk=U` skipped.
    assert!(find(&m, "pihealth_perfdata_warning", &[("label", "a b")]).is_none());
    assert!(find(&m, "pihealth_perfdata_value", &[("label", "junk")]).is_none());
    let kb = find(&m, "pihealth_perfdata_value", &[("label", "bytes")]).unwrap();
    assert_eq!((kb.value, kb.label("unit")), (2048.0, Some("bytes")));
    if have_load {
        let load1 = find(
            &m,
            "pihealth_perfdata_value",
            &[("type", "load"), ("label", "load1")],
        )
        .unwrap_or_else(|| panic!("check_load's load1 missing:\n{body}"));
        assert!(load1.value >= 0.0);
        let w = find(
            &m,
            "pihealth_perfdata_warning",
            &[("type", "load"), ("label", "load1")],
        );
        assert_eq!(w.map(|s| s.value), Some(50.0));
    }

    // Every stored line of every built-in fits its type's schema (net,
    // diskio and throttle print `none normal` where there is nothing: no
    // interface but lo in a test's network namespace, no Pi firmware).
    for t in builtins {
        for line in c.archived("pi1", t).lines() {
            let words: Vec<&str> = line.split(' ').skip(1).collect();
            assert!(
                pihealth::schema::name_fields(t, &words).is_some(),
                "{t}: {line:?} does not fit its schema"
            );
        }
    }

    // The critical cpu alarm, labelled with the threshold it reached.
    wait_for("the cpu alarm on the master", || {
        std::fs::read_to_string(c.master_own().join("alarms.log"))
            .is_ok_and(|t| t.lines().any(|l| l.contains(" cpu critical ")))
    });
    let log = std::fs::read_to_string(c.master_own().join("alarms.log")).unwrap();
    let line = log.lines().find(|l| l.contains(" cpu critical ")).unwrap();
    assert!(line.contains(" usage "), "{line}");
    assert!(line.contains(" % ≥ critical 0 %"), "{line}");
    assert!(line.contains("load1 "), "{line}");
    let shown = c.run_lines(&["alarms", "-c", "master.yaml", "--host", "pi1"]);
    assert!(
        shown.iter().any(|l| l.contains("≥ critical 0 %")),
        "pihealth alarms: {shown:?}"
    );
    let page = http_get("/");
    assert!(
        page.contains("≥ critical 0 %"),
        "status page lacks the labelled alarm"
    );
}
