//! Sending: one task per target address, with its own session and link.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fe2o3_amqp::link::Sender;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::SenderSettleMode;
use fe2o3_amqp::types::messaging::{Data, Outcome, Target};
use fe2o3_amqp::types::primitives::Symbol;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};

use super::connection::{end_session, link_name, SharedConn};
use super::error::{
    attach_error, attach_timeout, describe, refusal, send_refusal, ConnectError, Failure, LinkRole,
};
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::transport::support::backoff::{should_log, Reconnect};

// ---------------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------------

pub(super) struct SendItem {
    pub(super) sendable: fe2o3_amqp::link::delivery::Sendable<Data>,
    pub(super) topic: String,
    pub(super) deadline: Instant,
    pub(super) done: oneshot::Sender<Result<()>>,
}

pub(super) struct SenderTask {
    pub(super) conn: Arc<SharedConn>,
    pub(super) target: Option<String>,
    pub(super) capabilities: &'static [&'static str],
    pub(super) settled: bool,
    pub(super) log: Logger,
    pub(super) stop: watch::Receiver<bool>,
}

pub(super) type OutcomeFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    u64,
                    std::result::Result<Outcome, fe2o3_amqp::link::SendError>,
                ),
            > + Send,
    >,
>;

pub(super) fn describe_target(t: &Option<String>) -> String {
    match t {
        Some(a) => format!("'{a}'"),
        None => "the anonymous relay (null target)".into(),
    }
}

impl SenderTask {
    pub(super) async fn attach(
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
                let refused = match &e {
                    fe2o3_amqp::link::SenderAttachError::RemoteClosedWithError(err)
                    | fe2o3_amqp::link::SenderAttachError::SessionStopped(
                        fe2o3_amqp::link::SessionStopReason::RemoteEndedWithError(err),
                    ) => Some(err),
                    _ => None,
                };
                Err(attach_error(
                    LinkRole::Sender,
                    &describe_target(&self.target),
                    refused,
                    &e,
                ))
            }
            Err(_) => {
                end_session(session).await;
                Err(attach_timeout(
                    LinkRole::Sender,
                    &describe_target(&self.target),
                ))
            }
        }
    }

    /// Fails `item` as a refused attach fails it: the broker closed the link refusing its target
    /// (`NO_ROUTE`).
    fn refused(&self, item: SendItem, refused: &fe2o3_amqp::types::definitions::Error) {
        let why = refusal(LinkRole::Sender, &describe_target(&self.target), refused);
        let _ = item.done.send(Err(Error::emit(&item.topic, &why)));
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<SendItem>) {
        let mut queue: VecDeque<SendItem> = VecDeque::new();
        let mut pending: HashMap<u64, SendItem> = HashMap::new();
        let mut inflight: FuturesUnordered<OutcomeFuture> = FuturesUnordered::new();
        let mut link: Option<(Sender, SessionHandle<()>, u64)> = None;
        let mut stale: Option<u64> = None;
        let mut reconnect = Reconnect::new(self.conn.settings.backoff());
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
                        let _ = i.done.send(Err(Error::closed(&i.topic)));
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
                        if reconnect.failures() > 0 {
                            self.log.info(&format!(
                                "sender to {} attached again",
                                describe_target(&self.target)
                            ));
                        }
                        reconnect.on_connected();
                        link = Some(l);
                    }
                    Err(e) => {
                        let failures = reconnect.on_failed();
                        retry_at = Instant::now() + reconnect.next_delay();
                        if e.kind == Failure::Permanent {
                            for i in queue.drain(..) {
                                let _ = i.done.send(Err(Error::emit(&i.topic, &e.error)));
                            }
                        } else if should_log(failures) {
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
                            match send_refusal(&e) {
                                Some(refused) => self.refused(item, refused),
                                None => queue.push_front(item),
                            }
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
                    retry_at = Instant::now() + reconnect.on_lost();
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
                            let why = r.error.as_ref().map(describe).unwrap_or_else(|| "no reason given".into());
                            let _ = item.done.send(Err(Error::new(
                                ErrorCode::Rejected,
                                format!("the broker rejected the message for '{}' sent to {}: {why}", item.topic, describe_target(&self.target)),
                            )));
                        }
                        Ok(_) => queue.push_back(item), // released / modified: send again
                        Err(e) => {
                            // The link or connection went away before the outcome: send again,
                            // unless the broker closed it refusing the target.
                            match send_refusal(&e) {
                                Some(refused) => self.refused(item, refused),
                                None => queue.push_front(item),
                            }
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
                                retry_at = Instant::now() + reconnect.on_lost();
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
                    retry_at = Instant::now() + reconnect.on_lost();
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
