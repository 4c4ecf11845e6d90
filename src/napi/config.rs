//! Options → [`EngineConfig`]. The conversion only *overrides*: it starts from the transport's own
//! config (where every default is stated) and replaces what the options give, checking each
//! number on the way. Enumerations and ranges are checked here or by the transport's `validate`,
//! never in JavaScript.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::options::{
    AmqpOptions, EngineOptions, EventMeshOptions, FileOptions, MqttEngineOptions, OAuthOptions,
    RedisOptions, RestOptions,
};
use crate::config::{EngineConfig, TransportConfig};
use crate::error::{Error, Result};
use crate::transport::amqp::config::{AmqpConfig, ConnSettings, Sasl};
use crate::transport::amqp::profile::{FailOutcome, Profile, Templates, TopicSource};
use crate::transport::file::FileConfig;
use crate::transport::mqtt::MqttConfig;
use crate::transport::redis::{RedisConfig, RedisMode, StreamsConfig};
use crate::transport::rest::{Api, InboundMode, ManagementConfig, RestConfig};
use crate::transport::support::em_management::Management;
use crate::transport::support::http::{HttpClient, HttpTls};
use crate::transport::support::oauth::{OAuthClient, Tenant, TokenSource};

/// A non-negative whole number of at most 10¹², or `INVALID_CONFIG` naming the option.
fn count(name: &str, x: f64) -> Result<u64> {
    if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= 1e12 {
        Ok(x as u64)
    } else {
        Err(Error::config(format!(
            "{name} must be a non-negative whole number, got {x}"
        )))
    }
}

fn small(name: &str, x: f64) -> Result<u32> {
    let n = count(name, x)?;
    u32::try_from(n).map_err(|_| Error::config(format!("{name} is too large: {n}")))
}

/// Overrides `slot` (milliseconds) when the option is given.
fn ms(slot: &mut Duration, name: &str, v: Option<f64>) -> Result<()> {
    if let Some(x) = v {
        *slot = Duration::from_millis(count(name, x)?);
    }
    Ok(())
}

/// Overrides `slot` (a count that fits `u32`) when the option is given.
fn num(slot: &mut u32, name: &str, v: Option<f64>) -> Result<()> {
    if let Some(x) = v {
        *slot = small(name, x)?;
    }
    Ok(())
}

/// Overrides `slot` (a count that fits `usize`) when the option is given.
fn size(slot: &mut usize, name: &str, v: Option<f64>) -> Result<()> {
    if let Some(x) = v {
        *slot = small(name, x)? as usize;
    }
    Ok(())
}

/// Overrides `slot` when the option is given.
fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

fn missing(transport: &str, example: &str) -> Error {
    Error::config(format!(
        "transport '{transport}' needs its options ({transport}: {{ {example} }})"
    ))
}

/// Converts the options of one engine.
pub fn engine_config(mut o: EngineOptions) -> Result<EngineConfig> {
    let mut c = EngineConfig::new(
        o.name.take().unwrap_or_else(|| "messaging".into()),
        TransportConfig::Local,
    );
    num(&mut c.policy.max_attempts, "maxAttempts", o.max_attempts)?;
    ms(&mut c.policy.retry_delay, "retryDelay", o.retry_delay)?;
    ms(
        &mut c.policy.max_retry_delay,
        "maxRetryDelay",
        o.max_retry_delay,
    )?;
    size(&mut c.max_in_flight, "maxInFlight", o.max_in_flight)?;
    size(&mut c.max_batch, "maxBatch", o.max_batch)?;
    c.transport = match o.transport.as_str() {
        "local" => TransportConfig::Local,
        "file" => {
            TransportConfig::File(file(o.file.take().ok_or_else(|| missing("file", "path"))?)?)
        }
        "redis" => TransportConfig::Redis(redis(
            o.redis.take().ok_or_else(|| missing("redis", "url"))?,
        )?),
        "mqtt" => TransportConfig::Mqtt(Box::new(mqtt(
            o.mqtt
                .take()
                .ok_or_else(|| missing("mqtt", "url, clientId"))?,
            o.event_mesh.as_ref(),
        )?)),
        "amqp" => TransportConfig::Amqp(Box::new(amqp(
            o.amqp.take().ok_or_else(|| missing("amqp", "url"))?,
            c.max_in_flight,
            o.event_mesh.as_ref(),
        )?)),
        "rest" => TransportConfig::Rest(Box::new(rest(
            o.rest
                .take()
                .ok_or_else(|| missing("rest", "uri, tokenEndpoint, clientId, queue"))?,
        )?)),
        other => {
            return Err(Error::config(format!(
                "unknown transport '{other}' (expected 'local', 'file', 'redis', 'mqtt', 'amqp' or 'rest')"
            )))
        }
    };
    Ok(c)
}

