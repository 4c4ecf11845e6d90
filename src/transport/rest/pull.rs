//! Pull mode (beyond @sap/cds): the queue is consumed with
//! `POST /messagingrest/v1/queues/{q}/messages/consumption` (`x-qos`), 200 with the message and
//! `x-message-id`, 204 when the queue is empty. With QoS 1 a message is acknowledged
//! (`POST …/messages/{id}/acknowledgement`) only after every handler succeeded; a failing handler is
//! retried in this process with the engine's back-off (the message stays unacknowledged at Event
//! Mesh, which hands it out again if this process dies). After the last attempt it goes to the queue's
//! `deadMsgQueue` (then it is acknowledged), or — without one — into the in-memory dead letters
//! with an error line.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::provision::backoff;
use super::{Api, Provisioning};
use crate::engine::DeadLetterQueue;
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::message::{Delivery, HandlerError, InFlight, Inbound, Settle};
use crate::transport::support::url::percent_encode;
use crate::transport::TransportContext;

/// Consumes one queue.
pub struct Puller {
    /// The REST API.
    pub api: Api,
    /// The queue.
    pub queue: String,
    /// `x-qos` of the consumption: 1 = acknowledge after the handlers, 0 = removed when handed out.
    pub qos: u8,
    /// Pause after the queue was found empty.
    pub interval: Duration,
    /// Where exhausted messages go (`deadMsgQueue` of the queue options).
    pub dead_letter_queue: Option<String>,
    /// In-memory dead letters when there is no dead-letter queue.
    pub dead: DeadLetterQueue,
    /// Logger.
    pub log: Logger,
}

struct Pulled {
    id: Option<String>,
    topic: String,
    payload: String,
    content_type: String,
}

impl Puller {
    fn qos(&self) -> &'static str {
        if self.qos == 0 {
            "0"
        } else {
            "1"
        }
    }

    async fn consume(&self) -> Result<Option<Pulled>> {
        let path = format!(
            "/messagingrest/v1/queues/{}/messages/consumption",
            percent_encode(&self.queue)
        );
        let r = self
            .api
            .call(http::Method::POST, &path, &[("x-qos", self.qos())], None)
            .await?;
        match r.status.as_u16() {
            204 => Ok(None),
            200 => {
                let header = |n: &str| {
                    r.headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let id = header("x-message-id");
                if self.qos == 1 && id.is_none() {
                    self.log.warn(&format!(
                        "a message pulled from queue '{}' has no x-message-id; it cannot be acknowledged and will come again",
                        self.queue
                    ));
                }
                let topic = header("x-address")
                    .and_then(|a| a.strip_prefix("topic:").map(str::to_string))
                    .unwrap_or_default();
                Ok(Some(Pulled {
                    id,
                    topic,
                    payload: String::from_utf8_lossy(&r.body).into_owned(),
                    content_type: header("content-type")
                        .unwrap_or_else(|| "application/json".into()),
                }))
            }
            s => Err(Error::new(
                ErrorCode::ConnectionFailed,
                format!(
                    "pulling from queue '{}' failed with HTTP {s}{}: {}",
                    self.queue,
                    if s == 404 {
                        " (the queue does not exist yet; it is created once something is subscribed)"
                    } else {
                        ""
                    },
                    r.body_excerpt()
                ),
            )),
        }
    }

    async fn ack(&self, id: &str) -> Result<()> {
        let path = format!(
            "/messagingrest/v1/queues/{}/messages/{}/acknowledgement",
            percent_encode(&self.queue),
            percent_encode(id)
        );
        let r = self.api.call(http::Method::POST, &path, &[], None).await?;
        success(&r)
    }

    async fn ack_logged(&self, id: Option<&str>, topic: &str) {
        let Some(id) = id else { return };
        if let Err(e) = self.ack(id).await {
            self.log.warn(&format!(
                "cannot acknowledge a message on topic '{topic}' from queue '{}' ({}); Event Mesh will hand it out again",
                self.queue,
                e.full_message()
            ));
        }
    }

    async fn to_dead_letter_queue(&self, dlq: &str, m: &Pulled) -> Result<()> {
        let path = format!("/messagingrest/v1/queues/{}/messages", percent_encode(dlq));
        let r = self
            .api
            .call(
                http::Method::POST,
                &path,
                &[("content-type", m.content_type.as_str()), ("x-qos", "1")],
                Some(Bytes::from(m.payload.clone())),
            )
            .await?;
        success(&r)
    }
}

