//! [`NativeEngine`]: one messaging engine per CAP messaging service.

use std::sync::Arc;

use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;

use super::bridge::{
    outcome_of, Filters, HandlerFailure, JsBridge, JsHandler, JsLog, JsLogSink, JsSent,
};
use super::config::engine_config;
use super::error::{failure, Code, Failure, IntoJs};
use super::options::EngineOptions;
use crate::engine::Engine;
use crate::error::{Error, ErrorCode};
use crate::log::LogSink;
use crate::message::Outbound;
use crate::subscriptions::TopicSet;

/// The effective delivery guarantee of an engine.
#[napi(object)]
pub struct GuaranteeInfo {
    /// `at-least-once` or `at-most-once`.
    pub delivery: String,
    /// Where exhausted messages go.
    pub dead_letter: String,
    /// One sentence for the startup log.
    pub summary: String,
}

/// A message that exhausted its attempts (kept in memory by the local kind).
#[napi(object)]
pub struct DeadLetterInfo {
    /// Topic.
    pub topic: String,
    /// Serialized body.
    pub payload: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last handler error's message.
    pub error: String,
}

/// One messaging engine (one per CAP messaging service). Used by `srv/NativeMessagingService.js`.
#[napi]
pub struct NativeEngine {
    /// The engine (also read by [`super::ops`]' `stats()`).
    pub(super) inner: Arc<Engine>,
    max_attempts: u32,
    /// `format: 'cloudevents'`: published payloads are checked.
    cloudevents: bool,
    /// MQTT: the subscribed filters, so deliveries name the one they matched.
    filters: Option<Filters>,
    /// Receives the results of [`NativeEngine::send`].
    sent: Option<Arc<JsSent>>,
}

