use super::*;
use crate::error::ErrorCode;

fn cfg() -> MqttConfig {
    MqttConfig::new("mqtt://127.0.0.1:1883", "app/messaging").unwrap()
}

#[test]
fn defaults() {
    let c = cfg();
    assert!(c.validate().is_ok());
    assert_eq!(c.qos, 1);
    assert_eq!(c.dead_letter_topic, "dead-letter/app/messaging");
    assert!(c.tls.verify);
    let s = c.settings(None);
    assert!(!s.clean_session);
    assert!(s.manual_acks);
    assert_eq!(s.client_id, "app/messaging");
}

#[test]
fn invalid_values_name_the_option() {
    type Change = fn(&mut MqttConfig);
    let cases: Vec<(Change, &str)> = vec![
        (|c| c.qos = 2, "qos"),
        (|c| c.client_id = String::new(), "clientId"),
        (|c| c.keep_alive = Duration::ZERO, "keepAlive"),
        (|c| c.shared_group = Some("a/b".into()), "sharedGroup"),
        (|c| c.dead_letter_topic = "dead/#".into(), "deadLetterTopic"),
        (|c| c.publish_timeout = Duration::ZERO, "publishTimeout"),
        (|c| c.token = Some("t".into()), "token"),
    ];
    for (change, option) in cases {
        let mut c = cfg();
        change(&mut c);
        let e = c.validate().unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.message.contains(option), "{option}: {}", e.message);
    }
}

#[test]
fn url_credentials_are_used_unless_options_override_them() {
    let mut c = MqttConfig::new("ws://u:p@localhost:9001/mqtt", "x").unwrap();
    let s = c.settings(None);
    assert_eq!(
        (s.username.as_deref(), s.password.as_deref()),
        (Some("u"), Some("p"))
    );
    c.username = Some("other".into());
    c.password = Some("secret".into());
    let s = c.settings(None);
    assert_eq!(s.username.as_deref(), Some("other"));
    assert!(!format!("{c:?}").contains("secret"));
    c.token = Some("tok".into());
    assert!(c.validate().is_ok());
    assert!(!format!("{c:?}").contains("tok\""));
}

#[test]
fn guarantee_names_session_and_dead_letter_topic() {
    let t = MqttTransport::new(cfg(), Logger::default()).unwrap();
    let g = t.guarantee(&RetryPolicy::default());
    assert_eq!(g.delivery, "at-least-once");
    assert_eq!(
        g.dead_letter,
        "dead-letter/app/messaging/<topic>/<id> (retained)"
    );
    assert!(g.summary.contains("persistent session 'app/messaging'"));
    let mut c = cfg();
    c.qos = 0;
    let t = MqttTransport::new(c, Logger::default()).unwrap();
    assert_eq!(
        t.guarantee(&RetryPolicy::default()).delivery,
        "at-most-once"
    );
}

#[test]
fn tls_is_prepared_only_for_tls_schemes() {
    let t = MqttTransport::new(cfg(), Logger::default()).unwrap();
    assert!(t.tls.is_none());
    let mut c = MqttConfig::new("mqtts://127.0.0.1", "x").unwrap();
    c.tls.verify = false;
    let t = MqttTransport::new(c, Logger::default()).unwrap();
    assert!(t.tls.is_some());
}

#[test]
fn subscription_diff() {
    let cur: std::collections::BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
    let want: std::collections::BTreeSet<String> = ["b".to_string(), "c".to_string()].into();
    let (add, remove) = conn::diff(&cur, &want);
    assert_eq!(add, ["c"]);
    assert_eq!(remove, ["a"]);
}
