//! The dispatcher: batches deliveries, bounds what is in flight, applies the retry policy.
//!
//! Every delivery holds one in-flight permit until *it* is settled — not until its batch is: a
//! message whose outcome the handler reports early ([`Progress`]) is settled and frees its permit at
//! once, so one handler that never settles holds one permit, not a batch's worth. An acknowledged
//! delivery's permit goes to its transport ([`InFlight`]), which may keep it until the broker has
//! the acknowledgement (Redis Streams does). Every way a delivery goes back (a failed handler, a
//! failed call, a dropped promise, an outcome mismatch) counts an attempt, so `max_attempts` always
//! ends it with a dead letter. Where the transport's broker does not redeliver, the engine does
//! ([`InProcess`]), through the channel the delivery came by.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::progress::Progress;
use super::redelivery::InProcess;
use super::Handler;
use crate::log::Logger;
use crate::message::{Delivery, HandlerError, InFlight, Inbound, Outcome, Settle};
use crate::policy::{Decision, RetryPolicy};

pub(super) struct Settings {
    pub policy: RetryPolicy,
    pub max_in_flight: usize,
    pub max_batch: usize,
    pub dead_letter: String,
    pub log: Logger,
    /// Set when the engine redelivers (the transport's broker does not).
    pub in_process: Option<InProcess>,
}

/// Runs until every sender of `rx` is gone. Deliveries from `bypass` need no permit.
pub(super) async fn run(
    mut rx: mpsc::Receiver<Delivery>,
    mut bypass: mpsc::UnboundedReceiver<Delivery>,
    handler: Arc<dyn Handler>,
    settings: Settings,
) {
    let settings = Arc::new(settings);
    let permits = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
    // At most one batch waits for the handlers to take it (see `Handler::reports_handover`).
    let handover = handler
        .reports_handover()
        .then(|| Arc::new(Semaphore::new(1)));
    let mut bypass_open = true;
    loop {
        let next = async {
            let permit = permits.clone().acquire_owned().await.ok()?;
            Some((rx.recv().await?, permit))
        };
        let mut batch = tokio::select! {
            biased;
            d = bypass.recv(), if bypass_open => match d {
                Some(d) => {
                    let mut batch = vec![(d, None)];
                    while batch.len() < settings.max_batch {
                        match bypass.try_recv() {
                            Ok(d) => batch.push((d, None)),
                            Err(_) => break,
                        }
                    }
                    let (handler, settings) = (handler.clone(), settings.clone());
                    tokio::spawn(async move { process(batch, handler.as_ref(), settings, None).await });
                    continue;
                }
                None => {
                    bypass_open = false;
                    continue;
                }
            },
            first = next => match first {
                Some((d, permit)) => vec![(d, Some(permit))],
                None => return,
            },
        };
        // The previous batch still waits for the JS thread: what arrives until it is taken joins
        // this one (one call per busy period instead of one per delivery; measured in the README,
        // "Hand-over batching").
        let gate = match &handover {
            Some(h) => h.clone().acquire_owned().await.ok(),
            None => None,
        };
        // A transport that queues a burst one delivery at a time (MQTT's event loop) woke this task
        // with the first one; one turn of the scheduler lets it queue the rest, so the burst becomes
        // one handler call instead of one per message (measured: 372 of 476 batches were single
        // messages at 100 in flight; see README "Benchmark").
        if rx.is_empty() {
            tokio::task::yield_now().await;
        }
        while batch.len() < settings.max_batch {
            let Ok(p) = permits.clone().try_acquire_owned() else {
                break;
            };
            match rx.try_recv() {
                Ok(d) => batch.push((d, Some(p))),
                Err(_) => break,
            }
        }
        let handler = handler.clone();
        let settings = settings.clone();
        tokio::spawn(async move { process(batch, handler.as_ref(), settings, gate).await });
    }
}

/// One delivery of a batch in flight: settled once, then its permit is released.
struct Slot {
    settle: Box<dyn Settle>,
    topic: String,
    attempt: u32,
    /// The message itself, kept where the engine redelivers or keeps dead letters.
    message: Option<Inbound>,
    /// `None` for a delivery that bypasses the in-flight bound.
    permit: Option<OwnedSemaphorePermit>,
}

/// The unsettled deliveries of one batch, by index.
struct Slots {
    slots: Mutex<Vec<Option<Slot>>>,
    settings: Arc<Settings>,
}

