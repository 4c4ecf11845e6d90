//! The box lock `<box>.lock`, shared with @sap/cds `file-based-messaging`.
//!
//! ## Behavior
//! - Taken atomically, content included: the content is written to a file of its own, which is then
//!   hard-linked as the lock (the link fails when a lock exists). A process killed while taking the
//!   lock leaves no lock, only a stray `<box>.lock.<pid>.<token>.tmp`. Where the file system has no
//!   hard links, create-exclusive (`O_CREAT|O_EXCL`) and a write. @sap/cds checks for the file's
//!   existence, so both kinds exclude each other.
//! - Our lock file holds `cds-native-messaging <host> <pid> <token> <start>` (`<start>`: see
//!   [`super::identity`]). It is released only by its owner: before removing it we check the token
//!   is still ours.
//! - A lock is stale when its owner is a process on this host that no longer runs (or a process
//!   with that pid that started at another time); when it carries our pid but a token no lock of
//!   this process holds (a predecessor with our pid, e.g. before a container restart); or when it
//!   is older than `stale_after` — a lock we cannot attribute (e.g. @sap/cds's `locked`), one of
//!   another host, or one of a live process that never releases it (locks are held for one write).
//!   An *empty* lock file older than [`EMPTY_LOCK_GRACE`] is stale too: a writer that was killed
//!   between creating and writing it (@sap/cds, or a version of ours before the hard link) left it.
//!   A stale lock is removed with a warning and taking the lock is retried.
//! - Among our own engines (threads of one process, processes of one host) the lock file is taken
//!   and removed only under an exclusive `flock` on `<box>.flock` (a file that stays; the kernel
//!   releases the `flock` when its holder dies). Without it, two engines could both decide that one
//!   lock file is stale, and the second removed the fresh lock the first had just taken: two
//!   writers at once, and an emit appended in between was lost in the next rewrite. Where the file
//!   system has no `flock`, the lock file alone decides, as before.
//! - Waiting backs off from 1 ms to 20 ms; after `timeout` the caller gets `LOCK_TIMEOUT`.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;

const MAGIC: &str = "cds-native-messaging";

/// How long an empty lock file is taken for a lock being written. Writers fill a lock file within
/// microseconds of creating it, so an older empty one was left by a writer that died in between.
pub const EMPTY_LOCK_GRACE: Duration = Duration::from_secs(1);

/// Tokens of the locks this process holds or is taking right now.
fn held_tokens() -> std::sync::MutexGuard<'static, HashSet<u64>> {
    static HELD: OnceLock<Mutex<HashSet<u64>>> = OnceLock::new();
    crate::sync::lock(HELD.get_or_init(Default::default))
}

/// Settings of a [`BoxLock`].
#[derive(Debug, Clone)]
pub struct LockSettings {
    /// How long to wait for the lock.
    pub timeout: Duration,
    /// Age after which a lock of unknown origin is considered stale.
    pub stale_after: Duration,
}

/// The lock file of one box.
#[derive(Debug, Clone)]
pub struct BoxLock {
    path: PathBuf,
    /// `<box>.flock`, the `flock` of our own engines.
    flock_path: PathBuf,
    host: String,
    settings: LockSettings,
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct LockGuard<'a> {
    lock: &'a BoxLock,
    content: String,
    token: u64,
    log: &'a Logger,
    /// The `flock` on `<box>.flock` (none where the file system has no `flock`); a field, so it is
    /// released only after `drop` removed the lock file.
    _flock: Option<File>,
}

/// The outcome of one non-blocking try to `flock` a file.
enum Flock {
    Held(File),
    Busy,
    /// The file system cannot `flock` (or the file cannot be opened): go without.
    Unsupported,
}

fn try_flock(path: &Path) -> Flock {
    let Ok(f) = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    else {
        return Flock::Unsupported;
    };
    // SAFETY: flock on a file descriptor we own; LOCK_NB makes it return at once.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Flock::Held(f);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => Flock::Busy,
        _ => Flock::Unsupported,
    }
}

/// `true` unless the process is known not to run (only decidable on this host).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission; it sends nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

