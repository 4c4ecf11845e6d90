//! `native-redis-messaging`: Redis pub/sub, wire-compatible with @sap/cds `redis-messaging`, and a
//! queue with at-least-once delivery on Redis Streams.
//!
//! ## Behavior
//! - **Connections.** Opened on first use (first emit or start of consumption), never at
//!   construction. Every connection reconnects by itself with jittered exponential back-off
//!   (`reconnect_delay` … `max_reconnect_delay`); idle connections are checked with `PING`. A lost
//!   connection is logged once as a warning, every reconnect as info; the host never crashes.
//! - **Emits during an outage** wait at most `connect_timeout` for the connection to come back and
//!   then fail with `CONNECTION_FAILED` (so the caller or CAP's outbox can retry). An emit whose
//!   connection broke while it was being sent is retried once on the new connection within the
//!   same bound; a message can therefore be published twice, never silently dropped.
//! - **Pub/sub mode** ([`pubsub`]): `PUBLISH <topic> <payload>` (a batch is one pipeline),
//!   `SUBSCRIBE` per subscribed topic, `PSUBSCRIBE *` when everything is consumed. Subscriptions
//!   made at any time are applied at once; after a reconnect every channel is subscribed again.
//!   At-most-once: Redis delivers a message only to subscribers connected at that moment.
//!   Handler failures are retried in memory (`max_attempts`), then dead-lettered in memory.
//! - **Streams mode** ([`streams`]): `XADD <prefix><topic> [MAXLEN ~ n] * payload <json>` (one
//!   pipeline per batch), one consumer group per queue, `XREADGROUP … COUNT n BLOCK ms` over every
//!   subscribed stream on a dedicated connection, `XACK` (batched) only after the handlers
//!   succeeded. A failed delivery stays pending; after the engine's back-off it is claimed again
//!   (`XCLAIM`, which raises Redis's delivery counter). After `max_attempts` it is written to the
//!   dead-letter stream with the error text and acknowledged, in one `MULTI`. Entries of a consumer
//!   that crashed are claimed with `XAUTOCLAIM` once idle for `claim_after`; live consumers keep
//!   their entries fresh (`XCLAIM … JUSTID`) so slow handlers are not taken over. Entries that were
//!   delivered `max_attempts` times without an acknowledgement (e.g. a handler that crashes the
//!   process) are dead-lettered when claimed.

pub mod conn;
pub mod inspect;
pub mod pubsub;
pub mod streams;

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::log::Logger;
use crate::transport::Transport;

use self::conn::Endpoint;
use crate::transport::support::backoff::Backoff;

/// Which Redis feature carries the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// `PUBLISH`/`SUBSCRIBE`, wire-compatible with @sap/cds `redis-messaging` (at-most-once).
    PubSub,
    /// Redis Streams with consumer groups (at-least-once).
    Streams,
}

/// Settings of the streams mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsConfig {
    /// Prepended to a topic to form its stream key.
    pub prefix: String,
    /// The consumer group: one per service queue (every instance of an app shares it).
    pub group: String,
    /// This consumer's name inside the group (unique per process and engine by default).
    pub consumer: String,
    /// `XADD … MAXLEN ~ n` when set.
    pub max_len: Option<u64>,
    /// Idle time after which a pending entry of another consumer is taken over.
    pub claim_after: Duration,
    /// Entries fetched by one `XREADGROUP`.
    pub read_count: usize,
    /// `BLOCK` time of one `XREADGROUP`.
    pub block: Duration,
    /// Where exhausted entries go.
    pub dead_letter_stream: String,
    /// Start a new consumer group at the beginning of the stream (`0`) instead of its end (`$`).
    pub from_start: bool,
}

impl StreamsConfig {
    /// Defaults for `group`, with stream keys `prefix + topic`.
    pub fn new(prefix: impl Into<String>, group: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let group = group.into();
        StreamsConfig {
            dead_letter_stream: format!("{prefix}{group}:dead-letter"),
            consumer: default_consumer_name(),
            prefix,
            group,
            max_len: None,
            claim_after: Duration::from_secs(30),
            read_count: 100,
            block: Duration::from_millis(1000),
            from_start: false,
        }
    }
}

/// `<host>-<pid>-<n>`: unique per engine, so two engines never share pending entries.
pub fn default_consumer_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "{}-{}-{}",
        crate::transport::support::host::host_name(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Settings of the Redis transport.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[:password@]host[:port][/db]` or `rediss://…`; never logged.
    pub url: String,
    /// PEM CA certificate trusted for `rediss://` (e.g. BTP's `credentials.tls.server_ca`).
    pub ca: Option<String>,
    /// Pub/sub or streams.
    pub mode: RedisMode,
    /// Limit of one connection attempt, and how long an emit waits for a connection.
    pub connect_timeout: Duration,
    /// Reconnect timing.
    pub reconnect: Backoff,
    /// Settings of the streams mode (ignored in pub/sub mode).
    pub streams: StreamsConfig,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field(
                "url",
                &conn::display_address(&self.url).unwrap_or_else(|_| "<invalid>".into()),
            )
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field("mode", &self.mode)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect", &self.reconnect)
            .field("streams", &self.streams)
            .finish()
    }
}

