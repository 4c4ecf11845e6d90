//! The option objects the JavaScript services hand to [`NativeEngine`](super::engine::NativeEngine):
//! the common settings plus one nested object per transport.
//!
//! Every field is optional unless stated; an absent field keeps the default of the transport's own
//! config (`RetryPolicy::default`, `EngineConfig::new`, `FileConfig::new`, `RedisConfig::new`,
//! `StreamsConfig::new`, `MqttConfig::new`, `ConnSettings::from_url`, `AmqpConfig::new`), which is
//! where each default is stated and documented. Durations are in milliseconds.

use napi_derive::napi;

/// Options of a native engine, as mapped by `srv/<kind>.js` from `cds.requires.<service>`.
#[napi(object)]
#[derive(Default)]
pub struct EngineOptions {
    /// Service name for log lines.
    pub name: Option<String>,
    /// Backend: `"local"`, `"file"`, `"redis"`, `"mqtt"` or `"amqp"`; its options are in the field
    /// of the same name.
    pub transport: String,
    /// Deliveries in total before a message is dead-lettered (1 = no redelivery).
    pub max_attempts: Option<f64>,
    /// Delay before the first redelivery; doubles on every attempt.
    pub retry_delay: Option<f64>,
    /// Upper bound of the redelivery delay.
    pub max_retry_delay: Option<f64>,
    /// Deliveries unsettled at once.
    pub max_in_flight: Option<f64>,
    /// Deliveries handed to JavaScript in one call.
    pub max_batch: Option<f64>,
    /// `"cloudevents"`: every published message must carry valid CloudEvents 1.0 attributes (else
    /// its emit fails with `INVALID_DATA_FORMAT`); other values: no check, as with @sap/cds.
    pub format: Option<String>,
    /// File box (`transport: "file"`, required there).
    pub file: Option<FileOptions>,
    /// Redis (`transport: "redis"`, required there).
    pub redis: Option<RedisOptions>,
    /// MQTT (`transport: "mqtt"`, required there).
    pub mqtt: Option<MqttEngineOptions>,
    /// AMQP 1.0 (`transport: "amqp"`, required there).
    pub amqp: Option<AmqpOptions>,
    /// SAP Event Mesh over HTTP REST (`transport: "rest"`, required there).
    pub rest: Option<RestOptions>,
    /// SAP Event Mesh (AMQP or MQTT over a WebSocket gateway with OAuth2 tokens, management API);
    /// used by the `amqp` and `mqtt` transports when given.
    pub event_mesh: Option<EventMeshOptions>,
}

/// Options of the file box (`native-file-based-messaging`).
#[napi(object)]
#[derive(Debug, Default)]
pub struct FileOptions {
    /// Path of the box file (absolute).
    pub path: String,
    /// Dead-letter box (default `<path>.dead`).
    pub dead_letter_file: Option<String>,
    /// Where malformed lines go (default `<path>.malformed`).
    pub malformed_file: Option<String>,
    /// Longest time between two reads of the box.
    pub interval: Option<f64>,
    /// React to file-change notifications.
    pub watch: Option<bool>,
    /// How long to wait for the box lock.
    pub lock_timeout: Option<f64>,
    /// Age after which a foreign lock is stale.
    pub stale_lock_after: Option<f64>,
    /// Flush every write to disk before an emit resolves.
    pub fsync: Option<bool>,
}

/// Options of the Redis transport (`native-redis-messaging`).
#[napi(object)]
#[derive(Default)]
pub struct RedisOptions {
    /// The broker URL (`redis://` or `rediss://`; never logged).
    pub url: String,
    /// PEM CA certificate to trust for `rediss://` (e.g. `credentials.tls.server_ca`).
    pub ca: Option<String>,
    /// `"pubsub"` (wire-compatible with @sap/cds) or `"streams"` (at-least-once).
    pub mode: Option<String>,
    /// Limit of one connection attempt, and how long an emit waits for a lost connection to come
    /// back before it fails with `CONNECTION_FAILED`.
    pub connect_timeout: Option<f64>,
    /// First reconnect delay; doubles per attempt, jittered.
    pub reconnect_delay: Option<f64>,
    /// Upper bound of the reconnect delay.
    pub max_reconnect_delay: Option<f64>,
    /// Streams: prefix of the stream keys (stream = prefix + topic).
    pub stream_prefix: Option<String>,
    /// Streams: the consumer group (the service's queue name).
    pub group: Option<String>,
    /// Streams: this consumer's name in the group.
    pub consumer: Option<String>,
    /// Streams: `XADD … MAXLEN ~ n` (absent: no trimming).
    pub max_len: Option<f64>,
    /// Streams: idle time after which pending entries of another consumer are taken over.
    pub claim_after: Option<f64>,
    /// Streams: entries fetched per `XREADGROUP`.
    pub read_count: Option<f64>,
    /// Streams: `BLOCK` time of one `XREADGROUP`.
    pub block: Option<f64>,
    /// Streams: where exhausted messages go (default `<prefix><group>:dead-letter`).
    pub dead_letter_stream: Option<String>,
    /// Streams: a new consumer group starts at the beginning of the stream instead of its end.
    pub from_start: Option<bool>,
}

