use super::*;

use std::time::Duration;

use crate::transport::file::lock::LockSettings;
use crate::transport::support::host::host_name;

/// Where [`BoxStore::replace`] calls the hook of [`on_replace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplaceStage {
    /// Before it looks at the box again (after the pass over it).
    Start,
    /// After the new content was renamed into place, before late appends are carried over.
    Renamed,
}

type Hook = Box<dyn FnMut(ReplaceStage)>;

thread_local! {
    static REPLACE_HOOK: std::cell::RefCell<Option<Hook>> = const { std::cell::RefCell::new(None) };
}

/// Called by `replace` (tests only).
pub(super) fn replace_hook(stage: ReplaceStage) {
    REPLACE_HOOK.with(|h| {
        if let Some(f) = h.borrow_mut().as_mut() {
            f(stage);
        }
    });
}

/// Runs `hook` at the stages of `replace` of cycles on this thread (what a process that does not
/// take the lock does meanwhile), until the returned guard is dropped.
fn on_replace(hook: impl FnMut(ReplaceStage) + 'static) -> impl Drop {
    struct Unhook;
    impl Drop for Unhook {
        fn drop(&mut self) {
            REPLACE_HOOK.with(|h| h.borrow_mut().take());
        }
    }
    REPLACE_HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
    Unhook
}

/// Appends `text` to `path` as @sap/cds's emitter does when it gave up waiting for the lock.
fn append_unlocked(path: &Path, text: &str) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// A pid that does not run (0x7ffffff0).
const DEAD_PID: u32 = 2147483632;

struct Fixture {
    _dir: tempfile::TempDir,
    store: BoxStore,
    log: Logger,
    me: Owner,
    next_seq: u64,
    max_attempts: u32,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        let lock = BoxLock::new(
            &path,
            host_name(),
            LockSettings {
                timeout: Duration::from_millis(500),
                stale_after: Duration::from_secs(60),
            },
        );
        let store = BoxStore::new(
            path,
            dir.path().join("box.dead"),
            dir.path().join("box.malformed"),
            lock,
            false,
        );
        Fixture {
            _dir: dir,
            store,
            log: Logger::default(),
            me: Owner {
                host: host_name(),
                pid: std::process::id(),
                start: crate::transport::file::identity::own_start(),
                instance: 7,
            },
            next_seq: 0,
            max_attempts: 3,
        }
    }

    fn write(&self, content: &str) {
        fs::write(&self.store.path, content).unwrap();
    }

    fn read(&self) -> String {
        fs::read_to_string(&self.store.path).unwrap()
    }

    fn read_side(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    fn append(&self, lines: &[(&str, &str)]) {
        let mut text = String::new();
        for (topic, json) in lines {
            line::write_message(&mut text, topic, json);
        }
        self.store.append(&text, &self.log).unwrap();
    }

    fn cycle(&mut self, subs: &[&str], want: usize, settle: &[(u64, SettleOp)]) -> CycleResult {
        let me = self.me.clone();
        let live = move |instance: u64| instance == me.instance;
        let subscriptions = TopicSet {
            topics: subs.iter().map(|s| s.to_string()).collect(),
            all: false,
        };
        let result = self
            .store
            .cycle(
                CycleInput {
                    me: &self.me,
                    live_instances: &live,
                    next_seq: &mut self.next_seq,
                    subscriptions: &subscriptions,
                    want,
                    settle: settle.iter().cloned().collect(),
                    max_attempts: self.max_attempts,
                },
                &self.log,
            )
            .unwrap();
        // The lock is always released after a cycle.
        assert!(!self.store.lock.path().exists());
        result
    }

    /// The claimed line for `seq` as this fixture's owner writes it.
    fn claimed(&self, seq: u64, attempt: u32, topic: &str, json: &str) -> String {
        claimed_by(&self.me, seq, attempt, topic, json)
    }
}

fn claimed_by(owner: &Owner, seq: u64, attempt: u32, topic: &str, json: &str) -> String {
    let mut out = String::new();
    line::write_claimed(
        &mut out,
        &Claim {
            owner: owner.clone(),
            seq,
            attempt,
        },
        topic,
        json,
    );
    out
}

