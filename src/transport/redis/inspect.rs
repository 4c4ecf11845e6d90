//! Looking into Redis without consuming (for the `cds-native-messaging` CLI): a probe (connect,
//! authenticate, server version), stream and group facts, the streams dead-letter stream, and
//! tails that read without a consumer group (`XREAD`) or with a subscription of their own.

use std::collections::HashMap;
use std::time::Duration;

use ::redis::aio::{MultiplexedConnection, PubSubStream};
use ::redis::streams::StreamReadReply;
use ::redis::Value;
use futures::StreamExt;

use super::conn::{connection_error, Endpoint};
use super::streams::{entry_payload, glob_escape, topic_of};
use crate::error::{Error, ErrorCode, Result};

/// What a probe found out about the server.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `host:port` without credentials.
    pub address: String,
    /// `redis_version` of `INFO server` (or `valkey_version`), if the server told.
    pub version: Option<String>,
    /// The product (`Redis`, `Valkey`).
    pub product: String,
}

/// Connects (and authenticates, as the URL says) within `timeout`.
/// Replies may take longer than `timeout` (a blocking `XREAD`); only connecting is bounded by it.
pub async fn connect(ep: &Endpoint, timeout: Duration) -> Result<MultiplexedConnection> {
    let config = ::redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None);
    let open = ep.multiplexed(&config);
    match tokio::time::timeout(timeout, open).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(connection_error(
            format!("cannot connect to Redis at {}", ep.display),
            e,
        )),
        Err(_) => Err(Error::new(
            ErrorCode::ConnectionFailed,
            format!(
                "cannot connect to Redis at {}: no answer within {} ms",
                ep.display,
                timeout.as_millis()
            ),
        )),
    }
}

async fn query<T: ::redis::FromRedisValue>(
    c: &mut MultiplexedConnection,
    cmd: &mut ::redis::Cmd,
    what: &str,
) -> Result<T> {
    cmd.query_async(c)
        .await
        .map_err(|e| connection_error(format!("{what} failed"), e))
}

/// Connects, authenticates and reads `INFO server`.
pub async fn probe(ep: &Endpoint, timeout: Duration) -> Result<ServerInfo> {
    let mut c = connect(ep, timeout).await?;
    let info: String = query(&mut c, ::redis::cmd("INFO").arg("server"), "INFO server").await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    let (product, version) = match field("valkey_version") {
        Some(v) => ("Valkey", Some(v)),
        None => ("Redis", field("redis_version")),
    };
    Ok(ServerInfo {
        address: ep.display.to_string(),
        version,
        product: product.into(),
    })
}

/// Facts of one stream for a consumer group.
#[derive(Debug, Clone, Default)]
pub struct StreamFacts {
    /// The stream key.
    pub key: String,
    /// Whether the stream exists.
    pub exists: bool,
    /// Its length.
    pub length: u64,
    /// Whether `group` exists on it.
    pub group: bool,
    /// Entries delivered to the group and not yet acknowledged.
    pub pending: u64,
    /// Entries not yet read by the group (`lag`, Redis ≥ 7), if known.
    pub lag: Option<u64>,
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

fn pairs(v: &Value) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    match v {
        Value::Array(items) => {
            for kv in items.chunks(2) {
                if let [k, v] = kv {
                    out.insert(text(k), v.clone());
                }
            }
        }
        Value::Map(items) => {
            for (k, v) in items {
                out.insert(text(k), v.clone());
            }
        }
        _ => {}
    }
    out
}

fn int(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => text(other).parse().ok(),
    }
}

/// Length, group presence and backlog of each stream in `keys` for `group`.
pub async fn streams(
    ep: &Endpoint,
    timeout: Duration,
    keys: &[String],
    group: &str,
) -> Result<Vec<StreamFacts>> {
    let mut c = connect(ep, timeout).await?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let exists: bool = query(&mut c, ::redis::cmd("EXISTS").arg(key), "EXISTS").await?;
        let mut f = StreamFacts {
            key: key.clone(),
            exists,
            ..Default::default()
        };
        if exists {
            f.length = query(&mut c, ::redis::cmd("XLEN").arg(key), "XLEN").await?;
            let groups: Value = query(
                &mut c,
                ::redis::cmd("XINFO").arg("GROUPS").arg(key),
                "XINFO",
            )
            .await?;
            if let Value::Array(gs) = groups {
                for g in gs {
                    let g = pairs(&g);
                    if g.get("name").map(text).as_deref() == Some(group) {
                        f.group = true;
                        f.pending = int(g.get("pending")).unwrap_or(0);
                        f.lag = int(g.get("lag"));
                    }
                }
            }
        }
        out.push(f);
    }
    Ok(out)
}

