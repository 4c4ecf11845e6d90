//! Looking at an MQTT broker without touching the app's session (for the `cds-native-messaging`
//! CLI): a probe (connect and authenticate with a client id of its own) and a tail (a clean,
//! non-persistent session subscribed at QoS 0 — the app's persistent session keeps every message).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{Publish, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;

use super::conn::{Conn, ConnSettings, Events, SubTicket};
use super::MqttConfig;
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::message::{Delivery, HandlerError, InFlight, Inbound, Settle};
use crate::transport::support::tls;

/// Settings of a short-lived, clean session with a client id of its own next to the app's.
fn own_session(config: &MqttConfig, suffix: &str) -> Result<ConnSettings> {
    let tls = if config.endpoint.scheme.is_tls() {
        Some(tls::client_config(&config.tls, "")?)
    } else {
        None
    };
    let mut s = config.settings(tls);
    s.role = "inspector";
    s.client_id = format!("{}-{suffix}-{:08x}", config.client_id, fastrand::u32(..));
    s.clean_session = true;
    s.manual_acks = false;
    Ok(s)
}

/// Connects (CONNECT and CONNACK, i.e. authenticated) within `timeout`, then disconnects.
pub async fn probe(config: &MqttConfig, timeout: Duration) -> Result<String> {
    let settings = own_session(config, "doctor")?;
    let conn = Conn::open(settings, Logger::default(), None)?;
    let label = conn.label();
    let mut connected = conn.watch_connected();
    let up = matches!(
        tokio::time::timeout(timeout, connected.wait_for(Option::is_some)).await,
        Ok(Ok(_))
    );
    let why = conn.last_error();
    conn.close(Duration::from_millis(500)).await;
    if up {
        return Ok(label);
    }
    Err(Error::new(
        ErrorCode::ConnectionFailed,
        format!(
            "cannot connect to {label}: {}",
            why.unwrap_or_else(|| format!("no CONNACK within {} ms", timeout.as_millis()))
        ),
    ))
}

struct Nothing;

impl Settle for Nothing {
    fn ack(self: Box<Self>, _place: InFlight) {}
    fn retry(self: Box<Self>, _delay: Duration, _error: &HandlerError) {}
    fn dead_letter(self: Box<Self>, _error: &HandlerError) {}
}

struct TailEvents {
    tx: mpsc::Sender<Delivery>,
}

impl Events for TailEvents {
    fn connected(&self, _epoch: u64, _session_present: bool) {}
    fn publish(&self, p: Publish, _epoch: u64) -> Option<Delivery> {
        Some(Delivery {
            message: Inbound {
                topic: p.topic,
                payload: String::from_utf8_lossy(&p.payload).into_owned(),
                attempt: 1,
            },
            settle: Box::new(Nothing),
        })
    }
    fn deliveries(&self) -> &mpsc::Sender<Delivery> {
        &self.tx
    }
    fn subscribed(&self, _ticket: SubTicket, _codes: Vec<SubscribeReasonCode>) {}
}

/// A QoS 0 subscription on a clean session of its own.
pub struct Tail {
    conn: Arc<Conn>,
    rx: mpsc::Receiver<Delivery>,
}

impl Tail {
    /// Connects and subscribes to `filters` (MQTT filters, e.g. `#`).
    pub async fn open(
        config: &MqttConfig,
        filters: Vec<String>,
        timeout: Duration,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel(1024);
        let settings = own_session(config, "tail")?;
        let conn = Conn::open(
            settings,
            Logger::default(),
            Some(Arc::new(TailEvents { tx })),
        )?;
        let mut connected = conn.watch_connected();
        if !matches!(
            tokio::time::timeout(timeout, connected.wait_for(Option::is_some)).await,
            Ok(Ok(_))
        ) {
            let why = conn.last_error().unwrap_or_else(|| "no CONNACK".into());
            conn.close(Duration::from_millis(200)).await;
            return Err(Error::new(
                ErrorCode::ConnectionFailed,
                format!("cannot connect to {}: {why}", conn.label()),
            ));
        }
        conn.subscribe(filters, QoS::AtMostOnce, 1).await;
        Ok(Tail { conn, rx })
    }

