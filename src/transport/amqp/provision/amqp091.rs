//! Queue provisioning for RabbitMQ over AMQP 0-9-1 on the broker's AMQP listener.
//!
//! RabbitMQ 3.x's AMQP 1.0 plugin cannot declare bindings, so a consuming service declares its
//! durable queue and binds it to each subscribed topic with a few AMQP 0-9-1 methods on a short
//! connection to the same host, port, TLS settings, vhost and credentials (RabbitMQ serves both
//! protocols on one listener). This is a deliberately tiny client: `queue.declare`, `queue.bind`,
//! nothing else. It never deletes anything.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::config::{ConnSettings, QueueConfig, Sasl};
use super::super::error::{ConnectError, Failure};
use super::super::net::{self, Io};
use crate::error::{Error, ErrorCode, Result};

const FRAME_METHOD: u8 = 1;
const FRAME_END: u8 = 0xCE;

/// Writes AMQP 0-9-1 values into a method payload.
#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn short(&mut self, s: &str) -> Result<&mut Self> {
        if s.len() > 255 {
            return Err(Error::config(format!(
                "'{s}' is longer than 255 bytes, the AMQP 0-9-1 limit for names and routing keys"
            )));
        }
        self.0.push(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
        Ok(self)
    }
    fn long(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self
    }
    fn table(&mut self, entries: &[(&str, &str)]) -> Result<&mut Self> {
        let mut t = W::default();
        for (k, v) in entries {
            t.short(k)?;
            t.u8(b'S');
            t.long(v.as_bytes());
        }
        self.long(&t.0);
        Ok(self)
    }
}

/// Encodes one method frame.
fn method_frame(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 + args.len());
    payload.extend_from_slice(&class.to_be_bytes());
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(args);
    let mut f = Vec::with_capacity(payload.len() + 8);
    f.push(FRAME_METHOD);
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(&payload);
    f.push(FRAME_END);
    f
}

/// A received method: class, method, arguments.
struct Method {
    class: u16,
    method: u16,
    args: Vec<u8>,
}

impl Method {
    /// `reply-code reply-text` of a `connection.close` or `channel.close`.
    fn close_reason(&self) -> (u16, String) {
        let a = &self.args;
        if a.len() < 3 {
            return (0, String::new());
        }
        let code = u16::from_be_bytes([a[0], a[1]]);
        let len = a[2] as usize;
        let text = a
            .get(3..3 + len)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        (code, text)
    }
}

struct Conn {
    io: Box<dyn Io>,
    what: String,
}

impl Conn {
    fn io_error(&self, e: std::io::Error) -> Error {
        Error::with_cause(
            ErrorCode::ConnectionFailed,
            format!("AMQP 0-9-1 provisioning connection to {} failed", self.what),
            e,
        )
    }

    async fn send(&mut self, channel: u16, class: u16, method: u16, args: &[u8]) -> Result<()> {
        let f = method_frame(channel, class, method, args);
        let r = self.io.write_all(&f).await;
        r.map_err(|e| self.io_error(e))
    }

    async fn recv(&mut self) -> Result<Method> {
        loop {
            let mut head = [0u8; 7];
            if let Err(e) = self.io.read_exact(&mut head).await {
                return Err(self.io_error(e));
            }
            if &head[..4] == b"AMQP" {
                return Err(Error::new(
                    ErrorCode::ConnectionFailed,
                    format!("{} does not accept AMQP 0-9-1 (needed to create queues and bindings on RabbitMQ)", self.what),
                ));
            }
            let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
            if size > 1 << 20 {
                return Err(Error::new(
                    ErrorCode::ConnectionFailed,
                    format!("{} sent an oversized AMQP 0-9-1 frame", self.what),
                ));
            }
            let mut body = vec![0u8; size + 1];
            if let Err(e) = self.io.read_exact(&mut body).await {
                return Err(self.io_error(e));
            }
            if head[0] != FRAME_METHOD || size < 4 {
                continue; // heartbeat or content: not expected, ignored
            }
            return Ok(Method {
                class: u16::from_be_bytes([body[0], body[1]]),
                method: u16::from_be_bytes([body[2], body[3]]),
                args: body[4..size].to_vec(),
            });
        }
    }

