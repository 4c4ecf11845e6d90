//! WebSocket client streams (RFC 6455) for protocols tunnelled through a WebSocket gateway, e.g.
//! AMQP 1.0 (`amqp` subprotocol, binary frames) and MQTT through SAP Event Mesh.
//!
//! The caller opens the TCP (and TLS) stream; [`upgrade`] sends the upgrade request with the
//! subprotocol and an optional `Authorization` header, checks the answer and returns a byte
//! stream (tokio `AsyncRead + AsyncWrite`) that carries the protocol in binary frames.

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::Error as WsError;
use http::HeaderValue;
use ws_stream_tungstenite::WsStream;

use crate::error::{Error, ErrorCode};

/// The byte stream over an upgraded WebSocket.
pub type WsIo<S> = WsStream<TokioAdapter<S>>;

/// Why an upgrade failed.
#[derive(Debug)]
pub struct UpgradeError {
    /// `CONNECTION_FAILED` (or `INVALID_CONFIG` for a bad URL); the message names the URL.
    pub error: Error,
    /// The HTTP status when the gateway answered with something other than 101.
    pub status: Option<u16>,
}

impl UpgradeError {
    /// The gateway refused the bearer token (HTTP 401): get a new token and try once more.
    pub fn unauthorized(&self) -> bool {
        self.status == Some(401)
    }
}

/// The URL without user info and query, for messages.
pub use super::http::shown_url as shown;

/// Upgrades `io` (already connected to the URL's host and port, TLS done for `wss://`) to a
/// WebSocket at `url`, offering `subprotocol` and sending `authorization` (e.g. `Bearer …`)
/// when given. The gateway must answer 101 with that subprotocol.
pub async fn upgrade<S>(
    io: S,
    url: &str,
    subprotocol: &str,
    authorization: Option<&str>,
) -> Result<WsIo<S>, UpgradeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let place = shown(url);
    let fail = |message: String, status: Option<u16>| UpgradeError {
        error: Error::new(ErrorCode::ConnectionFailed, message),
        status,
    };
    let mut req = url.into_client_request().map_err(|e| UpgradeError {
        error: Error::with_cause(
            ErrorCode::InvalidConfig,
            format!("'{place}' is not a WebSocket URL (ws:// or wss://)"),
            e,
        ),
        status: None,
    })?;
    let h = req.headers_mut();
    h.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(subprotocol)
            .map_err(|_| fail(format!("bad WebSocket subprotocol '{subprotocol}'"), None))?,
    );
    if let Some(a) = authorization {
        let mut v = HeaderValue::from_str(a).map_err(|_| {
            fail(
                "the authorization value cannot be sent in an HTTP header".into(),
                None,
            )
        })?;
        v.set_sensitive(true);
        h.insert(http::header::AUTHORIZATION, v);
    }
    h.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("cds-native-messaging/", env!("CARGO_PKG_VERSION"))),
    );
    match async_tungstenite::tokio::client_async(req, io).await {
        Ok((socket, _response)) => Ok(WsStream::new(socket)),
        Err(WsError::Http(res)) => {
            let status = res.status().as_u16();
            let hint = match status {
                401 => "the gateway refused the bearer token; check the binding's oa2 credentials",
                403 => "the gateway refused access; check the service instance's permissions",
                404 => "check the path of the WebSocket URL (Event Mesh: /protocols/amqp10ws)",
                _ => "the gateway may be down or overloaded",
            };
            Err(fail(
                format!("the WebSocket upgrade at {place} was answered with HTTP {status}; {hint}"),
                Some(status),
            ))
        }
        Err(WsError::Protocol(p)) => Err(fail(
            format!("the WebSocket upgrade at {place} failed: {p} (the gateway must accept subprotocol '{subprotocol}')"),
            None,
        )),
        Err(e) => Err(UpgradeError {
            error: Error::with_cause(
                ErrorCode::ConnectionFailed,
                format!("the WebSocket upgrade at {place} failed"),
                e,
            ),
            status: None,
        }),
    }
}