fn file(o: FileOptions) -> Result<FileConfig> {
    if o.path.is_empty() {
        return Err(Error::config(
            "file must be the path of the box file, e.g. \"~/.cds-msg-box\"",
        ));
    }
    let mut f = FileConfig::new(PathBuf::from(o.path));
    set(
        &mut f.dead_letter_path,
        o.dead_letter_file.map(PathBuf::from),
    );
    set(&mut f.malformed_path, o.malformed_file.map(PathBuf::from));
    ms(&mut f.poll_interval, "interval", o.interval)?;
    set(&mut f.watch, o.watch);
    ms(&mut f.lock_timeout, "lockTimeout", o.lock_timeout)?;
    ms(
        &mut f.stale_lock_after,
        "staleLockAfter",
        o.stale_lock_after,
    )?;
    set(&mut f.fsync, o.fsync);
    Ok(f)
}

/// The Redis options → [`RedisConfig`] (also used by the CLI, [`super::ops`]).
pub(super) fn redis(o: RedisOptions) -> Result<RedisConfig> {
    if o.url.trim().is_empty() {
        return Err(Error::config(
            "url must be the Redis URL, e.g. \"redis://127.0.0.1:6379\"",
        ));
    }
    let mut c = RedisConfig::new(o.url);
    c.ca = o.ca.filter(|c| !c.trim().is_empty());
    match o.mode.as_deref() {
        None => {}
        Some("pubsub") => c.mode = RedisMode::PubSub,
        Some("streams") => c.mode = RedisMode::Streams,
        Some(other) => {
            return Err(Error::config(format!(
                "mode must be 'pubsub' or 'streams', got '{other}'"
            )))
        }
    }
    ms(&mut c.connect_timeout, "connectTimeout", o.connect_timeout)?;
    ms(&mut c.reconnect.min, "reconnectDelay", o.reconnect_delay)?;
    ms(
        &mut c.reconnect.max,
        "maxReconnectDelay",
        o.max_reconnect_delay,
    )?;
    if o.stream_prefix.is_some() || o.group.is_some() {
        // the dead-letter stream's default follows prefix and group
        let prefix = o.stream_prefix.unwrap_or_else(|| c.streams.prefix.clone());
        let group = o.group.unwrap_or_else(|| c.streams.group.clone());
        c.streams = StreamsConfig::new(prefix, group);
    }
    let s = &mut c.streams;
    set(&mut s.consumer, o.consumer);
    set(&mut s.dead_letter_stream, o.dead_letter_stream);
    if let Some(x) = o.max_len {
        s.max_len = Some(count("maxLen", x)?);
    }
    ms(&mut s.claim_after, "claimAfter", o.claim_after)?;
    size(&mut s.read_count, "readCount", o.read_count)?;
    ms(&mut s.block, "block", o.block)?;
    set(&mut s.from_start, o.from_start);
    Ok(c)
}

