//! The JavaScript boundary: the only module that uses `#[napi]`. It converts values and delegates
//! to [`crate::engine::Engine`].
//!
//! Errors cross the boundary as `Error` objects whose message starts with the stable code
//! (`"INVALID_CONFIG: …"`); `lib/errors.js` turns them into `NativeMessagingError`s with `code`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use napi::bindgen_prelude::{FnArgs, Promise};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

use crate::config::{EngineConfig, TransportConfig};
use crate::engine::{Engine, Handler};
use crate::error::{Error, ErrorCode, Result};
use crate::log::{Level, LogSink};
use crate::message::{HandlerError, Inbound, Outbound, Outcome};
use crate::policy::RetryPolicy;
use crate::routing::{Route, Router, Unmatched};
use crate::subscriptions::TopicSet;
use crate::transport::file::FileConfig;
use crate::transport::mqtt::MqttConfig;
use crate::transport::redis::conn::Backoff;
use crate::transport::redis::{RedisConfig, RedisMode, StreamsConfig};

/// Options of a native engine, as mapped by `srv/<kind>.js` from `cds.requires.<service>`.
/// Durations are in milliseconds.
#[napi(object)]
#[derive(Debug, Default)]
pub struct EngineOptions {
    /// Service name for log lines.
    pub name: Option<String>,
    /// Backend: `"local"`, `"file"`, `"redis"` or `"mqtt"`.
    pub transport: String,
    /// Deliveries in total before a message is dead-lettered (default 3; 1 = no redelivery).
    pub max_attempts: Option<f64>,
    /// Delay before the first redelivery (default 200 ms); doubles on every attempt.
    pub retry_delay: Option<f64>,
    /// Upper bound of the redelivery delay (default 30 000 ms).
    pub max_retry_delay: Option<f64>,
    /// Deliveries unsettled at once (default 100).
    pub max_in_flight: Option<f64>,
    /// Deliveries handed to JavaScript in one call (default 100).
    pub max_batch: Option<f64>,
    /// File box: path of the box file (absolute).
    pub file: Option<String>,
    /// File box: dead-letter box (default `<file>.dead`).
    pub dead_letter_file: Option<String>,
    /// File box: where malformed lines go (default `<file>.malformed`).
    pub malformed_file: Option<String>,
    /// File box: longest time between two reads of the box (default 1000 ms).
    pub interval: Option<f64>,
    /// File box: react to file-change notifications (default true).
    pub watch: Option<bool>,
    /// File box: how long to wait for the box lock (default 5000 ms).
    pub lock_timeout: Option<f64>,
    /// File box: age after which a foreign lock is stale (default 10 000 ms).
    pub stale_lock_after: Option<f64>,
    /// File box: flush every write to disk before an emit resolves (default true).
    pub fsync: Option<bool>,
    /// Redis / AMQP: the broker URL (`redis[s]://…`, `amqp[s]://…`; never logged).
    pub url: Option<String>,
    /// Redis: PEM CA certificate to trust for `rediss://` (e.g. `credentials.tls.server_ca`).
    pub ca: Option<String>,
    /// Redis: `"pubsub"` (default, wire-compatible with @sap/cds) or `"streams"` (at-least-once).
    pub mode: Option<String>,
    /// Redis: limit of one connection attempt and how long an emit waits for a lost connection
    /// to come back before it fails with `CONNECTION_FAILED` (default 5000 ms).
    pub connect_timeout: Option<f64>,
    /// Redis: first reconnect delay (default 100 ms); doubles per attempt, jittered.
    pub reconnect_delay: Option<f64>,
    /// Redis: upper bound of the reconnect delay (default 5000 ms).
    pub max_reconnect_delay: Option<f64>,
    /// Redis streams: prefix of the stream keys (stream = prefix + topic; default `""`).
    pub stream_prefix: Option<String>,
    /// Redis streams: the consumer group; AMQP: the consuming queue (the service's queue name).
    pub queue: Option<String>,
    /// Redis streams: this consumer's name in the group (default `<host>-<pid>-<n>`).
    pub consumer: Option<String>,
    /// Redis streams: `XADD … MAXLEN ~ n` (default: no trimming).
    pub max_len: Option<f64>,
    /// Redis streams: idle time after which pending entries of another consumer are taken over
    /// (default 30 000 ms).
    pub claim_after: Option<f64>,
    /// Redis streams: entries fetched per `XREADGROUP` (default 100).
    pub read_count: Option<f64>,
    /// Redis streams: `BLOCK` time of one `XREADGROUP` (default 1000 ms).
    pub block: Option<f64>,
    /// Redis streams: where exhausted messages go (default `<prefix><queue>:dead-letter`).
    pub dead_letter_stream: Option<String>,
    /// Redis streams: a new consumer group starts at the beginning of the stream instead of its
    /// end (default false).
    pub from_start: Option<bool>,
    /// MQTT: broker and session settings (required for `transport: "mqtt"`).
    pub mqtt: Option<MqttEngineOptions>,
    /// AMQP: broker profile (`rabbitmq`, `rabbitmq4`, `event-mesh`, `message-queuing`, `activemq`,
    /// `artemis`, `solace`, `azure-service-bus`, `eventter`, `generic`; default `rabbitmq`).
    pub profile: Option<String>,
    /// AMQP: user (overrides the URL's).
    pub user: Option<String>,
    /// AMQP: password (overrides the URL's; never logged).
    pub password: Option<String>,
    /// AMQP: virtual host (overrides the URL's path).
    pub vhost: Option<String>,
    /// AMQP: SASL mechanism `PLAIN`, `ANONYMOUS` or `EXTERNAL` (default: PLAIN with a user, else ANONYMOUS).
    pub sasl: Option<String>,
    /// AMQP: extra trusted CA certificates (PEM text).
    pub tls_ca: Option<String>,
    /// AMQP: client certificate chain (PEM text).
    pub tls_cert: Option<String>,
    /// AMQP: client private key (PEM text).
    pub tls_key: Option<String>,
    /// AMQP: verify the broker certificate (default true).
    pub tls_verify: Option<bool>,
    /// AMQP: TLS server name to verify (default: the URL's host).
    pub tls_servername: Option<String>,
    /// AMQP: container id of the connection.
    pub container_id: Option<String>,
    /// AMQP: idle timeout announced to the broker (default 60 000 ms; 0 = none).
    pub idle_timeout: Option<f64>,
    /// AMQP: how long an emit may wait for the broker across reconnects (default 30 000 ms).
    pub send_timeout: Option<f64>,
    /// AMQP: use a connection of its own instead of the shared one of the binding.
    pub dedicated: Option<bool>,
    /// AMQP: create the queue and bind it to the subscribed topics (default true; RabbitMQ).
    pub provision_queue: Option<bool>,
    /// AMQP: `x-queue-type` for a created queue (`classic`, `quorum`).
    pub queue_type: Option<String>,
    /// AMQP: `x-dead-letter-exchange` for a created queue.
    pub dead_letter_exchange: Option<String>,
    /// AMQP: `x-dead-letter-routing-key` for a created queue.
    pub dead_letter_routing_key: Option<String>,
    /// AMQP: link credit of the receiver (default 2 × maxInFlight).
    pub prefetch: Option<f64>,
    /// AMQP: 0 = send settled (at-most-once), 1 = wait for the broker's outcome (default).
    pub qos: Option<f64>,
    /// AMQP: mark messages durable (default true).
    pub durable: Option<bool>,
    /// AMQP: exchange topics are published to (rabbitmq profiles; default `amq.topic`).
    pub exchange: Option<String>,
    /// AMQP: namespace (eventter profile).
    pub namespace: Option<String>,
    /// AMQP generic profile: publish address template with `{topic}`.
    pub publish_address: Option<String>,
    /// AMQP generic profile: consume address template with `{queue}`.
    pub consume_address: Option<String>,
    /// AMQP generic profile: publish through one anonymous sender (default false).
    pub anonymous_sender: Option<bool>,
    /// AMQP generic profile: where the inbound topic is: `to` (default), `subject`, `routing-key`.
    pub topic_from: Option<String>,
    /// AMQP generic profile: outcome for a redelivery (`released`, `modified`; default `modified`).
    pub retry_outcome: Option<String>,
    /// AMQP generic profile: outcome after the last attempt (`rejected`, `released`; default `rejected`).
    pub dead_letter_outcome: Option<String>,
}

