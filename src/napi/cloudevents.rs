//! `completeCloudEventHeaders`: fills and validates CloudEvents 1.0 headers.

use napi_derive::napi;

use super::error::{to_js, Code, IntoJs};
use crate::error::{Error, ErrorCode};

/// Fills the missing CloudEvents 1.0 attributes of a header object (JSON) and validates it;
/// returns the completed headers as JSON. Throws `INVALID_DATA_FORMAT` for an invalid event.
#[napi(catch_unwind)]
pub fn complete_cloud_event_headers(
    headers: String,
    event: String,
    source: String,
) -> napi::Result<String, Code> {
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&headers)
        .map_err(|e| {
            to_js(Error::with_cause(
                ErrorCode::InvalidDataFormat,
                "message headers must be a JSON object",
                e,
            ))
        })?;
    crate::cloudevents::complete_headers(&mut map, &event, &source).into_js()?;
    serde_json::to_string(&map).map_err(|e| {
        to_js(Error::with_cause(
            ErrorCode::Internal,
            "cannot serialize headers",
            e,
        ))
    })
}