/// The MQTT options → [`MqttConfig`] (also used by the CLI's probe and tail, [`super::ops`]).
pub(super) fn mqtt(o: MqttEngineOptions, em: Option<&EventMeshOptions>) -> Result<MqttConfig> {
    let mut m = MqttConfig::new(&o.url, o.client_id)?;
    m.username = o.username.filter(|u| !u.is_empty());
    m.password = o.password;
    if let Some(x) = o.keep_alive {
        m.keep_alive = Duration::from_secs(count("keepAlive", x)?.div_ceil(1000));
    }
    if let Some(x) = o.qos {
        m.qos = match count("qos", x)? {
            q @ (0 | 1) => q as u8,
            q => {
                return Err(Error::config(format!(
                    "qos must be 0 or 1, got {q} (MQTT QoS 2 is not supported)"
                )))
            }
        };
    }
    m.tls.ca = o.ca;
    set(&mut m.tls.verify, o.reject_unauthorized);
    m.tls.cert = o.cert;
    m.tls.key = o.key;
    m.token = o.token.filter(|t| !t.is_empty());
    m.tokens = ws_tokens(em)?;
    m.shared_group = o.shared_group;
    set(&mut m.dead_letter_topic, o.dead_letter_topic);
    set(&mut m.dead_letter_retain, o.dead_letter_retain);
    set(&mut m.watch_broker_drops, o.watch_broker_drops);
    ms(&mut m.publish_timeout, "publishTimeout", o.publish_timeout)?;
    ms(&mut m.reconnect_delay, "reconnectDelay", o.reconnect_delay)?;
    ms(
        &mut m.max_reconnect_delay,
        "maxReconnectDelay",
        o.max_reconnect_delay,
    )?;
    Ok(m)
}

/// The AMQP options → [`AmqpConfig`] (also used by the CLI's probe and tail, [`super::ops`]).
pub(super) fn amqp(
    o: AmqpOptions,
    max_in_flight: usize,
    em: Option<&EventMeshOptions>,
) -> Result<AmqpConfig> {
    if o.url.is_empty() {
        return Err(Error::config(
            "url must be the broker URL, e.g. \"amqp://guest:guest@localhost:5672\"",
        ));
    }
    let container_id = o
        .container_id
        .clone()
        .unwrap_or_else(|| format!("cds-native-{}", std::process::id()));
    let mut conn = if o.url.starts_with("ws://") || o.url.starts_with("wss://") {
        // AMQP over the WebSocket gateway, with the token of `eventMesh.oauth`.
        crate::transport::amqp::ws::conn_settings(&o.url, &container_id, ws_tokens(em)?)?
    } else {
        ConnSettings::from_url(&o.url, &container_id)?
    };
    if let Some(v) = &o.vhost {
        conn.vhost = Some(v.clone()).filter(|v| !v.is_empty());
    }
    credentials(&mut conn, &o)?;
    tls(&mut conn, &o)?;
    ms(&mut conn.idle_timeout, "idleTimeout", o.idle_timeout)?;
    ms(
        &mut conn.connect_timeout,
        "connectTimeout",
        o.connect_timeout,
    )?;
    ms(
        &mut conn.reconnect_delay,
        "reconnectDelay",
        o.reconnect_delay,
    )?;
    ms(
        &mut conn.max_reconnect_delay,
        "maxReconnectDelay",
        o.max_reconnect_delay,
    )?;
    set(&mut conn.dedicated, o.dedicated);
    let profile = Profile::by_name(
        o.profile.as_deref().unwrap_or(AmqpConfig::DEFAULT_PROFILE),
        o.namespace.as_deref(),
        o.exchange.as_deref(),
        templates(&o)?,
    )?;
    let queue = o.queue.unwrap_or_else(|| AmqpConfig::DEFAULT_QUEUE.into());
    let mut c = AmqpConfig::new(conn, profile, queue);
    set(&mut c.queue.provision, o.provision_queue);
    c.queue.queue_type = o.queue_type;
    c.queue.dead_letter_exchange = o.dead_letter_exchange;
    c.queue.dead_letter_routing_key = o.dead_letter_routing_key;
    c.queue.dead_letter_queue = o.dead_letter_queue.filter(|q| !q.is_empty());
    // the receiver's credit follows the engine's in-flight limit unless it is set
    c.prefetch = AmqpConfig::prefetch_for(max_in_flight);
    num(&mut c.prefetch, "prefetch", o.prefetch)?;
    if let Some(x) = o.qos {
        c.qos = u8::try_from(small("qos", x)?).map_err(|_| Error::config("qos must be 0 or 1"))?;
    }
    ms(&mut c.send_timeout, "sendTimeout", o.send_timeout)?;
    set(&mut c.durable, o.durable);
    c.management = management(em)?;
    set(
        &mut c.deploy_for_provider,
        em.and_then(|e| e.deploy_for_provider),
    );
    Ok(c)
}

