//! Connections: URL and TLS handling and the reconnecting command connection
//! ([`CommandConnection`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisError};
use tokio::sync::watch;

use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::transport::support::backoff::{should_log, Backoff, Reconnect};
use crate::transport::support::tls;

/// A Redis endpoint: the parsed URL and, for `rediss://`, the crate's shared TLS client
/// configuration; plus a printable address without credentials.
///
/// TLS goes through [`crate::transport::support::tls`] like AMQP and MQTT (same trust: system
/// roots + `NODE_EXTRA_CA_CERTS` + `ca`; same PEM parsing; same `INVALID_CONFIG` messages). The
/// redis crate (1.8) cannot take a `rustls::ClientConfig`: its `TlsCertificates` only takes PEM
/// bytes, which it parses itself and then trusts *instead of* the system roots. So for
/// `rediss://` this endpoint opens TCP and TLS itself and hands the stream to
/// [`MultiplexedConnection::new_with_config`] / [`redis::aio::PubSub::new`], which the crate
/// offers for any tokio `AsyncRead + AsyncWrite`.
#[derive(Clone)]
pub struct Endpoint {
    /// The client of the URL (host, port, database, credentials, protocol).
    client: redis::Client,
    /// `rediss://`: where to connect and how to do TLS.
    tls: Option<Arc<TlsTarget>>,
    /// `host:port` (with `rediss://` for TLS), safe for log lines.
    pub display: Arc<str>,
}

struct TlsTarget {
    host: String,
    port: u16,
    connector: tokio_rustls::TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("display", &self.display)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The address part of a Redis URL, safe for logs: scheme for TLS, host, port, database.
pub fn display_address(url: &str) -> Result<String> {
    let info = url.into_connection_info().map_err(|_| invalid_url())?;
    let db = info.redis_settings().db();
    let db = if db == 0 {
        String::new()
    } else {
        format!("/{db}")
    };
    Ok(match info.addr() {
        ConnectionAddr::Tcp(host, port) => format!("{host}:{port}{db}"),
        ConnectionAddr::TcpTls { host, port, .. } => format!("rediss://{host}:{port}{db}"),
        ConnectionAddr::Unix(path) => format!("unix:{}{db}", path.display()),
        _ => format!("redis{db}"),
    })
}

fn invalid_url() -> Error {
    // The URL itself is never repeated: it may contain a password.
    Error::config(
        "url is not a valid Redis URL; expected redis://[:password@]host[:port][/db] or rediss://… for TLS",
    )
}

/// `true` when `url` asks for TLS.
pub fn is_tls(url: &str) -> bool {
    url.trim_start()
        .to_ascii_lowercase()
        .starts_with("rediss://")
}

impl Endpoint {
    /// Parses `url` and, for `rediss://`, builds the shared TLS client configuration: the system's
    /// roots, `NODE_EXTRA_CA_CERTS` and `ca` (PEM, e.g. BTP's `credentials.tls.server_ca`) are
    /// trusted (`rediss://…#insecure` is refused). Errors are `INVALID_CONFIG` with the messages
    /// of [`tls::client_config`] (the option is named `ca`).
    pub fn new(url: &str, ca: Option<&str>) -> Result<Self> {
        let display: Arc<str> = display_address(url)?.into();
        if ca.is_some() && !is_tls(url) {
            return Err(Error::config(
                "a CA certificate (tls.server_ca / ca) was given for a redis:// URL; use rediss:// for TLS",
            ));
        }
        let client = redis::Client::open(url).map_err(|_| invalid_url())?;
        let tls = match client.get_connection_info().addr() {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => {
                if *insecure {
                    // As before: the crate refused it too (no `tls-rustls-insecure`).
                    return Err(Error::config(
                        "rediss://…#insecure (no certificate check) is not supported; trust the server's CA with credentials.tls.server_ca / ca or NODE_EXTRA_CA_CERTS",
                    ));
                }
                let options = tls::TlsOptions {
                    ca: ca.map(str::to_string),
                    verify: true,
                    ..Default::default()
                };
                let config = tls::client_config(&options, "")?;
                Some(Arc::new(TlsTarget {
                    host: host.clone(),
                    port: *port,
                    connector: tokio_rustls::TlsConnector::from(config),
                    server_name: options.server_name(host)?,
                }))
            }
            _ => None,
        };
        Ok(Endpoint {
            client,
            tls,
            display,
        })
    }

