//! A small HTTP/1.1 client for OAuth tokens, the Event Mesh management API and REST calls:
//! hyper 1 over tokio TCP and the crate's rustls (ring). Keeps idle connections per origin.
//!
//! Requests carry their body as [`Bytes`]; responses are read completely ([`Response`]).
//! Network and TLS failures are `CONNECTION_FAILED` errors that name the origin, never a header.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HOST};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::{Error, ErrorCode, Result};
use crate::sync::lock;

/// TLS settings of an [`HttpClient`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HttpTls {
    /// Extra trusted CA certificates (PEM), on top of the system roots and `NODE_EXTRA_CA_CERTS`.
    pub ca: Option<String>,
    /// Client certificate chain (PEM) for mutual TLS.
    pub cert: Option<String>,
    /// Client private key (PEM; never logged).
    pub key: Option<String>,
}

impl std::fmt::Debug for HttpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTls")
            .field("ca", &self.ca.is_some())
            .field("cert", &self.cert.is_some())
            .field("key", &self.key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Response {
    /// The body parsed as JSON, whatever the `content-type` says (`application/json; charset=utf-8`
    /// included). `what` names the call in the error.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::with_cause(
                ErrorCode::InvalidDataFormat,
                format!(
                    "{what} answered HTTP {} with a body that is not the expected JSON",
                    self.status.as_u16()
                ),
                e,
            )
        })
    }

    /// `Retry-After` in seconds (the HTTP-date form is not used by the APIs we call), capped at
    /// ten minutes.
    pub fn retry_after(&self) -> Option<Duration> {
        let v = self.headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
        let secs: u64 = v.trim().parse().ok()?;
        Some(Duration::from_secs(secs.min(600)))
    }

    /// Up to 200 characters of the body, for error messages of calls whose bodies hold no secret.
    pub fn body_excerpt(&self) -> String {
        let s = String::from_utf8_lossy(&self.body);
        let s = s.trim();
        match s.char_indices().nth(200) {
            Some((i, _)) => format!("{}…", &s[..i]),
            None => s.to_string(),
        }
    }
}

type Sender = SendRequest<Full<Bytes>>;

/// A shareable HTTP/1.1 client (cheap to clone through `Arc`).
pub struct HttpClient {
    tls: Arc<rustls::ClientConfig>,
    /// A client certificate is presented (mutual TLS).
    client_cert: bool,
    timeout: Duration,
    idle: Mutex<HashMap<String, Vec<Sender>>>,
    /// `CDS_NATIVE_RESOLVE` host overrides, read when the client is made.
    resolve: super::resolve::Overrides,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `scheme://host:port` of `uri`, and whether it uses TLS.
fn origin(uri: &Uri) -> Result<(String, String, u16, bool)> {
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(Error::config(format!(
                "'{}' must be an http:// or https:// URL",
                redact(uri)
            )))
        }
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::config(format!("'{}' has no host", redact(uri))))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((
        format!("{}://{host}:{port}", if tls { "https" } else { "http" }),
        host,
        port,
        tls,
    ))
}

/// Any URL (`https://`, `wss://`, …) without user info and query, for messages.
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// `uri` without user info and query, for messages.
pub fn redact(uri: &Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("?"),
        uri.host().unwrap_or(""),
        match uri.port_u16() {
            Some(p) => format!(":{p}{}", uri.path()),
            None => uri.path().to_string(),
        }
    )
}

impl HttpClient {
    /// A client with the given TLS settings; `timeout` bounds every request (connect to last byte).
    pub fn new(tls: &HttpTls, timeout: Duration) -> Result<Self> {
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(Error::config(
                "a client certificate and its key must be given together",
            ));
        }
        let options = super::tls::TlsOptions {
            ca: tls.ca.clone(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            verify: true,
            servername: None,
        };
        Ok(HttpClient {
            tls: super::tls::client_config(&options, "")?,
            client_cert: tls.cert.is_some(),
            timeout,
            idle: Mutex::new(HashMap::new()),
            resolve: super::resolve::Overrides::from_env()?,
        })
    }

    /// The same client with `resolve` as its host overrides instead of `CDS_NATIVE_RESOLVE`'s.
    pub fn with_overrides(mut self, resolve: super::resolve::Overrides) -> Self {
        self.resolve = resolve;
        self
    }

