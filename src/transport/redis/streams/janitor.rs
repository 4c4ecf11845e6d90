//! The janitor: keeps owned entries fresh, takes over idle entries of crashed consumers and
//! discovers streams for `'*'`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ::redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply};

use super::super::with_retry;
use super::keys::*;
use super::{Op, Shared, DISCOVERY_INTERVAL};
use crate::error::Result;
use crate::sync::lock;

impl Shared {
    pub(super) async fn janitor(self: Arc<Self>) {
        let period = (self.s.claim_after / 4).max(Duration::from_millis(25));
        let tick = period.min(Duration::from_millis(500));
        let mut last_discovery: Option<tokio::time::Instant> = None;
        let mut last_claim = tokio::time::Instant::now();
        loop {
            if !self.pause(tick).await {
                return;
            }
            if self.ctx.subscriptions.snapshot().all
                && last_discovery.is_none_or(|t| t.elapsed() >= DISCOVERY_INTERVAL)
            {
                last_discovery = Some(tokio::time::Instant::now());
                match self.discover().await {
                    Ok(true) => self.unblock_reader().await,
                    Ok(false) => {}
                    Err(e) => self
                        .ctx
                        .log
                        .debug(&format!("cannot list streams: {}", e.full_message())),
                }
            }
            if last_claim.elapsed() < period {
                continue;
            }
            last_claim = tokio::time::Instant::now();
            if let Err(e) = self.touch().await {
                self.ctx.log.debug(&format!(
                    "cannot refresh pending messages: {}",
                    e.full_message()
                ));
            }
            if let Err(e) = self.reclaim().await {
                self.ctx.log.debug(&format!(
                    "cannot take over pending messages: {}",
                    e.full_message()
                ));
            }
        }
    }

