//! MQTT 3.1.1 protocol edge cases through the public `Engine` API, against a scripted fake broker
//! on loopback (tests/common).

mod common;

use std::time::{Duration, Instant};

use cds_native_messaging::config::{EngineConfig, TransportConfig};
use cds_native_messaging::engine::Engine;
use cds_native_messaging::message::Outbound;
use cds_native_messaging::subscriptions::TopicSet;
use cds_native_messaging::transport::mqtt::MqttConfig;
use cds_native_messaging::ErrorCode;
use common::{until, FakeMqtt, Recorder, Script};

fn engine(fake: &FakeMqtt, client_id: &str, change: impl FnOnce(&mut MqttConfig)) -> Engine {
    let mut c = MqttConfig::new(&fake.url(), client_id).expect("a valid MQTT config");
    c.reconnect_delay = Duration::from_millis(50);
    c.max_reconnect_delay = Duration::from_millis(200);
    change(&mut c);
    Engine::new(
        EngineConfig::new("mqtt-it", TransportConfig::Mqtt(Box::new(c))),
        None,
    )
    .expect("an engine")
}

fn out(topic: &str, payload: &str) -> Outbound {
    Outbound::new(topic, payload)
}

fn topics(list: &[&str]) -> TopicSet {
    TopicSet {
        topics: list.iter().map(|t| t.to_string()).collect(),
        all: false,
    }
}

#[tokio::test]
async fn connack_not_authorized_fails_the_emit_with_a_coded_error_before_publish_timeout() {
    let fake = FakeMqtt::start(Script {
        connack: 5,
        ..Default::default()
    })
    .await;
    let e = engine(&fake, "refused", |c| {
        c.publish_timeout = Duration::from_secs(10)
    });
    let t0 = Instant::now();
    let res = e.publish(vec![out("a", "{}")]).await;
    let err = res[0]
        .as_ref()
        .expect_err("the broker refused every connection");
    assert_eq!(err.code, ErrorCode::ConnectionFailed, "{err:?}");
    assert!(
        err.message.contains("not authorized"),
        "the reason is named: {}",
        err.message
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "failed fast, not after publishTimeout: {:?}",
        t0.elapsed()
    );
    // Refusals are retried with back-off, not in a tight loop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attempts = fake.connects().len();
    assert!(attempts <= 15, "{attempts} CONNECTs in about a second");
    e.close().await.expect("close");
}

