//! Streams mode: a queue with at-least-once delivery on Redis Streams and consumer groups.
//!
//! Tasks of one consumer: the *reader* (`XREADGROUP` on its own connection, because `BLOCK` holds
//! a connection), the *settler* (batched `XACK`s and dead letters on the command connection), the
//! *janitor* (keeps owned entries fresh, takes over idle entries of crashed consumers, discovers
//! streams for `'*'`) and one short task per redelivery back-off.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::streams::{
    StreamAutoClaimReply, StreamClaimReply, StreamId, StreamPendingCountReply, StreamReadReply,
};
use ::redis::Value;
use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::conn::{Endpoint, ErrorText, Link, LinkSettings};
use super::{send_batch, with_retry, RedisConfig, StreamsConfig};
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::message::{Delivery, HandlerError, Inbound, Outbound, Settle};
use crate::policy::RetryPolicy;
use crate::sync::lock;
use crate::transport::{Guarantee, Transport, TransportContext};

/// How long `close` waits for deliveries in flight before leaving them pending.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How often idle connections are checked with `PING`.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How often streams are listed when every topic is consumed (`'*'`).
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// The stream key of `topic`.
pub fn stream_key(prefix: &str, topic: &str) -> String {
    format!("{prefix}{topic}")
}

/// The topic of stream `key` (the key itself when it lacks the prefix).
pub fn topic_of<'a>(prefix: &str, key: &'a str) -> &'a str {
    key.strip_prefix(prefix).unwrap_or(key)
}

/// The JSON payload of a stream entry: its `payload` field, or — for entries written by other
/// producers — a JSON object of all its fields.
pub fn entry_payload(fields: &HashMap<String, Value>) -> String {
    if let Some(v) = fields.get("payload") {
        return value_text(v);
    }
    let mut names: Vec<&String> = fields.keys().collect();
    names.sort();
    let obj: serde_json::Map<String, serde_json::Value> = names
        .into_iter()
        .map(|k| (k.clone(), serde_json::Value::String(value_text(&fields[k]))))
        .collect();
    serde_json::Value::Object(obj).to_string()
}

fn value_text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Nil => String::new(),
        other => format!("{other:?}"),
    }
}

/// Escapes glob characters for `SCAN MATCH`.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

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
    cmd: Link,
    log: Logger,
    consumer: Mutex<Option<Consumer>>,
    closed: AtomicBool,
}