/// The transport configuration of `transport: "rest"` (SAP Event Mesh over HTTP REST).
fn rest(o: RestOptions) -> Result<RestConfig> {
    let tls = HttpTls {
        ca: None,
        cert: o.certificate.clone(),
        key: o.key.clone(),
    };
    let client = |token_url: String, client_id: String, secret: Option<String>| OAuthClient {
        token_url,
        client_id,
        client_secret: secret.filter(|s| !s.is_empty()),
        tls: tls.clone(),
    };
    let queue_config = match o.queue_config.as_deref() {
        None => serde_json::json!({}),
        Some(s) => serde_json::from_str(s)
            .map_err(|e| Error::config(format!("the queue options are not valid JSON: {e}")))?,
    };
    let inbound = match o.inbound.as_deref().unwrap_or("webhook") {
        "webhook" => {
            let mut waiting_period = Duration::from_millis(5000);
            ms(
                &mut waiting_period,
                "webhook.waitingPeriod",
                o.webhook_waiting_period,
            )?;
            InboundMode::Webhook {
                registration: o.webhook,
                waiting_period,
            }
        }
        "pull" => {
            let mut interval = Duration::from_millis(1000);
            ms(&mut interval, "pull.interval", o.pull_interval)?;
            InboundMode::Pull { interval }
        }
        other => {
            return Err(Error::config(format!(
                "inbound must be 'webhook' or 'pull', got '{other}'"
            )))
        }
    };
    let mut qos = 1u32;
    num(&mut qos, "qos", o.qos)?;
    let qos = u8::try_from(qos)
        .ok()
        .filter(|q| *q <= 1)
        .ok_or_else(|| Error::config(format!("qos must be 0 or 1, got {qos}")))?;
    let mut request_timeout = Duration::from_secs(30);
    ms(&mut request_timeout, "requestTimeout", o.request_timeout)?;
    let mut max_retries = 10;
    num(&mut max_retries, "maxRetries", o.max_retries)?;
    Ok(RestConfig {
        uri: o.uri,
        oauth: client(o.token_endpoint, o.client_id, o.client_secret),
        qos,
        request_timeout,
        management: ManagementConfig {
            uri: o.management_uri,
            base_path: o.management_base_path,
            oauth: client(
                o.management_token_endpoint,
                o.management_client_id,
                o.management_client_secret,
            ),
        },
        queue: o.queue,
        queue_config,
        inbound,
        max_retries,
        deploy_for_provider: o.deploy_for_provider.unwrap_or(true),
    })
}

/// The OAuth2 client of `o` (with `ca` added to its trust).
fn oauth_client(o: &OAuthOptions) -> Result<OAuthClient> {
    let mut c = OAuthClient::from_binding(
        &o.oa2,
        o.uaa.as_ref(),
        o.source.as_deref().unwrap_or("oauth"),
    )?;
    c.tls.ca = o.ca.clone();
    Ok(c)
}

/// The process-wide token source of `o`.
fn tokens(o: &OAuthOptions) -> Result<Arc<TokenSource>> {
    TokenSource::shared(
        &oauth_client(o)?,
        &Tenant {
            subdomain: o.subdomain.clone(),
            zid: o.zid.clone(),
        },
    )
}

/// The token source of the WebSocket gateway (`eventMesh.oauth`), if any.
fn ws_tokens(em: Option<&EventMeshOptions>) -> Result<Option<Arc<TokenSource>>> {
    em.and_then(|e| e.oauth.as_ref()).map(tokens).transpose()
}

