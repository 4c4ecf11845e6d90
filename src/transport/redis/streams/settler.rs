//! The settler: batched `XACK`s and dead letters on the command connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::streams::StreamClaimReply;
use tokio::sync::mpsc;

use super::super::with_retry;
use super::{Op, Shared};
use crate::error::{ErrorCode, Result};
use crate::message::{HandlerError, InFlight, Inbound, Settle};
use crate::sync::lock;
use crate::transport::support::backoff::should_log;

impl Shared {
    pub(super) fn report(&self, failures: u32, why: &str) {
        if should_log(failures) {
            self.ctx.log.warn(&format!(
                "cannot consume from Redis at {} (attempt {failures}): {why}; retrying",
                self.display
            ));
        }
    }

    pub(super) async fn settler(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Op>) {
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
                            // an acknowledged entry's place under maxInFlight is freed here
                            Op::Ack { key, id, .. } | Op::DeadLetter { key, id, .. } => {
                                owned.remove(&(key, id));
                            }
                            Op::Flush => {}
                        }
                    }
                }
                Err(e) if e.code == ErrorCode::Closed => return,
                Err(e) => {
                    failures += 1;
                    if should_log(failures) {
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

    pub(super) fn settle_pipeline(&self, ops: &[Op]) -> ::redis::Pipeline {
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        let mut acks: HashMap<&str, Vec<&str>> = HashMap::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        for op in ops {
            match op {
                Op::Ack { key, id, .. } => acks.entry(key).or_default().push(id),
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
}

/// Settles one entry: acknowledged, redelivered after a back-off, or dead-lettered.
pub(super) struct StreamSettle {
    pub(super) shared: Arc<Shared>,
    pub(super) key: String,
    pub(super) id: String,
    pub(super) message: Inbound,
}

impl Settle for StreamSettle {
    fn ack(self: Box<Self>, place: InFlight) {
        let _ = self.shared.ops.send(Op::Ack {
            key: self.key,
            id: self.id,
            _place: place,
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
