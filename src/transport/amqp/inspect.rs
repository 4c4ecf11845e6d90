//! Looking at an AMQP 1.0 broker for the `cds-native-messaging` CLI: a probe that opens one
//! connection (TCP or TLS, SASL, AMQP open) with the service's settings and closes it again, and a
//! tail on a temporary queue of its own.

use std::time::Duration;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{Body, Data, Header, Message, MessageId, Outcome, Source};
use fe2o3_amqp::types::primitives::{Binary, Value};
use fe2o3_amqp::Session;

use super::config::{AmqpConfig, ConnSettings};
use super::profile::{Profile, RabbitAddress};
use super::{codec, net};
use crate::error::{Error, ErrorCode, Result};

/// Opens and closes one connection; resolves to the broker's address (without credentials).
pub async fn probe(s: &ConnSettings) -> Result<String> {
    let (mut handle, _) = net::open(s).await.map_err(|e| e.error)?;
    let _ = tokio::time::timeout(Duration::from_millis(500), handle.close()).await;
    Ok(s.endpoint())
}

/// A tail on RabbitMQ 3.x (AMQP 1.0 plugin): a receiver on `/exchange/<exchange>/#`, for which the
/// broker creates a temporary, exclusive queue bound to the exchange — the app's queue keeps
/// every message, and the temporary queue goes away with the connection.
pub struct Tail {
    _conn: ConnectionHandle<()>,
    _session: SessionHandle<()>,
    receiver: Receiver,
    profile: Profile,
}

impl Tail {
    /// Connects and attaches the receiver.
    pub async fn open(config: &AmqpConfig) -> Result<Self> {
        let exchange = match &config.profile {
            Profile::RabbitMq {
                version: RabbitAddress::V1,
                exchange,
            } => exchange.clone(),
            other => {
                return Err(Error::config(format!(
                    "tail needs the rabbitmq (3.x) profile for now, not '{}'",
                    other.name()
                )))
            }
        };
        let s = &config.conn;
        let (conn, mut session) = open_session(s).await?;
        let address = format!("/exchange/{exchange}/#");
        let name = format!("{}-tail-{:08x}", s.container_id, fastrand::u32(..));
        let receiver = tokio::time::timeout(
            s.connect_timeout,
            Receiver::attach(&mut session, name, address.as_str()),
        )
        .await
        .map_err(|_| failed(format!("attaching a receiver to '{address}' timed out")))?
        .map_err(|e| failed(format!("cannot attach a receiver to '{address}': {e}")))?;
        Ok(Tail {
            _conn: conn,
            _session: session,
            receiver,
            profile: config.profile.clone(),
        })
    }

    /// Waits up to `wait` for one message; returns its topic and payload.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<(String, String)>> {
        let d = match tokio::time::timeout(wait, self.receiver.recv::<Body<Value>>()).await {
            Err(_) => return Ok(None),
            Ok(Err(e)) => return Err(failed(format!("the tail's receiver failed: {e}"))),
            Ok(Ok(d)) => d,
        };
        let decoded = codec::decode(d.message(), &self.profile, None);
        let _ = self.receiver.accept(&d).await;
        Ok(Some((decoded.topic.unwrap_or_default(), decoded.payload)))
    }
}

/// One connection with one session.
async fn open_session(s: &ConnSettings) -> Result<(ConnectionHandle<()>, SessionHandle<()>)> {
    let (mut conn, _) = net::open(s).await.map_err(|e| e.error)?;
    let session = tokio::time::timeout(s.connect_timeout, Session::begin(&mut conn))
        .await
        .map_err(|_| failed(format!("beginning a session at {} timed out", s.endpoint())))?
        .map_err(|e| failed(format!("cannot begin a session at {}: {e}", s.endpoint())))?;
    Ok((conn, session))
}

fn failed(message: String) -> Error {
    Error::new(ErrorCode::ConnectionFailed, message)
}

