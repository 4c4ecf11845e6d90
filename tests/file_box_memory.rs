//! Resident memory while a slow consumer drains a large file box (issue #16, "RSS bounded while a
//! slow consumer has 50,000 messages queued"). Its own test binary, so nothing else runs in the
//! process while it measures the resident set size.
//!
//! Box cycles run on whichever blocking-pool thread is free. When every cycle read the whole box and
//! built its new content in memory (buffers as large as the box), glibc kept the freed buffers in
//! the threads' arenas: draining a 50 MB box left the consumer at 248 MB (bench `--soak --slow`),
//! and this drain left 364 MB more resident. A cycle now streams the box (tests/file_box_heap.rs
//! bounds the heap it holds).

mod common;

use std::collections::HashMap;
use std::sync::mpsc;

use cds_native_messaging::log::Logger;
use cds_native_messaging::subscriptions::TopicSet;
use cds_native_messaging::transport::file::identity::own_start;
use cds_native_messaging::transport::file::line::{self, Owner};
use cds_native_messaging::transport::file::store::{CycleInput, SettleOp};
use cds_native_messaging::transport::support::host::host_name;
use cds_native_messaging::transport::support::memory::resident_bytes;

const MESSAGES: usize = 24_000;
const PER_CYCLE: usize = 500;
/// Concurrent blocking threads (tokio's pool keeps idle ones for 10 s; each has its own arena).
const THREADS: usize = 8;

#[test]
fn draining_a_large_box_gives_the_cycle_buffers_back() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("box");
    let store = common::box_store(dir.path());
    let json = common::padded_message(1000);
    {
        let mut text = String::with_capacity(MESSAGES * (json.len() + 16));
        for _ in 0..MESSAGES {
            line::write_message(&mut text, "soak", &json);
        }
        std::fs::write(&path, text).expect("the box is written");
    }
    let box_bytes = std::fs::metadata(&path).expect("the box").len();
    let me = Owner {
        host: host_name(),
        pid: std::process::id(),
        start: own_start(),
        instance: 1,
    };
    let store = std::sync::Arc::new(store);

    // THREADS long-lived workers, cycles handed out round-robin (as the blocking pool does when
    // cycles overlap other blocking work).
    type Job = (u64, HashMap<u64, SettleOp>, mpsc::Sender<(u64, Vec<u64>)>);
    let workers: Vec<mpsc::Sender<Job>> = (0..THREADS)
        .map(|_| {
            let (tx, rx) = mpsc::channel::<Job>();
            let store = store.clone();
            let me = me.clone();
            std::thread::spawn(move || {
                let log = Logger::default();
                let subscriptions = TopicSet {
                    topics: ["soak".to_string()].into_iter().collect(),
                    all: false,
                };
                for (mut next_seq, settle, done) in rx {
                    let r = store
                        .cycle(
                            CycleInput {
                                me: &me,
                                live_instances: &|i| i == 1,
                                next_seq: &mut next_seq,
                                subscriptions: &subscriptions,
                                want: PER_CYCLE,
                                settle,
                                max_attempts: 3,
                            },
                            &log,
                        )
                        .expect("a cycle");
                    let _ = done.send((next_seq, r.claimed.iter().map(|c| c.seq).collect()));
                }
            });
            tx
        })
        .collect();

    let before = resident_bytes().expect("/proc/self/statm");
    let mut next_seq = 0;
    let mut settle: HashMap<u64, SettleOp> = HashMap::new();
    let mut handled = 0;
    for k in 0.. {
        let (tx, rx) = mpsc::channel();
        workers[k % THREADS]
            .send((next_seq, std::mem::take(&mut settle), tx))
            .expect("a worker");
        let (seq, claimed) = rx.recv().expect("a cycle result");
        next_seq = seq;
        if claimed.is_empty() {
            break;
        }
        handled += claimed.len();
        settle = claimed.into_iter().map(|s| (s, SettleOp::Ack)).collect();
    }
    assert_eq!(handled, MESSAGES);
    assert_eq!(std::fs::read_to_string(&path).expect("the box").trim(), "");
    let after = resident_bytes().expect("/proc/self/statm");
    let grown = after.saturating_sub(before);
    eprintln!(
        "box {} MB; resident before the drain {} MB, after {} MB",
        box_bytes >> 20,
        before >> 20,
        after >> 20
    );
    // The box is empty now: what stays resident must not be a multiple of what it was.
    assert!(
        grown < box_bytes / 2,
        "draining a {} MB box left {} MB more resident",
        box_bytes >> 20,
        grown >> 20
    );
}
