//! The box lock `<box>.lock`, shared with @sap/cds `file-based-messaging`.
//!
//! ## Behavior
//! - Taken atomically with create-exclusive (`O_CREAT|O_EXCL`); @sap/cds checks for the file's
//!   existence, so both kinds exclude each other.
//! - Our lock file holds `cds-native-messaging <host> <pid> <token>`. It is released only by its
//!   owner: before removing it we check the token is still ours.
//! - A lock is stale when its owner is a process on this host that no longer runs, or when it is a
//!   lock we cannot attribute (e.g. @sap/cds's `locked`) older than `stale_after`. A stale lock is
//!   removed with a warning and taking the lock is retried.
//! - Waiting backs off from 1 ms to 20 ms; after `timeout` the caller gets `LOCK_TIMEOUT`.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;

const MAGIC: &str = "cds-native-messaging";

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
    host: String,
    settings: LockSettings,
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct LockGuard<'a> {
    lock: &'a BoxLock,
    content: String,
    log: &'a Logger,
}

/// This machine's host name (empty if it cannot be read).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).replace(['/', ' ', '\n'], "_");
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
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
        let mut p = box_path.as_os_str().to_owned();
        p.push(".lock");
        BoxLock {
            path: PathBuf::from(p),
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
        let content = format!(
            "{MAGIC} {} {} {:016x}",
            self.host,
            std::process::id(),
            fastrand::u64(..)
        );
        let start = Instant::now();
        let mut backoff = Duration::from_millis(1);
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.path)
            {
                Ok(mut f) => {
                    if let Err(e) = f.write_all(content.as_bytes()) {
                        let _ = fs::remove_file(&self.path);
                        return Err(io_err("cannot write lock file", &self.path, e));
                    }
                    return Ok(LockGuard {
                        lock: self,
                        content,
                        log,
                    });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if self.remove_if_stale(log) {
                        continue;
                    }
                }
                Err(e) => return Err(io_err("cannot create lock file", &self.path, e)),
            }
            if start.elapsed() >= self.settings.timeout {
                return Err(Error::new(
                    ErrorCode::LockTimeout,
                    format!(
                        "the box lock {} is held by another process for more than {} ms; if no process uses the box, delete the lock file",
                        self.path.display(),
                        self.settings.timeout.as_millis()
                    ),
                ));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(20));
        }
    }

    /// Removes the lock file if it is stale; `true` if it was removed (or vanished meanwhile).
    fn remove_if_stale(&self, log: &Logger) -> bool {
        let content = match fs::read_to_string(&self.path) {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => return true,
            Err(_) => return false,
        };
        let stale = match parse_owner(&content) {
            Some((host, pid)) if host == self.host => !process_alive(pid),
            Some(_) => self.older_than_stale_limit(),
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
        fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .unwrap_or(Duration::ZERO)
                    >= self.settings.stale_after
            })
            .unwrap_or(false)
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
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

fn parse_owner(content: &str) -> Option<(&str, u32)> {
    let mut it = content.split_whitespace();
    if it.next()? != MAGIC {
        return None;
    }
    let host = it.next()?;
    let pid = it.next()?.parse().ok()?;
    Some((host, pid))
}

fn describe_owner(content: &str) -> String {
    match parse_owner(content) {
        Some((host, pid)) => format!("process {pid} on {host}"),
        None => "a process of unknown kind".to_string(),
    }
}

pub(crate) fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::with_cause(ErrorCode::Io, format!("{what} {}", path.display()), e)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        fs::write(l.path(), format!("{MAGIC} {} 2147483632 abc", host_name())).unwrap();
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

    #[test]
    fn this_process_is_alive() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(2147483632));
    }
}
