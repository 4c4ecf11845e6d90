use super::*;
use std::time::Duration;

use crate::config::{EngineConfig, TransportConfig};
use crate::engine::{Engine, Handler};
use crate::log::testing::Collect;
use crate::log::{Level, LogSink};
use crate::message::Outcome;
use crate::subscriptions::TopicSet;
use crate::sync::lock;
use std::sync::Mutex;

/// Records every message it sees and answers with `decide(message, nth delivery seen so far)`.
struct Recorder<F> {
    seen: Mutex<Vec<Inbound>>,
    decide: F,
}

#[async_trait]
impl<F> Handler for Recorder<F>
where
    F: Fn(&Inbound, usize) -> Outcome + Send + Sync + 'static,
{
    async fn handle(&self, batch: Vec<Inbound>) -> Result<Vec<Outcome>> {
        let mut seen = lock(&self.seen);
        Ok(batch
            .into_iter()
            .map(|m| {
                let outcome = (self.decide)(&m, seen.len());
                seen.push(m);
                outcome
            })
            .collect())
    }
}

impl<F> Recorder<F> {
    fn new(decide: F) -> Arc<Self> {
        Arc::new(Recorder {
            seen: Mutex::new(Vec::new()),
            decide,
        })
    }

    fn seen(&self) -> Vec<Inbound> {
        lock(&self.seen).clone()
    }
}

fn config(max_attempts: u32) -> EngineConfig {
    let mut c = EngineConfig::new("test-local", TransportConfig::Local);
    c.policy = RetryPolicy {
        max_attempts,
        retry_delay: Duration::from_millis(5),
        max_retry_delay: Duration::from_millis(50),
    };
    c
}

fn topics(list: &[&str]) -> TopicSet {
    TopicSet {
        topics: list.iter().map(|t| t.to_string()).collect(),
        all: false,
    }
}

fn msg(topic: &str, payload: &str) -> Outbound {
    Outbound::new(topic, payload)
}

/// Publishes one message and returns its result, failing the test if it takes too long.
async fn publish_one(engine: &Engine, topic: &str, payload: &str) -> Result<()> {
    let mut results = tokio::time::timeout(
        Duration::from_secs(5),
        engine.publish(vec![msg(topic, payload)]),
    )
    .await
    .expect("publish did not settle in time");
    assert_eq!(results.len(), 1);
    results.remove(0)
}