    /// Waits for `class.method`; a `close` from the broker becomes an error naming `doing`.
    async fn expect(&mut self, class: u16, method: u16, doing: &str) -> Result<Method> {
        let m = self.recv().await?;
        if m.class == class && m.method == method {
            return Ok(m);
        }
        if (m.class, m.method) == (10, 50) || (m.class, m.method) == (20, 40) {
            let (code, text) = m.close_reason();
            let _ = if m.class == 10 {
                self.send(0, 10, 51, &[]).await
            } else {
                self.send(1, 20, 41, &[]).await
            };
            return Err(Error::new(
                ErrorCode::ConnectionFailed,
                format!("RabbitMQ refused to {doing}: {code} {text}"),
            ));
        }
        Err(Error::new(
            ErrorCode::ConnectionFailed,
            format!(
                "unexpected AMQP 0-9-1 method {}.{} from {} while trying to {doing}",
                m.class, m.method, self.what
            ),
        ))
    }
}

/// Declares `queue` (durable, if absent) and binds it to `exchange` with every key in `keys`.
pub async fn declare_and_bind(
    s: &ConnSettings,
    queue: &QueueConfig,
    exchange: &str,
    keys: &[String],
) -> Result<(), ConnectError> {
    let what = s.endpoint();
    let io = net::stream(s).await?;
    let mut c = Conn {
        io,
        what: what.clone(),
    };
    let fut = async {
        let (user, password) = match &s.sasl {
            Sasl::Plain { user, password } => (user.as_str(), password.as_str()),
            _ => {
                return Err(Error::config(
                    "creating the queue on RabbitMQ needs user and password in the url (AMQP 0-9-1 PLAIN); or set queue.provision: false and create it yourself",
                ))
            }
        };
        c.io.write_all(b"AMQP\x00\x00\x09\x01")
            .await
            .map_err(|e| c.io_error(e))?;
        c.expect(10, 10, "start an AMQP 0-9-1 connection").await?;
        let mut response = Vec::with_capacity(user.len() + password.len() + 2);
        response.push(0);
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        response.extend_from_slice(password.as_bytes());
        let mut a = W::default();
        a.table(&[("product", "cds-native-messaging")])?;
        a.short("PLAIN")?;
        a.long(&response);
        a.short("en_US")?;
        c.send(0, 10, 11, &a.0).await?;
        let tune = match c.expect(10, 30, "authenticate").await {
            Ok(t) => t,
            Err(e) if e.source.is_some() => {
                return Err(Error::new(
                    ErrorCode::ConnectionFailed,
                    format!("authentication with RabbitMQ at {what} failed (AMQP 0-9-1 PLAIN); check user and password"),
                ))
            }
            Err(e) => return Err(e),
        };
        let channel_max = tune
            .args
            .get(0..2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .unwrap_or(0);
        let frame_max = tune
            .args
            .get(2..6)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(131_072);
        let mut a = W::default();
        a.u16(channel_max)
            .u32(if frame_max == 0 {
                131_072
            } else {
                frame_max.min(131_072)
            })
            .u16(0);
        c.send(0, 10, 31, &a.0).await?;
        let mut a = W::default();
        a.short(s.vhost.as_deref().unwrap_or("/"))?.short("")?.u8(0);
        c.send(0, 10, 40, &a.0).await?;
        c.expect(10, 41, "open the virtual host").await?;
        let mut a = W::default();
        a.short("")?;
        c.send(1, 20, 10, &a.0).await?;
        c.expect(20, 11, "open a channel").await?;

        let mut args: Vec<(&str, &str)> = Vec::new();
        if let Some(t) = &queue.queue_type {
            args.push(("x-queue-type", t));
        }
        let (dlx, dlk) = queue.dead_letter_args();
        if let Some(x) = dlx {
            args.push(("x-dead-letter-exchange", x));
        }
        if let Some(k) = dlk {
            args.push(("x-dead-letter-routing-key", k));
        }
        if let Some(dlq) = &queue.dead_letter_queue {
            // the dead-letter queue first: dead letters never go to a queue that is not there
            let mut a = W::default();
            a.u16(0).short(dlq)?.u8(0x02);
            a.table(&[])?;
            c.send(1, 50, 10, &a.0).await?;
            c.expect(50, 11, &format!("declare the dead-letter queue '{dlq}'"))
                .await?;
            if let Some(x) = &queue.dead_letter_exchange {
                let key = queue.dead_letter_routing_key.as_deref().unwrap_or("#");
                let mut a = W::default();
                a.u16(0).short(dlq)?.short(x)?.short(key)?.u8(0);
                a.table(&[])?;
                c.send(1, 50, 20, &a.0).await?;
                c.expect(
                    50,
                    21,
                    &format!("bind the dead-letter queue '{dlq}' to '{x}' with '{key}'"),
                )
                .await?;
            }
        }
        let mut a = W::default();
        a.u16(0).short(&queue.name)?.u8(0x02);
        a.table(&args)?;
        c.send(1, 50, 10, &a.0).await?;
        c.expect(
            50,
            11,
            &format!(
                "declare queue '{}' (an existing queue with other arguments, e.g. queue.type or a dead-letter setting, cannot be redeclared: delete it, or set the dead-letter arguments with a RabbitMQ policy)",
                queue.name
            ),
        )
        .await?;
        for key in keys {
            let mut a = W::default();
            a.u16(0)
                .short(&queue.name)?
                .short(exchange)?
                .short(key)?
                .u8(0);
            a.table(&[])?;
            c.send(1, 50, 20, &a.0).await?;
            c.expect(
                50,
                21,
                &format!("bind queue '{}' to '{exchange}' with '{key}'", queue.name),
            )
            .await?;
        }
        let mut a = W::default();
        a.u16(200).short("")?.u16(0).u16(0);
        c.send(0, 10, 50, &a.0).await?;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), c.recv()).await;
        Ok(())
    };
    match tokio::time::timeout(
        s.connect_timeout.max(std::time::Duration::from_secs(5)),
        fut,
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let kind = if e.source.is_some() {
                Failure::Transient
            } else {
                Failure::Permanent
            };
            Err(ConnectError { error: e, kind })
        }
        Err(_) => Err(ConnectError {
            error: Error::new(
                ErrorCode::ConnectionFailed,
                format!("creating queue '{}' on {what} timed out", queue.name),
            ),
            kind: Failure::Transient,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_frames_are_encoded_as_the_spec_says() {
        let mut a = W::default();
        a.u16(0).short("q").unwrap().u8(0x02);
        a.table(&[("x-queue-type", "quorum")]).unwrap();
        let f = method_frame(1, 50, 10, &a.0);
        assert_eq!(f[0], 1);
        assert_eq!(&f[1..3], &[0, 1]);
        let size = u32::from_be_bytes([f[3], f[4], f[5], f[6]]) as usize;
        assert_eq!(f.len(), 7 + size + 1);
        assert_eq!(*f.last().unwrap(), 0xCE);
        assert_eq!(&f[7..11], &[0, 50, 0, 10]);
        assert_eq!(&f[11..13], &[0, 0]);
        assert_eq!(&f[13..15], &[1, b'q']);
        assert_eq!(f[15], 0x02);
        let table_len = u32::from_be_bytes([f[16], f[17], f[18], f[19]]) as usize;
        assert_eq!(table_len, 1 + 12 + 1 + 4 + 6);
        assert_eq!(f[20], 12);
        assert_eq!(&f[21..33], b"x-queue-type");
        assert_eq!(f[33], b'S');
    }

    #[test]
    fn long_names_are_rejected() {
        let mut a = W::default();
        assert!(a.short(&"x".repeat(256)).is_err());
    }

    #[test]
    fn close_reason_is_read() {
        let mut a = W::default();
        a.u16(404)
            .short("NOT_FOUND - no exchange 'x'")
            .unwrap()
            .u16(50)
            .u16(20);
        let m = Method {
            class: 20,
            method: 40,
            args: a.0,
        };
        assert_eq!(
            m.close_reason(),
            (404, "NOT_FOUND - no exchange 'x'".into())
        );
    }
}
