//! One MQTT connection: a rumqttc `EventLoop` polled without pause in its own task, plus the
//! bookkeeping rumqttc leaves to its user.
//!
//! - **PUBACK per publish.** rumqttc reports `Outgoing::Publish(pkid)` when a request taken from its
//!   channel is written. Requests enter the channel in the order of a FIFO of waiters (both are
//!   updated under one lock, with `try_send`, so they cannot drift apart); the loop pops a waiter for
//!   every publish that is not a resend and resolves it on the matching PUBACK (QoS 1) or at once
//!   (QoS 0).
//! - **Reconnects.** After a connection error the loop keeps everything rumqttc would retransmit
//!   (also when the broker lost the session, where rumqttc would drop it), waits with exponential
//!   back-off and jitter, and reconnects. Subscriptions are restored by the consumer on every
//!   `CONNACK`.
//! - **Manual acks, fast.** rumqttc takes one request from its channel per turn of its loop while
//!   it reads up to ten packets per turn, so acks sent through the channel fall behind a busy
//!   subscription (and brokers such as Mosquitto 2.0 then keep sending). Acks are therefore queued
//!   here and written by the loop task straight to the connection after every event, all in one
//!   flush; only one ack at a time goes through rumqttc's channel, to wake an idle loop.
//! - **Stale acks.** Every connection has an *epoch*, raised under a lock on each connection loss;
//!   an ack is written only if its delivery came from the current epoch. A wake-up ack queued just
//!   before the loss is removed by a second `clean()` after the epoch was raised, so an ack can
//!   never acknowledge a different message that reuses a packet id.
//! - **No Nagle stall at the end of a burst.** While publishes await their PUBACK and nothing else is
//!   to be written, a PINGREQ follows each segment of the broker, so a broker with Nagle on does not
//!   hold the last PUBACKs for our delayed TCP ACK (see `nudge.rs`).
//! - **Never blocks the loop on the caller**: requests are queued with `try_send` into a channel
//!   sized for the publish window plus the acks that can be outstanding.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Publish, QoS, SubscribeFilter, SubscribeReasonCode};
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

mod eventloop;
mod nudge;

pub use self::eventloop::describe;
use self::eventloop::{mqtt_options, run};
use super::address::Endpoint;
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::message::Delivery;
use crate::sync::lock;

/// Everything needed to open one connection.
#[derive(Clone)]
pub struct ConnSettings {
    /// `publisher` or `consumer`, for log lines.
    pub role: &'static str,
    /// The broker.
    pub endpoint: Endpoint,
    /// MQTT client id.
    pub client_id: String,
    /// `false` for a persistent session.
    pub clean_session: bool,
    /// Acknowledge inbound QoS 1 messages only when told to.
    pub manual_acks: bool,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// User name for CONNECT.
    pub username: Option<String>,
    /// Password for CONNECT.
    pub password: Option<String>,
    /// TLS client configuration for `mqtts://` and `wss://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Bearer token sent as `Authorization` header on the WebSocket upgrade.
    pub token: Option<String>,
    /// OAuth2 bearer tokens for the WebSocket upgrade, fetched on every (re)connect.
    pub bearer: Option<Arc<super::oauth::Bearer>>,
    /// Publishes queued or unacknowledged at once.
    pub window: usize,
    /// Acks and other requests that may be queued besides publishes.
    pub extra_requests: usize,
    /// First reconnect delay.
    pub reconnect_delay: Duration,
    /// Upper bound of the reconnect delay.
    pub max_reconnect_delay: Duration,
}

/// What the consumer side is told by the loop.
pub trait Events: Send + Sync + 'static {
    /// A CONNACK was received (`epoch` of the new connection).
    fn connected(&self, epoch: u64, session_present: bool);
    /// An inbound PUBLISH of connection `epoch`: the delivery to hand to the engine, if any.
    fn publish(&self, publish: Publish, epoch: u64) -> Option<Delivery>;
    /// Where deliveries go.
    fn deliveries(&self) -> &mpsc::Sender<Delivery>;
    /// The broker answered a SUBSCRIBE.
    fn subscribed(&self, ticket: SubTicket, codes: Vec<SubscribeReasonCode>);
}

/// A SUBSCRIBE in flight: its filters and the subscription version it makes effective.
#[derive(Debug, Clone)]
pub struct SubTicket {
    /// The filters, in the order sent.
    pub filters: Vec<String>,
    /// The subscription-set version they belong to.
    pub version: u64,
}