fn failed(message: &str) -> Outcome {
    Outcome::Failed(HandlerError::new(message))
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_resolves_after_ack_and_skips_unsubscribed_topics() {
    let engine = Engine::new(config(3), None).unwrap();
    let handler = Recorder::new(|_: &Inbound, _| Outcome::Ack);
    engine.listen(handler.clone()).await.unwrap();
    engine.subscribe(topics(&["a"])).unwrap();

    publish_one(&engine, "a", r#"{"data":1}"#).await.unwrap();
    // The emit resolved only after the handler acknowledged, so the delivery is already recorded.
    assert_eq!(
        handler.seen(),
        vec![Inbound {
            topic: "a".into(),
            payload: r#"{"data":1}"#.into(),
            attempt: 1,
        }]
    );

    publish_one(&engine, "b", r#"{"data":2}"#).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(handler.seen().len(), 1, "unsubscribed topic was delivered");
    assert!(engine.dead_letters().is_empty());

    // A batch mixing both gets one result per message, in order.
    let results = engine
        .publish(vec![msg("b", "{}"), msg("a", r#"{"data":3}"#)])
        .await;
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r.is_ok()));
    let seen = handler.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].payload, r#"{"data":3}"#);
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_failing_once_gets_the_message_again() {
    let engine = Engine::new(config(3), None).unwrap();
    let handler = Recorder::new(|_: &Inbound, nth| {
        if nth == 0 {
            failed("first time fails")
        } else {
            Outcome::Ack
        }
    });
    engine.listen(handler.clone()).await.unwrap();
    engine.subscribe(topics(&["t"])).unwrap();

    publish_one(&engine, "t", r#"{"n":1}"#).await.unwrap();
    let seen = handler.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen.iter().map(|m| m.attempt).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(seen
        .iter()
        .all(|m| m.topic == "t" && m.payload == r#"{"n":1}"#));
    assert!(engine.dead_letters().is_empty());
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_always_failing_handler_dead_letters_after_max_attempts() {
    let sink = Arc::new(Collect::default());
    let engine = Engine::new(config(3), Some(sink.clone() as Arc<dyn LogSink>)).unwrap();
    let handler = Recorder::new(|_: &Inbound, _| failed("always broken"));
    engine.listen(handler.clone()).await.unwrap();
    engine.subscribe(topics(&["orders/created"])).unwrap();

    let err = publish_one(&engine, "orders/created", r#"{"id":7}"#)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::HandlerFailed);
    assert!(err.message.contains("orders/created"), "{}", err.message);
    assert!(err.message.contains("always broken"), "{}", err.message);

    assert_eq!(
        handler.seen().iter().map(|m| m.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let dead = engine.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message.topic, "orders/created");
    assert_eq!(dead[0].message.payload, r#"{"id":7}"#);
    assert_eq!(dead[0].message.attempt, 3);
    assert_eq!(dead[0].error.message, "always broken");

    let lines = sink.lines();
    assert!(
        lines
            .iter()
            .any(|(level, line)| *level == Level::Error && line.contains("orders/created")),
        "no error line about the topic in {lines:?}"
    );
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unrecoverable_error_is_dead_lettered_at_once() {
    let engine = Engine::new(config(5), None).unwrap();
    let handler = Recorder::new(|_: &Inbound, _| {
        Outcome::Failed(HandlerError {
            message: "bad data".into(),
            code: Some("E_BAD".into()),
            unrecoverable: true,
        })
    });
    engine.listen(handler.clone()).await.unwrap();
    engine.subscribe(topics(&["t"])).unwrap();

    let err = publish_one(&engine, "t", "{}").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::HandlerFailed);
    assert!(err.message.contains("E_BAD"), "{}", err.message);
    assert_eq!(handler.seen().len(), 1);
    let dead = engine.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message.attempt, 1);
    assert!(dead[0].error.unrecoverable);
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_after_close_is_rejected() {
    let engine = Engine::new(config(3), None).unwrap();
    let handler = Recorder::new(|_: &Inbound, _| Outcome::Ack);
    engine.listen(handler.clone()).await.unwrap();
    engine.subscribe(topics(&["t"])).unwrap();
    engine.close().await.unwrap();
    // close is idempotent
    engine.close().await.unwrap();

    let err = publish_one(&engine, "t", "{}").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Closed);
    assert!(err.message.contains("'t'"), "{}", err.message);
    assert_eq!(
        engine.subscribe(topics(&["u"])).unwrap_err().code,
        ErrorCode::Closed
    );
    assert!(handler.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_emit_waiting_for_redelivery_settles_when_the_engine_closes() {
    let mut c = config(3);
    c.policy.retry_delay = Duration::from_millis(100);
    c.policy.max_retry_delay = Duration::from_millis(100);
    let engine = Arc::new(Engine::new(c, None).unwrap());
    let handler = Recorder::new(|_: &Inbound, _| failed("fails"));
    engine.listen(handler.clone()).await.unwrap();
    engine.subscribe(topics(&["t"])).unwrap();

    let emit = tokio::spawn({
        let engine = engine.clone();
        async move { engine.publish(vec![msg("t", "{}")]).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while handler.seen().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    engine.close().await.unwrap();

    let results = tokio::time::timeout(Duration::from_secs(2), emit)
        .await
        .expect("the emit hangs after close")
        .unwrap();
    assert_eq!(
        results[0].as_ref().unwrap_err().code,
        ErrorCode::Closed,
        "{results:?}"
    );
    assert!(engine.dead_letters().is_empty());
    // The redelivery never reaches the handler of a closed engine.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(handler.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_attempt_failed_outside_the_engine_continues_as_attempt_two_then_dead_letters() {
    let engine = Engine::new(config(3), None).unwrap();
    // attempt 2 fails, attempt 3 fails: dead letter after 3 attempts in all
    let handler = Recorder::new(|_: &Inbound, _| failed("still failing"));
    engine.listen(handler.clone()).await.unwrap();
    engine.subscribe(topics(&["x"])).unwrap();
    let results = tokio::time::timeout(
        Duration::from_secs(5),
        engine.redeliver(vec![(msg("x", "{}"), HandlerError::new("first"))], false),
    )
    .await
    .expect("redeliver did not settle in time");
    let err = results.into_iter().next().unwrap().unwrap_err();
    assert!(err.message.contains("failed 3 time(s)"), "{}", err.message);
    let attempts: Vec<u32> = handler.seen().iter().map(|m| m.attempt).collect();
    assert_eq!(attempts, vec![2, 3]);
    let dead = engine.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message.attempt, 3);
    let s = engine.stats();
    assert_eq!((s.redelivered, s.dead_lettered, s.emit_failures), (2, 1, 1));
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unrecoverable_first_attempt_outside_the_engine_is_dead_lettered_at_once() {
    let engine = Engine::new(config(3), None).unwrap();
    let handler = Recorder::new(|_: &Inbound, _| Outcome::Ack);
    engine.listen(handler.clone()).await.unwrap();
    engine.subscribe(topics(&["x"])).unwrap();
    let mut fatal = HandlerError::new("never");
    fatal.unrecoverable = true;
    let results = engine.redeliver(vec![(msg("x", "{}"), fatal)], true).await;
    assert!(results[0].is_err());
    assert!(handler.seen().is_empty());
    assert_eq!(engine.dead_letters()[0].message.attempt, 1);
    engine.close().await.unwrap();
}
