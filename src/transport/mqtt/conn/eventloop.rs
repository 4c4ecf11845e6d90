//! The loop task of one connection: polls rumqttc's `EventLoop` without pause, resolves
//! publishes and subscriptions, writes queued acks and reconnects with back-off.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rumqttc::{
    ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, PubAck,
    Request, TlsConfiguration, Transport as MqttWire,
};
use tokio::sync::mpsc;

use super::super::address::Scheme;
use super::nudge::{Nudge, Situation};
use super::{Conn, ConnSettings, Events, SubTicket, Waiter};
use crate::error::{Error, ErrorCode, Result};
use crate::sync::lock;
use crate::transport::support::backoff::{should_log, Backoff, Reconnect};

pub(super) fn mqtt_options(s: &ConnSettings) -> Result<MqttOptions> {
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
    if let (true, Some(b)) = (e.scheme.is_websocket(), &s.bearer) {
        b.install(&mut o);
    } else if e.scheme.is_websocket() {
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

pub(super) async fn run(mut el: EventLoop, conn: Arc<Conn>, events: Option<Arc<dyn Events>>) {
    let mut inflight: HashMap<u16, Waiter> = HashMap::new();
    let mut collided: Option<(u16, Waiter)> = None;
    let mut sub_wait: HashMap<u16, SubTicket> = HashMap::new();
    let mut held: VecDeque<Request> = VecDeque::new();
    let mut epoch = 0u64;
    let mut reconnect = Reconnect::new(Backoff {
        min: conn.settings.reconnect_delay,
        max: conn.settings.max_reconnect_delay,
    });
    let mut ever_connected = false;
    let mut takeover = super::super::takeover::Takeover::default();
    let log = conn.log.clone();
    let mut nudge = Nudge::default();
    loop {
        let now = Situation {
            awaiting_acks: !inflight.is_empty(),
            idle: el.state.events.is_empty() && lock(&conn.fifo).is_empty(),
        };
        if nudge.due(now) {
            // (`due` counted it as written; a failed write ends the connection at the next poll)
            write_pingreq(&mut el).await;
        }
        let polled = el.poll().await;
        // What arrived and what was written, in the order it happened: an event of rumqttc's was
        // read (Incoming) or written and flushed (Outgoing) before `poll` returned it, and the acks
        // below go out after it.
        match &polled {
            Ok(Event::Incoming(Packet::PubAck(_))) => nudge.puback(),
            Ok(Event::Incoming(Packet::PingResp)) => nudge.pingresp(),
            Ok(Event::Outgoing(Outgoing::AwaitAck(_))) => {}
            Ok(Event::Outgoing(_)) => nudge.wrote(),
            _ => {}
        }
        if polled.is_ok() && write_acks(&mut el, &conn, epoch, &polled).await {
            nudge.wrote();
        }
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                nudge.reset();
                // Put back what was queued or unacknowledged when the connection was lost, also
                // when the broker has no session for us (rumqttc would drop it then).
                while let Some(r) = held.pop_back() {
                    el.pending.push_front(r);
                }
                conn.set_last_error(None);
                conn.refused.send_replace(None);
                if ever_connected {
                    log.stats().reconnected();
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
                takeover.connected();
                reconnect.on_connected();
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
                let mut waited = false;
                loop {
                    match ev.deliveries().try_send(d) {
                        Ok(()) => break,
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                        Err(mpsc::error::TrySendError::Full(back)) => d = back,
                    }
                    waited = true;
                    tokio::select! {
                        r = ev.deliveries().reserve() => {
                            if let Ok(permit) = r {
                                permit.send(d);
                            }
                            break;
                        }
                        _ = conn.acks_queued.notified() => {
                            let event = Ok(Event::Outgoing(Outgoing::PingReq));
                            if write_acks(&mut el, &conn, epoch, &event).await {
                                nudge.wrote();
                            }
                        }
                        // Nothing acknowledged for a keep-alive period: a PINGREQ keeps the broker
                        // from closing a connection that only waits for its handlers.
                        _ = tokio::time::sleep(conn.settings.keep_alive) => {
                            if write_pingreq(&mut el).await {
                                nudge.wrote();
                            }
                        }
                    }
                }
                if waited {
                    // The answer to the last PINGREQ may sit unread in the socket: rumqttc would
                    // take it for a dead broker at its next keep-alive tick ("Last pingreq isn't
                    // acked"), drop the connection and have every unacknowledged message
                    // redelivered. A ping unanswered across a wait proves nothing; the next one
                    // is judged again.
                    el.state.await_pingresp = false;
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
                nudge.reset();
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
                if let Some(n) = takeover.dropped().filter(|_| !conn.settings.clean_session) {
                    let id = &conn.settings.client_id;
                    log.error(&super::super::takeover::message(id, &conn.label(), n));
                }
                let lost = reconnect.is_up();
                let delay = if lost {
                    reconnect.on_lost()
                } else {
                    reconnect.on_failed();
                    reconnect.next_delay()
                };
                let failures = reconnect.failures().max(1);
                let mut why = describe(&e);
                if let Some(token_error) = conn
                    .settings
                    .bearer
                    .as_ref()
                    .and_then(|b| b.after_error(&e))
                {
                    why = token_error;
                }
                conn.set_last_error(Some(why.clone()));
                if matches!(e, ConnectionError::ConnectionRefused(_)) {
                    conn.refused.send_replace(Some(why.clone()));
                }
                if should_log(failures) {
                    let what = if lost {
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

/// Writes a PINGREQ straight to the connection (see [`super::nudge`]); `true` when it went out. A
/// failure shows up as an error of the next poll.
async fn write_pingreq(el: &mut EventLoop) -> bool {
    match el.network.as_mut() {
        Some(network) => {
            network.write(Packet::PingReq).await.is_ok() && network.flush().await.is_ok()
        }
        None => false,
    }
}

/// Writes the queued acks of connection `epoch` to the socket in one flush; `true` when some
/// went out.
async fn write_acks(
    el: &mut EventLoop,
    conn: &Conn,
    epoch: u64,
    polled: &std::result::Result<Event, ConnectionError>,
) -> bool {
    let queued = {
        let mut q = lock(&conn.acks);
        if matches!(polled, Ok(Event::Outgoing(Outgoing::PubAck(_)))) {
            q.wake = false;
        }
        if q.queued.is_empty() {
            return false;
        }
        std::mem::take(&mut q.queued)
    };
    let Some(network) = el.network.as_mut() else {
        return false; // not connected: the broker redelivers these messages
    };
    let mut wrote = false;
    for (pkid, e) in queued {
        if e == epoch {
            if network
                .write(Packet::PubAck(PubAck::new(pkid)))
                .await
                .is_err()
            {
                return false;
            }
            wrote = true;
        }
    }
    // A failure shows up as an error of the next poll.
    wrote && network.flush().await.is_ok()
}
