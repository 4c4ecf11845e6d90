//! The dispatcher: batches deliveries, bounds what is in flight, applies the retry policy.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use super::Handler;
use crate::log::Logger;
use crate::message::{Delivery, HandlerError, Outcome};
use crate::policy::{Decision, RetryPolicy};

pub(super) struct Settings {
    pub policy: RetryPolicy,
    pub max_in_flight: usize,
    pub max_batch: usize,
    pub dead_letter: String,
    pub log: Logger,
}

/// Runs until every sender of `rx` is gone.
pub(super) async fn run(
    mut rx: mpsc::Receiver<Delivery>,
    handler: Arc<dyn Handler>,
    settings: Settings,
) {
    let settings = Arc::new(settings);
    let permits = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
    loop {
        let Ok(mut held) = permits.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < settings.max_batch {
            let Ok(p) = permits.clone().try_acquire_owned() else {
                break;
            };
            match rx.try_recv() {
                Ok(d) => {
                    held.merge(p);
                    batch.push(d);
                }
                Err(_) => break,
            }
        }
        let handler = handler.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            process(batch, handler.as_ref(), &settings).await;
            drop(held);
        });
    }
}

async fn process(batch: Vec<Delivery>, handler: &dyn Handler, s: &Settings) {
    let (messages, settles): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|d| (d.message, d.settle)).unzip();
    let topics_attempts: Vec<(String, u32)> = messages
        .iter()
        .map(|m| (m.topic.clone(), m.attempt))
        .collect();
    let n = messages.len();
    let outcomes = match handler.handle(messages).await {
        Ok(o) if o.len() == n => o,
        Ok(o) => {
            s.log.error(&format!(
                "internal: handler returned {} outcomes for {n} messages; redelivering the batch",
                o.len()
            ));
            return redeliver_all(settles, &topics_attempts, s, "handler outcome mismatch");
        }
        Err(e) => {
            s.log.warn(&format!(
                "could not hand {n} message(s) to the handlers ({}); they will be redelivered",
                e.full_message()
            ));
            return redeliver_all(settles, &topics_attempts, s, &e.full_message());
        }
    };
    for ((settle, outcome), (topic, attempt)) in
        settles.into_iter().zip(outcomes).zip(topics_attempts)
    {
        match outcome {
            Outcome::Ack => settle.ack(),
            Outcome::Failed(err) => match s.policy.decide(attempt, &err) {
                Decision::Retry(delay) => {
                    s.log.warn(&format!(
                        "handler failed for message on topic '{topic}' (attempt {attempt} of {}), redelivering in {} ms: {}",
                        s.policy.max_attempts,
                        delay.as_millis(),
                        err.message
                    ));
                    settle.retry(delay, &err);
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
                    settle.dead_letter(&err);
                }
            },
        }
    }
}

fn redeliver_all(
    settles: Vec<Box<dyn crate::message::Settle>>,
    topics_attempts: &[(String, u32)],
    s: &Settings,
    why: &str,
) {
    let err = HandlerError::new(why);
    for (settle, (_, attempt)) in settles.into_iter().zip(topics_attempts) {
        settle.retry(s.policy.backoff(*attempt), &err);
    }
}
