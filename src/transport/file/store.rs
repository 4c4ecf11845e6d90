//! Synchronous operations on the box file, each under the box lock. Run them off the async runtime.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::identity::same_process_alive;
use super::line::{self, Claim, Line, Owner};
use super::lock::{io_err, BoxLock};
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::subscriptions::TopicSet;
use crate::transport::support::memory;

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
    /// Box files our cycles replaced, still watched for late appends.
    retired: Mutex<Vec<Retired>>,
}

/// A box file (inode) a cycle replaced by its rename. A writer that opened the box before the
/// rename (@sap/cds's emitter, which appends even without the lock; Node's `appendFile` opens and
/// writes in two steps) may still write into it: such lines are carried over into the box for
/// [`RETIRED_WATCH`], from the newest [`MAX_RETIRED`] replaced files. [`FREE_AFTER`] after the
/// replacement, the bytes already in the box are freed on disk (a hole is punched into them), so a
/// watched file does not hold the box's old content for long.
#[derive(Debug)]
struct Retired {
    file: File,
    /// Its bytes up to here are in the box (or were consumed).
    accounted: u64,
    /// Its bytes up to here are freed on disk.
    freed: u64,
    /// When the cycle replaced it.
    replaced: Instant,
}

impl Retired {
    fn watched(&self, now: Instant) -> bool {
        now < self.replaced + RETIRED_WATCH
    }

    /// Frees the disk space of the bytes already in the box (where the file system can and the box
    /// was writable; elsewhere they stay allocated until the file is let go).
    fn free_accounted(&mut self) {
        use std::os::fd::AsRawFd;
        if self.accounted <= self.freed {
            return;
        }
        let (Ok(offset), Ok(len)) = (
            libc::off_t::try_from(self.freed),
            libc::off_t::try_from(self.accounted - self.freed),
        ) else {
            return;
        };
        // SAFETY: fallocate on a descriptor we own; it changes no memory of ours.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        if rc == 0 {
            self.freed = self.accounted;
        }
    }
}

/// How long a replaced box file is watched for late appends: far longer than a writer takes
/// between opening a file and writing into it, even on a loaded machine.
pub const RETIRED_WATCH: Duration = Duration::from_secs(3);

/// When the old content of a replaced box file is freed on disk: a reader that opened it before
/// the rename (@sap/cds's consumer reads without an exclusive lock) has read it by then.
pub const FREE_AFTER: Duration = Duration::from_millis(500);