/// The management API client, when `eventMesh.managementUri` is given.
pub(super) fn management(em: Option<&EventMeshOptions>) -> Result<Option<Management>> {
    let Some(em) = em else { return Ok(None) };
    let Some(uri) = em.management_uri.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let oauth = em
        .management_oauth
        .as_ref()
        .ok_or_else(|| Error::config("managementOauth is required with managementUri"))?;
    Management::new(
        uri,
        em.management_base_path.as_deref(),
        tokens(oauth)?,
        em.queue_config.clone(),
        &oauth_client(oauth)?.tls,
    )
    .map(Some)
}

/// The REST API of the `httprest` entry `uri` with the tokens of `oauth` (a subscriber tenant's
/// with its `subdomain`), and the binding's token URL (without the subdomain).
pub(super) fn rest_api(uri: &str, oauth: &OAuthOptions) -> Result<(Api, String)> {
    let client = oauth_client(oauth)?;
    let http = Arc::new(HttpClient::new(&client.tls, Duration::from_secs(30))?);
    Ok((
        Api::with_tokens(uri, tokens(oauth)?, http),
        client.token_url,
    ))
}

/// `user` / `password` override the URL's; `sasl` picks the mechanism.
fn credentials(conn: &mut ConnSettings, o: &AmqpOptions) -> Result<()> {
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
    Ok(())
}

fn tls(conn: &mut ConnSettings, o: &AmqpOptions) -> Result<()> {
    let given = o.tls_ca.is_some()
        || o.tls_cert.is_some()
        || o.tls_key.is_some()
        || o.tls_verify.is_some()
        || o.tls_servername.is_some();
    match conn.tls.as_mut() {
        Some(t) => {
            t.ca = o.tls_ca.clone();
            t.cert = o.tls_cert.clone();
            t.key = o.tls_key.clone();
            set(&mut t.verify, o.tls_verify);
            t.servername = o.tls_servername.clone();
        }
        None if given => return Err(Error::config("tls options need an amqps:// url")),
        None => {}
    }
    Ok(())
}

/// The generic profile's address templates (both or neither).
fn templates(o: &AmqpOptions) -> Result<Option<Templates>> {
    let (Some(p), Some(c)) = (&o.publish_address, &o.consume_address) else {
        if o.publish_address.is_some() || o.consume_address.is_some() {
            return Err(Error::config(
                "publishAddress and consumeAddress must be given together",
            ));
        }
        return Ok(None);
    };
    Ok(Some(Templates {
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
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RetryPolicy;

    #[test]
    fn absent_options_keep_the_transports_defaults() {
        let c = engine_config(EngineOptions {
            transport: "file".into(),
            file: Some(FileOptions {
                path: "/tmp/box".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.policy, RetryPolicy::default());
        let TransportConfig::File(f) = c.transport else {
            panic!("not a file config")
        };
        let d = FileConfig::new("/tmp/box");
        assert_eq!(
            (
                f.poll_interval,
                f.watch,
                f.lock_timeout,
                f.stale_lock_after,
                f.fsync
            ),
            (
                d.poll_interval,
                d.watch,
                d.lock_timeout,
                d.stale_lock_after,
                d.fsync
            )
        );
    }

    #[test]
    fn given_options_override() {
        let c = engine_config(EngineOptions {
            transport: "redis".into(),
            max_attempts: Some(7.0),
            redis: Some(RedisOptions {
                url: "redis://127.0.0.1:6379".into(),
                group: Some("app/0000".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.policy.max_attempts, 7);
        let TransportConfig::Redis(r) = c.transport else {
            panic!("not a redis config")
        };
        assert_eq!(r.streams.prefix, "cds:");
        assert_eq!(r.streams.dead_letter_stream, "cds:app/0000:dead-letter");
    }

    #[test]
    fn a_transport_without_its_options_names_them() {
        let err = engine_config(EngineOptions {
            transport: "mqtt".into(),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(
            err.message.contains("mqtt: { url, clientId }"),
            "{}",
            err.message
        );
    }

    #[test]
    fn numbers_are_checked() {
        let err = engine_config(EngineOptions {
            transport: "local".into(),
            max_batch: Some(1.5),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.message.contains("maxBatch"), "{}", err.message);
    }
}
