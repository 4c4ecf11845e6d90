//! The AMQP codec's decode: any bytes that form an AMQP 1.0 message decode to a topic, a JSON
//! payload and redelivery hints under every profile, without panicking.
#![no_main]

#[path = "../../tests/common/napi_stubs.rs"]
mod napi_stubs;

use cds_native_messaging::transport::amqp::codec;
use cds_native_messaging::transport::amqp::profile::Profile;
use fe2o3_amqp::types::messaging::message::__private::Deserializable;
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value;
use libfuzzer_sys::fuzz_target;

const PROFILES: &[&str] = &[
    "rabbitmq",
    "rabbitmq4",
    "event-mesh",
    "message-queuing",
    "activemq",
    "artemis",
    "solace",
    "azure-service-bus",
    "eventter",
];

fuzz_target!(|data: &[u8]| {
    let Ok(Deserializable(message)) =
        serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(data)
    else {
        return;
    };
    for name in PROFILES {
        let Ok(profile) = Profile::by_name(name, Some("ns"), None, None) else {
            continue;
        };
        for link_topic in [None, Some("link/topic")] {
            let d = codec::decode(&message, &profile, link_topic);
            // The payload is JSON the JS side can parse.
            assert!(
                serde_json::from_str::<serde_json::Value>(&d.payload).is_ok(),
                "not JSON: {:?}",
                d.payload
            );
        }
    }
});
