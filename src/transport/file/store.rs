//! Synchronous operations on the box file, each under the box lock. Run them off the async runtime.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::line::{self, Claim, Line, Owner};
use super::lock::{io_err, process_alive, BoxLock};
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::subscriptions::TopicSet;

/// What to do with one of our claimed lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOp {
    /// Processed: remove the line.
    Ack,
    /// Failed, will be redelivered: record the new attempt number in the claim.
    Retry {
        /// The attempt number of the coming redelivery.
        attempt: u32,
    },
    /// Gave up: move to the dead-letter box (the error is logged by the engine).
    DeadLetter,
    /// Not processed (shutting down): give the line back unclaimed.
    Release,
}

/// A message claimed by one cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// Sequence number of our claim (the key for settling).
    pub seq: u64,
    /// Topic.
    pub topic: String,
    /// JSON body.
    pub json: String,
    /// Attempt number of this delivery.
    pub attempt: u32,
}

/// Result of a cycle.
#[derive(Debug, Default)]
pub struct CycleResult {
    /// Newly claimed messages, in file order.
    pub claimed: Vec<Claimed>,
    /// Settle ops whose line was no longer in the box.
    pub missing: Vec<u64>,
    /// File identity after the cycle (to skip the next one when nothing changed).
    pub stamp: Option<Stamp>,
}

/// Cheap identity of the box file's state: any append or rewrite changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    ino: u64,
    mtime_ns: i128,
}

impl Stamp {
    /// The current stamp of `path`, if it exists.
    pub fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).ok()?;
        Some(Stamp {
            len: m.len(),
            ino: m.ino(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        })
    }
}

/// The box file and the files next to it.
#[derive(Debug)]
pub struct BoxStore {
    /// The box.
    pub path: PathBuf,
    /// Where exhausted messages go (same line format, so they can be replayed by appending).
    pub dead_letter_path: PathBuf,
    /// Where lines that are not messages go.
    pub malformed_path: PathBuf,
    /// The lock.
    pub lock: BoxLock,
    /// fsync appends before an emit resolves.
    pub fsync: bool,
}

/// Everything a cycle needs to know about the consumer.
pub struct CycleInput<'a> {
    /// Our identity for claims.
    pub me: &'a Owner,
    /// Our other live engine instances in this process (their claims are not stale).
    pub live_instances: &'a dyn Fn(u64) -> bool,
    /// Sequence counter for new claims.
    pub next_seq: &'a mut u64,
    /// What we consume.
    pub subscriptions: &'a TopicSet,
    /// How many messages we may claim now.
    pub want: usize,
    /// Settle ops for our claims.
    pub settle: HashMap<u64, SettleOp>,
    /// A reclaimed message whose attempt would exceed this is dead-lettered without delivery.
    pub max_attempts: u32,
}

