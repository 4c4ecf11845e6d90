//! What an HTTP status of SAP Event Mesh's REST API means for a publish.

use std::time::Duration;

use crate::error::{Error, ErrorCode, Result};

/// Wait suggested to the caller when Event Mesh throttles without a `Retry-After` header.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The result of a publish answered with `status`.
///
/// - 2xx: published.
/// - 400, 403, 404, 413: `REJECTED`, marked `(unrecoverable)` — retrying the same message cannot help
///   (403 is what Event Mesh answers when the topic rules forbid the topic).
/// - 401 (after the token was renewed once): `TOKEN_FAILED`.
/// - 429, 503: `CONNECTION_FAILED` with `retry after <ms> ms` from `Retry-After` (or one second).
/// - anything else: `CONNECTION_FAILED` (recoverable).
pub fn publish_result(
    topic: &str,
    status: u16,
    retry_after: Option<Duration>,
    excerpt: &str,
) -> Result<()> {
    let detail = if excerpt.is_empty() {
        String::new()
    } else {
        format!(": {excerpt}")
    };
    match status {
        200..=299 => Ok(()),
        400 | 403 | 404 | 413 => {
            let why = match status {
                400 => "the request is malformed (check the topic's characters and x-qos)",
                403 => "the topic is not allowed by the service instance's topic rules (check the descriptor's rules.topicRules.publishFilter)",
                404 => "the topic or the REST endpoint does not exist (check the binding's httprest uri)",
                _ => "the message is larger than Event Mesh accepts",
            };
            Err(Error::new(
                ErrorCode::Rejected,
                format!("Event Mesh refused the message on topic '{topic}' with HTTP {status} (unrecoverable): {why}{detail}"),
            )
            .unrecoverable())
        }
        401 => Err(Error::new(
            ErrorCode::TokenFailed,
            format!("Event Mesh refused a new token for the message on topic '{topic}' (HTTP 401): check the binding's httprest oa2 credentials{detail}"),
        )),
        429 | 503 => {
            let wait = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
            Err(Error::new(
                ErrorCode::ConnectionFailed,
                format!(
                    "Event Mesh is {} (HTTP {status}) for the message on topic '{topic}'; retry after {} ms{detail}",
                    if status == 429 { "throttling" } else { "unavailable" },
                    wait.as_millis()
                ),
            )
            .retry_after(wait))
        }
        _ => Err(Error::new(
            ErrorCode::ConnectionFailed,
            format!("Event Mesh answered HTTP {status} for the message on topic '{topic}'; it can be retried{detail}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_codes() {
        assert!(publish_result("t", 204, None, "").is_ok());
        for s in [400, 403, 404, 413] {
            let e = publish_result("a/b", s, None, "x").unwrap_err();
            assert_eq!(e.code, ErrorCode::Rejected);
            assert!(e.message.contains("(unrecoverable)"), "{}", e.message);
            assert!(e.unrecoverable, "unrecoverable crosses as data");
            assert_eq!(e.retry_after, None);
            assert!(e.message.contains("'a/b'"));
        }
        let e = publish_result("t", 429, Some(Duration::from_secs(2)), "").unwrap_err();
        assert_eq!(e.code, ErrorCode::ConnectionFailed);
        assert!(e.message.contains("retry after 2000 ms"), "{}", e.message);
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)), "as data");
        let e = publish_result("t", 503, None, "").unwrap_err();
        assert!(e.message.contains("retry after 1000 ms"));
        assert_eq!(e.retry_after, Some(DEFAULT_RETRY_AFTER));
        assert!(!e.unrecoverable);
        assert!(!e.message.contains("unrecoverable"));
        assert_eq!(
            publish_result("t", 401, None, "").unwrap_err().code,
            ErrorCode::TokenFailed
        );
        let e = publish_result("t", 500, None, "").unwrap_err();
        assert_eq!(e.code, ErrorCode::ConnectionFailed);
        assert!(!e.message.contains("retry after"));
    }
}
