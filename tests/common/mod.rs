//! Helpers of the integration tier: a free loopback port, a scripted fake MQTT 3.1.1 broker and a
//! fake AMQP 1.0 peer (fe2o3-amqp's acceptor), both on 127.0.0.1 only. Fakes, named as such: they
//! do what no real broker here can be made to do on cue (refuse a CONNACK, withhold a PUBACK, drop
//! a connection in the middle of a stream, reject or release a transfer, refuse an attach).
#![allow(dead_code)] // each test file uses a part

mod napi_stubs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cds_native_messaging::engine::Handler;
use cds_native_messaging::message::{Inbound, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A file box store at `<dir>/box` (dead letters and malformed lines beside it, no fsync), as the
/// memory tests drive it without an engine.
pub fn box_store(dir: &std::path::Path) -> cds_native_messaging::transport::file::store::BoxStore {
    use cds_native_messaging::transport::file::lock::{BoxLock, LockSettings};
    let path = dir.join("box");
    let lock = BoxLock::new(
        &path,
        cds_native_messaging::transport::support::host::host_name(),
        LockSettings {
            timeout: Duration::from_secs(5),
            stale_after: Duration::from_secs(60),
        },
    );
    cds_native_messaging::transport::file::store::BoxStore::new(
        path,
        dir.join("box.dead"),
        dir.join("box.malformed"),
        lock,
        false,
    )
}

/// A message body in @sap/cds's box shape whose data is one string of `pad` bytes.
pub fn padded_message(pad: usize) -> String {
    format!(
        "{{\"data\":{{\"pad\":\"{}\"}},\"headers\":{{}}}}",
        "x".repeat(pad)
    )
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until `check()` holds, or panics naming `what` after `timeout`.
pub async fn until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !check() {
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A handler that records every delivery and answers with `outcome(message)`.
pub struct Recorder {
    /// Every delivery, in order.
    pub seen: Mutex<Vec<Inbound>>,
    outcome: Box<dyn Fn(&Inbound) -> Outcome + Send + Sync>,
    delay: Duration,
}

impl Recorder {
    /// Acknowledges everything after `delay`.
    pub fn acking(delay: Duration) -> Arc<Self> {
        Arc::new(Recorder {
            seen: Mutex::new(Vec::new()),
            outcome: Box::new(|_| Outcome::Ack),
            delay,
        })
    }

    /// Answers each message with `outcome`.
    pub fn with(outcome: impl Fn(&Inbound) -> Outcome + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Recorder {
            seen: Mutex::new(Vec::new()),
            outcome: Box::new(outcome),
            delay: Duration::ZERO,
        })
    }

    /// The payloads seen so far.
    pub fn payloads(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.payload.clone())
            .collect()
    }
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, batch: Vec<Inbound>) -> cds_native_messaging::Result<Vec<Outcome>> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let out = batch.iter().map(|m| (self.outcome)(m)).collect();
        self.seen.lock().unwrap().extend(batch);
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// A scripted fake MQTT 3.1.1 broker (rumqttc's tests/broker.rs is the model).

/// A PUBLISH the fake received from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Client id of the sender.
    pub client: String,
    /// Topic name.
    pub topic: String,
    /// Payload as text.
    pub payload: String,
    /// QoS of the publish.
    pub qos: u8,
    /// Its packet id (QoS 1).
    pub pid: u16,
}

/// What the fake does; change it at any time through [`FakeMqtt::script`].
#[derive(Debug, Clone)]
pub struct Script {
    /// CONNACK return code (0 = accepted, 5 = not authorized, …).
    pub connack: u8,
    /// Session-present flag of an accepted CONNACK.
    pub session_present: bool,
    /// Answer QoS 1 publishes with PUBACK.
    pub puback: bool,
    /// Hold the PUBACK of the latest publish back until the client sends its next packet: what a
    /// broker writing with Nagle's algorithm does while our kernel delays its TCP ACK (Mosquitto's
    /// default), made deterministic. A client that waits silently for it never gets it.
    pub hold_last_puback: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            connack: 0,
            session_present: false,
            puback: true,
            hold_last_puback: false,
        }
    }
}

