use super::*;

use std::sync::atomic::AtomicUsize;

use crate::config::{EngineConfig, TransportConfig};
use crate::engine::{Engine, Handler};
use crate::log::testing::Collect;
use crate::log::{Level, LogSink};
use crate::message::Outcome;
use crate::subscriptions::TopicSet;

/// A pid that does not run (0x7ffffff0).
const DEAD_PID: u32 = 2147483632;

fn file_config(dir: &Path) -> FileConfig {
    let mut c = FileConfig::new(dir.join("box"));
    c.poll_interval = Duration::from_millis(20);
    c.fsync = false;
    c
}

fn engine_config(file: &FileConfig, max_attempts: u32) -> EngineConfig {
    let mut c = EngineConfig::new("test-file", TransportConfig::File(file.clone()));
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

fn lock_vec<T: Clone>(m: &Mutex<Vec<T>>) -> Vec<T> {
    match m.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// Records every delivery and answers with `decide(message, deliveries seen before it)`.
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
        let mut seen = match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
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
        lock_vec(&self.seen)
    }
}

/// Counts deliveries and never settles them.
#[derive(Default)]
struct Stuck {
    delivered: AtomicUsize,
}

#[async_trait]
impl Handler for Stuck {
    async fn handle(&self, batch: Vec<Inbound>) -> Result<Vec<Outcome>> {
        self.delivered.fetch_add(batch.len(), Ordering::SeqCst);
        futures::future::pending().await
    }
}

/// Waits (up to 10 s) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct BoxContent {
    /// Unclaimed `(topic, json)` lines.
    messages: Vec<(String, String)>,
    /// Claimed lines as `(topic, attempt)`.
    claimed: Vec<(String, u32)>,
    /// Anything else that is not blank.
    other: Vec<String>,
}

impl BoxContent {
    fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.claimed.is_empty() && self.other.is_empty()
    }
}

