//! The request head: read up to its empty line, then parsed by `httparse`
//! with the stricter rules of this port (CRLF only, origin-form targets,
//! one Host for HTTP/1.1, no body) checked around it.

use std::io::{self, Read};

/// Longest request line plus headers.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) path: String,
    /// After `?`, without it; empty if none.
    pub(crate) query: String,
}

/// Why a request head is refused; each maps to one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 400, with a reason for the log and the body.
    Bad(&'static str),
    /// 431: the head exceeds `MAX_HEAD`.
    TooLarge,
    /// 405: a well-formed method we do not serve.
    Method(String),
    /// 505: HTTP/2.0 and the like on this port.
    Version,
}

#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed without sending anything (a port check, our own
    /// wake-up at shutdown): nothing to answer.
    Closed,
    Refused(Refusal),
    Io(io::Error),
}

/// Read one request head: the bytes up to and including the empty line.
/// A bare `\n\n` also ends it (and is then refused by the parser), so a
/// client that does not send CRLF gets an answer, not a timeout.
pub(crate) fn read_head(r: &mut impl Read) -> Result<Vec<u8>, ReadError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        };
        if n == 0 {
            return Err(if head.is_empty() {
                ReadError::Closed
            } else {
                ReadError::Refused(Refusal::Bad("connection closed inside the request head"))
            });
        }
        let searched = head.len().saturating_sub(2);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&head, searched) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(ReadError::Refused(Refusal::TooLarge));
        }
    }
}

/// Index just past the first empty line at or after `from`, if any.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len())
        .find_map(|i| {
            if buf[i] != b'\n' {
                return None;
            }
            match (buf.get(i + 1), buf.get(i + 2)) {
                (Some(b'\n'), _) => Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => Some(i + 3),
                _ => None,
            }
        })
        .filter(|&end| end <= MAX_HEAD)
}

/// Parse a request head read by `read_head` (RFC 9112, strictly).
pub(crate) fn parse_head(head: &[u8]) -> Result<Request, Refusal> {
    check_line_ends(head)?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(NOT_A_REQUEST_LINE),
        Err(e) => return Err(refusal(e, head)),
    }
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(NOT_A_REQUEST_LINE);
    };
    if !is_origin_form(target.as_bytes()) {
        return Err(BAD_TARGET);
    }
    check_headers(parsed.headers, version == 1)?;
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => return Err(Refusal::Method(other.to_string())),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
    })
}

const NOT_A_REQUEST_LINE: Refusal = Refusal::Bad("request line is not METHOD TARGET VERSION");
const BAD_TARGET: Refusal = Refusal::Bad("target must be a path starting with /");

/// What `httparse` lets pass but this port refuses: a bare LF or CR (it
/// takes LF alone as a line end), leading empty lines (it skips them) and
/// folded header lines.
fn check_line_ends(head: &[u8]) -> Result<(), Refusal> {
    if !head.ends_with(b"\r\n\r\n") {
        return Err(Refusal::Bad("lines must end in CRLF"));
    }
    if head.starts_with(b"\r\n") {
        return Err(NOT_A_REQUEST_LINE);
    }
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && head[..i].last() != Some(&b'\r') {
            return Err(Refusal::Bad("lines must end in CRLF"));
        }
        if b == b'\r' && head.get(i + 1) != Some(&b'\n') {
            return Err(Refusal::Bad("stray CR"));
        }
    }
    let folded = |w: &[u8]| w[..2] == *b"\r\n" && (w[2] == b' ' || w[2] == b'\t');
    if head.windows(3).any(folded) {
        return Err(Refusal::Bad("folded header lines are not allowed"));
    }
    Ok(())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `/` and visible ASCII: no absolute form, no raw UTF-8 (`httparse`
/// lets both through).
fn is_origin_form(target: &[u8]) -> bool {
    target.first() == Some(&b'/') && target.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// The refusal for a head `httparse` rejected: which part of the request
/// line is wrong decides between 400 and 505, and names the reason.
fn refusal(e: httparse::Error, head: &[u8]) -> Refusal {
    let mut lines = head.split(|&b| b == b'\n');
    let line = lines.next().unwrap_or_default().trim_ascii_end();
    match e {
        httparse::Error::HeaderName
            if lines.any(|l| !l.trim_ascii().is_empty() && !l.contains(&b':')) =>
        {
            return Refusal::Bad("header line without a colon")
        }
        httparse::Error::HeaderName => return Refusal::Bad("bad header name"),
        httparse::Error::HeaderValue => return Refusal::Bad("control character in a header value"),
        httparse::Error::TooManyHeaders => return Refusal::Bad("too many header fields"),
        httparse::Error::NewLine => return Refusal::Bad("lines must end in CRLF"),
        _ => {}
    }
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return NOT_A_REQUEST_LINE;
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Refusal::Bad("bad method");
    }
    if !is_origin_form(target) {
        return BAD_TARGET;
    }
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Refusal::Version
        }
        _ => Refusal::Bad("bad HTTP version"),
    }
}

