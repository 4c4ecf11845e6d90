//! Broker profiles: where a topic is published, where a queue is consumed, where an inbound
//! message carries its topic, and which outcome a failed delivery gets.
//!
//! Pure mapping, no I/O: every profile is unit-tested here, only `rabbitmq` also live.

use crate::error::{Error, Result};
use crate::transport::support::url::{percent_decode, percent_encode};

/// RabbitMQ's AMQP 1.0 address format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RabbitAddress {
    /// RabbitMQ 3.x (`/exchange/<x>` with the routing key in `subject`, `/amq/queue/<q>`).
    V1,
    /// RabbitMQ 4.x (`/exchanges/<x>/<key>`, `/queues/<q>`, percent-encoded).
    V2,
}

/// Where the topic of an inbound message is read from (generic profile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicSource {
    /// `properties.to`, with the publish template's prefix and suffix removed.
    To,
    /// `properties.subject`.
    Subject,
    /// The `x-routing-key` message annotation (RabbitMQ), then `properties.subject`.
    RoutingKey,
}

/// Outcome a receiver settles a delivery with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// `released`: back to the queue, delivery count unchanged.
    Released,
    /// `modified` with `delivery-failed = true`: back to the queue, delivery count raised.
    Modified,
    /// `rejected`: the broker dead-letters or discards it.
    Rejected,
}

impl FailOutcome {
    /// The outcome's AMQP name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailOutcome::Released => "released",
            FailOutcome::Modified => "modified",
            FailOutcome::Rejected => "rejected",
        }
    }

    /// Parses `released`, `modified` or `rejected`.
    pub fn parse(name: &str, option: &str) -> Result<Self> {
        match name {
            "released" => Ok(FailOutcome::Released),
            "modified" => Ok(FailOutcome::Modified),
            "rejected" => Ok(FailOutcome::Rejected),
            other => Err(Error::config(format!(
                "{option} must be 'released', 'modified' or 'rejected', got '{other}'"
            ))),
        }
    }
}

/// Address templates of the `generic` profile. `{topic}` and `{queue}` are replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    /// Publish address, e.g. `topic://{topic}`.
    pub publish: String,
    /// Consume address, e.g. `queue://{queue}`.
    pub consume: String,
    /// Publish through one anonymous sender (null target, address in `properties.to`) instead of
    /// one link per address.
    pub anonymous: bool,
    /// Where inbound messages carry their topic.
    pub topic_from: TopicSource,
    /// Outcome of a failed delivery that is to be redelivered.
    pub retry: FailOutcome,
    /// Outcome of a delivery that exhausted its attempts.
    pub dead_letter: FailOutcome,
}

/// A broker profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// RabbitMQ with the AMQP 1.0 plugin (3.x) or native AMQP 1.0 (4.x).
    RabbitMq {
        /// Address format.
        version: RabbitAddress,
        /// Exchange topics are published to (default `amq.topic`).
        exchange: String,
    },
    /// SAP Event Mesh (`topic:<t>`, `queue:<q>`, anonymous sender).
    EventMesh,
    /// SAP Message Queuing (`topic://<t>` with `.` → `/`, `queue://<q>`).
    MessageQueuing,
    /// Apache ActiveMQ Classic (`topic://<t>`, `queue://<q>`).
    ActiveMq,
    /// Apache ActiveMQ Artemis (address `<t>` with the `topic` capability, queue `<q>`).
    Artemis,
    /// Solace PubSub+ (`topic://<t>`, `queue://<q>`, one link per topic).
    Solace,
    /// Azure Service Bus (topic entity `<t>`, subscription `<t>/Subscriptions/<sub>`).
    AzureServiceBus,
    /// Eventter (publish `/<ns>/<topic>`, consume `/<ns>/<consumer-group>`).
    Eventter {
        /// Namespace.
        namespace: String,
    },
    /// Address templates from the configuration.
    Generic(Templates),
}

