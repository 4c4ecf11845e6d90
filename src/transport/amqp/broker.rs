//! Broker identification: which product and version answered the AMQP open, and whether the
//! configured profile fits it.
//!
//! fe2o3-amqp keeps the remote `open` performative to itself, so [`Tap`] records the first bytes
//! the broker sends (protocol headers, SASL frames, the `open` frame) and [`Capture::broker`]
//! decodes the `open` from them. Brokers name themselves in the open's `properties`
//! (`product`, `version`; RabbitMQ, ActiveMQ and Artemis do). [`Broker::fitting_profiles`] maps
//! that to the profiles that work with it; [`Identity`] logs the broker once per connection and
//! warns each service whose profile does not fit.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use fe2o3_amqp::types::performatives::Open;
use fe2o3_amqp::types::primitives::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::log::Logger;
use crate::sync::lock;

/// The AMQP (not SASL) protocol header; the `open` frame follows the broker's copy of it.
const AMQP_HEADER: &[u8] = b"AMQP\x00\x01\x00\x00";
/// At most this many bytes are recorded (SASL frames and an `open` are far smaller).
const CAPTURE_LIMIT: usize = 64 * 1024;

/// What a broker said about itself in its `open` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// `properties.product`, e.g. `RabbitMQ`.
    pub product: String,
    /// `properties.version`, e.g. `3.10.8`.
    pub version: Option<String>,
}

impl std::fmt::Display for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{} {v}", self.product),
            None => f.write_str(&self.product),
        }
    }
}

impl Broker {
    /// The broker named in an `open` performative's properties, if it names itself.
    pub fn from_open(open: &Open) -> Option<Broker> {
        let props = open.properties.as_ref()?;
        let text = |key: &str| {
            props.iter().find_map(|(k, v)| match v {
                Value::String(s) if k.as_str().eq_ignore_ascii_case(key) => Some(s.clone()),
                Value::Symbol(s) if k.as_str().eq_ignore_ascii_case(key) => {
                    Some(s.as_str().to_string())
                }
                _ => None,
            })
        };
        let product = text("product").filter(|p| !p.trim().is_empty())?;
        Some(Broker {
            product,
            version: text("version"),
        })
    }

    fn major(&self) -> Option<u32> {
        self.version
            .as_deref()?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }

    /// The profiles that work with this broker, or `None` for a product this package does not
    /// know (then no profile is judged). `generic` (address templates) is never judged.
    pub fn fitting_profiles(&self) -> Option<&'static [&'static str]> {
        let p = self.product.to_ascii_lowercase();
        if p.contains("rabbitmq") {
            return Some(match self.major() {
                Some(m) if m >= 4 => &["rabbitmq4"],
                Some(_) => &["rabbitmq"],
                None => &["rabbitmq", "rabbitmq4"],
            });
        }
        if p.contains("artemis") {
            return Some(&["artemis"]);
        }
        if p.contains("activemq") {
            return Some(&["activemq"]);
        }
        if p.contains("solace") {
            return Some(&["solace"]);
        }
        if p.contains("servicebus") || p.contains("service bus") {
            return Some(&["azure-service-bus"]);
        }
        None
    }

    /// The warning for a service configured with `profile` on this broker, if it does not fit.
    pub fn misfit(&self, profile: &str, endpoint: &str) -> Option<String> {
        if profile == "generic" {
            return None;
        }
        let fits = self.fitting_profiles()?;
        if fits.contains(&profile) {
            return None;
        }
        let wanted = fits
            .iter()
            .map(|p| format!("profile: '{p}'"))
            .collect::<Vec<_>>()
            .join(" or ");
        let why = match (profile, fits) {
            ("rabbitmq", ["rabbitmq4"]) => {
                " (RabbitMQ 4 deprecates the v1 addresses '/exchange/…' and '/amq/queue/…' of profile 'rabbitmq')"
            }
            ("rabbitmq4", ["rabbitmq"]) => {
                " (RabbitMQ before 4.0 does not know the v2 addresses '/exchanges/…' and '/queues/…' of profile 'rabbitmq4')"
            }
            _ => "",
        };
        Some(format!(
            "the AMQP broker at {endpoint} is {self}, but this service is configured with profile '{profile}'{why}: \
             publishing and consuming may fail or go to the wrong place; set {wanted}"
        ))
    }
}

/// Decodes the broker's `open` from the bytes it sent first (after its AMQP protocol header).
pub fn parse_open(bytes: &[u8]) -> Option<Open> {
    let at = bytes
        .windows(AMQP_HEADER.len())
        .position(|w| w == AMQP_HEADER)?
        + AMQP_HEADER.len();
    let frame = bytes.get(at..)?;
    let size = u32::from_be_bytes(frame.get(0..4)?.try_into().ok()?) as usize;
    let doff = *frame.get(4)? as usize * 4;
    let body = frame.get(doff..size)?;
    serde_amqp::from_slice::<Open>(body).ok()
}

