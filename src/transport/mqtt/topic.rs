//! MQTT topic rules: what may be published, what may be subscribed, shared subscriptions and the
//! dead-letter topic. (Mapping CAP event names to topics happens in `srv/mqtt-messaging.js`.)

use std::collections::BTreeSet;

use crate::subscriptions::TopicSet;

/// Longest topic MQTT allows (bytes).
const MAX_TOPIC_LEN: usize = 65_535;

/// Why `topic` cannot be published to, or `None` when it can.
pub fn publish_problem(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        Some("an MQTT topic must not be empty")
    } else if topic.len() > MAX_TOPIC_LEN {
        Some("an MQTT topic must not be longer than 65535 bytes")
    } else if topic.contains(['+', '#']) {
        Some("'+' and '#' are wildcards and cannot be published to")
    } else if topic.contains('\0') {
        Some("an MQTT topic must not contain NUL")
    } else {
        None
    }
}

/// `true` when `filter` is a valid MQTT topic filter.
pub fn valid_filter(filter: &str) -> bool {
    !filter.contains('\0') && filter.len() <= MAX_TOPIC_LEN && rumqttc::valid_filter(filter)
}

/// `true` when `topic` matches the topic filter `filter` (`+`, `#`; `$` topics only match filters
/// that start with `$`).
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic == filter {
        return true;
    }
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut t = topic.split('/');
    let mut f = filter.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The filters to subscribe for a subscription set: every topic (a filter already), `#` for
/// "everything", each prefixed with `$share/<group>/` when a shared group is configured.
/// Returns the valid filters and the topics that are not valid filters.
pub fn filters(set: &TopicSet, shared_group: Option<&str>) -> (BTreeSet<String>, Vec<String>) {
    let mut out = BTreeSet::new();
    let mut invalid = Vec::new();
    let all = set.all.then(|| "#".to_string());
    for t in set.topics.iter().cloned().chain(all) {
        if !valid_filter(&t) {
            invalid.push(t);
            continue;
        }
        out.insert(match shared_group {
            Some(g) => format!("$share/{g}/{t}"),
            None => t,
        });
    }
    invalid.sort();
    (out, invalid)
}

/// A new dead-letter id: `<ms since the epoch, 13 digits>-<8 hex digits>`. It is the last level of
/// the dead letter's topic, so every dead letter has a retained place of its own, and it records
/// when the message was dead-lettered (MQTT 3.1.1 has no message properties).
pub fn new_dead_letter_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!("{ms:013}-{:08x}", fastrand::u32(..))
}

/// When the dead letter `id` was made (ms since the epoch), if `id` is a dead-letter id.
pub fn dead_letter_time(id: &str) -> Option<u64> {
    let (ms, rand) = id.split_once('-')?;
    let ok = ms.len() == 13
        && ms.bytes().all(|b| b.is_ascii_digit())
        && rand.len() == 8
        && rand.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then(|| ms.parse().ok()).flatten()
}

/// Where the dead letter `id` of `topic` is published: `<base>/<topic>/<id>` (original payload
/// unchanged).
pub fn dead_letter_topic(base: &str, topic: &str, id: &str) -> String {
    format!("{base}/{topic}/{id}")
}

/// A dead letter's place read back: the original topic and the id, if `mqtt_topic` is
/// `<base>/<topic>/<dead-letter id>`.
pub fn parse_dead_letter<'a>(base: &str, mqtt_topic: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = mqtt_topic.strip_prefix(base)?.strip_prefix('/')?;
    let (topic, id) = rest.rsplit_once('/')?;
    (!topic.is_empty() && dead_letter_time(id).is_some()).then_some((topic, id))
}

/// `true` when a message on `topic` is a dead letter that only arrived because of a catch-all
/// subscription (`#`): one of our own (under `base`), or any app's (its last level is a
/// dead-letter id), or the empty message that clears a retained one. It must not be processed.
pub fn is_own_dead_letter(base: &str, topic: &str, set: &TopicSet) -> bool {
    let ours = topic
        .strip_prefix(base)
        .is_some_and(|rest| rest.starts_with('/'));
    let any = topic
        .rsplit_once('/')
        .is_some_and(|(_, last)| dead_letter_time(last).is_some());
    (ours || any) && !set.topics.iter().any(|f| matches(topic, f))
}

