//! TCP/TLS streams and opening AMQP 1.0 connections (SASL PLAIN, ANONYMOUS, EXTERNAL).
//!
//! TLS is done here with rustls (the configuration from [`crate::transport::support::tls`]), not by
//! fe2o3-amqp, so that the same stream code serves the AMQP 0-9-1 provisioning connection and no
//! second crypto stack is built.

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::Connection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::config::{ConnSettings, Sasl};
use super::error::{describe, permanent, transient, ConnectError, Failure};
use crate::error::{Error, ErrorCode, Result};
use crate::transport::support::tls;

/// A byte stream to the broker (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static> Io for T {}

/// Opens a TCP (and, for `amqps://`, TLS) stream to the broker.
pub async fn stream(s: &ConnSettings) -> Result<Box<dyn Io>, ConnectError> {
    let ep = s.endpoint();
    let tcp = tokio::time::timeout(
        s.connect_timeout,
        TcpStream::connect((s.host.as_str(), s.port)),
    )
    .await
    .map_err(|_| {
        transient(Error::new(
            ErrorCode::ConnectionFailed,
            format!(
                "cannot reach the AMQP broker at {ep}: timed out after {} ms",
                s.connect_timeout.as_millis()
            ),
        ))
    })?
    .map_err(|e| {
        transient(Error::with_cause(
            ErrorCode::ConnectionFailed,
            format!("cannot reach the AMQP broker at {ep}"),
            e,
        ))
    })?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &s.tls else {
        return Ok(Box::new(tcp));
    };
    let connector =
        tokio_rustls::TlsConnector::from(tls::client_config(tls, "tls.").map_err(permanent)?);
    let server_name = tls.server_name(&s.host).map_err(permanent)?;
    let tls_stream = tokio::time::timeout(s.connect_timeout, connector.connect(server_name, tcp))
        .await
        .map_err(|_| {
            transient(Error::new(
                ErrorCode::ConnectionFailed,
                format!("TLS handshake with {ep} timed out"),
            ))
        })?
        .map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::InvalidData {
                Failure::Permanent
            } else {
                Failure::Transient
            };
            ConnectError {
                error: Error::with_cause(
                    ErrorCode::ConnectionFailed,
                    format!("TLS handshake with {ep} failed (check the broker certificate, tls.ca and tls.servername)"),
                    e,
                ),
                kind,
            }
        })?;
    Ok(Box::new(tls_stream))
}

/// Opens an AMQP 1.0 connection (TCP/TLS, SASL, open) within `connect_timeout`; also returns
/// the broker as its `open` frame names it.
pub async fn open(
    s: &ConnSettings,
) -> Result<(ConnectionHandle<()>, Option<super::broker::Broker>), ConnectError> {
    let ep = s.endpoint();
    let raw = match &s.ws {
        Some(w) => super::ws::open(s, w).await?,
        None => stream(s).await?,
    };
    let (tap, capture) = super::broker::Tap::new(raw);
    let io: Box<dyn Io> = Box::new(tap);
    let fut = async {
        let mut io = io;
        let hostname = match &s.vhost {
            Some(v) => format!("vhost:{v}"),
            None => s.host.clone(),
        };
        let mut builder = Connection::builder()
            .container_id(s.container_id.clone())
            .hostname(hostname.as_str())
            .sasl_hostname(s.host.as_str())
            .max_frame_size(256 * 1024)
            .channel_max(1024u16);
        if !s.idle_timeout.is_zero() {
            builder = builder.idle_time_out(s.idle_timeout.as_millis() as u32);
        }
        match &s.sasl {
            Sasl::Plain { user, password } => {
                builder = builder.sasl_profile(SaslProfile::Plain {
                    username: user.clone(),
                    password: password.clone(),
                })
            }
            Sasl::Anonymous => builder = builder.sasl_profile(SaslProfile::Anonymous),
            Sasl::External => sasl_external(&mut io, &s.host).await?,
        }
        builder
            .open_with_stream(io)
            .await
            .map(|h| (h, capture.broker()))
            .map_err(|e| open_error(e, &ep))
    };
    tokio::time::timeout(s.connect_timeout, fut)
        .await
        .map_err(|_| {
            transient(Error::new(
                ErrorCode::ConnectionFailed,
                format!(
                    "opening the AMQP connection to {ep} timed out after {} ms",
                    s.connect_timeout.as_millis()
                ),
            ))
        })?
}

fn open_error(e: fe2o3_amqp::connection::OpenError, ep: &str) -> ConnectError {
    use fe2o3_amqp::connection::OpenError as O;
    match e {
        O::SaslError { code, .. } => permanent(Error::new(
            ErrorCode::ConnectionFailed,
            format!("authentication with the AMQP broker at {ep} failed (SASL outcome {code:?}); check user and password"),
        )),
        O::Io(io) => transient(Error::with_cause(
            ErrorCode::ConnectionFailed,
            format!("the AMQP broker at {ep} closed the connection while opening it"),
            io,
        )),
        O::ProtocolHeaderMismatch(_) => permanent(Error::new(
            ErrorCode::ConnectionFailed,
            format!("{ep} does not speak AMQP 1.0 (is the AMQP 1.0 plugin enabled? RabbitMQ 3.x: rabbitmq-plugins enable rabbitmq_amqp1_0)"),
        )),
        O::RemoteClosedWithError(err) => permanent(Error::new(
            ErrorCode::ConnectionFailed,
            format!(
                "the AMQP broker at {ep} refused the connection: {}",
                describe(&err)
            ),
        )),
        other => transient(Error::with_cause(
            ErrorCode::ConnectionFailed,
            format!("cannot open an AMQP connection to {ep}"),
            other,
        )),
    }
}

