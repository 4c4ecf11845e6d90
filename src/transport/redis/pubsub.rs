//! Pub/sub mode: wire-compatible with @sap/cds `redis-messaging`, at-most-once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::conn::{CommandConnection, CommandSettings, Endpoint};
use super::{send_batch, RedisConfig};
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::message::{Delivery, HandlerError, InFlight, Inbound, Outbound, Settle};
use crate::policy::RetryPolicy;
use crate::subscriptions::TopicSet;
use crate::sync::lock;
use crate::transport::support::backoff::should_log;
use crate::transport::{Guarantee, Redelivery, Transport, TransportContext};

/// How often the subscription connection is checked with `PING`.
const PING_INTERVAL: Duration = Duration::from_secs(5);

struct Consumer {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

/// The pub/sub transport.
pub struct PubSubTransport {
    config: RedisConfig,
    endpoint: Endpoint,
    link: CommandConnection,
    consumer: Mutex<Option<Consumer>>,
    closed: AtomicBool,
}

impl PubSubTransport {
    /// A transport for `endpoint`; connects on first use.
    pub fn new(config: RedisConfig, endpoint: Endpoint, log: Logger) -> Self {
        let link = CommandConnection::new(
            endpoint.clone(),
            CommandSettings {
                label: "publish",
                connect_timeout: config.connect_timeout,
                response_timeout: config.connect_timeout,
                backoff: config.reconnect,
                ping_interval: PING_INTERVAL,
            },
            log,
        );
        PubSubTransport {
            config,
            endpoint,
            link,
            consumer: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl Transport for PubSubTransport {
    fn guarantee(&self, policy: &RetryPolicy) -> Guarantee {
        Guarantee {
            delivery: "at-most-once",
            dead_letter: "(in memory)".into(),
            summary: format!(
                "at-most-once via Redis pub/sub at {}: only subscribers connected at the moment of publishing receive a message, so a consumer that is down or reconnecting misses messages; a failing handler is retried in memory up to {} attempt(s), then the message is dead-lettered in memory",
                self.endpoint.display, policy.max_attempts
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
        let (stop, stop_rx) = watch::channel(false);
        // Emits wait (in the engine) until earlier subscriptions are active on Redis.
        ctx.subscriptions.track_applied();
        let sub = Subscriber {
            endpoint: self.endpoint.clone(),
            config: self.config.clone(),
            ctx,
            stop: stop_rx,
        };
        *slot = Some(Consumer {
            task: tokio::spawn(sub.run()),
            stop,
        });
        Ok(())
    }

    async fn publish(&self, batch: Vec<Outbound>) -> Vec<Result<()>> {
        if self.closed.load(Ordering::Acquire) {
            return batch.iter().map(|m| Err(Error::closed(&m.topic))).collect();
        }
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        for m in &batch {
            pipe.cmd("PUBLISH").arg(&m.topic).arg(&m.payload);
        }
        send_batch(
            &self.link,
            self.config.connect_timeout,
            "PUBLISH",
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
            let _ = c.task.await;
        }
        self.link.close();
        Ok(())
    }

    fn redelivery(&self) -> Redelivery {
        Redelivery::InProcess {
            dead_letters_in_memory: true,
        }
    }
}

impl Drop for PubSubTransport {
    fn drop(&mut self) {
        if let Some(c) = lock(&self.consumer).take() {
            c.task.abort();
        }
        self.link.close();
    }
}

/// What the subscription connection currently listens to.
#[derive(Default, Debug)]
struct Current {
    channels: HashSet<String>,
    pattern: bool,
}

/// The commands that bring `current` to `want`: (subscribe, unsubscribe, psubscribe *, punsubscribe *).
fn plan(current: &Current, want: &TopicSet) -> (Vec<String>, Vec<String>, bool, bool) {
    if want.all {
        let unsub: Vec<String> = current.channels.iter().cloned().collect();
        (Vec::new(), unsub, !current.pattern, false)
    } else {
        let mut sub: Vec<String> = want
            .topics
            .iter()
            .filter(|t| !current.channels.contains(*t))
            .cloned()
            .collect();
        let mut unsub: Vec<String> = current
            .channels
            .iter()
            .filter(|t| !want.topics.contains(*t))
            .cloned()
            .collect();
        sub.sort();
        unsub.sort();
        (sub, unsub, false, current.pattern)
    }
}

struct Subscriber {
    endpoint: Endpoint,
    config: RedisConfig,
    ctx: TransportContext,
    stop: watch::Receiver<bool>,
}

enum Ended {
    Stop,
    Lost(String),
}

impl Subscriber {
    async fn run(mut self) {
        let mut failures = 0u32;
        let mut was_up = false;
        let mut subs = self.ctx.subscriptions.watch();
        let log = self.ctx.log.clone();
        loop {
            if *self.stop.borrow() {
                return;
            }
            let timeout = self.config.connect_timeout;
            let attempt = tokio::select! {
                r = tokio::time::timeout(timeout, self.endpoint.pubsub()) => r,
                _ = self.stop.changed() => return,
            };
            let why = match attempt {
                Ok(Ok(pubsub)) => {
                    let (mut sink, mut stream) = pubsub.split();
                    let mut current = Current::default();
                    subs.borrow_and_update();
                    match self.sync(&mut sink, &mut current).await {
                        Ok(()) => {
                            let n = current.channels.len() + usize::from(current.pattern);
                            if was_up {
                                log.stats().reconnected();
                                log.info(&format!(
                                    "reconnected to Redis at {}; subscribed again to {n} channel(s)",
                                    self.endpoint.display
                                ));
                            } else {
                                log.debug(&format!(
                                    "subscription connection to Redis at {} is up ({n} channel(s))",
                                    self.endpoint.display
                                ));
                            }
                            was_up = true;
                            failures = 0;
                            match self
                                .consume(&mut sink, &mut stream, &mut current, &mut subs)
                                .await
                            {
                                Ended::Stop => return,
                                Ended::Lost(why) => {
                                    log.warn(&format!(
                                        "subscription connection to Redis at {} lost ({why}); reconnecting — messages published until then are missed (pub/sub is at-most-once)",
                                        self.endpoint.display
                                    ));
                                    None
                                }
                            }
                        }
                        Err(e) => Some(e),
                    }
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {} ms", timeout.as_millis())),
            };
            failures += 1;
            let delay = self.config.reconnect.delay(failures);
            if let Some(why) = why {
                if should_log(failures) {
                    log.warn(&format!(
                        "cannot subscribe on Redis at {} (attempt {failures}): {why}; retrying in {} ms",
                        self.endpoint.display,
                        delay.as_millis()
                    ));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.changed() => return,
            }
        }
    }

    async fn sync(
        &self,
        sink: &mut ::redis::aio::PubSubSink,
        current: &mut Current,
    ) -> std::result::Result<(), String> {
        let version = *self.ctx.subscriptions.watch().borrow();
        let want = self.ctx.subscriptions.snapshot();
        let (sub, unsub, psub, punsub) = plan(current, &want);
        let t = self.config.connect_timeout;
        let timed =
            |what: &'static str| move |_| format!("{what}: no answer within {} ms", t.as_millis());
        if psub {
            tokio::time::timeout(t, sink.psubscribe("*"))
                .await
                .map_err(timed("PSUBSCRIBE"))?
                .map_err(|e| e.to_string())?;
            current.pattern = true;
        }
        if punsub {
            tokio::time::timeout(t, sink.punsubscribe("*"))
                .await
                .map_err(timed("PUNSUBSCRIBE"))?
                .map_err(|e| e.to_string())?;
            current.pattern = false;
        }
        if !sub.is_empty() {
            tokio::time::timeout(t, sink.subscribe(&sub))
                .await
                .map_err(timed("SUBSCRIBE"))?
                .map_err(|e| e.to_string())?;
            self.ctx
                .log
                .debug(&format!("subscribed to {}", sub.join(", ")));
            current.channels.extend(sub);
        }
        if !unsub.is_empty() {
            tokio::time::timeout(t, sink.unsubscribe(&unsub))
                .await
                .map_err(timed("UNSUBSCRIBE"))?
                .map_err(|e| e.to_string())?;
            for u in unsub {
                current.channels.remove(&u);
            }
        }
        self.ctx.subscriptions.applied(version);
        Ok(())
    }

    async fn consume(
        &mut self,
        sink: &mut ::redis::aio::PubSubSink,
        stream: &mut ::redis::aio::PubSubStream,
        current: &mut Current,
        subs: &mut watch::Receiver<u64>,
    ) -> Ended {
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = self.stop.changed() => return Ended::Stop,
                m = stream.next() => {
                    let Some(msg) = m else { return Ended::Lost("connection closed".into()) };
                    if !self.deliver(msg).await {
                        return Ended::Stop;
                    }
                }
                changed = subs.changed() => {
                    if changed.is_err() {
                        return Ended::Stop;
                    }
                    if let Err(e) = self.sync(sink, current).await {
                        return Ended::Lost(e);
                    }
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(self.config.connect_timeout, sink.ping::<::redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Ended::Lost(e.to_string()),
                        Err(_) => return Ended::Lost("no answer to PING".into()),
                    }
                }
            }
        }
    }

    /// Hands one message to the engine; `false` when consumption is to stop.
    async fn deliver(&mut self, msg: ::redis::Msg) -> bool {
        let topic = msg.get_channel_name().to_string();
        let payload = match String::from_utf8(msg.get_payload_bytes().to_vec()) {
            Ok(p) => p,
            Err(_) => {
                self.ctx.log.error(&format!(
                    "message on topic '{topic}' is not UTF-8 text; it was dropped"
                ));
                return true;
            }
        };
        let message = Inbound {
            topic,
            payload,
            attempt: 1,
        };
        let settle = PubSubSettle;
        let send = self.ctx.deliveries.send(Delivery {
            message,
            settle: Box::new(settle),
        });
        tokio::select! {
            r = send => r.is_ok(),
            _ = self.stop.changed() => false,
        }
    }
}

/// Nothing to settle on Redis pub/sub: the engine redelivers and keeps the dead letters.
struct PubSubSettle;

impl Settle for PubSubSettle {
    fn ack(self: Box<Self>, _place: InFlight) {}

    fn dead_letter(self: Box<Self>, _error: &HandlerError) {}
}

#[cfg(test)]
pub(super) fn plan_for_tests(
    channels: &[&str],
    pattern: bool,
    want: &TopicSet,
) -> (Vec<String>, Vec<String>, bool, bool) {
    let current = Current {
        channels: channels.iter().map(|s| s.to_string()).collect(),
        pattern,
    };
    plan(&current, want)
}