impl StreamsTransport {
    /// A transport for `endpoint`; connects on first use.
    pub fn new(config: RedisConfig, endpoint: Endpoint, log: Logger) -> Self {
        let cmd = Link::new(
            endpoint.clone(),
            LinkSettings {
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

fn closed(topic: &str) -> Error {
    Error::new(
        ErrorCode::Closed,
        format!("cannot emit '{topic}': the messaging service was shut down"),
    )
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
        let read = Link::new(
            self.endpoint.clone(),
            LinkSettings {
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
            return batch.iter().map(|m| Err(closed(&m.topic))).collect();
        }
        let shared = lock(&self.consumer).as_ref().map(|c| c.shared.clone());
        if let Some(shared) = shared {
            // Subscriptions made before this emit get their consumer group first, so a service
            // receives what it emits right after `on(…)`.
            let version = *shared.ctx.subscriptions.watch().borrow();
            if version > shared.ensured.load(Ordering::Acquire) {
                let keys = shared.keys();
                if shared.ensure_groups(&keys, false).await.is_ok() {
                    shared.ensured.fetch_max(version, Ordering::AcqRel);
                }
            }
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
    Ack {
        key: String,
        id: String,
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
    reconnect: super::conn::Backoff,
    display: String,
    cmd: Link,
    read: Link,
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

    async fn reader(self: Arc<Self>) {
        let mut subs = self.ctx.subscriptions.watch();
        let mut failures = 0u32;
        let mut recreate = false;
        loop {
            if self.stopping() {
                return;
            }
            subs.borrow_and_update();
            let keys = self.keys();
            if keys.is_empty() {
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = subs.changed() => {}
                    _ = stop.wait_for(|s| *s) => return,
                    // '*' streams are discovered by the janitor
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
            if let Err(e) = self.ensure_groups(&keys, recreate).await {
                failures += 1;
                self.report(failures, &e.full_message());
                if !self.pause(self.reconnect.delay(failures)).await {
                    return;
                }
                continue;
            }
            recreate = false;
            let (mut conn, gen) = match self.read.get(self.connect_timeout).await {
                Ok(c) => c,
                Err(e) if e.code == ErrorCode::Closed => return,
                Err(e) => {
                    failures += 1;
                    self.report(failures, &e.full_message());
                    if !self.pause(self.reconnect.delay(failures)).await {
                        return;
                    }
                    continue;
                }
            };
            let known = matches!(*lock(&self.read_client), Some((g, _)) if g == gen);
            if !known {
                match ::redis::cmd("CLIENT")
                    .arg("ID")
                    .query_async::<i64>(&mut conn)
                    .await
                {
                    Ok(id) => *lock(&self.read_client) = Some((gen, id)),
                    Err(e) => self.read.failed(gen, &e),
                }
            }
            let mut cmd = ::redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(&self.s.group)
                .arg(&self.s.consumer)
                .arg("COUNT")
                .arg(self.s.read_count)
                .arg("BLOCK")
                .arg(self.s.block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&keys);
            for _ in &keys {
                cmd.arg(">");
            }
            let mut stop = self.stop.clone();
            let res: ::redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
                r = cmd.query_async(&mut conn) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            match res {
                Ok(reply) => {
                    failures = 0;
                    for sk in reply.map(|r| r.keys).unwrap_or_default() {
                        for entry in sk.ids {
                            if !self.deliver(&sk.key, entry, 1).await {
                                return;
                            }
                        }
                    }
                }
                Err(e) => {
                    self.read.failed(gen, &e);
                    let text = e.kind_text();
                    if text.contains("NOGROUP") {
                        // The stream or its group vanished (e.g. Redis restarted without
                        // persistence): create it again from the start of the stream.
                        self.ctx.log.warn(&format!(
                            "consumer group '{}' is missing on Redis at {}; creating it again",
                            self.s.group, self.display
                        ));
                        lock(&self.ready).clear();
                        recreate = true;
                        continue;
                    }
                    failures += 1;
                    self.report(failures, &format!("XREADGROUP failed: {text}"));
                    if !self.pause(self.reconnect.delay(failures)).await {
                        return;
                    }
                }
            }
        }
    }

    /// Ends a blocking read when the subscriptions change, so new topics are read at once.
    async fn unblocker(self: Arc<Self>) {
        let mut subs = self.ctx.subscriptions.watch();
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                r = subs.changed() => if r.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            self.unblock_reader().await;
        }
    }

    /// Ends the reader's blocking `XREADGROUP` so that it reads the current set of streams.
    async fn unblock_reader(&self) {
        let Some((_, id)) = *lock(&self.read_client) else {
            return;
        };
        let mut cmd = ::redis::cmd("CLIENT");
        cmd.arg("UNBLOCK").arg(id);
        let _ = with_retry(
            &self.cmd,
            self.connect_timeout,
            "CLIENT UNBLOCK",
            |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async::<i64>(&mut c).await }
            },
        )
        .await;
    }

    fn report(&self, failures: u32, why: &str) {
        if failures == 1 || failures.is_power_of_two() {
            self.ctx.log.warn(&format!(
                "cannot consume from Redis at {} (attempt {failures}): {why}; retrying",
                self.display
            ));
        }
    }

    async fn settler(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Op>) {
        let mut pending: Vec<Op> = Vec::new();
        let mut failures = 0u32;
        let mut flushing = false;
        loop {
            if pending.is_empty() {
                if flushing {
                    return;
                }
                match rx.recv().await {
                    Some(Op::Flush) => flushing = true,
                    Some(op) => pending.push(op),
                    None => return,
                }
            }
            while pending.len() < 2000 {
                match rx.try_recv() {
                    Ok(Op::Flush) => flushing = true,
                    Ok(op) => pending.push(op),
                    Err(_) => break,
                }
            }
            if pending.is_empty() {
                continue;
            }
            let pipe = self.settle_pipeline(&pending);
            let res = with_retry(&self.cmd, self.connect_timeout, "XACK", |mut c| {
                let pipe = &pipe;
                async move { pipe.query_async::<()>(&mut c).await }
            })
            .await;
            match res {
                Ok(()) => {
                    failures = 0;
                    let mut owned = lock(&self.owned);
                    for op in pending.drain(..) {
                        match op {
                            Op::Ack { key, id } | Op::DeadLetter { key, id, .. } => {
                                owned.remove(&(key, id));
                            }
                            Op::Flush => {}
                        }
                    }
                }
                Err(e) if e.code == ErrorCode::Closed => return,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        self.ctx.log.warn(&format!(
                            "cannot acknowledge {} message(s) on Redis at {} ({}); retrying — unacknowledged messages are redelivered",
                            pending.len(),
                            self.display,
                            e.full_message()
                        ));
                    }
                    if flushing && failures > 3 {
                        return;
                    }
                    tokio::time::sleep(self.reconnect.delay(failures)).await;
                }
            }
        }
    }

    fn settle_pipeline(&self, ops: &[Op]) -> ::redis::Pipeline {
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        let mut acks: HashMap<&str, Vec<&str>> = HashMap::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        for op in ops {
            match op {
                Op::Ack { key, id } => acks.entry(key).or_default().push(id),
                Op::DeadLetter {
                    key,
                    id,
                    topic,
                    payload,
                    attempts,
                    error,
                } => {
                    pipe.cmd("XADD")
                        .arg(&self.s.dead_letter_stream)
                        .arg("*")
                        .arg("topic")
                        .arg(topic)
                        .arg("payload")
                        .arg(payload)
                        .arg("error")
                        .arg(error)
                        .arg("attempts")
                        .arg(*attempts)
                        .arg("stream")
                        .arg(key)
                        .arg("id")
                        .arg(id)
                        .arg("group")
                        .arg(&self.s.group)
                        .arg("consumer")
                        .arg(&self.s.consumer)
                        .arg("time")
                        .arg(now)
                        .ignore();
                    acks.entry(key).or_default().push(id);
                }
                Op::Flush => {}
            }
        }
        for (key, ids) in acks {
            pipe.cmd("XACK")
                .arg(key)
                .arg(&self.s.group)
                .arg(ids)
                .ignore();
        }
        pipe
    }

    async fn janitor(self: Arc<Self>) {
        let period = (self.s.claim_after / 4).max(Duration::from_millis(25));
        let tick = period.min(Duration::from_millis(500));
        let mut last_discovery: Option<tokio::time::Instant> = None;
        let mut last_claim = tokio::time::Instant::now();
        loop {
            if !self.pause(tick).await {
                return;
            }
            if self.ctx.subscriptions.snapshot().all
                && last_discovery.is_none_or(|t| t.elapsed() >= DISCOVERY_INTERVAL)
            {
                last_discovery = Some(tokio::time::Instant::now());
                match self.discover().await {
                    Ok(true) => self.unblock_reader().await,
                    Ok(false) => {}
                    Err(e) => self
                        .ctx
                        .log
                        .debug(&format!("cannot list streams: {}", e.full_message())),
                }
            }
            if last_claim.elapsed() < period {
                continue;
            }
            last_claim = tokio::time::Instant::now();
            if let Err(e) = self.touch().await {
                self.ctx.log.debug(&format!(
                    "cannot refresh pending messages: {}",
                    e.full_message()
                ));
            }
            if let Err(e) = self.reclaim().await {
                self.ctx.log.debug(&format!(
                    "cannot take over pending messages: {}",
                    e.full_message()
                ));
            }
        }
    }

    /// Resets the idle time of entries this consumer still works on, so others do not take them.
    async fn touch(&self) -> Result<()> {
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        for (k, id) in lock(&self.owned).iter() {
            by_key.entry(k.clone()).or_default().push(id.clone());
        }
        if by_key.is_empty() {
            return Ok(());
        }
        let min_idle = (self.s.claim_after / 4).as_millis() as u64;
        let mut pipe = ::redis::pipe();
        for (k, ids) in &by_key {
            for chunk in ids.chunks(500) {
                pipe.cmd("XCLAIM")
                    .arg(k)
                    .arg(&self.s.group)
                    .arg(&self.s.consumer)
                    .arg(min_idle)
                    .arg(chunk)
                    .arg("JUSTID")
                    .ignore();
            }
        }
        with_retry(&self.cmd, self.connect_timeout, "XCLAIM", |mut c| {
            let pipe = &pipe;
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    /// Takes over entries idle for `claim_after` (their consumer crashed or hangs).
    async fn reclaim(self: &Arc<Self>) -> Result<()> {
        let keys: Vec<String> = {
            let ready = lock(&self.ready);
            self.keys()
                .into_iter()
                .filter(|k| ready.contains(k))
                .collect()
        };
        for key in keys {
            let mut cursor = "0-0".to_string();
            loop {
                let room = self.ctx.deliveries.capacity();
                if room == 0 || self.stopping() {
                    return Ok(());
                }
                let count = room.min(self.s.read_count);
                let mut cmd = ::redis::cmd("XAUTOCLAIM");
                cmd.arg(&key)
                    .arg(&self.s.group)
                    .arg(&self.s.consumer)
                    .arg(self.s.claim_after.as_millis() as u64)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(count);
                let reply: StreamAutoClaimReply =
                    with_retry(&self.cmd, self.connect_timeout, "XAUTOCLAIM", |mut c| {
                        let cmd = &cmd;
                        async move { cmd.query_async(&mut c).await }
                    })
                    .await?;
                if !reply.deleted_ids.is_empty() {
                    self.ctx.log.warn(&format!(
                        "{} pending message(s) of stream '{key}' were deleted from the stream (trimmed?) before they were acknowledged",
                        reply.deleted_ids.len()
                    ));
                }
                if !reply.claimed.is_empty() {
                    self.redeliver_claimed(&key, reply.claimed).await?;
                }
                if reply.next_stream_id == "0-0" {
                    break;
                }
                cursor = reply.next_stream_id;
            }
        }
        Ok(())
    }

    async fn redeliver_claimed(self: &Arc<Self>, key: &str, claimed: Vec<StreamId>) -> Result<()> {
        let (Some(first), Some(last)) = (claimed.first(), claimed.last()) else {
            return Ok(());
        };
        let mut cmd = ::redis::cmd("XPENDING");
        cmd.arg(key)
            .arg(&self.s.group)
            .arg(&first.id)
            .arg(&last.id)
            .arg(claimed.len() + lock(&self.owned).len())
            .arg(&self.s.consumer);
        let pending: StreamPendingCountReply =
            with_retry(&self.cmd, self.connect_timeout, "XPENDING", |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        let counts: HashMap<String, usize> = pending
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered))
            .collect();
        self.ctx.log.info(&format!(
            "took over {} pending message(s) of stream '{key}' not acknowledged within {} ms",
            claimed.len(),
            self.s.claim_after.as_millis()
        ));
        let max = self.ctx.policy.max_attempts;
        for entry in claimed {
            let attempt = counts
                .get(&entry.id)
                .map(|&n| u32::try_from(n).unwrap_or(u32::MAX))
                .unwrap_or(2)
                .max(1);
            if attempt > max {
                let topic = topic_of(&self.s.prefix, key).to_string();
                let error = format!(
                    "delivered {} time(s) without being acknowledged (the consumer crashed or did not finish within claimAfter)",
                    attempt - 1
                );
                self.ctx.log.error(&format!(
                    "message on topic '{topic}' {error} and was moved to the dead-letter place {}",
                    self.s.dead_letter_stream
                ));
                lock(&self.owned).insert((key.to_string(), entry.id.clone()));
                let _ = self.ops.send(Op::DeadLetter {
                    key: key.to_string(),
                    id: entry.id.clone(),
                    payload: entry_payload(&entry.map),
                    topic,
                    attempts: attempt - 1,
                    error,
                });
                continue;
            }
            if !self.deliver(key, entry, attempt).await {
                break;
            }
        }
        Ok(())
    }

    /// Lists the streams under the prefix (for `'*'`); `true` when new streams were found. Streams
    /// that appear after the first listing are read from their first entry.
    async fn discover(&self) -> Result<bool> {
        let pattern = format!("{}*", glob_escape(&self.s.prefix));
        let mut cursor: u64 = 0;
        let mut found = Vec::new();
        for _ in 0..1000 {
            let mut cmd = ::redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .arg("TYPE")
                .arg("stream");
            let (next, keys): (u64, Vec<String>) =
                with_retry(&self.cmd, self.connect_timeout, "SCAN", |mut c| {
                    let cmd = &cmd;
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
            found.extend(keys);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        found.retain(|k| *k != self.s.dead_letter_stream && !k.ends_with(":dead-letter"));
        found.sort();
        let first = !self.scanned.swap(true, Ordering::AcqRel);
        let mut discovered = lock(&self.discovered);
        let new: Vec<String> = found
            .iter()
            .filter(|k| !discovered.contains(k))
            .cloned()
            .collect();
        if !first {
            lock(&self.fresh).extend(new.iter().cloned());
        }
        *discovered = found;
        Ok(!new.is_empty())
    }

    /// Removes this consumer from its groups when it has nothing pending (on close).
    async fn forget_consumer(&self) {
        let keys: Vec<String> = lock(&self.ready).iter().cloned().collect();
        for key in keys {
            let mut check = ::redis::cmd("XPENDING");
            check
                .arg(&key)
                .arg(&self.s.group)
                .arg("-")
                .arg("+")
                .arg(1)
                .arg(&self.s.consumer);
            let Ok(p) = with_retry(
                &self.cmd,
                Duration::from_millis(500),
                "XPENDING",
                |mut c| {
                    let cmd = &check;
                    async move { cmd.query_async::<StreamPendingCountReply>(&mut c).await }
                },
            )
            .await
            else {
                return;
            };
            if !p.ids.is_empty() {
                continue;
            }
            let mut del = ::redis::cmd("XGROUP");
            del.arg("DELCONSUMER")
                .arg(&key)
                .arg(&self.s.group)
                .arg(&self.s.consumer);
            let _ = with_retry(&self.cmd, Duration::from_millis(500), "XGROUP", |mut c| {
                let cmd = &del;
                async move { cmd.query_async::<()>(&mut c).await }
            })
            .await;
        }
    }
}

struct StreamSettle {
    shared: Arc<Shared>,
    key: String,
    id: String,
    message: Inbound,
}

impl Settle for StreamSettle {
    fn ack(self: Box<Self>) {
        let _ = self.shared.ops.send(Op::Ack {
            key: self.key,
            id: self.id,
        });
    }

    fn retry(self: Box<Self>, delay: Duration, _error: &HandlerError) {
        tokio::spawn(async move {
            let me = *self;
            let shared = me.shared.clone();
            if !shared.pause(delay).await {
                return; // stays pending; taken over after claimAfter
            }
            let mut cmd = ::redis::cmd("XCLAIM");
            cmd.arg(&me.key)
                .arg(&shared.s.group)
                .arg(&shared.s.consumer)
                .arg(0)
                .arg(&me.id);
            let mut failures = 0u32;
            loop {
                let res: Result<StreamClaimReply> =
                    with_retry(&shared.cmd, shared.connect_timeout, "XCLAIM", |mut c| {
                        let cmd = &cmd;
                        async move { cmd.query_async(&mut c).await }
                    })
                    .await;
                match res {
                    Ok(reply) => {
                        let Some(entry) = reply.ids.into_iter().next() else {
                            lock(&shared.owned).remove(&(me.key.clone(), me.id.clone()));
                            shared.ctx.log.warn(&format!(
                                "message {} on topic '{}' was deleted from its stream before it could be redelivered",
                                me.id, me.message.topic
                            ));
                            return;
                        };
                        let attempt = me.message.attempt.saturating_add(1);
                        shared.deliver(&me.key, entry, attempt).await;
                        return;
                    }
                    Err(e) if e.code == ErrorCode::Closed => return,
                    Err(_) => {
                        failures += 1;
                        if !shared.pause(shared.reconnect.delay(failures)).await {
                            return;
                        }
                    }
                }
            }
        });
    }

    fn dead_letter(self: Box<Self>, error: &HandlerError) {
        let _ = self.shared.ops.send(Op::DeadLetter {
            key: self.key,
            id: self.id,
            topic: self.message.topic,
            payload: self.message.payload,
            attempts: self.message.attempt,
            error: error.message.clone(),
        });
    }
}