/// The stream keys starting with `prefix` (SCAN, never KEYS).
pub async fn stream_keys(c: &mut MultiplexedConnection, prefix: &str) -> Result<Vec<String>> {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    loop {
        let (next, batch): (String, Vec<String>) = query(
            c,
            ::redis::cmd("SCAN")
                .arg(&cursor)
                .arg("MATCH")
                .arg(format!("{}*", glob_escape(prefix)))
                .arg("TYPE")
                .arg("stream")
                .arg("COUNT")
                .arg(500),
            "SCAN",
        )
        .await?;
        keys.extend(batch);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// One entry of the streams dead-letter stream, as the streams transport writes it.
#[derive(Debug, Clone, Default)]
pub struct DeadEntry {
    /// The entry id in the dead-letter stream.
    pub id: String,
    /// Topic of the message.
    pub topic: String,
    /// Its JSON payload.
    pub payload: String,
    /// The last handler error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// The stream it came from (redelivered there).
    pub stream: String,
    /// When it was dead-lettered (ms since the epoch; from the entry id).
    pub time_ms: u64,
}

/// Every entry of the dead-letter stream `key`, oldest first.
pub async fn dead_letters(ep: &Endpoint, timeout: Duration, key: &str) -> Result<Vec<DeadEntry>> {
    let mut c = connect(ep, timeout).await?;
    let reply: Vec<(String, HashMap<String, Value>)> = query(
        &mut c,
        ::redis::cmd("XRANGE").arg(key).arg("-").arg("+"),
        "XRANGE",
    )
    .await?;
    Ok(reply
        .into_iter()
        .map(|(id, f)| {
            let get = |n: &str| f.get(n).map(text).unwrap_or_default();
            DeadEntry {
                time_ms: id
                    .split('-')
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0),
                topic: get("topic"),
                payload: get("payload"),
                error: get("error"),
                attempts: get("attempts").parse().unwrap_or(0),
                stream: get("stream"),
                id,
            }
        })
        .collect())
}

/// Removes the dead letters `ids` from `key`; with `redeliver` first appends each to the stream it
/// came from (`XADD <stream> * payload <payload>`). Returns how many were moved.
pub async fn take_dead_letters(
    ep: &Endpoint,
    timeout: Duration,
    key: &str,
    ids: &[String],
    redeliver: bool,
) -> Result<usize> {
    let all = dead_letters(ep, timeout, key).await?;
    let mut c = connect(ep, timeout).await?;
    let mut n = 0;
    for d in all.iter().filter(|d| ids.contains(&d.id)) {
        if redeliver {
            if d.stream.is_empty() {
                return Err(Error::new(
                    ErrorCode::InvalidDataFormat,
                    format!(
                        "dead letter {} in {key} names no stream to redeliver to",
                        d.id
                    ),
                ));
            }
            let _: String = query(
                &mut c,
                ::redis::cmd("XADD")
                    .arg(&d.stream)
                    .arg("*")
                    .arg("payload")
                    .arg(&d.payload),
                "XADD",
            )
            .await?;
        }
        let _: u64 = query(&mut c, ::redis::cmd("XDEL").arg(key).arg(&d.id), "XDEL").await?;
        n += 1;
    }
    Ok(n)
}

/// A message seen by a tail.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Topic.
    pub topic: String,
    /// The payload as on the wire.
    pub payload: String,
    /// Stream entry id (streams) or empty.
    pub id: String,
}

/// Reads new entries of every stream under a prefix with plain `XREAD` (no group: the app's
/// consumer group keeps every entry).
pub struct StreamTail {
    ep: Endpoint,
    conn: MultiplexedConnection,
    prefix: String,
    last: HashMap<String, String>,
    scanned: Option<std::time::Instant>,
}

