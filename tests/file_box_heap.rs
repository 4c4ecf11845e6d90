//! Heap used by one file box cycle (issue #16, "RSS flat" and "RSS bounded while a slow consumer has
//! 50,000 messages queued"): a cycle streams the box, so what it allocates is bounded by the batch
//! it claims and settles, not by the size of the box. Its own test binary with a counting global
//! allocator, and one test, so nothing else allocates in the process while it measures.
//!
//! Before the cycle streamed, it read the whole box into one buffer and built the new content in
//! another: a cycle over a 16 MB box allocated more than 32 MB however few messages it claimed.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use cds_native_messaging::log::Logger;
use cds_native_messaging::subscriptions::TopicSet;
use cds_native_messaging::transport::file::identity::own_start;
use cds_native_messaging::transport::file::line::{self, Owner};
use cds_native_messaging::transport::file::store::{BoxStore, CycleInput, CycleResult, SettleOp};
use cds_native_messaging::transport::support::host::host_name;

/// The system allocator, counting the bytes currently allocated and their high-water mark.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed on to the system allocator unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as the new block allocated before the old one is freed (realloc may copy).
            grow(new_size);
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MESSAGES: usize = 16_000;
const BATCH: usize = 100;

struct Box16 {
    _dir: tempfile::TempDir,
    store: BoxStore,
    me: Owner,
    log: Logger,
    next_seq: u64,
}

impl Box16 {
    /// Runs one cycle; returns its result and the most heap it held at once beyond what was
    /// allocated before it.
    fn cycle(
        &mut self,
        topic: &str,
        want: usize,
        settle: HashMap<u64, SettleOp>,
    ) -> (CycleResult, usize) {
        let subscriptions = TopicSet {
            topics: [topic.to_string()].into_iter().collect(),
            all: false,
        };
        let before = CURRENT.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let r = self
            .store
            .cycle(
                CycleInput {
                    me: &self.me,
                    live_instances: &|i| i == 1,
                    next_seq: &mut self.next_seq,
                    subscriptions: &subscriptions,
                    want,
                    settle,
                    max_attempts: 3,
                },
                &self.log,
            )
            .expect("a cycle");
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
        (r, peak)
    }
}

#[test]
fn a_cycle_holds_the_batch_not_the_box() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("box");
    let store = common::box_store(dir.path());
    let json = common::padded_message(1000);
    {
        let mut text = String::with_capacity(MESSAGES * (json.len() + 16));
        for k in 0..MESSAGES {
            // Every tenth line is someone else's, kept byte for byte.
            line::write_message(&mut text, if k % 10 == 9 { "other" } else { "soak" }, &json);
        }
        std::fs::write(&path, text).expect("the box is written");
    }
    let box_bytes = std::fs::metadata(&path).expect("the box").len() as usize;
    let mut b = Box16 {
        _dir: dir,
        store,
        me: Owner {
            host: host_name(),
            pid: std::process::id(),
            start: own_start(),
            instance: 1,
        },
        log: Logger::default(),
        next_seq: 0,
    };
    // What one batch is: its lines, plus their copies handed to the consumer.
    let batch_bytes = BATCH * (json.len() + 100);
    // Buffers of the streaming itself (reader, writer, copy) and the batch, a few times over.
    let bound = 512 * 1024 + 4 * batch_bytes;
    let mb = |n: usize| n as f64 / (1 << 20) as f64;
    let check = |what: &str, peak: usize| {
        eprintln!(
            "{what}: {:.2} MB at most (box {:.1} MB, bound {:.2} MB)",
            mb(peak),
            mb(box_bytes),
            mb(bound)
        );
        assert!(
            peak < bound,
            "{what}: a cycle over a {:.1} MB box held {:.2} MB of heap; bound {:.2} MB",
            mb(box_bytes),
            mb(peak),
            mb(bound)
        );
    };

    // Claims at the head of the box, the rest copied.
    let (r, peak) = b.cycle("soak", BATCH, HashMap::new());
    assert_eq!(r.claimed.len(), BATCH);
    check("claiming a batch", peak);

    // Acks for that batch and the next batch claimed.
    let acks = r.claimed.iter().map(|c| (c.seq, SettleOp::Ack)).collect();
    let (r, peak) = b.cycle("soak", BATCH, acks);
    assert_eq!(r.claimed.len(), BATCH);
    assert!(r.missing.is_empty());
    check("acking a batch, claiming the next", peak);

    // Nothing for us: the box is read, not rewritten.
    let stamp = r.stamp;
    let (r, peak) = b.cycle("nobody", BATCH, HashMap::new());
    assert!(r.claimed.is_empty());
    assert_eq!(r.stamp, stamp, "the box was rewritten");
    check("a cycle that changes nothing", peak);

    // The only change is the last line: everything before it is copied first.
    b.store
        .append(&format!("\nlast {json}"), &b.log)
        .expect("an append");
    let (r, peak) = b.cycle("last", BATCH, HashMap::new());
    assert_eq!(r.claimed.len(), 1);
    check("a change at the end of the box", peak);

    let content = std::fs::read_to_string(&path).expect("the box");
    // The second batch and the last line are claimed; the first batch is gone.
    assert_eq!(content.matches("\n~claim/").count(), BATCH + 1);
    assert_eq!(
        content.matches("\nsoak {").count(),
        MESSAGES * 9 / 10 - 2 * BATCH
    );
    assert_eq!(content.matches("\nother {").count(), MESSAGES / 10);
}
