//! Outcomes of single messages of a batch, reported before the whole batch is done.
//!
//! A batch is handed to the handlers in one call, but its messages finish at different times. If
//! the dispatcher waited for the whole batch, one handler that never settles would keep every other
//! message of its batch unacknowledged and hold their in-flight permits (issue #14, defect 5). So a
//! handler may report each message's outcome as soon as it has one, through the batch's
//! [`Progress`]; the message is settled and its permit released at once. Outcomes reported twice
//! (early and again in the batch result) count once.
//!
//! The JS bridge cannot hold a Rust closure, so a batch's `Progress` is registered under a number
//! ([`register`]) that travels with the batch; JavaScript reports by that number ([`report`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::OwnedSemaphorePermit;

use crate::message::Outcome;

/// Reports outcomes of single messages of one batch (by index in the batch), and when the batch
/// was handed over to the handlers.
#[derive(Clone)]
pub struct Progress {
    report: Arc<dyn Fn(usize, Outcome) + Send + Sync>,
    /// Held until the handlers have taken the batch (see [`Progress::handed_over`]).
    handover: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl Progress {
    /// A `Progress` that hands each report to `f`.
    pub fn new(f: impl Fn(usize, Outcome) + Send + Sync + 'static) -> Self {
        Progress {
            report: Arc::new(f),
            handover: Arc::default(),
        }
    }

    /// The same, holding `permit` until [`handed_over`](Progress::handed_over) is called (or the
    /// last clone is dropped).
    pub(crate) fn holding(mut self, permit: Option<OwnedSemaphorePermit>) -> Self {
        self.handover = Arc::new(Mutex::new(permit));
        self
    }

    /// The handlers have taken the batch (JavaScript's call returned): the dispatcher may cut the
    /// next one. Deliveries that arrive while a batch waits for the JS thread join the next batch
    /// instead of making a call each.
    pub fn handed_over(&self) {
        drop(crate::sync::lock(&self.handover).take());
    }

    /// A `Progress` that ignores every report (the batch result settles everything).
    pub fn ignore() -> Self {
        Progress::new(|_, _| {})
    }

    /// The message at `index` is done with `outcome`; later reports for it are ignored.
    pub fn report(&self, index: usize, outcome: Outcome) {
        (self.report)(index, outcome)
    }
}

fn registry() -> std::sync::MutexGuard<'static, HashMap<u32, Progress>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u32, Progress>>> = OnceLock::new();
    crate::sync::lock(REGISTRY.get_or_init(Default::default))
}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// Registers a batch's `Progress`; the returned number names it until [`unregister`].
pub fn register(progress: Progress) -> u32 {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    registry().insert(id, progress);
    id
}

/// Forgets batch `id` (its call returned).
pub fn unregister(id: u32) {
    registry().remove(&id);
}

/// Reports the outcome of message `index` of batch `id`; ignored when the batch is gone.
pub fn report(id: u32, index: usize, outcome: Outcome) {
    let progress = registry().get(&id).cloned();
    if let Some(p) = progress {
        p.report(index, outcome);
    }
}