impl RedisConfig {
    /// Pub/sub on `url` with defaults.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            ca: None,
            mode: RedisMode::PubSub,
            connect_timeout: Duration::from_secs(5),
            reconnect: Backoff {
                min: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
            streams: StreamsConfig::new("cds:", "CAP/0000"),
        }
    }

    /// Checks every value; errors carry `INVALID_CONFIG` and never repeat the URL.
    pub fn validate(&self) -> Result<()> {
        conn::display_address(&self.url)?;
        if self.connect_timeout < Duration::from_millis(10) {
            return Err(Error::config("connectTimeout must be at least 10 ms"));
        }
        if self.reconnect.max < self.reconnect.min {
            return Err(Error::config(
                "maxReconnectDelay must not be smaller than reconnectDelay",
            ));
        }
        if self.mode == RedisMode::Streams {
            let s = &self.streams;
            if s.group.is_empty() {
                return Err(Error::config(
                    "queue (the consumer group name) must not be empty",
                ));
            }
            if s.consumer.is_empty() {
                return Err(Error::config("consumer must not be empty"));
            }
            if s.dead_letter_stream.is_empty() {
                return Err(Error::config("deadLetterStream must not be empty"));
            }
            crate::limits::check("readCount", s.read_count, crate::limits::MAX_CAPACITY)?;
            if s.claim_after < Duration::from_millis(100) {
                return Err(Error::config("claimAfter must be at least 100 ms"));
            }
            if s.block < Duration::from_millis(10) {
                return Err(Error::config("block must be at least 10 ms"));
            }
            if s.max_len == Some(0) {
                return Err(Error::config(
                    "maxLen must be at least 1 (leave it out to keep every entry)",
                ));
            }
        }
        Ok(())
    }
}

/// Creates the transport for `config` (no connection is opened yet).
pub fn build(config: RedisConfig, log: Logger) -> Result<Arc<dyn Transport>> {
    config.validate()?;
    let endpoint = Endpoint::new(&config.url, config.ca.as_deref())?;
    Ok(match config.mode {
        RedisMode::PubSub => Arc::new(pubsub::PubSubTransport::new(config, endpoint, log)),
        RedisMode::Streams => Arc::new(streams::StreamsTransport::new(config, endpoint, log)),
    })
}

/// Runs `f` on a connection of `link`, reconnecting once if the connection turned out broken.
pub(crate) async fn with_retry<T, F, Fut>(
    link: &conn::CommandConnection,
    wait: Duration,
    what: &str,
    mut f: F,
) -> Result<T>
where
    F: FnMut(::redis::aio::MultiplexedConnection) -> Fut,
    Fut: std::future::Future<Output = ::redis::RedisResult<T>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    let mut tries = 0;
    loop {
        tries += 1;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (c, gen) = link.get(left.max(Duration::from_millis(1))).await?;
        match f(c).await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let fatal = conn::is_fatal(&e);
                link.failed(gen, &e);
                if !fatal || tries >= 2 || tokio::time::Instant::now() >= deadline {
                    let code = if fatal {
                        crate::error::ErrorCode::ConnectionFailed
                    } else {
                        crate::error::ErrorCode::Internal
                    };
                    return Err(Error::with_cause(
                        code,
                        format!("{what} failed on Redis at {}", link.display()),
                        e,
                    ));
                }
            }
        }
    }
}

/// Sends a pipeline of one command per message of `batch` and reports per message: a message
/// Redis refused fails alone (`WRONGTYPE` as `NO_ROUTE`, anything else as `CONNECTION_FAILED`, so the
/// caller may retry); a lost connection fails the whole batch.
pub(crate) async fn send_batch(
    link: &conn::CommandConnection,
    wait: Duration,
    what: &str,
    pipe: &::redis::Pipeline,
    batch: &[crate::message::Outbound],
) -> Vec<Result<()>> {
    use crate::error::ErrorCode;
    let res = with_retry(link, wait, what, |mut c| async move {
        pipe.query_async::<Vec<::redis::Value>>(&mut c).await
    })
    .await;
    match res {
        Ok(values) if values.len() == batch.len() => batch
            .iter()
            .zip(values)
            .map(|(m, v)| match v {
                ::redis::Value::ServerError(e) => {
                    let text = format!("{e:?}");
                    let code = if text.contains("WRONGTYPE") {
                        ErrorCode::NoRoute
                    } else {
                        ErrorCode::ConnectionFailed
                    };
                    Err(Error::new(
                        code,
                        format!(
                            "cannot emit '{}': Redis at {} refused {what}: {text}",
                            m.topic,
                            link.display()
                        ),
                    ))
                }
                _ => Ok(()),
            })
            .collect(),
        Ok(values) => batch
            .iter()
            .map(|m| {
                Err(Error::new(
                    ErrorCode::Internal,
                    format!(
                        "cannot emit '{}': {} replies to {} commands",
                        m.topic,
                        values.len(),
                        batch.len()
                    ),
                ))
            })
            .collect(),
        Err(e) => batch
            .iter()
            .map(|m| Err(Error::emit(&m.topic, &e)))
            .collect(),
    }
}

#[cfg(test)]
mod tests;