#[tokio::test]
async fn puback_never_arrives_the_emit_fails_after_publish_timeout() {
    let fake = FakeMqtt::start(Script {
        puback: false,
        ..Default::default()
    })
    .await;
    let e = engine(&fake, "no-puback", |c| {
        c.publish_timeout = Duration::from_millis(800)
    });
    let t0 = Instant::now();
    let res = e.publish(vec![out("orders", r#"{"data":1}"#)]).await;
    let took = t0.elapsed();
    let err = res[0].as_ref().expect_err("no PUBACK, no success");
    assert_eq!(err.code, ErrorCode::ConnectionFailed, "{err:?}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert!(
        fake.published()
            .iter()
            .any(|p| p.topic == "orders" && p.qos == 1),
        "it was sent at QoS 1"
    );
    e.close().await.expect("close");
}

#[tokio::test]
async fn puback_arrives_the_emit_resolves_and_the_payload_is_unchanged() {
    let fake = FakeMqtt::start(Script::default()).await;
    let e = engine(&fake, "ok-puback", |_| {});
    let res = e
        .publish(vec![out("a/b", r#"{"data":{"x":1}}"#), out("c", "{}")])
        .await;
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    let got: Vec<_> = fake
        .published()
        .into_iter()
        .map(|p| (p.topic, p.payload))
        .collect();
    assert!(
        got.contains(&("a/b".into(), r#"{"data":{"x":1}}"#.into())),
        "{got:?}"
    );
    e.close().await.expect("close");
}

#[tokio::test]
async fn a_burst_is_confirmed_when_the_broker_holds_its_last_puback_until_the_client_writes() {
    // Mosquitto writes with Nagle's algorithm by default: the PUBACK it writes while an earlier
    // one is unacknowledged at the TCP level waits for our (delayed) ACK, ~40 ms, unless we send
    // something. A publisher that only waits for PUBACKs after a burst must write (issue #16).
    let fake = FakeMqtt::start(Script {
        hold_last_puback: true,
        ..Default::default()
    })
    .await;
    let e = engine(&fake, "held-puback", |c| {
        c.publish_timeout = Duration::from_secs(5);
        c.keep_alive = Duration::from_secs(60);
    });
    for round in 0..3 {
        let burst = (0..20)
            .map(|i| out("burst", &format!(r#"{{"data":{i}}}"#)))
            .collect();
        let t0 = Instant::now();
        let res = e.publish(burst).await;
        assert!(res.iter().all(|r| r.is_ok()), "round {round}: {res:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "round {round} waited {:?} for its last PUBACK",
            t0.elapsed()
        );
    }
    e.close().await.expect("close");
}

#[tokio::test]
async fn one_publish_at_a_time_sends_no_pingreq_per_message() {
    // The PUBLISH written after a PUBACK arrived carries our TCP ACK for it: a PINGREQ then only
    // doubles the broker's work. Before, every emit made one at 1 in flight (issue #16).
    let fake = FakeMqtt::start(Script::default()).await;
    let e = engine(&fake, "one-at-a-time", |c| {
        c.keep_alive = Duration::from_secs(60);
    });
    for i in 0..50 {
        let res = e
            .publish(vec![out("seq", &format!(r#"{{"data":{i}}}"#))])
            .await;
        assert!(res.iter().all(|r| r.is_ok()), "publish {i}: {res:?}");
    }
    let pings = fake.pingreqs("one-at-a-time");
    assert!(
        pings <= 2,
        "{pings} PINGREQs for 50 publishes made one at a time"
    );
    e.close().await.expect("close");
}

#[tokio::test]
async fn broker_drops_the_connection_mid_stream_unacknowledged_messages_come_again_with_dup_and_none_is_lost(
) {
    let fake = FakeMqtt::start(Script::default()).await;
    let e = engine(&fake, "consumer-drop", |_| {});
    let handler = Recorder::acking(Duration::from_millis(300)); // slow: the drop comes before the PUBACKs
    e.subscribe(topics(&["t"])).expect("subscribe");
    e.listen(handler.clone()).await.expect("listen");
    until("the consumer's SUBSCRIBE", Duration::from_secs(10), || {
        fake.subscriptions("consumer-drop")
            .contains(&"t".to_string())
    })
    .await;
    for pid in 1..=5u16 {
        fake.deliver(
            "consumer-drop",
            "t",
            &format!(r#"{{"data":{{"i":{pid}}}}}"#),
            pid,
            false,
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    fake.script(|s| s.session_present = true); // the broker kept the session
    fake.drop_connections();
    until("the reconnect", Duration::from_secs(10), || {
        fake.connects()
            .iter()
            .filter(|c| *c == "consumer-drop")
            .count()
            >= 2
            && fake.connected("consumer-drop")
    })
    .await;
    // What was not acknowledged comes again (DUP), then the rest of the stream.
    for pid in 1..=10u16 {
        let acked = fake.acked("consumer-drop").contains(&pid);
        if pid > 5 || !acked {
            fake.deliver(
                "consumer-drop",
                "t",
                &format!(r#"{{"data":{{"i":{pid}}}}}"#),
                pid,
                pid <= 5,
            );
        }
    }
    until(
        "PUBACKs for all 10 messages",
        Duration::from_secs(15),
        || (1..=10).all(|p| fake.acked("consumer-drop").contains(&p)),
    )
    .await;
    let seen = handler.payloads();
    for i in 1..=10 {
        assert!(
            seen.iter().any(|p| p.contains(&format!(r#""i":{i}}}"#))),
            "message {i} was never handled: {seen:?}"
        );
    }
    e.close().await.expect("close");
}

#[tokio::test]
async fn a_handler_failure_is_not_acknowledged_until_the_redelivery_succeeded() {
    let fake = FakeMqtt::start(Script::default()).await;
    let mut c = MqttConfig::new(&fake.url(), "consumer-retry").expect("config");
    c.reconnect_delay = Duration::from_millis(50);
    let mut cfg = EngineConfig::new("mqtt-it", TransportConfig::Mqtt(Box::new(c)));
    cfg.policy.retry_delay = Duration::from_millis(200);
    let e = Engine::new(cfg, None).expect("engine");
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let n = calls.clone();
    let handler = Recorder::with(move |_| {
        if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            cds_native_messaging::message::Outcome::Failed(
                cds_native_messaging::message::HandlerError::new("first try fails"),
            )
        } else {
            cds_native_messaging::message::Outcome::Ack
        }
    });
    e.subscribe(topics(&["r"])).expect("subscribe");
    e.listen(handler).await.expect("listen");
    until("the SUBSCRIBE", Duration::from_secs(10), || {
        fake.subscriptions("consumer-retry")
            .contains(&"r".to_string())
    })
    .await;
    fake.deliver("consumer-retry", "r", r#"{"data":1}"#, 7, false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !fake.acked("consumer-retry").contains(&7),
        "acknowledged although the handler failed"
    );
    until(
        "the PUBACK after the redelivery",
        Duration::from_secs(10),
        || fake.acked("consumer-retry").contains(&7),
    )
    .await;
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    e.close().await.expect("close");
}

#[tokio::test]
async fn a_consumer_that_falls_behind_keeps_its_connection_past_the_keep_alive() {
    // issue #16 (found by the slow-consumer soak: 300 duplicates of 60,000): while the engine was
    // saturated the connection did not read its socket, so the PINGRESP to its last PINGREQ sat
    // unread; at the next keep-alive tick rumqttc saw that ping unanswered ("Last pingreq isn't
    // acked"), dropped the connection, and the broker redelivered every unacknowledged message.
    let fake = FakeMqtt::start(Script::default()).await;
    let mut c = MqttConfig::new(&fake.url(), "slow-consumer").expect("a valid MQTT config");
    c.keep_alive = Duration::from_secs(1);
    c.reconnect_delay = Duration::from_millis(50);
    let mut config = EngineConfig::new("mqtt-it", TransportConfig::Mqtt(Box::new(c)));
    config.max_in_flight = 2; // the channel holds 4: a backlog of 80 saturates it for ~8 s
    let e = Engine::new(config, None).expect("an engine");
    let handler = Recorder::acking(Duration::from_millis(200));
    e.subscribe(topics(&["t"])).expect("subscribe");
    e.listen(handler.clone()).await.expect("listen");
    until("the consumer's SUBSCRIBE", Duration::from_secs(10), || {
        fake.subscriptions("slow-consumer")
            .contains(&"t".to_string())
    })
    .await;
    for pid in 1..=80u16 {
        fake.deliver(
            "slow-consumer",
            "t",
            &format!(r#"{{"data":{pid}}}"#),
            pid,
            false,
        );
    }
    let connects = || {
        fake.connects()
            .iter()
            .filter(|c| *c == "slow-consumer")
            .count()
    };
    // (this fake keeps no session: after a reconnect the unacknowledged messages never come back)
    until(
        "PUBACKs for all 80 messages, or a reconnect",
        Duration::from_secs(30),
        || connects() > 1 || (1..=80).all(|p| fake.acked("slow-consumer").contains(&p)),
    )
    .await;
    let connects = connects();
    assert_eq!(
        connects, 1,
        "the consumer reconnected while it was behind (each reconnect redelivers what is unacknowledged)"
    );
    assert_eq!(handler.payloads().len(), 80, "each message handled once");
    e.close().await.expect("close");
}
