//! What the HTTP port answers: the status page `/`, Prometheus
//! `/metrics`, `/api/status.json` and `/healthz`. Read-only and without a
//! key, which is why the port listens on loopback unless the operator
//! opens it.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::MasterConfig;
use crate::master::registry::Registry;
use crate::net::TimedStream;
use crate::web::exposition;
use crate::web::http::{self, Refusal, Request, Response};
use crate::web::views::Views;

const DEFAULT_HOURS: u32 = 6;
const MAX_HOURS: u32 = 48;

/// The HTTP port's handler; one per master.
pub(crate) struct Http {
    views: Views,
}

impl Http {
    pub(crate) fn new(config: &MasterConfig, registry: Arc<Registry>) -> Http {
        Http {
            views: Views::new(config, registry),
        }
    }

    /// Serve one connection: one request, one response, close.
    pub(crate) fn handle(&self, stream: TimedStream, peer: SocketAddr) {
        http::serve(stream, peer, |req| self.route(req));
    }

    /// The answer to a well-formed request.
    fn route(&self, req: &Request) -> Response {
        match req.path.as_str() {
            "/" => match hours_param(&req.query) {
                Ok(hours) => Response::html(self.views.page(hours)),
                Err(why) => Response::refused(&why),
            },
            "/metrics" => Response::new(
                200,
                exposition::CONTENT_TYPE,
                self.views.metrics().into_bytes(),
            ),
            "/healthz" => Response::text(200, "ok\n".into()),
            "/api/status.json" => Response::new(
                200,
                "application/json",
                self.views.status_json().into_bytes(),
            ),
            _ => Response::text(404, "not found\n".into()),
        }
    }
}

/// The `hours` of `/?hours=N`: 1 to 48, default 6.
fn hours_param(query: &str) -> Result<u32, Refusal> {
    let mut hours = DEFAULT_HOURS;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if let Some(v) = pair.strip_prefix("hours=") {
            hours = v
                .parse()
                .ok()
                .filter(|h| (1..=MAX_HOURS).contains(h))
                .ok_or(Refusal::Bad("hours must be a whole number from 1 to 48"))?;
        }
    }
    Ok(hours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_checked() {
        assert_eq!(hours_param(""), Ok(6));
        assert_eq!(hours_param("hours=12"), Ok(12));
        assert_eq!(hours_param("x=1&hours=48"), Ok(48));
        for bad in ["hours=0", "hours=49", "hours=-1", "hours=", "hours=6h"] {
            assert!(hours_param(bad).is_err(), "{bad}");
        }
    }
}