fn claim(seq: u64, topic: &str, json: &str, attempt: u32) -> Claimed {
    Claimed {
        seq,
        topic: topic.into(),
        json: json.into(),
        attempt,
    }
}

const A1: &str = r#"{"data":{"n":1},"headers":{}}"#;
const A2: &str = r#"{"data":{"n":2},"headers":{}}"#;
const B1: &str = r#"{"data":{"b":true},"headers":{"x-correlation-id":"c1"}}"#;

#[test]
fn ensure_exists_creates_the_box_as_a_newline_and_keeps_existing_content() {
    let f = Fixture::new();
    assert!(!f.store.path.exists());
    f.store.ensure_exists().unwrap();
    assert_eq!(f.read(), "\n");

    f.write("\nt {}");
    f.store.ensure_exists().unwrap();
    assert_eq!(f.read(), "\nt {}");
}

#[test]
fn ensure_exists_creates_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("box");
    let lock = BoxLock::new(
        &path,
        host_name(),
        LockSettings {
            timeout: Duration::from_millis(100),
            stale_after: Duration::from_secs(60),
        },
    );
    let store = BoxStore::new(
        path.clone(),
        dir.path().join("dead"),
        dir.path().join("malformed"),
        lock,
        false,
    );
    store.ensure_exists().unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "\n");
}

#[test]
fn append_writes_lines_in_the_sap_cds_form() {
    let f = Fixture::new();
    f.append(&[("a", A1), ("b", B1)]);
    assert_eq!(f.read(), format!("\n\na {A1}\nb {B1}"));
    assert!(!f.store.lock.path().exists(), "lock not released");
}

#[test]
fn cycle_claims_subscribed_lines_and_leaves_others_byte_for_byte() {
    let mut f = Fixture::new();
    // Other topics, including one with leading white space (which @sap/cds accepts), stay as is.
    f.write(&format!("\na {A1}\n  b {B1}\nc {{ \"odd\" : 1 }}\na {A2}"));
    let r = f.cycle(&["a"], 10, &[]);
    assert_eq!(r.claimed, vec![claim(1, "a", A1, 1), claim(2, "a", A2, 1)]);
    assert!(r.missing.is_empty());
    assert_eq!(r.stamp, Stamp::of(&f.store.path));
    assert_eq!(
        f.read(),
        format!(
            "{}\n  b {B1}\nc {{ \"odd\" : 1 }}{}",
            f.claimed(1, 1, "a", A1),
            f.claimed(2, 1, "a", A2)
        )
    );
    assert!(f.read().contains(&format!("\n~claim/{}/", host_name())));

    // Our own claims are not claimed twice.
    let r = f.cycle(&["a"], 10, &[]);
    assert!(r.claimed.is_empty());
    assert_eq!(f.next_seq, 2);
    assert!(!f.store.malformed_path.exists());
    assert!(!f.store.dead_letter_path.exists());
}

#[test]
fn cycle_without_changes_does_not_rewrite_the_box() {
    let mut f = Fixture::new();
    f.write(&format!("\nb {B1}"));
    let before = Stamp::of(&f.store.path);
    let r = f.cycle(&["a"], 10, &[]);
    assert!(r.claimed.is_empty());
    assert_eq!(r.stamp, before);
    assert_eq!(f.read(), format!("\nb {B1}"));
}

#[test]
fn ack_removes_the_line() {
    let mut f = Fixture::new();
    f.append(&[("a", A1), ("b", B1)]);
    let r = f.cycle(&["a"], 10, &[]);
    assert_eq!(r.claimed.len(), 1);
    let r = f.cycle(&["a"], 10, &[(1, SettleOp::Ack)]);
    assert!(r.claimed.is_empty());
    assert!(r.missing.is_empty());
    assert_eq!(f.read(), format!("\nb {B1}"));
}

#[test]
fn retry_rewrites_the_attempt_of_the_claim() {
    let mut f = Fixture::new();
    f.append(&[("a", A1)]);
    f.cycle(&["a"], 10, &[]);
    let r = f.cycle(&["a"], 10, &[(1, SettleOp::Retry { attempt: 2 })]);
    assert!(
        r.claimed.is_empty(),
        "a retried claim must not be claimed again"
    );
    assert_eq!(f.read(), f.claimed(1, 2, "a", A1));
    // It is still ours: a later ack removes it.
    f.cycle(&["a"], 10, &[(1, SettleOp::Ack)]);
    assert_eq!(f.read(), "");
}

