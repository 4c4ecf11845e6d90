//! Streams mode: a queue with at-least-once delivery on Redis Streams and consumer groups.
//!
//! Tasks of one consumer: the *reader* (`XREADGROUP` on its own connection, because `BLOCK` holds
//! a connection), the *settler* (batched `XACK`s and dead letters on the command connection), the
//! *janitor* (keeps owned entries fresh, takes over idle entries of crashed consumers, discovers
//! streams for `'*'`) and one short task per redelivery back-off.

mod janitor;
mod keys;
mod reader;
mod settler;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::streams::StreamId;
use ::redis::Value;
use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::conn::{CommandConnection, CommandSettings, Endpoint};
use super::{send_batch, with_retry, RedisConfig, StreamsConfig};
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::message::{Delivery, InFlight, Inbound, Outbound};
use crate::policy::RetryPolicy;
use crate::sync::lock;
use crate::transport::{Guarantee, Transport, TransportContext};

/// How long `close` waits for deliveries in flight before leaving them pending.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How often idle connections are checked with `PING`.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How often streams are listed when every topic is consumed (`'*'`).
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

pub use self::keys::{entry_payload, glob_escape, stream_key, topic_of};
use self::settler::StreamSettle;

struct Consumer {
    tasks: Vec<JoinHandle<()>>,
    settler: JoinHandle<()>,
    stop: watch::Sender<bool>,
    shared: Arc<Shared>,
}

/// The streams transport.
pub struct StreamsTransport {
    config: RedisConfig,
    endpoint: Endpoint,
    cmd: CommandConnection,
    log: Logger,
    consumer: Mutex<Option<Consumer>>,
    closed: AtomicBool,
}

