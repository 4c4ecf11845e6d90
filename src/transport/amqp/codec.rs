//! The wire format: what @sap/cds's `enterprise-messaging-shared` sends, and how inbound messages
//! become engine payloads.
//!
//! Outbound: one Data section with the payload bytes as given (`JSON.stringify({...headers, data})`,
//! built by `srv/amqp-messaging.js`), `content-type` `application/cloudevents+json` when the headers
//! hold `id`, `source`, `specversion` and `type`, else `application/json`; `to` / `subject` from the
//! profile; a random `message-id`; `header.durable` so brokers persist it.

use fe2o3_amqp::types::messaging::{Body, Data, Header, Message, MessageId, Properties};
use fe2o3_amqp::types::primitives::{Binary, Value};
use serde::de::IgnoredAny;

use super::profile::{InboundMeta, Route};

pub use crate::message::{content_type, CLOUDEVENTS_JSON, JSON};

/// A random message id (128 bits, hex).
pub fn new_message_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Builds the outbound message.
pub fn outbound(
    route: &Route,
    payload: &str,
    cloud_event: bool,
    message_id: String,
    durable: bool,
) -> Message<Data> {
    let properties = Properties {
        message_id: Some(MessageId::String(message_id)),
        to: route.to.clone(),
        subject: route.subject.clone(),
        content_type: Some(content_type(cloud_event).into()),
        ..Properties::default()
    };
    Message {
        header: if durable {
            Some(Header {
                durable: true,
                ..Header::default()
            })
        } else {
            None
        },
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(properties),
        application_properties: None,
        body: Data(Binary::from(payload.as_bytes().to_vec())),
        footer: None,
    }
}

/// An inbound message reduced to what the engine needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The topic as the profile reads it, if the message carries one.
    pub topic: Option<String>,
    /// A JSON text: the body itself when it is JSON, else the body as a JSON string.
    pub payload: String,
    /// `message-id` (or `None`).
    pub message_id: Option<String>,
    /// `header.delivery-count` as sent by the broker.
    pub delivery_count: u32,
}

