//! The reader: `XREADGROUP` on its own connection, and ending a `BLOCK` early.

use std::sync::Arc;
use std::time::Duration;

use ::redis::streams::StreamReadReply;

use super::super::with_retry;
use super::Shared;
use crate::error::ErrorCode;
use crate::sync::lock;

impl Shared {
    pub(super) async fn reader(self: Arc<Self>) {
        let mut subs = self.ctx.subscriptions.watch();
        let mut failures = 0u32;
        let mut recreate = false;
        loop {
            if self.stopping() {
                return;
            }
            subs.borrow_and_update();
            let keys = self.keys();
            if keys.is_empty() {
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = subs.changed() => {}
                    _ = stop.wait_for(|s| *s) => return,
                    // '*' streams are discovered by the janitor
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
            if let Err(e) = self.ensure_groups(&keys, recreate).await {
                failures += 1;
                self.report(failures, &e.full_message());
                if !self.pause(self.reconnect.delay(failures)).await {
                    return;
                }
                continue;
            }
            recreate = false;
            let (mut conn, gen) = match self.read.get(self.connect_timeout).await {
                Ok(c) => c,
                Err(e) if e.code == ErrorCode::Closed => return,
                Err(e) => {
                    failures += 1;
                    self.report(failures, &e.full_message());
                    if !self.pause(self.reconnect.delay(failures)).await {
                        return;
                    }
                    continue;
                }
            };
            let known = matches!(*lock(&self.read_client), Some((g, _)) if g == gen);
            if !known {
                match ::redis::cmd("CLIENT")
                    .arg("ID")
                    .query_async::<i64>(&mut conn)
                    .await
                {
                    Ok(id) => *lock(&self.read_client) = Some((gen, id)),
                    Err(e) => self.read.failed(gen, &e),
                }
            }
            let mut cmd = ::redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(&self.s.group)
                .arg(&self.s.consumer)
                .arg("COUNT")
                .arg(self.s.read_count)
                .arg("BLOCK")
                .arg(self.s.block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&keys);
            for _ in &keys {
                cmd.arg(">");
            }
            let mut stop = self.stop.clone();
            let res: ::redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
                r = cmd.query_async(&mut conn) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            match res {
                Ok(reply) => {
                    failures = 0;
                    for sk in reply.map(|r| r.keys).unwrap_or_default() {
                        for entry in sk.ids {
                            if !self.deliver(&sk.key, entry, 1).await {
                                return;
                            }
                        }
                    }
                }
                Err(e) => {
                    self.read.failed(gen, &e);
                    let text = e.to_string();
                    if text.contains("NOGROUP") {
                        // The stream or its group vanished (e.g. Redis restarted without
                        // persistence): create it again from the start of the stream.
                        self.ctx.log.warn(&format!(
                            "consumer group '{}' is missing on Redis at {}; creating it again",
                            self.s.group, self.display
                        ));
                        lock(&self.ready).clear();
                        recreate = true;
                        continue;
                    }
                    failures += 1;
                    self.report(failures, &format!("XREADGROUP failed: {text}"));
                    if !self.pause(self.reconnect.delay(failures)).await {
                        return;
                    }
                }
            }
        }
    }

    /// Ends a blocking read when the subscriptions change, so new topics are read at once.
    pub(super) async fn unblocker(self: Arc<Self>) {
        let mut subs = self.ctx.subscriptions.watch();
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                r = subs.changed() => if r.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            self.unblock_reader().await;
        }
    }

    /// Ends the reader's blocking `XREADGROUP` so that it reads the current set of streams.
    pub(super) async fn unblock_reader(&self) {
        let Some((_, id)) = *lock(&self.read_client) else {
            return;
        };
        let mut cmd = ::redis::cmd("CLIENT");
        cmd.arg("UNBLOCK").arg(id);
        let _ = with_retry(
            &self.cmd,
            self.connect_timeout,
            "CLIENT UNBLOCK",
            |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async::<i64>(&mut c).await }
            },
        )
        .await;
    }
}
