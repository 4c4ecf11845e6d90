//! Provisioning the queue and its bindings where the profile can (RabbitMQ: over AMQP 0-9-1).

pub mod amqp091;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::AmqpConfig;
use super::connection::SharedConn;
use super::profile::Profile;
use super::receiver::{Attempts, ReceiverTask};
use crate::log::Logger;
use crate::transport::support::backoff::should_log;
use crate::transport::TransportContext;

/// Provisions the queue and its bindings, then keeps them in step with the subscriptions.
pub(super) struct Provisioner {
    pub(super) cfg: AmqpConfig,
    pub(super) ctx: TransportContext,
    pub(super) log: Logger,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) ready: watch::Sender<u64>,
    pub(super) receivers: Vec<JoinHandle<()>>,
    pub(super) conn: Arc<SharedConn>,
    pub(super) attempts: Arc<Mutex<Attempts>>,
    pub(super) reprovision: Arc<tokio::sync::Notify>,
}

impl Provisioner {
    pub(super) fn topics(&self) -> (Vec<String>, bool) {
        let set = self.ctx.subscriptions.snapshot();
        let mut t: Vec<String> = set.topics.into_iter().collect();
        t.sort();
        (t, set.all)
    }

    pub(super) fn spawn_receiver(&mut self, source: String, link_topic: Option<String>) {
        let task = ReceiverTask {
            conn: self.conn.clone(),
            source,
            link_topic,
            profile: self.cfg.profile.clone(),
            prefetch: self.cfg.prefetch,
            ctx: self.ctx.clone(),
            log: self.log.clone(),
            stop: self.stop.clone(),
            attempts: self.attempts.clone(),
            ready: self.ready.subscribe(),
            reprovision: self.reprovision.clone(),
        };
        self.receivers.push(tokio::spawn(task.run()));
    }

    pub(super) async fn run(mut self) {
        let mut subs = self.ctx.subscriptions.watch();
        let mut bound: HashSet<String> = HashSet::new();
        let mut sources: HashSet<String> = HashSet::new();
        let mut failures = 0u32;
        let exchange = match &self.cfg.profile {
            Profile::RabbitMq { exchange, .. } => exchange.clone(),
            _ => String::new(),
        };
        loop {
            let version = *subs.borrow_and_update();
            let (topics, all) = self.topics();
            let consumed = (!topics.is_empty() || all) && self.cfg.deploy_for_provider;
            if consumed {
                let mut keys: Vec<String> = topics
                    .iter()
                    .filter(|t| !bound.contains(*t))
                    .cloned()
                    .collect();
                if all && !bound.contains("#") && self.cfg.profile.provisions() {
                    keys.push("#".into());
                }
                let need = self.cfg.profile.provisions()
                    && self.cfg.queue.provision
                    && (!keys.is_empty() || *self.ready.borrow() == 0);
                let ok = if let Some(m) = &self.cfg.management {
                    // SAP Event Mesh: queue and subscriptions through the management API.
                    let current = keys.is_empty() && *self.ready.borrow() > 0;
                    let ok = current
                        || m.step(&self.cfg.queue.name, &topics, &self.log, &mut failures)
                            .await;
                    bound.extend(keys.iter().filter(|_| ok).cloned());
                    ok
                } else if need {
                    match amqp091::declare_and_bind(
                        &self.cfg.conn,
                        &self.cfg.queue,
                        &exchange,
                        &keys,
                    )
                    .await
                    {
                        Ok(()) => {
                            self.log.info(&format!(
                                "queue '{}' is bound to {} with {}",
                                self.cfg.queue.name,
                                exchange,
                                keys.iter()
                                    .map(|k| format!("'{k}'"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                            bound.extend(keys);
                            failures = 0;
                            true
                        }
                        Err(e) => {
                            failures += 1;
                            if should_log(failures) {
                                self.log.error(&format!(
                                    "{}: cannot create or bind queue '{}': {}; retrying with back-off",
                                    e.error.code.as_str(),
                                    self.cfg.queue.name,
                                    e.error.full_message()
                                ));
                            }
                            false
                        }
                    }
                } else {
                    true
                };
                if ok {
                    let wanted = self.cfg.profile.sources(&self.cfg.queue.name, &topics);
                    for (source, link_topic) in wanted {
                        if sources.insert(source.clone()) {
                            self.spawn_receiver(source, link_topic);
                        }
                    }
                    self.ready.send_modify(|g| *g += 1);
                    self.ctx.subscriptions.applied(version);
                } else {
                    let wait = self.cfg.conn.backoff().delay(failures);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = self.stop.changed() => break,
                    }
                }
            }
            if !consumed {
                self.ctx.subscriptions.applied(version);
            }
            tokio::select! {
                r = subs.changed() => if r.is_err() { break },
                _ = self.reprovision.notified() => {
                    // A receiver was refused: declare the queue and its bindings again.
                    bound.clear();
                    tokio::select! {
                        _ = tokio::time::sleep(self.cfg.conn.reconnect_delay) => {},
                        _ = self.stop.changed() => break,
                    }
                }
                _ = self.stop.changed() => break,
            }
        }
        for r in self.receivers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(3), r).await;
        }
    }
}
