//! Counters of one engine, always on: relaxed atomics on the emit and dispatch paths, a mutex only
//! for the last error (taken on failures, never on success).
//!
//! Transports reach them through their [`crate::log::Logger`] (`log.stats()`), which every
//! transport already holds, to count reconnects.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The last error an engine saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// What failed, e.g. `emit`, `handler`.
    pub kind: &'static str,
    /// The message (never contains credentials: it is a line the engine also logs or returns).
    pub message: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Counters of one engine.
#[derive(Debug, Default)]
pub struct Stats {
    emitted: AtomicU64,
    emit_failures: AtomicU64,
    delivered: AtomicU64,
    acked: AtomicU64,
    redelivered: AtomicU64,
    dead_lettered: AtomicU64,
    reconnects: AtomicU64,
    last_error: Mutex<Option<LastError>>,
}

/// A consistent-enough copy of the counters (each read on its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Messages the transport accepted.
    pub emitted: u64,
    /// Emits that failed.
    pub emit_failures: u64,
    /// Deliveries handed to the handlers (redeliveries included).
    pub delivered: u64,
    /// Deliveries acknowledged after every handler succeeded.
    pub acked: u64,
    /// Deliveries that failed and were scheduled again.
    pub redelivered: u64,
    /// Deliveries moved to the dead-letter place.
    pub dead_lettered: u64,
    /// Deliveries handed to the handlers and not yet settled.
    pub in_flight: u64,
    /// Connections re-established after a loss.
    pub reconnects: u64,
    /// The last error, if any.
    pub last_error: Option<LastError>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Stats {
    /// Counts the results of one publish batch.
    pub fn published(&self, results: &[crate::error::Result<()>]) {
        let mut failed = 0;
        for r in results {
            if let Err(e) = r {
                failed += 1;
                if failed == 1 {
                    self.error("emit", format!("{}: {}", e.code.as_str(), e.full_message()));
                }
            }
        }
        self.emitted
            .fetch_add((results.len() - failed) as u64, Relaxed);
        if failed > 0 {
            self.emit_failures.fetch_add(failed as u64, Relaxed);
        }
    }

    /// `n` emits succeeded without a publish batch (delivered in-process by the caller).
    pub fn emitted_ok(&self, n: usize) {
        self.emitted.fetch_add(n as u64, Relaxed);
    }

    /// `n` deliveries were handed to the handlers.
    pub fn delivered(&self, n: usize) {
        self.delivered.fetch_add(n as u64, Relaxed);
    }

    /// One delivery was acknowledged.
    pub fn acked(&self) {
        self.acked.fetch_add(1, Relaxed);
    }

    /// One delivery failed and will be redelivered.
    pub fn redelivered(&self, why: &str) {
        self.redelivered.fetch_add(1, Relaxed);
        self.error("handler", why.to_string());
    }

    /// One delivery was dead-lettered.
    pub fn dead_lettered(&self, why: &str) {
        self.dead_lettered.fetch_add(1, Relaxed);
        self.error("handler", why.to_string());
    }

    /// A transport re-established a lost connection.
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }

    /// Records `message` as the last error.
    pub fn error(&self, kind: &'static str, message: String) {
        *crate::sync::lock(&self.last_error) = Some(LastError {
            kind,
            message,
            at_ms: now_ms(),
        });
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let acked = self.acked.load(Relaxed);
        let redelivered = self.redelivered.load(Relaxed);
        let dead_lettered = self.dead_lettered.load(Relaxed);
        let delivered = self.delivered.load(Relaxed);
        Snapshot {
            emitted: self.emitted.load(Relaxed),
            emit_failures: self.emit_failures.load(Relaxed),
            delivered,
            acked,
            redelivered,
            dead_lettered,
            in_flight: delivered.saturating_sub(acked + redelivered + dead_lettered),
            reconnects: self.reconnects.load(Relaxed),
            last_error: crate::sync::lock(&self.last_error).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_in_flight() {
        let s = Stats::default();
        let down = crate::error::Error::new(crate::error::ErrorCode::ConnectionFailed, "down");
        s.published(&[Ok(()), Err(down), Ok(())]);
        s.delivered(3);
        s.acked();
        s.redelivered("boom");
        let snap = s.snapshot();
        assert_eq!(snap.emitted, 2);
        assert_eq!(snap.emit_failures, 1);
        assert_eq!(snap.delivered, 3);
        assert_eq!(snap.in_flight, 1);
        assert_eq!(snap.redelivered, 1);
        let e = snap.last_error.unwrap();
        assert_eq!((e.kind, e.message.as_str()), ("handler", "boom"));
        s.reconnected();
        assert_eq!(s.snapshot().reconnects, 1);
    }
}

/// Cost of the counters next to the path they count (run with
/// `cargo test --release --lib -- --ignored stats_cost --nocapture`).
#[cfg(test)]
mod bench {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use async_trait::async_trait;

    use super::Stats;
    use crate::config::{EngineConfig, TransportConfig};
    use crate::engine::{Engine, Handler};
    use crate::error::Result;
    use crate::message::{Inbound, Outbound, Outcome};
    use crate::subscriptions::TopicSet;

    struct AckAll;

    #[async_trait]
    impl Handler for AckAll {
        async fn handle(&self, batch: Vec<Inbound>) -> Result<Vec<Outcome>> {
            Ok(batch.iter().map(|_| Outcome::Ack).collect())
        }
    }

    #[test]
    #[ignore = "micro-benchmark"]
    fn stats_cost() {
        // The hooks of one message: its share of a publish batch, delivered, acked.
        let s = Stats::default();
        let n = 20_000_000u64;
        let ok: Vec<Result<()>> = (0..100).map(|_| Ok(())).collect();
        let t = Instant::now();
        for i in 0..n {
            if i % 100 == 0 {
                s.published(std::hint::black_box(&ok));
            }
            s.delivered(1);
            s.acked();
        }
        let hooks = t.elapsed().as_nanos() as f64 / n as f64;
        assert_eq!(s.snapshot().acked, n);

        // The dispatch path itself: publish through the local transport, which resolves after the
        // handler acknowledged, in batches of 100.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let per_message = rt.block_on(async {
            let engine = Arc::new(
                Engine::new(EngineConfig::new("bench", TransportConfig::Local), None).unwrap(),
            );
            engine
                .subscribe(TopicSet {
                    topics: ["t".to_string()].into_iter().collect(),
                    all: false,
                })
                .unwrap();
            let e = engine.clone();
            tokio::spawn(async move { e.listen(Arc::new(AckAll)).await });
            tokio::time::sleep(Duration::from_millis(50)).await;
            let batches = 5_000;
            let t = Instant::now();
            for _ in 0..batches {
                let batch = (0..100)
                    .map(|_| Outbound::new("t", "{\"data\":1}"))
                    .collect();
                for r in engine.publish(batch).await {
                    r.unwrap();
                }
            }
            let per = t.elapsed().as_nanos() as f64 / (batches * 100) as f64;
            assert_eq!(engine.stats().acked, batches * 100);
            per
        });
        println!(
            "stats hooks: {hooks:.1} ns per message; dispatch path (local transport, batches of 100): {per_message:.0} ns per message; hooks = {:.2} % of it",
            100.0 * hooks / per_message
        );
    }
}