/// `true` for the empty message that removes a retained dead letter (`<…>/<dead-letter id>`, no
/// payload): subscribers of the dead-letter topic get it too, and it is nothing to process.
pub fn is_dead_letter_removal(topic: &str, empty: bool) -> bool {
    empty
        && topic
            .rsplit_once('/')
            .is_some_and(|(_, last)| dead_letter_time(last).is_some())
}

/// `true` when a shared-subscription group name is usable (`$share/<group>/…`).
pub fn valid_group(group: &str) -> bool {
    !group.is_empty() && !group.contains(['/', '+', '#', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(topics: &[&str], all: bool) -> TopicSet {
        TopicSet {
            topics: topics.iter().map(|s| s.to_string()).collect(),
            all,
        }
    }

    #[test]
    fn wildcard_matching() {
        assert!(matches("a/b/c", "a/+/c"));
        assert!(matches("a/b/c", "a/#"));
        assert!(matches("a", "a/#"));
        assert!(matches("a/b", "#"));
        assert!(matches(
            "ReviewsService.reviewed",
            "ReviewsService.reviewed"
        ));
        assert!(!matches("a/b/c", "a/+"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("$SYS/x", "#"));
        assert!(matches("$SYS/x", "$SYS/#"));
        assert!(matches("a//c", "a/+/c"));
    }

    #[test]
    fn publish_topics() {
        assert!(publish_problem("a/b.c").is_none());
        assert!(publish_problem("").is_some());
        assert!(publish_problem("a/+").is_some());
        assert!(publish_problem("a/#").is_some());
    }

    #[test]
    fn filters_with_shared_group_and_catch_all() {
        let (f, bad) = filters(&set(&["a/+", "b", "x/#/y"], true), None);
        assert_eq!(f.into_iter().collect::<Vec<_>>(), ["#", "a/+", "b"]);
        assert_eq!(bad, ["x/#/y"]);
        let (f, _) = filters(&set(&["a"], false), Some("workers"));
        assert_eq!(f.into_iter().collect::<Vec<_>>(), ["$share/workers/a"]);
    }

    #[test]
    fn own_dead_letters_are_recognised() {
        let base = "dead-letter/app";
        let t = dead_letter_topic(base, "orders/created", "1764590000000-0000abcd");
        assert_eq!(t, "dead-letter/app/orders/created/1764590000000-0000abcd");
        assert!(is_own_dead_letter(base, &t, &set(&[], true)));
        assert!(!is_own_dead_letter(
            base,
            &t,
            &set(&["dead-letter/app/#"], true)
        ));
        assert!(!is_own_dead_letter(
            base,
            "dead-letter/apple",
            &set(&[], true)
        ));
        assert!(!is_own_dead_letter(base, "orders/created", &set(&[], true)));
        // another app's dead letter, through `#` only
        let other = dead_letter_topic("dead-letter/other", "a", "1764590000000-00000001");
        assert!(is_own_dead_letter(base, &other, &set(&[], true)));
        assert!(!is_own_dead_letter(
            base,
            &other,
            &set(&["dead-letter/other/#"], true)
        ));
    }

    #[test]
    fn the_removal_of_a_retained_dead_letter_is_recognised() {
        let t = dead_letter_topic("dead-letter/app", "a", "1764590000000-0000abcd");
        assert!(is_dead_letter_removal(&t, true));
        assert!(!is_dead_letter_removal(&t, false));
        assert!(!is_dead_letter_removal("orders/created", true));
    }

    #[test]
    fn dead_letter_ids_name_their_time_and_are_read_back() {
        let id = new_dead_letter_id();
        let ms = dead_letter_time(&id).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now - ms < 60_000);
        assert!(dead_letter_time("123-0000abcd").is_none());
        assert!(dead_letter_time("1764590000000-0000ABCD").is_none());
        assert!(dead_letter_time("1764590000000").is_none());
        let base = "dead-letter/app";
        let t = dead_letter_topic(base, "a/b.c", &id);
        assert_eq!(parse_dead_letter(base, &t), Some(("a/b.c", id.as_str())));
        assert_eq!(parse_dead_letter(base, "dead-letter/app/a/b"), None);
        assert_eq!(parse_dead_letter(base, &format!("{base}/{id}")), None);
        assert_eq!(parse_dead_letter("dead-letter/ap", &t), None);
    }

    #[test]
    fn group_names() {
        assert!(valid_group("workers"));
        assert!(!valid_group(""));
        assert!(!valid_group("a/b"));
    }
}
