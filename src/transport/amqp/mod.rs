//! `native-amqp-messaging`: AMQP 1.0 (fe2o3-amqp) with broker profiles.
//!
//! ## Behavior
//! - **Connection**: one per service binding (same URL, credentials, TLS settings, container id),
//!   shared by the engines of this process that use it, unless `dedicated`. Every link gets a
//!   session of its own, so a broker ending a session over one bad link (RabbitMQ does on a
//!   refused attach) never takes down the others.
//! - **Emit** (`qos: 1`, default): the message is sent unsettled and the emit resolves when the
//!   broker accepted it, rejects with `REJECTED` when the broker rejected it (`amqp:not-allowed` is
//!   marked unrecoverable in JS). Many transfers are in flight at once. When the link or the
//!   connection is lost, unsettled messages are sent again after the reconnect (at-least-once: the
//!   broker may then hold duplicates). An emit fails with `CONNECTION_FAILED` right away when the
//!   broker was never reached or refuses the credentials, and after `sendTimeout` when an outage
//!   lasts longer. `qos: 0` sends pre-settled: the emit resolves once the transfer is written.
//! - **Consume**: when the service has subscriptions, its queue is provisioned where the profile
//!   can (RabbitMQ: durable queue declared if absent and bound to `amq.topic` with every subscribed
//!   topic, over AMQP 0-9-1 on the same listener; never deleted) and consumed with manual link
//!   credit (`prefetch`, topped up only once the credit is used up, because RabbitMQ 3.x can
//!   oversend otherwise). Subscriptions added later are bound while running.
//! - **Acks**: a delivery is accepted once every handler succeeded. A failure to be retried is held
//!   for the engine's back-off, then settled with the profile's retry outcome (RabbitMQ: `released`,
//!   which 3.x redelivers; others: `modified` with `delivery-failed`); after `maxAttempts` with the
//!   dead-letter outcome (`rejected`: the broker dead-letters or drops it). Attempts are counted per
//!   message id in this process and from the broker's `delivery-count`, whichever is higher.
//! - **Inbound**: the topic comes from the profile's place (`x-routing-key` / `subject` on RabbitMQ,
//!   `to` on Event Mesh); a message without one is handed on with an empty topic, so `'*'` handlers
//!   get it or it is dead-lettered with an error line — never accepted silently.
//! - **Reconnect**: every link re-attaches on its own after a loss, with jittered exponential
//!   back-off (`reconnectDelay` … `maxReconnectDelay`); errors are logged with their code, never
//!   thrown into the host.

pub mod amqp091;
pub mod codec;
pub mod config;
pub mod net;
pub mod profile;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{self, AmqpError, ErrorCondition, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Body, Data, Modified, Outcome, Source, Target};
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{connection::ConnectionHandle, Session};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use self::config::{backoff, AmqpConfig, ConnSettings};
use self::net::{ConnectError, Failure};
use self::profile::{FailOutcome, Profile};
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::message::{Delivery, HandlerError, Inbound, Outbound, Settle};
use crate::policy::RetryPolicy;
use crate::sync::lock;
use crate::transport::{Guarantee, Transport, TransportContext};

pub use self::config::{QueueConfig, Sasl, Tls};

static LINK_SEQ: AtomicU64 = AtomicU64::new(1);

