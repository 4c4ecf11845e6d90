//! Settings of the AMQP 1.0 transport, parsed from the `url` and the kind's options.

use std::time::Duration;

use super::profile::Profile;
use crate::error::{Error, Result};
use crate::transport::support::backoff::Backoff;
use crate::transport::support::url::{percent_decode, redact};

/// SASL mechanism.
#[derive(Clone, PartialEq, Eq)]
pub enum Sasl {
    /// `ANONYMOUS`.
    Anonymous,
    /// `PLAIN` with user and password.
    Plain {
        /// User name.
        user: String,
        /// Password (never logged).
        password: String,
    },
    /// `EXTERNAL` (identity from the TLS client certificate).
    External,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sasl::Anonymous => f.write_str("ANONYMOUS"),
            Sasl::Plain { user, .. } => write!(f, "PLAIN({user}, ***)"),
            Sasl::External => f.write_str("EXTERNAL"),
        }
    }
}

/// TLS settings of an `amqps://` connection (`tls.ca`, `tls.cert`, `tls.key`, `tls.verify`,
/// `tls.servername`).
pub use crate::transport::support::tls::TlsOptions as Tls;

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// `Some` for `amqps://`.
    pub tls: Option<Tls>,
    /// Virtual host (RabbitMQ); sent as `vhost:<name>` in the open frame's hostname.
    pub vhost: Option<String>,
    /// SASL mechanism.
    pub sasl: Sasl,
    /// Container id of the connection.
    pub container_id: String,
    /// Idle timeout announced to the broker (heartbeats every half of it).
    pub idle_timeout: Duration,
    /// How long one connection attempt may take (TCP, TLS, SASL, open).
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt, with jitter.
    pub reconnect_delay: Duration,
    /// Upper bound of the reconnect delay.
    pub max_reconnect_delay: Duration,
    /// Use a connection of its own instead of sharing one per binding.
    pub dedicated: bool,
    /// `Some` for `ws://`/`wss://`: AMQP over a WebSocket gateway (see [`super::ws`]).
    pub ws: Option<super::ws::WsSettings>,
}

impl ConnSettings {
    /// Parses `amqp[s]://[user[:password]@]host[:port][/vhost]`; credentials in the URL override
    /// none given separately.
    pub fn from_url(url: &str, container_id: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| {
            Error::config(format!(
                "url must look like amqp://user:password@host:5672 ({e}): {}",
                redact(url)
            ))
        })?;
        let tls = match parsed.scheme() {
            "amqp" => None,
            "amqps" => Some(Tls {
                verify: true,
                ..Tls::default()
            }),
            other => {
                return Err(Error::config(format!(
                    "url scheme must be amqp or amqps, got '{other}'"
                )))
            }
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::config(format!("url has no host: {}", redact(url))))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed
            .port()
            .unwrap_or(if tls.is_some() { 5671 } else { 5672 });
        let dec = |s: &str| percent_decode(s);
        let sasl = if parsed.username().is_empty() {
            Sasl::Anonymous
        } else {
            Sasl::Plain {
                user: dec(parsed.username()),
                password: parsed.password().map(dec).unwrap_or_default(),
            }
        };
        let path = parsed.path().trim_start_matches('/');
        let vhost = if path.is_empty() {
            None
        } else {
            Some(dec(path))
        };
        Ok(ConnSettings {
            host,
            port,
            tls,
            vhost,
            sasl,
            container_id: container_id.to_string(),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            reconnect_delay: Duration::from_millis(200),
            max_reconnect_delay: Duration::from_secs(30),
            dedicated: false,
            ws: None,
        })
    }

    /// The reconnect back-off (`reconnectDelay` … `maxReconnectDelay`).
    pub fn backoff(&self) -> Backoff {
        Backoff {
            min: self.reconnect_delay,
            max: self.max_reconnect_delay,
        }
    }

    /// `host:port` for log lines (never credentials).
    pub fn endpoint(&self) -> String {
        if let Some(w) = &self.ws {
            return crate::transport::support::http::shown_url(&w.url);
        }
        format!(
            "{}://{}:{}",
            if self.tls.is_some() { "amqps" } else { "amqp" },
            self.host,
            self.port
        )
    }

    /// The key under which connections are shared: everything that makes a connection different.
    pub fn share_key(&self) -> String {
        format!(
            "{:?}|{:?}|{}",
            self,
            self.sasl_secret_hash(),
            self.container_id
        )
    }

    fn sasl_secret_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        if let Sasl::Plain { password, .. } = &self.sasl {
            password.hash(&mut h);
        }
        h.finish()
    }
}