/// How many replaced box files are watched at most (the newest). A busy box is rewritten hundreds
/// of times a second; without a bound every rewrite of the last 3 s would hold a descriptor.
pub const MAX_RETIRED: usize = 32;

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
    /// A store of the box at `path`, its dead letters and malformed lines at the paths given.
    pub fn new(
        path: PathBuf,
        dead_letter_path: PathBuf,
        malformed_path: PathBuf,
        lock: BoxLock,
        fsync: bool,
    ) -> Self {
        BoxStore {
            path,
            dead_letter_path,
            malformed_path,
            lock,
            fsync,
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Whether a box file a cycle replaced has received lines since (a cycle carries them over).
    /// Box files no longer watched are let go here, so their disk space is freed.
    pub fn has_late_appends(&self) -> bool {
        let now = Instant::now();
        let mut late = false;
        crate::sync::lock(&self.retired).retain(|r| match r.file.metadata() {
            Ok(m) if m.len() > r.accounted => {
                late = true;
                true
            }
            Ok(_) => r.watched(now),
            Err(_) => false,
        });
        late
    }

    /// When a cycle last replaced the box file, while that file is still watched.
    pub fn last_replaced(&self) -> Option<Instant> {
        crate::sync::lock(&self.retired)
            .iter()
            .map(|r| r.replaced)
            .max()
    }

    /// Carries lines that reached replaced box files over into the box, under the lock (what a
    /// consumer does last when it stops).
    pub fn carry_late_appends(&self, log: &Logger) -> Result<()> {
        if crate::sync::lock(&self.retired).is_empty() {
            return Ok(());
        }
        let _guard = self.lock.acquire(log)?;
        self.carry_locked(log)
    }

    /// [`BoxStore::carry_late_appends`] for a caller that holds the lock.
    fn carry_locked(&self, log: &Logger) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        let now = Instant::now();
        let mut retired = crate::sync::lock(&self.retired);
        for r in retired.iter_mut() {
            if now >= r.replaced + FREE_AFTER {
                r.free_accounted();
            }
            let len = match r.file.metadata() {
                Ok(m) => m.len(),
                Err(_) => continue,
            };
            if len <= r.accounted {
                continue;
            }
            let read_err = |e| io_err("cannot read replaced box file", &self.path, e);
            r.file
                .seek(SeekFrom::Start(r.accounted))
                .map_err(read_err)?;
            let mut box_file = OpenOptions::new()
                .append(true)
                .create(true)
                .open(&self.path)
                .map_err(|e| io_err("cannot open for appending", &self.path, e))?;
            let n = std::io::copy(&mut r.file, &mut box_file)
                .map_err(|e| io_err("cannot append to", &self.path, e))?;
            if self.fsync {
                box_file
                    .sync_data()
                    .map_err(|e| io_err("cannot flush to disk", &self.path, e))?;
            }
            r.accounted += n;
            log.debug(&format!(
                "carried {n} bytes written into a replaced file of box {} over into the box",
                self.path.display()
            ));
        }
        retired.retain(|r| r.watched(now));
        Ok(())
    }

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
        append_to(&self.path, text.as_bytes(), self.fsync)
    }

    /// Settles our claims and claims new messages, in one pass under the lock.
    ///
    /// The box is streamed, never held whole: it is read line by line, and its new content is
    /// written to a temporary file as the lines are judged, from the first line that changes on (the
    /// unchanged lines before it are copied from the box then). So a cycle holds its batch, not the
    /// box. A cycle that changes nothing writes nothing: the box keeps its inode and stamp.
    pub fn cycle(&self, input: CycleInput<'_>, log: &Logger) -> Result<CycleResult> {
        use std::os::unix::fs::MetadataExt;
        let _guard = self.lock.acquire(log)?;
        self.carry_locked(log)?;
        // Opened for writing as well where we may (nothing is written through it): once the file
        // is replaced, its old content is freed through this descriptor (`Retired`).
        let opened = match OpenOptions::new().read(true).write(true).open(&self.path) {
            Err(e) if e.kind() == ErrorKind::PermissionDenied => File::open(&self.path),
            other => other,
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.ensure_exists()?;
                return Ok(CycleResult {
                    missing: input.settle.keys().copied().collect(),
                    stamp: Stamp::of(&self.path),
                    ..Default::default()
                });
            }
            Err(e) => return Err(io_err("cannot read box file", &self.path, e)),
        };
        let read_ino = file
            .metadata()
            .map_err(|e| io_err("cannot read box file", &self.path, e))?
            .ino();
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let mut rewrite = Rewrite {
            src: &file,
            tmp: PathBuf::from(tmp),
            out: None,
            created: false,
        };
        let result = self.stream(&file, read_ino, &mut rewrite, input, log);
        if result.is_err() && rewrite.created {
            let _ = fs::remove_file(&rewrite.tmp);
        }
        let mut result = result?;
        result.stamp = Stamp::of(&self.path);
        Ok(result)
    }

    /// The cycle's pass over the box (`file`, opened as inode `read_ino`) and the replacement of
    /// its content when something changed.
    fn stream(
        &self,
        file: &File,
        read_ino: u64,
        rewrite: &mut Rewrite<'_>,
        input: CycleInput<'_>,
        log: &Logger,
    ) -> Result<CycleResult> {
        use std::io::BufRead;
        let CycleInput {
            me,
            live_instances,
            next_seq,
            subscriptions,
            want,
            settle,
            max_attempts,
        } = input;
        let mut pass = Pass {
            store: self,
            log,
            me,
            live_instances,
            next_seq,
            subscriptions,
            want,
            settle,
            max_attempts,
            claimed: Vec::new(),
            dead: SideFile::new(&self.dead_letter_path),
            malformed: SideFile::new(&self.malformed_path),
            text: String::new(),
        };
        let rewrite_err = |e| io_err("cannot rewrite box file", &self.path, e);
        let mut reader = std::io::BufReader::with_capacity(STREAM_BUFFER, file);
        let mut raw = Vec::new();
        let mut read_len: u64 = 0;
        loop {
            raw.clear();
            let n = reader
                .read_until(b'\n', &mut raw)
                .map_err(|e| io_err("cannot read box file", &self.path, e))?;
            if n == 0 {
                break;
            }
            let at = read_len;
            read_len += n as u64;
            let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
            pass.text.clear();
            match pass.line(line)? {
                Verdict::Keep => rewrite.keep(line),
                Verdict::Change => rewrite.change(at, pass.text.as_bytes()),
            }
            .map_err(rewrite_err)?;
        }
        drop(reader);
        // A line as long as a big box (one huge message) still passed through one buffer.
        let trim = raw.capacity() >= memory::TRIM_AFTER_BYTES;
        drop(raw);
        if trim {
            memory::release_free_memory();
        }

        let Pass {
            settle,
            claimed,
            mut dead,
            mut malformed,
            ..
        } = pass;
        // Side files first: a crash between them and the box leaves a duplicate, never a loss.
        dead.finish()?;
        malformed.finish()?;
        if let Some(out) = rewrite.out.take() {
            self.replace(file, out, &rewrite.tmp, (read_len, read_ino), log)?;
        }
        Ok(CycleResult {
            claimed,
            missing: settle.into_keys().collect(),
            stamp: None,
        })
    }

    /// Puts the new content (`out`, the temporary file `tmp`) in place of the box atomically
    /// (rename).
    ///
    /// @sap/cds's emitter appends even when it gave up waiting for the lock. Lines appended to the
    /// box (`file`) since we read its `read_len` bytes are carried over into the new content, and
    /// the old file is watched for [`RETIRED_WATCH`] afterwards; if the box was rewritten
    /// meanwhile (another inode, or shorter), nothing is put in place and the cycle fails, to be
    /// retried.
    fn replace(
        &self,
        file: &File,
        mut out: std::io::BufWriter<File>,
        tmp: &Path,
        (read_len, read_ino): (u64, u64),
        log: &Logger,
    ) -> Result<()> {
        use std::io::{Seek, SeekFrom};
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
        #[cfg(test)]
        tests::replace_hook(tests::ReplaceStage::Start);
        let meta = match fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(conflict()),
            Err(e) => return Err(io_err("cannot read box file", &self.path, e)),
        };
        if meta.ino() != read_ino || meta.len() < read_len {
            return Err(conflict());
        }
        let read_err = |e| io_err("cannot read box file", &self.path, e);
        let mut old = file;
        old.seek(SeekFrom::Start(read_len)).map_err(read_err)?;
        let tail = std::io::copy(&mut old, &mut out)
            .map_err(|e| io_err("cannot rewrite box file", &self.path, e))?;
        let accounted = read_len + tail;
        let write = || -> std::io::Result<()> {
            let f = out.into_inner().map_err(|e| e.into_error())?;
            if self.fsync {
                f.sync_data()?;
            }
            drop(f);
            fs::rename(tmp, &self.path)
        };
        write().map_err(|e| io_err("cannot rewrite box file", &self.path, e))?;
        #[cfg(test)]
        tests::replace_hook(tests::ReplaceStage::Renamed);
        // Appends that reach the old file from now on (a writer that opened it before the rename)
        // are carried over to the new one: now, and by the cycles of the next RETIRED_WATCH.
        let old = file
            .try_clone()
            .map_err(|e| io_err("cannot read box file", &self.path, e))?;
        let newest = Retired {
            file: old,
            accounted,
            freed: 0,
            replaced: Instant::now(),
        };
        {
            let mut retired = crate::sync::lock(&self.retired);
            retired.push(newest);
            let excess = retired.len().saturating_sub(MAX_RETIRED);
            retired.drain(..excess);
        }
        // The new content is in place: the cycle has happened. What could not be carried over now
        // stays watched and is carried by the next cycle.
        if let Err(e) = self.carry_locked(log) {
            log.warn(&format!("{}; the next cycle tries again", e.full_message()));
        }
        Ok(())
    }
}