#[derive(Default)]
struct State {
    script: Script,
    connects: Vec<String>,
    published: Vec<Published>,
    /// (client id, packet id) of every PUBACK a client sent.
    acked: Vec<(String, u16)>,
    /// Client id of every PINGREQ a client sent.
    pingreqs: Vec<String>,
    subscriptions: Vec<(String, String)>,
    conns: HashMap<u64, (String, mpsc::UnboundedSender<Command>)>,
    next: u64,
}

enum Command {
    Send(Vec<u8>),
    Close,
}

/// A fake MQTT 3.1.1 broker on a free loopback port.
#[derive(Clone)]
pub struct FakeMqtt {
    /// Its port.
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl FakeMqtt {
    /// Starts listening with `script`.
    pub async fn start(script: Script) -> FakeMqtt {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake broker");
        let port = listener.local_addr().expect("its address").port();
        let state = Arc::new(Mutex::new(State {
            script,
            ..Default::default()
        }));
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = socket.set_nodelay(true);
                tokio::spawn(connection(socket, s.clone()));
            }
        });
        FakeMqtt { port, state }
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Changes the script for what comes next.
    pub fn script(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.state.lock().unwrap().script);
    }

    /// Client ids of every CONNECT so far.
    pub fn connects(&self) -> Vec<String> {
        self.state.lock().unwrap().connects.clone()
    }

    /// Every PUBLISH received from clients.
    pub fn published(&self) -> Vec<Published> {
        self.state.lock().unwrap().published.clone()
    }

    /// How many PINGREQs clients whose id starts with `client` sent.
    pub fn pingreqs(&self, client: &str) -> usize {
        let st = self.state.lock().unwrap();
        st.pingreqs.iter().filter(|c| c.starts_with(client)).count()
    }

    /// Packet ids of every PUBACK `client` sent.
    pub fn acked(&self, client: &str) -> Vec<u16> {
        let st = self.state.lock().unwrap();
        st.acked
            .iter()
            .filter(|(c, _)| c == client)
            .map(|(_, p)| *p)
            .collect()
    }

    /// Filters `client` subscribed.
    pub fn subscriptions(&self, client: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.subscriptions
            .iter()
            .filter(|(c, _)| c == client)
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// Whether `client` is connected now.
    pub fn connected(&self, client: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .conns
            .values()
            .any(|(c, _)| c == client)
    }

    /// Sends a QoS 1 PUBLISH to the connected `client`.
    pub fn deliver(&self, client: &str, topic: &str, payload: &str, pid: u16, dup: bool) {
        let mut body = Vec::new();
        put_str(&mut body, topic);
        body.extend_from_slice(&pid.to_be_bytes());
        body.extend_from_slice(payload.as_bytes());
        let first = 0x30 | 0x02 | if dup { 0x08 } else { 0 };
        self.send(client, packet(first, &body));
    }

    /// Drops every connection (as a broker that crashed would).
    pub fn drop_connections(&self) {
        let st = self.state.lock().unwrap();
        for (_, tx) in st.conns.values() {
            let _ = tx.send(Command::Close);
        }
    }

    fn send(&self, client: &str, bytes: Vec<u8>) {
        let st = self.state.lock().unwrap();
        for (c, tx) in st.conns.values() {
            if c == client {
                let _ = tx.send(Command::Send(bytes.clone()));
            }
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn take_str(b: &[u8], at: &mut usize) -> Option<String> {
    let len = u16::from_be_bytes([*b.get(*at)?, *b.get(*at + 1)?]) as usize;
    let s = b.get(*at + 2..*at + 2 + len)?;
    *at += 2 + len;
    Some(String::from_utf8_lossy(s).into_owned())
}

async fn read_packet(socket: &mut tokio::net::tcp::OwnedReadHalf) -> Option<(u8, Vec<u8>)> {
    let first = socket.read_u8().await.ok()?;
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let b = socket.read_u8().await.ok()?;
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 || shift > 21 {
            break;
        }
    }
    let mut body = vec![0; len];
    socket.read_exact(&mut body).await.ok()?;
    Some((first, body))
}

async fn connection(socket: TcpStream, state: Arc<Mutex<State>>) {
    let (mut rd, mut wr) = socket.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Command>();
    let writer = tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Command::Send(b) => {
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Command::Close => {
                    let _ = wr.shutdown().await;
                    break;
                }
            }
        }
    });
    let mut id = None;
    let mut client = String::new();
    let mut held: Option<Vec<u8>> = None;
    while let Some((first, body)) = read_packet(&mut rd).await {
        if writer.is_finished() {
            break;
        }
        if let Some(ack) = held.take() {
            let _ = tx.send(Command::Send(ack));
        }
        match first >> 4 {
            1 => {
                // CONNECT: protocol name, level, flags, keep-alive, client id
                let mut at = 0;
                let _ = take_str(&body, &mut at);
                at += 4;
                client = take_str(&body, &mut at).unwrap_or_default();
                let mut st = state.lock().unwrap();
                st.connects.push(client.clone());
                let script = st.script.clone();
                let present = u8::from(script.connack == 0 && script.session_present);
                let _ = tx.send(Command::Send(packet(0x20, &[present, script.connack])));
                if script.connack != 0 {
                    let _ = tx.send(Command::Close);
                    break;
                }
                st.next += 1;
                let n = st.next;
                id = Some(n);
                st.conns.insert(n, (client.clone(), tx.clone()));
            }
            3 => {
                let qos = (first >> 1) & 3;
                let mut at = 0;
                let topic = take_str(&body, &mut at).unwrap_or_default();
                let pid = if qos > 0 {
                    let p = u16::from_be_bytes([body[at], body[at + 1]]);
                    at += 2;
                    p
                } else {
                    0
                };
                let payload = String::from_utf8_lossy(&body[at..]).into_owned();
                let mut st = state.lock().unwrap();
                st.published.push(Published {
                    client: client.clone(),
                    topic,
                    payload,
                    qos,
                    pid,
                });
                if qos == 1 && st.script.puback {
                    let ack = packet(0x40, &pid.to_be_bytes());
                    if st.script.hold_last_puback {
                        held = Some(ack);
                    } else {
                        let _ = tx.send(Command::Send(ack));
                    }
                }
            }
            4 => {
                let pid = u16::from_be_bytes([body[0], body[1]]);
                state.lock().unwrap().acked.push((client.clone(), pid));
            }
            8 => {
                // SUBSCRIBE: packet id, then (filter, qos) pairs; granted as asked
                let mut at = 2;
                let mut codes = Vec::new();
                let mut st = state.lock().unwrap();
                while at < body.len() {
                    let Some(filter) = take_str(&body, &mut at) else {
                        break;
                    };
                    codes.push(body.get(at).copied().unwrap_or(0).min(1));
                    at += 1;
                    st.subscriptions.push((client.clone(), filter));
                }
                let mut ack = body[0..2].to_vec();
                ack.extend(codes);
                let _ = tx.send(Command::Send(packet(0x90, &ack)));
            }
            10 => {
                let _ = tx.send(Command::Send(packet(0xB0, &body[0..2])));
            }
            12 => {
                state.lock().unwrap().pingreqs.push(client.clone());
                let _ = tx.send(Command::Send(packet(0xD0, &[])));
            }
            14 => break,
            _ => {}
        }
    }
    if let Some(id) = id {
        state.lock().unwrap().conns.remove(&id);
    }
    let _ = tx.send(Command::Close);
}