/// SASL EXTERNAL by hand: fe2o3-amqp only allows it when it does TLS itself.
async fn sasl_external(io: &mut Box<dyn Io>, host: &str) -> Result<(), ConnectError> {
    let fail = |m: String| permanent(Error::new(ErrorCode::ConnectionFailed, m));
    let io_err = |e: std::io::Error| {
        transient(Error::with_cause(
            ErrorCode::ConnectionFailed,
            "SASL EXTERNAL negotiation failed",
            e,
        ))
    };
    io.write_all(b"AMQP\x03\x01\x00\x00")
        .await
        .map_err(io_err)?;
    let mut header = [0u8; 8];
    io.read_exact(&mut header).await.map_err(io_err)?;
    if &header != b"AMQP\x03\x01\x00\x00" {
        return Err(fail("the broker does not offer SASL".into()));
    }
    let mechanisms = read_frame(io).await.map_err(io_err)?;
    if !contains(&mechanisms, b"EXTERNAL") {
        return Err(fail("the broker does not offer SASL EXTERNAL".into()));
    }
    // sasl-init: mechanism EXTERNAL, empty initial response, hostname.
    let mut body = Vec::new();
    body.extend_from_slice(&[0xa3, 8]);
    body.extend_from_slice(b"EXTERNAL");
    body.extend_from_slice(&[0xa0, 0]);
    let h = host.as_bytes();
    if h.len() < 256 {
        body.push(0xa1);
        body.push(h.len() as u8);
        body.extend_from_slice(h);
    } else {
        body.push(0x40);
    }
    let mut perf = vec![0x00, 0x53, 0x41, 0xc0, (body.len() + 1) as u8, 3];
    perf.extend_from_slice(&body);
    let size = (8 + perf.len()) as u32;
    let mut frame = size.to_be_bytes().to_vec();
    frame.extend_from_slice(&[2, 1, 0, 0]);
    frame.extend_from_slice(&perf);
    io.write_all(&frame).await.map_err(io_err)?;
    let outcome = read_frame(io).await.map_err(io_err)?;
    // sasl-outcome: 0x00 0x53 0x44, list, first field ubyte code (0 = ok).
    let code = outcome
        .windows(3)
        .position(|w| w == [0x00, 0x53, 0x44])
        .and_then(|p| {
            let rest = &outcome[p + 3..];
            match rest.first()? {
                0xc0 => rest.get(3..5),
                0xd0 => rest.get(9..11),
                _ => None,
            }
        })
        .and_then(|b| if b[0] == 0x50 { Some(b[1]) } else { None });
    match code {
        Some(0) => Ok(()),
        other => Err(fail(format!(
            "SASL EXTERNAL authentication failed (outcome code {other:?}); check the client certificate"
        ))),
    }
}

async fn read_frame(io: &mut Box<dyn Io>) -> std::io::Result<Vec<u8>> {
    let mut size = [0u8; 4];
    io.read_exact(&mut size).await?;
    let size = u32::from_be_bytes(size) as usize;
    if !(8..=65536).contains(&size) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "bad SASL frame size",
        ));
    }
    let mut rest = vec![0u8; size - 4];
    io.read_exact(&mut rest).await?;
    let doff = rest[0] as usize * 4;
    Ok(rest
        .get(doff.saturating_sub(4)..)
        .unwrap_or_default()
        .to_vec())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::primitives::{Array, Symbol};
    use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslMechanisms, SaslOutcome};

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&[2, 1, 0, 0]);
        f.extend_from_slice(body);
        f
    }

    async fn serve(mut server: tokio::io::DuplexStream, code: SaslCode) -> SaslInit {
        let mut header = [0u8; 8];
        server.read_exact(&mut header).await.unwrap();
        assert_eq!(&header, b"AMQP\x03\x01\x00\x00");
        server.write_all(&header).await.unwrap();
        let mechs = SaslMechanisms {
            sasl_server_mechanisms: Array(vec![Symbol::from("PLAIN"), Symbol::from("EXTERNAL")]),
        };
        server
            .write_all(&frame(&serde_amqp::to_vec(&mechs).unwrap()))
            .await
            .unwrap();
        let mut io: Box<dyn Io> = Box::new(server);
        let init = read_frame(&mut io).await.unwrap();
        let init: SaslInit = serde_amqp::from_slice(&init).unwrap();
        let outcome = SaslOutcome {
            code,
            additional_data: None,
        };
        io.write_all(&frame(&serde_amqp::to_vec(&outcome).unwrap()))
            .await
            .unwrap();
        init
    }

    #[tokio::test]
    async fn sasl_external_is_negotiated_by_hand() {
        let (client, server) = tokio::io::duplex(4096);
        let srv = tokio::spawn(serve(server, SaslCode::Ok));
        let mut io: Box<dyn Io> = Box::new(client);
        sasl_external(&mut io, "broker.example").await.unwrap();
        let init = srv.await.unwrap();
        assert_eq!(init.mechanism.0, "EXTERNAL");
        assert_eq!(init.hostname.as_deref(), Some("broker.example"));
        assert!(init.initial_response.map(|b| b.is_empty()).unwrap_or(true));
    }

    #[tokio::test]
    async fn sasl_external_failure_is_permanent() {
        let (client, server) = tokio::io::duplex(4096);
        let srv = tokio::spawn(serve(server, SaslCode::Auth));
        let mut io: Box<dyn Io> = Box::new(client);
        let e = sasl_external(&mut io, "h").await.unwrap_err();
        assert_eq!(e.kind, Failure::Permanent);
        assert!(e.error.message.contains("EXTERNAL"));
        srv.await.unwrap();
    }
}
