//! The set of topics an engine consumes, shared between the JS side and the transports.

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Duration;

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

/// Subscriptions that transports can read cheaply and watch for changes, and the version of them
/// the transport has put into effect at its broker ("an emit sees my own subscriptions").
#[derive(Debug)]
pub struct Subscriptions {
    current: RwLock<TopicSet>,
    changed: watch::Sender<u64>,
    /// `None` until a transport tracks what it applied (see [`Subscriptions::track_applied`]).
    applied: watch::Sender<Option<u64>>,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Subscriptions {
            current: RwLock::new(TopicSet::default()),
            changed: watch::channel(0).0,
            applied: watch::channel(None).0,
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

    /// A receiver that changes whenever the set changes; its value is the set's version.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The version of the current set (raised by every change).
    pub fn version(&self) -> u64 {
        *self.changed.borrow()
    }

    /// Called by a transport that puts subscriptions into effect at a broker (bindings,
    /// SUBSCRIBE, consumer groups) when it starts consuming: from then on emits wait until the
    /// transport reported the version they saw with [`Subscriptions::applied`].
    pub fn track_applied(&self) {
        self.applied.send_if_modified(|v| {
            let first = v.is_none();
            if first {
                *v = Some(0);
            }
            first
        });
    }

    /// The transport reports that `version` (and every earlier one) is in effect.
    pub fn applied(&self, version: u64) {
        self.applied.send_if_modified(|v| match v {
            Some(cur) if *cur >= version => false,
            _ => {
                *v = Some(version);
                true
            }
        });
    }

    /// Waits until the version current now is applied, at most `limit`; `true` when it is (or
    /// when no transport tracks it). Emits call this, so `on(t)` followed by `emit(t)` in one
    /// service does not lose the message to a subscription the broker has not seen yet.
    pub async fn wait_applied(&self, limit: Duration) -> bool {
        let want = self.version();
        let mut rx = self.applied.subscribe();
        let done = |v: &Option<u64>| v.is_none_or(|v| v >= want);
        if done(&rx.borrow()) {
            return true;
        }
        let reached = tokio::time::timeout(limit, rx.wait_for(done)).await;
        matches!(reached, Ok(Ok(_)))
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

    fn set_of(t: &str) -> TopicSet {
        TopicSet {
            topics: [t.to_string()].into(),
            all: false,
        }
    }

    #[tokio::test]
    async fn emits_wait_for_the_applied_version_only_where_a_transport_tracks_it() {
        let s = std::sync::Arc::new(Subscriptions::default());
        s.set(set_of("a"));
        assert!(
            s.wait_applied(Duration::from_millis(1)).await,
            "untracked: no wait"
        );
        s.track_applied();
        assert!(!s.wait_applied(Duration::from_millis(20)).await);
        let t = s.clone();
        let waiter = tokio::spawn(async move { t.wait_applied(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.applied(s.version());
        assert!(waiter.await.unwrap());
        s.applied(0); // never goes back
        assert!(s.wait_applied(Duration::from_millis(1)).await);
        s.set(set_of("b"));
        assert!(!s.wait_applied(Duration::from_millis(10)).await);
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