/// HTTP/1.1 needs exactly one Host. No request body is accepted (we would
/// not read it).
fn check_headers(headers: &[httparse::Header], http11: bool) -> Result<(), Refusal> {
    let mut hosts = 0;
    for h in headers {
        let value = h.value.trim_ascii();
        if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && value != b"0")
        {
            return Err(Refusal::Bad("a request body is not accepted here"));
        }
    }
    if http11 && hosts != 1 {
        return Err(Refusal::Bad("HTTP/1.1 needs exactly one Host header"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, Refusal> {
        let head = read_head(&mut text.as_bytes()).map_err(|e| match e {
            ReadError::Refused(r) => r,
            other => panic!("{other:?}"),
        })?;
        parse_head(&head)
    }

    #[test]
    fn a_good_request() {
        let r = parse("GET /?hours=12 HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n").unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/");
        assert_eq!(r.query, "hours=12");
        let r = parse("HEAD /metrics HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.method, Method::Head);
        // Bytes after the head (a pipelined request) are not part of it.
        let r = parse("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n").unwrap();
        assert_eq!(r.path, "/a");
    }

    #[test]
    fn an_oversize_head_is_refused_without_reading_on() {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(parse(&big), Err(Refusal::TooLarge));
        // Endless garbage without a line end: refused once past the limit.
        let mut endless = io::repeat(b'x');
        assert!(matches!(
            read_head(&mut endless),
            Err(ReadError::Refused(Refusal::TooLarge))
        ));
    }

    #[test]
    fn methods_other_than_get_and_head() {
        assert_eq!(
            parse("POST / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(Refusal::Method("POST".into()))
        );
        assert!(matches!(
            parse("G(T / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(Refusal::Bad(_))
        ));
    }

    #[test]
    fn garbage_and_missing_crlf() {
        for (text, why) in [
            ("GET / HTTP/1.1\nHost: x\n\n", "lines must end in CRLF"),
            ("GET / HTTP/1.1\r\nHost: x\n\r\n", "lines must end in CRLF"),
            ("GET / HTTP/1.1\r\nHost: x\r\n\n", "lines must end in CRLF"),
            (
                "\u{1}\u{2}\u{3}\r\n\r\n",
                "request line is not METHOD TARGET VERSION",
            ),
            (
                "GET /  HTTP/1.1\r\nHost: x\r\n\r\n",
                "request line is not METHOD TARGET VERSION",
            ),
            (
                "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
                "request line is not METHOD TARGET VERSION",
            ),
            (
                "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
                "target must be a path starting with /",
            ),
            (
                "GET http://x/ HTTP/2.0\r\nHost: x\r\n\r\n",
                "target must be a path starting with /",
            ),
            (
                "GET / HTTP/1.1\r\n\r\n",
                "HTTP/1.1 needs exactly one Host header",
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
                "HTTP/1.1 needs exactly one Host header",
            ),
            ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", "bad header name"),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
                "header line without a colon",
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
                "folded header lines are not allowed",
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
                "a request body is not accepted here",
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                "a request body is not accepted here",
            ),
            ("GET / HTTP/1.1\r\nHost: x\rY\r\n\r\n", "stray CR"),
            (
                "GET / HTTP/1.1\r\nHost: x\u{7f}\r\n\r\n",
                "control character in a header value",
            ),
            (
                "GET /é HTTP/1.1\r\nHost: x\r\n\r\n",
                "target must be a path starting with /",
            ),
            ("GET / HTTX/1.1\r\nHost: x\r\n\r\n", "bad HTTP version"),
            ("G(T / HTTP/1.1\r\nHost: x\r\n\r\n", "bad method"),
        ] {
            assert_eq!(parse(text), Err(Refusal::Bad(why)), "{text:?}");
        }
        let many: String = (0..MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
        assert_eq!(
            parse(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
            Err(Refusal::Bad("too many header fields"))
        );
        let many: String = (1..MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
        assert!(parse(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")).is_ok());
        assert_eq!(
            parse("GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
            Err(Refusal::Version)
        );
        // Closed before the head ended, or before anything came.
        assert!(matches!(
            read_head(&mut &b"GET / HTTP/1.1\r\nHo"[..]),
            Err(ReadError::Refused(Refusal::Bad(_)))
        ));
        assert!(matches!(read_head(&mut &b""[..]), Err(ReadError::Closed)));
    }
}
