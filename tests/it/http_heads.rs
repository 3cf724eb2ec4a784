//! Hostile request heads against a real master's HTTP port, over real
//! sockets: each gets its status and its reason (the same as before the
//! head was parsed by httparse), nothing leaks past a refusal, and the
//! port keeps serving after every one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::util::*;

const BLOCK: u8 = 220;

fn addr() -> SocketAddr {
    format!("{}:8082", master_ip(BLOCK)).parse().unwrap()
}

/// Status line and body of the one answer to `raw`.
fn exchange(raw: &[u8]) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr(), Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).expect("send");
    let mut bytes = Vec::new();
    if let Err(e) = s.read_to_end(&mut bytes) {
        panic!(
            "read the answer: {e} after {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

#[test]
fn every_hostile_head_gets_its_status_and_reason_and_the_port_serves_on() {
    let c = Cluster::new(BLOCK);
    let _master = c.start("master", &c.master_config(0, ""), "master");
    wait_for("the HTTP port", || TcpStream::connect(addr()).is_ok());
    let bad = |why: &str| ("HTTP/1.1 400 Bad Request", format!("bad request: {why}\n"));
    let cases: Vec<(&[u8], (&str, String))> = vec![
        // (A head without CRLF CRLF waits in net::WaitingRoom for more: the
        // unit tests of web::http::request cover the other bare-LF cases.)
        (
            b"GET / HTTP/1.1\nHost: x\r\n\r\n",
            bad("lines must end in CRLF"),
        ),
        (
            b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            bad("request line is not METHOD TARGET VERSION"),
        ),
        (
            b"GET /  HTTP/1.1\r\nHost: x\r\n\r\n",
            bad("request line is not METHOD TARGET VERSION"),
        ),
        (
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            bad("target must be a path starting with /"),
        ),
        (
            b"GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
            bad("target must be a path starting with /"),
        ),
        (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", bad("bad method")),
        (
            b"GET / HTTX/1.1\r\nHost: x\r\n\r\n",
            bad("bad HTTP version"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            bad("HTTP/1.1 needs exactly one Host header"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            bad("bad header name"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
            bad("header line without a colon"),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            bad("folded header lines are not allowed"),
        ),
        (b"GET / HTTP/1.1\r\nHost: x\rY\r\n\r\n", bad("stray CR")),
        (
            b"GET / HTTP/1.1\r\nHost: x\x01\r\n\r\n",
            bad("control character in a header value"),
        ),
        // A body would be left unread to be taken for the next request.
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            bad("a request body is not accepted here"),
        ),
        (
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            (
                "HTTP/1.1 505 HTTP Version Not Supported",
                "only HTTP/1.1 and HTTP/1.0\n".into(),
            ),
        ),
        (
            b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            (
                "HTTP/1.1 405 Method Not Allowed",
                "method DELETE not allowed\n".into(),
            ),
        ),
    ];
    for (raw, (status, body)) in &cases {
        let (got_status, got_body) = exchange(raw);
        assert_eq!(
            (got_status.as_str(), got_body.as_str()),
            (*status, body.as_str()),
            "for {:?}",
            String::from_utf8_lossy(raw)
        );
        // A well-formed request right after is served.
        let (ok, text) = exchange(b"GET /healthz HTTP/1.0\r\n\r\n");
        assert_eq!((ok.as_str(), text.as_str()), ("HTTP/1.1 200 OK", "ok\n"));
    }
    // 64 header fields (Host and 63 more) are served; 65 are refused.
    let fields = |n: usize| -> String { (0..n).map(|i| format!("X-{i}: y\r\n")).collect() };
    let (ok, _) =
        exchange(format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n", fields(63)).as_bytes());
    assert_eq!(ok, "HTTP/1.1 200 OK");
    let refused =
        exchange(format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n", fields(64)).as_bytes());
    let (status, body) = bad("too many header fields");
    assert_eq!(refused, (status.to_string(), body));
}