impl StreamTail {
    /// Connects; entries added from now on are seen.
    pub async fn open(ep: Endpoint, timeout: Duration, prefix: String) -> Result<Self> {
        let conn = connect(&ep, timeout).await?;
        let mut t = StreamTail {
            ep,
            conn,
            prefix,
            last: HashMap::new(),
            scanned: None,
        };
        t.discover(true).await?;
        Ok(t)
    }

    async fn discover(&mut self, initial: bool) -> Result<()> {
        for k in stream_keys(&mut self.conn, &self.prefix).await? {
            // Streams that exist at the start are read from their end; streams found later from
            // their beginning (they were created after the tail started).
            let start = if initial { "$" } else { "0-0" };
            self.last.entry(k).or_insert_with(|| start.to_string());
        }
        if initial {
            for (k, v) in self.last.iter_mut() {
                let last: Vec<(String, HashMap<String, Value>)> = ::redis::cmd("XREVRANGE")
                    .arg(k)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut self.conn)
                    .await
                    .map_err(|e| connection_error("XREVRANGE failed".into(), e))?;
                *v = last.first().map_or("0-0".into(), |(id, _)| id.clone());
            }
        }
        self.scanned = Some(std::time::Instant::now());
        Ok(())
    }

    /// Waits up to `block` for new entries.
    pub async fn next(&mut self, block: Duration) -> Result<Vec<Seen>> {
        if self
            .scanned
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            self.discover(false).await?;
        }
        if self.last.is_empty() {
            tokio::time::sleep(block).await;
            return Ok(Vec::new());
        }
        let keys: Vec<String> = self.last.keys().cloned().collect();
        let ids: Vec<String> = keys.iter().map(|k| self.last[k].clone()).collect();
        let mut cmd = ::redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(500)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&keys)
            .arg(&ids);
        let reply: Option<StreamReadReply> = cmd
            .query_async(&mut self.conn)
            .await
            .map_err(|e| connection_error(format!("XREAD at {} failed", self.ep.display), e))?;
        let mut out = Vec::new();
        for k in reply.map(|r| r.keys).unwrap_or_default() {
            for e in k.ids {
                out.push(Seen {
                    topic: topic_of(&self.prefix, &k.key).to_string(),
                    payload: entry_payload(&e.map),
                    id: e.id.clone(),
                });
                self.last.insert(k.key.clone(), e.id);
            }
        }
        Ok(out)
    }
}

/// A pub/sub subscription of its own (`PSUBSCRIBE`): Redis hands every subscriber a copy.
pub struct PubSubTail {
    stream: PubSubStream,
}

impl PubSubTail {
    /// Subscribes to the channel patterns (Redis glob syntax).
    pub async fn open(ep: &Endpoint, timeout: Duration, patterns: &[String]) -> Result<Self> {
        let mut ps = match tokio::time::timeout(timeout, ep.pubsub()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                return Err(connection_error(
                    format!("cannot connect to Redis at {}", ep.display),
                    e,
                ))
            }
            Err(_) => {
                return Err(Error::new(
                    ErrorCode::ConnectionFailed,
                    format!("cannot connect to Redis at {}: timed out", ep.display),
                ))
            }
        };
        for p in patterns {
            ps.psubscribe(p)
                .await
                .map_err(|e| connection_error("PSUBSCRIBE failed".into(), e))?;
        }
        Ok(PubSubTail {
            stream: ps.into_on_message(),
        })
    }

    /// Waits up to `wait` for messages; returns what arrived (at least one, or none on timeout).
    pub async fn next(&mut self, wait: Duration) -> Result<Vec<Seen>> {
        let mut out = Vec::new();
        match tokio::time::timeout(wait, self.stream.next()).await {
            Err(_) => return Ok(out),
            Ok(None) => {
                return Err(Error::new(
                    ErrorCode::ConnectionFailed,
                    "the subscription connection to Redis was closed",
                ))
            }
            Ok(Some(m)) => out.push(seen(&m)),
        }
        while let Ok(Some(m)) = tokio::time::timeout(Duration::ZERO, self.stream.next()).await {
            out.push(seen(&m));
            if out.len() >= 500 {
                break;
            }
        }
        Ok(out)
    }
}

fn seen(m: &::redis::Msg) -> Seen {
    Seen {
        topic: m.get_channel_name().to_string(),
        payload: String::from_utf8_lossy(m.get_payload_bytes()).into_owned(),
        id: String::new(),
    }
}
