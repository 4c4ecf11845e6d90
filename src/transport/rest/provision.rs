//! Keeps the queue and its topic subscriptions in line with the service's subscriptions through
//! the Event Mesh management API client ([`Management`], in @sap/cds's order, with bounded retries
//! of one call); a provisioning that still fails is logged with what to fix and tried again later
//! with back-off. Queues are never deleted.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::webhook::Registration;
use super::Provisioning;
use crate::log::Logger;
use crate::subscriptions::Subscriptions;
use crate::transport::support::em_management::Management;

/// The management client and the queue it provisions.
pub struct Provisioner {
    /// The management API client (shared with the AMQP kinds).
    pub api: Management,
    /// The queue.
    pub queue: String,
    /// Logger.
    pub log: Logger,
}

/// Jittered exponential back-off: 0.5 s, 1 s, 2 s … at most 30 s.
pub fn backoff(attempt: u32) -> Duration {
    let base = 500u64.saturating_mul(1u64 << attempt.min(6)).min(30_000);
    Duration::from_millis(base / 2 + fastrand::u64(0..=base / 2))
}

/// Keeps the queue in line with the subscriptions until closed; registers the webhook once after
/// the first successful provisioning.
pub(super) async fn run(
    p: Provisioner,
    subs: Arc<Subscriptions>,
    state: watch::Sender<Provisioning>,
    mut closed: watch::Receiver<bool>,
    registration: Option<Registration>,
) {
    let mut changes = subs.watch();
    let mut registration = registration;
    let mut failures = 0u32;
    loop {
        changes.mark_unchanged();
        let set = subs.snapshot();
        let wait = if set.is_empty() {
            state.send_replace(Provisioning::Idle);
            None
        } else {
            // Emits wait for a provisioning, but not for the retries of one that failed.
            if failures == 0 {
                state.send_replace(Provisioning::Running(std::time::Instant::now()));
            }
            let mut topics: Vec<String> = set.topics.iter().cloned().collect();
            topics.sort();
            match p.api.provision(&p.queue, &topics).await {
                Ok(done) => {
                    p.api.log(&p.log, &p.queue, &done);
                    failures = 0;
                    state.send_replace(Provisioning::Done);
                    if let Some(r) = registration.take() {
                        tokio::spawn(r.run(closed.clone()));
                    }
                    None
                }
                Err(e) => {
                    failures += 1;
                    // Emits must not wait for a provisioning that fails.
                    state.send_replace(Provisioning::Done);
                    let wait = backoff(failures.min(6) + 2);
                    p.log.error(&format!(
                        "cannot provision the Event Mesh queue (attempt {failures}, next in {} ms): {}",
                        wait.as_millis(),
                        e.full_message()
                    ));
                    Some(wait)
                }
            }
        };
        let retry = async {
            match wait {
                Some(w) => tokio::time::sleep(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = retry => {}
            r = changes.changed() => if r.is_err() { return },
            _ = closed.wait_for(|c| *c) => return,
        }
    }
}
