use std::sync::Arc;

use super::codec;
use super::config::{ConnSettings, Sasl};
use super::connection::SharedConn;
use super::receiver::{delivery_key, truncate, Attempts, ATTEMPTS_CAPACITY};
use crate::log::Logger;

#[test]
fn attempts_are_bounded_and_forgotten() {
    let mut a = Attempts::default();
    a.set("x", 2);
    assert_eq!(a.get("x"), 2);
    a.set("x", 3);
    assert_eq!(a.get("x"), 3);
    a.forget("x");
    assert_eq!(a.get("x"), 0);
    for i in 0..(ATTEMPTS_CAPACITY + 10) {
        a.set(&i.to_string(), 1);
    }
    assert!(a.map.len() <= ATTEMPTS_CAPACITY);
    assert_eq!(a.get("0"), 0);
}

#[test]
fn delivery_keys_prefer_message_ids() {
    let d = codec::Decoded {
        topic: Some("t".into()),
        payload: "{}".into(),
        message_id: Some("m1".into()),
        delivery_count: 0,
    };
    assert_eq!(delivery_key(&d, "t"), "id:m1");
    let d2 = codec::Decoded {
        message_id: None,
        ..d.clone()
    };
    assert!(delivery_key(&d2, "t").starts_with("h:"));
    assert_eq!(delivery_key(&d2, "t"), delivery_key(&d2, "t"));
    assert_ne!(delivery_key(&d2, "t"), delivery_key(&d2, "u"));
}

#[test]
fn truncate_respects_char_boundaries() {
    assert_eq!(truncate("äää", 3), "ä");
    assert_eq!(truncate("abc", 10), "abc");
}

#[test]
fn connections_are_shared_per_binding_unless_dedicated() {
    let log = Logger::default();
    let s = ConnSettings::from_url("amqp://u:p@127.0.0.1:1", "c-share-test").unwrap();
    let a = SharedConn::get(&s, &log);
    let b = SharedConn::get(&s, &log);
    assert!(Arc::ptr_eq(&a, &b));
    let mut other = s.clone();
    other.sasl = Sasl::Plain {
        user: "u".into(),
        password: "other".into(),
    };
    assert!(!Arc::ptr_eq(&a, &SharedConn::get(&other, &log)));
    let mut d = s.clone();
    d.dedicated = true;
    assert!(!Arc::ptr_eq(&a, &SharedConn::get(&d, &log)));
}