/// Options of the MQTT transport (`native-mqtt-messaging`). Durations in milliseconds.
#[napi(object)]
#[derive(Default)]
pub struct MqttEngineOptions {
    /// Broker URL: `mqtt://`, `mqtts://`, `ws://` or `wss://` (credentials in it are allowed).
    pub url: String,
    /// User name (overrides the URL's).
    pub username: Option<String>,
    /// Password (overrides the URL's).
    pub password: Option<String>,
    /// Stable client id of the consumer's persistent session.
    pub client_id: String,
    /// MQTT keep-alive (default 30 000 ms; whole seconds on the wire).
    pub keep_alive: Option<f64>,
    /// 0 or 1 (default 1).
    pub qos: Option<f64>,
    /// PEM certificates to trust for `mqtts://` / `wss://` instead of the system's.
    pub ca: Option<String>,
    /// Verify the broker's TLS certificate (default true).
    pub reject_unauthorized: Option<bool>,
    /// PEM client certificate (mutual TLS), with `key`.
    pub cert: Option<String>,
    /// PEM private key of `cert`.
    pub key: Option<String>,
    /// OAuth bearer token for the WebSocket upgrade.
    pub token: Option<String>,
    /// Shared-subscription group: filters become `$share/<group>/<filter>`.
    pub shared_group: Option<String>,
    /// Base topic of dead letters (default `dead-letter/<clientId>`).
    pub dead_letter_topic: Option<String>,
    /// How long an emit waits for its confirmation (default 30 000 ms).
    pub publish_timeout: Option<f64>,
    /// First reconnect delay (default 250 ms).
    pub reconnect_delay: Option<f64>,
    /// Upper bound of the reconnect delay (default 10 000 ms).
    pub max_reconnect_delay: Option<f64>,
}