/// Options of the MQTT transport (`native-mqtt-messaging`).
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
    /// MQTT keep-alive (whole seconds on the wire).
    pub keep_alive: Option<f64>,
    /// 0 or 1.
    pub qos: Option<f64>,
    /// PEM certificates to trust for `mqtts://` / `wss://` instead of the system's.
    pub ca: Option<String>,
    /// Verify the broker's TLS certificate.
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
    /// Publish dead letters retained, one topic each (default `true`).
    pub dead_letter_retain: Option<bool>,
    /// Log an error when Mosquitto reports messages dropped by its queue limits (default `true`).
    pub watch_broker_drops: Option<bool>,
    /// How long an emit waits for its confirmation.
    pub publish_timeout: Option<f64>,
    /// First reconnect delay.
    pub reconnect_delay: Option<f64>,
    /// Upper bound of the reconnect delay.
    pub max_reconnect_delay: Option<f64>,
}

/// Options of the AMQP 1.0 transport (`native-amqp-messaging`).
#[napi(object)]
#[derive(Default)]
pub struct AmqpOptions {
    /// The broker URL (`amqp://` or `amqps://`; never logged).
    pub url: String,
    /// Broker profile (`rabbitmq`, `rabbitmq4`, `event-mesh`, `message-queuing`, `activemq`,
    /// `artemis`, `solace`, `azure-service-bus`, `eventter`, `generic`; default `rabbitmq`).
    pub profile: Option<String>,
    /// User (overrides the URL's).
    pub user: Option<String>,
    /// Password (overrides the URL's; never logged).
    pub password: Option<String>,
    /// Virtual host (overrides the URL's path).
    pub vhost: Option<String>,
    /// SASL mechanism `PLAIN`, `ANONYMOUS` or `EXTERNAL` (default: PLAIN with a user, else ANONYMOUS).
    pub sasl: Option<String>,
    /// Extra trusted CA certificates (PEM text).
    pub tls_ca: Option<String>,
    /// Client certificate chain (PEM text).
    pub tls_cert: Option<String>,
    /// Client private key (PEM text).
    pub tls_key: Option<String>,
    /// Verify the broker certificate.
    pub tls_verify: Option<bool>,
    /// TLS server name to verify (default: the URL's host).
    pub tls_servername: Option<String>,
    /// Container id of the connection (default `cds-native-<pid>`).
    pub container_id: Option<String>,
    /// Idle timeout announced to the broker (0 = none).
    pub idle_timeout: Option<f64>,
    /// Limit of one connection attempt.
    pub connect_timeout: Option<f64>,
    /// First reconnect delay.
    pub reconnect_delay: Option<f64>,
    /// Upper bound of the reconnect delay.
    pub max_reconnect_delay: Option<f64>,
    /// Use a connection of its own instead of the shared one of the binding.
    pub dedicated: Option<bool>,
    /// The consuming queue (the service's queue name).
    pub queue: Option<String>,
    /// Create the queue and bind it to the subscribed topics (RabbitMQ).
    pub provision_queue: Option<bool>,
    /// `x-queue-type` for a created queue (`classic`, `quorum`).
    pub queue_type: Option<String>,
    /// `x-dead-letter-exchange` for a created queue.
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key` for a created queue.
    pub dead_letter_routing_key: Option<String>,
    /// The dead-letter queue (RabbitMQ): created with the queue; the CLI's `dead-letters` place.
    pub dead_letter_queue: Option<String>,
    /// Link credit of the receiver (default 2 × maxInFlight).
    pub prefetch: Option<f64>,
    /// 0 = send settled (at-most-once), 1 = wait for the broker's outcome.
    pub qos: Option<f64>,
    /// Mark messages durable.
    pub durable: Option<bool>,
    /// Exchange topics are published to (rabbitmq profiles; default `amq.topic`).
    pub exchange: Option<String>,
    /// Namespace (eventter profile).
    pub namespace: Option<String>,
    /// How long an emit may wait for the broker across reconnects.
    pub send_timeout: Option<f64>,
    /// Generic profile: publish address template with `{topic}`.
    pub publish_address: Option<String>,
    /// Generic profile: consume address template with `{queue}`.
    pub consume_address: Option<String>,
    /// Generic profile: publish through one anonymous sender (default false).
    pub anonymous_sender: Option<bool>,
    /// Generic profile: where the inbound topic is: `to` (default), `subject`, `routing-key`.
    pub topic_from: Option<String>,
    /// Generic profile: outcome for a redelivery (`released`, `modified`; default `modified`).
    pub retry_outcome: Option<String>,
    /// Generic profile: outcome after the last attempt (`rejected`, `released`; default `rejected`).
    pub dead_letter_outcome: Option<String>,
}

/// OAuth2 client credentials: an `oa2` block of the binding as it is, read in Rust by
/// `OAuthClient::from_binding` (both spellings, mutual TLS from `uaa`).
#[napi(object)]
#[derive(Default)]
pub struct OAuthOptions {
    /// The `oa2` block: `clientid`|`client`, `clientsecret`|`secret`, `tokenendpoint`|`endpoint`.
    pub oa2: serde_json::Value,
    /// The binding's `uaa` block (`certificate`, `key`, `certurl`) for mutual TLS.
    pub uaa: Option<serde_json::Value>,
    /// Where `oa2` comes from, for messages (e.g. `messaging[0].oa2`).
    pub source: Option<String>,
    /// Extra CA certificates (PEM) to trust for the token endpoint.
    pub ca: Option<String>,
    /// Subscriber subdomain: replaces the first host label of the token URL.
    pub subdomain: Option<String>,
    /// Tenant id sent as `x-zid`.
    pub zid: Option<String>,
}

impl std::fmt::Debug for OAuthOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthOptions")
            .field("source", &self.source)
            .field("subdomain", &self.subdomain)
            .finish_non_exhaustive()
    }
}

/// SAP Event Mesh: the token for the WebSocket upgrade and, for a consuming service, the
/// management API that creates its queue and subscriptions.
#[napi(object)]
#[derive(Debug, Default)]
pub struct EventMeshOptions {
    /// OAuth2 client of the WebSocket gateway (`messaging[].oa2`): a bearer token on every
    /// (re)connect.
    pub oauth: Option<OAuthOptions>,
    /// `management[0].uri`; with it, the queue and its subscriptions are created on listening.
    pub management_uri: Option<String>,
    /// OAuth2 client of the management API (`management[0].oa2`).
    pub management_oauth: Option<OAuthOptions>,
    /// Base path of the management API (default `/hub/rest/api/v1/management/messaging`).
    pub management_base_path: Option<String>,
    /// Queue configuration (JSON object text) sent when the queue is created (default `{}`).
    pub queue_config: Option<String>,
    /// `false` (multitenancy with @sap/cds's `deployForProvider: false`): the provider gets no
    /// queue — nothing is created or consumed at start; only subscriber tenants get queues, on
    /// their subscribe. Default `true`.
    pub deploy_for_provider: Option<bool>,
}

/// Options of the REST transport, as `srv/enterprise-messaging.js` maps them from the binding.
/// Durations in milliseconds. Secrets are never logged.
#[napi(object)]
#[derive(Default)]
pub struct RestOptions {
    /// The `httprest` entry's `uri`.
    pub uri: String,
    /// The `httprest` entry's token endpoint.
    pub token_endpoint: String,
    /// The `httprest` entry's client id.
    pub client_id: String,
    /// The `httprest` entry's client secret (absent with mutual TLS).
    pub client_secret: Option<String>,
    /// `uaa.certificate` (PEM) for mutual TLS.
    pub certificate: Option<String>,
    /// `uaa.key` (PEM) for mutual TLS.
    pub key: Option<String>,
    /// `x-qos` (0 or 1, default 1).
    pub qos: Option<f64>,
    /// Bound of one HTTP request (default 30 000 ms).
    pub request_timeout: Option<f64>,
    /// `management[0].uri`.
    pub management_uri: String,
    /// Base path of the management API.
    pub management_base_path: String,
    /// `management[0].oa2` token endpoint.
    pub management_token_endpoint: String,
    /// `management[0].oa2` client id.
    pub management_client_id: String,
    /// `management[0].oa2` client secret.
    pub management_client_secret: Option<String>,
    /// The queue.
    pub queue: String,
    /// The queue creation body (JSON), from the `queue` options other than `name`.
    pub queue_config: Option<String>,
    /// `"webhook"` (default) or `"pull"`.
    pub inbound: Option<String>,
    /// The webhook registration body (JSON); absent when the app has no URL.
    pub webhook: Option<String>,
    /// Wait before the webhook is registered (default 5000 ms).
    pub webhook_waiting_period: Option<f64>,
    /// Pull mode: pause after the queue was found empty (default 1000 ms).
    pub pull_interval: Option<f64>,
    /// Retries of one management call on 429/5xx/network errors (default 10).
    pub max_retries: Option<f64>,
    /// `false` (multitenancy with @sap/cds's `deployForProvider: false`): the provider gets no
    /// queue, subscriptions or webhook at start and nothing is pulled; only subscriber tenants get
    /// them, on their subscribe. Default `true`.
    pub deploy_for_provider: Option<bool>,
}

impl std::fmt::Debug for RestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestOptions")
            .field("uri", &self.uri)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}
