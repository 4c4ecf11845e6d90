//! The AMQP connection shared by the engines bound to one broker binding, and its registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::{connection::ConnectionHandle, Session};

use super::config::ConnSettings;
use super::error::{ConnectError, Failure};
use super::net;
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::sync::lock;
use crate::transport::support::backoff::Reconnect;

static LINK_SEQ: AtomicU64 = AtomicU64::new(1);

pub(super) fn link_name(container: &str, what: &str) -> String {
    format!(
        "{container}-{what}-{}-{}",
        std::process::id(),
        LINK_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------------
// Shared connection
// ---------------------------------------------------------------------------------------------

pub(super) struct ConnState {
    pub(super) handle: Option<ConnectionHandle<()>>,
    pub(super) generation: u64,
    pub(super) ever_connected: bool,
    /// Failures in a row, forgotten once a connection stayed up for a while.
    pub(super) reconnect: Reconnect,
    pub(super) last_failure: Option<Instant>,
}

impl ConnState {
    /// The connection went away: one that did not stay up for long delays the next connect.
    fn lost(&mut self) {
        if !self.reconnect.on_lost().is_zero() {
            self.last_failure = Some(Instant::now());
        }
    }
}

/// One AMQP connection, shared by the engines bound to the same broker binding.
pub struct SharedConn {
    pub(super) settings: ConnSettings,
    pub(super) state: tokio::sync::Mutex<ConnState>,
    pub(super) log: Logger,
    pub(super) broker: super::broker::Identity,
}

pub(super) fn registry() -> &'static Mutex<HashMap<String, Weak<SharedConn>>> {
    static R: OnceLock<Mutex<HashMap<String, Weak<SharedConn>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

impl SharedConn {
    /// The connection for `settings`: shared unless `dedicated`.
    pub(super) fn get(settings: &ConnSettings, log: &Logger) -> Arc<SharedConn> {
        let make = || {
            Arc::new(SharedConn {
                settings: settings.clone(),
                state: tokio::sync::Mutex::new(ConnState {
                    handle: None,
                    generation: 0,
                    ever_connected: false,
                    reconnect: Reconnect::new(settings.backoff()),
                    last_failure: None,
                }),
                log: log.clone(),
                broker: Default::default(),
            })
        };
        if settings.dedicated {
            return make();
        }
        let key = settings.share_key();
        let mut reg = lock(registry());
        reg.retain(|_, w| w.strong_count() > 0);
        if let Some(c) = reg.get(&key).and_then(Weak::upgrade) {
            return c;
        }
        let c = make();
        reg.insert(key, Arc::downgrade(&c));
        c
    }

    /// Begins a session, (re)connecting first when there is no usable connection or when the
    /// connection of generation `stale` failed a user.
    pub(super) async fn session(
        &self,
        stale: Option<u64>,
    ) -> Result<(SessionHandle<()>, u64), ConnectError> {
        let mut st = self.state.lock().await;
        if let (Some(g), Some(_)) = (stale, &st.handle) {
            if g == st.generation {
                if let Some(mut h) = st.handle.take() {
                    let _ = tokio::time::timeout(Duration::from_millis(200), h.close()).await;
                    st.lost();
                }
            }
        }
        if st.handle.as_ref().is_some_and(|h| h.is_closed()) {
            st.handle = None;
            st.lost();
        }
        if st.handle.is_none() {
            if let Some(t) = st.last_failure {
                // Several links fail at once: one connection attempt per back-off step.
                let wait = st.reconnect.next_delay();
                if t.elapsed() < wait {
                    tokio::time::sleep(wait - t.elapsed()).await;
                }
            }
            match net::open(&self.settings).await {
                Ok((h, broker)) => {
                    let endpoint = self.settings.endpoint();
                    self.broker.identified(broker, &endpoint, &self.log);
                    if st.ever_connected {
                        self.log.stats().reconnected();
                    }
                    if st.reconnect.failures() > 0 || st.ever_connected {
                        self.log
                            .info(&format!("connected to {} again", self.settings.endpoint()));
                    }
                    st.handle = Some(h);
                    st.generation += 1;
                    st.ever_connected = true;
                    st.reconnect.on_connected();
                    st.last_failure = None;
                }
                Err(e) => {
                    st.reconnect.on_failed();
                    st.last_failure = Some(Instant::now());
                    let kind = if st.ever_connected {
                        e.kind
                    } else {
                        Failure::Permanent
                    };
                    return Err(ConnectError {
                        error: e.error,
                        kind: if e.kind == Failure::Permanent {
                            Failure::Permanent
                        } else {
                            kind
                        },
                    });
                }
            }
        }
        let generation = st.generation;
        let Some(h) = st.handle.as_mut() else {
            return Err(ConnectError {
                error: Error::new(ErrorCode::Internal, "no connection after connecting"),
                kind: Failure::Transient,
            });
        };
        match tokio::time::timeout(self.settings.connect_timeout, Session::begin(h)).await {
            Ok(Ok(s)) => Ok((s, generation)),
            Ok(Err(e)) => {
                st.handle = None;
                Err(ConnectError {
                    error: Error::with_cause(
                        ErrorCode::ConnectionFailed,
                        format!(
                            "cannot begin an AMQP session on {}",
                            self.settings.endpoint()
                        ),
                        e,
                    ),
                    kind: Failure::Transient,
                })
            }
            Err(_) => {
                st.handle = None;
                Err(ConnectError {
                    error: Error::new(
                        ErrorCode::ConnectionFailed,
                        format!(
                            "beginning an AMQP session on {} timed out",
                            self.settings.endpoint()
                        ),
                    ),
                    kind: Failure::Transient,
                })
            }
        }
    }

    /// Whether the connection of `generation` still runs (unknown while someone reconnects: yes).
    pub(super) fn alive(&self, generation: u64) -> bool {
        match self.state.try_lock() {
            Ok(st) => {
                st.generation == generation && st.handle.as_ref().is_some_and(|h| !h.is_closed())
            }
            Err(_) => true,
        }
    }

    /// Resolves once the connection of `generation` is gone (checked twice a second: fe2o3-amqp
    /// does not wake a sender waiting for credit when the connection drops).
    pub(super) async fn lost(&self, generation: u64) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !self.alive(generation) {
                return;
            }
        }
    }

    /// Closes the connection (used when the last user closes).
    pub(super) async fn shutdown(&self) {
        let mut st = self.state.lock().await;
        if let Some(mut h) = st.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), h.close()).await;
        }
    }
}

pub(super) async fn end_session(mut s: SessionHandle<()>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), s.end()).await;
}
