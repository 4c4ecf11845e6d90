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
//! - **Never blocks the loop on the caller**: requests are queued with `try_send` into a channel
//!   sized for the publish window plus the acks that can be outstanding.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, PubAck, Publish, QoS, Request, SubscribeFilter, SubscribeReasonCode, TlsConfiguration,
    Transport as MqttWire,
};
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::address::{Endpoint, Scheme};
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
        if self.closing.load(Ordering::Acquire) {
            return Err(closed(&topic));
        }
        let permit =
            match tokio::time::timeout_at(deadline, self.window.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Err(closed(&topic)),
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
        if let Err(e) = self.client.try_publish(topic.clone(), qos, false, payload) {
            fifo.pop_back();
            return Err(match e {
                rumqttc::ClientError::TryRequest(_) | rumqttc::ClientError::Request(_)
                    if self.closing.load(Ordering::Acquire) =>
                {
                    closed(&topic)
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

fn closed(topic: &str) -> Error {
    Error::new(
        ErrorCode::Closed,
        format!("cannot emit '{topic}': the messaging service was shut down"),
    )
}

fn mqtt_options(s: &ConnSettings) -> Result<MqttOptions> {
    let e = &s.endpoint;
    let mut o = match e.scheme {
        Scheme::Tcp | Scheme::Tls => MqttOptions::new(&s.client_id, &e.host, e.port),
        Scheme::Ws | Scheme::Wss => MqttOptions::new(&s.client_id, e.websocket_url(), e.port),
    };
    let tls = || {
        s.tls
            .clone()
            .map(TlsConfiguration::Rustls)
            .ok_or_else(|| Error::new(ErrorCode::Internal, "TLS configuration missing"))
    };
    o.set_transport(match e.scheme {
        Scheme::Tcp => MqttWire::Tcp,
        Scheme::Tls => MqttWire::Tls(tls()?),
        Scheme::Ws => MqttWire::Ws,
        Scheme::Wss => MqttWire::Wss(tls()?),
    });
    if e.scheme.is_websocket() {
        if let Some(token) = &s.token {
            let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::config("token contains characters not allowed in a header"))?;
            o.set_request_modifier(move |mut req: http::Request<()>| {
                req.headers_mut()
                    .insert(http::header::AUTHORIZATION, value.clone());
                async move { req }
            });
        }
    }
    o.set_keep_alive(s.keep_alive);
    o.set_clean_session(s.clean_session);
    o.set_manual_acks(s.manual_acks);
    o.set_inflight(u16::try_from(s.window.clamp(1, 65_000)).unwrap_or(65_000));
    // The MQTT maximum; the broker enforces its own limit.
    o.set_max_packet_size(268_435_455, 268_435_455);
    if let Some(user) = &s.username {
        o.set_credentials(user.clone(), s.password.clone().unwrap_or_default());
    }
    Ok(o)
}

/// A readable reason for a connection error (never contains credentials).
pub fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!(
            "the broker refused the connection: {}",
            match code {
                ConnectReturnCode::BadUserNamePassword => "bad user name or password",
                ConnectReturnCode::NotAuthorized => "not authorized",
                ConnectReturnCode::BadClientId => "client id rejected",
                ConnectReturnCode::ServiceUnavailable => "service unavailable",
                ConnectReturnCode::RefusedProtocolVersion => "MQTT 3.1.1 not supported",
                ConnectReturnCode::Success => "unknown reason",
            }
        ),
        ConnectionError::NetworkTimeout => "connect timed out".into(),
        other => other.to_string(),
    }
}

fn backoff(s: &ConnSettings, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = s
        .reconnect_delay
        .saturating_mul(1u32 << exp)
        .min(s.max_reconnect_delay);
    let ms = base.as_millis() as u64;
    let spread = ms / 5;
    Duration::from_millis(ms - spread + fastrand::u64(0..=spread * 2))
}

async fn run(mut el: EventLoop, conn: Arc<Conn>, events: Option<Arc<dyn Events>>) {
    let mut inflight: HashMap<u16, Waiter> = HashMap::new();
    let mut collided: Option<(u16, Waiter)> = None;
    let mut sub_wait: HashMap<u16, SubTicket> = HashMap::new();
    let mut held: VecDeque<Request> = VecDeque::new();
    let mut epoch = 0u64;
    let mut failures = 0u32;
    let mut ever_connected = false;
    let log = conn.log.clone();
    loop {
        let polled = el.poll().await;
        if polled.is_ok() {
            write_acks(&mut el, &conn, epoch, &polled).await;
        }
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                // Put back what was queued or unacknowledged when the connection was lost, also
                // when the broker has no session for us (rumqttc would drop it then).
                while let Some(r) = held.pop_back() {
                    el.pending.push_front(r);
                }
                conn.set_last_error(None);
                if ever_connected {
                    log.info(&format!("reconnected {}", conn.label()));
                    if !ack.session_present && !conn.settings.clean_session {
                        log.warn(&format!(
                            "the broker kept no session for {}: messages published while it was disconnected are lost for it",
                            conn.label()
                        ));
                    }
                } else {
                    log.info(&format!("connected {}", conn.label()));
                }
                ever_connected = true;
                failures = 0;
                if conn.closing.load(Ordering::Acquire) {
                    let _ = conn.client.try_disconnect();
                }
                conn.connected.send_replace(Some(epoch));
                if let Some(ev) = &events {
                    ev.connected(epoch, ack.session_present);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some(ev) = &events else { continue };
                let Some(mut d) = ev.publish(p, epoch) else {
                    continue;
                };
                // Back-pressure: while the engine is saturated the socket is not read, but acks
                // keep being written, so processed messages are confirmed without delay.
                loop {
                    match ev.deliveries().try_send(d) {
                        Ok(()) => break,
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                        Err(mpsc::error::TrySendError::Full(back)) => d = back,
                    }
                    tokio::select! {
                        r = ev.deliveries().reserve() => {
                            if let Ok(permit) = r {
                                permit.send(d);
                            }
                            break;
                        }
                        _ = conn.acks_queued.notified() => {
                            write_acks(&mut el, &conn, epoch, &Ok(Event::Outgoing(Outgoing::PingReq))).await;
                        }
                    }
                }
            }
            Ok(Event::Incoming(Packet::PubAck(a))) => {
                if let Some(w) = inflight.remove(&a.pkid) {
                    w.finish(Ok(()));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(s))) => {
                if let (Some(t), Some(ev)) = (sub_wait.remove(&s.pkid), &events) {
                    ev.subscribed(t, s.return_codes);
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if pkid != 0 && inflight.contains_key(&pkid) {
                    continue; // a retransmission after a reconnect
                }
                let w = match collided.take() {
                    Some((cp, w)) if cp == pkid => Some(w),
                    other => {
                        collided = other;
                        lock(&conn.fifo).pop_front()
                    }
                };
                if let Some(mut w) = w {
                    w.permit.take();
                    if pkid == 0 {
                        w.finish(Ok(()));
                    } else {
                        inflight.insert(pkid, w);
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                if let Some(w) = lock(&conn.fifo).pop_front() {
                    collided = Some((pkid, w));
                }
            }
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => {
                if let Some(t) = lock(&conn.subs).pop_front() {
                    sub_wait.insert(pkid, t);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                if conn.closing.load(Ordering::Acquire) {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                {
                    let mut g = lock(&conn.epoch);
                    *g += 1;
                    epoch = *g;
                }
                // Acks queued before the epoch changed are dropped here (see module doc).
                el.clean();
                {
                    let mut q = lock(&conn.acks);
                    q.wake = false;
                    q.queued.clear();
                }
                held.extend(el.pending.drain(..));
                sub_wait.clear();
                conn.connected.send_replace(None);
                if conn.closing.load(Ordering::Acquire) {
                    break;
                }
                failures = failures.saturating_add(1);
                let why = describe(&e);
                conn.set_last_error(Some(why.clone()));
                let delay = backoff(&conn.settings, failures);
                if failures == 1 || failures.is_power_of_two() {
                    let what = if ever_connected && failures == 1 {
                        "lost the connection"
                    } else {
                        "cannot connect"
                    };
                    let line = format!(
                        "{what} ({}): {why}; retrying in {} ms (attempt {failures})",
                        conn.label(),
                        delay.as_millis()
                    );
                    if failures >= 4 {
                        log.error(&line)
                    } else {
                        log.warn(&line)
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = conn.stop.notified() => {}
                }
                if conn.closing.load(Ordering::Acquire) {
                    break;
                }
            }
        }
    }
    conn.connected.send_replace(None);
    let why = || {
        Error::new(
            ErrorCode::Closed,
            "the emit was not confirmed by the broker before the messaging service was shut down",
        )
    };
    for (_, w) in inflight.drain() {
        w.finish(Err(why()));
    }
    if let Some((_, w)) = collided.take() {
        w.finish(Err(why()));
    }
    let rest: Vec<Waiter> = lock(&conn.fifo).drain(..).collect();
    for w in rest {
        w.finish(Err(why()));
    }
}

/// Writes the queued acks of connection `epoch` to the socket in one flush.
async fn write_acks(
    el: &mut EventLoop,
    conn: &Conn,
    epoch: u64,
    polled: &std::result::Result<Event, ConnectionError>,
) {
    let queued = {
        let mut q = lock(&conn.acks);
        if matches!(polled, Ok(Event::Outgoing(Outgoing::PubAck(_)))) {
            q.wake = false;
        }
        if q.queued.is_empty() {
            return;
        }
        std::mem::take(&mut q.queued)
    };
    let Some(network) = el.network.as_mut() else {
        return; // not connected: the broker redelivers these messages
    };
    for (pkid, e) in queued {
        if e == epoch
            && network
                .write(Packet::PubAck(PubAck::new(pkid)))
                .await
                .is_err()
        {
            return;
        }
    }
    // A failure shows up as an error of the next poll.
    let _ = network.flush().await;
}

/// The filters of `set` that are not in `current`, and those of `current` no longer in `set`.
pub fn diff(current: &BTreeSet<String>, set: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    let add = set.difference(current).cloned().collect();
    let remove = current.difference(set).cloned().collect();
    (add, remove)
}