/// Whether the service's queue can be consumed: attaches a receiver without credit (so nothing is
/// taken) to the queue's source address and detaches again. `Ok(None)`: it can; `Ok(Some(why))`:
/// the broker refused (missing queue, no permission).
pub async fn queue_problem(config: &AmqpConfig) -> Result<Option<String>> {
    let s = &config.conn;
    let Some((address, _)) = config
        .profile
        .sources(&config.queue.name, &[])
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let (mut conn, mut session) = open_session(s).await?;
    let attach = Receiver::builder()
        .name(format!(
            "{}-doctor-{:08x}",
            s.container_id,
            fastrand::u32(..)
        ))
        .source(Source::builder().address(address.clone()).build())
        .credit_mode(CreditMode::Manual)
        .attach(&mut session);
    let problem = match tokio::time::timeout(s.connect_timeout, attach).await {
        Ok(Ok(r)) => {
            let _ = tokio::time::timeout(Duration::from_millis(500), r.close()).await;
            None
        }
        Ok(Err(e)) => Some(format!("the broker refused a receiver on '{address}': {e}")),
        Err(_) => Some(format!("attaching a receiver to '{address}' timed out")),
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), conn.close()).await;
    Ok(problem)
}

/// One message in the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// `message-id`, else a hash of topic and body (stable while the message is unchanged).
    pub id: String,
    /// The topic it was published on (`subject`, else the dead-lettering's routing key).
    pub topic: String,
    /// The payload as a JSON text (as the app would get it).
    pub payload: String,
    /// When the broker dead-lettered it (ms since the epoch), if it says (`x-death`).
    pub time_ms: Option<u64>,
    /// Why (`rejected`, `expired`, …), if the broker says.
    pub reason: Option<String>,
    /// The queue it died in, if the broker says.
    pub queue: Option<String>,
}

/// Most messages one listing holds at once.
const BROWSE_LIMIT: u32 = 10_000;

/// The dead-letter queue of the service, or why it has none to look at.
pub fn dead_letter_queue(config: &AmqpConfig) -> Result<String> {
    if !matches!(config.profile, Profile::RabbitMq { .. }) {
        return Err(Error::config(format!(
            "dead letters of profile '{}' are in {}; this tool reads RabbitMQ dead-letter queues only: inspect them with the broker's tools",
            config.profile.name(),
            config.profile.dead_letter_place(&config.queue.name)
        )));
    }
    match &config.queue.dead_letter_queue {
        Some(q) => Ok(q.clone()),
        None => Err(Error::config(format!(
            "queue '{}' has no dead-letter queue configured{}: set queue.deadLetterQueue (the queue is then created with it, routed through the default exchange unless queue.deadLetterExchange names another)",
            config.queue.name,
            match &config.queue.dead_letter_exchange {
                Some(x) => format!(" (its dead letters go to exchange '{x}'; name the queue bound there as queue.deadLetterQueue)"),
                None => " (without one RabbitMQ drops rejected messages)".into(),
            }
        ))),
    }
}

/// A browsing session on the dead-letter queue: every message held unsettled (so none is taken),
/// released again on [`Browse::finish`].
struct Browse {
    conn: ConnectionHandle<()>,
    session: SessionHandle<()>,
    receiver: Receiver,
    held: Vec<fe2o3_amqp::link::delivery::Delivery<Body<Value>>>,
}

impl Browse {
    async fn open(config: &AmqpConfig, dlq: &str, wait: Duration) -> Result<Browse> {
        let s = &config.conn;
        let Some((address, _)) = config.profile.sources(dlq, &[]).into_iter().next() else {
            return Err(Error::config("the profile has no queue address"));
        };
        let (conn, mut session) = open_session(s).await?;
        let attach = Receiver::builder()
            .name(format!(
                "{}-dead-letters-{:08x}",
                s.container_id,
                fastrand::u32(..)
            ))
            .source(Source::builder().address(address.clone()).build())
            .credit_mode(CreditMode::Manual)
            .attach(&mut session);
        let mut receiver = match tokio::time::timeout(s.connect_timeout, attach).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(failed(format!(
                    "cannot read the dead-letter queue '{dlq}' ({address}): {e}; it is created when the app starts with queue.deadLetterQueue"
                )))
            }
            Err(_) => return Err(failed(format!("attaching a receiver to '{address}' timed out"))),
        };
        receiver
            .set_credit(BROWSE_LIMIT)
            .await
            .map_err(|e| failed(format!("cannot grant credit on '{address}': {e}")))?;
        let mut held = Vec::new();
        // The broker sends what the queue holds at once; the first message may take a moment.
        let mut quiet = wait;
        while held.len() < BROWSE_LIMIT as usize {
            match tokio::time::timeout(quiet, receiver.recv::<Body<Value>>()).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(failed(format!("reading '{address}' failed: {e}"))),
                Ok(Ok(d)) => held.push(d),
            }
            quiet = Duration::from_millis(300);
        }
        Ok(Browse {
            conn,
            session,
            receiver,
            held,
        })
    }

    /// Releases what is still held, detaches and closes.
    async fn finish(mut self) {
        let held = std::mem::take(&mut self.held);
        if !held.is_empty() {
            let _ = self.receiver.release_all(held.iter()).await;
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), self.receiver.close()).await;
        let _ = tokio::time::timeout(Duration::from_millis(500), self.session.end()).await;
        let _ = tokio::time::timeout(Duration::from_millis(500), self.conn.close()).await;
    }
}

