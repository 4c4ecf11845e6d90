//! SAP Event Mesh over HTTP REST (`native-enterprise-messaging`, `native-event-mesh`).
//!
//! - Publish: `POST <uri>/messagingrest/v1/topics/{encodeURIComponent(topic)}/messages` with the
//!   bearer token of the binding's `httprest` client, `x-qos`, and the content type @sap/cds uses.
//!   The status decides the error (see [`status::publish_result`]); a 401 renews the token and
//!   sends once more.
//! - At start (once something is subscribed): the queue and its topic subscriptions are created or
//!   brought in line through the management API ([`provision`]), again whenever the subscriptions
//!   change; failures are logged and retried with back-off, never thrown into the app.
//! - Inbound: either the webhook (the endpoint lives in JavaScript on `cds.app`; this transport
//!   only registers it after the waiting period, [`webhook`]), or pulling the queue
//!   (`…/messages/consumption`, acknowledged after every handler succeeded, [`pull`]).

pub mod provision;
pub mod pull;
pub mod status;
pub mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::message::Outbound;
use crate::policy::RetryPolicy;
use crate::transport::support::em_management::Management;
use crate::transport::support::http::{HttpClient, Response};
use crate::transport::support::oauth::{OAuthClient, Tenant, TokenSource};
use crate::transport::support::url::percent_encode;
use crate::transport::{Guarantee, Transport, TransportContext};

/// How inbound messages arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundMode {
    /// Event Mesh pushes to the app's webhook; `registration` is @sap/cds's body for
    /// `POST /messagingrest/v1/subscriptions` (`None`: the app has no URL, nothing is registered).
    Webhook {
        /// The registration body (JSON; holds the client secret — never logged).
        registration: Option<String>,
        /// Wait after provisioning before registering (the app must be reachable).
        waiting_period: Duration,
    },
    /// This transport consumes the queue with `…/messages/consumption`.
    Pull {
        /// Pause after the queue was found empty.
        interval: Duration,
    },
}

/// Where and how to manage queues and subscriptions.
#[derive(Debug, Clone)]
pub struct ManagementConfig {
    /// `management[0].uri`.
    pub uri: String,
    /// Base path of the API (`/hub/rest/api/v1/management/messaging`, or `managementBasePath`).
    pub base_path: String,
    /// `management[0].oa2`.
    pub oauth: OAuthClient,
}

/// Settings of the REST transport.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// The `httprest` entry's `uri`.
    pub uri: String,
    /// The `httprest` entry's `oa2`.
    pub oauth: OAuthClient,
    /// `x-qos` of publishes and of the consumption (0 or 1).
    pub qos: u8,
    /// Bound of one HTTP request.
    pub request_timeout: Duration,
    /// The management API.
    pub management: ManagementConfig,
    /// The queue of this service.
    pub queue: String,
    /// The body of the queue creation (`queue` options other than `name`), `{}` when none.
    pub queue_config: serde_json::Value,
    /// Inbound mode.
    pub inbound: InboundMode,
    /// Retries of one failed management call (429/5xx/network) before it is logged and the whole
    /// provisioning is tried again later.
    pub max_retries: u32,
    /// `false` (multitenancy with `deployForProvider: false`): the provider gets no queue,
    /// subscriptions or webhook and nothing is pulled; only subscriber tenants get them, on their
    /// subscribe (`src/napi/tenants.rs`). Publishing is not affected.
    pub deploy_for_provider: bool,
}

impl RestConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.qos > 1 {
            return Err(Error::config(format!(
                "qos must be 0 or 1, got {}",
                self.qos
            )));
        }
        if self.queue.trim().is_empty() {
            return Err(Error::config("queue.name must not be empty"));
        }
        for (what, u) in [
            ("httprest uri", &self.uri),
            ("management uri", &self.management.uri),
        ] {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(Error::config(format!(
                    "the binding's {what} must be an http:// or https:// URL"
                )));
            }
        }
        self.oauth.validate()?;
        self.management.oauth.validate()
    }
}

/// How long after a provisioning started emits still wait for it.
const PROVISIONING_WAIT: Duration = Duration::from_secs(10);

/// How provisioning stands; publishes made while it runs wait for it (bounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provisioning {
    Idle,
    /// Since when.
    Running(std::time::Instant),
    Done,
}

/// An authorized HTTP API (one base URI, one token source).
#[derive(Clone)]
pub struct Api {
    base: String,
    http: Arc<HttpClient>,
    tokens: Arc<TokenSource>,
}