impl std::fmt::Debug for MqttEngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttEngineOptions")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn mqtt_config(o: MqttEngineOptions) -> Result<TransportConfig> {
    let mut m = MqttConfig::new(&o.url, o.client_id)?;
    m.username = o.username.filter(|u| !u.is_empty());
    m.password = o.password;
    m.keep_alive = Duration::from_secs(count("keepAlive", o.keep_alive, 30_000)?.div_ceil(1000));
    m.qos = match count("qos", o.qos, 1)? {
        q @ (0 | 1) => q as u8,
        q => {
            return Err(Error::config(format!(
                "qos must be 0 or 1, got {q} (MQTT QoS 2 is not supported)"
            )))
        }
    };
    m.tls.ca = o.ca;
    m.tls.verify = o.reject_unauthorized.unwrap_or(true);
    m.tls.cert = o.cert;
    m.tls.key = o.key;
    m.token = o.token.filter(|t| !t.is_empty());
    m.shared_group = o.shared_group;
    if let Some(d) = o.dead_letter_topic {
        m.dead_letter_topic = d;
    }
    m.publish_timeout = millis("publishTimeout", o.publish_timeout, 30_000)?;
    m.reconnect_delay = millis("reconnectDelay", o.reconnect_delay, 250)?;
    m.max_reconnect_delay = millis("maxReconnectDelay", o.max_reconnect_delay, 10_000)?;
    Ok(TransportConfig::Mqtt(Box::new(m)))
}

/// A batch of inbound messages handed to JavaScript (parallel arrays: cheap to cross the boundary).
#[napi(object)]
pub struct InboundBatch {
    /// Topic of each message.
    pub topics: Vec<String>,
    /// Serialized body of each message.
    pub payloads: Vec<String>,
    /// Delivery attempt of each message (1 = first delivery).
    pub attempts: Vec<u32>,
}

/// Why a handler refused a message, as reported by JavaScript.
#[napi(object)]
pub struct HandlerFailure {
    /// The error message.
    pub message: String,
    /// The error's `code`, if any.
    pub code: Option<String>,
    /// `true` when retrying cannot help (`err.unrecoverable`).
    pub unrecoverable: Option<bool>,
}

/// The effective delivery guarantee of an engine.
#[napi(object)]
pub struct GuaranteeInfo {
    /// `at-least-once` or `at-most-once`.
    pub delivery: String,
    /// Where exhausted messages go.
    pub dead_letter: String,
    /// One sentence for the startup log.
    pub summary: String,
}

/// A message that exhausted its attempts (kept in memory by the local kind).
#[napi(object)]
pub struct DeadLetterInfo {
    /// Topic.
    pub topic: String,
    /// Serialized body.
    pub payload: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last handler error's message.
    pub error: String,
}

type JsHandler = ThreadsafeFunction<
    InboundBatch,
    Promise<Vec<Option<HandlerFailure>>>,
    InboundBatch,
    Status,
    false,