fn annotation<'a>(m: &'a Message<Body<Value>>, key: &str) -> Option<&'a Value> {
    m.message_annotations.as_ref().and_then(|a| {
        a.0.iter().find_map(|(k, v)| match k {
            OwnedKey::Symbol(s) if s.0 == key => Some(v),
            _ => None,
        })
    })
}

/// A message annotation, else a text application property (where RabbitMQ may put its headers).
fn header(m: &Message<Body<Value>>, key: &str) -> Option<Value> {
    annotation(m, key).cloned().or_else(|| {
        m.application_properties
            .as_ref()
            .and_then(|p| p.0.get(key))
            .and_then(|v| match v {
                fe2o3_amqp::types::primitives::SimpleValue::String(s) => {
                    Some(Value::String(s.clone()))
                }
                fe2o3_amqp::types::primitives::SimpleValue::Symbol(s) => {
                    Some(Value::Symbol(s.clone()))
                }
                _ => None,
            })
    })
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

fn field<'a>(entry: &'a Value, key: &str) -> Option<&'a Value> {
    match entry {
        Value::Map(m) => m.iter().find_map(|(k, v)| match k {
            Value::String(s) if s == key => Some(v),
            Value::Symbol(s) if s.0 == key => Some(v),
            _ => None,
        }),
        _ => None,
    }
}

/// The first `x-death` entry (RabbitMQ: the latest dead-lettering) as a map value.
fn first_death(m: &Message<Body<Value>>) -> Option<Value> {
    match header(m, "x-death")? {
        Value::List(l) => l.into_iter().next(),
        Value::Array(a) => a.0.into_iter().next(),
        _ => None,
    }
}