fn message_id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(u) => u.to_string(),
        MessageId::Uuid(u) => format!("{u:?}"),
        MessageId::Binary(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

/// The body bytes: Data sections concatenated, an AMQP string/binary value, else nothing.
pub(super) fn body_bytes(body: &Body<Value>) -> Vec<u8> {
    match body {
        Body::Data(batch) => {
            let mut out = Vec::new();
            for d in batch.iter() {
                out.extend_from_slice(&d.0);
            }
            out
        }
        Body::Value(v) => match &v.0 {
            Value::String(s) => s.clone().into_bytes(),
            Value::Binary(b) => b.to_vec(),
            Value::Null => Vec::new(),
            other => serde_json::to_vec(&format!("{other:?}")).unwrap_or_default(),
        },
        _ => Vec::new(),
    }
}

/// Turns body bytes into a JSON text for the JS side (`JSON.parse` there): JSON stays as it is,
/// anything else becomes a JSON string, as @sap/cds treats non-JSON payloads as string data.
pub fn json_payload(bytes: Vec<u8>) -> String {
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    if serde_json::from_str::<IgnoredAny>(&text).is_ok() {
        text
    } else {
        serde_json::Value::String(text).to_string()
    }
}

/// Reads topic, payload and redelivery hints from an inbound message.
pub fn decode(
    m: &Message<Body<Value>>,
    profile: &super::profile::Profile,
    link_topic: Option<&str>,
) -> Decoded {
    let props = m.properties.as_ref();
    let routing_key = m.message_annotations.as_ref().and_then(|a| {
        a.0.iter().find_map(|(k, v)| match k {
            fe2o3_amqp::types::messaging::annotations::OwnedKey::Symbol(s)
                if s.0 == "x-routing-key" =>
            {
                value_text(v)
            }
            _ => None,
        })
    });
    let meta = InboundMeta {
        to: props.and_then(|p| p.to.as_deref()),
        subject: props.and_then(|p| p.subject.as_deref()),
        routing_key: routing_key.as_deref(),
        link_topic,
    };
    Decoded {
        topic: profile.topic_of(&meta),
        payload: json_payload(body_bytes(&m.body)),
        message_id: props
            .and_then(|p| p.message_id.as_ref())
            .map(message_id_text),
        delivery_count: m.header.as_ref().map(|h| h.delivery_count).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::amqp::profile::Profile;

    #[test]
    fn content_type_follows_the_cloud_event_flag() {
        assert_eq!(content_type(false), JSON);
        assert_eq!(content_type(true), CLOUDEVENTS_JSON);
    }

    #[test]
    fn non_json_bodies_become_json_strings() {
        assert_eq!(json_payload(b"{\"data\":1}".to_vec()), "{\"data\":1}");
        assert_eq!(json_payload(b"hello".to_vec()), "\"hello\"");
        assert_eq!(json_payload(b"42".to_vec()), "42");
        assert_eq!(json_payload(vec![0xff, b'a']), "\"\u{fffd}a\"");
    }

    /// The exact bytes of an event-mesh message: header, properties, one data section.
    #[test]
    fn event_mesh_message_bytes() {
        let route = Profile::EventMesh.route("sap/app/Orders/created").unwrap();
        let payload = r#"{"x-correlation-id":"c1","data":{"ID":1}}"#;
        let m = outbound(&route, payload, false, "00ff".into(), true);
        let bytes =
            serde_amqp::to_vec(&fe2o3_amqp::types::messaging::message::__private::Serializable(m))
                .unwrap();
        // header section: descriptor 0x70, durable = true
        assert_eq!(&bytes[0..3], &[0x00, 0x53, 0x70]);
        let header_list = &bytes[3..];
        assert_eq!(header_list[0], 0xc0);
        assert_eq!(header_list[3], 0x41, "durable true");
        // properties section: descriptor 0x73
        let p = bytes
            .windows(3)
            .position(|w| w == [0x00, 0x53, 0x73])
            .unwrap();
        let props = &bytes[p..];
        let to = b"topic:sap/app/Orders/created";
        assert!(props.windows(to.len()).any(|w| w == to));
        let ct = b"\xa3\x10application/json";
        assert!(
            props.windows(ct.len()).any(|w| w == ct),
            "content-type is a symbol"
        );
        let id = b"\xa1\x0400ff";
        assert!(props.windows(id.len()).any(|w| w == id));
        // exactly one data section, last, holding the payload bytes unchanged
        let d = bytes
            .windows(3)
            .position(|w| w == [0x00, 0x53, 0x75])
            .unwrap();
        assert_eq!(
            bytes
                .windows(3)
                .filter(|w| *w == [0x00, 0x53, 0x75])
                .count(),
            1
        );
        assert_eq!(bytes[d + 3], 0xa0);
        assert_eq!(bytes[d + 4] as usize, payload.len());
        assert_eq!(&bytes[d + 5..], payload.as_bytes());
        assert!(d > p);
        // no application properties, no amqp-value
        assert!(!bytes.windows(3).any(|w| w == [0x00, 0x53, 0x74]));
        assert!(!bytes.windows(3).any(|w| w == [0x00, 0x53, 0x77]));
    }

    #[test]
    fn decodes_event_mesh_topics_and_redelivery_hints() {
        let route = Profile::EventMesh.route("a/b").unwrap();
        let m = outbound(&route, r#"{"data":1}"#, false, "id-1".into(), true);
        let m: Message<Body<Value>> = Message {
            header: Some(Header {
                delivery_count: 2,
                ..Header::default()
            }),
            delivery_annotations: None,
            message_annotations: None,
            properties: m.properties,
            application_properties: None,
            body: Body::Data(
                vec![
                    Data(Binary::from(b"{\"da".to_vec())),
                    Data(Binary::from(b"ta\":1}".to_vec())),
                ]
                .into(),
            ),
            footer: None,
        };
        let d = decode(&m, &Profile::EventMesh, None);
        assert_eq!(d.topic.as_deref(), Some("a/b"));
        assert_eq!(d.payload, r#"{"data":1}"#);
        assert_eq!(d.message_id.as_deref(), Some("id-1"));
        assert_eq!(d.delivery_count, 2);
    }
}
