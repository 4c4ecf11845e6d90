//! Settings of the AMQP 1.0 transport, parsed from the `url` and the kind's options.

use std::time::Duration;

use super::profile::Profile;
use crate::error::{Error, Result};

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

/// TLS settings (`amqps://`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// Extra trusted CA certificates (PEM). Without it, the system's trust store is used.
    pub ca: Option<String>,
    /// Client certificate chain (PEM), for SASL EXTERNAL or mutual TLS.
    pub cert: Option<String>,
    /// Client private key (PEM).
    pub key: Option<String>,
    /// Verify the broker's certificate and host name (default true).
    pub verify: bool,
    /// Name to verify instead of the host (SNI).
    pub servername: Option<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &self.ca.is_some())
            .field("cert", &self.cert.is_some())
            .field("key", &self.key.as_ref().map(|_| "***"))
            .field("verify", &self.verify)
            .field("servername", &self.servername)
            .finish()
    }
}

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
        let dec = |s: &str| super::profile::percent_decode(s);
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
        })
    }

    /// `host:port` for log lines (never credentials).
    pub fn endpoint(&self) -> String {
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

/// `url` with the password replaced by `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
            _ => url.to_string(),
        },
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
}

impl AmqpConfig {
    /// Checks the values; errors carry `INVALID_CONFIG`.
    pub fn validate(&self) -> Result<()> {
        self.profile.validate_queue(&self.queue.name)?;
        if self.prefetch == 0 {
            return Err(Error::config("prefetch must be at least 1"));
        }
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
            if t.cert.is_some() != t.key.is_some() {
                return Err(Error::config("tls.cert and tls.key must be given together"));
            }
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

/// Jittered exponential back-off: `base · 2^(n-1)` capped at `max`, times a random factor in
/// [0.5, 1.0].
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let d = base.saturating_mul(1u32 << exp).min(max);
    let ms = d.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
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

    #[test]
    fn backoff_is_jittered_and_capped() {
        for _ in 0..50 {
            let d = backoff(Duration::from_millis(100), Duration::from_secs(1), 1);
            assert!((50..=100).contains(&d.as_millis()), "{d:?}");
            let d = backoff(Duration::from_millis(100), Duration::from_secs(1), 10);
            assert!((500..=1000).contains(&d.as_millis()), "{d:?}");
        }
    }
}
