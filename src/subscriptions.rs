//! The set of topics an engine consumes, shared between the JS side and the transports.

use std::collections::HashSet;
use std::sync::RwLock;

use tokio::sync::watch;

/// A snapshot of what is subscribed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicSet {
    /// Exact topics (after prefixing) that have handlers.
    pub topics: HashSet<String>,
    /// Consume every topic (`on('*')` together with `forceListening`).
    pub all: bool,
}

impl TopicSet {
    /// `true` when a message on `topic` is to be consumed.
    pub fn matches(&self, topic: &str) -> bool {
        self.all || self.topics.contains(topic)
    }

    /// `true` when nothing is subscribed.
    pub fn is_empty(&self) -> bool {
        !self.all && self.topics.is_empty()
    }
}

/// Subscriptions that transports can read cheaply and watch for changes.
#[derive(Debug)]
pub struct Subscriptions {
    current: RwLock<TopicSet>,
    changed: watch::Sender<u64>,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Subscriptions {
            current: RwLock::new(TopicSet::default()),
            changed: watch::channel(0).0,
        }
    }
}

impl Subscriptions {
    /// Replaces the subscribed set; watchers are woken when it differs from the previous one.
    pub fn set(&self, next: TopicSet) -> bool {
        let mut cur = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *cur == next {
            return false;
        }
        *cur = next;
        drop(cur);
        self.changed.send_modify(|v| *v += 1);
        true
    }

    /// A copy of the current set.
    pub fn snapshot(&self) -> TopicSet {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// `true` when a message on `topic` is to be consumed.
    pub fn matches(&self, topic: &str) -> bool {
        match self.current.read() {
            Ok(guard) => guard.matches(topic),
            Err(poisoned) => poisoned.into_inner().matches(topic),
        }
    }

    /// A receiver that changes whenever the set changes.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_exact_topics_or_everything() {
        let s = Subscriptions::default();
        assert!(!s.matches("a"));
        assert!(s.set(TopicSet {
            topics: ["a".to_string()].into(),
            all: false
        }));
        assert!(s.matches("a"));
        assert!(!s.matches("b"));
        s.set(TopicSet {
            topics: HashSet::new(),
            all: true,
        });
        assert!(s.matches("b"));
    }

    #[test]
    fn unchanged_set_does_not_notify() {
        let s = Subscriptions::default();
        let rx = s.watch();
        assert!(!s.set(TopicSet::default()));
        assert!(!rx.has_changed().unwrap());
        s.set(TopicSet {
            topics: ["x".into()].into(),
            all: false,
        });
        assert!(rx.has_changed().unwrap());
    }
}