impl Slots {
    /// Settles delivery `i` with `outcome` unless it is settled already.
    fn settle(&self, i: usize, outcome: Outcome) {
        let slot = crate::sync::lock(&self.slots)
            .get_mut(i)
            .and_then(Option::take);
        if let Some(slot) = slot {
            apply(slot, outcome, &self.settings);
        }
    }

    /// Fails every delivery not yet settled with `why` (each counts an attempt).
    fn fail_rest(&self, why: &str) {
        let rest: Vec<Slot> = crate::sync::lock(&self.slots)
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for slot in rest {
            apply(
                slot,
                Outcome::Failed(HandlerError::new(why)),
                &self.settings,
            );
        }
    }
}

type Batch = Vec<(Delivery, Option<OwnedSemaphorePermit>)>;

/// Hands `batch` to `handler` and settles each delivery; `gate` is released once the handler has
/// taken the batch.
async fn process(
    batch: Batch,
    handler: &dyn Handler,
    s: Arc<Settings>,
    gate: Option<OwnedSemaphorePermit>,
) {
    let n = batch.len();
    let mut messages = Vec::with_capacity(n);
    let mut slots = Vec::with_capacity(n);
    for (d, permit) in batch {
        slots.push(Some(Slot {
            settle: d.settle,
            topic: d.message.topic.clone(),
            attempt: d.message.attempt,
            message: s.in_process.as_ref().map(|_| d.message.clone()),
            permit,
        }));
        messages.push(d.message);
    }
    let slots = Arc::new(Slots {
        slots: Mutex::new(slots),
        settings: s.clone(),
    });
    let early = slots.clone();
    // Early reports come from JavaScript's thread, outside the runtime; settling may spawn tasks
    // (a dead letter, a delayed retry), so it runs in the runtime's context.
    let runtime = tokio::runtime::Handle::current();
    let progress = Progress::new(move |i, outcome| {
        let _in_runtime = runtime.enter();
        early.settle(i, outcome)
    })
    .holding(gate);
    s.log.stats().delivered(n);
    let result = handler.handle_with(messages, progress.clone()).await;
    progress.handed_over();
    match result {
        Ok(outcomes) if outcomes.len() == n => {
            for (i, outcome) in outcomes.into_iter().enumerate() {
                slots.settle(i, outcome);
            }
        }
        Ok(o) => {
            s.log.error(&format!(
                "internal: handler returned {} outcomes for {n} messages; redelivering the batch",
                o.len()
            ));
            slots.fail_rest("handler outcome mismatch");
        }
        Err(e) => {
            s.log.warn(&format!(
                "could not hand {n} message(s) to the handlers ({}); they will be redelivered",
                e.full_message()
            ));
            slots.fail_rest(&e.full_message());
        }
    }
}