#[napi]
impl NativeEngine {
    /// Validates the options and creates the engine (the file box is created if missing).
    /// `log(level, message)` receives the engine's log lines; `sent(ticket, results)` the results
    /// of [`send`](NativeEngine::send). Throws with `err.code`.
    #[napi(
        constructor,
        catch_unwind,
        ts_args_type = "options: EngineOptions, log?: ((level: string, message: string) => void) | undefined | null, sent?: ((ticket: number, results: Array<Failure | null>) => void) | undefined | null"
    )]
    pub fn new(
        options: EngineOptions,
        log: Option<JsLog>,
        sent: Option<JsSent>,
    ) -> napi::Result<Self, Code> {
        let sink = log.map(|l| Arc::new(JsLogSink(l)) as Arc<dyn LogSink>);
        let cloudevents = options.format.as_deref() == Some("cloudevents");
        let filters = (options.transport == "mqtt").then(Filters::default);
        let config = engine_config(options).into_js()?;
        let max_attempts = config.policy.max_attempts;
        let engine = Engine::new(config, sink).into_js()?;
        Ok(NativeEngine {
            inner: Arc::new(engine),
            max_attempts,
            cloudevents,
            filters,
            sent: sent.map(Arc::new),
        })
    }

    /// Deliveries in total before a message is dead-lettered (the effective `maxAttempts`).
    #[napi(getter)]
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The effective delivery guarantee.
    #[napi]
    pub fn guarantee(&self) -> GuaranteeInfo {
        let g = self.inner.guarantee();
        GuaranteeInfo {
            delivery: g.delivery.to_string(),
            dead_letter: g.dead_letter,
            summary: g.summary,
        }
    }

    /// Starts consuming. `handler(batch)` must return a Promise of one entry per message:
    /// `null` to acknowledge, or a `HandlerFailure` to nack. A rejected Promise or a throw
    /// redelivers the whole batch. Resolves to `null`, or the `Failure` that stopped it.
    #[napi(
        ts_args_type = "handler: (batch: InboundBatch) => Promise<Array<HandlerFailure | null>>"
    )]
    pub fn listen<'env>(
        &self,
        env: &'env Env,
        handler: JsHandler,
    ) -> napi::Result<PromiseRaw<'env, Option<Failure>>> {
        // synchronously, so that an emit made right after this call waits for the consumer
        self.inner.announce_listen();
        let bridge = JsBridge {
            handler,
            filters: self.filters.clone(),
        };
        let inner = self.inner.clone();
        env.spawn_future(async move { Ok(failure(inner.listen(Arc::new(bridge)).await)) })
    }

    /// Early outcomes of single messages of batch `id` (see `InboundBatch.id`): `failures[k]` is
    /// the outcome of message `indices[k]` (`null` = processed). The batch's own result still
    /// counts for the others; a message settles once.
    #[napi(catch_unwind)]
    pub fn settle(&self, id: u32, indices: Vec<u32>, failures: Vec<Option<HandlerFailure>>) {
        // On the JavaScript thread; the engine's batch progress settles inside its runtime.
        for (i, f) in indices.into_iter().zip(failures) {
            crate::engine::progress::report(id, i as usize, outcome_of(f));
        }
    }

    /// Replaces the consumed topics; `all` consumes every topic. Throws with `err.code`.
    #[napi(catch_unwind)]
    pub fn subscribe(&self, topics: Vec<String>, all: bool) -> napi::Result<(), Code> {
        if let Some(f) = &self.filters {
            *f.write().unwrap_or_else(|e| e.into_inner()) = topics.clone();
        }
        self.inner
            .subscribe(TopicSet {
                topics: topics.into_iter().collect(),
                all,
            })
            .into_js()
    }

    /// Publishes messages (parallel arrays). `cloudEvents[i]` says that message i's headers hold
    /// the CloudEvents attributes `id`, `source`, `specversion` and `type` (default: none do).
    /// `nested`: emitted by a handler of this engine while it runs (see
    /// [`Engine::publish_nested`]). `tenants[i]`: message i's tenant in a multitenant app (see
    /// [`Outbound::tenant`]). Resolves to one entry per message: `null` on success or its
    /// `Failure`.
    #[napi]
    pub async fn publish(
        &self,
        topics: Vec<String>,
        payloads: Vec<String>,
        cloud_events: Option<Vec<bool>>,
        nested: Option<bool>,
        tenants: Option<Vec<Option<String>>>,
    ) -> napi::Result<Vec<Option<Failure>>> {
        Ok(publish(
            self.inner.clone(),
            self.cloudevents,
            Batch {
                topics,
                payloads,
                cloud_events,
                nested,
                tenants,
            },
        )
        .await)
    }

    /// [`publish`](NativeEngine::publish) without a Promise: returns at once, and the engine calls
    /// the constructor's `sent(ticket, results)` when every message is done. The emit path uses
    /// it because a Promise made by an `async` binding costs a thread-safe function of its own per
    /// call, which is most of an emit's cost when emits go one at a time. Throws with `err.code`
    /// when the engine has no `sent` callback.
    #[napi(catch_unwind)]
    pub fn send(
        &self,
        ticket: u32,
        topics: Vec<String>,
        payloads: Vec<String>,
        cloud_events: Option<Vec<bool>>,
        nested: Option<bool>,
        tenants: Option<Vec<Option<String>>>,
    ) -> napi::Result<(), Code> {
        let Some(sent) = self.sent.clone() else {
            return Err(Error::new(
                ErrorCode::Internal,
                "send: the engine was created without a 'sent' callback; use publish",
            ))
            .into_js();
        };
        let batch = Batch {
            topics,
            payloads,
            cloud_events,
            nested,
            tenants,
        };
        let (inner, cloudevents) = (self.inner.clone(), self.cloudevents);
        napi::bindgen_prelude::spawn(async move {
            let results = publish(inner, cloudevents, batch).await;
            // (`Closing`: the JavaScript environment is gone, and nobody waits for the results)
            let _ = sent.call(
                (ticket, results).into(),
                napi::threadsafe_function::ThreadsafeFunctionCallMode::NonBlocking,
            );
        });
        Ok(())
    }

    /// Takes over messages whose first attempt JavaScript delivered in-process (local kind) and
    /// that failed with `failures[i]`: redelivered by the retry policy, then dead-lettered.
    /// Resolves to one entry per message: `null` once a later attempt succeeded, or the dead
    /// letter's `Failure`.
    #[napi]
    pub async fn redeliver(
        &self,
        topics: Vec<String>,
        payloads: Vec<String>,
        failures: Vec<HandlerFailure>,
        nested: Option<bool>,
    ) -> napi::Result<Vec<Option<Failure>>> {
        if topics.len() != payloads.len() || topics.len() != failures.len() {
            let e = Error::new(
                ErrorCode::Internal,
                "redeliver: topics, payloads and failures differ in length",
            );
            return Ok(vec![Some(Failure::from(e)); topics.len()]);
        }
        let batch = topics
            .into_iter()
            .zip(payloads)
            .zip(failures)
            .map(|((topic, payload), f)| {
                let error = crate::message::HandlerError {
                    message: f.message,
                    code: f.code,
                    unrecoverable: f.unrecoverable.unwrap_or(false),
                };
                (Outbound::new(topic, payload), error)
            })
            .collect();
        let results = self.inner.redeliver(batch, nested.unwrap_or(false)).await;
        Ok(results.into_iter().map(failure).collect())
    }

    /// Counts deliveries JavaScript made in-process (local kind) in the engine's `stats()`:
    /// `delivered` of them, `acked` of which succeeded.
    #[napi]
    pub fn counted(&self, delivered: u32, acked: u32) {
        self.inner.counted(delivered as usize, acked as usize);
    }

    /// Dead letters kept in memory (local kind), oldest first.
    #[napi]
    pub fn dead_letters(&self) -> Vec<DeadLetterInfo> {
        self.inner
            .dead_letters()
            .into_iter()
            .map(|d| DeadLetterInfo {
                topic: d.message.topic,
                payload: d.message.payload,
                attempts: d.message.attempt,
                error: d.error.message,
            })
            .collect()
    }

    /// Stops consuming, gives back what is in flight, and releases the JavaScript handler so the
    /// process can exit. Idempotent. Resolves to `null`, or the `Failure`.
    #[napi]
    pub async fn close(&self) -> napi::Result<Option<Failure>> {
        Ok(failure(self.inner.close().await))
    }
}