fn dead_letter_of(d: &fe2o3_amqp::link::delivery::Delivery<Body<Value>>) -> DeadLetter {
    let m = d.message();
    let props = m.properties.as_ref();
    let death_entry = first_death(m);
    let death = death_entry.as_ref();
    let death_key = death
        .and_then(|e| field(e, "routing-keys"))
        .and_then(|v| match v {
            Value::List(l) => l.first().and_then(text),
            Value::Array(a) => a.0.first().and_then(text),
            _ => None,
        });
    let topic = props
        .and_then(|p| p.subject.clone())
        .filter(|s| !s.is_empty())
        .or(death_key)
        .unwrap_or_default();
    let body = codec::body_bytes(&m.body);
    let id = match props.and_then(|p| p.message_id.as_ref()) {
        Some(MessageId::String(s)) => s.clone(),
        Some(MessageId::Ulong(u)) => u.to_string(),
        Some(MessageId::Uuid(u)) => format!("{u:?}"),
        Some(MessageId::Binary(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        None => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            topic.hash(&mut h);
            body.hash(&mut h);
            format!("h-{:016x}", h.finish())
        }
    };
    let time_ms = death.and_then(|e| field(e, "time")).and_then(|v| match v {
        Value::Timestamp(t) => u64::try_from(t.milliseconds()).ok(),
        Value::Long(l) => u64::try_from(*l).ok().map(|s| s * 1000),
        Value::Ulong(l) => Some(*l * 1000),
        _ => None,
    });
    DeadLetter {
        id,
        topic,
        payload: codec::json_payload(body),
        time_ms,
        reason: death
            .and_then(|e| field(e, "reason"))
            .and_then(text)
            .or_else(|| header(m, "x-first-death-reason").as_ref().and_then(text)),
        queue: death
            .and_then(|e| field(e, "queue"))
            .and_then(text)
            .or_else(|| header(m, "x-first-death-queue").as_ref().and_then(text)),
    }
}

/// Every message in the service's dead-letter queue (at most 10 000), read without taking any:
/// each is held unsettled while the listing runs and released again.
pub async fn dead_letters(config: &AmqpConfig) -> Result<Vec<DeadLetter>> {
    let dlq = dead_letter_queue(config)?;
    let b = Browse::open(config, &dlq, Duration::from_millis(1500)).await?;
    let all = b.held.iter().map(dead_letter_of).collect();
    b.finish().await;
    Ok(all)
}

/// The address that puts a message straight into `queue` (RabbitMQ: through the default
/// exchange), so a redelivery reaches this app's queue only, not every queue bound to the topic.
fn queue_target(profile: &Profile, queue: &str) -> String {
    match profile {
        Profile::RabbitMq {
            version: RabbitAddress::V2,
            ..
        } => format!(
            "/queues/{}",
            crate::transport::support::url::percent_encode(queue)
        ),
        _ => format!("/amq/queue/{queue}"),
    }
}

/// Takes the dead letters `ids` from the dead-letter queue (accepts them); with `redeliver` first
/// sends each — body, properties and application properties unchanged — into the service's queue
/// and waits for the broker to accept it. The others are released untouched. Returns how many
/// were moved.
pub async fn take_dead_letters(
    config: &AmqpConfig,
    ids: &[String],
    redeliver: bool,
) -> Result<usize> {
    let dlq = dead_letter_queue(config)?;
    let mut b = Browse::open(config, &dlq, Duration::from_millis(1500)).await?;
    let held = std::mem::take(&mut b.held);
    let (chosen, rest): (Vec<_>, Vec<_>) = held
        .into_iter()
        .partition(|d| ids.contains(&dead_letter_of(d).id));
    b.held = rest;
    let total = chosen.len();
    let mut moved = 0;
    let result = async {
        let mut sender = None;
        if redeliver && !chosen.is_empty() {
            let target = queue_target(&config.profile, &config.queue.name);
            let name = format!(
                "{}-redeliver-{:08x}",
                config.conn.container_id,
                fastrand::u32(..)
            );
            let s = tokio::time::timeout(
                config.conn.connect_timeout,
                Sender::attach(&mut b.session, name, target.as_str()),
            )
            .await
            .map_err(|_| failed(format!("attaching a sender to '{target}' timed out")))?
            .map_err(|e| failed(format!("cannot attach a sender to '{target}': {e}")))?;
            sender = Some((s, target));
        }
        for d in &chosen {
            if let Some((s, target)) = sender.as_mut() {
                let m = d.message();
                let copy = Message {
                    header: m.header.clone().map(|h| Header {
                        delivery_count: 0,
                        ..h
                    }),
                    delivery_annotations: None,
                    message_annotations: None,
                    properties: m.properties.clone(),
                    application_properties: m.application_properties.clone(),
                    body: Data(Binary::from(codec::body_bytes(&m.body))),
                    footer: None,
                };
                match tokio::time::timeout(config.conn.connect_timeout, s.send(copy)).await {
                    Ok(Ok(Outcome::Accepted(_))) => {}
                    Ok(Ok(other)) => {
                        return Err(failed(format!(
                            "the broker did not accept the redelivery into '{target}': {other:?}"
                        )))
                    }
                    Ok(Err(e)) => {
                        return Err(failed(format!("redelivering into '{target}' failed: {e}")))
                    }
                    Err(_) => {
                        return Err(failed(format!("redelivering into '{target}' timed out")))
                    }
                }
            }
            b.receiver
                .accept(d)
                .await
                .map_err(|e| failed(format!("cannot remove the dead letter from '{dlq}': {e}")))?;
            moved += 1;
        }
        if let Some((s, _)) = sender {
            let _ = tokio::time::timeout(Duration::from_millis(500), s.close()).await;
        }
        Ok(())
    }
    .await;
    // what was chosen but not moved goes back too
    b.held.extend(chosen.into_iter().skip(moved));
    b.finish().await;
    result.map(|()| moved).map_err(|e: Error| {
        Error::new(
            e.code,
            format!(
                "{} (after {moved} of {total} dead letters were moved)",
                e.full_message()
            ),
        )
    })
}