fn link_name(container: &str, what: &str) -> String {
    format!(
        "{container}-{what}-{}-{}",
        std::process::id(),
        LINK_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------------
// Shared connection
// ---------------------------------------------------------------------------------------------

struct ConnState {
    handle: Option<ConnectionHandle<()>>,
    generation: u64,
    ever_connected: bool,
    failures: u32,
    last_failure: Option<Instant>,
}

/// One AMQP connection, shared by the engines bound to the same broker binding.
pub struct SharedConn {
    settings: ConnSettings,
    state: tokio::sync::Mutex<ConnState>,
    log: Logger,
}

fn registry() -> &'static Mutex<HashMap<String, Weak<SharedConn>>> {
    static R: OnceLock<Mutex<HashMap<String, Weak<SharedConn>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

impl SharedConn {
    /// The connection for `settings`: shared unless `dedicated`.
    pub fn get(settings: &ConnSettings, log: &Logger) -> Arc<SharedConn> {
        let make = || {
            Arc::new(SharedConn {
                settings: settings.clone(),
                state: tokio::sync::Mutex::new(ConnState {
                    handle: None,
                    generation: 0,
                    ever_connected: false,
                    failures: 0,
                    last_failure: None,
                }),
                log: log.clone(),
            })
        };
        if settings.dedicated {
            return make();
        }
        let key = settings.share_key();
        let mut reg = lock(registry());
        reg.retain(|_, w| w.strong_count() > 0);
        if let Some(c) = reg.get(&key).and_then(Weak::upgrade) {
            return c;
        }
        let c = make();
        reg.insert(key, Arc::downgrade(&c));
        c
    }

    /// Begins a session, (re)connecting first when there is no usable connection or when the
    /// connection of generation `stale` failed a user.
    async fn session(&self, stale: Option<u64>) -> Result<(SessionHandle<()>, u64), ConnectError> {
        let mut st = self.state.lock().await;
        if let (Some(g), Some(_)) = (stale, &st.handle) {
            if g == st.generation {
                if let Some(mut h) = st.handle.take() {
                    let _ = tokio::time::timeout(Duration::from_millis(200), h.close()).await;
                }
            }
        }
        if st.handle.as_ref().is_some_and(|h| h.is_closed()) {
            st.handle = None;
        }
        if st.handle.is_none() {
            if let Some(t) = st.last_failure {
                // Several links fail at once: one connection attempt per back-off step.
                let wait = backoff(
                    self.settings.reconnect_delay,
                    self.settings.max_reconnect_delay,
                    st.failures,
                );
                if t.elapsed() < wait {
                    tokio::time::sleep(wait - t.elapsed()).await;
                }
            }
            match net::open(&self.settings).await {
                Ok(h) => {
                    if st.failures > 0 || st.ever_connected {
                        self.log
                            .info(&format!("connected to {} again", self.settings.endpoint()));
                    }
                    st.handle = Some(h);
                    st.generation += 1;
                    st.ever_connected = true;
                    st.failures = 0;
                    st.last_failure = None;
                }
                Err(e) => {
                    st.failures = st.failures.saturating_add(1);
                    st.last_failure = Some(Instant::now());
                    let kind = if st.ever_connected {
                        e.kind
                    } else {
                        Failure::Permanent
                    };
                    return Err(ConnectError {
                        error: e.error,
                        kind: if e.kind == Failure::Permanent {
                            Failure::Permanent
                        } else {
                            kind
                        },
                    });
                }
            }
        }
        let generation = st.generation;
        let Some(h) = st.handle.as_mut() else {
            return Err(ConnectError {
                error: Error::new(ErrorCode::Internal, "no connection after connecting"),
                kind: Failure::Transient,
            });
        };
        match tokio::time::timeout(self.settings.connect_timeout, Session::begin(h)).await {
            Ok(Ok(s)) => Ok((s, generation)),
            Ok(Err(e)) => {
                st.handle = None;
                Err(ConnectError {
                    error: Error::with_cause(
                        ErrorCode::ConnectionFailed,
                        format!(
                            "cannot begin an AMQP session on {}",
                            self.settings.endpoint()
                        ),
                        e,
                    ),
                    kind: Failure::Transient,
                })
            }
            Err(_) => {
                st.handle = None;
                Err(ConnectError {
                    error: Error::new(
                        ErrorCode::ConnectionFailed,
                        format!(
                            "beginning an AMQP session on {} timed out",
                            self.settings.endpoint()
                        ),
                    ),
                    kind: Failure::Transient,
                })
            }
        }
    }

    /// Whether the connection of `generation` still runs (unknown while someone reconnects: yes).
    fn alive(&self, generation: u64) -> bool {
        match self.state.try_lock() {
            Ok(st) => {
                st.generation == generation && st.handle.as_ref().is_some_and(|h| !h.is_closed())
            }
            Err(_) => true,
        }
    }

    /// Resolves once the connection of `generation` is gone (checked twice a second: fe2o3-amqp
    /// does not wake a sender waiting for credit when the connection drops).
    async fn lost(&self, generation: u64) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !self.alive(generation) {
                return;
            }
        }
    }

    /// Closes the connection (used when the last user closes).
    async fn shutdown(&self) {
        let mut st = self.state.lock().await;
        if let Some(mut h) = st.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), h.close()).await;
        }
    }
}

async fn end_session(mut s: SessionHandle<()>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), s.end()).await;
}

// ---------------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------------

struct SendItem {
    sendable: fe2o3_amqp::link::delivery::Sendable<Data>,
    topic: String,
    deadline: Instant,
    done: oneshot::Sender<Result<()>>,
}

struct SenderTask {
    conn: Arc<SharedConn>,
    target: Option<String>,
    capabilities: &'static [&'static str],
    settled: bool,
    log: Logger,
    stop: watch::Receiver<bool>,
}

type OutcomeFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    u64,
                    std::result::Result<Outcome, fe2o3_amqp::link::SendError>,
                ),
            > + Send,
    >,
>;

fn describe_target(t: &Option<String>) -> String {
    match t {
        Some(a) => format!("'{a}'"),
        None => "the anonymous relay (null target)".into(),
    }
}

