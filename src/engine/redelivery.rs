//! In-process redelivery, for transports without a broker that could redeliver (local, Redis
//! pub/sub, MQTT's handler retries): the engine holds a failed delivery for its back-off and feeds
//! it to its own dispatcher again, and keeps the dead letters of transports that have no
//! dead-letter place of their own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::message::{DeadLetter, Delivery, HandlerError, Inbound, Settle};

/// A bounded, shared in-memory list of dead letters: the newest [`DeadLetterQueue::CAPACITY`]
/// are kept.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterQueue(Arc<Mutex<VecDeque<DeadLetter>>>);

impl DeadLetterQueue {
    /// How many dead letters are kept.
    pub const CAPACITY: usize = 1000;

    /// Adds a dead letter, dropping the oldest when full.
    pub fn push(&self, message: Inbound, error: HandlerError) {
        let mut dead = crate::sync::lock(&self.0);
        if dead.len() == Self::CAPACITY {
            dead.pop_front();
        }
        dead.push_back(DeadLetter { message, error });
    }

    /// The dead letters kept so far, oldest first.
    pub fn list(&self) -> Vec<DeadLetter> {
        crate::sync::lock(&self.0).iter().cloned().collect()
    }
}

/// The engine's own redelivery: a delayed re-enqueue into the dispatcher's channel.
pub(super) struct InProcess {
    /// The dispatcher's channel; weak, so a pending redelivery never keeps it open.
    pub(super) deliveries: mpsc::WeakSender<Delivery>,
    /// The dispatcher's permit-free channel: a delivery that came that way (a nested emit) goes
    /// back that way, so its redelivery never waits on the permit its emitter holds.
    pub(super) bypass: mpsc::WeakUnboundedSender<Delivery>,
    /// Set when the engine closes: pending redeliveries are dropped (unsettled) then.
    pub(super) closing: Arc<AtomicBool>,
    /// Where the dead letters go.
    pub(super) dead: DeadLetterQueue,
    /// Whether dead letters are kept here (the transport has no dead-letter place).
    pub(super) keeps_dead_letters: bool,
}

impl InProcess {
    /// Delivers `message` again (as its next attempt) after `delay`, with the same settle handle;
    /// `bypassed` deliveries go back through the permit-free channel they came by. When the
    /// engine closes meanwhile, the handle is dropped unsettled.
    pub(super) fn later(
        &self,
        mut message: Inbound,
        mut settle: Box<dyn Settle>,
        delay: Duration,
        bypassed: bool,
    ) {
        let deliveries = self.deliveries.clone();
        let bypass = self.bypass.clone();
        let closing = self.closing.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if closing.load(Ordering::Acquire) {
                return;
            }
            message.attempt = message.attempt.saturating_add(1);
            settle.redelivered();
            let delivery = Delivery { message, settle };
            if bypassed {
                if let Some(tx) = bypass.upgrade() {
                    let _ = tx.send(delivery);
                }
            } else if let Some(tx) = deliveries.upgrade() {
                let _ = tx.send(delivery).await;
            }
        });
    }

    /// Records a dead letter when the transport keeps none itself.
    pub(super) fn dead_letter(&self, message: Inbound, error: &HandlerError) {
        if self.keeps_dead_letters {
            self.dead.push(message, error.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::InFlight;

    struct Counting(Arc<std::sync::atomic::AtomicU32>);

    impl Settle for Counting {
        fn ack(self: Box<Self>, _place: InFlight) {}
        fn dead_letter(self: Box<Self>, _error: &HandlerError) {}
        fn redelivered(&mut self) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn inbound() -> Inbound {
        Inbound {
            topic: "t".into(),
            payload: "{}".into(),
            attempt: 1,
        }
    }

    #[tokio::test]
    async fn a_retried_delivery_comes_back_as_its_next_attempt_after_the_delay() {
        let (tx, mut rx) = mpsc::channel(4);
        let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let r = InProcess {
            deliveries: tx.downgrade(),
            bypass: mpsc::unbounded_channel().0.downgrade(),
            closing: Arc::new(AtomicBool::new(false)),
            dead: DeadLetterQueue::default(),
            keeps_dead_letters: true,
        };
        let start = std::time::Instant::now();
        r.later(
            inbound(),
            Box::new(Counting(count.clone())),
            Duration::from_millis(30),
            false,
        );
        let d = rx.recv().await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(d.message.attempt, 2);
        assert_eq!(count.load(Ordering::Acquire), 1);
    }

    #[tokio::test]
    async fn a_delivery_that_bypassed_the_permits_comes_back_the_same_way() {
        let (tx, mut rx) = mpsc::channel(4);
        let (bypass_tx, mut bypass_rx) = mpsc::unbounded_channel();
        let r = InProcess {
            deliveries: tx.downgrade(),
            bypass: bypass_tx.downgrade(),
            closing: Arc::new(AtomicBool::new(false)),
            dead: DeadLetterQueue::default(),
            keeps_dead_letters: true,
        };
        let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
        r.later(
            inbound(),
            Box::new(Counting(count)),
            Duration::from_millis(10),
            true,
        );
        let d = bypass_rx.recv().await.unwrap();
        assert_eq!(d.message.attempt, 2);
        assert!(rx.try_recv().is_err(), "it went to the permit channel");
    }

    #[tokio::test]
    async fn nothing_comes_back_once_the_engine_closes() {
        let (tx, mut rx) = mpsc::channel(4);
        let closing = Arc::new(AtomicBool::new(false));
        let r = InProcess {
            deliveries: tx.downgrade(),
            bypass: mpsc::unbounded_channel().0.downgrade(),
            closing: closing.clone(),
            dead: DeadLetterQueue::default(),
            keeps_dead_letters: true,
        };
        let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
        r.later(
            inbound(),
            Box::new(Counting(count)),
            Duration::from_millis(20),
            false,
        );
        closing.store(true, Ordering::Release);
        let got = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
        assert!(got.is_err(), "redelivered after close");
    }

    #[test]
    fn the_dead_letter_queue_is_bounded() {
        let q = DeadLetterQueue::default();
        for i in 0..(DeadLetterQueue::CAPACITY + 5) {
            let mut m = inbound();
            m.attempt = i as u32;
            q.push(m, HandlerError::new("x"));
        }
        let l = q.list();
        assert_eq!(l.len(), DeadLetterQueue::CAPACITY);
        assert_eq!(l[0].message.attempt, 5);
    }
}