/// `Ok` for a 2xx answer, else the status and an excerpt of the body.
fn success(r: &crate::transport::support::http::Response) -> Result<()> {
    if r.status.is_success() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::ConnectionFailed,
            format!("HTTP {}: {}", r.status.as_u16(), r.body_excerpt()),
        ))
    }
}

struct PullSettle {
    puller: Arc<Puller>,
    pulled: Arc<Pulled>,
    message: Inbound,
    deliveries: mpsc::WeakSender<Delivery>,
    _permit: OwnedSemaphorePermit,
}

impl Settle for PullSettle {
    fn ack(self: Box<Self>, _place: InFlight) {
        tokio::spawn(async move {
            self.puller
                .ack_logged(self.pulled.id.as_deref(), &self.pulled.topic)
                .await;
        });
    }

    fn retry(self: Box<Self>, delay: Duration, _error: &HandlerError) {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut me = *self;
            me.message.attempt += 1;
            // Closed meanwhile: the unacknowledged message comes again from Event Mesh.
            let Some(tx) = me.deliveries.upgrade() else {
                return;
            };
            if let Ok(permit) = tx.reserve_owned().await {
                permit.send(Delivery {
                    message: me.message.clone(),
                    settle: Box::new(me),
                });
            }
        });
    }

    fn dead_letter(self: Box<Self>, error: &HandlerError) {
        let error = error.clone();
        tokio::spawn(async move {
            let p = &self.puller;
            let topic = &self.pulled.topic;
            match &p.dead_letter_queue {
                Some(dlq) => match p.to_dead_letter_queue(dlq, &self.pulled).await {
                    Ok(()) => {
                        p.log.error(&format!(
                            "a message on topic '{topic}' failed {} time(s) ({}); moved to the dead-letter queue '{dlq}'",
                            self.message.attempt, error.message
                        ));
                        p.ack_logged(self.pulled.id.as_deref(), topic).await;
                    }
                    Err(e) => p.log.error(&format!(
                        "a message on topic '{topic}' failed {} time(s) ({}) and cannot be moved to the dead-letter queue '{dlq}' ({}); left unacknowledged, Event Mesh will hand it out again",
                        self.message.attempt,
                        error.message,
                        e.full_message()
                    )),
                },
                None => {
                    p.log.error(&format!(
                        "a message on topic '{topic}' failed {} time(s) ({}); kept in memory as a dead letter (configure queue.deadMsgQueue to keep it in Event Mesh)",
                        self.message.attempt, error.message
                    ));
                    p.dead.push(self.message.clone(), error.clone());
                    p.ack_logged(self.pulled.id.as_deref(), topic).await;
                }
            }
        });
    }
}

/// Pulls until closed. Starts once the queue was provisioned.
pub(super) async fn run(
    p: Puller,
    ctx: TransportContext,
    mut closed: watch::Receiver<bool>,
    mut provisioning: watch::Receiver<Provisioning>,
) {
    let p = Arc::new(p);
    let permits = Arc::new(Semaphore::new(ctx.max_in_flight.max(1)));
    let mut failures = 0u32;
    loop {
        tokio::select! {
            r = provisioning.wait_for(|s| *s == Provisioning::Done) => if r.is_err() { return },
            _ = closed.wait_for(|c| *c) => return,
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = closed.wait_for(|c| *c) => return,
        };
        let pause = match p.consume().await {
            Ok(Some(pulled)) => {
                if failures > 0 {
                    p.log
                        .info(&format!("pulling from queue '{}' works again", p.queue));
                }
                failures = 0;
                let pulled = Arc::new(pulled);
                let message = Inbound {
                    topic: pulled.topic.clone(),
                    payload: pulled.payload.clone(),
                    attempt: 1,
                };
                let settle = PullSettle {
                    puller: p.clone(),
                    pulled,
                    message: message.clone(),
                    deliveries: ctx.deliveries.downgrade(),
                    _permit: permit,
                };
                if ctx
                    .deliveries
                    .send(Delivery {
                        message,
                        settle: Box::new(settle),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                None
            }
            Ok(None) => Some(p.interval),
            Err(e) => {
                failures += 1;
                let wait = backoff(failures.min(6) + 1);
                if failures.is_power_of_two() {
                    p.log.warn(&format!(
                        "cannot pull from queue '{}' (attempt {failures}, next in {} ms): {}",
                        p.queue,
                        wait.as_millis(),
                        e.full_message()
                    ));
                }
                Some(wait)
            }
        };
        if let Some(w) = pause {
            tokio::select! {
                _ = tokio::time::sleep(w) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
        }
    }
}