>;
type JsLog =
    ThreadsafeFunction<FnArgs<(String, String)>, (), FnArgs<(String, String)>, Status, false, true>;

fn to_js(e: Error) -> napi::Error {
    napi::Error::new(
        Status::GenericFailure,
        format!("{}: {}", e.code.as_str(), e.full_message()),
    )
}

fn millis(name: &str, v: Option<f64>, default: u64) -> Result<Duration> {
    Ok(Duration::from_millis(count(name, v, default)?))
}

fn count(name: &str, v: Option<f64>, default: u64) -> Result<u64> {
    match v {
        None => Ok(default),
        Some(x) if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= 1e12 => Ok(x as u64),
        Some(x) => Err(Error::config(format!(
            "{name} must be a non-negative whole number, got {x}"
        ))),
    }
}

fn small(name: &str, v: Option<f64>, default: u64) -> Result<u32> {
    let n = count(name, v, default)?;
    u32::try_from(n).map_err(|_| Error::config(format!("{name} is too large: {n}")))
}

fn config(mut o: EngineOptions) -> Result<EngineConfig> {
    let transport = match o.transport.as_str() {
        "local" => TransportConfig::Local,
        "file" => {
            let path = o.file.filter(|f| !f.is_empty()).ok_or_else(|| {
                Error::config("file must be the path of the box file, e.g. \"~/.cds-msg-box\"")
            })?;
            let mut f = FileConfig::new(PathBuf::from(path));
            if let Some(d) = o.dead_letter_file {
                f.dead_letter_path = d.into();
            }
            if let Some(m) = o.malformed_file {
                f.malformed_path = m.into();
            }
            f.poll_interval = millis("interval", o.interval, 1000)?;
            f.watch = o.watch.unwrap_or(true);
            f.lock_timeout = millis("lockTimeout", o.lock_timeout, 5000)?;
            f.stale_lock_after = millis("staleLockAfter", o.stale_lock_after, 10_000)?;
            f.fsync = o.fsync.unwrap_or(true);
            TransportConfig::File(f)
        }
        "redis" => TransportConfig::Redis(redis_config(&o)?),
        "mqtt" => mqtt_config(o.mqtt.take().ok_or_else(|| {
            Error::config("url must be the broker URL, e.g. \"mqtt://localhost:1883\"")
        })?)?,
        "amqp" => TransportConfig::Amqp(Box::new(amqp_config(&o)?)),
        other => {
            return Err(Error::config(format!(
                "unknown transport '{other}' (expected 'local', 'file', 'redis', 'mqtt' or 'amqp')"
            )))
        }
    };
    let mut c = EngineConfig::new(o.name.unwrap_or_else(|| "messaging".into()), transport);
    c.policy = RetryPolicy {
        max_attempts: small("maxAttempts", o.max_attempts, 3)?,
        retry_delay: millis("retryDelay", o.retry_delay, 200)?,
        max_retry_delay: millis("maxRetryDelay", o.max_retry_delay, 30_000)?,
    };
    c.max_in_flight = small("maxInFlight", o.max_in_flight, 100)? as usize;
    c.max_batch = small("maxBatch", o.max_batch, 100)? as usize;
    Ok(c)
}

fn redis_config(o: &EngineOptions) -> Result<RedisConfig> {
    let url = o
        .url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let mut c = RedisConfig::new(url);
    c.ca = o.ca.clone().filter(|c| !c.trim().is_empty());
    c.mode = match o.mode.as_deref() {
        None | Some("pubsub") => RedisMode::PubSub,
        Some("streams") => RedisMode::Streams,
        Some(other) => {
            return Err(Error::config(format!(
                "mode must be 'pubsub' or 'streams', got '{other}'"
            )))
        }
    };
    c.connect_timeout = millis("connectTimeout", o.connect_timeout, 5000)?;
    c.reconnect = Backoff {
        min: millis("reconnectDelay", o.reconnect_delay, 100)?,
        max: millis("maxReconnectDelay", o.max_reconnect_delay, 5000)?,
    };
    let group = o.queue.clone().unwrap_or_else(|| "CAP/0000".into());
    let mut s = StreamsConfig::new(o.stream_prefix.clone().unwrap_or_default(), group);
    if let Some(n) = o.consumer.clone() {
        s.consumer = n;
    }
    if let Some(d) = o.dead_letter_stream.clone() {
        s.dead_letter_stream = d;
    }
    s.max_len = match o.max_len {
        None => None,
        v => Some(count("maxLen", v, 0)?),
    };
    s.claim_after = millis("claimAfter", o.claim_after, 30_000)?;
    s.read_count = small("readCount", o.read_count, 100)? as usize;
    s.block = millis("block", o.block, 1000)?;
    s.from_start = o.from_start.unwrap_or(false);
    c.streams = s;
    Ok(c)
}

