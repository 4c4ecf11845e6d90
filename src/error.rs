//! The crate's one error type.
//!
//! Every failure that can reach JavaScript carries a stable [`ErrorCode`] (surfaced as `err.code`) and
//! a message that says what to do about it. The underlying cause is kept in [`Error::source`] so logs
//! can show the whole chain.

use std::fmt;

/// Stable, machine-readable error codes. Their string form (`INVALID_CONFIG`, …) is part of the
/// public API: apps and the CAP outbox branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// An option has a wrong type or value; the message names the option.
    InvalidConfig,
    /// A connection to the broker or the box file could not be made or was lost.
    ConnectionFailed,
    /// No route (composite) or no transport accepts the topic.
    NoRoute,
    /// A message could not be parsed (e.g. a malformed box line, non-JSON payload).
    InvalidDataFormat,
    /// A handler rejected the message (carried to the emitter on the local kind).
    HandlerFailed,
    /// The exclusive lock of a box file could not be taken in time.
    LockTimeout,
    /// The engine was closed; no further emits or subscriptions are accepted.
    Closed,
    /// An I/O operation on a local file failed.
    Io,
    /// The broker refused a message (AMQP `rejected` outcome); the message says why.
    Rejected,
    /// An OAuth2 token could not be obtained (token endpoint unreachable, credentials refused);
    /// the message names the client and the endpoint and says what to check.
    TokenFailed,
    /// A bug or an unexpected state inside the engine.
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order (`errorCodes()` in JavaScript lists them).
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidConfig,
        ErrorCode::ConnectionFailed,
        ErrorCode::NoRoute,
        ErrorCode::InvalidDataFormat,
        ErrorCode::HandlerFailed,
        ErrorCode::LockTimeout,
        ErrorCode::Closed,
        ErrorCode::Io,
        ErrorCode::Rejected,
        ErrorCode::TokenFailed,
        ErrorCode::Internal,
    ];

    /// The stable string form used as `err.code` in JavaScript.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidConfig => "INVALID_CONFIG",
            ErrorCode::ConnectionFailed => "CONNECTION_FAILED",
            ErrorCode::NoRoute => "NO_ROUTE",
            ErrorCode::InvalidDataFormat => "INVALID_DATA_FORMAT",
            ErrorCode::HandlerFailed => "HANDLER_FAILED",
            ErrorCode::LockTimeout => "LOCK_TIMEOUT",
            ErrorCode::Closed => "CLOSED",
            ErrorCode::Io => "IO_ERROR",
            ErrorCode::Rejected => "REJECTED",
            ErrorCode::TokenFailed => "TOKEN_FAILED",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An engine error: a code, a human-readable message and, where there was one, the cause.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// The stable code.
    pub code: ErrorCode,
    /// What went wrong and what to do about it.
    pub message: String,
    /// The underlying error, if any.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    /// How long the broker asked to wait before the same operation is tried again (e.g. HTTP
    /// `Retry-After` on 429/503); `retryAfter` (ms) on the JavaScript error.
    pub retry_after: Option<std::time::Duration>,
    /// Retrying the same message cannot help (e.g. HTTP 400/403/404/413); `unrecoverable` on the
    /// JavaScript error, so CAP's outbox gives up on it.
    pub unrecoverable: bool,
}

impl Error {
    /// A new error without a cause.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            source: None,
            retry_after: None,
            unrecoverable: false,
        }
    }

    /// A new error that keeps `cause` as its source.
    pub fn with_cause(
        code: ErrorCode,
        message: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            code,
            message: message.into(),
            source: Some(Box::new(cause)),
            retry_after: None,
            unrecoverable: false,
        }
    }

    /// The same error, telling the caller to wait `wait` before trying again.
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// The same error, marked as one that retrying cannot fix.
    pub fn unrecoverable(mut self) -> Self {
        self.unrecoverable = true;
        self
    }

    /// Shorthand for an [`ErrorCode::InvalidConfig`] error.
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidConfig, message)
    }

    /// `CLOSED`: an emit of `topic` that came after, or was cut off by, the shutdown.
    pub fn closed(topic: &str) -> Self {
        Error::new(
            ErrorCode::Closed,
            format!("cannot emit '{topic}': the messaging service was shut down"),
        )
    }

    /// `CLOSED` for work that is not an emit (a connection asked for after the shutdown).
    pub fn shut_down() -> Self {
        Error::new(ErrorCode::Closed, "the messaging service was shut down")
    }

    /// The emit of `topic` failed because of `cause`: its code, and its full message after
    /// `cannot emit '<topic>': `.
    pub fn emit(topic: &str, cause: &Error) -> Self {
        Error {
            retry_after: cause.retry_after,
            unrecoverable: cause.unrecoverable,
            ..Error::new(
                cause.code,
                format!("cannot emit '{topic}': {}", cause.full_message()),
            )
        }
    }

    /// The message followed by every cause in the chain, separated by `: `.
    pub fn full_message(&self) -> String {
        let mut out = self.message.clone();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_strings() {
        assert_eq!(ErrorCode::InvalidConfig.as_str(), "INVALID_CONFIG");
        assert_eq!(ErrorCode::ConnectionFailed.to_string(), "CONNECTION_FAILED");
        assert_eq!(ErrorCode::Io.as_str(), "IO_ERROR");
    }

    #[test]
    fn emit_errors_name_the_topic_and_keep_the_code() {
        let c = Error::closed("a.b");
        assert_eq!(c.code, ErrorCode::Closed);
        assert_eq!(
            c.message,
            "cannot emit 'a.b': the messaging service was shut down"
        );
        let io = std::io::Error::other("reset");
        let cause = Error::with_cause(ErrorCode::ConnectionFailed, "broker lost", io);
        let e = Error::emit("t", &cause);
        assert_eq!(e.code, ErrorCode::ConnectionFailed);
        assert_eq!(e.message, "cannot emit 't': broker lost: reset");
    }

    #[test]
    fn all_lists_every_code_once() {
        let unique: std::collections::HashSet<_> = ErrorCode::ALL.iter().collect();
        assert_eq!(unique.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn full_message_includes_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = Error::with_cause(ErrorCode::Io, "cannot open box file /x", io);
        assert_eq!(e.full_message(), "cannot open box file /x: denied");
        assert_eq!(e.to_string(), "cannot open box file /x");
    }
}
