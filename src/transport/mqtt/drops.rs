//! Messages the broker dropped, made visible. Mosquitto confirms a QoS 1 publish (PUBACK) and then
//! drops it when a subscriber's session already queues `max_queued_messages` (default 1000) — a
//! consumer that fell behind loses messages and nobody is told. Mosquitto counts them in
//! [`TOPIC`] (all clients together). It publishes that count only when it changed, at most every
//! `sys_interval` (10 s by default), retained but expiring after 60 s: a new subscriber gets the
//! count only if it changed within the last minute. So a value that comes *retained* (right after
//! the SUBACK) is the base, and one that comes live is a change seen while watching.

use std::sync::Mutex;

use crate::sync::lock;

/// Mosquitto's count of messages dropped by its inflight and queue limits since it started.
pub const TOPIC: &str = "$SYS/broker/publish/messages/dropped";

/// One value of [`TOPIC`]: the count as text.
pub fn parse(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload)
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
}

/// How the count grew while it was watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Growth {
    /// By this many since the previous value.
    By(u64),
    /// To this total; the previous value is not known (it had expired when the watch began, or the
    /// broker restarted).
    To(u64),
}

/// The last count read from [`TOPIC`].
#[derive(Default)]
pub struct BrokerDrops {
    last: Mutex<Option<u64>>,
}

impl BrokerDrops {
    /// Reads one value of [`TOPIC`] (`retained`: the MQTT retain flag, set on the value a broker
    /// sends right after a subscription); returns the growth a live value shows, `None` for a
    /// retained value (the base), an unchanged count or one that is not a number.
    pub fn observe(&self, payload: &[u8], retained: bool) -> Option<Growth> {
        let n = parse(payload)?;
        let before = lock(&self.last).replace(n);
        if retained {
            return None;
        }
        match before {
            Some(b) if n > b => Some(Growth::By(n - b)),
            Some(b) if n == b => None,
            _ if n > 0 => Some(Growth::To(n)),
            _ => None,
        }
    }

    /// The error line for a [`Growth`] (`consumer`: the connection's label).
    pub fn message(growth: Growth, consumer: &str) -> String {
        let what = match growth {
            Growth::By(n) => format!("{n} message(s) dropped because of its queue limits since its previous report"),
            Growth::To(n) => format!("messages dropped because of its queue limits (its count rose to {n} since it started)"),
        };
        format!(
            "the MQTT broker reports {what} (counted over all its clients; this is {consumer}): they were confirmed to their publishers and are lost. Mosquitto drops what exceeds max_queued_messages (default 1000) per session while a consumer is away or behind: raise it in mosquitto.conf (0 = no limit), and scale out consumers that cannot keep up (sharedGroup)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retained_value_is_the_base_and_live_growth_is_reported() {
        let d = BrokerDrops::default();
        assert_eq!(
            d.observe(b"12", true),
            None,
            "what was dropped before we watched"
        );
        assert_eq!(d.observe(b"12", false), None);
        assert_eq!(d.observe(b"40", false), Some(Growth::By(28)));
        assert_eq!(d.observe(b" 41\n", false), Some(Growth::By(1)));
    }

    #[test]
    fn a_live_value_without_a_base_is_a_change_seen_while_watching() {
        // the retained count had expired (Mosquitto: 60 s) when the watch began
        let d = BrokerDrops::default();
        assert_eq!(d.observe(b"55", false), Some(Growth::To(55)));
        assert_eq!(d.observe(b"60", false), Some(Growth::By(5)));
    }

    #[test]
    fn a_restarted_broker_counts_from_zero_again_and_garbage_is_ignored() {
        let d = BrokerDrops::default();
        assert_eq!(d.observe(b"500", true), None);
        assert_eq!(
            d.observe(b"3", true),
            None,
            "restart, resubscribed: a new base"
        );
        assert_eq!(d.observe(b"10", false), Some(Growth::By(7)));
        assert_eq!(
            d.observe(b"2", false),
            Some(Growth::To(2)),
            "restart unseen"
        );
        assert_eq!(d.observe(b"not a number", false), None);
        assert_eq!(d.observe(&[0xff, 0xfe], false), None);
        assert_eq!(d.observe(b"3", false), Some(Growth::By(1)));
    }

    #[test]
    fn the_message_says_what_to_do() {
        let who = "consumer mqtt://127.0.0.1:1883 as 'reviews'";
        let m = BrokerDrops::message(Growth::By(5), who);
        assert!(m.contains("5 message(s) dropped"), "{m}");
        assert!(m.contains("max_queued_messages"), "{m}");
        assert!(m.contains("as 'reviews'"), "{m}");
        let m = BrokerDrops::message(Growth::To(55), who);
        assert!(m.contains("rose to 55"), "{m}");
    }
}
