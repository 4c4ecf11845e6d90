//! `native-file-based-messaging`: a box file shared by processes on one machine, byte-compatible
//! with @sap/cds `file-based-messaging`.
//!
//! ## Behavior
//! - **Emit**: each message is appended as `"\n" + topic + " " + json` under the box lock. Emits that
//!   arrive while a write is running are grouped into the next write (one lock, one `fsync`). An emit
//!   resolves only after its line is on disk (`fsync: true`, the default).
//! - **Consume**: a cycle runs when the box changes (inotify on the box's directory), at least every
//!   `poll_interval`, and whenever a delivery is settled or the subscriptions change. Under the lock,
//!   one cycle settles finished deliveries and *claims* new messages by rewriting their lines (see
//!   [`line`]), then rewrites the box atomically (temp file + rename).
//! - **Redelivery**: a failed delivery stays claimed with its attempt counter raised and is delivered
//!   again after the back-off; after `max_attempts` it goes to `<box>.dead` (same line format, so it
//!   can be replayed by appending it to the box) and the engine logs an error.
//! - **Crashes**: claims of a process on this host that no longer runs are taken over (attempt + 1).
//! - **Malformed lines** go to `<box>.malformed` with a warning, never deleted.
//! - **Close**: waits up to 2 s for in-flight deliveries, then gives unsettled claims back to the box.

pub mod identity;
pub mod inspect;
pub mod line;
pub mod lock;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use self::line::Owner;
use self::lock::{BoxLock, LockSettings};
use self::store::{BoxStore, Claimed, CycleInput, SettleOp, Stamp};
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::message::{Delivery, HandlerError, InFlight, Inbound, Outbound, Settle};
use crate::policy::RetryPolicy;
use crate::transport::support::backoff::{should_log, Backoff};
use crate::transport::{Guarantee, Transport, TransportContext};

/// Settings of the file box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// The box file (absolute; `~` is expanded by the JS layer).
    pub path: PathBuf,
    /// Where exhausted messages go; default `<box>.dead`.
    pub dead_letter_path: PathBuf,
    /// Where malformed lines go; default `<box>.malformed`.
    pub malformed_path: PathBuf,
    /// Longest time between two reads of the box.
    pub poll_interval: Duration,
    /// React to file-change notifications (inotify) instead of waiting for the next poll.
    pub watch: bool,
    /// How long to wait for the box lock before an emit or a cycle fails with `LOCK_TIMEOUT`.
    pub lock_timeout: Duration,
    /// Age after which a lock of unknown origin (e.g. @sap/cds's) is considered stale.
    pub stale_lock_after: Duration,
    /// `fsync` every append and rewrite before reporting success.
    pub fsync: bool,
}

impl FileConfig {
    /// Defaults for the box at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        FileConfig {
            dead_letter_path: sibling(&path, ".dead"),
            malformed_path: sibling(&path, ".malformed"),
            path,
            poll_interval: Duration::from_millis(1000),
            watch: true,
            lock_timeout: Duration::from_secs(5),
            stale_lock_after: Duration::from_secs(10),
            fsync: true,
        }
    }

    /// Checks the values; errors carry `INVALID_CONFIG`.
    pub fn validate(&self) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            return Err(Error::config(
                "file must be the path of the box file, e.g. \"~/.cds-msg-box\"",
            ));
        }
        if self.path.is_dir() {
            return Err(Error::config(format!(
                "file {} is a directory; give the path of the box file inside it",
                self.path.display()
            )));
        }
        if self.poll_interval < Duration::from_millis(10) {
            return Err(Error::config("interval must be at least 10 ms"));
        }
        if self.lock_timeout < Duration::from_millis(10) {
            return Err(Error::config("lockTimeout must be at least 10 ms"));
        }
        if self.dead_letter_path == self.path || self.malformed_path == self.path {
            return Err(Error::config(
                "deadLetterFile and malformedFile must differ from the box file",
            ));
        }
        Ok(())
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Engine instances of this process that consume a box; their claims are never taken over.
fn live_instances() -> &'static Mutex<HashSet<u64>> {
    static LIVE: OnceLock<Mutex<HashSet<u64>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

fn lock_live() -> std::sync::MutexGuard<'static, HashSet<u64>> {
    crate::sync::lock(live_instances())
}

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