    /// Sends `req` (an absolute `http[s]://` URI) and reads the whole response. Fails with
    /// `CONNECTION_FAILED` on network/TLS errors and time-outs, never on an HTTP status.
    pub async fn send(&self, req: Request<Bytes>) -> Result<Response> {
        let (key, host, port, tls) = origin(req.uri())?;
        let shown = redact(req.uri());
        let fut = async {
            let (mut parts, body) = req.into_parts();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            if !parts.headers.contains_key(HOST) {
                let value = if (tls && port == 443) || (!tls && port == 80) {
                    host.clone()
                } else {
                    format!("{host}:{port}")
                };
                if let Ok(v) = http::HeaderValue::from_str(&value) {
                    parts.headers.insert(HOST, v);
                }
            }
            parts.uri = path.parse().map_err(|e| {
                Error::with_cause(
                    ErrorCode::InvalidConfig,
                    format!("bad request path for {shown}"),
                    e,
                )
            })?;
            // A pooled connection may have been closed by the server meanwhile: one retry on a
            // fresh connection.
            let pooled = self.take_idle(&key);
            let from_pool = pooled.is_some();
            let mut sender = match pooled {
                Some(s) => s,
                None => self.connect(&host, port, tls, &shown).await?,
            };
            let build = |parts: &http::request::Parts| {
                let mut r = Request::new(Full::new(body.clone()));
                *r.method_mut() = parts.method.clone();
                *r.uri_mut() = parts.uri.clone();
                *r.headers_mut() = parts.headers.clone();
                r
            };
            let res = match sender.send_request(build(&parts)).await {
                Ok(r) => r,
                Err(_) if from_pool => {
                    sender = self.connect(&host, port, tls, &shown).await?;
                    sender
                        .send_request(build(&parts))
                        .await
                        .map_err(|e| self.first_exchange_error(&shown, tls, e))?
                }
                Err(e) => return Err(self.first_exchange_error(&shown, tls, e)),
            };
            let (head, body) = res.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| net_error(&shown, e))?
                .to_bytes();
            let close = head
                .headers
                .get(http::header::CONNECTION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            if !close {
                self.put_idle(key.clone(), sender);
            }
            Ok(Response {
                status: head.status,
                headers: head.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorCode::ConnectionFailed,
                format!(
                    "{shown} did not answer within {} ms",
                    self.timeout.as_millis()
                ),
            )),
        }
    }

    /// The first request on a new connection failed. With TLS 1.3 a server that refuses the
    /// client certificate does so only now (an alert or a bare close after the handshake), so
    /// the message says so when a certificate was presented.
    fn first_exchange_error(&self, shown: &str, tls: bool, e: hyper::Error) -> Error {
        let mut err = net_error(shown, e);
        if tls && self.client_cert {
            err.message.push_str(
                " right after the TLS handshake; with a client certificate this usually means the server refused it (check uaa.certificate and uaa.key: issued by a CA the server accepts, not expired)",
            );
        }
        err
    }

    fn take_idle(&self, key: &str) -> Option<Sender> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(key)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() && s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, key: String, s: Sender) {
        let mut idle = lock(&self.idle);
        let list = idle.entry(key).or_default();
        if list.len() < 8 {
            list.push(s);
        }
    }

    async fn connect(&self, host: &str, port: u16, tls: bool, shown: &str) -> Result<Sender> {
        // An operational override (CDS_NATIVE_RESOLVE) connects to its IP address instead of
        // resolving the name; the Host header and the TLS server name stay `host`.
        let connected = match self.resolve.lookup(host, port) {
            Some(addr) => TcpStream::connect((addr, port)).await,
            None => TcpStream::connect((host, port)).await,
        };
        let tcp = connected.map_err(|e| {
            Error::with_cause(
                ErrorCode::ConnectionFailed,
                format!("cannot reach {shown}"),
                e,
            )
        })?;
        let _ = tcp.set_nodelay(true);
        if !tls {
            return handshake(tcp, shown).await;
        }
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
            Error::with_cause(
                ErrorCode::InvalidConfig,
                format!("'{host}' is not a valid TLS server name"),
                e,
            )
        })?;
        let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| {
                Error::with_cause(
                    ErrorCode::ConnectionFailed,
                    format!("TLS handshake with {shown} failed (check its certificate, the ca option and NODE_EXTRA_CA_CERTS)"),
                    e,
                )
            })?;
        handshake(stream, shown).await
    }
}

async fn handshake<S>(io: S, shown: &str) -> Result<Sender>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| net_error(shown, e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn net_error(shown: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_cause(
        ErrorCode::ConnectionFailed,
        format!("the HTTP exchange with {shown} failed"),
        e,
    )
}