/// Read and write buffers of a cycle's streaming.
const STREAM_BUFFER: usize = 64 * 1024;

/// What becomes of one line of the box.
enum Verdict {
    /// It stays as it is.
    Keep,
    /// It is replaced by [`Pass::text`] (removed when that is empty).
    Change,
}

/// The state of one cycle's pass over the box.
struct Pass<'a> {
    store: &'a BoxStore,
    log: &'a Logger,
    me: &'a Owner,
    live_instances: &'a dyn Fn(u64) -> bool,
    next_seq: &'a mut u64,
    subscriptions: &'a TopicSet,
    want: usize,
    settle: HashMap<u64, SettleOp>,
    max_attempts: u32,
    claimed: Vec<Claimed>,
    dead: SideFile<'a>,
    malformed: SideFile<'a>,
    /// The new text of a changed line (with its leading `"\n"`).
    text: String,
}

impl Pass<'_> {
    /// Judges one line of the box (without its `"\n"`): settles it, claims it, takes it over or
    /// moves it aside.
    fn line(&mut self, raw: &[u8]) -> Result<Verdict> {
        let store = self.store;
        let raw = match std::str::from_utf8(raw) {
            Ok(raw) => raw,
            Err(_) => {
                // Not text (@sap/cds would not match it either): move it aside, keep going.
                self.log.warn(&format!(
                    "moved a line that is not UTF-8 text from box {} to {}: {}",
                    store.path.display(),
                    store.malformed_path.display(),
                    preview(&String::from_utf8_lossy(raw))
                ));
                self.malformed.push(&[b"\n", raw])?;
                return Ok(Verdict::Change);
            }
        };
        let verdict = match line::parse(raw) {
            Line::Blank if raw.is_empty() => Verdict::Keep,
            Line::Blank => Verdict::Change,
            Line::Malformed(text) => {
                self.log.warn(&format!(
                    "moved a malformed line of box {} to {}: {}",
                    store.path.display(),
                    store.malformed_path.display(),
                    preview(text)
                ));
                self.malformed.push(&[b"\n", text.as_bytes()])?;
                Verdict::Change
            }
            Line::Message { topic, json } => {
                if self.claimed.len() < self.want && self.subscriptions.matches(topic) {
                    if serde_json::from_str::<serde::de::IgnoredAny>(json).is_err() {
                        self.log.warn(&format!(
                            "moved a message on topic '{topic}' with invalid JSON from box {} to {}: {}",
                            store.path.display(),
                            store.malformed_path.display(),
                            preview(json)
                        ));
                        self.malformed.push(&[b"\n", raw.trim_start().as_bytes()])?;
                        return Ok(Verdict::Change);
                    }
                    *self.next_seq += 1;
                    let claim = Claim {
                        owner: self.me.clone(),
                        seq: *self.next_seq,
                        attempt: 1,
                    };
                    line::write_claimed(&mut self.text, &claim, topic, json);
                    self.claimed.push(Claimed {
                        seq: claim.seq,
                        topic: topic.to_string(),
                        json: json.to_string(),
                        attempt: 1,
                    });
                    Verdict::Change
                } else {
                    Verdict::Keep
                }
            }
            Line::Claimed { claim, topic, json } => {
                if claim.owner == *self.me {
                    match self.settle.remove(&claim.seq) {
                        None => Verdict::Keep,
                        Some(SettleOp::Ack) => Verdict::Change,
                        Some(SettleOp::DeadLetter) => {
                            self.dead_letter(topic, json)?;
                            Verdict::Change
                        }
                        Some(SettleOp::Retry { attempt }) => {
                            let claim = Claim { attempt, ..claim };
                            line::write_claimed(&mut self.text, &claim, topic, json);
                            Verdict::Change
                        }
                        Some(SettleOp::Release) => {
                            line::write_message(&mut self.text, topic, json);
                            Verdict::Change
                        }
                    }
                } else if owner_gone(&claim.owner, self.me, self.live_instances) {
                    let attempt = claim.attempt.saturating_add(1);
                    if !self.subscriptions.matches(topic) {
                        // Not ours to process: give it back to whoever subscribes.
                        line::write_message(&mut self.text, topic, json);
                        Verdict::Change
                    } else if self.claimed.len() >= self.want {
                        // Ours, but no capacity now: leave the claim (and its attempt count)
                        // for a later cycle.
                        Verdict::Keep
                    } else if attempt > self.max_attempts {
                        self.log.error(&format!(
                            "message on topic '{topic}' was being processed by a process that ended ({} times); moved to the dead-letter box {}",
                            claim.attempt,
                            store.dead_letter_path.display()
                        ));
                        self.dead_letter(topic, json)?;
                        Verdict::Change
                    } else {
                        self.log.warn(&format!(
                            "taking over message on topic '{topic}' from process {} on {} which ended before acknowledging it (attempt {attempt})",
                            claim.owner.pid, claim.owner.host
                        ));
                        *self.next_seq += 1;
                        let mine = Claim {
                            owner: self.me.clone(),
                            seq: *self.next_seq,
                            attempt,
                        };
                        line::write_claimed(&mut self.text, &mine, topic, json);
                        self.claimed.push(Claimed {
                            seq: mine.seq,
                            topic: topic.to_string(),
                            json: json.to_string(),
                            attempt,
                        });
                        Verdict::Change
                    }
                } else {
                    Verdict::Keep
                }
            }
        };
        Ok(verdict)
    }

    /// Queues a message for the dead-letter box (in the box's line form).
    fn dead_letter(&mut self, topic: &str, json: &str) -> Result<()> {
        line::write_message(&mut self.text, topic, json);
        let r = self.dead.push(&[self.text.as_bytes()]);
        self.text.clear();
        r
    }
}