/// The arguments of one publish call (parallel arrays, as JavaScript passes them).
struct Batch {
    topics: Vec<String>,
    payloads: Vec<String>,
    cloud_events: Option<Vec<bool>>,
    nested: Option<bool>,
    tenants: Option<Vec<Option<String>>>,
}

/// Publishes `batch` (see [`NativeEngine::publish`]): one entry per message, `None` on success.
async fn publish(engine: Arc<Engine>, cloudevents: bool, batch: Batch) -> Vec<Option<Failure>> {
    let Batch {
        topics,
        payloads,
        cloud_events,
        nested,
        tenants,
    } = batch;
    let cloud_events = cloud_events.unwrap_or_default();
    let mut tenants = tenants.unwrap_or_default();
    if topics.len() != payloads.len() {
        let e = Error::new(
            ErrorCode::Internal,
            "publish: topics and payloads differ in length",
        );
        return vec![Some(Failure::from(e)); topics.len()];
    }
    // with CloudEvents, a message whose attributes do not validate is not sent
    let mut results: Vec<Option<Failure>> = Vec::with_capacity(topics.len());
    let mut batch = Vec::with_capacity(topics.len());
    for (i, (topic, payload)) in topics.into_iter().zip(payloads).enumerate() {
        let checked = if cloudevents {
            crate::cloudevents::validate_payload(&payload)
        } else {
            Ok(())
        };
        results.push(failure(checked));
        if results.last().is_some_and(Option::is_none) {
            batch.push(Outbound {
                topic,
                payload,
                cloud_event: cloud_events.get(i).copied().unwrap_or(false),
                tenant: tenants
                    .get_mut(i)
                    .and_then(Option::take)
                    .filter(|t| !t.is_empty()),
            });
        }
    }
    if batch.is_empty() {
        return results;
    }
    let sent = if nested.unwrap_or(false) {
        engine.publish_nested(batch).await
    } else {
        engine.publish(batch).await
    };
    let mut sent = sent.into_iter();
    for slot in results.iter_mut().filter(|r| r.is_none()) {
        *slot = sent.next().and_then(failure);
    }
    results
}
