//! SAP Event Mesh management API: creates the consuming queue and keeps its topic subscriptions
//! in step with the service's subscriptions, in @sap/cds's order:
//!
//! 1. `PUT <base>/queues/<q>` with the queue configuration (or `{}`);
//! 2. on **201** (created): `PUT <base>/queues/<q>/subscriptions/<topic>` for every topic;
//!    on **another 2xx** (exists): `GET <base>/queues/<q>/subscriptions`, then `DELETE` the obsolete
//!    and `PUT` the missing ones.
//!
//! Beyond @sap/cds: JSON is parsed whatever the `content-type` suffix; 429 and 5xx are retried a
//! few times, after `Retry-After` when the API sends one; a 401 drops the token and retries once;
//! `GET <base>/readinessCheck` is asked first (a 503 waits). A failure is returned to the
//! provisioner, which logs it with what to fix and tries again with back-off. Queues are deleted
//! only for a subscriber tenant (its unsubscribe, or a `/deploy` with `wipeData`:
//! [`Management::delete_queue`] with the tenant's token).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::Value;

use super::url::percent_encode;
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::transport::support::http::{HttpClient, HttpTls, Response};
use crate::transport::support::oauth::{Tenant, TokenSource};

/// Default base path of the management API (`enterprise-messaging` kinds).
pub const DEFAULT_BASE_PATH: &str = "/hub/rest/api/v1/management/messaging";

/// A management API client for one service instance.
#[derive(Clone)]
pub struct Management {
    base: String,
    tokens: Arc<TokenSource>,
    http: Arc<HttpClient>,
    queue_config: Option<String>,
    /// Attempts of one call on 429/5xx/network errors.
    attempts: u32,
    /// First wait between attempts without `Retry-After` (doubles).
    retry_delay: Duration,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("base", &self.base)
            .field("tokens", &self.tokens.describe())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Management {
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base
            && Arc::ptr_eq(&self.tokens, &other.tokens)
            && self.queue_config == other.queue_config
    }
}

impl Eq for Management {}

/// What one provisioning run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The queue was created (201) rather than found.
    pub created: bool,
    /// Subscriptions added.
    pub added: Vec<String>,
    /// Obsolete subscriptions removed.
    pub removed: Vec<String>,
    /// Subscriptions that were there already.
    pub unchanged: Vec<String>,
}