impl BoxLock {
    /// The lock for the box at `box_path` (the lock file is `<box>.lock`).
    pub fn new(box_path: &Path, host: String, settings: LockSettings) -> Self {
        let sibling = |ext: &str| {
            let mut p = box_path.as_os_str().to_owned();
            p.push(ext);
            PathBuf::from(p)
        };
        BoxLock {
            path: sibling(".lock"),
            flock_path: sibling(".flock"),
            host,
            settings,
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the lock, waiting up to the configured timeout. Blocking.
    pub fn acquire<'a>(&'a self, log: &'a Logger) -> Result<LockGuard<'a>> {
        let token = fastrand::u64(..);
        let content = format!(
            "{MAGIC} {} {} {token:016x} {}",
            self.host,
            std::process::id(),
            super::identity::own_start()
        );
        // Registered before the file exists, so no thread of ours takes our fresh lock for a
        // predecessor's.
        held_tokens().insert(token);
        let result = self.acquire_with(content, token, log);
        if result.is_err() {
            held_tokens().remove(&token);
        }
        result
    }

    fn acquire_with<'a>(
        &'a self,
        content: String,
        token: u64,
        log: &'a Logger,
    ) -> Result<LockGuard<'a>> {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(1);
        let flock = loop {
            match try_flock(&self.flock_path) {
                Flock::Held(f) => break Some(f),
                Flock::Unsupported => break None,
                Flock::Busy if start.elapsed() >= self.settings.timeout => {
                    return Err(self.timeout_error())
                }
                Flock::Busy => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(20));
                }
            }
        };
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(format!(".{}.{token:016x}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        fs::write(&tmp, content.as_bytes())
            .map_err(|e| io_err("cannot write lock file", &tmp, e))?;
        let mut linkable = true;
        let result = loop {
            match self.try_create(&tmp, &content, &mut linkable) {
                Ok(()) => {
                    break Ok(LockGuard {
                        lock: self,
                        content,
                        token,
                        log,
                        _flock: flock,
                    })
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if self.remove_if_stale(log) {
                        continue;
                    }
                }
                Err(e) => break Err(io_err("cannot create lock file", &self.path, e)),
            }
            if start.elapsed() >= self.settings.timeout {
                break Err(self.timeout_error());
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(20));
        };
        let _ = fs::remove_file(&tmp);
        result
    }

    fn timeout_error(&self) -> Error {
        Error::new(
            ErrorCode::LockTimeout,
            format!(
                "the box lock {} is held by another process for more than {} ms; if no process uses the box, delete the lock file",
                self.path.display(),
                self.settings.timeout.as_millis()
            ),
        )
    }

    /// One attempt to create the lock file with `content`: a hard link to `tmp` (which holds it),
    /// or — once the file system refused a hard link (`linkable` turns false) — create-exclusive
    /// and a write. `AlreadyExists` when a lock exists.
    fn try_create(&self, tmp: &Path, content: &str, linkable: &mut bool) -> std::io::Result<()> {
        if *linkable {
            match fs::hard_link(tmp, &self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(e),
                // No hard links here (some network and FUSE file systems).
                Err(_) => *linkable = false,
            }
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.path)?;
        if let Err(e) = f.write_all(content.as_bytes()) {
            let _ = fs::remove_file(&self.path);
            return Err(e);
        }
        Ok(())
    }

    /// Removes the lock file if it is stale; `true` if it was removed (or vanished meanwhile).
    fn remove_if_stale(&self, log: &Logger) -> bool {
        let content = match fs::read_to_string(&self.path) {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => return true,
            Err(_) => return false,
        };
        let stale = match parse_owner(&content) {
            Some(o) if o.host == self.host && o.pid == std::process::id() => match o.token {
                // Our pid: stale unless one of our own locks has that token.
                Some(token) => !held_tokens().contains(&token),
                None => self.older_than_stale_limit(),
            },
            Some(o) if o.host == self.host => {
                !super::identity::same_process_alive(o.pid, o.start)
                    || self.older_than_stale_limit()
            }
            Some(_) => self.older_than_stale_limit(),
            None if content.is_empty() => self.older_than(EMPTY_LOCK_GRACE),
            None => self.older_than_stale_limit(),
        };
        if !stale {
            return false;
        }
        // Re-check that the content did not change while we looked, then remove.
        match fs::read_to_string(&self.path) {
            Ok(again) if again == content => {
                if fs::remove_file(&self.path).is_ok() {
                    log.warn(&format!(
                        "removed stale box lock {} (held by: {})",
                        self.path.display(),
                        describe_owner(&content)
                    ));
                }
                true
            }
            Ok(_) => false,
            Err(_) => true,
        }
    }

    fn older_than_stale_limit(&self) -> bool {
        self.older_than(self.settings.stale_after)
    }

    /// Whether the lock file was last modified at least `age` ago.
    fn older_than(&self, age: Duration) -> bool {
        fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .unwrap_or(Duration::ZERO)
                    >= age
            })
            .unwrap_or(false)
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // The token is forgotten only after the file is gone: until then, a lock file with our pid
        // and this token is a live lock to every engine of ours.
        let _forget = TokenForgotten(self.token);
        match fs::read_to_string(&self.lock.path) {
            Ok(c) if c == self.content => {
                if let Err(e) = fs::remove_file(&self.lock.path) {
                    self.log.warn(&format!(
                        "could not release box lock {}: {e}",
                        self.lock.path.display()
                    ));
                }
            }
            Ok(_) | Err(_) => self.log.warn(&format!(
                "box lock {} was removed by another process while we held it (a @sap/cds emitter gives up waiting after 1.5 s); not touching it",
                self.lock.path.display()
            )),
        }
    }
}

