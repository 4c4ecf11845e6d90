use std::collections::HashMap;
use std::time::Duration;

use ::redis::Value;

use super::conn::{display_address, is_tls, Endpoint};
use super::pubsub::plan_for_tests;
use super::streams::{entry_payload, glob_escape, stream_key, topic_of};
use super::*;
use crate::error::ErrorCode;
use crate::subscriptions::TopicSet;

#[test]
fn display_address_never_shows_credentials() {
    assert_eq!(
        display_address("redis://:s3cret@cache.example:6380").unwrap(),
        "cache.example:6380"
    );
    assert_eq!(
        display_address("rediss://user:s3cret@cache.example:6380/2").unwrap(),
        "rediss://cache.example:6380/2"
    );
    assert_eq!(
        display_address("redis://127.0.0.1").unwrap(),
        "127.0.0.1:6379"
    );
    let err = display_address("http://:s3cret@x").unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidConfig);
    assert!(!err.full_message().contains("s3cret"));
}

#[test]
fn tls_urls_are_recognised() {
    assert!(is_tls("rediss://h:1"));
    assert!(is_tls("REDISS://h:1"));
    assert!(!is_tls("redis://h:1"));
}

#[test]
fn a_ca_needs_rediss_and_pem() {
    let e = Endpoint::new(
        "redis://h:1",
        Some("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----"),
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidConfig);
    assert!(e.message.contains("rediss://"));
    let e = Endpoint::new("rediss://:pw@h:1", Some("not a pem")).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidConfig);
    assert!(!e.full_message().contains("pw@"));
    // TLS without a CA uses the platform's roots.
    let ok = Endpoint::new("rediss://:pw@h:6380", None).unwrap();
    assert_eq!(&*ok.display, "rediss://h:6380");
}

#[test]
fn a_bad_ca_fails_like_amqp_and_mqtt() {
    use crate::transport::support::tls::{client_config, TlsOptions};
    for bad in [
        "not a pem",
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    ] {
        let redis = Endpoint::new("rediss://:pw@h:1", Some(bad)).unwrap_err();
        let shared = TlsOptions {
            ca: Some(bad.into()),
            verify: true,
            ..Default::default()
        };
        let mqtt = client_config(&shared, "").unwrap_err();
        let amqp = client_config(&shared, "tls.").unwrap_err();
        assert_eq!(redis.code, ErrorCode::InvalidConfig);
        assert_eq!(redis.message, mqtt.message);
        assert_eq!(format!("tls.{}", redis.message), amqp.message);
    }
    // No silent way around certificate checks.
    let e = Endpoint::new("rediss://:pw@h:1/#insecure", None).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidConfig);
    assert!(!e.message.contains("pw"), "{}", e.message);
}

#[test]
fn config_validation_names_the_option() {
    let mut c = RedisConfig::new("redis://127.0.0.1:6379");
    c.validate().unwrap();
    c.mode = RedisMode::Streams;
    c.streams.read_count = 0;
    assert!(c.validate().unwrap_err().message.contains("readCount"));
    c.streams.read_count = 10;
    c.streams.group.clear();
    assert!(c.validate().unwrap_err().message.contains("queue"));
    let mut c = RedisConfig::new("nonsense");
    assert_eq!(c.validate().unwrap_err().code, ErrorCode::InvalidConfig);
    c.url = "redis://h".into();
    c.reconnect.max = Duration::ZERO;
    assert!(c
        .validate()
        .unwrap_err()
        .message
        .contains("maxReconnectDelay"));
}

#[test]
fn debug_output_hides_the_password() {
    let c = RedisConfig::new("redis://:topsecret@h:1");
    let text = format!("{c:?}");
    assert!(!text.contains("topsecret"), "{text}");
    assert!(text.contains("h:1"));
}

#[test]
fn default_dead_letter_stream_follows_prefix_and_queue() {
    let s = StreamsConfig::new("app:", "reviews/0000");
    assert_eq!(s.dead_letter_stream, "app:reviews/0000:dead-letter");
    assert!(!s.consumer.is_empty());
    assert_ne!(s.consumer, StreamsConfig::new("", "x").consumer);
}

#[test]
fn stream_keys_and_topics() {
    assert_eq!(stream_key("app:", "a.b"), "app:a.b");
    assert_eq!(topic_of("app:", "app:a.b"), "a.b");
    assert_eq!(topic_of("app:", "other"), "other");
    assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
}

#[test]
fn entry_payload_prefers_the_payload_field() {
    let mut f = HashMap::new();
    f.insert(
        "payload".to_string(),
        Value::BulkString(br#"{"data":1}"#.to_vec()),
    );
    assert_eq!(entry_payload(&f), r#"{"data":1}"#);
    let mut g = HashMap::new();
    g.insert("b".to_string(), Value::BulkString(b"2".to_vec()));
    g.insert("a".to_string(), Value::BulkString(b"x".to_vec()));
    assert_eq!(entry_payload(&g), r#"{"a":"x","b":"2"}"#);
}

#[test]
fn subscription_plan_switches_between_channels_and_pattern() {
    let want = TopicSet {
        topics: ["a".to_string(), "b".to_string()].into(),
        all: false,
    };
    let (sub, unsub, p, pu) = plan_for_tests(&["b", "c"], false, &want);
    assert_eq!(sub, vec!["a".to_string()]);
    assert_eq!(unsub, vec!["c".to_string()]);
    assert!(!p && !pu);
    let all = TopicSet {
        topics: ["a".to_string()].into(),
        all: true,
    };
    let (sub, unsub, p, pu) = plan_for_tests(&["a"], false, &all);
    assert!(sub.is_empty());
    assert_eq!(unsub, vec!["a".to_string()]);
    assert!(p && !pu);
    let (sub, _, p, pu) = plan_for_tests(&[], true, &want);
    assert_eq!(sub.len(), 2);
    assert!(!p && pu);
}