/// Where one outbound message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Target address of the sender link; `None` for the anonymous sender.
    pub link: Option<String>,
    /// `properties.to`.
    pub to: Option<String>,
    /// `properties.subject`.
    pub subject: Option<String>,
}

/// What an inbound message tells about its topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundMeta<'a> {
    /// `properties.to`.
    pub to: Option<&'a str>,
    /// `properties.subject`.
    pub subject: Option<&'a str>,
    /// `x-routing-key` message annotation.
    pub routing_key: Option<&'a str>,
    /// The topic the consuming link was attached for (profiles with one source per topic).
    pub link_topic: Option<&'a str>,
}

fn strip<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.strip_prefix(prefix)
}

impl Profile {
    /// Parses a profile name; `generic` needs its templates (given separately).
    pub fn by_name(
        name: &str,
        namespace: Option<&str>,
        exchange: Option<&str>,
        generic: Option<Templates>,
    ) -> Result<Self> {
        let exchange = exchange.unwrap_or("amq.topic").to_string();
        Ok(match name {
            "rabbitmq" | "rabbitmq3" | "rabbitmq-v1" => Profile::RabbitMq {
                version: RabbitAddress::V1,
                exchange,
            },
            "rabbitmq4" | "rabbitmq-v2" => Profile::RabbitMq {
                version: RabbitAddress::V2,
                exchange,
            },
            "event-mesh" => Profile::EventMesh,
            "message-queuing" => Profile::MessageQueuing,
            "activemq" => Profile::ActiveMq,
            "artemis" => Profile::Artemis,
            "solace" => Profile::Solace,
            "azure-service-bus" => Profile::AzureServiceBus,
            "eventter" => Profile::Eventter {
                namespace: namespace
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        Error::config("profile 'eventter' needs a namespace (option 'namespace')")
                    })?
                    .trim_matches('/')
                    .to_string(),
            },
            "generic" => Profile::Generic(generic.ok_or_else(|| {
                Error::config(
                    "profile 'generic' needs address templates: addresses: { publish: 'topic://{topic}', consume: 'queue://{queue}' }",
                )
            })?),
            other => {
                return Err(Error::config(format!(
                    "unknown profile '{other}' (expected rabbitmq, rabbitmq4, event-mesh, message-queuing, activemq, artemis, solace, azure-service-bus, eventter or generic)"
                )))
            }
        })
    }

    /// The profile's name as configured.
    pub fn name(&self) -> &'static str {
        match self {
            Profile::RabbitMq {
                version: RabbitAddress::V1,
                ..
            } => "rabbitmq",
            Profile::RabbitMq { .. } => "rabbitmq4",
            Profile::EventMesh => "event-mesh",
            Profile::MessageQueuing => "message-queuing",
            Profile::ActiveMq => "activemq",
            Profile::Artemis => "artemis",
            Profile::Solace => "solace",
            Profile::AzureServiceBus => "azure-service-bus",
            Profile::Eventter { .. } => "eventter",
            Profile::Generic(_) => "generic",
        }
    }

    /// Checks a topic and a queue name against the profile's address rules.
    pub fn validate_queue(&self, queue: &str) -> Result<()> {
        if queue.is_empty() {
            return Err(Error::config("queue.name must not be empty"));
        }
        if let Profile::RabbitMq {
            version: RabbitAddress::V1,
            ..
        } = self
        {
            if queue.contains('/') {
                return Err(Error::config(format!(
                    "queue.name '{queue}' contains '/', which RabbitMQ 3.x AMQP 1.0 addresses (/amq/queue/<name>) cannot express; use another name or profile 'rabbitmq4'"
                )));
            }
        }
        Ok(())
    }

    /// Where a message on `topic` is published.
    pub fn route(&self, topic: &str) -> Result<Route> {
        Ok(match self {
            Profile::RabbitMq {
                version: RabbitAddress::V1,
                exchange,
            } => Route {
                // One link for every topic: RabbitMQ 3.x takes the routing key from `subject` when
                // the target is `/exchange/<x>` (same as `/exchange/<x>/<key>`, without a link per key).
                link: Some(format!("/exchange/{exchange}")),
                to: None,
                subject: Some(topic.to_string()),
            },
            Profile::RabbitMq {
                version: RabbitAddress::V2,
                exchange,
            } => Route {
                link: None,
                to: Some(format!(
                    "/exchanges/{}/{}",
                    percent_encode(exchange),
                    percent_encode(topic)
                )),
                subject: Some(topic.to_string()),
            },
            Profile::EventMesh => Route {
                link: None,
                to: Some(format!("topic:{topic}")),
                subject: None,
            },
            Profile::MessageQueuing => Route {
                link: None,
                to: Some(format!("topic://{}", topic.replace('.', "/"))),
                subject: None,
            },
            Profile::ActiveMq => Route {
                link: None,
                to: Some(format!("topic://{topic}")),
                subject: None,
            },
            Profile::Artemis => Route {
                link: None,
                to: Some(topic.to_string()),
                subject: None,
            },
            Profile::Solace => {
                let a = format!("topic://{topic}");
                Route {
                    link: Some(a.clone()),
                    to: Some(a),
                    subject: None,
                }
            }
            Profile::AzureServiceBus => Route {
                link: Some(topic.to_string()),
                to: Some(topic.to_string()),
                subject: None,
            },
            Profile::Eventter { namespace } => {
                let a = format!("/{namespace}/{topic}");
                Route {
                    link: Some(a.clone()),
                    to: Some(a),
                    subject: Some(topic.to_string()),
                }
            }
            Profile::Generic(t) => {
                let a = t.publish.replace("{topic}", topic);
                Route {
                    link: if t.anonymous { None } else { Some(a.clone()) },
                    to: Some(a),
                    subject: Some(topic.to_string()),
                }
            }
        })
    }

    /// The source addresses to consume: one per queue, or (Azure Service Bus) one subscription per
    /// topic. Each entry is `(address, topic of that source if it has exactly one)`.
    pub fn sources(&self, queue: &str, topics: &[String]) -> Vec<(String, Option<String>)> {
        match self {
            Profile::RabbitMq {
                version: RabbitAddress::V1,
                ..
            } => vec![(format!("/amq/queue/{queue}"), None)],
            Profile::RabbitMq {
                version: RabbitAddress::V2,
                ..
            } => vec![(format!("/queues/{}", percent_encode(queue)), None)],
            Profile::EventMesh => vec![(format!("queue:{queue}"), None)],
            Profile::MessageQueuing | Profile::ActiveMq | Profile::Solace => {
                vec![(format!("queue://{queue}"), None)]
            }
            Profile::Artemis => vec![(queue.to_string(), None)],
            Profile::AzureServiceBus => topics
                .iter()
                .map(|t| (format!("{t}/Subscriptions/{queue}"), Some(t.clone())))
                .collect(),
            Profile::Eventter { namespace } => vec![(format!("/{namespace}/{queue}"), None)],
            Profile::Generic(t) => vec![(t.consume.replace("{queue}", queue), None)],
        }
    }

    /// Whether the sources depend on the subscribed topics (a new topic needs a new link).
    pub fn source_per_topic(&self) -> bool {
        matches!(self, Profile::AzureServiceBus)
    }

    /// Desired capabilities of a sender link (Artemis routes `topic` addresses as multicast).
    pub fn sender_capabilities(&self) -> &'static [&'static str] {
        match self {
            Profile::Artemis => &["topic"],
            _ => &[],
        }
    }

    /// The topic of an inbound message, or `None` when it carries none.
    pub fn topic_of(&self, m: &InboundMeta<'_>) -> Option<String> {
        let non_empty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
        match self {
            Profile::RabbitMq { version, exchange } => {
                if let Some(k) = non_empty(m.routing_key) {
                    return Some(k);
                }
                if let Some(s) = non_empty(m.subject) {
                    return Some(s);
                }
                let to = m.to?;
                let key = match version {
                    RabbitAddress::V1 => strip(to, &format!("/exchange/{exchange}/"))
                        .or_else(|| strip(to, "/topic/"))
                        .map(str::to_string),
                    RabbitAddress::V2 => {
                        strip(to, &format!("/exchanges/{}/", percent_encode(exchange)))
                            .map(percent_decode)
                    }
                };
                key.filter(|k| !k.is_empty())
            }
            Profile::EventMesh => {
                // As @sap/cds: `to` without `topic:` and leading slashes.
                let to = m.to?;
                let t = to
                    .strip_prefix("topic:")
                    .unwrap_or(to)
                    .trim_start_matches('/');
                non_empty(Some(t))
            }
            Profile::MessageQueuing => {
                let to = m.to?;
                let t = to.strip_prefix("topic://").unwrap_or(to);
                non_empty(Some(t)).map(|t| t.replace('/', "."))
            }
            Profile::ActiveMq | Profile::Solace => {
                let to = m.to?;
                non_empty(Some(to.strip_prefix("topic://").unwrap_or(to)))
            }
            Profile::Artemis => non_empty(m.to).or_else(|| non_empty(m.subject)),
            Profile::AzureServiceBus => non_empty(m.link_topic)
                .or_else(|| non_empty(m.to))
                .or_else(|| non_empty(m.subject)),
            Profile::Eventter { namespace } => non_empty(m.subject).or_else(|| {
                let to = m.to?;
                non_empty(Some(
                    to.strip_prefix(&format!("/{namespace}/")).unwrap_or(to),
                ))
            }),
            Profile::Generic(t) => match t.topic_from {
                TopicSource::Subject => non_empty(m.subject),
                TopicSource::RoutingKey => {
                    non_empty(m.routing_key).or_else(|| non_empty(m.subject))
                }
                TopicSource::To => {
                    let to = m.to?;
                    let (pre, post) = t.publish.split_once("{topic}").unwrap_or(("", ""));
                    let inner = to
                        .strip_prefix(pre)
                        .and_then(|r| r.strip_suffix(post))
                        .unwrap_or(to);
                    non_empty(Some(inner))
                }
            },
        }
    }

    /// Outcome of a failed delivery that is to be redelivered.
    pub fn retry_outcome(&self) -> FailOutcome {
        match self {
            // RabbitMQ 3.x ends the session on `modified`; 4.x accepts it but `released` keeps both alike.
            Profile::RabbitMq { .. } | Profile::Eventter { .. } => FailOutcome::Released,
            Profile::Generic(t) => t.retry,
            _ => FailOutcome::Modified,
        }
    }

    /// Outcome of a delivery that exhausted its attempts.
    pub fn dead_letter_outcome(&self) -> FailOutcome {
        match self {
            Profile::Eventter { .. } => FailOutcome::Released,
            Profile::Generic(t) => t.dead_letter,
            _ => FailOutcome::Rejected,
        }
    }

    /// Whether this transport creates the queue and its bindings itself (RabbitMQ only, over
    /// AMQP 0-9-1 on the same listener).
    pub fn provisions(&self) -> bool {
        matches!(self, Profile::RabbitMq { .. })
    }

    /// Where dead letters end up, for the startup line.
    pub fn dead_letter_place(&self, queue: &str) -> String {
        match self {
            Profile::RabbitMq { .. } => format!(
                "the dead-letter exchange of queue '{queue}' (x-dead-letter-exchange; without one RabbitMQ drops rejected messages)"
            ),
            Profile::EventMesh | Profile::MessageQueuing => {
                format!("the dead-message queue configured for queue '{queue}'")
            }
            Profile::AzureServiceBus => format!("the dead-letter sub-queue of subscription '{queue}'"),
            Profile::Eventter { .. } => "nowhere: eventter redelivers released messages".into(),
            _ => format!("the broker's dead-letter queue for '{queue}'"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rabbit(v: RabbitAddress) -> Profile {
        Profile::RabbitMq {
            version: v,
            exchange: "amq.topic".into(),
        }
    }

    #[test]
    fn rabbitmq3_publishes_to_the_topic_exchange_and_consumes_the_queue() {
        let p = rabbit(RabbitAddress::V1);
        let r = p.route("ReviewsService.reviewed").unwrap();
        assert_eq!(r.link.as_deref(), Some("/exchange/amq.topic"));
        assert_eq!(r.subject.as_deref(), Some("ReviewsService.reviewed"));
        assert_eq!(
            p.sources("orders", &[]),
            vec![("/amq/queue/orders".to_string(), None)]
        );
        assert_eq!(p.retry_outcome(), FailOutcome::Released);
        assert_eq!(p.dead_letter_outcome(), FailOutcome::Rejected);
        assert!(p.provisions());
        assert!(p.validate_queue("a/b").is_err());
        assert_eq!(p.route("a/b").unwrap().subject.as_deref(), Some("a/b"));
    }

    #[test]
    fn rabbitmq3_topic_comes_from_routing_key_then_subject_then_to() {
        let p = rabbit(RabbitAddress::V1);
        let m = InboundMeta {
            routing_key: Some("a.b"),
            subject: Some("x"),
            ..Default::default()
        };
        assert_eq!(p.topic_of(&m).as_deref(), Some("a.b"));
        let m = InboundMeta {
            subject: Some("s.t"),
            ..Default::default()
        };
        assert_eq!(p.topic_of(&m).as_deref(), Some("s.t"));
        let m = InboundMeta {
            to: Some("/exchange/amq.topic/k.l"),
            ..Default::default()
        };
        assert_eq!(p.topic_of(&m).as_deref(), Some("k.l"));
        let m = InboundMeta {
            to: Some("/topic/k.m"),
            ..Default::default()
        };
        assert_eq!(p.topic_of(&m).as_deref(), Some("k.m"));
        assert_eq!(p.topic_of(&InboundMeta::default()), None);
    }

    #[test]
    fn rabbitmq4_uses_v2_addresses_with_percent_encoding() {
        let p = rabbit(RabbitAddress::V2);
        let r = p.route("my topic/ä").unwrap();
        assert_eq!(r.link, None);
        assert_eq!(
            r.to.as_deref(),
            Some("/exchanges/amq.topic/my%20topic%2F%C3%A4")
        );
        assert_eq!(
            p.sources("CAP/0000", &[]),
            vec![("/queues/CAP%2F0000".to_string(), None)]
        );
        let m = InboundMeta {
            to: Some("/exchanges/amq.topic/my%20topic%2F%C3%A4"),
            ..Default::default()
        };
        assert_eq!(p.topic_of(&m).as_deref(), Some("my topic/ä"));
        assert!(p.validate_queue("CAP/0000").is_ok());
    }

    #[test]
    fn event_mesh_uses_the_anonymous_sender_and_topic_prefix() {
        let p = Profile::EventMesh;
        let r = p.route("sap/s4/beh/BusinessPartner/v1/Changed").unwrap();
        assert_eq!(r.link, None);
        assert_eq!(
            r.to.as_deref(),
            Some("topic:sap/s4/beh/BusinessPartner/v1/Changed")
        );
        assert_eq!(r.subject, None);
        assert_eq!(
            p.sources("my/app/q", &[]),
            vec![("queue:my/app/q".to_string(), None)]
        );
        let m = InboundMeta {
            to: Some("topic:/a/b"),
            ..Default::default()
        };
        assert_eq!(p.topic_of(&m).as_deref(), Some("a/b"));
        assert_eq!(p.topic_of(&InboundMeta::default()), None);
        assert_eq!(p.retry_outcome(), FailOutcome::Modified);
        assert_eq!(p.dead_letter_outcome(), FailOutcome::Rejected);
        assert!(!p.provisions());
    }

    #[test]
    fn message_queuing_replaces_dots_with_slashes() {
        let p = Profile::MessageQueuing;
        let r = p.route("Orders.created").unwrap();
        assert_eq!(r.to.as_deref(), Some("topic://Orders/created"));
        assert_eq!(r.link, None);
        assert_eq!(p.sources("q1", &[])[0].0, "queue://q1");
        let m = InboundMeta {
            to: Some("topic://Orders/created"),
            ..Default::default()
        };
        assert_eq!(p.topic_of(&m).as_deref(), Some("Orders.created"));
    }

    #[test]
    fn activemq_artemis_and_solace() {
        let a = Profile::ActiveMq;
        assert_eq!(a.route("t.x").unwrap().to.as_deref(), Some("topic://t.x"));
        assert_eq!(a.route("t.x").unwrap().link, None);
        assert_eq!(a.sources("q", &[])[0].0, "queue://q");
        let m = InboundMeta {
            to: Some("topic://t.x"),
            ..Default::default()
        };
        assert_eq!(a.topic_of(&m).as_deref(), Some("t.x"));

        let r = Profile::Artemis;
        assert_eq!(r.route("t.x").unwrap().to.as_deref(), Some("t.x"));
        assert_eq!(r.sender_capabilities(), &["topic"]);
        assert_eq!(r.sources("q", &[])[0].0, "q");

        let s = Profile::Solace;
        let route = s.route("a/b").unwrap();
        assert_eq!(route.link.as_deref(), Some("topic://a/b"));
        assert_eq!(s.sources("q", &[])[0].0, "queue://q");
        assert_eq!(s.retry_outcome(), FailOutcome::Modified);
    }

    #[test]
    fn azure_service_bus_consumes_one_subscription_per_topic() {
        let p = Profile::AzureServiceBus;
        assert_eq!(p.route("orders").unwrap().link.as_deref(), Some("orders"));
        let topics = vec!["orders".to_string(), "invoices".to_string()];
        assert_eq!(
            p.sources("my-app", &topics),
            vec![
                (
                    "orders/Subscriptions/my-app".to_string(),
                    Some("orders".to_string())
                ),
                (
                    "invoices/Subscriptions/my-app".to_string(),
                    Some("invoices".to_string())
                )
            ]
        );
        assert!(p.source_per_topic());
        let m = InboundMeta {
            link_topic: Some("orders"),
            ..Default::default()
        };
        assert_eq!(p.topic_of(&m).as_deref(), Some("orders"));
        assert_eq!(p.dead_letter_outcome(), FailOutcome::Rejected);
    }

    #[test]
    fn eventter_releases_only() {
        let p = Profile::by_name("eventter", Some("/ns/"), None, None).unwrap();
        assert_eq!(p.route("t1").unwrap().link.as_deref(), Some("/ns/t1"));
        assert_eq!(p.sources("group-a", &[])[0].0, "/ns/group-a");
        assert_eq!(p.retry_outcome(), FailOutcome::Released);
        assert_eq!(p.dead_letter_outcome(), FailOutcome::Released);
        let m = InboundMeta {
            to: Some("/ns/t1"),
            ..Default::default()
        };
        assert_eq!(p.topic_of(&m).as_deref(), Some("t1"));
        assert!(Profile::by_name("eventter", None, None, None).is_err());
    }

    #[test]
    fn generic_templates() {
        let t = Templates {
            publish: "/t/{topic}/x".into(),
            consume: "/q/{queue}".into(),
            anonymous: false,
            topic_from: TopicSource::To,
            retry: FailOutcome::Released,
            dead_letter: FailOutcome::Rejected,
        };
        let p = Profile::Generic(t);
        let r = p.route("a.b").unwrap();
        assert_eq!(r.link.as_deref(), Some("/t/a.b/x"));
        assert_eq!(r.to.as_deref(), Some("/t/a.b/x"));
        assert_eq!(p.sources("q1", &[])[0].0, "/q/q1");
        let m = InboundMeta {
            to: Some("/t/a.b/x"),
            ..Default::default()
        };
        assert_eq!(p.topic_of(&m).as_deref(), Some("a.b"));
        assert_eq!(p.retry_outcome(), FailOutcome::Released);
        assert!(Profile::by_name("generic", None, None, None).is_err());
        assert!(Profile::by_name("nope", None, None, None).is_err());
    }
}