fn read_box(path: &Path) -> BoxContent {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = BoxContent::default();
    for raw in text.split('\n') {
        match line::parse(raw) {
            line::Line::Blank => {}
            line::Line::Message { topic, json } => {
                out.messages.push((topic.to_string(), json.to_string()))
            }
            line::Line::Claimed { claim, topic, .. } => {
                out.claimed.push((topic.to_string(), claim.attempt))
            }
            line::Line::Malformed(s) => out.other.push(s.to_string()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engines_on_one_box_deliver_each_message_exactly_once() {
    const N: usize = 500;
    const BATCH: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let file = file_config(dir.path());

    let publisher = Engine::new(engine_config(&file, 3), None).unwrap();
    let consumer = Engine::new(engine_config(&file, 3), None).unwrap();
    let handler = Recorder::new(|_: &Inbound, _| Outcome::Ack);
    consumer.listen(handler.clone()).await.unwrap();
    consumer.subscribe(topics(&["load"])).unwrap();

    // Batches are published concurrently, so the writer groups them.
    let batches = (0..N / BATCH).map(|b| {
        let batch: Vec<Outbound> = (0..BATCH)
            .map(|i| {
                msg(
                    "load",
                    &format!(r#"{{"data":{{"i":{}}},"headers":{{}}}}"#, b * BATCH + i),
                )
            })
            .collect();
        publisher.publish(batch)
    });
    for results in futures::future::join_all(batches).await {
        assert_eq!(results.len(), BATCH);
        for r in results {
            r.unwrap();
        }
    }

    eventually("all messages to be handled and acknowledged", || {
        handler.seen().len() >= N && read_box(&file.path).is_empty()
    })
    .await;
    // Give a duplicate the chance to show up.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let seen = handler.seen();
    assert_eq!(seen.len(), N, "some messages were handled more than once");
    let mut counts = vec![0usize; N];
    for m in &seen {
        assert_eq!(m.topic, "load");
        assert_eq!(m.attempt, 1);
        let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        counts[v["data"]["i"].as_u64().unwrap() as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c == 1), "{counts:?}");
    assert_eq!(read_box(&file.path), BoxContent::default());
    assert!(!file.dead_letter_path.exists());
    assert!(!file.malformed_path.exists());

    consumer.close().await.unwrap();
    publisher.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn competing_consumers_share_the_work_without_duplicates() {
    const N: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let file = file_config(dir.path());
    let mut config = engine_config(&file, 3);
    config.max_in_flight = 10;

    let first = Engine::new(config.clone(), None).unwrap();
    let second = Engine::new(config.clone(), None).unwrap();
    let h1 = Recorder::new(|_: &Inbound, _| Outcome::Ack);
    let h2 = Recorder::new(|_: &Inbound, _| Outcome::Ack);
    first.listen(h1.clone()).await.unwrap();
    second.listen(h2.clone()).await.unwrap();
    first.subscribe(topics(&["work"])).unwrap();
    second.subscribe(topics(&["work"])).unwrap();

    for chunk in (0..N).collect::<Vec<_>>().chunks(20) {
        let batch = chunk
            .iter()
            .map(|i| msg("work", &format!(r#"{{"i":{i}}}"#)))
            .collect();
        for r in first.publish(batch).await {
            r.unwrap();
        }
    }
    let t0 = Instant::now();
    let done = || h1.seen().len() + h2.seen().len() >= N && read_box(&file.path).is_empty();
    while !done() && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "competing consumers: {} + {} handled after {} ms",
        h1.seen().len(),
        h2.seen().len(),
        t0.elapsed().as_millis()
    );
    assert!(done(), "timed out waiting for all work to be done");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut counts = vec![0usize; N];
    for m in h1.seen().iter().chain(h2.seen().iter()) {
        assert_eq!(m.attempt, 1);
        let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        counts[v["i"].as_u64().unwrap() as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c == 1), "{counts:?}");
    first.close().await.unwrap();
    second.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_one_in_flight_messages_are_handled_one_by_one_in_box_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_config(dir.path());
    let mut config = engine_config(&file, 3);
    config.max_in_flight = 1;
    config.max_batch = 1;
    let engine = Engine::new(config, None).unwrap();
    let handler = Recorder::new(|_: &Inbound, _| Outcome::Ack);
    engine.listen(handler.clone()).await.unwrap();
    engine.subscribe(topics(&["seq"])).unwrap();

    let batch = (0..20)
        .map(|i| msg("seq", &format!(r#"{{"i":{i}}}"#)))
        .collect();
    for r in engine.publish(batch).await {
        r.unwrap();
    }
    eventually("all messages to be handled", || {
        handler.seen().len() >= 20 && read_box(&file.path).is_empty()
    })
    .await;
    let payloads: Vec<String> = handler.seen().into_iter().map(|m| m.payload).collect();
    let expected: Vec<String> = (0..20).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
    assert_eq!(payloads, expected);
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_failed_once_is_redelivered_and_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_config(dir.path());
    let engine = Engine::new(engine_config(&file, 3), None).unwrap();
    let handler = Recorder::new(|_: &Inbound, nth| {
        if nth == 0 {
            Outcome::Failed(HandlerError::new("not yet"))
        } else {
            Outcome::Ack
        }
    });
    engine.listen(handler.clone()).await.unwrap();
    engine.subscribe(topics(&["t"])).unwrap();

    let payload = r#"{"data":{"x":1},"headers":{}}"#;
    for r in engine.publish(vec![msg("t", payload)]).await {
        r.unwrap();
    }
    eventually("the redelivery to be acknowledged", || {
        handler.seen().len() >= 2 && read_box(&file.path).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let seen = handler.seen();
    assert_eq!(
        seen.iter().map(|m| m.attempt).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(seen.iter().all(|m| m.topic == "t" && m.payload == payload));
    assert!(!file.dead_letter_path.exists());
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_always_failing_message_ends_up_in_the_dead_letter_box() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_config(dir.path());
    let sink = Arc::new(Collect::default());
    let engine = Engine::new(
        engine_config(&file, 2),
        Some(sink.clone() as Arc<dyn LogSink>),
    )
    .unwrap();
    let handler = Recorder::new(|_: &Inbound, _| Outcome::Failed(HandlerError::new("broken")));
    engine.listen(handler.clone()).await.unwrap();
    engine.subscribe(topics(&["t/dead"])).unwrap();

    let payload = r#"{"data":{"x":1},"headers":{}}"#;
    for r in engine.publish(vec![msg("t/dead", payload)]).await {
        r.unwrap();
    }
    let expected = format!("\nt/dead {payload}");
    eventually("the dead letter to be written", || {
        std::fs::read_to_string(&file.dead_letter_path).unwrap_or_default() == expected
            && read_box(&file.path).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    assert_eq!(
        handler.seen().iter().map(|m| m.attempt).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(
        std::fs::read_to_string(&file.dead_letter_path).unwrap(),
        expected
    );
    assert!(sink
        .lines()
        .iter()
        .any(|(level, l)| *level == Level::Error && l.contains("t/dead")));
    // The file transport keeps no dead letters in memory.
    assert!(engine.dead_letters().is_empty());
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn close_gives_unacknowledged_messages_back_to_the_box() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_config(dir.path());
    let engine = Engine::new(engine_config(&file, 3), None).unwrap();
    let handler = Arc::new(Stuck::default());
    engine.listen(handler.clone()).await.unwrap();
    engine.subscribe(topics(&["t"])).unwrap();

    let payload = r#"{"data":{"x":1},"headers":{}}"#;
    for r in engine.publish(vec![msg("t", payload)]).await {
        r.unwrap();
    }
    eventually("the message to be delivered", || {
        handler.delivered.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(read_box(&file.path).claimed, vec![("t".to_string(), 1)]);

    // Waits DRAIN_TIMEOUT for the stuck handler, then releases the claim.
    let started = Instant::now();
    engine.close().await.unwrap();
    assert!(started.elapsed() < DRAIN_TIMEOUT + Duration::from_secs(2));

    assert_eq!(
        read_box(&file.path),
        BoxContent {
            messages: vec![("t".to_string(), payload.to_string())],
            ..Default::default()
        }
    );
    assert_eq!(
        std::fs::read_to_string(&file.path).unwrap(),
        format!("\nt {payload}")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_left_by_a_crashed_process_is_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_config(dir.path());
    let payload = r#"{"data":{"x":1},"headers":{}}"#;
    let mut text = String::new();
    line::write_claimed(
        &mut text,
        &line::Claim {
            owner: Owner {
                host: crate::transport::support::host::host_name(),
                pid: DEAD_PID,
                start: 0,
                instance: 1,
            },
            seq: 12,
            attempt: 1,
        },
        "t",
        payload,
    );
    std::fs::write(&file.path, text).unwrap();

    let engine = Engine::new(engine_config(&file, 3), None).unwrap();
    let handler = Recorder::new(|_: &Inbound, _| Outcome::Ack);
    engine.listen(handler.clone()).await.unwrap();
    engine.subscribe(topics(&["t"])).unwrap();
    eventually("the taken-over message to be acknowledged", || {
        !handler.seen().is_empty() && read_box(&file.path).is_empty()
    })
    .await;
    assert_eq!(
        handler.seen(),
        vec![Inbound {
            topic: "t".into(),
            payload: payload.into(),
            attempt: 2,
        }]
    );
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_rejects_topics_and_payloads_that_do_not_fit_a_box_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = file_config(dir.path());
    let engine = Engine::new(engine_config(&file, 3), None).unwrap();

    let results = engine
        .publish(vec![
            msg("has space", "{}"),
            msg("ok", r#"{"data":1}"#),
            msg("", "{}"),
            msg("~claim/h/1.1.1/1/t", "{}"),
            msg("t", "[1]"),
            msg("t", "{\n}"),
        ])
        .await;
    assert_eq!(results.len(), 6);
    assert!(results[1].is_ok());
    for (i, r) in results.iter().enumerate().filter(|(i, _)| *i != 1) {
        let err = r.as_ref().unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidDataFormat, "message {i}");
    }
    assert!(results[0]
        .as_ref()
        .unwrap_err()
        .message
        .contains("'has space'"));
    // Only the valid message was written.
    assert_eq!(
        std::fs::read_to_string(&file.path).unwrap(),
        "\n\nok {\"data\":1}"
    );

    engine.close().await.unwrap();
    let results = engine.publish(vec![msg("ok", "{}")]).await;
    assert_eq!(results[0].as_ref().unwrap_err().code, ErrorCode::Closed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_transport_rejects_publish() {
    let dir = tempfile::tempdir().unwrap();
    let transport = FileTransport::new(file_config(dir.path()), Logger::default()).unwrap();
    transport.close().await.unwrap();
    let results = transport.publish(vec![msg("t", "{}")]).await;
    assert_eq!(results[0].as_ref().unwrap_err().code, ErrorCode::Closed);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("box")).unwrap(),
        "\n"
    );
}

#[test]
fn validate_rejects_bad_paths_and_settings() {
    let dir = tempfile::tempdir().unwrap();

    let empty = FileConfig::new("");
    assert_eq!(empty.validate().unwrap_err().code, ErrorCode::InvalidConfig);

    let is_dir = FileConfig::new(dir.path());
    let err = is_dir.validate().unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidConfig);
    assert!(err.message.contains("directory"), "{}", err.message);
    // The engine refuses it too, before touching anything.
    let err = Engine::new(EngineConfig::new("x", TransportConfig::File(is_dir)), None)
        .err()
        .expect("a directory must be rejected");
    assert_eq!(err.code, ErrorCode::InvalidConfig);

    let mut c = FileConfig::new(dir.path().join("box"));
    c.validate().unwrap();
    assert_eq!(c.dead_letter_path, dir.path().join("box.dead"));
    assert_eq!(c.malformed_path, dir.path().join("box.malformed"));
    c.poll_interval = Duration::from_millis(1);
    assert_eq!(c.validate().unwrap_err().code, ErrorCode::InvalidConfig);

    let mut c = FileConfig::new(dir.path().join("box"));
    c.dead_letter_path = c.path.clone();
    assert_eq!(c.validate().unwrap_err().code, ErrorCode::InvalidConfig);

    assert!(!dir.path().join("box").exists());
}
