//! CloudEvents 1.0 headers for `format: 'cloudevents'`, checked with `cloudevents-sdk`.
//!
//! On emit, `srv/NativeMessagingService.js` fills the missing attributes and the engine checks the
//! payload it publishes with [`validate_payload`] (no extra boundary crossing).
//! [`complete_headers`] does both in one step (exported to JavaScript as `completeCloudEventHeaders`).
//!
//! Only missing attributes are filled (`id`, `type`, `source`, `time`, `datacontenttype`,
//! `specversion`); every header the application set is kept as it is — including an explicit
//! `x-correlation-id`, which @sap/cds drops. The result must deserialize as a CloudEvents 1.0 JSON
//! event, otherwise the emit fails with `INVALID_DATA_FORMAT` naming the offending attribute.

use serde_json::{Map, Value};

use crate::error::{Error, ErrorCode, Result};

/// Fills the missing CloudEvents attributes of `headers` and validates the result.
///
/// `event` is the event name before any topic prefix; `source` is used when the headers have none
/// (e.g. `/default/sap.cap/<pid>` or `/<namespace>`).
pub fn complete_headers(headers: &mut Map<String, Value>, event: &str, source: &str) -> Result<()> {
    let mut fill = |key: &str, value: &dyn Fn() -> String| {
        if !headers.contains_key(key) {
            headers.insert(key.to_string(), Value::String(value()));
        }
    };
    fill("id", &|| uuid::Uuid::new_v4().to_string());
    fill("type", &|| event.to_string());
    fill("source", &|| source.to_string());
    fill("time", &|| {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    });
    fill("datacontenttype", &|| "application/json".to_string());
    fill("specversion", &|| "1.0".to_string());
    validate(headers)
}

/// Checks that `headers` (without `data`) form a valid CloudEvents 1.0 event.
pub fn validate(headers: &Map<String, Value>) -> Result<()> {
    if headers.get("specversion").and_then(Value::as_str) != Some("1.0") {
        return Err(invalid("specversion must be \"1.0\""));
    }
    for key in ["id", "type", "source"] {
        match headers.get(key) {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => return Err(invalid(&format!("'{key}' must be a non-empty string"))),
        }
    }
    let mut event = headers.clone();
    event.remove("data");
    event.remove("data_base64");
    serde_json::from_value::<cloudevents::Event>(Value::Object(event))
        .map(|_| ())
        .map_err(|e| invalid(&e.to_string()))
}

/// Checks the CloudEvents attributes of a serialized outbound message: the top level of a broker
/// wire body (`{...headers, data}`), or the `headers` of the box/local body (`{data, headers}`).
pub fn validate_payload(payload: &str) -> Result<()> {
    let mut body: Map<String, Value> = serde_json::from_str(payload)
        .map_err(|e| invalid(&format!("the message is not a JSON object ({e})")))?;
    if !body.contains_key("specversion") {
        if let Some(Value::Object(headers)) = body.remove("headers") {
            return validate(&headers);
        }
    }
    validate(&body)
}

fn invalid(why: &str) -> Error {
    Error::new(
        ErrorCode::InvalidDataFormat,
        format!("the message headers do not form a valid CloudEvents 1.0 event: {why}; fix or remove that header"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn fills_only_what_is_missing() {
        let mut h = obj(json!({ "id": "my-id", "x-correlation-id": "c-1", "custom": "kept" }));
        complete_headers(&mut h, "OrderCreated", "/default/sap.cap/42").unwrap();
        assert_eq!(h["id"], "my-id");
        assert_eq!(h["type"], "OrderCreated");
        assert_eq!(h["source"], "/default/sap.cap/42");
        assert_eq!(h["specversion"], "1.0");
        assert_eq!(h["datacontenttype"], "application/json");
        assert_eq!(h["x-correlation-id"], "c-1");
        assert_eq!(h["custom"], "kept");
        assert!(chrono::DateTime::parse_from_rfc3339(h["time"].as_str().unwrap()).is_ok());
        // the envelope with data is a CloudEvents 1.0 JSON event
        let mut envelope = h.clone();
        envelope.insert("data".into(), json!({ "ID": 1 }));
        let e: cloudevents::Event = serde_json::from_value(Value::Object(envelope)).unwrap();
        use cloudevents::AttributesReader;
        assert_eq!(e.ty(), "OrderCreated");
    }

    #[test]
    fn payloads_are_checked_in_either_wire_shape() {
        let ok = r#""id":"1","type":"t","source":"/s","specversion":"1.0","time":"2024-01-01T00:00:00.000Z""#;
        validate_payload(&format!("{{{ok},\"data\":{{}}}}")).unwrap();
        validate_payload(&format!("{{\"data\":{{}},\"headers\":{{{ok}}}}}")).unwrap();
        for bad in [
            r#"{"data":{},"headers":{"specversion":"0.3"}}"#,
            r#"{"id":"1","type":"t","source":"/s","specversion":"1.0","time":"yesterday"}"#,
            r#"{"data":{}}"#,
            "[1]",
        ] {
            let err = validate_payload(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidDataFormat, "{bad}");
            assert!(err.message.contains("CloudEvents 1.0"), "{}", err.message);
        }
    }

    #[test]
    fn generated_ids_are_unique() {
        let mut a = Map::new();
        let mut b = Map::new();
        complete_headers(&mut a, "e", "/s").unwrap();
        complete_headers(&mut b, "e", "/s").unwrap();
        assert_ne!(a["id"], b["id"]);
    }

    #[test]
    fn rejects_invalid_attributes_with_a_clear_error() {
        for bad in [
            json!({ "specversion": "0.3" }),
            json!({ "id": "" }),
            json!({ "time": "yesterday" }),
            json!({ "type": 42 }),
        ] {
            let mut h = obj(bad.clone());
            let err = complete_headers(&mut h, "e", "/s").unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidDataFormat, "{bad}");
            assert!(err.message.contains("CloudEvents"), "{}", err.message);
        }
    }
}
