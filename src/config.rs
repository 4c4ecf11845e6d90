//! Engine configuration, validated before anything starts.

use std::sync::Arc;

use crate::error::Result;
use crate::log::Logger;
use crate::policy::RetryPolicy;
use crate::transport::amqp::{config::AmqpConfig, AmqpTransport};
use crate::transport::file::{FileConfig, FileTransport};
use crate::transport::local::LocalTransport;
use crate::transport::mqtt::{MqttConfig, MqttTransport};
use crate::transport::redis::RedisConfig;
use crate::transport::rest::{RestConfig, RestTransport};
use crate::transport::Transport;

/// Which backend an engine talks to, with its settings.
#[derive(Debug, Clone)]
pub enum TransportConfig {
    /// The in-process queue of `native-local-messaging`.
    Local,
    /// The box file of `native-file-based-messaging`.
    File(FileConfig),
    /// Redis pub/sub or streams of `native-redis-messaging`.
    Redis(RedisConfig),
    /// An MQTT 3.1.1 broker of `native-mqtt-messaging`.
    Mqtt(Box<MqttConfig>),
    /// An AMQP 1.0 broker (`native-amqp-messaging`).
    Amqp(Box<AmqpConfig>),
    /// SAP Event Mesh over HTTP REST (`native-enterprise-messaging`, `native-event-mesh`).
    Rest(Box<RestConfig>),
}

impl TransportConfig {
    /// Creates the transport.
    pub fn build(&self, log: &Logger) -> Result<Arc<dyn Transport>> {
        Ok(match self {
            TransportConfig::Local => Arc::new(LocalTransport::new()),
            TransportConfig::File(c) => Arc::new(FileTransport::new(c.clone(), log.clone())?),
            TransportConfig::Redis(c) => crate::transport::redis::build(c.clone(), log.clone())?,
            TransportConfig::Mqtt(c) => Arc::new(MqttTransport::new((**c).clone(), log.clone())?),
            TransportConfig::Amqp(c) => Arc::new(AmqpTransport::new((**c).clone(), log.clone())?),
            TransportConfig::Rest(c) => Arc::new(RestTransport::new((**c).clone(), log.clone())?),
        })
    }
}

/// Everything an engine needs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The service name, used in log lines.
    pub name: String,
    /// Redelivery settings.
    pub policy: RetryPolicy,
    /// Deliveries unsettled at once (≥ 1).
    pub max_in_flight: usize,
    /// Deliveries handed to the handlers in one call (≥ 1).
    pub max_batch: usize,
    /// How long an emit waits until the subscriptions made before it are in effect at the broker
    /// (and until a consumer that is starting has started). The one place this wait is stated.
    pub subscribe_wait: std::time::Duration,
    /// The backend.
    pub transport: TransportConfig,
}

impl EngineConfig {
    /// A configuration with defaults for `transport`.
    pub fn new(name: impl Into<String>, transport: TransportConfig) -> Self {
        EngineConfig {
            name: name.into(),
            policy: RetryPolicy::default(),
            max_in_flight: 100,
            max_batch: 100,
            subscribe_wait: std::time::Duration::from_secs(10),
            transport,
        }
    }

    /// Checks every value; errors carry `INVALID_CONFIG` and name the option.
    pub fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        crate::limits::check(
            "maxInFlight",
            self.max_in_flight,
            crate::limits::MAX_CAPACITY,
        )?;
        crate::limits::check("maxBatch", self.max_batch, crate::limits::MAX_CAPACITY)?;
        match &self.transport {
            TransportConfig::Local => {}
            TransportConfig::File(f) => f.validate()?,
            TransportConfig::Redis(r) => r.validate()?,
            TransportConfig::Mqtt(m) => m.validate()?,
            TransportConfig::Amqp(a) => a.validate()?,
            TransportConfig::Rest(r) => r.validate()?,
        }
        Ok(())
    }
}
