//! Messages the broker dropped, made visible. Mosquitto confirms a QoS 1 publish (PUBACK) and then
//! drops it when a subscriber's session already queues `max_queued_messages` (default 1000) — a
//! consumer that fell behind loses messages and nobody is told. Mosquitto counts them in the
//! retained topic [`TOPIC`] (all clients together, updated every `sys_interval`, 10 s by
//! default); the consumer subscribes to it at QoS 0 and logs an error whenever the count grew.

use std::sync::Mutex;

use crate::sync::lock;

/// Mosquitto's count of messages dropped by its inflight and queue limits since it started.
pub const TOPIC: &str = "$SYS/broker/publish/messages/dropped";

/// The last count read from [`TOPIC`].
#[derive(Default)]
pub struct BrokerDrops {
    last: Mutex<Option<u64>>,
}

impl BrokerDrops {
    /// Reads one value of [`TOPIC`]; returns how many messages were dropped since the previous
    /// value (`None` for the first value, an unchanged count or one that is not a number). A count
    /// that went down (the broker restarted) becomes the new base.
    pub fn observe(&self, payload: &[u8]) -> Option<u64> {
        let n = std::str::from_utf8(payload)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()?;
        let mut last = lock(&self.last);
        let before = last.replace(n)?;
        n.checked_sub(before).filter(|d| *d > 0)
    }

    /// The error line for `dropped` messages (`consumer`: the connection's label).
    pub fn message(dropped: u64, consumer: &str) -> String {
        format!(
            "the MQTT broker reports {dropped} message(s) dropped because of its queue limits since its previous report (counted over all its clients; this is {consumer}): they were confirmed to their publishers and are lost. Mosquitto drops what exceeds max_queued_messages (default 1000) per session while a consumer is away or behind: raise it in mosquitto.conf (0 = no limit), and scale out consumers that cannot keep up (sharedGroup)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_value_is_the_base_and_only_growth_is_reported() {
        let d = BrokerDrops::default();
        assert_eq!(d.observe(b"12"), None, "what was dropped before we watched");
        assert_eq!(d.observe(b"12"), None);
        assert_eq!(d.observe(b"40"), Some(28));
        assert_eq!(d.observe(b" 41\n"), Some(1));
    }

    #[test]
    fn a_restarted_broker_counts_from_zero_again_and_garbage_is_ignored() {
        let d = BrokerDrops::default();
        assert_eq!(d.observe(b"500"), None);
        assert_eq!(d.observe(b"3"), None, "restart: a new base");
        assert_eq!(d.observe(b"10"), Some(7));
        assert_eq!(d.observe(b"not a number"), None);
        assert_eq!(d.observe(&[0xff, 0xfe]), None);
        assert_eq!(d.observe(b"11"), Some(1));
    }

    #[test]
    fn the_message_says_what_to_do() {
        let m = BrokerDrops::message(5, "consumer mqtt://127.0.0.1:1883 as 'reviews'");
        assert!(m.contains("5 message(s) dropped"), "{m}");
        assert!(m.contains("max_queued_messages"), "{m}");
        assert!(m.contains("as 'reviews'"), "{m}");
    }
}
