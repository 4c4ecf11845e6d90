//! How errors cross the boundary: as data, never as `"CODE: message"` strings.
//!
//! * Synchronous entry points (constructors, `subscribe`, `route`, …) throw a JavaScript `Error`
//!   whose `code` is the stable [`ErrorCode`] string: napi-rs sets `err.code` from the status of a
//!   [`napi::Error<Code>`] (the custom-status pattern of napi-rs' `examples/napi/src/error.rs`).
//! * Asynchronous entry points cannot carry a custom status through napi-rs' promise bridge, so they
//!   resolve to a [`Failure`] object (`{ code, message, retryAfter?, unrecoverable? }`, the mirror of
//!   [`HandlerFailure`](super::bridge::HandlerFailure)) and `lib/errors.js` turns it into an error.

use napi_derive::napi;

use crate::error::{Error, ErrorCode};

/// The status of a thrown error: its `code` in JavaScript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code(pub ErrorCode);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

/// The result of a synchronous entry point: an error throws with `err.code` set. (`#[napi]`
/// signatures spell it `napi::Result<T, Code>`: the macro recognises a `Result` by its name.)
pub type JsResult<T> = napi::Result<T, Code>;

/// The JavaScript error for an engine error: the code as status, the whole cause chain as message.
pub fn to_js(e: Error) -> napi::Error<Code> {
    napi::Error::new(Code(e.code), e.full_message())
}

/// `.into_js()` on an engine result (lancedb's `NapiErrorExt` pattern).
pub trait IntoJs<T> {
    /// Converts the error, if any, with [`to_js`].
    fn into_js(self) -> JsResult<T>;
}

impl<T> IntoJs<T> for crate::error::Result<T> {
    fn into_js(self) -> JsResult<T> {
        self.map_err(to_js)
    }
}

/// Why an asynchronous operation (one emit of `publish`, `listen`, `close`) failed.
#[napi(object)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The stable error code (`INVALID_CONFIG`, `CONNECTION_FAILED`, …; see `errorCodes()`).
    pub code: String,
    /// What went wrong and what to do about it, with the cause chain.
    pub message: String,
    /// Milliseconds the broker asked to wait before a retry (HTTP `Retry-After`), if it did.
    pub retry_after: Option<u32>,
    /// `true` when retrying the same message cannot help.
    pub unrecoverable: Option<bool>,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            code: e.code.as_str().to_string(),
            message: e.full_message(),
            retry_after: e
                .retry_after
                .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
            unrecoverable: e.unrecoverable.then_some(true),
        }
    }
}

/// `None` on success, the [`Failure`] otherwise.
pub fn failure(r: crate::error::Result<()>) -> Option<Failure> {
    r.err().map(Failure::from)
}

/// Every stable error code, as `err.code` carries them (`lib/errors.js` `codes` must equal this).
#[napi]
pub fn error_codes() -> Vec<String> {
    ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_the_stable_code() {
        // (a napi::Error cannot be built here: the test binary has no Node-API to link against)
        assert_eq!(Code(ErrorCode::Io).as_ref(), "IO_ERROR");
        assert_eq!(Code(ErrorCode::NoRoute).as_ref(), "NO_ROUTE");
    }

    #[test]
    fn failures_carry_the_code_as_data() {
        let io = std::io::Error::other("denied");
        let f = failure(Err(Error::with_cause(ErrorCode::Io, "cannot open /x", io))).unwrap();
        assert_eq!(f.code, "IO_ERROR");
        assert_eq!(f.message, "cannot open /x: denied");
        assert_eq!(failure(Ok(())), None);
        assert_eq!((f.retry_after, f.unrecoverable), (None, None));
    }

    #[test]
    fn retry_after_and_unrecoverable_cross_as_data() {
        let e = Error::new(ErrorCode::ConnectionFailed, "throttled")
            .retry_after(std::time::Duration::from_millis(1500));
        let f = Failure::from(Error::emit("a/b", &e));
        assert_eq!((f.retry_after, f.unrecoverable), (Some(1500), None));
        let f = Failure::from(Error::new(ErrorCode::Rejected, "refused").unrecoverable());
        assert_eq!((f.retry_after, f.unrecoverable), (None, Some(true)));
    }
}
