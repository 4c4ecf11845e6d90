//! The store cycle on an arbitrary box file (bytes, not necessarily UTF-8): it never panics, and
//! nothing is lost silently — every message line of the input is afterwards in the box (possibly
//! claimed) or in the malformed box.
#![no_main]

#[path = "../../tests/common/napi_stubs.rs"]
mod napi_stubs;

use std::collections::HashMap;
use std::time::Duration;

use cds_native_messaging::log::Logger;
use cds_native_messaging::subscriptions::TopicSet;
use cds_native_messaging::transport::file::line::{self, Line, Owner};
use cds_native_messaging::transport::file::lock::{BoxLock, LockSettings};
use cds_native_messaging::transport::file::store::{BoxStore, CycleInput, SettleOp};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static DIR: tempfile::TempDir = tempfile::tempdir().expect("a temporary directory for the fuzzed box");
}

fn read(path: &std::path::Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the subscriptions and how many messages to claim.
    let Some((&knobs, content)) = data.split_first() else {
        return;
    };
    DIR.with(|dir| {
        let path = dir.path().join("box");
        let lock = BoxLock::new(
            &path,
            "fuzz-host".into(),
            LockSettings {
                timeout: Duration::from_millis(500),
                stale_after: Duration::from_secs(10),
            },
        );
        let store = BoxStore::new(
            path.clone(),
            dir.path().join("box.dead"),
            dir.path().join("box.malformed"),
            lock,
            false,
        );
        for p in [&store.path, &store.dead_letter_path, &store.malformed_path] {
            let _ = std::fs::remove_file(p);
        }
        std::fs::write(&path, content).expect("write the fuzzed box");
        let log = Logger::new("fuzz", None);
        let me = Owner {
            host: "fuzz-host".into(),
            pid: std::process::id(),
            start: 1,
            instance: 1,
        };
        let mut subscriptions = TopicSet {
            all: knobs & 1 == 1,
            ..Default::default()
        };
        subscriptions.topics.insert("a".into());
        let mut next_seq = 0;
        let live = |i: u64| i == 1;
        let first = store.cycle(
            CycleInput {
                me: &me,
                live_instances: &live,
                next_seq: &mut next_seq,
                subscriptions: &subscriptions,
                want: usize::from(knobs >> 1),
                settle: HashMap::new(),
                max_attempts: 3,
            },
            &log,
        );
        let Ok(first) = first else {
            return; // e.g. not UTF-8: reported as an error, not a panic
        };
        let after = read(&store.path) + &read(&store.malformed_path);
        if let Ok(text) = std::str::from_utf8(content) {
            for raw in text.split('\n') {
                if let Line::Message { json, .. } | Line::Claimed { json, .. } = line::parse(raw) {
                    assert!(after.contains(json), "a message line vanished: {raw:?}");
                }
            }
        }
        // Settle every claim one way or another; a second cycle must not fail or panic either.
        let settle = first
            .claimed
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let op = match (k + usize::from(knobs)) % 4 {
                    0 => SettleOp::Ack,
                    1 => SettleOp::Retry {
                        attempt: c.attempt + 1,
                    },
                    2 => SettleOp::DeadLetter,
                    _ => SettleOp::Release,
                };
                (c.seq, op)
            })
            .collect();
        let second = store.cycle(
            CycleInput {
                me: &me,
                live_instances: &live,
                next_seq: &mut next_seq,
                subscriptions: &subscriptions,
                want: 0,
                settle,
                max_attempts: 3,
            },
            &log,
        );
        assert!(
            second.is_ok(),
            "the second cycle failed: {:?}",
            second.err()
        );
    });
});