    /// Resets the idle time of entries this consumer still works on, so others do not take them.
    pub(super) async fn touch(&self) -> Result<()> {
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        for (k, id) in lock(&self.owned).iter() {
            by_key.entry(k.clone()).or_default().push(id.clone());
        }
        if by_key.is_empty() {
            return Ok(());
        }
        let min_idle = (self.s.claim_after / 4).as_millis() as u64;
        let mut pipe = ::redis::pipe();
        for (k, ids) in &by_key {
            for chunk in ids.chunks(500) {
                pipe.cmd("XCLAIM")
                    .arg(k)
                    .arg(&self.s.group)
                    .arg(&self.s.consumer)
                    .arg(min_idle)
                    .arg(chunk)
                    .arg("JUSTID")
                    .ignore();
            }
        }
        with_retry(&self.cmd, self.connect_timeout, "XCLAIM", |mut c| {
            let pipe = &pipe;
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await
    }

    /// Takes over entries idle for `claim_after` (their consumer crashed or hangs).
    pub(super) async fn reclaim(self: &Arc<Self>) -> Result<()> {
        let keys: Vec<String> = {
            let ready = lock(&self.ready);
            self.keys()
                .into_iter()
                .filter(|k| ready.contains(k))
                .collect()
        };
        for key in keys {
            let mut cursor = "0-0".to_string();
            loop {
                let room = self.ctx.deliveries.capacity();
                if room == 0 || self.stopping() {
                    return Ok(());
                }
                let count = room.min(self.s.read_count);
                let mut cmd = ::redis::cmd("XAUTOCLAIM");
                cmd.arg(&key)
                    .arg(&self.s.group)
                    .arg(&self.s.consumer)
                    .arg(self.s.claim_after.as_millis() as u64)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(count);
                let reply: StreamAutoClaimReply =
                    with_retry(&self.cmd, self.connect_timeout, "XAUTOCLAIM", |mut c| {
                        let cmd = &cmd;
                        async move { cmd.query_async(&mut c).await }
                    })
                    .await?;
                if !reply.deleted_ids.is_empty() {
                    self.ctx.log.warn(&format!(
                        "{} pending message(s) of stream '{key}' were deleted from the stream (trimmed?) before they were acknowledged",
                        reply.deleted_ids.len()
                    ));
                }
                if !reply.claimed.is_empty() {
                    self.redeliver_claimed(&key, reply.claimed).await?;
                }
                if reply.next_stream_id == "0-0" {
                    break;
                }
                cursor = reply.next_stream_id;
            }
        }
        Ok(())
    }

    pub(super) async fn redeliver_claimed(
        self: &Arc<Self>,
        key: &str,
        claimed: Vec<StreamId>,
    ) -> Result<()> {
        let (Some(first), Some(last)) = (claimed.first(), claimed.last()) else {
            return Ok(());
        };
        let mut cmd = ::redis::cmd("XPENDING");
        cmd.arg(key)
            .arg(&self.s.group)
            .arg(&first.id)
            .arg(&last.id)
            .arg(claimed.len() + lock(&self.owned).len())
            .arg(&self.s.consumer);
        let pending: StreamPendingCountReply =
            with_retry(&self.cmd, self.connect_timeout, "XPENDING", |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        let counts: HashMap<String, usize> = pending
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered))
            .collect();
        self.ctx.log.info(&format!(
            "took over {} pending message(s) of stream '{key}' not acknowledged within {} ms",
            claimed.len(),
            self.s.claim_after.as_millis()
        ));
        let max = self.ctx.policy.max_attempts;
        for entry in claimed {
            let attempt = counts
                .get(&entry.id)
                .map(|&n| u32::try_from(n).unwrap_or(u32::MAX))
                .unwrap_or(2)
                .max(1);
            if attempt > max {
                let topic = topic_of(&self.s.prefix, key).to_string();
                let error = format!(
                    "delivered {} time(s) without being acknowledged (the consumer crashed or did not finish within claimAfter)",
                    attempt - 1
                );
                self.ctx.log.error(&format!(
                    "message on topic '{topic}' {error} and was moved to the dead-letter place {}",
                    self.s.dead_letter_stream
                ));
                lock(&self.owned).insert((key.to_string(), entry.id.clone()));
                let _ = self.ops.send(Op::DeadLetter {
                    key: key.to_string(),
                    id: entry.id.clone(),
                    payload: entry_payload(&entry.map),
                    topic,
                    attempts: attempt - 1,
                    error,
                });
                continue;
            }
            if !self.deliver(key, entry, attempt).await {
                break;
            }
        }
        Ok(())
    }

    /// Lists the streams under the prefix (for `'*'`); `true` when new streams were found. Streams
    /// that appear after the first listing are read from their first entry.
    pub(super) async fn discover(&self) -> Result<bool> {
        let pattern = format!("{}*", glob_escape(&self.s.prefix));
        let mut cursor: u64 = 0;
        let mut found = Vec::new();
        for _ in 0..1000 {
            let mut cmd = ::redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .arg("TYPE")
                .arg("stream");
            let (next, keys): (u64, Vec<String>) =
                with_retry(&self.cmd, self.connect_timeout, "SCAN", |mut c| {
                    let cmd = &cmd;
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
            found.extend(keys);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        found.retain(|k| *k != self.s.dead_letter_stream && !k.ends_with(":dead-letter"));
        found.sort();
        let first = !self.scanned.swap(true, Ordering::AcqRel);
        let mut discovered = lock(&self.discovered);
        let new: Vec<String> = found
            .iter()
            .filter(|k| !discovered.contains(k))
            .cloned()
            .collect();
        if !first {
            lock(&self.fresh).extend(new.iter().cloned());
        }
        *discovered = found;
        Ok(!new.is_empty())
    }

    /// Removes this consumer from its groups when it has nothing pending (on close).
    pub(super) async fn forget_consumer(&self) {
        let keys: Vec<String> = lock(&self.ready).iter().cloned().collect();
        for key in keys {
            let mut check = ::redis::cmd("XPENDING");
            check
                .arg(&key)
                .arg(&self.s.group)
                .arg("-")
                .arg("+")
                .arg(1)
                .arg(&self.s.consumer);
            let Ok(p) = with_retry(
                &self.cmd,
                Duration::from_millis(500),
                "XPENDING",
                |mut c| {
                    let cmd = &check;
                    async move { cmd.query_async::<StreamPendingCountReply>(&mut c).await }
                },
            )
            .await
            else {
                return;
            };
            if !p.ids.is_empty() {
                continue;
            }
            let mut del = ::redis::cmd("XGROUP");
            del.arg("DELCONSUMER")
                .arg(&key)
                .arg(&self.s.group)
                .arg(&self.s.consumer);
            let _ = with_retry(&self.cmd, Duration::from_millis(500), "XGROUP", |mut c| {
                let cmd = &del;
                async move { cmd.query_async::<()>(&mut c).await }
            })
            .await;
        }
    }
}
