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

/// Where a dead letter of `topic` is published: `<base>/<topic>` (original payload unchanged).
pub fn dead_letter_topic(base: &str, topic: &str) -> String {
    format!("{base}/{topic}")
}

/// `true` when a message on `topic` is one of our own dead letters that only arrived because of a
/// catch-all subscription (`#`): it must not be processed again.
pub fn is_own_dead_letter(base: &str, topic: &str, set: &TopicSet) -> bool {
    let Some(rest) = topic.strip_prefix(base) else {
        return false;
    };
    rest.starts_with('/') && !set.topics.iter().any(|f| matches(topic, f))
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
        let t = dead_letter_topic(base, "orders/created");
        assert_eq!(t, "dead-letter/app/orders/created");
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
    }

    #[test]
    fn group_names() {
        assert!(valid_group("workers"));
        assert!(!valid_group(""));
        assert!(!valid_group("a/b"));
    }
}