impl Api {
    /// An API client for `base` with the shared token source of `oauth`.
    pub fn new(base: &str, oauth: &OAuthClient, http: Arc<HttpClient>) -> Result<Self> {
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            http,
            tokens: TokenSource::shared(oauth, &Tenant::default())?,
        })
    }

    /// An API client for `base` with the tokens of `tokens` (e.g. a subscriber tenant's).
    pub fn with_tokens(base: &str, tokens: Arc<TokenSource>, http: Arc<HttpClient>) -> Self {
        Api {
            base: base.trim_end_matches('/').to_string(),
            http,
            tokens,
        }
    }

    /// The same API with the token of tenant `zid` (requested with `x-zid`; one cached token per
    /// tenant).
    pub fn for_tenant(&self, zid: &str) -> Result<Self> {
        Ok(Api {
            tokens: self.tokens.for_tenant(&Tenant {
                subdomain: None,
                zid: Some(zid.to_string()),
            })?,
            ..self.clone()
        })
    }

    /// The token URL of this API's tokens.
    pub fn token_url(&self) -> &str {
        self.tokens.token_url()
    }

    /// Sends `method path` with the bearer token (renewed and sent once more on a 401).
    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<Response> {
        let url = format!("{}{path}", self.base);
        self.tokens
            .authorized(|token| {
                let mut b = http::Request::builder()
                    .method(method.clone())
                    .uri(url.as_str())
                    .header(http::header::AUTHORIZATION, token.bearer())
                    .header(http::header::ACCEPT, "application/json");
                for (k, v) in headers {
                    b = b.header(*k, *v);
                }
                let req = b.body(body.clone().unwrap_or_default());
                let http = self.http.clone();
                async move {
                    let req = req.map_err(|e| {
                        Error::with_cause(
                            ErrorCode::InvalidConfig,
                            "cannot build an HTTP request",
                            e,
                        )
                    })?;
                    http.send(req).await
                }
            })
            .await
    }
}

/// The REST transport.
pub struct RestTransport {
    cfg: RestConfig,
    rest: Api,
    management: Management,
    provisioning: watch::Sender<Provisioning>,
    closed: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The API with each tenant's token (multitenant apps), kept so that a tenant's token stays
    /// cached between publishes.
    tenant_apis: Mutex<std::collections::HashMap<String, Api>>,
}

/// At most this many tenants' API clients are kept; beyond, the map starts over.
const MAX_TENANT_APIS: usize = 4096;