    /// TCP + TLS to a `rediss://` endpoint (the caller bounds the time).
    async fn tls_stream(
        t: &TlsTarget,
    ) -> redis::RedisResult<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port)).await?;
        let _ = tcp.set_nodelay(true);
        Ok(t.connector.connect(t.server_name.clone(), tcp).await?)
    }

    /// A multiplexed command connection (authenticated, on the URL's database).
    pub async fn multiplexed(
        &self,
        config: &AsyncConnectionConfig,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let Some(t) = &self.tls else {
            return self
                .client
                .get_multiplexed_async_connection_with_config(config)
                .await;
        };
        let stream = Self::tls_stream(t).await?;
        let info = self.client.get_connection_info().redis_settings();
        let (conn, driver) =
            MultiplexedConnection::new_with_config(info, stream, config.clone()).await?;
        // The driver ends once the last clone of `conn` is dropped (its request channel closes)
        // or the socket closes.
        tokio::spawn(driver);
        Ok(conn)
    }

    /// A dedicated RESP2 pub/sub connection.
    pub async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        let Some(t) = &self.tls else {
            return self.client.get_async_pubsub().await;
        };
        let stream = Self::tls_stream(t).await?;
        redis::aio::PubSub::new(self.client.get_connection_info().redis_settings(), stream).await
    }
}

/// Wraps a redis error as `CONNECTION_FAILED` with context.
pub fn connection_error(context: String, e: RedisError) -> Error {
    Error::with_cause(ErrorCode::ConnectionFailed, context, e)
}

/// `true` when the connection must be replaced after `e`.
pub fn is_fatal(e: &RedisError) -> bool {
    e.is_unrecoverable_error() || e.is_io_error() || e.is_connection_dropped() || e.is_timeout()
}

#[derive(Clone)]
enum LinkState {
    Connecting {
        last_error: Option<String>,
    },
    Up {
        conn: MultiplexedConnection,
        gen: u64,
    },
    Closed,
}

/// Settings of one [`CommandConnection`].
#[derive(Debug, Clone)]
pub struct CommandSettings {
    /// What the link is for, in log lines (`commands`, `reads`).
    pub label: &'static str,
    /// Limit of one connection attempt.
    pub connect_timeout: Duration,
    /// Limit of one command's response (longer than any `BLOCK` sent over the link).
    pub response_timeout: Duration,
    /// Reconnect timing.
    pub backoff: Backoff,
    /// How often an idle connection is checked with `PING`.
    pub ping_interval: Duration,
}

struct LinkInner {
    endpoint: Endpoint,
    settings: CommandSettings,
    state: watch::Sender<LinkState>,
    started: AtomicBool,
    log: Logger,
}

/// A multiplexed command connection that reconnects by itself. Cheap to clone.
///
/// The connection is opened on first use (inside the tokio runtime). A command that fails with a
/// connection error reports it with [`CommandConnection::failed`]; the supervisor then replaces the connection
/// after a jittered back-off. An idle connection is checked with `PING` every `ping_interval`.
#[derive(Clone)]
pub struct CommandConnection {
    inner: Arc<LinkInner>,
}

impl CommandConnection {
    /// A link to `endpoint`; nothing is connected until [`CommandConnection::get`] is called.
    pub fn new(endpoint: Endpoint, settings: CommandSettings, log: Logger) -> Self {
        CommandConnection {
            inner: Arc::new(LinkInner {
                endpoint,
                settings,
                state: watch::channel(LinkState::Connecting { last_error: None }).0,
                started: AtomicBool::new(false),
                log,
            }),
        }
    }

    /// The printable address.
    pub fn display(&self) -> &str {
        &self.inner.endpoint.display
    }

    fn ensure_started(&self) {
        if self.inner.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(supervise(inner));
    }

    /// A connection and its generation, waiting at most `wait` while (re)connecting.
    pub async fn get(&self, wait: Duration) -> Result<(MultiplexedConnection, u64)> {
        self.ensure_started();
        let mut rx = self.inner.state.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let last_error = match &*rx.borrow_and_update() {
                LinkState::Up { conn, gen } => return Ok((conn.clone(), *gen)),
                LinkState::Closed => return Err(Error::shut_down()),
                LinkState::Connecting { last_error } => last_error.clone(),
            };
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    let why = last_error
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default();
                    return Err(Error::new(
                        ErrorCode::ConnectionFailed,
                        format!(
                            "Redis at {} is not reachable{why}; gave up after {} ms",
                            self.display(),
                            wait.as_millis()
                        ),
                    ));
                }
            }
        }
    }

    /// Reports that a command on connection `gen` failed with `e`; replaces the connection when
    /// the error says it is broken.
    pub fn failed(&self, gen: u64, e: &RedisError) {
        if !is_fatal(e) {
            return;
        }
        let text = e.to_string();
        self.inner.state.send_if_modified(|s| match s {
            LinkState::Up { gen: g, .. } if *g == gen => {
                *s = LinkState::Connecting {
                    last_error: Some(text.clone()),
                };
                true
            }
            _ => false,
        });
    }

    /// Closes the link for good; pending and later [`CommandConnection::get`] calls fail with `CLOSED`.
    pub fn close(&self) {
        self.inner.state.send_replace(LinkState::Closed);
    }
}

