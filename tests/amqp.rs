//! AMQP 1.0 protocol edge cases through the public `Engine` API, against a fake AMQP 1.0 peer on
//! loopback (tests/common, built on fe2o3-amqp's acceptor).

mod common;

use std::time::{Duration, Instant};

use cds_native_messaging::config::{EngineConfig, TransportConfig};
use cds_native_messaging::engine::Engine;
use cds_native_messaging::message::Outbound;
use cds_native_messaging::transport::amqp::config::{AmqpConfig, ConnSettings, QueueConfig};
use cds_native_messaging::transport::amqp::profile::Profile;
use cds_native_messaging::ErrorCode;
use common::{FakeAmqp, Verdict};

fn engine(fake: &FakeAmqp, profile: &str, send_timeout: Duration) -> Engine {
    let mut conn = ConnSettings::from_url(&fake.url(), &format!("it-{}", std::process::id()))
        .expect("a valid URL");
    conn.reconnect_delay = Duration::from_millis(50);
    conn.max_reconnect_delay = Duration::from_millis(200);
    conn.connect_timeout = Duration::from_secs(5);
    conn.dedicated = true;
    let config = AmqpConfig {
        conn,
        profile: Profile::by_name(profile, None, None, None).expect("a profile"),
        queue: QueueConfig {
            name: "it-queue".into(),
            provision: false,
            queue_type: None,
            dead_letter_exchange: None,
            dead_letter_routing_key: None,
            dead_letter_queue: None,
        },
        prefetch: 10,
        qos: 1,
        send_timeout,
        durable: true,
        management: None,
        deploy_for_provider: true,
    };
    Engine::new(
        EngineConfig::new("amqp-it", TransportConfig::Amqp(Box::new(config))),
        None,
    )
    .expect("an engine")
}

fn out(topic: &str, payload: &str) -> Outbound {
    Outbound::new(topic, payload)
}

#[tokio::test]
async fn accepted_transfer_resolves_the_emit_with_the_payload_unchanged() {
    let fake = FakeAmqp::start(|_| Verdict::Accept, |_| false).await;
    let e = engine(&fake, "activemq", Duration::from_secs(5));
    let res = e
        .publish(vec![out("orders.created", r#"{"data":{"ID":1}}"#)])
        .await;
    assert!(res[0].is_ok(), "{res:?}");
    let got = fake.received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].address, "topic://orders.created");
    assert_eq!(got[0].body, r#"{"data":{"ID":1}}"#);
    e.close().await.expect("close");
}

#[tokio::test]
async fn rejected_outcome_fails_the_emit_with_rejected() {
    let fake = FakeAmqp::start(
        |t| {
            if t.body.contains("bad") {
                Verdict::Reject
            } else {
                Verdict::Accept
            }
        },
        |_| false,
    )
    .await;
    let e = engine(&fake, "activemq", Duration::from_secs(5));
    let res = e
        .publish(vec![
            out("a", r#"{"data":"bad"}"#),
            out("a", r#"{"data":"good"}"#),
        ])
        .await;
    let err = res[0].as_ref().expect_err("the peer rejected it");
    assert_eq!(err.code, ErrorCode::Rejected, "{err:?}");
    assert!(
        res[1].is_ok(),
        "the other message of the batch fails alone: {res:?}"
    );
    e.close().await.expect("close");
}

#[tokio::test]
async fn released_outcome_is_not_reported_as_success() {
    let fake = FakeAmqp::start(|_| Verdict::Release, |_| false).await;
    let e = engine(&fake, "activemq", Duration::from_secs(2));
    let t0 = Instant::now();
    let res = e.publish(vec![out("a", "{}")]).await;
    let err = res[0].as_ref().expect_err("released means: not taken");
    assert!(
        matches!(err.code, ErrorCode::Rejected | ErrorCode::ConnectionFailed),
        "{err:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    e.close().await.expect("close");
}

/// The peer attaches the sender link and at once closes it with `amqp:not-found` (as brokers do
/// that check an address only after the attach). fe2o3's acceptor cannot refuse the attach itself
/// (reply with a null target), so RabbitMQ's form of the refusal is not covered here.
#[tokio::test]
async fn sender_link_closed_with_not_found_right_after_attach_fails_the_emit_with_no_route_within_send_timeout(
) {
    // solace: one sender link per topic address, so one address can be refused.
    let fake = FakeAmqp::start(|_| Verdict::Accept, |address| address.contains("nowhere")).await;
    let e = engine(&fake, "solace", Duration::from_secs(3));
    let t0 = Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(15),
        e.publish(vec![out("nowhere", "{}")]),
    )
    .await
    .expect("the emit settles (sendTimeout is 3 s)");
    let err = res[0].as_ref().expect_err("the peer refused the address");
    assert_eq!(err.code, ErrorCode::NoRoute, "{err:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert!(!fake.refused.lock().unwrap().is_empty());
    // another address still works on the same connection
    let ok = e.publish(vec![out("somewhere", "{}")]).await;
    assert!(ok[0].is_ok(), "{ok:?}");
    e.close().await.expect("close");
}

#[tokio::test]
async fn peer_never_reached_fails_the_emit_at_once_with_connection_failed() {
    let port = common::free_port();
    let fake = FakeAmqp {
        port,
        received: Default::default(),
        refused: Default::default(),
    };
    let e = engine(&fake, "activemq", Duration::from_secs(10));
    let t0 = Instant::now();
    let res = e.publish(vec![out("a", "{}")]).await;
    let err = res[0].as_ref().expect_err("nobody listens");
    assert_eq!(err.code, ErrorCode::ConnectionFailed, "{err:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    e.close().await.expect("close");
}
