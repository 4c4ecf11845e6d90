//! Connections: URL and TLS handling, the reconnecting command connection ([`Link`]) and the
//! jittered back-off shared by every reconnect loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisError};
use tokio::sync::watch;

use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;

/// Reconnect timing: `min · 2^(n-1)`, capped at `max`, with "equal jitter" (each delay is drawn
/// from the upper half of its range, so concurrent clients do not reconnect in lock-step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub min: Duration,
    /// Upper bound.
    pub max: Duration,
}

impl Backoff {
    /// The delay before reconnect attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let base = self.min.saturating_mul(1u32 << exp).min(self.max);
        let ms = base.as_millis() as u64;
        if ms == 0 {
            return Duration::ZERO;
        }
        let half = ms / 2;
        Duration::from_millis(ms - half + fastrand::u64(0..=half))
    }
}

/// A Redis endpoint: the client (with TLS settings) and a printable address without credentials.
#[derive(Clone)]
pub struct Endpoint {
    /// The client, used to open connections.
    pub client: redis::Client,
    /// `host:port` (with `rediss://` for TLS), safe for log lines.
    pub display: Arc<str>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("display", &self.display)
            .finish()
    }
}

/// Installs rustls' `ring` provider as the process default once (the redis crate builds its TLS
/// configuration from the process default).
fn ensure_crypto_provider() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // Err means another provider is installed already: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
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
    /// Parses `url` and prepares TLS with `ca` (PEM) as the only trusted root when given.
    pub fn new(url: &str, ca: Option<&str>) -> Result<Self> {
        let display: Arc<str> = display_address(url)?.into();
        let tls = is_tls(url);
        if ca.is_some() && !tls {
            return Err(Error::config(
                "a CA certificate (tls.server_ca / ca) was given for a redis:// URL; use rediss:// for TLS",
            ));
        }
        let client = if tls {
            ensure_crypto_provider();
            match ca {
                Some(pem) => {
                    if !pem.contains("-----BEGIN CERTIFICATE-----") {
                        return Err(Error::config(
                            "the CA certificate (tls.server_ca / ca) must be PEM text with -----BEGIN CERTIFICATE-----",
                        ));
                    }
                    redis::Client::build_with_tls(
                        url,
                        redis::TlsCertificates {
                            client_tls: None,
                            root_cert: Some(pem.as_bytes().to_vec()),
                        },
                    )
                    .map_err(|e| {
                        Error::config(format!(
                            "cannot use the CA certificate for {display}: {}",
                            e.kind_text()
                        ))
                    })?
                }
                None => redis::Client::open(url).map_err(|_| invalid_url())?,
            }
        } else {
            redis::Client::open(url).map_err(|_| invalid_url())?
        };
        Ok(Endpoint { client, display })
    }
}

/// A short description of a redis error without anything that could carry credentials.
pub trait ErrorText {
    /// The error's text (redis errors never contain the URL or the password).
    fn kind_text(&self) -> String;
}

impl ErrorText for RedisError {
    fn kind_text(&self) -> String {
        self.to_string()
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

/// Settings of one [`Link`].
#[derive(Debug, Clone)]
pub struct LinkSettings {
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
    settings: LinkSettings,
    state: watch::Sender<LinkState>,
    started: AtomicBool,
    log: Logger,
}

/// A multiplexed command connection that reconnects by itself. Cheap to clone.
///
/// The connection is opened on first use (inside the tokio runtime). A command that fails with a
/// connection error reports it with [`Link::failed`]; the supervisor then replaces the connection
/// after a jittered back-off. An idle connection is checked with `PING` every `ping_interval`.
#[derive(Clone)]
pub struct Link {
    inner: Arc<LinkInner>,
}

impl Link {
    /// A link to `endpoint`; nothing is connected until [`Link::get`] is called.
    pub fn new(endpoint: Endpoint, settings: LinkSettings, log: Logger) -> Self {
        Link {
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
                LinkState::Closed => {
                    return Err(Error::new(
                        ErrorCode::Closed,
                        "the messaging service was shut down",
                    ))
                }
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
        let text = e.kind_text();
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

    /// Closes the link for good; pending and later [`Link::get`] calls fail with `CLOSED`.
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
    let mut failures = 0u32;
    let mut gen = 0u64;
    let mut was_up = false;
    loop {
        if matches!(*rx.borrow_and_update(), LinkState::Closed) {
            return;
        }
        let attempt = tokio::time::timeout(
            s.connect_timeout,
            inner
                .endpoint
                .client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        let conn = match attempt {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                failures += 1;
                retry_later(&inner, &mut rx, failures, e.kind_text()).await;
                continue;
            }
            Err(_) => {
                failures += 1;
                let why = format!("no answer within {} ms", s.connect_timeout.as_millis());
                retry_later(&inner, &mut rx, failures, why).await;
                continue;
            }
        };
        gen += 1;
        if was_up || failures > 0 {
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
        failures = 0;
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
                        let text = e.kind_text();
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
    }
}

async fn retry_later(
    inner: &LinkInner,
    rx: &mut watch::Receiver<LinkState>,
    failures: u32,
    why: String,
) {
    let delay = inner.settings.backoff.delay(failures);
    if failures == 1 || failures.is_power_of_two() {
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