#[derive(Default)]
struct PendingWrites {
    text: String,
    waiters: Vec<oneshot::Sender<Result<()>>>,
    flushing: bool,
}

struct Shared {
    store: BoxStore,
    log: Logger,
    writes: Mutex<PendingWrites>,
    closed: AtomicBool,
}

impl Shared {
    fn writes(&self) -> std::sync::MutexGuard<'_, PendingWrites> {
        crate::sync::lock(&self.writes)
    }

    /// Writes everything pending, group after group, until nothing is left. Blocking.
    fn flush_all(&self) {
        loop {
            let (text, waiters) = {
                let mut w = self.writes();
                if w.waiters.is_empty() {
                    w.flushing = false;
                    return;
                }
                (std::mem::take(&mut w.text), std::mem::take(&mut w.waiters))
            };
            match self.store.append(&text, &self.log) {
                Ok(()) => waiters.into_iter().for_each(|w| {
                    let _ = w.send(Ok(()));
                }),
                Err(e) => waiters.into_iter().for_each(|w| {
                    let _ = w.send(Err(Error::new(e.code, e.full_message())));
                }),
            }
        }
    }
}

struct Consumer {
    task: JoinHandle<()>,
    stop: Arc<Notify>,
    stopping: Arc<AtomicBool>,
}

/// The file-box transport.
pub struct FileTransport {
    shared: Arc<Shared>,
    instance: u64,
    poll_interval: Duration,
    watch: bool,
    consumer: Mutex<Option<Consumer>>,
}

impl FileTransport {
    /// Creates the box file if needed (as `"\n"`, like @sap/cds).
    pub fn new(config: FileConfig, log: Logger) -> Result<Self> {
        config.validate()?;
        let lock = BoxLock::new(
            &config.path,
            crate::transport::support::host::host_name(),
            LockSettings {
                timeout: config.lock_timeout,
                stale_after: config.stale_lock_after,
            },
        );
        let store = BoxStore::new(
            config.path,
            config.dead_letter_path,
            config.malformed_path,
            lock,
            config.fsync,
        );
        store.ensure_exists()?;
        Ok(FileTransport {
            shared: Arc::new(Shared {
                store,
                log,
                writes: Mutex::new(PendingWrites::default()),
                closed: AtomicBool::new(false),
            }),
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            poll_interval: config.poll_interval,
            watch: config.watch,
            consumer: Mutex::new(None),
        })
    }

    fn consumer(&self) -> std::sync::MutexGuard<'_, Option<Consumer>> {
        crate::sync::lock(&self.consumer)
    }
}

#[async_trait]
impl Transport for FileTransport {
    fn guarantee(&self, policy: &RetryPolicy) -> Guarantee {
        Guarantee {
            delivery: "at-least-once",
            dead_letter: self.shared.store.dead_letter_path.display().to_string(),
            summary: format!(
                "at-least-once via box {}: emits resolve once the line is on disk; a failing handler is retried up to {} attempt(s), then the message goes to {}",
                self.shared.store.path.display(),
                policy.max_attempts,
                self.shared.store.dead_letter_path.display()
            ),
        }
    }

    async fn start(&self, ctx: TransportContext) -> Result<()> {
        let mut slot = self.consumer();
        if slot.is_some() {
            return Err(Error::new(
                ErrorCode::Internal,
                "file transport started twice",
            ));
        }
        lock_live().insert(self.instance);
        let wake = Arc::new(Notify::new());
        let watcher = if self.watch {
            watch_box(&self.shared.store.path, wake.clone(), &self.shared.log)
        } else {
            None
        };
        let stop = Arc::new(Notify::new());
        let stopping = Arc::new(AtomicBool::new(false));
        let state = ConsumerLoop {
            shared: self.shared.clone(),
            ctx,
            me: Owner {
                host: crate::transport::support::host::host_name(),
                pid: std::process::id(),
                start: identity::own_start(),
                instance: self.instance,
            },
            wake,
            stop: stop.clone(),
            stopping: stopping.clone(),
            poll_interval: self.poll_interval,
            _watcher: watcher,
        };
        *slot = Some(Consumer {
            task: tokio::spawn(state.run()),
            stop,
            stopping,
        });
        Ok(())
    }