fn amqp_config(o: &EngineOptions) -> Result<crate::transport::amqp::config::AmqpConfig> {
    use crate::transport::amqp::config::{AmqpConfig, ConnSettings, QueueConfig, Sasl};
    use crate::transport::amqp::profile::{FailOutcome, Profile, Templates, TopicSource};
    let url = o.url.as_deref().filter(|u| !u.is_empty()).ok_or_else(|| {
        Error::config("url must be the broker URL, e.g. \"amqp://guest:guest@localhost:5672\"")
    })?;
    let container_id = o
        .container_id
        .clone()
        .unwrap_or_else(|| format!("cds-native-{}", std::process::id()));
    let mut conn = ConnSettings::from_url(url, &container_id)?;
    if let Some(v) = &o.vhost {
        conn.vhost = Some(v.clone()).filter(|v| !v.is_empty());
    }
    if o.user.is_some() || o.password.is_some() {
        let (user0, pass0) = match &conn.sasl {
            Sasl::Plain { user, password } => (user.clone(), password.clone()),
            _ => (String::new(), String::new()),
        };
        conn.sasl = Sasl::Plain {
            user: o.user.clone().unwrap_or(user0),
            password: o.password.clone().unwrap_or(pass0),
        };
    }
    match o.sasl.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None => {}
        Some("PLAIN") if !matches!(conn.sasl, Sasl::Plain { .. }) => {
            return Err(Error::config(
                "sasl 'PLAIN' needs a user (in the url or option user)",
            ));
        }
        Some("PLAIN") => {}
        Some("ANONYMOUS") => conn.sasl = Sasl::Anonymous,
        Some("EXTERNAL") => conn.sasl = Sasl::External,
        Some(other) => {
            return Err(Error::config(format!(
                "sasl must be PLAIN, ANONYMOUS or EXTERNAL, got '{other}'"
            )))
        }
    }
    let tls_given = o.tls_ca.is_some()
        || o.tls_cert.is_some()
        || o.tls_key.is_some()
        || o.tls_verify.is_some()
        || o.tls_servername.is_some();
    match conn.tls.as_mut() {
        Some(t) => {
            t.ca = o.tls_ca.clone();
            t.cert = o.tls_cert.clone();
            t.key = o.tls_key.clone();
            t.verify = o.tls_verify.unwrap_or(true);
            t.servername = o.tls_servername.clone();
        }
        None if tls_given => {
            return Err(Error::config("tls options need an amqps:// url"));
        }
        None => {}
    }
    conn.idle_timeout = millis("idleTimeout", o.idle_timeout, 60_000)?;
    conn.connect_timeout = millis("connectTimeout", o.connect_timeout, 10_000)?;
    conn.reconnect_delay = millis("reconnectDelay", o.reconnect_delay, 200)?;
    conn.max_reconnect_delay = millis("maxReconnectDelay", o.max_reconnect_delay, 30_000)?;
    conn.dedicated = o.dedicated.unwrap_or(false);
    let generic = match (&o.publish_address, &o.consume_address) {
        (Some(p), Some(c)) => Some(Templates {
            publish: p.clone(),
            consume: c.clone(),
            anonymous: o.anonymous_sender.unwrap_or(false),
            topic_from: match o.topic_from.as_deref().unwrap_or("to") {
                "to" => TopicSource::To,
                "subject" => TopicSource::Subject,
                "routing-key" => TopicSource::RoutingKey,
                other => {
                    return Err(Error::config(format!(
                        "topicFrom must be 'to', 'subject' or 'routing-key', got '{other}'"
                    )))
                }
            },
            retry: FailOutcome::parse(
                o.retry_outcome.as_deref().unwrap_or("modified"),
                "retryOutcome",
            )?,
            dead_letter: FailOutcome::parse(
                o.dead_letter_outcome.as_deref().unwrap_or("rejected"),
                "deadLetterOutcome",
            )?,
        }),
        (None, None) => None,
        _ => {
            return Err(Error::config(
                "publishAddress and consumeAddress must be given together",
            ))
        }
    };
    let profile = Profile::by_name(
        o.profile.as_deref().unwrap_or("rabbitmq"),
        o.namespace.as_deref(),
        o.exchange.as_deref(),
        generic,
    )?;
    let max_in_flight = small("maxInFlight", o.max_in_flight, 100)?;
    let prefetch = small(
        "prefetch",
        o.prefetch,
        u64::from(max_in_flight.saturating_mul(2)),
    )?;
    let qos = small("qos", o.qos, 1)?;
    Ok(AmqpConfig {
        conn,
        profile,
        queue: QueueConfig {
            name: o.queue.clone().unwrap_or_else(|| "CAP.0000".into()),
            provision: o.provision_queue.unwrap_or(true),
            queue_type: o.queue_type.clone(),
            dead_letter_exchange: o.dead_letter_exchange.clone(),
            dead_letter_routing_key: o.dead_letter_routing_key.clone(),
        },
        prefetch,
        qos: u8::try_from(qos).map_err(|_| Error::config("qos must be 0 or 1"))?,
        send_timeout: millis("sendTimeout", o.send_timeout, 30_000)?,
        durable: o.durable.unwrap_or(true),
    })
}