/// Removes a token from the held ones when dropped (at the end of [`LockGuard`]'s `drop`).
struct TokenForgotten(u64);

impl Drop for TokenForgotten {
    fn drop(&mut self) {
        held_tokens().remove(&self.0);
    }
}

/// The owner recorded in one of our lock files.
struct LockOwner<'a> {
    host: &'a str,
    pid: u32,
    /// `None` when the file was cut short (being written) or has no valid token.
    token: Option<u64>,
    /// 0 when unknown (a lock of an older version).
    start: u64,
}

fn parse_owner(content: &str) -> Option<LockOwner<'_>> {
    let mut it = content.split_whitespace();
    if it.next()? != MAGIC {
        return None;
    }
    let host = it.next()?;
    let pid = it.next()?.parse().ok()?;
    let token = it
        .next()
        .filter(|t| t.len() == 16)
        .and_then(|t| u64::from_str_radix(t, 16).ok());
    let start = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Some(LockOwner {
        host,
        pid,
        token,
        start,
    })
}

fn describe_owner(content: &str) -> String {
    match parse_owner(content) {
        Some(LockOwner { host, pid, .. }) => format!("process {pid} on {host}"),
        None => "a process of unknown kind".to_string(),
    }
}

pub(crate) fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::with_cause(ErrorCode::Io, format!("{what} {}", path.display()), e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::support::host::host_name;

    fn lock(dir: &Path, timeout_ms: u64, stale_ms: u64) -> BoxLock {
        BoxLock::new(
            &dir.join("box"),
            host_name(),
            LockSettings {
                timeout: Duration::from_millis(timeout_ms),
                stale_after: Duration::from_millis(stale_ms),
            },
        )
    }

    #[test]
    fn exclusive_and_released_by_owner() {
        let dir = tempfile::tempdir().unwrap();
        let log = Logger::default();
        let l = lock(dir.path(), 50, 60_000);
        let g = l.acquire(&log).unwrap();
        assert!(l.path().exists());
        let err = l.acquire(&log).unwrap_err();
        assert_eq!(err.code, ErrorCode::LockTimeout);
        drop(g);
        assert!(!l.path().exists());
        let _g = l.acquire(&log).unwrap();
    }

    #[test]
    fn lock_of_a_dead_process_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let log = Logger::default();
        let l = lock(dir.path(), 500, 60_000);
        // pid 0x7ffffff0 does not run.
        fs::write(
            l.path(),
            format!(
                "{MAGIC} {} 2147483632 abc",
                crate::transport::support::host::host_name()
            ),
        )
        .unwrap();
        let _g = l.acquire(&log).unwrap();
    }

    #[test]
    fn sap_cds_lock_is_respected_until_old() {
        let dir = tempfile::tempdir().unwrap();
        let log = Logger::default();
        let l = lock(dir.path(), 30, 60_000);
        fs::write(l.path(), "locked").unwrap();
        assert_eq!(l.acquire(&log).unwrap_err().code, ErrorCode::LockTimeout);
        let l2 = lock(dir.path(), 500, 0);
        let _g = l2.acquire(&log).unwrap();
    }

    #[test]
    fn lock_taken_over_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let log = Logger::default();
        let l = lock(dir.path(), 30, 60_000);
        let g = l.acquire(&log).unwrap();
        fs::write(l.path(), "locked").unwrap();
        drop(g);
        assert_eq!(fs::read_to_string(l.path()).unwrap(), "locked");
    }

    /// Issue #14, defect 8, seen in the container-restart test: a process killed between creating
    /// the lock file and writing it left an empty lock, which blocked the box for `staleLockAfter`
    /// (every emit failing with LOCK_TIMEOUT meanwhile).
    #[test]
    fn an_empty_lock_file_left_by_a_killed_writer_is_stale_after_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let log = Logger::default();
        let l = lock(dir.path(), 3_000, 60_000);
        fs::write(l.path(), "").unwrap();
        let t = Instant::now();
        let _g = l.acquire(&log).unwrap();
        assert!(t.elapsed() >= EMPTY_LOCK_GRACE - Duration::from_millis(50));
        assert!(t.elapsed() < Duration::from_millis(2_500));
    }

    #[test]
    fn an_empty_lock_file_being_written_right_now_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let log = Logger::default();
        let l = lock(dir.path(), 200, 60_000);
        fs::write(l.path(), "").unwrap();
        assert_eq!(l.acquire(&log).unwrap_err().code, ErrorCode::LockTimeout);
    }

    #[test]
    fn the_lock_file_is_never_seen_without_its_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = Logger::default();
        let l = lock(dir.path(), 50, 60_000);
        let g = l.acquire(&log).unwrap();
        assert!(fs::read_to_string(l.path()).unwrap().starts_with(MAGIC));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, vec!["box.flock".to_string(), "box.lock".to_string()]);
        drop(g);
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec!["box.flock".to_string()]);
    }

    /// Issue #14: `file::tests::competing_consumers…` lost a whole emit now and then. Two engines
    /// (and their emitters) of one process took the lock at the same time: one of them removed
    /// the other's fresh lock as stale (its owner was releasing an older lock of ours), and the
    /// emit appended meanwhile was not in the rewrite.
    #[test]
    fn threads_of_one_process_never_hold_the_lock_at_the_same_time() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let l = Arc::new(lock(dir.path(), 30_000, 60_000));
        let inside = Arc::new(AtomicBool::new(false));
        let overlaps = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (l, inside, overlaps) = (l.clone(), inside.clone(), overlaps.clone());
                std::thread::spawn(move || {
                    let log = Logger::default();
                    for _ in 0..400 {
                        let g = l.acquire(&log).unwrap();
                        if inside.swap(true, Ordering::SeqCst) {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        std::thread::yield_now();
                        inside.store(false, Ordering::SeqCst);
                        drop(g);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    }

    /// Defect 8 of issue #14: a container restarted with the same host name has the pid of the
    /// process that crashed while holding the lock.
    #[test]
    fn a_lock_with_our_pid_but_a_token_we_do_not_hold_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let log = Logger::default();
        let l = lock(dir.path(), 300, 60_000);
        fs::write(
            l.path(),
            format!(
                "{MAGIC} {} {} 00000000deadbeef",
                host_name(),
                std::process::id()
            ),
        )
        .unwrap();
        let _g = l.acquire(&log).unwrap();
    }

    #[test]
    fn a_lock_of_our_own_that_is_held_is_not_stale() {
        let dir = tempfile::tempdir().unwrap();
        let log = Logger::default();
        let l = lock(dir.path(), 50, 60_000);
        let _g = l.acquire(&log).unwrap();
        assert_eq!(l.acquire(&log).unwrap_err().code, ErrorCode::LockTimeout);
    }

    #[test]
    fn a_lock_of_a_live_unrelated_process_is_stale_when_old_or_started_at_another_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = Logger::default();
        let parent = std::os::unix::process::parent_id();
        let start = super::super::identity::process_start(parent).unwrap();
        // The pid runs, but it is not the process that took the lock.
        let l = lock(dir.path(), 300, 60_000);
        fs::write(
            l.path(),
            format!(
                "{MAGIC} {} {parent} 00000000deadbeef {}",
                host_name(),
                start + 1
            ),
        )
        .unwrap();
        drop(l.acquire(&log).unwrap());
        // Same start (or a lock without one): respected until older than `stale_after`.
        for content in [
            format!("{MAGIC} {} {parent} 00000000deadbeef {start}", host_name()),
            format!("{MAGIC} {} {parent} 00000000deadbeef", host_name()),
        ] {
            fs::write(l.path(), &content).unwrap();
            assert_eq!(l.acquire(&log).unwrap_err().code, ErrorCode::LockTimeout);
            let old = lock(dir.path(), 300, 0);
            drop(old.acquire(&log).unwrap());
        }
    }

    #[test]
    fn this_process_is_alive() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(2147483632));
    }
}