    async fn publish(&self, batch: Vec<Outbound>) -> Vec<Result<()>> {
        let mut results: Vec<Option<Result<()>>> = Vec::with_capacity(batch.len());
        let mut waits = Vec::new();
        let start_flusher = {
            let mut w = self.shared.writes();
            for (i, m) in batch.iter().enumerate() {
                if self.shared.closed.load(Ordering::Acquire) {
                    results.push(Some(Err(Error::closed(&m.topic))));
                    continue;
                }
                if !line::valid_topic(&m.topic) || m.topic.starts_with(line::CLAIM_PREFIX) {
                    results.push(Some(Err(Error::new(
                        ErrorCode::InvalidDataFormat,
                        format!(
                            "cannot emit '{}': a box topic must be non-empty, without white space, and not start with '{}'",
                            m.topic,
                            line::CLAIM_PREFIX
                        ),
                    ))));
                    continue;
                }
                if !m.payload.starts_with('{') || m.payload.contains('\n') {
                    results.push(Some(Err(Error::new(
                        ErrorCode::InvalidDataFormat,
                        format!(
                            "cannot emit '{}': the payload must be a single-line JSON object",
                            m.topic
                        ),
                    ))));
                    continue;
                }
                line::write_message(&mut w.text, &m.topic, &m.payload);
                let (tx, rx) = oneshot::channel();
                w.waiters.push(tx);
                waits.push((i, rx));
                results.push(None);
            }
            let start = !w.flushing && !w.waiters.is_empty();
            if start {
                w.flushing = true;
            }
            start
        };
        if start_flusher {
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || shared.flush_all());
        }
        for (i, rx) in waits {
            let topic = &batch[i].topic;
            results[i] = Some(rx.await.unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorCode::Internal,
                    format!("the box writer stopped before '{topic}' was written"),
                ))
            }));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::new(ErrorCode::Internal, "no result"))))
            .collect()
    }

    async fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::Release);
        let consumer = self.consumer().take();
        if let Some(c) = consumer {
            c.stopping.store(true, Ordering::Release);
            c.stop.notify_one();
            let _ = c.task.await;
        }
        lock_live().remove(&self.instance);
        // Wait for emits already accepted to reach the disk.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.shared.writes().flushing && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }
}

impl Drop for FileTransport {
    fn drop(&mut self) {
        if let Some(c) = self.consumer().take() {
            c.task.abort();
        }
        lock_live().remove(&self.instance);
    }
}

fn watch_box(path: &Path, wake: Arc<Notify>, log: &Logger) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name()?.to_os_string();
    let mut watcher = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            // Reads (ours included) change nothing; waking on them made a failing cycle spin.
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            if ev.paths.iter().any(|p| p.file_name() == Some(&name)) {
                wake.notify_one();
            }
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            log.warn(&format!(
                "file-change notification is unavailable ({e}); polling the box instead"
            ));
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        log.warn(&format!(
            "cannot watch {} for changes ({e}); polling the box instead",
            dir.display()
        ));
        return None;
    }
    Some(watcher)
}

struct ConsumerLoop {
    shared: Arc<Shared>,
    ctx: TransportContext,
    me: Owner,
    wake: Arc<Notify>,
    stop: Arc<Notify>,
    stopping: Arc<AtomicBool>,
    poll_interval: Duration,
    _watcher: Option<notify::RecommendedWatcher>,
}

type Op = (u64, SettleOp);

/// How long to wait before the next cycle after failed ones in a row (`CYCLE_BACKOFF.delay(n)`):
/// 50 ms, doubling, at most 5 s, with the one jitter law of `support::backoff`.
const CYCLE_BACKOFF: Backoff = Backoff {
    min: Duration::from_millis(50),
    max: Duration::from_secs(5),
};

/// How long `close` waits for deliveries in flight before giving them back to the box.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stopping consumer waits after its last rewrite of the box for writers that opened the
/// old file before it (see [`store::RETIRED_WATCH`]).
const LATE_APPEND_GRACE: Duration = Duration::from_millis(300);

/// A full cycle runs at least this often even when the box looks unchanged (to take over the
/// claims of crashed processes).
const FORCED_CYCLE: Duration = Duration::from_secs(5);