/// Acknowledges, redelivers or dead-letters one delivery by the retry policy.
fn apply(slot: Slot, outcome: Outcome, s: &Settings) {
    let Slot {
        settle,
        topic,
        attempt,
        message,
        permit,
    } = slot;
    match outcome {
        Outcome::Ack => {
            s.log.stats().acked();
            // the permit goes with the acknowledgement; every other outcome frees it below
            settle.ack(InFlight::new(permit));
            return;
        }
        Outcome::Failed(err) => match s.policy.decide(attempt, &err) {
            Decision::Retry(delay) => {
                s.log.warn(&format!(
                    "handler failed for message on topic '{topic}' (attempt {attempt} of {}), redelivering in {} ms: {}",
                    s.policy.max_attempts,
                    delay.as_millis(),
                    err.message
                ));
                s.log.stats().redelivered(&err.message);
                match (&s.in_process, message) {
                    (Some(r), Some(m)) => r.later(m, settle, delay, permit.is_none()),
                    _ => settle.retry(delay, &err),
                }
            }
            Decision::DeadLetter => {
                let why = if err.unrecoverable {
                    "failed with an unrecoverable error".to_string()
                } else {
                    format!("failed {attempt} time(s)")
                };
                s.log.error(&format!(
                    "message on topic '{topic}' {why} and was moved to the dead-letter place {}: {}",
                    s.dead_letter, err.message
                ));
                s.log.stats().dead_lettered(&err.message);
                if let (Some(r), Some(m)) = (&s.in_process, message) {
                    r.dead_letter(m, &err);
                }
                settle.dead_letter(&err);
            }
        },
    }
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Settles by spawning a tokio task, as the MQTT, AMQP, file and Redis Streams settles do.
    struct SpawningSettle(mpsc::UnboundedSender<&'static str>);

    impl Settle for SpawningSettle {
        fn ack(self: Box<Self>, _place: InFlight) {
            tokio::spawn(async move {
                let _ = self.0.send("ack");
            });
        }
        fn dead_letter(self: Box<Self>, _error: &HandlerError) {
            tokio::spawn(async move {
                let _ = self.0.send("dead-letter");
            });
        }
    }

    /// Reports its outcomes early from a thread outside the runtime, as JavaScript does through
    /// the napi bridge (the main thread of Node.js), then returns them again.
    struct ReportsFromAnotherThread;

    #[async_trait::async_trait]
    impl Handler for ReportsFromAnotherThread {
        async fn handle(&self, batch: Vec<Inbound>) -> crate::error::Result<Vec<Outcome>> {
            Ok(batch.iter().map(|_| Outcome::Ack).collect())
        }
        async fn handle_with(
            &self,
            batch: Vec<Inbound>,
            progress: Progress,
        ) -> crate::error::Result<Vec<Outcome>> {
            let outcomes: Vec<Outcome> = batch
                .iter()
                .map(|m| match m.topic.as_str() {
                    "fails" => Outcome::Failed(HandlerError::new("boom")),
                    _ => Outcome::Ack,
                })
                .collect();
            let early = outcomes.clone();
            let joined = std::thread::spawn(move || {
                for (i, o) in early.into_iter().enumerate() {
                    progress.report(i, o);
                }
            })
            .join();
            assert!(
                joined.is_ok(),
                "an early report outside the runtime panicked"
            );
            Ok(outcomes)
        }
    }

    #[tokio::test]
    async fn an_outcome_reported_from_a_thread_outside_the_runtime_settles_without_a_panic() {
        // Found by the @sap/cds 10 pass: an MQTT dead letter reported early from the JS thread
        // called tokio::spawn there ("there is no reactor running") and aborted the process.
        let (tx, rx) = mpsc::channel(4);
        let (settled_tx, mut settled) = mpsc::unbounded_channel();
        let settings = Settings {
            policy: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            max_in_flight: 10,
            max_batch: 10,
            dead_letter: "nowhere".into(),
            log: Logger::new("test", None),
            in_process: None,
        };
        let (_bypass_tx, bypass_rx) = mpsc::unbounded_channel();
        let dispatcher = tokio::spawn(run(
            rx,
            bypass_rx,
            Arc::new(ReportsFromAnotherThread),
            settings,
        ));
        for topic in ["ok", "fails"] {
            let d = Delivery {
                message: Inbound {
                    topic: topic.into(),
                    payload: "{}".into(),
                    attempt: 1,
                },
                settle: Box::new(SpawningSettle(settled_tx.clone())),
            };
            tx.send(d).await.unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..2 {
            let s = tokio::time::timeout(Duration::from_secs(5), settled.recv())
                .await
                .expect("both deliveries settled")
                .unwrap();
            got.push(s);
        }
        got.sort();
        assert_eq!(got, ["ack", "dead-letter"]);
        drop(tx);
        let _ = dispatcher.await;
    }

    /// Takes a batch only when the test says so (as a busy JS thread would), then acknowledges it.
    struct SlowToTake {
        sizes: mpsc::UnboundedSender<usize>,
        take: Arc<tokio::sync::Semaphore>,
    }

    #[async_trait::async_trait]
    impl Handler for SlowToTake {
        async fn handle(&self, batch: Vec<Inbound>) -> crate::error::Result<Vec<Outcome>> {
            Ok(batch.iter().map(|_| Outcome::Ack).collect())
        }
        async fn handle_with(
            &self,
            batch: Vec<Inbound>,
            progress: Progress,
        ) -> crate::error::Result<Vec<Outcome>> {
            let _ = self.sizes.send(batch.len());
            if let Ok(p) = self.take.acquire().await {
                p.forget();
            }
            progress.handed_over();
            Ok(batch.iter().map(|_| Outcome::Ack).collect())
        }
        fn reports_handover(&self) -> bool {
            true
        }
    }

    struct Ignore;
    impl Settle for Ignore {
        fn ack(self: Box<Self>, _place: InFlight) {}
        fn dead_letter(self: Box<Self>, _error: &HandlerError) {}
    }

    #[tokio::test]
    async fn deliveries_that_trickle_in_while_a_batch_waits_to_be_taken_make_one_batch() {
        // issue #16: MQTT and AMQP deliveries trickle in one by one; with a batch cut for each,
        // the JS thread got 1,600-5,000 calls per 10,000 messages, most of them single messages.
        let (tx, rx) = mpsc::channel(64);
        let (sizes_tx, mut sizes) = mpsc::unbounded_channel();
        let take = Arc::new(tokio::sync::Semaphore::new(0));
        let settings = Settings {
            policy: RetryPolicy::default(),
            max_in_flight: 100,
            max_batch: 100,
            dead_letter: "nowhere".into(),
            log: Logger::new("test", None),
            in_process: None,
        };
        let (_bypass_tx, bypass_rx) = mpsc::unbounded_channel();
        let handler = Arc::new(SlowToTake {
            sizes: sizes_tx,
            take: take.clone(),
        });
        let dispatcher = tokio::spawn(run(rx, bypass_rx, handler, settings));
        let delivery = |i: usize| Delivery {
            message: Inbound {
                topic: format!("t{i}"),
                payload: "{}".into(),
                attempt: 1,
            },
            settle: Box::new(Ignore),
        };
        tx.send(delivery(0)).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), sizes.recv()).await;
        assert_eq!(first.ok().flatten(), Some(1));
        // ten more, one at a time, while the first batch is not taken yet
        for i in 1..=10 {
            tx.send(delivery(i)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        take.add_permits(100);
        let second = tokio::time::timeout(Duration::from_secs(5), sizes.recv()).await;
        assert_eq!(
            second.ok().flatten(),
            Some(10),
            "the deliveries that arrived meanwhile should make one batch"
        );
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), dispatcher).await;
    }

    /// Keeps every acknowledged delivery's place, as a transport does until its broker confirmed.
    struct HoldsPlace(Arc<Mutex<Vec<InFlight>>>);
    impl Settle for HoldsPlace {
        fn ack(self: Box<Self>, place: InFlight) {
            crate::sync::lock(&self.0).push(place);
        }
        fn dead_letter(self: Box<Self>, _error: &HandlerError) {}
    }

    /// Counts the messages it is given and acknowledges them.
    struct CountsAndAcks(Arc<std::sync::atomic::AtomicUsize>);
    #[async_trait::async_trait]
    impl Handler for CountsAndAcks {
        async fn handle(&self, batch: Vec<Inbound>) -> crate::error::Result<Vec<Outcome>> {
            self.0
                .fetch_add(batch.len(), std::sync::atomic::Ordering::AcqRel);
            Ok(batch.iter().map(|_| Outcome::Ack).collect())
        }
    }

    #[tokio::test]
    async fn acknowledgements_whose_transport_keeps_their_place_count_against_max_in_flight() {
        // Redis Streams under a stalled Redis: handlers went on while no XACK could land, so a
        // crash then brought back everything processed meanwhile, not at most maxInFlight.
        let (tx, rx) = mpsc::channel(64);
        let places = Arc::new(Mutex::new(Vec::new()));
        let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let settings = Settings {
            policy: RetryPolicy::default(),
            max_in_flight: 5,
            max_batch: 100,
            dead_letter: "nowhere".into(),
            log: Logger::new("test", None),
            in_process: None,
        };
        let (_bypass_tx, bypass_rx) = mpsc::unbounded_channel();
        let handler = Arc::new(CountsAndAcks(handled.clone()));
        let dispatcher = tokio::spawn(run(rx, bypass_rx, handler, settings));
        for i in 0..20 {
            let d = Delivery {
                message: Inbound {
                    topic: format!("t{i}"),
                    payload: "{}".into(),
                    attempt: 1,
                },
                settle: Box::new(HoldsPlace(places.clone())),
            };
            tx.send(d).await.unwrap();
        }
        let count = || handled.load(std::sync::atomic::Ordering::Acquire);
        let settled = |n: usize| {
            let places = places.clone();
            async move {
                while crate::sync::lock(&places).len() < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        let first = tokio::time::timeout(Duration::from_secs(5), settled(5)).await;
        assert!(first.is_ok(), "the first 5 deliveries were acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            count(),
            5,
            "no delivery while 5 acknowledgements keep their place"
        );
        crate::sync::lock(&places).clear(); // the broker confirmed them
        let next = tokio::time::timeout(Duration::from_secs(5), settled(5)).await;
        assert!(next.is_ok(), "the next 5 came once the places were freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(count(), 10);
        dispatcher.abort();
    }
}
