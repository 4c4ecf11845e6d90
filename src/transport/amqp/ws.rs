//! AMQP 1.0 over WebSocket (`ws://`, `wss://`; subprotocol `amqp`, binary frames), as SAP Event
//! Mesh's gateway speaks it: TCP (+TLS) → upgrade with `Authorization: Bearer <token>` → the usual
//! SASL and open on the WebSocket byte stream.
//!
//! Every (re)connect asks the [`TokenSource`] for a token (cached until shortly before it
//! expires); a gateway answering 401 gets the token dropped and one more upgrade with a new one.

use std::sync::Arc;

use super::config::{ConnSettings, Tls};
use super::error::{ConnectError, Failure};
use super::net::{self, Io};
use crate::error::{Error, Result};
use crate::transport::support::oauth::TokenSource;
use crate::transport::support::ws;

/// Where the WebSocket gateway is and how to authenticate at it.
#[derive(Clone)]
pub struct WsSettings {
    /// `ws[s]://host[:port]/path` of the gateway (e.g. `wss://…/protocols/amqp10ws`).
    pub url: String,
    /// Bearer tokens for the upgrade; `None`: no `Authorization` header.
    pub tokens: Option<Arc<TokenSource>>,
}

impl std::fmt::Debug for WsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsSettings")
            .field("url", &ws::shown(&self.url))
            .field("tokens", &self.tokens.as_ref().map(|t| t.describe()))
            .finish()
    }
}

impl PartialEq for WsSettings {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
            && match (&self.tokens, &other.tokens) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for WsSettings {}

/// Connection settings for a `ws://` or `wss://` URL: host and port (default 80/443) from the
/// URL, the path is the gateway's (no virtual host), SASL ANONYMOUS unless the URL has a user.
pub fn conn_settings(
    url: &str,
    container_id: &str,
    tokens: Option<Arc<TokenSource>>,
) -> Result<ConnSettings> {
    let parsed = url::Url::parse(url).map_err(|e| {
        Error::config(format!(
            "url must look like wss://gateway.example/protocols/amqp10ws ({e}): {}",
            ws::shown(url)
        ))
    })?;
    let (scheme, tls) = match parsed.scheme() {
        "ws" => ("amqp", None),
        "wss" => (
            "amqps",
            Some(Tls {
                verify: true,
                ..Tls::default()
            }),
        ),
        other => {
            return Err(Error::config(format!(
                "a WebSocket url must start with ws:// or wss://, got '{other}'"
            )))
        }
    };
    let port = parsed
        .port()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let mut base = parsed.clone();
    base.set_path("");
    base.set_query(None);
    let base = base.as_str().replacen(parsed.scheme(), scheme, 1);
    let mut s = ConnSettings::from_url(&base, container_id)?;
    s.port = port;
    s.tls = tls;
    s.vhost = None;
    let mut gateway = parsed;
    let _ = gateway.set_username("");
    let _ = gateway.set_password(None);
    s.ws = Some(WsSettings {
        url: gateway.to_string(),
        tokens,
    });
    Ok(s)
}

/// Opens the TCP/TLS stream of `s` and upgrades it to a WebSocket carrying AMQP.
pub async fn open(s: &ConnSettings, w: &WsSettings) -> Result<Box<dyn Io>, ConnectError> {
    let mut retried = false;
    loop {
        let token = match &w.tokens {
            Some(t) => Some(t.token().await.map_err(|error| ConnectError {
                error,
                kind: Failure::Transient,
            })?),
            None => None,
        };
        let io = net::stream(s).await?;
        let bearer = token.as_ref().map(|t| t.bearer());
        let upgrade = ws::upgrade(io, &w.url, "amqp", bearer.as_deref());
        let Ok(result) = tokio::time::timeout(s.connect_timeout, upgrade).await else {
            return Err(ConnectError {
                error: Error::new(
                    crate::error::ErrorCode::ConnectionFailed,
                    format!(
                        "the WebSocket upgrade at {} timed out after {} ms",
                        ws::shown(&w.url),
                        s.connect_timeout.as_millis()
                    ),
                ),
                kind: Failure::Transient,
            });
        };
        match result {
            Ok(stream) => return Ok(Box::new(stream)),
            Err(e) if e.unauthorized() && !retried => {
                if let (Some(ts), Some(t)) = (&w.tokens, &token) {
                    ts.invalidate(t);
                }
                retried = true;
            }
            Err(e) => {
                let kind = match e.status {
                    Some(401 | 403 | 404) => Failure::Permanent,
                    Some(_) => Failure::Transient,
                    None if e.error.code == crate::error::ErrorCode::InvalidConfig => {
                        Failure::Permanent
                    }
                    None => Failure::Transient,
                };
                return Err(ConnectError {
                    error: e.error,
                    kind,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls_keep_host_port_and_path() {
        let s = conn_settings("wss://gw.example/protocols/amqp10ws", "c", None).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("gw.example", 443));
        assert!(s.tls.is_some());
        assert_eq!(s.vhost, None);
        assert_eq!(
            s.ws.as_ref().unwrap().url,
            "wss://gw.example/protocols/amqp10ws"
        );
        let s = conn_settings("ws://127.0.0.1:8080/x", "c", None).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 8080));
        assert!(s.tls.is_none());
        let s = conn_settings("ws://127.0.0.1", "c", None).unwrap();
        assert_eq!(s.port, 80);
        assert!(conn_settings("amqp://x", "c", None).is_err());
        let s = conn_settings("wss://u:secret@gw.example/p", "c", None).unwrap();
        assert_eq!(s.endpoint(), "wss://gw.example/p");
    }
}