#[test]
fn dead_letter_moves_the_line_to_the_dead_letter_box() {
    let mut f = Fixture::new();
    f.append(&[("a", A1), ("b", B1)]);
    f.cycle(&["a"], 10, &[]);
    f.cycle(&["a"], 10, &[(1, SettleOp::DeadLetter)]);
    assert_eq!(f.read(), format!("\nb {B1}"));
    assert_eq!(
        Fixture::read_side(&f.store.dead_letter_path),
        format!("\na {A1}")
    );
    // A second dead letter is appended, so the file can be replayed line by line.
    f.append(&[("a", A2)]);
    f.cycle(&["a"], 10, &[]);
    f.cycle(&["a"], 10, &[(2, SettleOp::DeadLetter)]);
    assert_eq!(
        Fixture::read_side(&f.store.dead_letter_path),
        format!("\na {A1}\na {A2}")
    );
}

#[test]
fn release_gives_the_line_back_unclaimed() {
    let mut f = Fixture::new();
    f.append(&[("a", A1)]);
    f.cycle(&["a"], 10, &[]);
    let r = f.cycle(&["a"], 0, &[(1, SettleOp::Release)]);
    assert!(r.claimed.is_empty());
    assert_eq!(f.read(), format!("\na {A1}"));
    // ... and it can be claimed again, as a first delivery.
    let r = f.cycle(&["a"], 10, &[]);
    assert_eq!(r.claimed, vec![claim(2, "a", A1, 1)]);
}

#[test]
fn settling_a_claim_that_is_gone_reports_it_missing() {
    let mut f = Fixture::new();
    f.append(&[("a", A1)]);
    f.cycle(&["a"], 10, &[]);
    f.write("\n");
    let r = f.cycle(&["a"], 10, &[(1, SettleOp::Ack)]);
    assert_eq!(r.missing, vec![1]);
}

#[test]
fn cycle_on_a_missing_box_recreates_it_and_reports_settles_missing() {
    let mut f = Fixture::new();
    let r = f.cycle(&["a"], 10, &[(5, SettleOp::Ack)]);
    assert_eq!(r.missing, vec![5]);
    assert!(r.claimed.is_empty());
    assert_eq!(f.read(), "\n");
}

#[test]
fn malformed_lines_and_invalid_json_go_to_the_malformed_box() {
    let mut f = Fixture::new();
    f.write(&format!(
        "\na {A1}\njustoneword\na {{\"broken\":\nb {{not json either\nt\t{{}}"
    ));
    let r = f.cycle(&["a"], 10, &[]);
    assert_eq!(r.claimed, vec![claim(1, "a", A1, 1)]);
    assert_eq!(
        Fixture::read_side(&f.store.malformed_path),
        "\njustoneword\na {\"broken\":\nt\t{}"
    );
    // A line on a topic we do not consume is someone else's message, whatever its JSON.
    assert_eq!(
        f.read(),
        format!("{}\nb {{not json either", f.claimed(1, 1, "a", A1))
    );
    assert!(!f.store.dead_letter_path.exists());
}