struct JsLogSink(JsLog);

impl LogSink for JsLogSink {
    fn log(&self, level: Level, message: &str) {
        let _ = self.0.call(
            (level.as_str().to_string(), message.to_string()).into(),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
    }
}

struct JsBridge(JsHandler);

#[async_trait]
impl Handler for JsBridge {
    async fn handle(&self, batch: Vec<Inbound>) -> Result<Vec<Outcome>> {
        let mut topics = Vec::with_capacity(batch.len());
        let mut payloads = Vec::with_capacity(batch.len());
        let mut attempts = Vec::with_capacity(batch.len());
        for m in batch {
            topics.push(m.topic);
            payloads.push(m.payload);
            attempts.push(m.attempt);
        }
        let fail = |e: napi::Error| {
            Error::new(
                ErrorCode::HandlerFailed,
                format!("the JavaScript message handler failed: {}", e.reason),
            )
        };
        let promise = self
            .0
            .call_async_catch(InboundBatch {
                topics,
                payloads,
                attempts,
            })
            .await
            .map_err(fail)?;
        let outcomes = promise.await.map_err(fail)?;
        Ok(outcomes
            .into_iter()
            .map(|o| match o {
                None => Outcome::Ack,
                Some(f) => Outcome::Failed(HandlerError {
                    message: f.message,
                    code: f.code,
                    unrecoverable: f.unrecoverable.unwrap_or(false),
                }),
            })
            .collect())
    }
}

/// One messaging engine (one per CAP messaging service). Used by `srv/NativeMessagingService.js`.
#[napi]
pub struct NativeEngine {
    inner: Arc<Engine>,
}

#[napi]
impl NativeEngine {
    /// Validates the options and creates the engine (the file box is created if missing).
    /// `log(level, message)` receives the engine's log lines.
    #[napi(constructor)]
    pub fn new(options: EngineOptions, log: Option<JsLog>) -> napi::Result<Self> {
        let sink = log.map(|l| Arc::new(JsLogSink(l)) as Arc<dyn LogSink>);
        let engine = config(options)
            .and_then(|c| Engine::new(c, sink))
            .map_err(to_js)?;
        Ok(NativeEngine {
            inner: Arc::new(engine),
        })
    }

    /// The effective delivery guarantee.
    #[napi]
    pub fn guarantee(&self) -> GuaranteeInfo {
        let g = self.inner.guarantee();
        GuaranteeInfo {
            delivery: g.delivery.to_string(),
            dead_letter: g.dead_letter,
            summary: g.summary,
        }
    }