impl ConsumerLoop {
    async fn run(self) {
        let (ops_tx, mut ops_rx) = mpsc::unbounded_channel::<Op>();
        let mut subs = self.ctx.subscriptions.watch();
        let mut ticker = tokio::time::interval(self.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_seq = 0u64;
        let mut outstanding: HashSet<u64> = HashSet::new();
        let mut ops: HashMap<u64, SettleOp> = HashMap::new();
        let mut last_stamp: Option<Stamp> = None;
        let mut saturated = false;
        let mut last_full = Instant::now();
        let mut failures = 0u32;
        let mut retry_at: Option<Instant> = None;
        let mut drain_deadline: Option<Instant> = None;

        loop {
            let stopping = self.stopping.load(Ordering::Acquire);
            if stopping && drain_deadline.is_none() {
                drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
            }
            if let Some(deadline) = drain_deadline {
                collect_ops(&mut ops_rx, &mut ops, &mut outstanding);
                if outstanding.is_empty() || Instant::now() >= deadline {
                    for seq in outstanding.drain() {
                        ops.entry(seq).or_insert(SettleOp::Release);
                    }
                    if !ops.is_empty() {
                        let _ = self.cycle(&mut next_seq, std::mem::take(&mut ops), 0).await;
                    }
                    self.carry_late_appends().await;
                    return;
                }
                tokio::select! {
                    Some(op) = ops_rx.recv() => apply(op, &mut ops, &mut outstanding),
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
                continue;
            }

            let subs_changed = subs.has_changed().unwrap_or(false);
            if subs_changed {
                subs.borrow_and_update();
            }
            collect_ops(&mut ops_rx, &mut ops, &mut outstanding);
            let snapshot = self.ctx.subscriptions.snapshot();
            let want = self.ctx.max_in_flight.saturating_sub(outstanding.len());
            let stamp = Stamp::of(&self.shared.store.path);
            // Lines written into a box file we replaced are not seen in the box's stamp.
            let late = self.shared.store.has_late_appends();
            let unchanged = stamp.is_some()
                && stamp == last_stamp
                && !late
                && !subs_changed
                && !saturated
                && last_full.elapsed() < FORCED_CYCLE;
            let idle = snapshot.is_empty() && ops.is_empty() && !late;
            let backing_off = retry_at.is_some_and(|t| Instant::now() < t);
            if !(backing_off || idle || (unchanged && ops.is_empty())) {
                let sent_ops = std::mem::take(&mut ops);
                let want_now = if snapshot.is_empty() { 0 } else { want };
                match self.cycle(&mut next_seq, sent_ops.clone(), want_now).await {
                    Ok(result) => {
                        failures = 0;
                        retry_at = None;
                        last_full = Instant::now();
                        last_stamp = result.stamp;
                        saturated = want_now > 0 && result.claimed.len() >= want_now;
                        for seq in result.missing {
                            outstanding.remove(&seq);
                            self.shared.log.warn(&format!(
                                "a message being processed (claim {seq}) was removed from box {} by someone else",
                                self.shared.store.path.display()
                            ));
                        }
                        for c in result.claimed {
                            outstanding.insert(c.seq);
                            self.deliver(c, &ops_tx).await;
                        }
                    }
                    Err(e) => {
                        // Keep the ops for the next try; nothing is lost.
                        for (seq, op) in sent_ops {
                            ops.entry(seq).or_insert(op);
                        }
                        failures += 1;
                        retry_at = Some(Instant::now() + CYCLE_BACKOFF.delay(failures));
                        if should_log(failures) {
                            self.shared.log.error(&format!(
                                "cannot read box {} ({}); retrying",
                                self.shared.store.path.display(),
                                e.full_message()
                            ));
                        }
                    }
                }
            }

            if let Some(at) = retry_at.filter(|&t| Instant::now() < t) {
                // After a failed cycle, wait out the back-off: wake-ups would only fail again.
                tokio::select! {
                    _ = self.stop.notified() => {}
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
                continue;
            }
            tokio::select! {
                _ = self.stop.notified() => {}
                _ = self.wake.notified() => {}
                _ = ticker.tick() => {}
                Some(op) = ops_rx.recv() => apply(op, &mut ops, &mut outstanding),
                _ = subs.changed() => {}
            }
        }
    }

    /// Last step of a stopping consumer: lines written into box files it replaced (by a writer that
    /// opened the box just before a rename) are carried over into the box. It first gives such a
    /// writer [`LATE_APPEND_GRACE`] after the last replacement.
    async fn carry_late_appends(&self) {
        let Some(replaced) = self.shared.store.last_replaced() else {
            return;
        };
        tokio::time::sleep_until((replaced + LATE_APPEND_GRACE).into()).await;
        let shared = self.shared.clone();
        let carried =
            tokio::task::spawn_blocking(move || shared.store.carry_late_appends(&shared.log)).await;
        if let Ok(Err(e)) = carried {
            self.shared.log.error(&format!(
                "lines written into a replaced file of box {} may be lost: {}",
                self.shared.store.path.display(),
                e.full_message()
            ));
        }
    }

    async fn cycle(
        &self,
        next_seq: &mut u64,
        settle: HashMap<u64, SettleOp>,
        want: usize,
    ) -> Result<store::CycleResult> {
        let shared = self.shared.clone();
        let me = self.me.clone();
        let subscriptions = self.ctx.subscriptions.snapshot();
        let max_attempts = self.ctx.policy.max_attempts;
        let mut seq = *next_seq;
        let (result, seq) = tokio::task::spawn_blocking(move || {
            let live = |instance: u64| lock_live().contains(&instance);
            let r = shared.store.cycle(
                CycleInput {
                    me: &me,
                    live_instances: &live,
                    next_seq: &mut seq,
                    subscriptions: &subscriptions,
                    want,
                    settle,
                    max_attempts,
                },
                &shared.log,
            );
            (r, seq)
        })
        .await
        .map_err(|e| Error::with_cause(ErrorCode::Internal, "box cycle task failed", e))?;
        *next_seq = seq;
        result
    }

    async fn deliver(&self, c: Claimed, ops: &mpsc::UnboundedSender<Op>) {
        let message = Inbound {
            topic: c.topic,
            payload: c.json,
            attempt: c.attempt,
        };
        let settle = FileSettle {
            seq: c.seq,
            message: message.clone(),
            ops: ops.clone(),
            deliveries: self.ctx.deliveries.downgrade(),
        };
        if let Err(mpsc::error::SendError(d)) = self
            .ctx
            .deliveries
            .send(Delivery {
                message,
                settle: Box::new(settle),
            })
            .await
        {
            // The engine stopped listening: give the message back.
            let _ = ops.send((c.seq, SettleOp::Release));
            drop(d);
        }
    }
}

fn apply(op: Op, ops: &mut HashMap<u64, SettleOp>, outstanding: &mut HashSet<u64>) {
    let (seq, op) = op;
    match op {
        SettleOp::Retry { .. } => {}
        _ => {
            outstanding.remove(&seq);
        }
    }
    ops.insert(seq, op);
}

fn collect_ops(
    rx: &mut mpsc::UnboundedReceiver<Op>,
    ops: &mut HashMap<u64, SettleOp>,
    outstanding: &mut HashSet<u64>,
) {
    while let Ok(op) = rx.try_recv() {
        apply(op, ops, outstanding);
    }
}

struct FileSettle {
    seq: u64,
    message: Inbound,
    ops: mpsc::UnboundedSender<Op>,
    deliveries: mpsc::WeakSender<Delivery>,
}

impl Settle for FileSettle {
    fn ack(self: Box<Self>, _place: InFlight) {
        let _ = self.ops.send((self.seq, SettleOp::Ack));
    }

    fn retry(self: Box<Self>, delay: Duration, _error: &HandlerError) {
        let mut me = *self;
        me.message.attempt = me.message.attempt.saturating_add(1);
        let _ = me.ops.send((
            me.seq,
            SettleOp::Retry {
                attempt: me.message.attempt,
            },
        ));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(tx) = me.deliveries.upgrade() else {
                let _ = me.ops.send((me.seq, SettleOp::Release));
                return;
            };
            let message = me.message.clone();
            let (seq, ops) = (me.seq, me.ops.clone());
            if tx
                .send(Delivery {
                    message,
                    settle: Box::new(me),
                })
                .await
                .is_err()
            {
                let _ = ops.send((seq, SettleOp::Release));
            }
        });
    }

    fn dead_letter(self: Box<Self>, _error: &HandlerError) {
        let _ = self.ops.send((self.seq, SettleOp::DeadLetter));
    }
}

#[cfg(test)]
mod tests;