impl BoxStore {
    /// Creates the box as `"\n"` if it does not exist (as @sap/cds does).
    pub fn ensure_exists(&self) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                fs::create_dir_all(dir)
                    .map_err(|e| io_err("cannot create the directory of box file", dir, e))?;
            }
        }
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.path)
        {
            Ok(mut f) => f
                .write_all(b"\n")
                .map_err(|e| io_err("cannot write box file", &self.path, e)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_err("cannot create box file", &self.path, e)),
        }
    }

    /// Appends lines (each already in `"\n"topic json` form) under the lock; durable on return when
    /// `fsync` is set.
    pub fn append(&self, text: &str, log: &Logger) -> Result<()> {
        let _guard = self.lock.acquire(log)?;
        self.ensure_exists()?;
        append_to(&self.path, text, self.fsync)
    }

    /// Settles our claims and claims new messages, in one pass under the lock.
    pub fn cycle(&self, input: CycleInput<'_>, log: &Logger) -> Result<CycleResult> {
        let _guard = self.lock.acquire(log)?;
        let read_ino = Stamp::of(&self.path).map(|s| s.ino);
        let content = match fs::read_to_string(&self.path) {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.ensure_exists()?;
                return Ok(CycleResult {
                    missing: input.settle.keys().copied().collect(),
                    stamp: Stamp::of(&self.path),
                    ..Default::default()
                });
            }
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                return Err(io_err(
                    "box file is not UTF-8 text; move it aside",
                    &self.path,
                    e,
                ))
            }
            Err(e) => return Err(io_err("cannot read box file", &self.path, e)),
        };

        let CycleInput {
            me,
            live_instances,
            next_seq,
            subscriptions,
            want,
            mut settle,
            max_attempts,
        } = input;
        let mut out = String::with_capacity(content.len() + want * 48);
        let mut dead = String::new();
        let mut malformed = String::new();
        let mut result = CycleResult::default();
        let mut changed = false;

        for raw in content.split('\n') {
            match line::parse(raw) {
                Line::Blank => changed |= !raw.is_empty(),
                Line::Malformed(text) => {
                    log.warn(&format!(
                        "moved a malformed line of box {} to {}: {}",
                        self.path.display(),
                        self.malformed_path.display(),
                        preview(text)
                    ));
                    malformed.push('\n');
                    malformed.push_str(text);
                    changed = true;
                }
                Line::Message { topic, json } => {
                    if result.claimed.len() < want && subscriptions.matches(topic) {
                        if serde_json::from_str::<serde::de::IgnoredAny>(json).is_err() {
                            log.warn(&format!(
                                "moved a message on topic '{topic}' with invalid JSON from box {} to {}: {}",
                                self.path.display(),
                                self.malformed_path.display(),
                                preview(json)
                            ));
                            malformed.push('\n');
                            malformed.push_str(raw.trim_start());
                            changed = true;
                            continue;
                        }
                        *next_seq += 1;
                        let claim = Claim {
                            owner: me.clone(),
                            seq: *next_seq,
                            attempt: 1,
                        };
                        line::write_claimed(&mut out, &claim, topic, json);
                        result.claimed.push(Claimed {
                            seq: claim.seq,
                            topic: topic.to_string(),
                            json: json.to_string(),
                            attempt: 1,
                        });
                        changed = true;
                    } else {
                        out.push('\n');
                        out.push_str(raw);
                    }
                }
                Line::Claimed { claim, topic, json } => {
                    if claim.owner == *me {
                        match settle.remove(&claim.seq) {
                            None => {
                                out.push('\n');
                                out.push_str(raw);
                            }
                            Some(SettleOp::Ack) => changed = true,
                            Some(SettleOp::DeadLetter) => {
                                line::write_message(&mut dead, topic, json);
                                changed = true;
                            }
                            Some(SettleOp::Retry { attempt }) => {
                                let claim = Claim { attempt, ..claim };
                                line::write_claimed(&mut out, &claim, topic, json);
                                changed = true;
                            }
                            Some(SettleOp::Release) => {
                                line::write_message(&mut out, topic, json);
                                changed = true;
                            }
                        }
                    } else if owner_gone(&claim.owner, me, live_instances) {
                        let attempt = claim.attempt.saturating_add(1);
                        if subscriptions.matches(topic) && result.claimed.len() >= want {
                            // Ours, but no capacity now: leave the claim (and its attempt count)
                            // for a later cycle.
                            out.push('\n');
                            out.push_str(raw);
                            continue;
                        }
                        changed = true;
                        if !subscriptions.matches(topic) {
                            // Not ours to process: give it back to whoever subscribes.
                            line::write_message(&mut out, topic, json);
                        } else if attempt > max_attempts {
                            log.error(&format!(
                                "message on topic '{topic}' was being processed by a process that ended ({} times); moved to the dead-letter box {}",
                                claim.attempt,
                                self.dead_letter_path.display()
                            ));
                            line::write_message(&mut dead, topic, json);
                        } else {
                            log.warn(&format!(
                                "taking over message on topic '{topic}' from process {} on {} which ended before acknowledging it (attempt {attempt})",
                                claim.owner.pid, claim.owner.host
                            ));
                            *next_seq += 1;
                            let mine = Claim {
                                owner: me.clone(),
                                seq: *next_seq,
                                attempt,
                            };
                            line::write_claimed(&mut out, &mine, topic, json);
                            result.claimed.push(Claimed {
                                seq: mine.seq,
                                topic: topic.to_string(),
                                json: json.to_string(),
                                attempt,
                            });
                        }
                    } else {
                        out.push('\n');
                        out.push_str(raw);
                    }
                }
            }
        }
        result.missing = settle.into_keys().collect();

        // Side files first: a crash between the two leaves a duplicate, never a loss.
        if !dead.is_empty() {
            append_to(&self.dead_letter_path, &dead, true)?;
        }
        if !malformed.is_empty() {
            append_to(&self.malformed_path, &malformed, true)?;
        }
        if changed {
            self.replace(out, content.len() as u64, read_ino)?;
        }
        result.stamp = Stamp::of(&self.path);
        Ok(result)
    }

    /// Replaces the box's content atomically (temp file + rename).
    ///
    /// @sap/cds's emitter appends even when it gave up waiting for the lock. Lines appended since we
    /// read the box (`read_len` bytes) are carried over into the new content; if the box was
    /// rewritten meanwhile (another inode, or shorter), nothing is written and the cycle fails, to
    /// be retried.
    fn replace(&self, mut content: String, read_len: u64, read_ino: Option<u64>) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        let conflict = || {
            Error::new(
                ErrorCode::Io,
                format!(
                    "box file {} was rewritten by a process that does not hold the lock; retrying",
                    self.path.display()
                ),
            )
        };
        let mut old = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(conflict()),
            Err(e) => return Err(io_err("cannot read box file", &self.path, e)),
        };
        let meta = old
            .metadata()
            .map_err(|e| io_err("cannot read box file", &self.path, e))?;
        if Some(meta.ino()) != read_ino || meta.len() < read_len {
            return Err(conflict());
        }
        let mut accounted = read_len;
        let read_tail = |f: &mut File, from: u64| -> Result<String> {
            let mut tail = String::new();
            f.seek(SeekFrom::Start(from))
                .and_then(|_| f.read_to_string(&mut tail))
                .map_err(|e| io_err("cannot read box file", &self.path, e))?;
            Ok(tail)
        };
        if meta.len() > read_len {
            let tail = read_tail(&mut old, read_len)?;
            accounted += tail.len() as u64;
            content.push_str(&tail);
        }
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(content.as_bytes())?;
            if self.fsync {
                f.sync_data()?;
            }
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("cannot rewrite box file", &self.path, e)
        })?;
        // Appends that reached the old file after we looked (a writer that opened it before the
        // rename) are carried over to the new one.
        let late = read_tail(&mut old, accounted)?;
        if !late.is_empty() {
            append_to(&self.path, &late, self.fsync)?;
        }
        Ok(())
    }
}

fn owner_gone(owner: &Owner, me: &Owner, live_instances: &dyn Fn(u64) -> bool) -> bool {
    if owner.host != me.host {
        return false; // another machine's process: we cannot tell, so it keeps its claim
    }
    if owner.pid == me.pid {
        return !live_instances(owner.instance);
    }
    !process_alive(owner.pid)
}

fn append_to(path: &Path, text: &str, fsync: bool) -> Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| io_err("cannot open for appending", path, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| io_err("cannot append to", path, e))?;
    if fsync {
        f.sync_data()
            .map_err(|e| io_err("cannot flush to disk", path, e))?;
    }
    Ok(())
}

fn preview(s: &str) -> String {
    const MAX: usize = 120;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests;
