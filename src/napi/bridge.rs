//! Calls into JavaScript: the message handler ([`JsBridge`], an engine [`Handler`]) and the log
//! sink ([`JsLogSink`]), both thread-safe functions called from the engine's tasks.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use napi::bindgen_prelude::{FnArgs, Promise};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

use super::error::Failure;
use crate::engine::progress::{self, Progress};
use crate::engine::Handler;
use crate::error::{Error, ErrorCode, Result};
use crate::log::{Level, LogSink};
use crate::message::{HandlerError, Inbound, Outcome};
use crate::transport::mqtt::topic;

/// A batch of inbound messages handed to JavaScript (parallel arrays: cheap to cross the boundary).
#[napi(object)]
pub struct InboundBatch {
    /// Topic of each message.
    pub topics: Vec<String>,
    /// Serialized body of each message.
    pub payloads: Vec<String>,
    /// Delivery attempt of each message (1 = first delivery).
    pub attempts: Vec<u32>,
    /// The subscription each message matched: with MQTT the filter (`+`, `#`) it was delivered
    /// for, so that JavaScript finds its handler without matching wildcards; otherwise the topic.
    pub subscriptions: Vec<String>,
    /// Names the batch for `NativeEngine.settle` (early outcomes of single messages).
    pub id: u32,
}

/// The topic filters of an MQTT engine in the order JavaScript subscribed them.
pub type Filters = Arc<RwLock<Vec<String>>>;

/// The subscription `topic` was delivered for: the topic itself when it is subscribed as it is,
/// else the first wildcard filter that matches it (MQTT's own matching), else the topic.
pub fn subscription(filters: &[String], topic: &str) -> String {
    if filters.iter().any(|f| f == topic) {
        return topic.to_string();
    }
    filters
        .iter()
        .find(|f| (f.contains('+') || f.contains('#')) && topic::matches(topic, f))
        .cloned()
        .unwrap_or_else(|| topic.to_string())
}

/// Why a handler refused a message, as reported by JavaScript.
#[napi(object)]
pub struct HandlerFailure {
    /// The error message.
    pub message: String,
    /// The error's `code`, if any.
    pub code: Option<String>,
    /// `true` when retrying cannot help (`err.unrecoverable`).
    pub unrecoverable: Option<bool>,
}

/// The JavaScript message handler: a batch in, one outcome per message out.
pub type JsHandler = ThreadsafeFunction<
    InboundBatch,
    Promise<Vec<Option<HandlerFailure>>>,
    InboundBatch,
    Status,
    false,
>;

/// The JavaScript log function `(level, message)`.
pub type JsLog =
    ThreadsafeFunction<FnArgs<(String, String)>, (), FnArgs<(String, String)>, Status, false, true>;

/// The JavaScript function `(ticket, results)` that receives the results of `NativeEngine.send`
/// (weak: it does not keep the process alive; JavaScript does while sends are outstanding).
pub type JsSent = ThreadsafeFunction<
    FnArgs<(u32, Vec<Option<Failure>>)>,
    (),
    FnArgs<(u32, Vec<Option<Failure>>)>,
    Status,
    false,
    true,
>;

/// Sends the engine's log lines to JavaScript (`cds.log` of the service).
pub struct JsLogSink(pub JsLog);

impl LogSink for JsLogSink {
    fn log(&self, level: Level, message: &str) {
        let _ = self.0.call(
            (level.as_str().to_string(), message.to_string()).into(),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }
}

/// Hands batches to the JavaScript handler and turns its answers into [`Outcome`]s.
pub struct JsBridge {
    /// The handler.
    pub handler: JsHandler,
    /// MQTT: the subscribed filters, to name the one each delivery matched.
    pub filters: Option<Filters>,
}

#[async_trait]
impl Handler for JsBridge {
    async fn handle(&self, batch: Vec<Inbound>) -> Result<Vec<Outcome>> {
        self.handle_with(batch, Progress::ignore()).await
    }

    async fn handle_with(&self, batch: Vec<Inbound>, progress: Progress) -> Result<Vec<Outcome>> {
        let id = progress::register(progress.clone());
        let result = self.call(batch, id, &progress).await;
        progress::unregister(id);
        result
    }

    fn reports_handover(&self) -> bool {
        true
    }
}

impl JsBridge {
    /// Hands `batch` (registered as batch `id`) to JavaScript and waits for its outcomes;
    /// `progress` learns when JavaScript's call returned (the batch was taken).
    async fn call(
        &self,
        batch: Vec<Inbound>,
        id: u32,
        progress: &Progress,
    ) -> Result<Vec<Outcome>> {
        let mut topics = Vec::with_capacity(batch.len());
        let mut payloads = Vec::with_capacity(batch.len());
        let mut attempts = Vec::with_capacity(batch.len());
        let mut subscriptions = Vec::with_capacity(batch.len());
        let filters = self
            .filters
            .as_ref()
            .map(|f| f.read().unwrap_or_else(|e| e.into_inner()).clone());
        for m in batch {
            subscriptions.push(match &filters {
                Some(f) => subscription(f, &m.topic),
                None => m.topic.clone(),
            });
            topics.push(m.topic);
            payloads.push(m.payload);
            attempts.push(m.attempt);
        }
        let fail = |e: napi::Error| {
            Error::new(
                ErrorCode::HandlerFailed,
                format!("the JavaScript message handler failed: {}", e.reason),
            )
        };
        let promise = self
            .handler
            .call_async_catch(InboundBatch {
                topics,
                payloads,
                attempts,
                subscriptions,
                id,
            })
            .await;
        progress.handed_over();
        let outcomes = promise.map_err(fail)?.await.map_err(fail)?;
        Ok(outcomes.into_iter().map(outcome_of).collect())
    }
}

/// The outcome JavaScript reported for one message: `null` = processed.
pub fn outcome_of(o: Option<HandlerFailure>) -> Outcome {
    match o {
        None => Outcome::Ack,
        Some(f) => Outcome::Failed(HandlerError {
            message: f.message,
            code: f.code,
            unrecoverable: f.unrecoverable.unwrap_or(false),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::subscription;

    #[test]
    fn a_delivery_names_the_filter_it_matched() {
        let f: Vec<String> = ["a/b", "sensors/+/temp", "x/#"].map(String::from).to_vec();
        assert_eq!(subscription(&f, "a/b"), "a/b");
        assert_eq!(subscription(&f, "sensors/1/temp"), "sensors/+/temp");
        assert_eq!(subscription(&f, "x/y/z"), "x/#");
        assert_eq!(subscription(&f, "other"), "other");
        assert_eq!(subscription(&["#".to_string()], "$SYS/x"), "$SYS/x");
    }
}