impl Management {
    /// A client for `uri` (`management[0].uri`) and `base_path` (default [`DEFAULT_BASE_PATH`]).
    /// `queue_config` is the JSON body of the queue creation (`{}` when `None`).
    pub fn new(
        uri: &str,
        base_path: Option<&str>,
        tokens: Arc<TokenSource>,
        queue_config: Option<String>,
        tls: &HttpTls,
    ) -> Result<Self> {
        let u = url::Url::parse(uri).map_err(|e| {
            Error::with_cause(
                ErrorCode::InvalidConfig,
                "management[0].uri of the binding is not a URL",
                e,
            )
        })?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(Error::config(
                "management[0].uri must be an https:// (or http://) URL",
            ));
        }
        if let Some(c) = &queue_config {
            let v: Value = serde_json::from_str(c).map_err(|e| {
                Error::with_cause(ErrorCode::InvalidConfig, "queue config is not JSON", e)
            })?;
            if !v.is_object() {
                return Err(Error::config("the queue configuration must be an object"));
            }
        }
        let path = base_path.unwrap_or(DEFAULT_BASE_PATH);
        Ok(Management {
            base: format!("{}/{}", uri.trim_end_matches('/'), path.trim_matches('/')),
            tokens,
            http: Arc::new(HttpClient::new(tls, Duration::from_secs(30))?),
            queue_config,
            attempts: 4,
            retry_delay: Duration::from_millis(500),
        })
    }

    /// The same API for a subscriber tenant: its calls carry the tenant's token (the token URL's
    /// first host label replaced by `tenant.subdomain`, `x-zid` from `tenant.zid`).
    pub fn for_tenant(&self, tenant: &Tenant) -> Result<Self> {
        Ok(Management {
            tokens: self.tokens.for_tenant(tenant)?,
            ..self.clone()
        })
    }

    /// Shorter retry waits (tests).
    pub fn with_retries(mut self, attempts: u32, delay: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.retry_delay = delay;
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// One call with bearer, 401 → new token once, 429/5xx/network → bounded retries.
    async fn call(&self, method: Method, path: &str, body: Option<&str>) -> Result<Response> {
        let url = self.url(path);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let send = |token: crate::transport::support::oauth::Token| {
                let mut b = http::Request::builder()
                    .method(method.clone())
                    .uri(url.as_str())
                    .header(http::header::AUTHORIZATION, token.bearer())
                    .header(http::header::ACCEPT, "application/json");
                if body.is_some() {
                    b = b.header(http::header::CONTENT_TYPE, "application/json");
                }
                let req = b.body(Bytes::from(body.unwrap_or_default().to_string()));
                let http = self.http.clone();
                async move {
                    let req = req.map_err(|e| {
                        Error::with_cause(ErrorCode::InvalidConfig, "bad management URL", e)
                    })?;
                    http.send(req).await
                }
            };
            let outcome = self.tokens.authorized(send).await;
            let wait = match &outcome {
                Ok(r) if r.status.as_u16() == 429 || r.status.is_server_error() => {
                    r.retry_after().unwrap_or_else(|| self.delay(attempt))
                }
                Err(e) if e.code == ErrorCode::ConnectionFailed => self.delay(attempt),
                _ => return outcome,
            };
            if attempt >= self.attempts {
                return outcome;
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn delay(&self, attempt: u32) -> Duration {
        self.retry_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(10))
            .min(Duration::from_secs(30))
    }

    fn failed(&self, what: &str, r: &Response) -> Error {
        let s = r.status.as_u16();
        let hint = match s {
            400 => "check the queue configuration (cds.requires.<service>.queue) and the topic patterns against the service descriptor's rules",
            401 | 403 => "check management[0].oa2 in the binding and that the service instance allows management",
            404 => "check managementBasePath (event-mesh kinds: /sap-event-mesh/rest/api/v1) and management[0].uri",
            409 => "another instance changed the same queue at the same time; it is tried again",
            _ => "the management API may be unavailable; it is tried again",
        };
        Error::new(
            ErrorCode::ConnectionFailed,
            format!(
                "the Event Mesh management API answered HTTP {s} to {what}: {}; {hint}",
                r.body_excerpt()
            ),
        )
    }

    /// Waits until `GET <base>/readinessCheck` is not 503 (at most `attempts` times, after
    /// `Retry-After`). An API without the endpoint (404) counts as ready.
    pub async fn wait_until_ready(&self) -> Result<()> {
        let r = self.call(Method::GET, "/readinessCheck", None).await?;
        if r.status.is_success() || r.status.as_u16() == 404 {
            return Ok(());
        }
        Err(self.failed("the readiness check", &r))
    }

    /// Creates `queue` if absent and makes its subscriptions exactly `topics`.
    pub async fn provision(&self, queue: &str, topics: &[String]) -> Result<Provisioned> {
        let q = percent_encode(queue);
        let body = self.queue_config.clone().unwrap_or_else(|| "{}".into());
        let r = self
            .call(Method::PUT, &format!("/queues/{q}"), Some(&body))
            .await?;
        if !r.status.is_success() {
            return Err(self.failed(&format!("PUT queue '{queue}'"), &r));
        }
        let mut done = Provisioned {
            created: r.status.as_u16() == 201,
            ..Provisioned::default()
        };
        let (missing, obsolete): (Vec<String>, Vec<String>) = if done.created {
            (topics.to_vec(), Vec::new())
        } else {
            let r = self
                .call(Method::GET, &format!("/queues/{q}/subscriptions"), None)
                .await?;
            if !r.status.is_success() {
                return Err(self.failed(&format!("GET the subscriptions of '{queue}'"), &r));
            }
            let list: Vec<Value> = r.json("the subscription list")?;
            let existing: Vec<String> = list
                .iter()
                .filter_map(|s| s.get("topicPattern").and_then(Value::as_str))
                .map(str::to_string)
                .collect();
            done.unchanged = topics
                .iter()
                .filter(|t| existing.contains(t))
                .cloned()
                .collect();
            (
                topics
                    .iter()
                    .filter(|t| !existing.contains(t))
                    .cloned()
                    .collect(),
                existing
                    .into_iter()
                    .filter(|t| !topics.contains(t))
                    .collect(),
            )
        };
        let q = q.as_str();
        let puts = missing.iter().map(|t| async move {
            let path = format!("/queues/{q}/subscriptions/{}", percent_encode(t));
            let r = self.call(Method::PUT, &path, Some("{}")).await?;
            if r.status.is_success() || r.status.as_u16() == 409 {
                Ok(t.clone())
            } else {
                Err(self.failed(&format!("PUT subscription '{t}' of '{queue}'"), &r))
            }
        });
        let deletes = obsolete.iter().map(|t| async move {
            let path = format!("/queues/{q}/subscriptions/{}", percent_encode(t));
            let r = self.call(Method::DELETE, &path, None).await?;
            if r.status.is_success() || r.status.as_u16() == 404 {
                Ok(t.clone())
            } else {
                Err(self.failed(&format!("DELETE subscription '{t}' of '{queue}'"), &r))
            }
        });
        let (added, removed) = futures::future::join(
            futures::future::join_all(puts),
            futures::future::join_all(deletes),
        )
        .await;
        let mut first_error = None;
        for r in added {
            match r {
                Ok(t) => done.added.push(t),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        for r in removed {
            match r {
                Ok(t) => done.removed.push(t),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// A subscriber tenant's deployment: waits for the readiness check, then creates the queue
    /// and its subscriptions as [`Management::provision`] does.
    pub async fn deploy(&self, queue: &str, topics: &[String]) -> Result<Provisioned> {
        self.wait_until_ready().await?;
        self.provision(queue, topics).await
    }

    /// Deletes `queue` (and with it its subscriptions): `true` when it was deleted, `false` when
    /// it did not exist (404), an error otherwise. Used only for subscriber tenants.
    pub async fn delete_queue(&self, queue: &str) -> Result<bool> {
        let q = percent_encode(queue);
        let r = self
            .call(Method::DELETE, &format!("/queues/{q}"), None)
            .await?;
        match r.status.as_u16() {
            s if (200..300).contains(&s) => Ok(true),
            404 => Ok(false),
            _ => Err(self.failed(&format!("DELETE queue '{queue}'"), &r)),
        }
    }

    /// One provisioning run for the provisioner: true when the queue and its subscriptions are in
    /// place; a failure is logged (first, then every power-of-two time) with what to fix.
    pub async fn step(
        &self,
        queue: &str,
        topics: &[String],
        log: &Logger,
        failures: &mut u32,
    ) -> bool {
        let run = async {
            if *failures == 0 {
                self.wait_until_ready().await?;
            }
            self.provision(queue, topics).await
        };
        match run.await {
            Ok(p) => {
                self.log(log, queue, &p);
                *failures = 0;
                true
            }
            Err(e) => {
                *failures += 1;
                if *failures == 1 || failures.is_power_of_two() {
                    log.error(&format!(
                        "{}: cannot create Event Mesh queue '{queue}' or its subscriptions: {}; consuming starts once this works, retrying with back-off (emits are not affected)",
                        e.code.as_str(),
                        e.full_message()
                    ));
                }
                false
            }
        }
    }

    /// Logs what a provisioning run did.
    pub fn log(&self, log: &Logger, queue: &str, p: &Provisioned) {
        let list = |v: &[String]| {
            v.iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        log.info(&format!(
            "Event Mesh queue '{queue}' {}",
            if p.created { "created" } else { "exists" }
        ));
        if !p.added.is_empty() {
            log.info(&format!("subscriptions created: {}", list(&p.added)));
        }
        if !p.removed.is_empty() {
            log.info(&format!(
                "obsolete subscriptions deleted: {}",
                list(&p.removed)
            ));
        }
        if !p.unchanged.is_empty() {
            log.debug(&format!("unchanged subscriptions: {}", list(&p.unchanged)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use super::*;
    use crate::sync::lock;
    use crate::transport::support::oauth::{OAuthClient, TokenBackoff};
    use crate::transport::support::test_http::{serve, Reply, TestServer};

    fn reply(status: u16, body: &str) -> Reply {
        (status, body.to_string(), Duration::ZERO)
    }

    /// The request lines (`PUT /hub/…`) the server saw.
    fn lines(srv: &TestServer) -> Vec<String> {
        lock(&srv.heads)
            .iter()
            .map(|h| {
                h.lines()
                    .next()
                    .unwrap_or_default()
                    .replace(" HTTP/1.1", "")
            })
            .collect()
    }

    fn client(srv: &TestServer, queue_config: Option<&str>) -> Management {
        let tokens = Arc::new(
            TokenSource::new(
                OAuthClient {
                    token_url: srv.url.clone(),
                    client_id: "mgmt".into(),
                    client_secret: Some("mgmt-secret".into()),
                    tls: HttpTls::default(),
                },
                Tenant::default(),
                TokenBackoff::default(),
            )
            .unwrap(),
        );
        let base = srv.url.trim_end_matches("/oauth/token").to_string();
        Management::new(
            &base,
            None,
            tokens,
            queue_config.map(str::to_string),
            &HttpTls::default(),
        )
        .unwrap()
        .with_retries(3, Duration::from_millis(10))
    }

    const TOKEN: &str = r#"{"access_token":"t1","expires_in":3600}"#;
    const Q: &str = "/hub/rest/api/v1/management/messaging/queues/my%2Fns%2Fq";

    #[tokio::test]
    async fn a_new_queue_gets_every_subscription() {
        let srv = serve(|_, req| match req.lines().next().unwrap_or_default() {
            l if l.contains("/oauth/token") => reply(200, TOKEN),
            l if l.starts_with("GET ") => reply(200, r#"{"isReady":true}"#),
            l if l.contains("/subscriptions/") => reply(200, "{}"),
            _ => reply(201, "{}"),
        })
        .await;
        let m = client(&srv, Some(r#"{"accessType":"EXCLUSIVE"}"#));
        let topics = vec!["a/b".to_string(), "+/+/+/ce/x".to_string()];
        let p = m.provision("my/ns/q", &topics).await.unwrap();
        assert!(p.created);
        let mut got = lines(&srv);
        got[2..].sort();
        assert_eq!(
            got,
            vec![
                "POST /oauth/token".to_string(),
                format!("PUT {Q}"),
                format!("PUT {Q}/subscriptions/%2B%2F%2B%2F%2B%2Fce%2Fx"),
                format!("PUT {Q}/subscriptions/a%2Fb"),
            ]
        );
        assert!(lock(&srv.heads)[1].ends_with(r#"{"accessType":"EXCLUSIVE"}"#));
        assert!(lock(&srv.heads)[1].contains("authorization: Bearer t1"));
    }

    #[tokio::test]
    async fn an_existing_queue_is_diffed_even_with_a_charset_suffix() {
        // The test server answers `application/json; charset=utf-8`.
        let srv = serve(|_, req| match req.lines().next().unwrap_or_default() {
            l if l.contains("/oauth/token") => reply(200, TOKEN),
            l if l.starts_with("GET ") => reply(
                200,
                r#"[{"queueName":"my/ns/q","topicPattern":"a"},{"queueName":"my/ns/q","topicPattern":"old"}]"#,
            ),
            l if l.starts_with("DELETE ") => reply(204, ""),
            _ => reply(200, "{}"),
        })
        .await;
        let m = client(&srv, None);
        let p = m
            .provision("my/ns/q", &["a".to_string(), "b".to_string()])
            .await
            .unwrap();
        assert!(!p.created);
        assert_eq!(p.added, vec!["b".to_string()]);
        assert_eq!(p.removed, vec!["old".to_string()]);
        assert_eq!(p.unchanged, vec!["a".to_string()]);
        let got = lines(&srv);
        assert!(
            got.contains(&format!("DELETE {Q}/subscriptions/old")),
            "{got:?}"
        );
        assert!(got.contains(&format!("PUT {Q}/subscriptions/b")), "{got:?}");
        assert!(!got.iter().any(|l| l == &format!("PUT {Q}/subscriptions/a")));
        assert!(
            lock(&srv.heads)[1].ends_with("{}"),
            "queue body defaults to {{}}"
        );
    }

    #[tokio::test]
    async fn retry_after_is_honoured_and_retries_are_bounded() {
        let srv = serve(|n, req| match req.lines().next().unwrap_or_default() {
            l if l.contains("/oauth/token") => reply(200, TOKEN),
            _ if n == 2 => reply(429, "{}"),
            _ => reply(201, "{}"),
        })
        .await;
        let m = client(&srv, None);
        let t0 = Instant::now();
        assert!(m.provision("q", &[]).await.unwrap().created);
        assert!(
            t0.elapsed() >= Duration::from_millis(950),
            "waited Retry-After: 1"
        );
        assert_eq!(srv.hits.load(Ordering::SeqCst), 3);

        let srv = serve(|_, req| match req.lines().next().unwrap_or_default() {
            l if l.contains("/oauth/token") => reply(200, TOKEN),
            _ => reply(503, r#"{"error":"down"}"#),
        })
        .await;
        let e = client(&srv, None).provision("q", &[]).await.unwrap_err();
        assert!(e.message.contains("HTTP 503"), "{}", e.message);
        assert!(!e.message.contains("mgmt-secret"));
        assert_eq!(
            srv.hits.load(Ordering::SeqCst),
            1 + 3,
            "one token, three attempts"
        );
    }

    #[tokio::test]
    async fn a_401_gets_a_new_token_once() {
        let srv = serve(|_, req| {
            let first = req.lines().next().unwrap_or_default();
            if first.contains("/oauth/token") {
                return reply(200, TOKEN);
            }
            if req.contains("Bearer t1") && first.starts_with("PUT") {
                // The first token is refused once; the next request for a token gets t1 again,
                // which the fake now accepts.
                static ONCE: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !ONCE.swap(true, Ordering::SeqCst) {
                    return reply(401, "{}");
                }
            }
            reply(201, "{}")
        })
        .await;
        let m = client(&srv, None);
        assert!(m.provision("q", &[]).await.unwrap().created);
        let got = lines(&srv);
        assert_eq!(
            got.iter().filter(|l| l.contains("/oauth/token")).count(),
            2,
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_tenant_queue_is_deleted_with_the_tenant_token_and_a_missing_one_is_fine() {
        let srv = serve(|_, req| match req.lines().next().unwrap_or_default() {
            l if l.contains("/oauth/token") => reply(200, TOKEN),
            l if l.starts_with("DELETE ") && l.contains("/queues/gone") => reply(404, "{}"),
            l if l.starts_with("DELETE ") && l.contains("/queues/bad") => reply(403, "{}"),
            _ => reply(204, ""),
        })
        .await;
        let m = client(&srv, None)
            .for_tenant(&Tenant {
                subdomain: None,
                zid: Some("zid-1".into()),
            })
            .unwrap();
        assert!(m.delete_queue("my/ns/q").await.unwrap());
        assert!(!m.delete_queue("gone").await.unwrap());
        let e = m.delete_queue("bad").await.unwrap_err();
        assert!(e.message.contains("HTTP 403"), "{}", e.message);
        let heads = lock(&srv.heads);
        assert!(heads[0].contains("x-zid: zid-1"), "{}", heads[0]);
        assert!(
            heads[1].starts_with(&format!("DELETE {Q} ")),
            "{}",
            heads[1]
        );
    }

    #[tokio::test]
    async fn a_tenant_token_comes_from_the_subdomain_token_url() {
        let m = Management::new(
            "http://127.0.0.1:1",
            None,
            Arc::new(
                TokenSource::new(
                    OAuthClient {
                        token_url: "https://provider.auth.example.test/oauth/token".into(),
                        client_id: "mgmt".into(),
                        client_secret: Some("s".into()),
                        tls: HttpTls::default(),
                    },
                    Tenant::default(),
                    TokenBackoff::default(),
                )
                .unwrap(),
            ),
            None,
            &HttpTls::default(),
        )
        .unwrap();
        let t = m
            .for_tenant(&Tenant {
                subdomain: Some("t1".into()),
                zid: None,
            })
            .unwrap();
        assert!(format!("{t:?}").contains("t1.auth.example.test"), "{t:?}");
        assert_ne!(t, m);
    }
}