impl StreamsTransport {
    /// A transport for `endpoint`; connects on first use.
    pub fn new(config: RedisConfig, endpoint: Endpoint, log: Logger) -> Self {
        let cmd = CommandConnection::new(
            endpoint.clone(),
            CommandSettings {
                label: "commands",
                connect_timeout: config.connect_timeout,
                response_timeout: config.connect_timeout.max(Duration::from_secs(2)),
                backoff: config.reconnect,
                ping_interval: PING_INTERVAL,
            },
            log.clone(),
        );
        StreamsTransport {
            config,
            endpoint,
            cmd,
            log,
            consumer: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl Transport for StreamsTransport {
    fn guarantee(&self, policy: &RetryPolicy) -> Guarantee {
        let s = &self.config.streams;
        let trim = match s.max_len {
            Some(n) => format!(
                "; streams are trimmed to about {n} entries, so a consumer group that falls further behind loses the oldest"
            ),
            None => String::new(),
        };
        Guarantee {
            delivery: "at-least-once",
            dead_letter: s.dead_letter_stream.clone(),
            summary: format!(
                "at-least-once via Redis Streams at {} (consumer group '{}'): an emit resolves once Redis stored the entry; an entry is acknowledged only after every handler succeeded, a failing one is redelivered up to {} attempt(s) and then moved to stream '{}'; entries of a crashed consumer are taken over after {} ms{trim}",
                self.endpoint.display,
                s.group,
                policy.max_attempts,
                s.dead_letter_stream,
                s.claim_after.as_millis()
            ),
        }
    }

    async fn start(&self, ctx: TransportContext) -> Result<()> {
        let mut slot = lock(&self.consumer);
        if slot.is_some() {
            return Err(Error::new(
                ErrorCode::Internal,
                "redis transport started twice",
            ));
        }
        let read = CommandConnection::new(
            self.endpoint.clone(),
            CommandSettings {
                label: "reads",
                connect_timeout: self.config.connect_timeout,
                response_timeout: self.config.streams.block
                    + self.config.connect_timeout.max(Duration::from_secs(2)),
                backoff: self.config.reconnect,
                ping_interval: PING_INTERVAL,
            },
            self.log.clone(),
        );
        let (stop, stop_rx) = watch::channel(false);
        let (ops_tx, ops_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            s: self.config.streams.clone(),
            connect_timeout: self.config.connect_timeout,
            reconnect: self.config.reconnect,
            display: self.endpoint.display.to_string(),
            cmd: self.cmd.clone(),
            read,
            ctx,
            ops: ops_tx,
            owned: Mutex::new(HashSet::new()),
            ready: Mutex::new(HashSet::new()),
            discovered: Mutex::new(Vec::new()),
            stop: stop_rx,
            ensured: AtomicU64::new(0),
            read_client: Mutex::new(None),
            scanned: AtomicBool::new(false),
            fresh: Mutex::new(HashSet::new()),
        });
        let tasks = vec![
            tokio::spawn(shared.clone().reader()),
            tokio::spawn(shared.clone().janitor()),
            tokio::spawn(shared.clone().unblocker()),
        ];
        let settler = tokio::spawn(shared.clone().settler(ops_rx));
        *slot = Some(Consumer {
            tasks,
            settler,
            stop,
            shared,
        });
        Ok(())
    }

    async fn publish(&self, batch: Vec<Outbound>) -> Vec<Result<()>> {
        if self.closed.load(Ordering::Acquire) {
            return batch.iter().map(|m| Err(Error::closed(&m.topic))).collect();
        }
        let shared = lock(&self.consumer).as_ref().map(|c| c.shared.clone());
        if let Some(shared) = shared {
            shared.ensure_subscribed_groups().await;
        }
        let s = &self.config.streams;
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        for m in &batch {
            let c = pipe.cmd("XADD").arg(stream_key(&s.prefix, &m.topic));
            if let Some(n) = s.max_len {
                c.arg("MAXLEN").arg("~").arg(n);
            }
            c.arg("*").arg("payload").arg(&m.payload);
        }
        send_batch(
            &self.cmd,
            self.config.connect_timeout,
            "XADD",
            &pipe,
            &batch,
        )
        .await
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let consumer = lock(&self.consumer).take();
        if let Some(c) = consumer {
            let _ = c.stop.send(true);
            for t in c.tasks {
                let _ = t.await;
            }
            // Let deliveries in flight finish and their acknowledgements go out.
            let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
            while !lock(&c.shared.owned).is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = c.shared.ops.send(Op::Flush);
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, c.settler).await;
            let left = lock(&c.shared.owned).len();
            if left > 0 {
                self.log.info(&format!(
                    "{left} message(s) still being processed stay pending in Redis and will be redelivered"
                ));
            } else {
                c.shared.forget_consumer().await;
            }
            c.shared.read.close();
        }
        self.cmd.close();
        Ok(())
    }
}

impl Drop for StreamsTransport {
    fn drop(&mut self) {
        if let Some(c) = lock(&self.consumer).take() {
            for t in c.tasks {
                t.abort();
            }
            c.settler.abort();
            c.shared.read.close();
        }
        self.cmd.close();
    }
}

/// Settlement work for the settler task.
enum Op {
    /// `_place` (under `maxInFlight`) is dropped, i.e. freed, only once the `XACK` is confirmed.
    Ack {
        key: String,
        id: String,
        _place: InFlight,
    },
    DeadLetter {
        key: String,
        id: String,
        topic: String,
        payload: String,
        attempts: u32,
        error: String,
    },
    /// Write what is queued and stop.
    Flush,
}

struct Shared {
    s: StreamsConfig,
    connect_timeout: Duration,
    reconnect: crate::transport::support::backoff::Backoff,
    display: String,
    cmd: CommandConnection,
    read: CommandConnection,
    ctx: TransportContext,
    ops: mpsc::UnboundedSender<Op>,
    /// Entries delivered to this consumer and not yet acknowledged or dead-lettered.
    owned: Mutex<HashSet<(String, String)>>,
    /// Streams whose consumer group is known to exist.
    ready: Mutex<HashSet<String>>,
    /// Streams found by `SCAN` when every topic is consumed.
    discovered: Mutex<Vec<String>>,
    stop: watch::Receiver<bool>,
    /// Subscription version whose consumer groups exist.
    ensured: AtomicU64,
    /// Generation and `CLIENT ID` of the read connection (to end a `BLOCK` early).
    read_client: Mutex<Option<(u64, i64)>>,
    /// Whether streams were listed once (for `'*'`).
    scanned: AtomicBool,
    /// Streams that appeared while consuming: their group starts at the first entry.
    fresh: Mutex<HashSet<String>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn pause(&self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopping(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// The stream keys to consume now.
    fn keys(&self) -> Vec<String> {
        let want = self.ctx.subscriptions.snapshot();
        let mut keys: Vec<String> = want
            .topics
            .iter()
            .map(|t| stream_key(&self.s.prefix, t))
            .collect();
        if want.all {
            keys.extend(lock(&self.discovered).iter().cloned());
        }
        keys.retain(|k| *k != self.s.dead_letter_stream);
        keys.sort();
        keys.dedup();
        keys
    }

    /// Before an emit: subscriptions made before it get their consumer group first, so a service
    /// receives what it emits right after `on(…)`. A failure is left to the reader, which retries.
    async fn ensure_subscribed_groups(&self) {
        let version = *self.ctx.subscriptions.watch().borrow();
        if version > self.ensured.load(Ordering::Acquire) {
            let keys = self.keys();
            if self.ensure_groups(&keys, false).await.is_ok() {
                self.ensured.fetch_max(version, Ordering::AcqRel);
            }
        }
    }

    /// Creates the consumer group on every stream in `keys` that is not known to have it.
    async fn ensure_groups(&self, keys: &[String], from_start: bool) -> Result<()> {
        let missing: Vec<String> = {
            let ready = lock(&self.ready);
            keys.iter()
                .filter(|k| !ready.contains(*k))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let starts: Vec<&'static str> = {
            let fresh = lock(&self.fresh);
            missing
                .iter()
                .map(|k| {
                    if from_start || self.s.from_start || fresh.contains(k) {
                        "0"
                    } else {
                        "$"
                    }
                })
                .collect()
        };
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        for (k, start) in missing.iter().zip(&starts) {
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(k)
                .arg(&self.s.group)
                .arg(*start)
                .arg("MKSTREAM");
        }
        let group = self.s.group.clone();
        let results: Vec<std::result::Result<(), String>> =
            with_retry(&self.cmd, self.connect_timeout, "XGROUP CREATE", |mut c| {
                let pipe = &pipe;
                async move {
                    let values: Vec<Value> = pipe.query_async(&mut c).await?;
                    Ok(values
                        .into_iter()
                        .map(|v| match v {
                            Value::ServerError(e) => Err(format!("{e:?}")),
                            _ => Ok(()),
                        })
                        .collect())
                }
            })
            .await?;
        let mut ready = lock(&self.ready);
        let mut fresh = lock(&self.fresh);
        for ((k, r), start) in missing.iter().zip(results).zip(starts) {
            fresh.remove(k);
            match r {
                Ok(()) => {
                    self.ctx.log.debug(&format!(
                        "created consumer group '{group}' on stream '{k}' (from {start})"
                    ));
                    ready.insert(k.clone());
                }
                Err(e) if e.contains("BUSYGROUP") => {
                    ready.insert(k.clone());
                }
                Err(e) => {
                    return Err(Error::new(
                        ErrorCode::ConnectionFailed,
                        format!("cannot create consumer group '{group}' on stream '{k}': {e}"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Hands one entry to the engine; `false` when consumption is to stop.
    async fn deliver(self: &Arc<Self>, key: &str, entry: StreamId, attempt: u32) -> bool {
        let message = Inbound {
            topic: topic_of(&self.s.prefix, key).to_string(),
            payload: entry_payload(&entry.map),
            attempt,
        };
        lock(&self.owned).insert((key.to_string(), entry.id.clone()));
        let settle = StreamSettle {
            shared: self.clone(),
            key: key.to_string(),
            id: entry.id,
            message: message.clone(),
        };
        let mut stop = self.stop.clone();
        tokio::select! {
            r = self.ctx.deliveries.send(Delivery { message, settle: Box::new(settle) }) => r.is_ok(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }
}