// ---------------------------------------------------------------------------------------------
// A fake AMQP 1.0 peer (fe2o3-amqp's acceptor): takes SASL ANONYMOUS, accepts sessions and links,
// settles every transfer it receives with the outcome `verdict(address, body)` chooses, and refuses
// (attaches, then closes with `amqp:not-found`) the links whose address `refuse` names.

pub use fe2o3_amqp::types::primitives::Value;

/// The outcome the fake gives one received transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `accepted`
    Accept,
    /// `rejected` with an `amqp:not-allowed` error
    Reject,
    /// `released`
    Release,
}

/// A transfer the fake received: its link's target address (or `to`) and body text.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Link target address, or the message's `to` on an anonymous link.
    pub address: String,
    /// The Data section as text.
    pub body: String,
}

type VerdictFn = Arc<dyn Fn(&Transfer) -> Verdict + Send + Sync>;
type RefuseFn = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The running fake peer.
#[derive(Clone)]
pub struct FakeAmqp {
    /// Its port.
    pub port: u16,
    /// Every transfer received, in order.
    pub received: Arc<Mutex<Vec<Transfer>>>,
    /// Addresses of refused attaches.
    pub refused: Arc<Mutex<Vec<String>>>,
}

impl FakeAmqp {
    /// Starts the fake on a free loopback port.
    pub async fn start(
        verdict: impl Fn(&Transfer) -> Verdict + Send + Sync + 'static,
        refuse: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> FakeAmqp {
        use fe2o3_amqp::acceptor::{ConnectionAcceptor, SaslAnonymousMechanism};
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake AMQP peer");
        let port = listener.local_addr().expect("its address").port();
        let fake = FakeAmqp {
            port,
            received: Default::default(),
            refused: Default::default(),
        };
        let verdict: VerdictFn = Arc::new(verdict);
        let refuse: RefuseFn = Arc::new(refuse);
        let f = fake.clone();
        tokio::spawn(async move {
            let acceptor = Arc::new(
                ConnectionAcceptor::builder()
                    .container_id("fake-amqp")
                    .sasl_acceptor(SaslAnonymousMechanism::new())
                    .build(),
            );
            while let Ok((socket, _)) = listener.accept().await {
                let (acceptor, f, verdict, refuse) =
                    (acceptor.clone(), f.clone(), verdict.clone(), refuse.clone());
                tokio::spawn(async move {
                    let Ok(mut conn) = acceptor.accept(socket).await else {
                        return;
                    };
                    let sessions = fe2o3_amqp::acceptor::SessionAcceptor::new();
                    while let Some(incoming) = conn.next_incoming_session().await {
                        let Ok(session) =
                            sessions.accept_incoming_session(incoming, &mut conn).await
                        else {
                            continue;
                        };
                        tokio::spawn(links(session, f.clone(), verdict.clone(), refuse.clone()));
                    }
                });
            }
        });
        fake
    }

    /// `amqp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("amqp://127.0.0.1:{}", self.port)
    }
}