impl SenderTask {
    async fn attach(
        &self,
        stale: Option<u64>,
    ) -> Result<(Sender, SessionHandle<()>, u64), ConnectError> {
        let (mut session, generation) = self.conn.session(stale).await?;
        let mut target = Target::builder();
        if let Some(a) = &self.target {
            target = target.address(a.clone());
        }
        let mut b = Sender::builder()
            .name(link_name(&self.conn.settings.container_id, "send"))
            .target(target.build())
            .sender_settle_mode(if self.settled {
                SenderSettleMode::Settled
            } else {
                SenderSettleMode::Unsettled
            });
        for c in self.capabilities {
            b = b.add_desired_capabilities(Symbol::from(*c));
        }
        match tokio::time::timeout(self.conn.settings.connect_timeout, b.attach(&mut session)).await
        {
            Ok(Ok(s)) => Ok((s, session, generation)),
            Ok(Err(e)) => {
                end_session(session).await;
                let (message, kind) = match &e {
                    fe2o3_amqp::link::SenderAttachError::RemoteClosedWithError(err)
                    | fe2o3_amqp::link::SenderAttachError::SessionStopped(
                        fe2o3_amqp::link::SessionStopReason::RemoteEndedWithError(err),
                    ) => (
                        format!(
                            "the broker refused to publish to {}: {}",
                            describe_target(&self.target),
                            net::describe(err)
                        ),
                        Failure::Permanent,
                    ),
                    other => (
                        format!(
                            "cannot attach a sender to {} ({other})",
                            describe_target(&self.target)
                        ),
                        Failure::Transient,
                    ),
                };
                Err(ConnectError {
                    error: Error::new(
                        if kind == Failure::Permanent {
                            ErrorCode::NoRoute
                        } else {
                            ErrorCode::ConnectionFailed
                        },
                        message,
                    ),
                    kind,
                })
            }
            Err(_) => {
                end_session(session).await;
                Err(ConnectError {
                    error: Error::new(
                        ErrorCode::ConnectionFailed,
                        format!(
                            "attaching a sender to {} timed out",
                            describe_target(&self.target)
                        ),
                    ),
                    kind: Failure::Transient,
                })
            }
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<SendItem>) {
        let mut queue: VecDeque<SendItem> = VecDeque::new();
        let mut pending: HashMap<u64, SendItem> = HashMap::new();
        let mut inflight: FuturesUnordered<OutcomeFuture> = FuturesUnordered::new();
        let mut link: Option<(Sender, SessionHandle<()>, u64)> = None;
        let mut stale: Option<u64> = None;
        let mut failures = 0u32;
        let mut retry_at = Instant::now();
        let mut rx_open = true;
        let mut next_id = 0u64;
        let mut stopping_since: Option<Instant> = None;

        loop {
            if *self.stop.borrow() && stopping_since.is_none() {
                stopping_since = Some(Instant::now());
            }
            // Fail what waited too long.
            let now = Instant::now();
            while queue.front().is_some_and(|i| i.deadline <= now) {
                if let Some(i) = queue.pop_front() {
                    let _ = i.done.send(Err(Error::new(
                        ErrorCode::ConnectionFailed,
                        format!(
                            "cannot emit '{}': the AMQP broker at {} did not accept it in time (sendTimeout)",
                            i.topic,
                            self.conn.settings.endpoint()
                        ),
                    )));
                }
            }
            if let Some(since) = stopping_since {
                if (queue.is_empty() && pending.is_empty())
                    || since.elapsed() > Duration::from_secs(5)
                {
                    for i in queue.drain(..).chain(pending.drain().map(|(_, i)| i)) {
                        let _ = i.done.send(Err(Error::new(
                            ErrorCode::Closed,
                            format!(
                                "cannot emit '{}': the messaging service was shut down",
                                i.topic
                            ),
                        )));
                    }
                    break;
                }
            }
            if !rx_open && queue.is_empty() && pending.is_empty() {
                break;
            }

            if link.is_none() && !queue.is_empty() && Instant::now() >= retry_at {
                match self.attach(stale.take()).await {
                    Ok(l) => {
                        if failures > 0 {
                            self.log.info(&format!(
                                "sender to {} attached again",
                                describe_target(&self.target)
                            ));
                        }
                        failures = 0;
                        link = Some(l);
                    }
                    Err(e) => {
                        failures += 1;
                        retry_at = Instant::now()
                            + backoff(
                                self.conn.settings.reconnect_delay,
                                self.conn.settings.max_reconnect_delay,
                                failures,
                            );
                        if e.kind == Failure::Permanent {
                            let msg = e.error.full_message();
                            for i in queue.drain(..) {
                                let _ = i.done.send(Err(Error::new(
                                    e.error.code,
                                    format!("cannot emit '{}': {msg}", i.topic),
                                )));
                            }
                        } else if failures == 1 || failures.is_power_of_two() {
                            self.log.warn(&format!(
                                "{}: {}; retrying",
                                e.error.code.as_str(),
                                e.error.full_message()
                            ));
                        }
                    }
                }
            }

            if let Some((sender, _, generation)) = link.as_mut() {
                let generation = *generation;
                let mut broken = None;
                while let Some(item) = queue.pop_front() {
                    let deadline = item.deadline;
                    let sent = tokio::select! {
                        r = sender.send_batchable_ref(&item.sendable) => Some(r),
                        _ = self.stop.changed(), if stopping_since.is_none() => None,
                        _ = tokio::time::sleep_until(deadline.into()) => None,
                        _ = self.conn.lost(generation) => {
                            queue.push_front(item);
                            broken = Some("the connection was lost while waiting for link credit".to_string());
                            break;
                        }
                    };
                    match sent {
                        None => {
                            queue.push_front(item);
                            break;
                        }
                        Some(Ok(fut)) => {
                            next_id += 1;
                            let id = next_id;
                            pending.insert(id, item);
                            inflight.push(Box::pin(async move { (id, fut.await) }));
                        }
                        Some(Err(e)) => {
                            queue.push_front(item);
                            broken = Some(e.to_string());
                            break;
                        }
                    }
                    if queue.is_empty() {
                        // Take in what arrived meanwhile before waiting.
                        while let Ok(i) = rx.try_recv() {
                            queue.push_back(i);
                        }
                    }
                }
                if let Some(why) = broken {
                    self.log.warn(&format!(
                        "sender to {} lost ({why}); re-attaching",
                        describe_target(&self.target)
                    ));
                    if let Some((s, sess, _)) = link.take() {
                        drop(s);
                        end_session(sess).await;
                    }
                    stale = Some(generation);
                    retry_at = Instant::now();
                    continue;
                }
            }

            let wake = if link.is_none() && !queue.is_empty() {
                retry_at.min(queue.front().map(|i| i.deadline).unwrap_or(retry_at))
            } else {
                Instant::now() + Duration::from_secs(3600)
            };
            let wake = if stopping_since.is_some() {
                wake.min(Instant::now() + Duration::from_millis(50))
            } else {
                wake
            };
            tokio::select! {
                item = rx.recv(), if rx_open => match item {
                    Some(i) => {
                        queue.push_back(i);
                        while let Ok(i) = rx.try_recv() {
                            queue.push_back(i);
                        }
                    }
                    None => rx_open = false,
                },
                Some((id, res)) = inflight.next(), if !inflight.is_empty() => {
                    let Some(item) = pending.remove(&id) else { continue };
                    match res {
                        Ok(Outcome::Accepted(_)) => { let _ = item.done.send(Ok(())); }
                        Ok(Outcome::Rejected(r)) => {
                            let why = r.error.as_ref().map(net::describe).unwrap_or_else(|| "no reason given".into());
                            let _ = item.done.send(Err(Error::new(
                                ErrorCode::Rejected,
                                format!("the broker rejected the message for '{}' sent to {}: {why}", item.topic, describe_target(&self.target)),
                            )));
                        }
                        Ok(_) => queue.push_back(item), // released / modified: send again
                        Err(e) => {
                            // The link or connection went away before the outcome: send again.
                            queue.push_front(item);
                            if let Some((_, _, g)) = &link {
                                let g = *g;
                                self.log.warn(&format!(
                                    "sender to {} lost ({e}); re-attaching and sending unsettled messages again",
                                    describe_target(&self.target)
                                ));
                                if let Some((s, sess, _)) = link.take() {
                                    drop(s);
                                    end_session(sess).await;
                                }
                                stale = Some(g);
                                retry_at = Instant::now();
                            }
                        }
                    }
                },
                _ = tokio::time::sleep_until(wake.into()) => {},
                _ = self.stop.changed(), if stopping_since.is_none() => {},
                _ = self.conn.lost(link.as_ref().map(|l| l.2).unwrap_or(0)), if link.is_some() && !pending.is_empty() => {
                    // Outcomes will not come any more: send everything unsettled again, in order.
                    self.log.warn(&format!(
                        "sender to {} lost its connection; re-attaching and sending {} unsettled message(s) again",
                        describe_target(&self.target),
                        pending.len()
                    ));
                    let mut ids: Vec<u64> = pending.keys().copied().collect();
                    ids.sort_unstable();
                    for id in ids.into_iter().rev() {
                        if let Some(i) = pending.remove(&id) {
                            queue.push_front(i);
                        }
                    }
                    inflight = FuturesUnordered::new();
                    if let Some((s, sess, g)) = link.take() {
                        drop(s);
                        end_session(sess).await;
                        stale = Some(g);
                    }
                    retry_at = Instant::now();
                },
            }
        }
        if let Some((s, sess, _)) = link.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), s.detach()).await;
            end_session(sess).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------------------------

enum SettleCmd {
    Accept,
    Fail(FailOutcome, String),
}

struct Settlement {
    generation: u64,
    info: DeliveryInfo,
    cmd: SettleCmd,
}

/// Attempts per message id, bounded (oldest forgotten first).
#[derive(Default)]
struct Attempts {
    map: HashMap<String, u32>,
    order: VecDeque<String>,
}

const ATTEMPTS_CAPACITY: usize = 100_000;

impl Attempts {
    fn get(&self, key: &str) -> u32 {
        self.map.get(key).copied().unwrap_or(0)
    }
    fn set(&mut self, key: &str, n: u32) {
        if self.map.insert(key.to_string(), n).is_none() {
            self.order.push_back(key.to_string());
            if self.order.len() > ATTEMPTS_CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
    fn forget(&mut self, key: &str) {
        self.map.remove(key);
    }
}

struct AmqpSettle {
    generation: u64,
    info: DeliveryInfo,
    key: String,
    attempt: u32,
    retry: FailOutcome,
    dead: FailOutcome,
    tx: mpsc::UnboundedSender<Settlement>,
    attempts: Arc<Mutex<Attempts>>,
}

impl Settle for AmqpSettle {
    fn ack(self: Box<Self>) {
        lock(&self.attempts).forget(&self.key);
        let _ = self.tx.send(Settlement {
            generation: self.generation,
            info: self.info,
            cmd: SettleCmd::Accept,
        });
    }

    fn retry(self: Box<Self>, delay: Duration, error: &HandlerError) {
        lock(&self.attempts).set(&self.key, self.attempt);
        let why = error.message.clone();
        tokio::spawn(async move {
            // Hold the message (unsettled) for the back-off, then hand it back to the broker.
            tokio::time::sleep(delay).await;
            let _ = self.tx.send(Settlement {
                generation: self.generation,
                info: self.info,
                cmd: SettleCmd::Fail(self.retry, why),
            });
        });
    }

    fn dead_letter(self: Box<Self>, error: &HandlerError) {
        lock(&self.attempts).forget(&self.key);
        let _ = self.tx.send(Settlement {
            generation: self.generation,
            info: self.info,
            cmd: SettleCmd::Fail(self.dead, error.message.clone()),
        });
    }
}

struct ReceiverTask {
    conn: Arc<SharedConn>,
    source: String,
    link_topic: Option<String>,
    profile: Profile,
    prefetch: u32,
    ctx: TransportContext,
    log: Logger,
    stop: watch::Receiver<bool>,
    attempts: Arc<Mutex<Attempts>>,
    /// Provisioning to run before every attach (RabbitMQ).
    ready: watch::Receiver<u64>,
    /// Asks the provisioner to declare and bind again (the queue may have been deleted).
    reprovision: Arc<tokio::sync::Notify>,
}

fn delivery_key(d: &codec::Decoded, topic: &str) -> String {
    match &d.message_id {
        Some(id) => format!("id:{id}"),
        None => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            topic.hash(&mut h);
            d.payload.hash(&mut h);
            format!("h:{:x}", h.finish())
        }
    }
}

impl ReceiverTask {
    async fn attach(
        &self,
        stale: Option<u64>,
    ) -> Result<(Receiver, SessionHandle<()>, u64), ConnectError> {
        let (mut session, generation) = self.conn.session(stale).await?;
        let b = Receiver::builder()
            .name(link_name(&self.conn.settings.container_id, "recv"))
            .source(Source::builder().address(self.source.clone()).build())
            .credit_mode(CreditMode::Manual)
            .auto_accept(false);
        match tokio::time::timeout(self.conn.settings.connect_timeout, b.attach(&mut session)).await
        {
            Ok(Ok(r)) => Ok((r, session, generation)),
            Ok(Err(e)) => {
                end_session(session).await;
                let (msg, kind) = match &e {
                    fe2o3_amqp::link::ReceiverAttachError::RemoteClosedWithError(err)
                    | fe2o3_amqp::link::ReceiverAttachError::SessionStopped(
                        fe2o3_amqp::link::SessionStopReason::RemoteEndedWithError(err),
                    ) => (
                        format!(
                            "the broker refused to let this service consume from '{}': {}",
                            self.source,
                            net::describe(err)
                        ),
                        Failure::Permanent,
                    ),
                    other => (
                        format!("cannot attach a receiver to '{}' ({other})", self.source),
                        Failure::Transient,
                    ),
                };
                Err(ConnectError {
                    error: Error::new(ErrorCode::ConnectionFailed, msg),
                    kind,
                })
            }
            Err(_) => {
                end_session(session).await;
                Err(ConnectError {
                    error: Error::new(
                        ErrorCode::ConnectionFailed,
                        format!("attaching a receiver to '{}' timed out", self.source),
                    ),
                    kind: Failure::Transient,
                })
            }
        }
    }