impl RestTransport {
    /// Creates the transport; nothing is sent before the first publish or `start`.
    pub fn new(cfg: RestConfig, _log: Logger) -> Result<Self> {
        cfg.validate()?;
        let http = Arc::new(HttpClient::new(&cfg.oauth.tls, cfg.request_timeout)?);
        let rest = Api::new(&cfg.uri, &cfg.oauth, http)?;
        let queue_config = serde_json::to_string(&cfg.queue_config).ok();
        let management = Management::new(
            &cfg.management.uri,
            Some(&cfg.management.base_path),
            TokenSource::shared(&cfg.management.oauth, &Tenant::default())?,
            queue_config,
            &cfg.management.oauth.tls,
        )?
        .with_retries(cfg.max_retries + 1, Duration::from_millis(500));
        Ok(RestTransport {
            cfg,
            rest,
            management,
            provisioning: watch::channel(Provisioning::Idle).0,
            closed: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
            tenant_apis: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The API with `zid`'s token (one per tenant, kept).
    fn tenant_api(&self, zid: &str) -> Result<Api> {
        let mut apis = crate::sync::lock(&self.tenant_apis);
        if let Some(a) = apis.get(zid) {
            return Ok(a.clone());
        }
        if apis.len() >= MAX_TENANT_APIS {
            apis.clear();
        }
        let a = self.rest.for_tenant(zid)?;
        apis.insert(zid.to_string(), a.clone());
        Ok(a)
    }

    async fn publish_one(&self, m: Outbound) -> Result<()> {
        let path = format!(
            "/messagingrest/v1/topics/{}/messages",
            percent_encode(&m.topic)
        );
        let qos = if self.cfg.qos == 0 { "0" } else { "1" };
        let ct = crate::message::content_type(m.cloud_event);
        // A multitenant app's message goes with its tenant's token (x-zid), as in @sap/cds.
        let tenant_api;
        let api = match &m.tenant {
            Some(zid) => {
                tenant_api = self.tenant_api(zid)?;
                &tenant_api
            }
            None => &self.rest,
        };
        let res = api
            .call(
                http::Method::POST,
                &path,
                &[("content-type", ct), ("x-qos", qos)],
                Some(Bytes::from(m.payload)),
            )
            .await
            .map_err(|e| {
                Error::new(
                    e.code,
                    format!(
                        "cannot publish to topic '{}': {}",
                        m.topic,
                        e.full_message()
                    ),
                )
            })?;
        status::publish_result(
            &m.topic,
            res.status.as_u16(),
            res.retry_after(),
            &res.body_excerpt(),
        )
    }

    /// Waits (at most `left`) while the queue and its subscriptions are being created, so that an
    /// emit right after `on(…)` reaches this app's own queue.
    async fn wait_provisioned(&self, left: Duration) {
        let mut rx = self.provisioning.subscribe();
        let _ = tokio::time::timeout(
            left,
            rx.wait_for(|p| !matches!(p, Provisioning::Running(_))),
        )
        .await;
    }

    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        crate::sync::lock(&self.tasks).push(tokio::spawn(f));
    }
}

#[async_trait]
impl Transport for RestTransport {
    fn guarantee(&self, policy: &RetryPolicy) -> Guarantee {
        let (delivery, summary) = match (&self.cfg.inbound, self.cfg.qos) {
            (_, 0) => (
                "at-most-once",
                "Event Mesh REST with x-qos 0: at-most-once".to_string(),
            ),
            (InboundMode::Webhook { .. }, _) => (
                "at-least-once",
                format!(
                    "at-least-once: emits resolve when Event Mesh stored the message (x-qos 1); pushes to the webhook are answered 200 only after every handler succeeded, else 500 and Event Mesh pushes again (queue {})",
                    self.cfg.queue
                ),
            ),
            (InboundMode::Pull { .. }, _) => (
                "at-least-once",
                format!(
                    "at-least-once: emits resolve when Event Mesh stored the message (x-qos 1); queue {} is pulled and a message is acknowledged only after every handler succeeded, retried up to {} attempt(s)",
                    self.cfg.queue, policy.max_attempts
                ),
            ),
        };
        Guarantee {
            delivery,
            dead_letter: match self
                .cfg
                .queue_config
                .get("deadMsgQueue")
                .and_then(|v| v.as_str())
            {
                Some(q) => format!("queue {q}"),
                None => "(in memory)".into(),
            },
            summary,
        }
    }

    async fn start(&self, ctx: TransportContext) -> Result<()> {
        if !self.cfg.deploy_for_provider {
            ctx.log.info(&format!(
                "deployForProvider is false: no queue '{}' for the provider (only subscriber tenants get one, on their subscribe)",
                self.cfg.queue
            ));
            return Ok(());
        }
        let subs = ctx.subscriptions.clone();
        let prov = provision::Provisioner {
            api: self.management.clone(),
            queue: self.cfg.queue.clone(),
            log: ctx.log.clone(),
        };
        if !subs.snapshot().is_empty() {
            self.provisioning
                .send_replace(Provisioning::Running(std::time::Instant::now()));
        }
        let state = self.provisioning.clone();
        let closed = self.closed.subscribe();
        let registration = match &self.cfg.inbound {
            InboundMode::Webhook {
                registration: Some(body),
                waiting_period,
            } => Some(webhook::Registration {
                api: self.rest.clone(),
                body: body.clone(),
                name: self.cfg.queue.clone(),
                waiting_period: *waiting_period,
                log: ctx.log.clone(),
            }),
            _ => None,
        };
        self.spawn(provision::run(prov, subs, state, closed, registration));
        if let InboundMode::Pull { interval } = self.cfg.inbound {
            let puller = pull::Puller {
                api: self.rest.clone(),
                queue: self.cfg.queue.clone(),
                qos: self.cfg.qos,
                interval,
                dead_letter_queue: self
                    .cfg
                    .queue_config
                    .get("deadMsgQueue")
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
                dead: ctx.dead_letters.clone(),
                log: ctx.log.clone(),
            };
            self.spawn(pull::run(
                puller,
                ctx,
                self.closed.subscribe(),
                self.provisioning.subscribe(),
            ));
        }
        Ok(())
    }

    async fn publish(&self, batch: Vec<Outbound>) -> Vec<Result<()>> {
        // (The engine refuses emits after close; it never calls this then.)
        // Only a young provisioning is waited for: one stuck in retries (management down) must not
        // slow every emit down.
        let running = match *self.provisioning.borrow() {
            Provisioning::Running(since) => Some(since),
            _ => None,
        };
        if let Some(since) = running {
            let left = PROVISIONING_WAIT.saturating_sub(since.elapsed());
            if !left.is_zero() {
                self.wait_provisioned(left).await;
            }
        }
        futures::future::join_all(batch.into_iter().map(|m| self.publish_one(m))).await
    }

    async fn close(&self) -> Result<()> {
        self.closed.send_replace(true);
        let tasks = std::mem::take(&mut *crate::sync::lock(&self.tasks));
        for t in tasks {
            t.abort();
        }
        Ok(())
    }
}

impl Drop for RestTransport {
    fn drop(&mut self) {
        for t in crate::sync::lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}