/// The bytes a [`Tap`] recorded; shared with the tap, read after the connection is open.
#[derive(Debug, Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// The broker named in the recorded `open`, if the broker sent one that names itself.
    pub fn broker(&self) -> Option<Broker> {
        parse_open(&lock(&self.0)).and_then(|open| Broker::from_open(&open))
    }
}

/// A stream that records the first bytes read from it (up to 64 KiB), unchanged otherwise.
#[derive(Debug)]
pub struct Tap<S> {
    inner: S,
    capture: Capture,
}

impl<S> Tap<S> {
    /// Wraps `inner`; the [`Capture`] reads what was recorded.
    pub fn new(inner: S) -> (Self, Capture) {
        let capture = Capture::default();
        (
            Tap {
                inner,
                capture: capture.clone(),
            },
            capture,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let mut seen = lock(&this.capture.0);
            let room = CAPTURE_LIMIT.saturating_sub(seen.len());
            let new = &buf.filled()[before..];
            seen.extend_from_slice(&new[..new.len().min(room)]);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[derive(Default)]
struct IdentityState {
    /// Whether a connection was identified (or found anonymous) at least once.
    known: bool,
    broker: Option<Broker>,
    endpoint: String,
    /// Services whose profile is judged at the first identification.
    pending: Vec<(&'static str, Logger)>,
}

/// The broker behind one shared connection, and the profiles of the services that use it.
#[derive(Default)]
pub struct Identity(Mutex<IdentityState>);

impl Identity {
    /// A service with `profile` uses the connection: it is warned (through `log`) when the
    /// broker, once known, does not fit the profile.
    pub fn expect(&self, profile: &'static str, log: &Logger) {
        let mut st = lock(&self.0);
        if st.known {
            if let Some(w) = st
                .broker
                .as_ref()
                .and_then(|b| b.misfit(profile, &st.endpoint))
            {
                log.warn(&w);
            }
        } else {
            st.pending.push((profile, log.clone()));
        }
    }

    /// A connection to `endpoint` opened with `broker` (as its `open` named it): logged at the
    /// first connection and when it changes; the waiting services' profiles are judged once.
    pub fn identified(&self, broker: Option<Broker>, endpoint: &str, log: &Logger) {
        let mut st = lock(&self.0);
        if !st.known || st.broker != broker {
            match &broker {
                Some(b) => log.info(&format!("AMQP broker at {endpoint}: {b}")),
                None => log.debug(&format!(
                    "the AMQP broker at {endpoint} does not name its product in its open frame"
                )),
            }
        }
        st.known = true;
        st.broker = broker;
        st.endpoint = endpoint.to_string();
        for (profile, service_log) in std::mem::take(&mut st.pending) {
            if let Some(w) = st.broker.as_ref().and_then(|b| b.misfit(profile, endpoint)) {
                service_log.warn(&w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::definitions::Fields;
    use fe2o3_amqp::types::primitives::Symbol;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn open_with(props: &[(&str, &str)]) -> Open {
        let mut fields = Fields::new();
        for (k, v) in props {
            fields.insert(Symbol::from(*k), Value::String((*v).to_string()));
        }
        Open {
            container_id: "broker".into(),
            hostname: None,
            max_frame_size: Default::default(),
            channel_max: Default::default(),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: (!props.is_empty()).then_some(fields),
        }
    }

    /// What a broker sends up to its `open`: SASL header and a SASL frame, AMQP header, open.
    fn wire(open: &Open) -> Vec<u8> {
        let body = serde_amqp::to_vec(open).unwrap();
        let mut out = b"AMQP\x03\x01\x00\x00".to_vec();
        out.extend_from_slice(&[0, 0, 0, 12, 2, 1, 0, 0, 0x00, 0x53, 0x40, 0x45]);
        out.extend_from_slice(AMQP_HEADER);
        out.extend_from_slice(&(8 + body.len() as u32).to_be_bytes());
        out.extend_from_slice(&[2, 0, 0, 0]);
        out.extend_from_slice(&body);
        out
    }

    fn broker(product: &str, version: &str) -> Broker {
        Broker {
            product: product.into(),
            version: Some(version.into()),
        }
    }

    #[test]
    fn the_open_frame_names_the_broker() {
        let open = open_with(&[
            ("product", "RabbitMQ"),
            ("version", "3.10.8"),
            ("platform", "Erlang/OTP 25"),
        ]);
        let b = Broker::from_open(&parse_open(&wire(&open)).unwrap()).unwrap();
        assert_eq!(b, broker("RabbitMQ", "3.10.8"));
        assert_eq!(b.to_string(), "RabbitMQ 3.10.8");
        assert_eq!(Broker::from_open(&open_with(&[])), None);
        assert_eq!(Broker::from_open(&open_with(&[("version", "1")])), None);
    }

    #[test]
    fn truncated_or_foreign_bytes_give_no_open() {
        let w = wire(&open_with(&[("product", "RabbitMQ")]));
        assert!(parse_open(&w[..w.len() - 3]).is_none());
        assert!(parse_open(b"AMQP\x03\x01\x00\x00").is_none());
        assert!(parse_open(b"").is_none());
        let mut bad = w.clone();
        let n = bad.len();
        bad[n - 4..].copy_from_slice(&[0xff; 4]);
        assert!(parse_open(&bad).is_none());
    }

    #[test]
    fn fitting_profiles_per_product_and_version() {
        assert_eq!(
            broker("RabbitMQ", "3.10.8").fitting_profiles(),
            Some(&["rabbitmq"][..])
        );
        assert_eq!(
            broker("RabbitMQ", "3.13.7").fitting_profiles(),
            Some(&["rabbitmq"][..])
        );
        assert_eq!(
            broker("RabbitMQ", "4.1.0").fitting_profiles(),
            Some(&["rabbitmq4"][..])
        );
        let no_version = Broker {
            product: "RabbitMQ".into(),
            version: None,
        };
        assert_eq!(
            no_version.fitting_profiles(),
            Some(&["rabbitmq", "rabbitmq4"][..])
        );
        assert_eq!(
            broker("apache-activemq-artemis", "2.31.2").fitting_profiles(),
            Some(&["artemis"][..])
        );
        assert_eq!(
            broker("ActiveMQ", "5.18.3").fitting_profiles(),
            Some(&["activemq"][..])
        );
        assert_eq!(
            broker("Solace PubSub+", "10.4").fitting_profiles(),
            Some(&["solace"][..])
        );
        assert_eq!(
            broker("Microsoft.ServiceBus", "1").fitting_profiles(),
            Some(&["azure-service-bus"][..])
        );
        assert_eq!(
            broker("qpid-dispatch-router", "1.19").fitting_profiles(),
            None
        );
    }

    #[test]
    fn a_profile_that_does_not_fit_is_named_with_the_fix() {
        let ep = "127.0.0.1:5672";
        let r3 = broker("RabbitMQ", "3.10.8");
        assert_eq!(r3.misfit("rabbitmq", ep), None);
        assert_eq!(r3.misfit("generic", ep), None);
        let w = r3.misfit("artemis", ep).unwrap();
        assert!(
            w.contains("is RabbitMQ 3.10.8, but this service is configured with profile 'artemis'"),
            "{w}"
        );
        assert!(w.ends_with("set profile: 'rabbitmq'"), "{w}");
        let w = r3.misfit("rabbitmq4", ep).unwrap();
        assert!(w.contains("does not know the v2 addresses"), "{w}");
        let w = broker("RabbitMQ", "4.0.5").misfit("rabbitmq", ep).unwrap();
        assert!(
            w.contains("RabbitMQ 4 deprecates the v1 addresses")
                && w.ends_with("set profile: 'rabbitmq4'"),
            "{w}"
        );
        let w = broker("apache-activemq-artemis", "2.31.2")
            .misfit("rabbitmq", ep)
            .unwrap();
        assert!(w.ends_with("set profile: 'artemis'"), "{w}");
        assert_eq!(broker("SomethingElse", "1").misfit("rabbitmq", ep), None);
    }

    #[tokio::test]
    async fn the_tap_records_what_it_reads_and_passes_everything_through() {
        let open = open_with(&[("product", "RabbitMQ"), ("version", "3.10.8")]);
        let bytes = wire(&open);
        let (mut broker_side, client_side) = tokio::io::duplex(1024);
        let (mut tap, capture) = Tap::new(client_side);
        broker_side.write_all(&bytes).await.unwrap();
        let mut got = vec![0u8; bytes.len()];
        tap.read_exact(&mut got).await.unwrap();
        assert_eq!(got, bytes);
        tap.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        broker_side.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping");
        assert_eq!(capture.broker(), Some(broker("RabbitMQ", "3.10.8")));
    }

    #[test]
    fn identity_warns_each_misfitting_service_once() {
        use crate::log::testing::Collect;
        let sink = || Arc::new(Collect::default());
        let (conn, ok, bad, late) = (sink(), sink(), sink(), sink());
        let logger = |c: &Arc<Collect>| Logger::new("t", Some(c.clone()));
        let id = Identity::default();
        id.expect("rabbitmq", &logger(&ok));
        id.expect("artemis", &logger(&bad));
        id.identified(Some(broker("RabbitMQ", "3.10.8")), "h:5672", &logger(&conn));
        id.identified(Some(broker("RabbitMQ", "3.10.8")), "h:5672", &logger(&conn)); // reconnect
        id.expect("activemq", &logger(&late));
        let lines = conn.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0]
            .1
            .contains("AMQP broker at h:5672: RabbitMQ 3.10.8"));
        assert!(ok.lines().is_empty());
        assert_eq!(bad.lines().len(), 1);
        assert!(bad.lines()[0].1.contains("profile 'artemis'"));
        assert_eq!(late.lines().len(), 1);
        id.identified(Some(broker("RabbitMQ", "4.0.5")), "h:5672", &logger(&conn)); // upgraded
        assert!(conn.lines()[1].1.contains("RabbitMQ 4.0.5"));
    }
}