/// Acks waiting to be written by the loop task.
#[derive(Default)]
struct AckQueue {
    /// (packet id, epoch of the delivery)
    queued: Vec<(u16, u64)>,
    /// An ack is in rumqttc's channel to wake the loop.
    wake: bool,
}

struct Waiter {
    reply: Option<oneshot::Sender<Result<()>>>,
    permit: Option<OwnedSemaphorePermit>,
    outstanding: Arc<AtomicUsize>,
}

impl Waiter {
    fn finish(mut self, r: Result<()>) {
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(r);
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The part of a connection that callers use; shared with the loop task.
pub struct Conn {
    client: AsyncClient,
    /// The settings it was opened with.
    pub settings: ConnSettings,
    log: Logger,
    fifo: Mutex<VecDeque<Waiter>>,
    subs: Mutex<VecDeque<SubTicket>>,
    window: Arc<Semaphore>,
    outstanding: Arc<AtomicUsize>,
    epoch: Mutex<u64>,
    acks: Mutex<AckQueue>,
    acks_queued: Notify,
    connected: watch::Sender<Option<u64>>,
    last_error: Mutex<Option<String>>,
    /// `Some(reason)` while the broker's answer to the latest CONNECT was a refusal (bad
    /// credentials, client id rejected, …): emits waiting for this connection fail at once.
    refused: watch::Sender<Option<String>>,
    closing: AtomicBool,
    stop: Notify,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// A publish that was queued; resolves on PUBACK (QoS 1) or once written (QoS 0).
pub type PublishReply = oneshot::Receiver<Result<()>>;

impl Conn {
    /// Opens the connection in the background (the first connect happens in the loop task).
    pub fn open(
        settings: ConnSettings,
        log: Logger,
        events: Option<Arc<dyn Events>>,
    ) -> Result<Arc<Conn>> {
        let options = mqtt_options(&settings)?;
        let cap = settings.window + settings.extra_requests + 16;
        let (client, mut eventloop) = AsyncClient::new(options, cap);
        // Without TCP_NODELAY (rumqttc's default is off) Nagle's algorithm holds small packets
        // (PUBLISH, PUBACK) back until the peer's delayed ACK: ~40 ms per round trip.
        let mut net = eventloop.network_options();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let conn = Arc::new(Conn {
            client,
            log,
            fifo: Mutex::new(VecDeque::new()),
            subs: Mutex::new(VecDeque::new()),
            window: Arc::new(Semaphore::new(settings.window.max(1))),
            outstanding: Arc::new(AtomicUsize::new(0)),
            epoch: Mutex::new(0),
            acks: Mutex::new(AckQueue::default()),
            acks_queued: Notify::new(),
            connected: watch::channel(None).0,
            last_error: Mutex::new(None),
            refused: watch::channel(None).0,
            closing: AtomicBool::new(false),
            stop: Notify::new(),
            task: Mutex::new(None),
            settings,
        });
        let task = tokio::spawn(run(eventloop, conn.clone(), events));
        *lock(&conn.task) = Some(task);
        Ok(conn)
    }

    /// A description for log lines: role, broker (without credentials) and client id.
    pub fn label(&self) -> String {
        format!(
            "{} {} as '{}'",
            self.settings.role, self.settings.endpoint, self.settings.client_id
        )
    }

    /// Watches the connection: `Some(epoch)` while connected.
    pub fn watch_connected(&self) -> watch::Receiver<Option<u64>> {
        self.connected.subscribe()
    }

    /// The last connection error, if the connection is down.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// Publishes that are queued or awaiting their PUBACK.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Queues a publish; waits (until `deadline`) while the publish window is full.
    pub async fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        deadline: Instant,
    ) -> Result<PublishReply> {
        self.publish_retain(topic, payload, qos, false, deadline)
            .await
    }

    /// [`Conn::publish`] with the RETAIN flag as given (`true`: the broker keeps the message for
    /// later subscribers; an empty retained payload removes the kept one).
    pub async fn publish_retain(
        &self,
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
        deadline: Instant,
    ) -> Result<PublishReply> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Error::closed(&topic));
        }
        let permit =
            match tokio::time::timeout_at(deadline, self.window.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Err(Error::closed(&topic)),
                Err(_) => return Err(self.timeout_error(&topic)),
            };
        let (tx, rx) = oneshot::channel();
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        let waiter = Waiter {
            reply: Some(tx),
            permit: Some(permit),
            outstanding: self.outstanding.clone(),
        };
        let mut fifo = lock(&self.fifo);
        fifo.push_back(waiter);
        if let Err(e) = self.client.try_publish(topic.clone(), qos, retain, payload) {
            fifo.pop_back();
            return Err(match e {
                rumqttc::ClientError::TryRequest(_) | rumqttc::ClientError::Request(_)
                    if self.closing.load(Ordering::Acquire) =>
                {
                    Error::closed(&topic)
                }
                _ => Error::new(
                    ErrorCode::ConnectionFailed,
                    format!(
                        "cannot emit '{topic}': the request queue of {} is full",
                        self.label()
                    ),
                ),
            });
        }
        Ok(rx)
    }

    /// Waits for a queued publish's confirmation until `deadline`. A broker that refuses our
    /// connection fails the emit at once instead. (As after a timeout, the queued publish may still
    /// go out once the broker accepts us: delivery stays at least once.)
    pub async fn confirmation(
        &self,
        topic: &str,
        rx: PublishReply,
        deadline: Instant,
    ) -> Result<()> {
        tokio::select! {
            r = tokio::time::timeout_at(deadline, rx) => match r {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(Error::closed(topic)),
                Err(_) => Err(self.timeout_error(topic)),
            },
            reason = self.refusal() => Err(self.refused_error(topic, &reason)),
        }
    }

    /// Resolves with the broker's reason once it refuses a connection attempt (at once when the
    /// latest attempt was refused); pending while connecting or connected.
    pub async fn refusal(&self) -> String {
        let mut rx = self.refused.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone(),
            Err(_) => None,
        };
        match reason {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }

    /// The error for an emit while the broker refuses our connections.
    pub fn refused_error(&self, topic: &str, reason: &str) -> Error {
        Error::new(
            ErrorCode::ConnectionFailed,
            format!(
                "cannot emit '{topic}': {reason} ({}); check the user name, password or token and the client id",
                self.settings.endpoint
            ),
        )
    }

    /// The error for a publish that got no answer in time.
    pub fn timeout_error(&self, topic: &str) -> Error {
        let state = match self.last_error() {
            Some(e) if self.connected.borrow().is_none() => format!(" (not connected: {e})"),
            _ => String::new(),
        };
        Error::new(
            ErrorCode::ConnectionFailed,
            format!(
                "emit '{topic}' was not confirmed by broker {} in time{state}",
                self.settings.endpoint
            ),
        )
    }

    /// Queues a SUBSCRIBE for `filters`; the loop reports the SUBACK with `version`.
    pub async fn subscribe(&self, filters: Vec<String>, qos: QoS, version: u64) {
        loop {
            {
                let mut subs = lock(&self.subs);
                let request: Vec<SubscribeFilter> = filters
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), qos))
                    .collect();
                subs.push_back(SubTicket {
                    filters: filters.clone(),
                    version,
                });
                match self.client.try_subscribe_many(request) {
                    Ok(()) => return,
                    Err(_) => {
                        subs.pop_back();
                    }
                }
            }
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Queues an UNSUBSCRIBE.
    pub async fn unsubscribe(&self, filter: String) {
        let _ = self.client.unsubscribe(filter).await;
    }

    /// Acknowledges an inbound QoS 1 message received on connection `epoch`; does nothing when the
    /// connection was lost since (the broker redelivers it).
    pub fn ack(&self, publish: &Publish, epoch: u64) {
        if publish.qos == QoS::AtMostOnce {
            return;
        }
        let mut q = lock(&self.acks);
        if !q.wake {
            let current = lock(&self.epoch);
            if *current != epoch {
                return;
            }
            if self.client.try_ack(publish).is_ok() {
                q.wake = true;
                return;
            }
        }
        q.queued.push((publish.pkid, epoch));
        if q.queued.len() == 1 {
            self.acks_queued.notify_one();
        }
    }

    /// Sends DISCONNECT (after what is queued) and stops the loop; waits at most `wait`.
    pub async fn close(&self, wait: Duration) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.window.close();
        if self.connected.borrow().is_some() {
            let _ = self.client.try_disconnect();
        }
        self.stop.notify_one();
        let task = lock(&self.task).take();
        if let Some(mut task) = task {
            if tokio::time::timeout(wait, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    fn set_last_error(&self, e: Option<String>) {
        *lock(&self.last_error) = e;
    }
}

impl Conn {
    /// Stops the loop task at once (when the transport is dropped without `close`).
    pub fn abort(&self) {
        self.closing.store(true, Ordering::Release);
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }
}

/// The filters of `set` that are not in `current`, and those of `current` no longer in `set`.
pub fn diff(current: &BTreeSet<String>, set: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    let add = set.difference(current).cloned().collect();
    let remove = current.difference(set).cloned().collect();
    (add, remove)
}