    /// Waits up to `wait` for messages.
    pub async fn next(&mut self, wait: Duration) -> Vec<Inbound> {
        let mut out = Vec::new();
        if let Ok(Some(d)) = tokio::time::timeout(wait, self.rx.recv()).await {
            out.push(d.message);
            while let Ok(d) = self.rx.try_recv() {
                out.push(d.message);
                if out.len() >= 500 {
                    break;
                }
            }
        }
        out
    }

    /// Disconnects.
    pub async fn close(&self) {
        self.conn.close(Duration::from_millis(500)).await;
    }
}

/// One dead letter kept retained by the broker under `<deadLetterTopic>/<topic>/<id>`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The MQTT topic it is kept on.
    pub mqtt_topic: String,
    /// The dead-letter id (last topic level).
    pub id: String,
    /// The topic it was consumed from.
    pub topic: String,
    /// The payload as consumed (unchanged).
    pub payload: Vec<u8>,
    /// When it was dead-lettered (ms since the epoch, from the id).
    pub time_ms: u64,
}

/// Collects inbound publishes of a listing session; `subscribed` fires on the SUBACK.
struct ListEvents {
    tx: mpsc::UnboundedSender<Publish>,
    subscribed: tokio::sync::watch::Sender<bool>,
    deliveries: mpsc::Sender<Delivery>,
}

impl Events for ListEvents {
    fn connected(&self, _epoch: u64, _session_present: bool) {}
    fn publish(&self, p: Publish, _epoch: u64) -> Option<Delivery> {
        let _ = self.tx.send(p);
        None
    }
    fn deliveries(&self) -> &mpsc::Sender<Delivery> {
        &self.deliveries
    }
    fn subscribed(&self, _ticket: SubTicket, _codes: Vec<SubscribeReasonCode>) {
        let _ = self.subscribed.send(true);
    }
}

/// How long a listing waits for more retained messages after the last one (the broker sends the
/// retained set right after the SUBACK, in one burst; there is no end marker in MQTT 3.1.1).
const QUIET: Duration = Duration::from_millis(500);

/// Waits for the connection of a short-lived session; the error names the broker and the reason.
async fn connected(conn: &Arc<Conn>, timeout: Duration) -> Result<()> {
    let mut up = conn.watch_connected();
    if matches!(
        tokio::time::timeout(timeout, up.wait_for(Option::is_some)).await,
        Ok(Ok(_))
    ) {
        return Ok(());
    }
    let why = conn
        .last_error()
        .unwrap_or_else(|| format!("no CONNACK within {} ms", timeout.as_millis()));
    conn.close(Duration::from_millis(200)).await;
    Err(Error::new(
        ErrorCode::ConnectionFailed,
        format!("cannot connect to {}: {why}", conn.label()),
    ))
}

/// A connected listing session: its inbound publishes, and whether its SUBACK came.
struct Listing {
    conn: Arc<Conn>,
    rx: mpsc::UnboundedReceiver<Publish>,
    acked: tokio::sync::watch::Receiver<bool>,
}

impl Listing {
    /// Opens a clean session of its own (client id `<clientId>-<suffix>-<random>`) and waits for
    /// its connection within `timeout`.
    async fn open(config: &MqttConfig, suffix: &str, timeout: Duration) -> Result<Listing> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed, acked) = tokio::sync::watch::channel(false);
        let events = Arc::new(ListEvents {
            tx,
            subscribed,
            deliveries: mpsc::channel(1).0,
        });
        let conn = Conn::open(
            own_session(config, suffix)?,
            Logger::default(),
            Some(events),
        )?;
        connected(&conn, timeout).await?;
        Ok(Listing { conn, rx, acked })
    }
}

/// Mosquitto's count of messages dropped by its queue limits since it started (all its clients;
/// see [`super::drops`]), read on a clean session of its own: `None` when the broker publishes no
/// such count (no `$SYS` topics, or the subscription refused).
pub async fn broker_drops(config: &MqttConfig, timeout: Duration) -> Result<Option<u64>> {
    let Listing {
        conn,
        mut rx,
        mut acked,
    } = Listing::open(config, "doctor", timeout).await?;
    conn.subscribe(vec![super::drops::TOPIC.to_string()], QoS::AtMostOnce, 1)
        .await;
    let _ = tokio::time::timeout(timeout, acked.wait_for(|a| *a)).await;
    // the count is retained: it follows the SUBACK at once, or never
    let count = match tokio::time::timeout(QUIET, rx.recv()).await {
        Ok(Some(p)) => super::drops::parse(&p.payload),
        _ => None,
    };
    conn.close(Duration::from_millis(500)).await;
    Ok(count)
}