/// The new content of the box, written to a temporary file from the first line that changes on.
struct Rewrite<'a> {
    /// The box as it is read.
    src: &'a File,
    /// The temporary file that replaces it.
    tmp: PathBuf,
    /// The temporary file, once a line changed.
    out: Option<std::io::BufWriter<File>>,
    /// Whether the temporary file was created (to remove it when the cycle fails).
    created: bool,
}

impl Rewrite<'_> {
    /// An unchanged line: written as `"\n" + raw` (an empty one not at all) once the box is
    /// rewritten.
    fn keep(&mut self, raw: &[u8]) -> std::io::Result<()> {
        if let Some(out) = &mut self.out {
            if !raw.is_empty() {
                out.write_all(b"\n")?;
                out.write_all(raw)?;
            }
        }
        Ok(())
    }

    /// The line at byte `at` of the box changes to `text`. On the first change the temporary file
    /// is created, and the unchanged lines before `at` are copied into it first.
    fn change(&mut self, at: u64, text: &[u8]) -> std::io::Result<()> {
        let out = match &mut self.out {
            Some(out) => out,
            None => {
                let file = File::create(&self.tmp)?;
                self.created = true;
                let mut out = std::io::BufWriter::with_capacity(STREAM_BUFFER, file);
                copy_kept_lines(self.src, at, &mut out)?;
                self.out.insert(out)
            }
        };
        out.write_all(text)
    }
}

