//! Engine logging: every line goes to `tracing` and to an optional sink (the CAP logger in JS).
//!
//! Lines never contain credentials: transports log hosts, paths and topics, never URLs with userinfo.

use std::fmt;
use std::sync::Arc;

/// Severity of a log line, mapped onto `cds.log` levels in JavaScript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `LOG.debug`
    Debug,
    /// `LOG.info`
    Info,
    /// `LOG.warn`
    Warn,
    /// `LOG.error`
    Error,
}

impl Level {
    /// Lower-case name as used by `cds.log`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Receives the engine's log lines.
pub trait LogSink: Send + Sync + 'static {
    /// Records one line. Must not block.
    fn log(&self, level: Level, message: &str);
}

/// A clonable logger handle bound to one engine.
#[derive(Clone, Default)]
pub struct Logger {
    sink: Option<Arc<dyn LogSink>>,
    name: Arc<str>,
    stats: Arc<crate::engine::stats::Stats>,
}

impl Logger {
    /// A logger that forwards to `sink` (if any) and to `tracing`, tagging lines with `name`.
    pub fn new(name: &str, sink: Option<Arc<dyn LogSink>>) -> Self {
        Logger {
            sink,
            name: Arc::from(name),
            stats: Arc::default(),
        }
    }

    /// The counters of the engine this logger belongs to (transports count reconnects here).
    pub fn stats(&self) -> &crate::engine::stats::Stats {
        &self.stats
    }

    /// Logs one line at `level`.
    pub fn log(&self, level: Level, message: &str) {
        match level {
            Level::Debug => tracing::debug!(engine = %self.name, "{message}"),
            Level::Info => tracing::info!(engine = %self.name, "{message}"),
            Level::Warn => tracing::warn!(engine = %self.name, "{message}"),
            Level::Error => tracing::error!(engine = %self.name, "{message}"),
        }
        if let Some(sink) = &self.sink {
            sink.log(level, message);
        }
    }

    /// Logs at debug level.
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message)
    }
    /// Logs at info level.
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message)
    }
    /// Logs at warn level.
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message)
    }
    /// Logs at error level.
    pub fn error(&self, message: &str) {
        self.log(Level::Error, message)
    }
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger").field("name", &self.name).finish()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::sync::Mutex;

    /// Collects log lines for assertions.
    #[derive(Default)]
    pub struct Collect(pub Mutex<Vec<(Level, String)>>);

    impl LogSink for Collect {
        fn log(&self, level: Level, message: &str) {
            self.0.lock().unwrap().push((level, message.to_string()));
        }
    }

    impl Collect {
        pub fn lines(&self) -> Vec<(Level, String)> {
            self.0.lock().unwrap().clone()
        }
    }
}