async fn links(
    mut session: fe2o3_amqp::acceptor::ListenerSessionHandle,
    fake: FakeAmqp,
    verdict: VerdictFn,
    refuse: RefuseFn,
) {
    use fe2o3_amqp::acceptor::{LinkAcceptor, LinkEndpoint};
    use fe2o3_amqp::types::definitions::{AmqpError, Error as AmqpErr};
    use fe2o3_amqp::types::messaging::Body;
    let acceptor = LinkAcceptor::new();
    let mut senders = Vec::new(); // outgoing links are kept open, idle
    while let Ok(link) = acceptor.accept(&mut session).await {
        match link {
            LinkEndpoint::Receiver(mut r) => {
                let address = r
                    .target()
                    .as_ref()
                    .and_then(|t| t.address.clone())
                    .unwrap_or_default();
                if refuse(&address) {
                    fake.refused.lock().unwrap().push(address.clone());
                    tokio::spawn(async move {
                        let _ = r
                            .close_with_error(AmqpErr::new(
                                AmqpError::NotFound,
                                Some(format!("no address '{address}'")),
                                None,
                            ))
                            .await;
                    });
                    continue;
                }
                let (fake, verdict) = (fake.clone(), verdict.clone());
                tokio::spawn(async move {
                    while let Ok(d) = r.recv::<Body<Value>>().await {
                        let to = d.message().properties.as_ref().and_then(|p| p.to.clone());
                        let body = match d.body() {
                            Body::Data(batch) => batch
                                .iter()
                                .map(|x| String::from_utf8_lossy(&x.0).into_owned())
                                .collect(),
                            other => format!("{other:?}"),
                        };
                        let t = Transfer {
                            address: to.unwrap_or_else(|| address.clone()),
                            body,
                        };
                        let v = verdict(&t);
                        fake.received.lock().unwrap().push(t);
                        let _ = match v {
                            Verdict::Accept => r.accept(&d).await,
                            Verdict::Reject => {
                                r.reject(
                                    &d,
                                    AmqpErr::new(
                                        AmqpError::NotAllowed,
                                        Some("the fake refuses it".to_string()),
                                        None,
                                    ),
                                )
                                .await
                            }
                            Verdict::Release => r.release(&d).await,
                        };
                    }
                });
            }
            LinkEndpoint::Sender(s) => senders.push(s),
        }
    }
}