/// Copies the first `len` bytes of `src`, lines that were all kept, in the form [`Rewrite::keep`]
/// writes them: each non-empty line as `"\n" + line`, empty lines left out.
fn copy_kept_lines(src: &File, len: u64, out: &mut impl Write) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; STREAM_BUFFER];
    let mut pos = 0;
    // At the start of a line: a "\n" is due before its first byte.
    let mut line_start = true;
    while pos < len {
        let want = usize::try_from(len - pos).map_or(buf.len(), |n| n.min(buf.len()));
        let n = src.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "box file became shorter while it was read",
            ));
        }
        pos += n as u64;
        for piece in buf[..n].split_inclusive(|&b| b == b'\n') {
            let (bytes, ends) = match piece.strip_suffix(b"\n") {
                Some(bytes) => (bytes, true),
                None => (piece, false),
            };
            if !bytes.is_empty() {
                if line_start {
                    out.write_all(b"\n")?;
                }
                out.write_all(bytes)?;
                line_start = false;
            }
            if ends {
                line_start = true;
            }
        }
    }
    Ok(())
}

/// Lines bound for a side file (dead letters, malformed lines), appended in chunks as they come
/// and made durable by [`SideFile::finish`].
struct SideFile<'a> {
    path: &'a Path,
    pending: Vec<u8>,
    appended: bool,
}

impl<'a> SideFile<'a> {
    fn new(path: &'a Path) -> Self {
        SideFile {
            path,
            pending: Vec::new(),
            appended: false,
        }
    }

    /// Queues the concatenation of `parts`.
    fn push(&mut self, parts: &[&[u8]]) -> Result<()> {
        for part in parts {
            self.pending.extend_from_slice(part);
        }
        if self.pending.len() >= STREAM_BUFFER {
            append_to(self.path, &self.pending, false)?;
            self.pending.clear();
            self.appended = true;
        }
        Ok(())
    }

    /// Appends what is queued and flushes the file to disk, if anything was pushed.
    fn finish(&mut self) -> Result<()> {
        if self.appended || !self.pending.is_empty() {
            append_to(self.path, &self.pending, true)?;
            self.pending.clear();
        }
        Ok(())
    }
}

fn owner_gone(owner: &Owner, me: &Owner, live_instances: &dyn Fn(u64) -> bool) -> bool {
    if owner.host != me.host {
        return false; // another machine's process: we cannot tell, so it keeps its claim
    }
    if owner.pid == me.pid {
        if owner.start == me.start {
            return !live_instances(owner.instance);
        }
        // Our pid, another start: a predecessor (e.g. before a container restart) that ended.
        return true;
    }
    !same_process_alive(owner.pid, owner.start)
}

fn append_to(path: &Path, text: &[u8], fsync: bool) -> Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| io_err("cannot open for appending", path, e))?;
    f.write_all(text)
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
