//! Stream keys, topics and entry fields.

use std::collections::HashMap;

use ::redis::Value;

/// The stream key of `topic`.
pub fn stream_key(prefix: &str, topic: &str) -> String {
    format!("{prefix}{topic}")
}

/// The topic of stream `key` (the key itself when it lacks the prefix).
pub fn topic_of<'a>(prefix: &str, key: &'a str) -> &'a str {
    key.strip_prefix(prefix).unwrap_or(key)
}

/// The JSON payload of a stream entry: its `payload` field, or — for entries written by other
/// producers — a JSON object of all its fields.
pub fn entry_payload(fields: &HashMap<String, Value>) -> String {
    if let Some(v) = fields.get("payload") {
        return value_text(v);
    }
    let mut names: Vec<&String> = fields.keys().collect();
    names.sort();
    let obj: serde_json::Map<String, serde_json::Value> = names
        .into_iter()
        .map(|k| (k.clone(), serde_json::Value::String(value_text(&fields[k]))))
        .collect();
    serde_json::Value::Object(obj).to_string()
}

fn value_text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Nil => String::new(),
        other => format!("{other:?}"),
    }
}

/// Escapes glob characters for `SCAN MATCH`.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
