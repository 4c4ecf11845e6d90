//! Settings of the MQTT transport, their validation and the connection settings derived from them.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;

use super::address::Endpoint;
use super::conn::ConnSettings;
use super::topic;
use crate::error::{Error, Result};
use crate::transport::support::tls::TlsOptions;

/// Settings of the MQTT transport.
#[derive(Clone)]
pub struct MqttConfig {
    /// The broker.
    pub endpoint: Endpoint,
    /// User name (overrides the URL's).
    pub username: Option<String>,
    /// Password (overrides the URL's).
    pub password: Option<String>,
    /// Stable client id of the consumer's persistent session.
    pub client_id: String,
    /// MQTT keep-alive (whole seconds, 1 … 65535).
    pub keep_alive: Duration,
    /// Quality of service for emits and subscriptions: 0 or 1.
    pub qos: u8,
    /// TLS settings for `mqtts://` and `wss://`.
    pub tls: TlsOptions,
    /// OAuth bearer token for the WebSocket upgrade request.
    pub token: Option<String>,
    /// OAuth2 token source for the WebSocket upgrade (a fresh token on every reconnect).
    pub tokens: Option<Arc<crate::transport::support::oauth::TokenSource>>,
    /// Shared-subscription group (`$share/<group>/…`).
    pub shared_group: Option<String>,
    /// Base topic of dead letters: `<dead_letter_topic>/<original topic>/<dead-letter id>`.
    pub dead_letter_topic: String,
    /// Publish dead letters retained, so the broker keeps them until an operator removes them
    /// (`cds-native-messaging dead-letters`); off for brokers without retained messages.
    pub dead_letter_retain: bool,
    /// Subscribe the consumer to Mosquitto's `$SYS/broker/publish/messages/dropped` and log an
    /// error when the broker dropped messages because of its queue limits (off for brokers that
    /// have no such topic or may refuse `$SYS` subscriptions).
    pub watch_broker_drops: bool,
    /// How long an emit may wait for its confirmation.
    pub publish_timeout: Duration,
    /// First reconnect delay.
    pub reconnect_delay: Duration,
    /// Upper bound of the reconnect delay.
    pub max_reconnect_delay: Duration,
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("client_id", &self.client_id)
            .field("keep_alive", &self.keep_alive)
            .field("qos", &self.qos)
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("shared_group", &self.shared_group)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("dead_letter_retain", &self.dead_letter_retain)
            .field("watch_broker_drops", &self.watch_broker_drops)
            .field("publish_timeout", &self.publish_timeout)
            .finish()
    }
}

impl MqttConfig {
    /// Defaults for the broker at `url` and the consumer session `client_id`.
    pub fn new(url: &str, client_id: impl Into<String>) -> Result<Self> {
        let client_id = client_id.into();
        Ok(MqttConfig {
            endpoint: Endpoint::parse(url)?,
            username: None,
            password: None,
            dead_letter_topic: format!("dead-letter/{client_id}"),
            dead_letter_retain: true,
            watch_broker_drops: true,
            client_id,
            keep_alive: Duration::from_secs(30),
            qos: 1,
            tls: TlsOptions {
                verify: true,
                ..Default::default()
            },
            token: None,
            tokens: None,
            shared_group: None,
            publish_timeout: Duration::from_secs(30),
            reconnect_delay: Duration::from_millis(250),
            max_reconnect_delay: Duration::from_secs(10),
        })
    }

    /// Checks every value; errors carry `INVALID_CONFIG` and name the option.
    pub fn validate(&self) -> Result<()> {
        if self.client_id.is_empty() || self.client_id.len() > 65_535 {
            return Err(Error::config(
                "clientId must be a non-empty string (it names the persistent session)",
            ));
        }
        if self.qos > 1 {
            return Err(Error::config(format!(
                "qos must be 0 or 1, got {} (MQTT QoS 2 is not supported)",
                self.qos
            )));
        }
        let ka = self.keep_alive.as_secs();
        if !(1..=65_535).contains(&ka) {
            return Err(Error::config(
                "keepAlive must be between 1000 and 65535000 ms",
            ));
        }
        if let Some(g) = &self.shared_group {
            if !topic::valid_group(g) {
                return Err(Error::config(format!(
                    "sharedGroup '{g}' is not valid: it must be non-empty and contain no '/', '+' or '#'"
                )));
            }
        }
        if let Some(why) = topic::publish_problem(&self.dead_letter_topic) {
            return Err(Error::config(format!(
                "deadLetterTopic '{}' is not valid: {why}",
                self.dead_letter_topic
            )));
        }
        if self.publish_timeout.is_zero() {
            return Err(Error::config("publishTimeout must be at least 1 ms"));
        }
        if self.reconnect_delay.is_zero() || self.max_reconnect_delay < self.reconnect_delay {
            return Err(Error::config(
                "reconnectDelay must be at least 1 ms and not larger than maxReconnectDelay",
            ));
        }
        if self.tokens.is_some() && !self.endpoint.scheme.is_websocket() {
            return Err(Error::config(
                "oauth tokens are sent on the WebSocket upgrade; use a ws:// or wss:// url with them",
            ));
        }
        if let Some(token) = &self.token {
            if !self.endpoint.scheme.is_websocket() {
                return Err(Error::config(
                    "token is sent on the WebSocket upgrade; use a ws:// or wss:// url with it",
                ));
            }
            if http::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                return Err(Error::config(
                    "token contains characters that are not allowed in an HTTP header",
                ));
            }
        }
        Ok(())
    }

    pub(super) fn qos(&self) -> QoS {
        if self.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    pub(super) fn settings(&self, tls: Option<Arc<rustls::ClientConfig>>) -> ConnSettings {
        ConnSettings {
            role: "consumer",
            endpoint: self.endpoint.clone(),
            client_id: self.client_id.clone(),
            clean_session: false,
            manual_acks: true,
            keep_alive: self.keep_alive,
            username: self
                .username
                .clone()
                .or_else(|| self.endpoint.username.clone()),
            password: self
                .password
                .clone()
                .or_else(|| self.endpoint.password.clone()),
            tls,
            token: self.token.clone(),
            bearer: self.tokens.clone().map(super::oauth::Bearer::new),
            window: 64,
            extra_requests: 1024,
            reconnect_delay: self.reconnect_delay,
            max_reconnect_delay: self.max_reconnect_delay,
        }
    }
}
