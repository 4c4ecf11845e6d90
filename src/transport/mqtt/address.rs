//! Broker addresses: `mqtt://`, `mqtts://`, `ws://`, `wss://` URLs, parsed without a URL crate and
//! printed without credentials.

use crate::error::{Error, Result};
use crate::transport::support::url::{percent_decode, redact};

/// How the client reaches the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain TCP (`mqtt://`, also `tcp://`).
    Tcp,
    /// TLS over TCP (`mqtts://`, also `ssl://`).
    Tls,
    /// WebSocket (`ws://`).
    Ws,
    /// WebSocket over TLS (`wss://`).
    Wss,
}

impl Scheme {
    fn parse(s: &str) -> Option<Scheme> {
        Some(match s.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => Scheme::Tcp,
            "mqtts" | "ssl" | "tls" => Scheme::Tls,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            _ => return None,
        })
    }

    /// The scheme as written in a URL.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Tcp => "mqtt",
            Scheme::Tls => "mqtts",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }

    /// The port used when the URL has none.
    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Tcp => 1883,
            Scheme::Tls => 8883,
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        }
    }

    /// `true` for `mqtts://` and `wss://`.
    pub const fn is_tls(self) -> bool {
        matches!(self, Scheme::Tls | Scheme::Wss)
    }

    /// `true` for `ws://` and `wss://`.
    pub const fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }
}

/// A parsed broker URL. `Display` never shows the user name or password.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Transport.
    pub scheme: Scheme,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// WebSocket path (starts with `/`); `/mqtt` when the URL has none.
    pub path: String,
    /// User name from the URL, percent-decoded.
    pub username: Option<String>,
    /// Password from the URL, percent-decoded.
    pub password: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}:{}",
            self.scheme.as_str(),
            self.host_for_url(),
            self.port
        )?;
        if self.scheme.is_websocket() {
            f.write_str(&self.path)?;
        }
        Ok(())
    }
}

/// The path of a WebSocket URL without one.
pub const DEFAULT_WS_PATH: &str = "/mqtt";

impl Endpoint {
    /// Parses a broker URL. Errors are `INVALID_CONFIG` and never repeat the password.
    pub fn parse(url: &str) -> Result<Endpoint> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad(
                url,
                "expected <scheme>://<host>[:<port>], e.g. mqtt://localhost:1883",
            ));
        };
        let scheme = Scheme::parse(scheme)
            .ok_or_else(|| bad(url, "the scheme must be mqtt://, mqtts://, ws:// or wss://"))?;
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (Some(percent_decode(n)), Some(percent_decode(p))),
                None => (Some(percent_decode(u)), None),
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else {
                return Err(bad(url, "an IPv6 address needs a closing ']'"));
            };
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad(url, "unexpected text after ']'"))?,
                ),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad(url, "the host is missing"));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '@')
        {
            return Err(bad(url, "the host is not valid"));
        }
        let port = match port {
            None => scheme.default_port(),
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(bad(url, "the port must be a number between 1 and 65535")),
            },
        };
        let path = path.split(['#']).next().unwrap_or_default();
        let path = if path.is_empty() || path.starts_with('?') {
            format!("{DEFAULT_WS_PATH}{path}")
        } else {
            path.to_string()
        };
        Ok(Endpoint {
            scheme,
            host,
            port,
            path,
            username: username.filter(|u| !u.is_empty()),
            password,
        })
    }

    fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The URL rumqttc connects to for WebSockets (`ws://host:port/path`, no credentials).
    pub fn websocket_url(&self) -> String {
        format!(
            "{}://{}:{}{}",
            self.scheme.as_str(),
            self.host_for_url(),
            self.port,
            self.path
        )
    }
}

fn bad(url: &str, why: &str) -> Error {
    Error::config(format!(
        "url '{}' is not a valid broker URL: {why}",
        redact(url)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_with_default_ports() {
        let e = Endpoint::parse("mqtt://localhost").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Tcp, "localhost", 1883)
        );
        assert_eq!(Endpoint::parse("mqtts://h").unwrap().port, 8883);
        assert_eq!(Endpoint::parse("ws://h").unwrap().port, 80);
        let e = Endpoint::parse("wss://broker.example:8443/protocols/mqtt311ws").unwrap();
        assert_eq!(e.scheme, Scheme::Wss);
        assert_eq!(e.port, 8443);
        assert_eq!(e.path, "/protocols/mqtt311ws");
        assert_eq!(
            e.websocket_url(),
            "wss://broker.example:8443/protocols/mqtt311ws"
        );
        assert_eq!(
            Endpoint::parse("ws://127.0.0.1:9001").unwrap().path,
            "/mqtt"
        );
        assert_eq!(Endpoint::parse("TCP://h:1").unwrap().scheme, Scheme::Tcp);
    }

    #[test]
    fn credentials_are_decoded_and_never_displayed() {
        let e = Endpoint::parse("mqtt://us%40er:p%3Ass@127.0.0.1:1884").unwrap();
        assert_eq!(e.username.as_deref(), Some("us@er"));
        assert_eq!(e.password.as_deref(), Some("p:ss"));
        assert_eq!(e.to_string(), "mqtt://127.0.0.1:1884");
        assert!(!format!("{e:?}").contains("p:ss"));
    }

    #[test]
    fn ipv6_hosts() {
        let e = Endpoint::parse("mqtt://[::1]:1999").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 1999));
        assert_eq!(e.to_string(), "mqtt://[::1]:1999");
    }

    #[test]
    fn bad_urls_are_invalid_config_without_secrets() {
        for url in [
            "localhost:1883",
            "http://localhost",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://host:0",
            "mqtt://host:99999",
            "mqtt://host:abc",
            "mqtt://user:secret@",
        ] {
            let e = Endpoint::parse(url).unwrap_err();
            assert_eq!(e.code, crate::error::ErrorCode::InvalidConfig, "{url}");
            assert!(!e.message.contains("secret"), "{}", e.message);
        }
        assert_eq!(redact("mqtt://u:secret@h:1/x"), "mqtt://u:***@h:1/x");
        assert_eq!(redact("mqtt://h:1"), "mqtt://h:1");
    }
}