/// Queue settings of a consuming service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Queue name.
    pub name: String,
    /// Create the queue if absent and bind it to every subscribed topic (RabbitMQ).
    pub provision: bool,
    /// `x-queue-type` when the queue is created (`classic`, `quorum`).
    pub queue_type: Option<String>,
    /// `x-dead-letter-exchange` when the queue is created.
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key` when the queue is created.
    pub dead_letter_routing_key: Option<String>,
    /// The queue dead letters end up in (RabbitMQ): created with the queue, and where
    /// `cds-native-messaging dead-letters` looks. Without `dead_letter_exchange` the queue's
    /// dead letters are routed straight into it (default exchange, routing key = its name).
    pub dead_letter_queue: Option<String>,
}

impl QueueConfig {
    /// The `x-dead-letter-exchange` and `x-dead-letter-routing-key` a created queue gets: as
    /// configured, else (with a dead-letter queue) the default exchange and the dead-letter
    /// queue's name.
    pub fn dead_letter_args(&self) -> (Option<&str>, Option<&str>) {
        match (&self.dead_letter_exchange, &self.dead_letter_queue) {
            (None, Some(q)) => (Some(""), Some(q.as_str())),
            (x, _) => (x.as_deref(), self.dead_letter_routing_key.as_deref()),
        }
    }
}

/// Settings of the AMQP 1.0 transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// Connection.
    pub conn: ConnSettings,
    /// Broker profile.
    pub profile: Profile,
    /// The consuming queue.
    pub queue: QueueConfig,
    /// Link credit of the receiver: messages the broker may send ahead (manual credit).
    pub prefetch: u32,
    /// `0`: send pre-settled (at-most-once); `1` (default): wait for the broker's outcome.
    pub qos: u8,
    /// How long an emit may wait for the broker (including reconnects) before it fails.
    pub send_timeout: Duration,
    /// Mark outbound messages durable (`header.durable`).
    pub durable: bool,
    /// SAP Event Mesh management API: creates the queue and its subscriptions (see
    /// [`crate::transport::support::em_management`]).
    pub management: Option<crate::transport::support::em_management::Management>,
    /// `false` (SAP Event Mesh multitenancy with `deployForProvider: false`): this app has no
    /// queue of its own — none is created, bound or consumed; only subscriber tenants get queues
    /// (on their subscribe, outside this transport). Emits are not affected.
    pub deploy_for_provider: bool,
}

impl AmqpConfig {
    /// The broker profile when none is configured.
    pub const DEFAULT_PROFILE: &'static str = "rabbitmq";
    /// The consuming queue when none is configured (the JS layer normally derives one from the
    /// app's id, as @sap/cds does).
    pub const DEFAULT_QUEUE: &'static str = "CAP.0000";

    /// The receiver's link credit for an engine that keeps at most `max_in_flight` deliveries in
    /// its handlers: twice that, so the next batch is already on its way.
    pub fn prefetch_for(max_in_flight: usize) -> u32 {
        u32::try_from(max_in_flight.saturating_mul(2)).unwrap_or(u32::MAX)
    }

    /// The defaults around a connection, a profile and a queue: the queue is provisioned, prefetch
    /// 200 (2 × the engine's default `maxInFlight`), qos 1, emits wait up to 30 s, messages durable.
    pub fn new(conn: ConnSettings, profile: Profile, queue: impl Into<String>) -> Self {
        // RabbitMQ provisioning speaks AMQP 0-9-1 to the broker's port: not through a WS gateway.
        let provision = conn.ws.is_none();
        AmqpConfig {
            conn,
            profile,
            queue: QueueConfig {
                name: queue.into(),
                provision,
                queue_type: None,
                dead_letter_exchange: None,
                dead_letter_routing_key: None,
                dead_letter_queue: None,
            },
            prefetch: 200,
            qos: 1,
            send_timeout: Duration::from_secs(30),
            durable: true,
            management: None,
            deploy_for_provider: true,
        }
    }

    /// Checks the values; errors carry `INVALID_CONFIG`.
    pub fn validate(&self) -> Result<()> {
        self.profile.validate_queue(&self.queue.name)?;
        crate::limits::check(
            "prefetch",
            self.prefetch as usize,
            crate::limits::MAX_PREFETCH,
        )?;
        if self.qos > 1 {
            return Err(Error::config("qos must be 0 (settled) or 1 (unsettled)"));
        }
        if self.conn.container_id.is_empty() {
            return Err(Error::config("containerId must not be empty"));
        }
        if self.conn.sasl == Sasl::External && self.conn.tls.is_none() {
            return Err(Error::config(
                "sasl 'EXTERNAL' needs an amqps:// url with a client certificate (tls.cert, tls.key)",
            ));
        }
        if let Some(t) = &self.conn.tls {
            t.validate("tls.")?;
        }
        if self.conn.idle_timeout < Duration::from_millis(1000) && !self.conn.idle_timeout.is_zero()
        {
            return Err(Error::config(
                "idleTimeout must be 0 (none) or at least 1000 ms",
            ));
        }
        if self.conn.max_reconnect_delay < self.conn.reconnect_delay {
            return Err(Error::config(
                "maxReconnectDelay must not be smaller than reconnectDelay",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_with_credentials_port_and_vhost() {
        let c =
            ConnSettings::from_url("amqp://gu%40st:p%3Ass@localhost:5673/my%2Fvh", "c1").unwrap();
        assert_eq!(c.host, "localhost");
        assert_eq!(c.port, 5673);
        assert_eq!(c.vhost.as_deref(), Some("my/vh"));
        assert_eq!(
            c.sasl,
            Sasl::Plain {
                user: "gu@st".into(),
                password: "p:ss".into()
            }
        );
        assert!(c.tls.is_none());
        let s = ConnSettings::from_url("amqps://broker.example", "c1").unwrap();
        assert_eq!(s.port, 5671);
        assert!(s.tls.as_ref().unwrap().verify);
        assert_eq!(s.sasl, Sasl::Anonymous);
        assert!(ConnSettings::from_url("http://x", "c").is_err());
        assert!(ConnSettings::from_url("not a url", "c").is_err());
    }

    #[test]
    fn secrets_never_show() {
        let c = ConnSettings::from_url("amqp://u:secret@h:1", "c").unwrap();
        assert!(!format!("{c:?}").contains("secret"));
        assert!(!c.endpoint().contains("secret"));
        assert!(!redact("amqp://u:secret@h:1").contains("secret"));
        assert!(!redact("amqp://u:secret@h:x y").contains("secret"));
        let e = ConnSettings::from_url("amqp://u:secret@:99999", "c").unwrap_err();
        assert!(!e.message.contains("secret"), "{}", e.message);
        let t = Tls {
            key: Some("PRIVATE".into()),
            ..Tls::default()
        };
        assert!(!format!("{t:?}").contains("PRIVATE"));
    }
}
