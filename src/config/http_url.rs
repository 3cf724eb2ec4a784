//! An `http://` URL as a config file names it (the `alertmanagers` list):
//! checked when the config is read, so a daemon never starts with one it
//! cannot use. What is sent there is the master's business
//! (`master::alertmanager`).

/// Where an Alertmanager listens: `http://HOST:PORT[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub(crate) url: String,
    /// `HOST:PORT` as written (resolved at each send).
    pub(crate) authority: String,
    /// Path prefix without a trailing slash (`""` for none).
    pub(crate) prefix: String,
}

/// Why an `alertmanagers` URL is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadUrl {
    #[error("expected a plain http:// URL (https is not supported: put a TLS proxy in front of Alertmanager, or reach it over a trusted network)")]
    Https,
    #[error("expected a URL like http://127.0.0.1:9093, got {0:?}")]
    NotHttp(String),
    #[error(
        "expected a URL like http://127.0.0.1:9093 or http://am.example:9093/prefix, got {0:?}"
    )]
    Shape(String),
    #[error("bad port in {0:?}")]
    Port(String),
}

impl HttpUrl {
    /// Parse a URL from the config; the error says what was expected.
    pub(crate) fn parse(url: &str) -> Result<HttpUrl, BadUrl> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                BadUrl::Https
            } else {
                BadUrl::NotHttp(url.to_string())
            }
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty()
            || authority.contains('@')
            || !authority.chars().all(|c| c.is_ascii_graphic())
            || !path.chars().all(|c| c.is_ascii_graphic())
            || path.contains('?')
            || path.contains('#')
        {
            return Err(BadUrl::Shape(url.to_string()));
        }
        // A port is required unless the host is bare (then 80).
        let has_port = match authority.rfind(':') {
            Some(i) => !authority.ends_with(']') && authority[i + 1..].parse::<u16>().is_ok(),
            None => false,
        };
        let authority = if has_port {
            authority.to_string()
        } else if authority.contains(':') && !authority.ends_with(']') {
            return Err(BadUrl::Port(url.to_string()));
        } else {
            format!("{authority}:80")
        };
        Ok(HttpUrl {
            url: url.to_string(),
            authority,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// The address, when the URL names an IP (not a host name).
    pub(crate) fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        self.authority.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::HttpUrl as Target;

    #[test]
    fn urls_are_checked() {
        let t = Target::parse("http://127.0.0.1:9093").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str()),
            ("127.0.0.1:9093", "")
        );
        let t = Target::parse("http://am.example/alertmanager/").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str()),
            ("am.example:80", "/alertmanager")
        );
        let t = Target::parse("http://[::1]:9093").unwrap();
        assert_eq!(t.authority, "[::1]:9093");
        assert!(Target::parse("https://x:9093")
            .unwrap_err()
            .to_string()
            .contains("https"));
        assert!(Target::parse("127.0.0.1:9093").is_err());
        assert!(Target::parse("http://").is_err());
        assert!(Target::parse("http://a b:9093").is_err());
        assert!(Target::parse("http://x:port").is_err());
    }
}