/// The dead letters the broker keeps retained under `<deadLetterTopic>/#`, oldest first. Reads
/// them on a clean session of its own: a retained message is not consumed by reading it.
pub async fn dead_letters(config: &MqttConfig, timeout: Duration) -> Result<Vec<DeadLetter>> {
    let Listing {
        conn,
        mut rx,
        mut acked,
    } = Listing::open(config, "dead-letters", timeout).await?;
    let base = &config.dead_letter_topic;
    conn.subscribe(vec![format!("{base}/#")], QoS::AtLeastOnce, 1)
        .await;
    let until = tokio::time::Instant::now() + timeout;
    if !matches!(
        tokio::time::timeout_at(until, acked.wait_for(|a| *a)).await,
        Ok(Ok(_))
    ) {
        conn.close(Duration::from_millis(200)).await;
        return Err(Error::new(
            ErrorCode::ConnectionFailed,
            format!(
                "{} did not confirm the subscription to '{base}/#' within {} ms",
                conn.label(),
                timeout.as_millis()
            ),
        ));
    }
    let mut found = std::collections::BTreeMap::new();
    while let Ok(Some(p)) = tokio::time::timeout(QUIET, rx.recv()).await {
        if p.payload.is_empty() {
            // a removal passing by
            found.remove(&p.topic);
            continue;
        }
        if let Some((topic, id)) = super::topic::parse_dead_letter(base, &p.topic) {
            let d = DeadLetter {
                id: id.to_string(),
                topic: topic.to_string(),
                time_ms: super::topic::dead_letter_time(id).unwrap_or(0),
                payload: p.payload.to_vec(),
                mqtt_topic: p.topic.clone(),
            };
            found.insert(p.topic, d);
        }
        if tokio::time::Instant::now() >= until {
            break;
        }
    }
    conn.close(Duration::from_millis(500)).await;
    let mut all: Vec<DeadLetter> = found.into_values().collect();
    all.sort_by(|a, b| (a.time_ms, &a.id).cmp(&(b.time_ms, &b.id)));
    Ok(all)
}

/// Removes the dead letters `ids` (each by an empty retained message on its topic); with
/// `redeliver` first publishes each unchanged to its original topic (QoS 1, confirmed). The set is
/// read again first, so a dead letter another operator took meanwhile is not counted. Returns how
/// many were moved.
pub async fn take_dead_letters(
    config: &MqttConfig,
    timeout: Duration,
    ids: &[String],
    redeliver: bool,
) -> Result<usize> {
    let present = dead_letters(config, timeout).await?;
    let chosen: Vec<DeadLetter> = present
        .into_iter()
        .filter(|d| ids.contains(&d.id))
        .collect();
    if chosen.is_empty() {
        return Ok(0);
    }
    let conn = Conn::open(
        own_session(config, "dead-letters")?,
        Logger::default(),
        None,
    )?;
    connected(&conn, timeout).await?;
    let mut moved = 0;
    let total = chosen.len();
    let result = async {
        for d in chosen {
            let deadline = tokio::time::Instant::now() + timeout;
            if redeliver {
                let rx = conn
                    .publish_retain(
                        d.topic.clone(),
                        d.payload,
                        QoS::AtLeastOnce,
                        false,
                        deadline,
                    )
                    .await?;
                conn.confirmation(&d.topic, rx, deadline).await?;
            }
            let rx = conn
                .publish_retain(
                    d.mqtt_topic.clone(),
                    Vec::new(),
                    QoS::AtLeastOnce,
                    true,
                    deadline,
                )
                .await?;
            conn.confirmation(&d.mqtt_topic, rx, deadline).await?;
            moved += 1;
        }
        Ok::<_, Error>(())
    }
    .await;
    conn.close(Duration::from_millis(500)).await;
    result.map(|()| moved).map_err(|e| {
        Error::new(
            e.code,
            format!(
                "{} (after {moved} of {total} dead letters were moved)",
                e.full_message()
            ),
        )
    })
}
