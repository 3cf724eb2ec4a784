//! The response: status line, headers and body in one write, and the
//! answers to refused request heads.

use std::io::{self, Write};

use super::request::Refusal;

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    pub(crate) fn text(status: u16, body: String) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body.into_bytes())
    }

    pub(crate) fn html(body: String) -> Response {
        let mut r = Response::new(200, "text/html; charset=utf-8", body.into_bytes());
        // No scripts, no outside resources, no framing: the page needs none.
        r.headers.push((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'"
                .into(),
        ));
        r.headers.push(("Referrer-Policy", "no-referrer".into()));
        r
    }

    pub(crate) fn refused(why: &Refusal) -> Response {
        match why {
            Refusal::Bad(why) => Response::text(400, format!("bad request: {why}\n")),
            Refusal::TooLarge => Response::text(431, "request head too large\n".into()),
            Refusal::Method(m) => {
                let mut r = Response::text(405, format!("method {m} not allowed\n"));
                r.headers.push(("Allow", "GET, HEAD".into()));
                r
            }
            Refusal::Version => Response::text(505, "only HTTP/1.1 and HTTP/1.0\n".into()),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Status line, headers and (unless HEAD) the body, in one write.
pub(crate) fn write_response(w: &mut impl Write, r: &Response, head_only: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nDate: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Connection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
        r.status,
        reason(r.status),
        chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT"),
        r.content_type,
        r.body.len()
    );
    for (name, value) in &r.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&r.body);
    }
    w.write_all(&bytes)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_say_close_and_length_and_head_has_no_body() {
        let mut out = Vec::new();
        write_response(&mut out, &Response::text(200, "ok\n".into()), false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.contains("\r\nContent-Length: 3\r\n"));
        assert!(text.ends_with("\r\n\r\nok\n"));
        let mut out = Vec::new();
        write_response(&mut out, &Response::text(200, "ok\n".into()), true).unwrap();
        assert!(String::from_utf8(out).unwrap().ends_with("Content-Length: 3\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n"));
    }

    #[test]
    fn a_refused_method_says_what_is_allowed() {
        let r = Response::refused(&Refusal::Method("PUT".into()));
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("Allow", "GET, HEAD".into())));
    }
}