#[test]
fn want_limits_how_many_are_claimed() {
    let mut f = Fixture::new();
    let payloads: Vec<String> = (0..5).map(|i| format!("{{\"i\":{i}}}")).collect();
    let lines: Vec<(&str, &str)> = payloads.iter().map(|p| ("a", p.as_str())).collect();
    f.append(&lines);

    let r = f.cycle(&["a"], 2, &[]);
    assert_eq!(
        r.claimed
            .iter()
            .map(|c| c.json.as_str())
            .collect::<Vec<_>>(),
        vec![payloads[0].as_str(), payloads[1].as_str()]
    );
    let content = f.read();
    assert_eq!(content.matches("\n~claim/").count(), 2);
    assert_eq!(content.matches("\na {").count(), 3);

    let r = f.cycle(&["a"], 0, &[]);
    assert!(r.claimed.is_empty());

    let r = f.cycle(&["a"], 10, &[]);
    assert_eq!(
        r.claimed.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(f.read().matches("\n~claim/").count(), 5);
}

#[test]
fn a_claim_of_a_dead_process_is_taken_over_with_the_next_attempt() {
    let mut f = Fixture::new();
    let dead = Owner {
        host: host_name(),
        pid: DEAD_PID,
        start: 0,
        instance: 1,
    };
    f.write(&claimed_by(&dead, 41, 1, "a", A1));
    let r = f.cycle(&["a"], 10, &[]);
    assert_eq!(r.claimed, vec![claim(1, "a", A1, 2)]);
    assert_eq!(f.read(), f.claimed(1, 2, "a", A1));
    assert!(!f.store.dead_letter_path.exists());
}

#[test]
fn a_claim_of_a_dead_process_is_dead_lettered_when_attempts_are_exhausted() {
    let mut f = Fixture::new();
    f.max_attempts = 3;
    let dead = Owner {
        host: host_name(),
        pid: DEAD_PID,
        start: 0,
        instance: 1,
    };
    f.write(&format!("{}\nb {B1}", claimed_by(&dead, 41, 3, "a", A1)));
    let r = f.cycle(&["a"], 10, &[]);
    assert!(r.claimed.is_empty());
    assert_eq!(f.read(), format!("\nb {B1}"));
    assert_eq!(
        Fixture::read_side(&f.store.dead_letter_path),
        format!("\na {A1}")
    );
}

#[test]
fn a_claim_of_a_dead_process_on_a_topic_we_do_not_consume_is_given_back() {
    let mut f = Fixture::new();
    let dead = Owner {
        host: host_name(),
        pid: DEAD_PID,
        start: 0,
        instance: 1,
    };
    f.write(&claimed_by(&dead, 41, 1, "other", A1));
    let r = f.cycle(&["a"], 10, &[]);
    assert!(r.claimed.is_empty());
    assert_eq!(f.read(), format!("\nother {A1}"));
}

#[test]
fn a_claim_of_an_ended_instance_of_this_process_is_taken_over() {
    let mut f = Fixture::new();
    let ended = Owner {
        instance: f.me.instance + 1000,
        ..f.me.clone()
    };
    f.write(&claimed_by(&ended, 3, 2, "a", A1));
    let r = f.cycle(&["a"], 10, &[]);
    assert_eq!(r.claimed, vec![claim(1, "a", A1, 3)]);
    assert_eq!(f.read(), f.claimed(1, 3, "a", A1));
}

#[test]
fn claims_of_live_owners_and_other_hosts_are_left_alone() {
    let mut f = Fixture::new();
    // Another live engine instance in this process.
    let sibling = Owner {
        instance: f.me.instance + 1,
        ..f.me.clone()
    };
    let me = f.me.clone();
    // Another machine: its pid means nothing here, even one that does not run on this host.
    let remote = Owner {
        host: format!("{}-elsewhere", host_name()),
        pid: DEAD_PID,
        start: 0,
        instance: 1,
    };
    // A live process (this one's parent) on this host.
    let parent = Owner {
        host: host_name(),
        pid: std::os::unix::process::parent_id(),
        start: crate::transport::file::identity::process_start(std::os::unix::process::parent_id())
            .unwrap_or(0),
        instance: 1,
    };
    let content = format!(
        "{}{}{}",
        claimed_by(&remote, 9, 1, "a", A1),
        claimed_by(&parent, 10, 1, "a", A2),
        claimed_by(&sibling, 11, 2, "a", B1),
    );
    f.write(&content);
    let live = move |instance: u64| instance == me.instance || instance == me.instance + 1;
    let subscriptions = TopicSet {
        topics: ["a".to_string()].into(),
        all: false,
    };
    let r = f
        .store
        .cycle(
            CycleInput {
                me: &f.me,
                live_instances: &live,
                next_seq: &mut f.next_seq,
                subscriptions: &subscriptions,
                want: 10,
                settle: HashMap::new(),
                max_attempts: 3,
            },
            &f.log,
        )
        .unwrap();
    assert!(r.claimed.is_empty());
    assert_eq!(f.read(), content);
}

#[test]
fn lines_written_by_the_sap_cds_consumer_parse() {
    let mut f = Fixture::new();
    // @sap/cds rewrites the box as `lines.join('\n')` and may leave a trailing newline.
    f.write(&format!("a {A1}\nb {B1}\n"));
    let r = f.cycle(&["a"], 10, &[]);
    assert_eq!(r.claimed, vec![claim(1, "a", A1, 1)]);
    assert!(!f.store.malformed_path.exists());
    assert!(f.read().contains(&format!("\nb {B1}")));

    let mut g = Fixture::new();
    g.write(&format!("a {A1}\n\n\na {A2}\n"));
    let r = g.cycle(&["a"], 10, &[]);
    assert_eq!(r.claimed, vec![claim(1, "a", A1, 1), claim(2, "a", A2, 1)]);
    assert!(!g.store.malformed_path.exists());
}

/// Defect 1 of issue #14: a container restarted with the same host name gets the same pid (and its
/// engines the same instance numbers and sequence numbers) as the process before it.
#[test]
fn claims_of_a_predecessor_with_our_pid_are_taken_over_and_never_settled_as_ours() {
    let mut f = Fixture::new();
    let predecessor = Owner {
        start: f.me.start.wrapping_add(1),
        ..f.me.clone()
    };
    // The predecessor claimed seq 1 and 2; our own seq 1 (a message we are processing) follows.
    f.write(&format!(
        "{}{}{}",
        claimed_by(&predecessor, 1, 1, "a", A1),
        claimed_by(&predecessor, 2, 1, "a", A2),
        f.claimed(1, 1, "a", B1)
    ));
    f.next_seq = 1;
    let ours = 1;
    let r = f.cycle(&["a"], 10, &[(ours, SettleOp::Ack)]);
    assert!(r.missing.is_empty());
    let mut got: Vec<_> = r.claimed.iter().map(|c| c.json.clone()).collect();
    got.sort();
    let mut expected = vec![A1.to_string(), A2.to_string()];
    expected.sort();
    assert_eq!(
        got, expected,
        "both of the predecessor's claims are taken over"
    );
    assert!(r.claimed.iter().all(|c| c.attempt == 2));
    let content = f.read();
    assert!(!content.contains(B1), "our acknowledged message is gone");
    assert_eq!(content.matches("\n~claim/").count(), 2);
}

#[test]
fn a_claim_of_an_older_version_with_our_pid_is_taken_over() {
    let mut f = Fixture::new();
    let line = format!(
        "\n~claim/{}/{}.{}.5/1/a {A1}",
        f.me.host, f.me.pid, f.me.instance
    );
    f.write(&line);
    let r = f.cycle(&["a"], 10, &[(5, SettleOp::Ack)]);
    assert_eq!(r.missing, vec![5]);
    assert_eq!(r.claimed, vec![claim(1, "a", A1, 2)]);
}

#[test]
fn a_claim_of_a_live_pid_that_started_at_another_time_is_taken_over() {
    let mut f = Fixture::new();
    // Pid 1 of a container (another pid namespace) looks like this host's live pid 1.
    let parent = std::os::unix::process::parent_id();
    let start = crate::transport::file::identity::process_start(parent).unwrap();
    let other = Owner {
        host: host_name(),
        pid: parent,
        start: start + 1,
        instance: 1,
    };
    f.write(&claimed_by(&other, 4, 1, "a", A1));
    let r = f.cycle(&["a"], 10, &[]);
    assert_eq!(r.claimed, vec![claim(1, "a", A1, 2)]);
}

/// Defect 6 of issue #14: one byte that is not UTF-8 made every cycle fail.
#[test]
fn a_line_that_is_not_utf8_goes_to_the_malformed_box_and_the_rest_is_consumed() {
    let mut f = Fixture::new();
    let mut bytes = format!("\na {A1}\n").into_bytes();
    bytes.extend_from_slice(b"a {\"data\":\"\xff\xfe\"}");
    bytes.extend_from_slice(format!("\nb {B1}").as_bytes());
    fs::write(&f.store.path, &bytes).unwrap();
    let r = f.cycle(&["a"], 10, &[]);
    assert_eq!(r.claimed, vec![claim(1, "a", A1, 1)]);
    assert_eq!(
        fs::read(&f.store.malformed_path).unwrap(),
        b"\na {\"data\":\"\xff\xfe\"}".to_vec()
    );
    assert_eq!(f.read(), format!("{}\nb {B1}", f.claimed(1, 1, "a", A1)));
}

/// Defect 7 of issue #14: the rewrite buffer was sized by `want` (maxInFlight), 48 GB for 1e9.
#[test]
fn a_huge_want_does_not_allocate_by_it() {
    let mut f = Fixture::new();
    f.append(&[("a", A1)]);
    let r = f.cycle(&["a"], 1_000_000_000, &[]);
    assert_eq!(r.claimed.len(), 1);
}

/// Lines an emitter that does not take the lock appends while the cycle runs are kept: read by the
/// pass, carried over when they arrive after it, and appended to the new box when they reach the
/// old file after the rename.
#[test]
fn lines_appended_without_the_lock_during_a_cycle_are_kept() {
    let mut f = Fixture::new();
    let ended = Owner {
        instance: f.me.instance + 1000,
        ..f.me.clone()
    };
    f.write(&format!("{}\nb {B1}", claimed_by(&ended, 3, 1, "a", A1)));
    // While the box is read: the liveness check of the ended instance's claim appends.
    let path = f.store.path.clone();
    let me = f.me.clone();
    let live = move |instance: u64| {
        if instance == ended.instance {
            append_unlocked(&path, "\nb {\"n\":1}");
        }
        instance == me.instance
    };
    // After the pass: one append before the box is looked at again, one through a descriptor of
    // the old file after the rename.
    let path = f.store.path.clone();
    let mut old: Option<File> = None;
    let _hook = on_replace(move |stage| match stage {
        ReplaceStage::Start => {
            append_unlocked(&path, "\nb {\"n\":2}");
            old = Some(OpenOptions::new().append(true).open(&path).unwrap());
        }
        ReplaceStage::Renamed => old.take().unwrap().write_all(b"\nb {\"n\":3}").unwrap(),
    });
    let subscriptions = TopicSet {
        topics: ["a".to_string()].into(),
        all: false,
    };
    let r = f
        .store
        .cycle(
            CycleInput {
                me: &f.me,
                live_instances: &live,
                next_seq: &mut f.next_seq,
                subscriptions: &subscriptions,
                want: 10,
                settle: HashMap::new(),
                max_attempts: 3,
            },
            &f.log,
        )
        .unwrap();
    assert_eq!(r.claimed, vec![claim(1, "a", A1, 2)]);
    assert_eq!(
        f.read(),
        format!(
            "{}\nb {B1}\nb {{\"n\":1}}\nb {{\"n\":2}}\nb {{\"n\":3}}",
            f.claimed(1, 2, "a", A1)
        )
    );
}

/// A box rewritten by a process that does not hold the lock (another inode, or shorter) while the
/// cycle ran is left as that process wrote it: the cycle fails, to be retried, and leaves no
/// temporary file behind.
#[test]
fn a_box_rewritten_without_the_lock_during_a_cycle_is_left_alone() {
    for shorter in [false, true] {
        let f = Fixture::new();
        f.write(&format!("\na {A1}\nb {B1}"));
        let path = f.store.path.clone();
        let _hook = on_replace(move |stage| {
            if stage != ReplaceStage::Start {
                return;
            }
            if shorter {
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(3)
                    .unwrap();
            } else {
                let other = path.with_extension("other");
                fs::write(&other, "\nz {}").unwrap();
                fs::rename(&other, &path).unwrap();
            }
        });
        let subscriptions = TopicSet {
            topics: ["a".to_string()].into(),
            all: false,
        };
        let mut next_seq = 0;
        let err = f
            .store
            .cycle(
                CycleInput {
                    me: &f.me,
                    live_instances: &|_| true,
                    next_seq: &mut next_seq,
                    subscriptions: &subscriptions,
                    want: 10,
                    settle: HashMap::new(),
                    max_attempts: 3,
                },
                &f.log,
            )
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Io, "{}", err.full_message());
        let expected = if shorter { "\na " } else { "\nz {}" };
        assert_eq!(f.read(), expected, "shorter: {shorter}");
        let left: Vec<_> = fs::read_dir(f.store.path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
        assert!(!f.store.lock.path().exists());
    }
}

/// Lines that reached the old box file after the rename are not lost when the new box is gone by
/// then (removed by hand): the box is created again with them.
#[test]
fn late_appends_survive_a_box_removed_after_the_rename() {
    let mut f = Fixture::new();
    f.write(&format!("\na {A1}"));
    let path = f.store.path.clone();
    let mut old: Option<File> = None;
    let _hook = on_replace(move |stage| match stage {
        ReplaceStage::Start => old = Some(OpenOptions::new().append(true).open(&path).unwrap()),
        ReplaceStage::Renamed => {
            old.take().unwrap().write_all(b"\nb {\"late\":1}").unwrap();
            fs::remove_file(&path).unwrap();
        }
    });
    let r = f.cycle(&["a"], 10, &[]);
    assert_eq!(r.claimed, vec![claim(1, "a", A1, 1)]);
    assert_eq!(f.read(), "\nb {\"late\":1}");
}

/// A writer that opened the box before a cycle's rename and writes into it only after the cycle
/// ended (Node's `appendFile` opens and writes in two steps; @sap/cds's emitter appends even
/// without the lock) does not lose its line: the next cycle carries it over into the box. Until
/// the replaced file is no longer watched, and then it is let go.
#[test]
fn a_line_written_into_the_replaced_box_after_the_cycle_reaches_the_next_cycle() {
    let mut f = Fixture::new();
    f.write(&format!("\na {A1}"));
    let path = f.store.path.clone();
    let old = std::rc::Rc::new(std::cell::RefCell::new(None::<File>));
    let opened = old.clone();
    let hook = on_replace(move |stage| {
        if stage == ReplaceStage::Start {
            *opened.borrow_mut() = Some(OpenOptions::new().append(true).open(&path).unwrap());
        }
    });
    let r = f.cycle(&["a"], 10, &[]);
    drop(hook);
    assert_eq!(r.claimed, vec![claim(1, "a", A1, 1)]);
    assert!(!f.store.has_late_appends());
    assert!(f.store.last_replaced().is_some());

    old.borrow_mut()
        .take()
        .unwrap()
        .write_all(b"\nb {\"late\":1}")
        .unwrap();
    assert!(f.store.has_late_appends());
    f.cycle(&["a"], 10, &[]);
    assert_eq!(
        f.read(),
        format!("{}\nb {{\"late\":1}}", f.claimed(1, 1, "a", A1))
    );
    assert!(!f.store.has_late_appends());

    std::thread::sleep(RETIRED_WATCH + Duration::from_millis(50));
    assert!(!f.store.has_late_appends());
    assert_eq!(f.store.last_replaced(), None, "the replaced file is let go");
}

/// A busy box is rewritten many times within [`RETIRED_WATCH`]: only the newest [`MAX_RETIRED`]
/// replaced files stay open, and [`FREE_AFTER`] their old content no longer takes disk space.
#[test]
fn replaced_box_files_are_bounded_in_number_and_freed_on_disk() {
    use std::os::unix::fs::MetadataExt;
    let mut f = Fixture::new();
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(64 * 1024));
    let lines: String = (0..MAX_RETIRED + 5).map(|_| format!("\na {big}")).collect();
    f.write(&lines);
    for _ in 0..MAX_RETIRED + 5 {
        assert_eq!(
            f.cycle(&["a"], 1, &[]).claimed.len(),
            1,
            "each cycle rewrites the box"
        );
    }
    assert_eq!(crate::sync::lock(&f.store.retired).len(), MAX_RETIRED);

    let blocks = |store: &BoxStore| -> u64 {
        crate::sync::lock(&store.retired)
            .iter()
            .map(|r| r.file.metadata().unwrap().blocks())
            .sum()
    };
    let before = blocks(&f.store);
    assert!(before > 0);
    std::thread::sleep(FREE_AFTER + Duration::from_millis(50));
    f.cycle(&["a"], 0, &[]);
    let after = blocks(&f.store);
    assert!(
        after * 10 < before,
        "old content freed: {after} blocks left of {before}"
    );
}