    async fn run(mut self) {
        let (settle_tx, mut settle_rx) = mpsc::unbounded_channel::<Settlement>();
        let mut stale: Option<u64> = None;
        let mut failures = 0u32;
        'outer: loop {
            if *self.stop.borrow() {
                return;
            }
            // Wait for provisioning of the queue (a generation > 0).
            while *self.ready.borrow() == 0 {
                tokio::select! {
                    r = self.ready.changed() => if r.is_err() { return },
                    _ = self.stop.changed() => return,
                }
            }
            let (mut receiver, session, generation) = match self.attach(stale.take()).await {
                Ok(l) => l,
                Err(e) => {
                    failures += 1;
                    if e.kind == Failure::Permanent {
                        self.reprovision.notify_one();
                    }
                    if failures == 1 || failures.is_power_of_two() {
                        let level = if e.kind == Failure::Permanent {
                            crate::log::Level::Error
                        } else {
                            crate::log::Level::Warn
                        };
                        self.log.log(
                            level,
                            &format!(
                                "{}: {}; retrying with back-off",
                                e.error.code.as_str(),
                                e.error.full_message()
                            ),
                        );
                    }
                    let wait = backoff(
                        self.conn.settings.reconnect_delay,
                        self.conn.settings.max_reconnect_delay,
                        failures,
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {},
                        _ = self.stop.changed() => return,
                    }
                    continue;
                }
            };
            if failures > 0 {
                self.log
                    .info(&format!("consuming from '{}' again", self.source));
            }
            failures = 0;
            let mut unsettled: usize = 0;
            if let Err(e) = receiver.set_credit(self.prefetch).await {
                self.log.warn(&format!(
                    "cannot grant credit on '{}' ({e}); re-attaching",
                    self.source
                ));
                stale = Some(generation);
                end_session(session).await;
                continue;
            }
            loop {
                // Top up credit only when it is used up (RabbitMQ 3.x can oversend otherwise).
                if receiver.credit() == 0 && unsettled <= self.prefetch as usize / 2 {
                    let grant = (self.prefetch as usize - unsettled).max(1) as u32;
                    if let Err(e) = receiver.set_credit(grant).await {
                        self.log.warn(&format!(
                            "cannot grant credit on '{}' ({e}); re-attaching",
                            self.source
                        ));
                        stale = Some(generation);
                        end_session(session).await;
                        continue 'outer;
                    }
                }
                tokio::select! {
                    biased;
                    _ = self.stop.changed() => {
                        // Unsettled deliveries go back to the queue when the link detaches.
                        let _ = tokio::time::timeout(Duration::from_secs(1), receiver.detach()).await;
                        end_session(session).await;
                        return;
                    }
                    Some(first) = settle_rx.recv() => {
                        let mut batch = vec![first];
                        while let Ok(s) = settle_rx.try_recv() {
                            batch.push(s);
                        }
                        let mut accepts = Vec::new();
                        let mut broken = None;
                        for s in batch {
                            if s.generation != generation {
                                continue; // that link is gone; the broker redelivers it
                            }
                            unsettled = unsettled.saturating_sub(1);
                            let r = match s.cmd {
                                SettleCmd::Accept => {
                                    accepts.push(s.info);
                                    Ok(())
                                }
                                SettleCmd::Fail(FailOutcome::Released, _) => receiver.release(s.info).await,
                                SettleCmd::Fail(FailOutcome::Modified, _) => receiver.modify(s.info, Modified {
                                    delivery_failed: Some(true),
                                    undeliverable_here: None,
                                    message_annotations: None,
                                }).await,
                                SettleCmd::Fail(FailOutcome::Rejected, why) => receiver.reject(s.info, definitions::Error::new(
                                    ErrorCondition::AmqpError(AmqpError::InternalError),
                                    Some(truncate(&why, 512)),
                                    None,
                                )).await,
                            };
                            if let Err(e) = r {
                                broken = Some(e.to_string());
                            }
                        }
                        if !accepts.is_empty() {
                            if let Err(e) = receiver.accept_all(accepts).await {
                                broken = Some(e.to_string());
                            }
                        }
                        if let Some(why) = broken {
                            self.log.warn(&format!("settling on '{}' failed ({why}); re-attaching (the broker redelivers what was not settled)", self.source));
                            stale = Some(generation);
                            end_session(session).await;
                            continue 'outer;
                        }
                    }
                    _ = self.conn.lost(generation) => {
                        self.log.warn(&format!(
                            "CONNECTION_FAILED: receiver on '{}' lost its connection; re-attaching (unsettled messages are redelivered by the broker)",
                            self.source
                        ));
                        stale = Some(generation);
                        drop(receiver);
                        end_session(session).await;
                        continue 'outer;
                    }
                    r = receiver.recv::<Body<Value>>() => match r {
                        Ok(d) => {
                            unsettled += 1;
                            let (info, message) = d.into_parts();
                            let decoded = codec::decode(&message, &self.profile, self.link_topic.as_deref());
                            drop(message);
                            let topic = decoded.topic.clone().unwrap_or_default();
                            if topic.is_empty() {
                                self.log.warn(&format!(
                                    "a message from '{}' carries no topic (profile {}); handing it to '*' handlers, else it is dead-lettered",
                                    self.source, self.profile.name()
                                ));
                            }
                            let key = delivery_key(&decoded, &topic);
                            let seen = lock(&self.attempts).get(&key);
                            let attempt = (seen + 1).max(decoded.delivery_count.saturating_add(1));
                            let settle = AmqpSettle {
                                generation,
                                info,
                                key,
                                attempt,
                                retry: self.profile.retry_outcome(),
                                dead: self.profile.dead_letter_outcome(),
                                tx: settle_tx.clone(),
                                attempts: self.attempts.clone(),
                            };
                            let delivery = Delivery {
                                message: Inbound { topic, payload: decoded.payload, attempt },
                                settle: Box::new(settle),
                            };
                            if self.ctx.deliveries.send(delivery).await.is_err() {
                                // The engine stopped: detaching gives the message back.
                                let _ = tokio::time::timeout(Duration::from_secs(1), receiver.detach()).await;
                                end_session(session).await;
                                return;
                            }
                        }
                        Err(e) => {
                            self.log.warn(&format!(
                                "CONNECTION_FAILED: receiver on '{}' lost ({e}); re-attaching (unsettled messages are redelivered by the broker)",
                                self.source
                            ));
                            stale = Some(generation);
                            drop(receiver);
                            end_session(session).await;
                            continue 'outer;
                        }
                    },
                }
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

// ---------------------------------------------------------------------------------------------
// The transport
// ---------------------------------------------------------------------------------------------

/// How long an emit waits for bindings of subscriptions made just before it.
const BINDING_WAIT: Duration = Duration::from_secs(5);

/// The AMQP 1.0 transport.
pub struct AmqpTransport {
    cfg: AmqpConfig,
    log: Logger,
    conn: Arc<SharedConn>,
    senders: Mutex<HashMap<Option<String>, mpsc::UnboundedSender<SendItem>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    closed: AtomicBool,
    started: AtomicBool,
    /// The subscriptions (set at start).
    subs: OnceLock<Arc<crate::subscriptions::Subscriptions>>,
    /// The subscription version whose bindings exist (emits wait for it: see `publish`).
    applied: Arc<watch::Sender<u64>>,
}

impl AmqpTransport {
    /// Validates the configuration; connects lazily (first emit or first subscription).
    pub fn new(cfg: AmqpConfig, log: Logger) -> Result<Self> {
        cfg.validate()?;
        let conn = SharedConn::get(&cfg.conn, &log);
        Ok(AmqpTransport {
            cfg,
            log,
            conn,
            senders: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
            closed: AtomicBool::new(false),
            started: AtomicBool::new(false),
            subs: OnceLock::new(),
            applied: Arc::new(watch::channel(0).0),
        })
    }

    fn sender_for(&self, target: Option<String>) -> mpsc::UnboundedSender<SendItem> {
        let mut senders = lock(&self.senders);
        if let Some(tx) = senders.get(&target) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = SenderTask {
            conn: self.conn.clone(),
            target: target.clone(),
            capabilities: self.cfg.profile.sender_capabilities(),
            settled: self.cfg.qos == 0,
            log: self.log.clone(),
            stop: self.stop.subscribe(),
        };
        lock(&self.tasks).push(tokio::spawn(task.run(rx)));
        senders.insert(target, tx.clone());
        tx
    }
}

/// Provisions the queue and its bindings, then keeps them in step with the subscriptions.
struct Provisioner {
    cfg: AmqpConfig,
    ctx: TransportContext,
    log: Logger,
    stop: watch::Receiver<bool>,
    ready: watch::Sender<u64>,
    receivers: Vec<JoinHandle<()>>,
    conn: Arc<SharedConn>,
    attempts: Arc<Mutex<Attempts>>,
    applied: Arc<watch::Sender<u64>>,
    reprovision: Arc<tokio::sync::Notify>,
}

impl Provisioner {
    fn topics(&self) -> (Vec<String>, bool) {
        let set = self.ctx.subscriptions.snapshot();
        let mut t: Vec<String> = set.topics.into_iter().collect();
        t.sort();
        (t, set.all)
    }

    fn spawn_receiver(&mut self, source: String, link_topic: Option<String>) {
        let task = ReceiverTask {
            conn: self.conn.clone(),
            source,
            link_topic,
            profile: self.cfg.profile.clone(),
            prefetch: self.cfg.prefetch,
            ctx: self.ctx.clone(),
            log: self.log.clone(),
            stop: self.stop.clone(),
            attempts: self.attempts.clone(),
            ready: self.ready.subscribe(),
            reprovision: self.reprovision.clone(),
        };
        self.receivers.push(tokio::spawn(task.run()));
    }

    async fn run(mut self) {
        let mut subs = self.ctx.subscriptions.watch();
        let mut bound: HashSet<String> = HashSet::new();
        let mut sources: HashSet<String> = HashSet::new();
        let mut failures = 0u32;
        let exchange = match &self.cfg.profile {
            Profile::RabbitMq { exchange, .. } => exchange.clone(),
            _ => String::new(),
        };
        loop {
            let version = *subs.borrow_and_update();
            let (topics, all) = self.topics();
            if !topics.is_empty() || all {
                let mut keys: Vec<String> = topics
                    .iter()
                    .filter(|t| !bound.contains(*t))
                    .cloned()
                    .collect();
                if all && !bound.contains("#") && self.cfg.profile.provisions() {
                    keys.push("#".into());
                }
                let need = self.cfg.profile.provisions()
                    && self.cfg.queue.provision
                    && (!keys.is_empty() || *self.ready.borrow() == 0);
                let ok = if need {
                    match amqp091::declare_and_bind(
                        &self.cfg.conn,
                        &self.cfg.queue,
                        &exchange,
                        &keys,
                    )
                    .await
                    {
                        Ok(()) => {
                            self.log.info(&format!(
                                "queue '{}' is bound to {} with {}",
                                self.cfg.queue.name,
                                exchange,
                                keys.iter()
                                    .map(|k| format!("'{k}'"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                            bound.extend(keys);
                            failures = 0;
                            true
                        }
                        Err(e) => {
                            failures += 1;
                            if failures == 1 || failures.is_power_of_two() {
                                self.log.error(&format!(
                                    "{}: cannot create or bind queue '{}': {}; retrying with back-off",
                                    e.error.code.as_str(),
                                    self.cfg.queue.name,
                                    e.error.full_message()
                                ));
                            }
                            false
                        }
                    }
                } else {
                    true
                };
                if ok {
                    let wanted = self.cfg.profile.sources(&self.cfg.queue.name, &topics);
                    for (source, link_topic) in wanted {
                        if sources.insert(source.clone()) {
                            self.spawn_receiver(source, link_topic);
                        }
                    }
                    self.ready.send_modify(|g| *g += 1);
                    self.applied.send_replace(version);
                } else {
                    let wait = backoff(
                        self.cfg.conn.reconnect_delay,
                        self.cfg.conn.max_reconnect_delay,
                        failures,
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = self.stop.changed() => break,
                    }
                }
            }
            if topics.is_empty() && !all {
                self.applied.send_replace(version);
            }
            tokio::select! {
                r = subs.changed() => if r.is_err() { break },
                _ = self.reprovision.notified() => {
                    // A receiver was refused: declare the queue and its bindings again.
                    bound.clear();
                    tokio::select! {
                        _ = tokio::time::sleep(self.cfg.conn.reconnect_delay) => {},
                        _ = self.stop.changed() => break,
                    }
                }
                _ = self.stop.changed() => break,
            }
        }
        for r in self.receivers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(3), r).await;
        }
    }
}

#[async_trait]
impl Transport for AmqpTransport {
    fn guarantee(&self, policy: &RetryPolicy) -> Guarantee {
        let p = &self.cfg.profile;
        let dead = p.dead_letter_place(&self.cfg.queue.name);
        let (delivery, emit) = if self.cfg.qos == 0 {
            ("at-most-once", "emits are sent pre-settled (qos 0)")
        } else {
            (
                "at-least-once",
                "emits resolve once the broker accepted them",
            )
        };
        Guarantee {
            delivery,
            dead_letter: dead.clone(),
            summary: format!(
                "{delivery} via AMQP 1.0 at {} (profile {}, queue '{}'): {emit}; a failing handler is retried up to {} attempt(s) ({} to the broker), then the message goes to {dead}",
                self.cfg.conn.endpoint(),
                p.name(),
                self.cfg.queue.name,
                policy.max_attempts,
                p.retry_outcome().as_str(),
            ),
        }
    }

    async fn start(&self, ctx: TransportContext) -> Result<()> {
        if self.started.swap(true, Ordering::AcqRel) {
            return Err(Error::new(
                ErrorCode::Internal,
                "AMQP transport started twice",
            ));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorCode::Closed,
                "the messaging engine is closed",
            ));
        }
        let prov = Provisioner {
            cfg: self.cfg.clone(),
            log: self.log.clone(),
            stop: self.stop.subscribe(),
            ready: watch::channel(0).0,
            receivers: Vec::new(),
            conn: self.conn.clone(),
            attempts: Arc::new(Mutex::new(Attempts::default())),
            applied: self.applied.clone(),
            reprovision: Arc::new(tokio::sync::Notify::new()),
            ctx,
        };
        let _ = self.subs.set(prov.ctx.subscriptions.clone());
        lock(&self.tasks).push(tokio::spawn(prov.run()));
        Ok(())
    }

    async fn publish(&self, batch: Vec<Outbound>) -> Vec<Result<()>> {
        // Read your own subscriptions: a handler added just before this emit is bound first, so
        // `on(t)` followed by `emit(t)` in one service never loses the message to a missing binding.
        if let Some(subs) = self.subs.get() {
            let want = *subs.watch().borrow();
            if *self.applied.borrow() < want {
                let mut rx = self.applied.subscribe();
                let _ = tokio::time::timeout(BINDING_WAIT, rx.wait_for(|v| *v >= want)).await;
            }
        }
        let mut waits = Vec::with_capacity(batch.len());
        let deadline = Instant::now() + self.cfg.send_timeout;
        for m in batch {
            if self.closed.load(Ordering::Acquire) {
                waits.push(Err(Error::new(
                    ErrorCode::Closed,
                    format!(
                        "cannot emit '{}': the messaging service was shut down",
                        m.topic
                    ),
                )));
                continue;
            }
            let route = match self.cfg.profile.route(&m.topic) {
                Ok(r) => r,
                Err(e) => {
                    waits.push(Err(e));
                    continue;
                }
            };
            let message = codec::outbound(
                &route,
                &m.payload,
                codec::new_message_id(),
                self.cfg.durable,
            );
            let sendable = fe2o3_amqp::link::delivery::Sendable::builder()
                .message(message)
                .settled(self.cfg.qos == 0)
                .build();
            let (tx, rx) = oneshot::channel();
            let item = SendItem {
                sendable,
                topic: m.topic.clone(),
                deadline,
                done: tx,
            };
            if self.sender_for(route.link).send(item).is_err() {
                waits.push(Err(Error::new(
                    ErrorCode::Closed,
                    format!(
                        "cannot emit '{}': the messaging service was shut down",
                        m.topic
                    ),
                )));
                continue;
            }
            waits.push(Ok((m.topic, rx)));
        }
        let mut out = Vec::with_capacity(waits.len());
        for w in waits {
            out.push(match w {
                Err(e) => Err(e),
                Ok((topic, rx)) => rx.await.unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorCode::Closed,
                        format!("cannot emit '{topic}': the messaging service was shut down"),
                    ))
                }),
            });
        }
        out
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        lock(&self.senders).clear();
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.tasks));
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(8), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        // Three owners left (this transport, the registry holds a Weak): close if we are the last.
        if Arc::strong_count(&self.conn) == 1 {
            self.conn.shutdown().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