    /// Starts consuming. `handler(batch)` must return a Promise of one entry per message:
    /// `null` to acknowledge, or a `HandlerFailure` to nack. A rejected Promise or a throw
    /// redelivers the whole batch.
    #[napi(
        ts_args_type = "handler: (batch: InboundBatch) => Promise<Array<HandlerFailure | null>>"
    )]
    pub async fn listen(&self, handler: JsHandler) -> napi::Result<()> {
        self.inner
            .listen(Arc::new(JsBridge(handler)))
            .await
            .map_err(to_js)
    }

    /// Replaces the consumed topics; `all` consumes every topic.
    #[napi]
    pub fn subscribe(&self, topics: Vec<String>, all: bool) -> napi::Result<()> {
        self.inner
            .subscribe(TopicSet {
                topics: topics.into_iter().collect(),
                all,
            })
            .map_err(to_js)
    }

    /// Publishes messages (parallel arrays). Resolves to one entry per message: `null` on success or
    /// `"CODE: message"`.
    #[napi]
    pub async fn publish(
        &self,
        topics: Vec<String>,
        payloads: Vec<String>,
    ) -> napi::Result<Vec<Option<String>>> {
        if topics.len() != payloads.len() {
            return Err(to_js(Error::new(
                ErrorCode::Internal,
                "publish: topics and payloads differ in length",
            )));
        }
        let batch = topics
            .into_iter()
            .zip(payloads)
            .map(|(topic, payload)| Outbound { topic, payload })
            .collect();
        Ok(self
            .inner
            .publish(batch)
            .await
            .into_iter()
            .map(|r| {
                r.err()
                    .map(|e| format!("{}: {}", e.code.as_str(), e.full_message()))
            })
            .collect())
    }

    /// Dead letters kept in memory (local kind), oldest first.
    #[napi]
    pub fn dead_letters(&self) -> Vec<DeadLetterInfo> {
        self.inner
            .dead_letters()
            .into_iter()
            .map(|d| DeadLetterInfo {
                topic: d.message.topic,
                payload: d.message.payload,
                attempts: d.message.attempt,
                error: d.error.message,
            })
            .collect()
    }

    /// Stops consuming, gives back what is in flight, and releases the JavaScript handler so the
    /// process can exit. Idempotent.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        self.inner.close().await.map_err(to_js)
    }
}

/// One route of a composite messaging service.
#[napi(object)]
pub struct RouteSpec {
    /// The `cds.requires` name of the child service.
    pub service: String,
    /// Glob patterns (`**`, `*`, `?` with CAP's meaning; anchored; other characters literal).
    pub patterns: Vec<String>,
}

/// The compiled routing table of `native-composite-messaging`.
#[napi]
pub struct NativeRouter {
    inner: Router,
}

#[napi]
impl NativeRouter {
    /// Compiles the routes once. `unmatched` is `'error'` (default), `'drop'` or a service name.
    #[napi(constructor)]
    pub fn new(routes: Vec<RouteSpec>, unmatched: Option<String>) -> napi::Result<Self> {
        let routes = routes
            .into_iter()
            .map(|r| Route {
                target: r.service,
                patterns: r.patterns,
            })
            .collect();
        Unmatched::parse(unmatched.as_deref())
            .and_then(|u| Router::new(routes, u))
            .map(|inner| NativeRouter { inner })
            .map_err(to_js)
    }

    /// The services a topic goes to, each once, in route order (empty: drop). Throws `NO_ROUTE`.
    #[napi]
    pub fn route(&self, topic: String) -> napi::Result<Vec<String>> {
        self.inner
            .route(&topic)
            .map(|v| v.into_iter().map(str::to_string).collect())
            .map_err(to_js)
    }

    /// The routing table as configured.
    #[napi]
    pub fn routes(&self) -> Vec<RouteSpec> {
        self.inner
            .routes()
            .iter()
            .map(|r| RouteSpec {
                service: r.target.clone(),
                patterns: r.patterns.clone(),
            })
            .collect()
    }
}

/// Fills the missing CloudEvents 1.0 attributes of a header object (JSON) and validates it;
/// returns the completed headers as JSON. Throws `INVALID_DATA_FORMAT` for an invalid event.
#[napi]
pub fn complete_cloud_event_headers(
    headers: String,
    event: String,
    source: String,
) -> napi::Result<String> {
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&headers)
        .map_err(|e| {
            to_js(Error::with_cause(
                ErrorCode::InvalidDataFormat,
                "message headers must be a JSON object",
                e,
            ))
        })?;
    crate::cloudevents::complete_headers(&mut map, &event, &source).map_err(to_js)?;
    serde_json::to_string(&map).map_err(|e| {
        to_js(Error::with_cause(
            ErrorCode::Internal,
            "cannot serialize headers",
            e,
        ))
    })
}
