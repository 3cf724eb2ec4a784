//! The transport of the master's HTTP port (`http_listen`, default
//! 127.0.0.1:8082): one request per connection, read, answered and closed.
//! What is answered is `web::routes`; the pages themselves `web::views`.
//!
//! Served like the other master ports: blocking sockets, and the accept
//! loop hands each connection to a fixed pool — its own (`http_workers`),
//! so page loads and scrapes never take a worker from pulls or
//! heartbeats. A connection takes a worker only once its whole request
//! head has arrived (`net::WaitingRoom`), and the stream's deadline (one
//! `io_timeout` from when a worker took it) bounds the whole exchange, so a
//! slow client is cut off. `Connection: close`, GET and HEAD only, a
//! request head of at most 8 KiB, parsed strictly: anything else gets a
//! 4xx and the connection closed.

mod request;
mod response;

use std::io;
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::net::TimedStream;
pub(crate) use request::{Method, Refusal, Request};
pub(crate) use response::Response;

/// The master starts the port with this.
pub(crate) use crate::web::routes::Http;

/// After the response, unread request bytes are drained (so closing does
/// not reset the connection under the response) up to this much.
const DRAIN_LIMIT: u64 = 64 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Serve one connection: read the head, answer it with `route` (or the
/// refusal), close.
pub(crate) fn serve(
    mut stream: TimedStream,
    peer: SocketAddr,
    route: impl FnOnce(&Request) -> Response,
) {
    let started = Instant::now();
    let (request, response) = match request::read_head(&mut stream) {
        Ok(head) => match request::parse_head(&head) {
            Ok(req) => {
                let resp = route(&req);
                (Some(req), resp)
            }
            Err(why) => (None, Response::refused(&why)),
        },
        Err(request::ReadError::Closed) => return,
        Err(request::ReadError::Io(e)) => {
            log::debug!("http: {peer}: cut off while reading the request: {e}");
            return;
        }
        Err(request::ReadError::Refused(why)) => (None, Response::refused(&why)),
    };
    log_exchange(peer, request.as_ref(), &response, started);
    let head_only = request.is_some_and(|r| r.method == Method::Head);
    if let Err(e) = response::write_response(&mut stream, &response, head_only) {
        log::debug!("http: {peer}: cannot send the response: {e}");
        return;
    }
    linger(&mut stream);
}

fn log_exchange(
    peer: SocketAddr,
    request: Option<&Request>,
    response: &Response,
    started: Instant,
) {
    match request {
        Some(r) if response.status < 400 => log::debug!(
            "http: {peer} {:?} {} {} in {:?}",
            r.method,
            r.path,
            response.status,
            started.elapsed()
        ),
        // Unauthenticated peers can send anything: keep refusals out of the
        // default log level (a scanner would fill it), but name the peer.
        _ => log::debug!(
            "http: {peer}: {} {}",
            response.status,
            String::from_utf8_lossy(&response.body).trim_end()
        ),
    }
}

/// Half-close and read what the client still sends (bounded), so that
/// unread request bytes do not turn our close into a reset that could
/// destroy the response still in flight.
fn linger(stream: &mut TimedStream) {
    if stream.shutdown_write().is_err() || stream.set_io_timeout(DRAIN_TIMEOUT).is_err() {
        return;
    }
    let _ = io::copy(&mut stream.take(DRAIN_LIMIT), &mut io::sink());
}