async fn supervise(inner: Arc<LinkInner>) {
    let mut rx = inner.state.subscribe();
    let s = &inner.settings;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(s.connect_timeout))
        .set_response_timeout(Some(s.response_timeout));
    let mut reconnect = Reconnect::new(s.backoff);
    let mut gen = 0u64;
    let mut was_up = false;
    loop {
        if matches!(*rx.borrow_and_update(), LinkState::Closed) {
            return;
        }
        let attempt =
            tokio::time::timeout(s.connect_timeout, inner.endpoint.multiplexed(&config)).await;
        let conn = match attempt {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                reconnect.on_failed();
                retry_later(&inner, &mut rx, &reconnect, e.to_string()).await;
                continue;
            }
            Err(_) => {
                reconnect.on_failed();
                let why = format!("no answer within {} ms", s.connect_timeout.as_millis());
                retry_later(&inner, &mut rx, &reconnect, why).await;
                continue;
            }
        };
        gen += 1;
        if was_up {
            inner.log.stats().reconnected();
        }
        if was_up || reconnect.failures() > 0 {
            inner.log.info(&format!(
                "reconnected to Redis at {} ({})",
                inner.endpoint.display, s.label
            ));
        } else {
            inner.log.debug(&format!(
                "connected to Redis at {} ({})",
                inner.endpoint.display, s.label
            ));
        }
        reconnect.on_connected();
        was_up = true;
        let mut ping_conn = conn.clone();
        let published = inner.state.send_if_modified(|st| {
            if matches!(st, LinkState::Closed) {
                return false;
            }
            *st = LinkState::Up { conn, gen };
            true
        });
        if !published {
            return;
        }
        rx.borrow_and_update();
        // Stay here while the connection is up; PING it when idle.
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(s.ping_interval) => {
                    let ping: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut ping_conn).await;
                    if let Err(e) = ping {
                        let text = e.to_string();
                        inner.state.send_if_modified(|st| match st {
                            LinkState::Up { gen: g, .. } if *g == gen => {
                                *st = LinkState::Connecting { last_error: Some(text.clone()) };
                                true
                            }
                            _ => false,
                        });
                    }
                }
            }
            let state = rx.borrow_and_update().clone();
            match state {
                LinkState::Up { gen: g, .. } if g == gen => continue,
                LinkState::Closed => return,
                LinkState::Up { .. } => continue,
                LinkState::Connecting { last_error } => {
                    inner.log.warn(&format!(
                        "connection to Redis at {} lost ({}): {}; reconnecting",
                        inner.endpoint.display,
                        s.label,
                        last_error.unwrap_or_else(|| "unknown error".into())
                    ));
                    break;
                }
            }
        }
        // Lost: a connection that did not stay up for the stable period counts as a failure, so
        // a server that accepts and drops at once is not hit again without a pause.
        if !reconnect.on_lost().is_zero() {
            let why = "the connection was lost soon after it was opened".to_string();
            retry_later(&inner, &mut rx, &reconnect, why).await;
        }
    }
}

async fn retry_later(
    inner: &LinkInner,
    rx: &mut watch::Receiver<LinkState>,
    reconnect: &Reconnect,
    why: String,
) {
    let failures = reconnect.failures();
    let delay = reconnect.next_delay();
    if should_log(failures) {
        inner.log.warn(&format!(
            "cannot connect to Redis at {} ({}, attempt {failures}): {why}; retrying in {} ms",
            inner.endpoint.display,
            inner.settings.label,
            delay.as_millis()
        ));
    }
    inner.state.send_if_modified(|st| match st {
        LinkState::Connecting { last_error } => {
            *last_error = Some(why.clone());
            true
        }
        _ => false,
    });
    rx.borrow_and_update();
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = wait_closed(rx) => {}
    }
}

async fn wait_closed(rx: &mut watch::Receiver<LinkState>) {
    loop {
        if matches!(*rx.borrow_and_update(), LinkState::Closed) {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
