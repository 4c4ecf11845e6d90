//! The publisher connection, opened on first use.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::conn::{Conn, ConnSettings};
use crate::error::Result;
use crate::log::Logger;

/// Lazily opened publisher connection, shared by emits and dead letters.
pub(super) struct Publisher {
    pub(super) settings: ConnSettings,
    pub(super) log: Logger,
    pub(super) conn: OnceCell<Arc<Conn>>,
}

impl Publisher {
    pub(super) async fn get(&self) -> Result<Arc<Conn>> {
        self.conn
            .get_or_try_init(|| async { Conn::open(self.settings.clone(), self.log.clone(), None) })
            .await
            .cloned()
    }

    /// Publishes one message (QoS 1, `retain` as given) and waits for its confirmation.
    pub(super) async fn publish_one(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
        timeout: Duration,
    ) -> Result<()> {
        let conn = self.get().await?;
        let deadline = Instant::now() + timeout;
        let rx = conn
            .publish_retain(topic.clone(), payload, QoS::AtLeastOnce, retain, deadline)
            .await?;
        conn.confirmation(&topic, rx, deadline).await
    }
}
