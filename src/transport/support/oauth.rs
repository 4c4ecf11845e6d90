//! OAuth2 client-credentials tokens for SAP Event Mesh (WebSocket gateway, management API, REST).
//!
//! One [`TokenSource`] per (token endpoint, client, tenant) in the process ([`TokenSource::shared`]):
//! - the token is cached and fetched again before it expires: `expires_in / 10` (at most 5 minutes)
//!   ahead, or for short-lived tokens half of their life (at most 30 s) ahead;
//! - concurrent callers share one request in flight;
//! - a caller that got a 401 with a token calls [`TokenSource::invalidate`] and asks again once;
//! - a failing token endpoint is asked again only after a jittered exponential back-off; callers in
//!   between get the last error at once;
//! - credentials: HTTP Basic first, the form body (`client_id`, `client_secret`) when Basic is
//!   refused; mutual TLS (`uaa.certificate`/`uaa.key`) sends only `client_id` in the body;
//! - subscriber tenants: the first host label of the token URL is replaced by the subscriber's
//!   subdomain, and `x-zid` carries the tenant id.
//!
//! Errors have code `TOKEN_FAILED` and say what to check; they never contain the secret, the key or
//! a token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;

use super::http::{HttpClient, HttpTls};
use crate::error::{Error, ErrorCode, Result};
use crate::sync::lock;

/// The client credentials of one `oa2` block (plus the binding's `uaa` for mutual TLS).
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthClient {
    /// Token URL (`…/oauth/token`).
    pub token_url: String,
    /// Client id (not secret; shown in messages).
    pub client_id: String,
    /// Client secret (never shown). `None` with mutual TLS.
    pub client_secret: Option<String>,
    /// TLS towards the token endpoint: extra CA and, for mutual TLS, client certificate and key.
    pub tls: HttpTls,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .finish()
    }
}

fn field<'a>(v: &'a Value, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| v.get(*n).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

impl OAuthClient {
    /// Reads an Event Mesh `oa2` block: `clientid`|`client`, `clientsecret`|`secret`,
    /// `tokenendpoint`|`endpoint`. With `uaa.certificate` and `uaa.key` it uses mutual TLS, no
    /// secret, and `uaa.certurl + /oauth/token` when `certurl` is given. `what` names the block in
    /// errors (e.g. `messaging[0].oa2`).
    pub fn from_binding(oa2: &Value, uaa: Option<&Value>, what: &str) -> Result<Self> {
        let client_id = field(oa2, &["clientid", "client"])
            .ok_or_else(|| Error::config(format!("{what} has no clientid (or client)")))?;
        let mut token_url = field(oa2, &["tokenendpoint", "endpoint"])
            .ok_or_else(|| Error::config(format!("{what} has no tokenendpoint (or endpoint)")))?
            .to_string();
        let mut tls = HttpTls::default();
        let cert = uaa.and_then(|u| field(u, &["certificate"]));
        let key = uaa.and_then(|u| field(u, &["key"]));
        let client_secret = match (cert, key) {
            (Some(cert), Some(key)) => {
                tls.cert = Some(cert.to_string());
                tls.key = Some(key.to_string());
                if let Some(certurl) = uaa.and_then(|u| field(u, &["certurl"])) {
                    token_url = format!("{}/oauth/token", certurl.trim_end_matches('/'));
                }
                None
            }
            _ => Some(
                field(oa2, &["clientsecret", "secret"])
                    .ok_or_else(|| {
                        Error::config(format!(
                            "{what} has no clientsecret (or secret), and the binding has no uaa.certificate/uaa.key for mutual TLS"
                        ))
                    })?
                    .to_string(),
            ),
        };
        let client = OAuthClient {
            token_url,
            client_id: client_id.to_string(),
            client_secret,
            tls,
        };
        client.validate()?;
        Ok(client)
    }

    /// Checks the token URL.
    pub fn validate(&self) -> Result<()> {
        let u = url::Url::parse(&self.token_url).map_err(|e| {
            Error::with_cause(
                ErrorCode::InvalidConfig,
                format!("the token endpoint '{}' is not a URL", self.shown_url()),
                e,
            )
        })?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err(Error::config(format!(
                "the token endpoint '{}' must be an http:// or https:// URL",
                self.shown_url()
            )));
        }
        if self.client_id.is_empty() {
            return Err(Error::config("the OAuth client id must not be empty"));
        }
        Ok(())
    }

    /// The token URL without user info or query, for messages.
    pub fn shown_url(&self) -> String {
        super::http::shown_url(&self.token_url)
    }

    fn key(&self, tenant: &Tenant) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.client_secret.hash(&mut h);
        self.tls.hash_parts(&mut h);
        format!(
            "{}|{}|{:?}|{:?}|{:x}",
            self.token_url,
            self.client_id,
            tenant.subdomain,
            tenant.zid,
            h.finish()
        )
    }
}

impl HttpTls {
    fn hash_parts<H: std::hash::Hasher>(&self, h: &mut H) {
        use std::hash::Hash;
        self.ca.hash(h);
        self.cert.hash(h);
        self.key.hash(h);
    }
}

/// Whose token: the provider's (default) or a subscriber tenant's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Tenant {
    /// Subscriber subdomain: replaces the first host label of the token URL.
    pub subdomain: Option<String>,
    /// Tenant (zone) id, sent as `x-zid` on the token request.
    pub zid: Option<String>,
}

/// An access token. `Debug` never shows the value.
#[derive(Clone)]
pub struct Token {
    /// The access token.
    pub value: Arc<str>,
    /// When the cached token is considered stale (expiry minus the refresh margin).
    pub refresh_at: Instant,
}

impl Token {
    /// `Bearer <token>` for an `Authorization` header.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.value)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"***")
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

/// Back-off of a failing token endpoint.
#[derive(Debug, Clone, Copy)]
pub struct TokenBackoff {
    /// Wait after the first failure (doubles per failure, jittered to 50–100 %).
    pub base: Duration,
    /// Upper bound.
    pub max: Duration,
}

impl Default for TokenBackoff {
    fn default() -> Self {
        TokenBackoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

#[derive(Default)]
struct State {
    token: Option<Token>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
    body_credentials: bool,
    requests: u64,
}

/// Cached, single-flight, back-off-aware client-credentials tokens for one client and tenant.
pub struct TokenSource {
    client: OAuthClient,
    tenant: Tenant,
    url: String,
    http: HttpClient,
    backoff: TokenBackoff,
    state: Mutex<State>,
    fetch: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("client", &self.client)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

fn registry() -> &'static Mutex<HashMap<String, Weak<TokenSource>>> {
    static R: OnceLock<Mutex<HashMap<String, Weak<TokenSource>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// `url` with its first host label replaced by `subdomain`.
fn with_subdomain(url: &str, subdomain: &str) -> Result<String> {
    let mut u = url::Url::parse(url)
        .map_err(|e| Error::with_cause(ErrorCode::InvalidConfig, "bad token endpoint", e))?;
    let host = u.host_str().unwrap_or_default().to_string();
    let rest = host.split_once('.').map(|(_, r)| r).ok_or_else(|| {
        Error::config(format!(
            "cannot use subdomain '{subdomain}': the token endpoint host '{host}' has no domain"
        ))
    })?;
    u.set_host(Some(&format!("{subdomain}.{rest}")))
        .map_err(|e| {
            Error::with_cause(
                ErrorCode::InvalidConfig,
                format!("'{subdomain}' is not a valid subdomain"),
                e,
            )
        })?;
    Ok(u.to_string())
}

impl TokenSource {
    /// A token source of its own (not shared), with the given back-off.
    pub fn new(client: OAuthClient, tenant: Tenant, backoff: TokenBackoff) -> Result<Self> {
        client.validate()?;
        let url = match &tenant.subdomain {
            Some(s) => with_subdomain(&client.token_url, s)?,
            None => client.token_url.clone(),
        };
        let http = HttpClient::new(&client.tls, Duration::from_secs(15))?;
        Ok(TokenSource {
            client,
            tenant,
            url,
            http,
            backoff,
            state: Mutex::new(State::default()),
            fetch: tokio::sync::Mutex::new(()),
        })
    }

    /// The process-wide token source of (`client`, `tenant`): every transport and API client
    /// with the same credentials shares one cache and one request in flight.
    pub fn shared(client: &OAuthClient, tenant: &Tenant) -> Result<Arc<TokenSource>> {
        let key = client.key(tenant);
        let mut reg = lock(registry());
        reg.retain(|_, w| w.strong_count() > 0);
        if let Some(s) = reg.get(&key).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let s = Arc::new(TokenSource::new(
            client.clone(),
            tenant.clone(),
            TokenBackoff::default(),
        )?);
        reg.insert(key, Arc::downgrade(&s));
        Ok(s)
    }

    /// The same client for a subscriber tenant (subdomain token URL, `x-zid`).
    pub fn for_tenant(&self, tenant: &Tenant) -> Result<Arc<TokenSource>> {
        TokenSource::shared(&self.client, tenant)
    }

    /// The token URL this source asks (a subscriber tenant's: with its subdomain).
    pub fn token_url(&self) -> &str {
        &self.url
    }

    /// The client id and token endpoint, for messages.
    pub fn describe(&self) -> String {
        let mut c = self.client.clone();
        c.token_url = self.url.clone();
        format!(
            "client '{}' at token endpoint {}",
            c.client_id,
            c.shown_url()
        )
    }

    /// Token requests sent so far (for tests and diagnostics).
    pub fn requests(&self) -> u64 {
        lock(&self.state).requests
    }

    fn cached(&self) -> Option<Token> {
        let st = lock(&self.state);
        st.token
            .as_ref()
            .filter(|t| Instant::now() < t.refresh_at)
            .cloned()
    }

    /// A valid token: the cached one, or a new one (one request for all concurrent callers).
    /// Fails with `TOKEN_FAILED`.
    pub async fn token(&self) -> Result<Token> {
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let _flight = self.fetch.lock().await;
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        {
            let st = lock(&self.state);
            if let (Some(at), Some(e)) = (st.retry_at, &st.last_error) {
                if Instant::now() < at {
                    return Err(Error::new(
                        ErrorCode::TokenFailed,
                        format!(
                            "{e} (next attempt in {} ms)",
                            at.saturating_duration_since(Instant::now()).as_millis()
                        ),
                    ));
                }
            }
        }
        match self.request().await {
            Ok(t) => {
                let mut st = lock(&self.state);
                st.token = Some(t.clone());
                st.failures = 0;
                st.retry_at = None;
                st.last_error = None;
                Ok(t)
            }
            Err(e) => {
                let mut st = lock(&self.state);
                st.failures = st.failures.saturating_add(1);
                let wait = jittered(self.backoff, st.failures);
                st.retry_at = Some(Instant::now() + wait);
                st.last_error = Some(e.message.clone());
                Err(e)
            }
        }
    }

    /// Drops the cached token if it is still `stale` (the one an API call or a WebSocket upgrade
    /// was refused with), so the next [`TokenSource::token`] fetches a new one. A token that was
    /// already replaced is kept, so many callers refused at once cause one new request.
    pub fn invalidate(&self, stale: &Token) {
        let mut st = lock(&self.state);
        if st.token.as_ref().is_some_and(|t| t.value == stale.value) {
            st.token = None;
        }
    }

    /// Runs `call` with a token; when it answers HTTP 401, drops that token and runs it once more
    /// with a new one. For API calls that authenticate with the bearer.
    pub async fn authorized<F, Fut>(&self, mut call: F) -> Result<super::http::Response>
    where
        F: FnMut(Token) -> Fut,
        Fut: std::future::Future<Output = Result<super::http::Response>>,
    {
        let token = self.token().await?;
        let res = call(token.clone()).await?;
        if res.status != http::StatusCode::UNAUTHORIZED {
            return Ok(res);
        }
        self.invalidate(&token);
        call(self.token().await?).await
    }

    async fn request(&self) -> Result<Token> {
        let body_first = lock(&self.state).body_credentials || self.client.client_secret.is_none();
        let res = self.post(body_first).await?;
        let res = if !body_first
            && matches!(res.status.as_u16(), 400 | 401)
            && self.client.client_secret.is_some()
        {
            // Some endpoints refuse Basic and want the credentials in the form body.
            let again = self.post(true).await?;
            if again.status.is_success() {
                lock(&self.state).body_credentials = true;
            }
            again
        } else {
            res
        };
        self.parse(res)
    }

    async fn post(&self, in_body: bool) -> Result<super::http::Response> {
        let in_body = in_body || self.client.client_secret.is_none();
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            form.append_pair("response_type", "token");
            if in_body {
                form.append_pair("client_id", &self.client.client_id);
                if let Some(s) = &self.client.client_secret {
                    form.append_pair("client_secret", s);
                }
            }
            form.finish()
        };
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(self.url.as_str())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        if let (false, Some(s)) = (in_body, &self.client.client_secret) {
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{s}", self.client.client_id));
            req = req.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        if let Some(zid) = &self.tenant.zid {
            req = req.header("x-zid", zid.as_str());
        }
        let req = req.body(Bytes::from(form)).map_err(|e| {
            Error::with_cause(
                ErrorCode::TokenFailed,
                format!("cannot build the token request for {}", self.describe()),
                e,
            )
        })?;
        lock(&self.state).requests += 1;
        self.http.send(req).await.map_err(|e| {
            Error::new(
                ErrorCode::TokenFailed,
                format!(
                    "cannot get an OAuth token for {}: {}; check that the token endpoint (oa2.tokenendpoint, or uaa.certurl with mutual TLS) is reachable and trusted",
                    self.describe(),
                    e.full_message()
                ),
            )
        })
    }

    fn parse(&self, res: super::http::Response) -> Result<Token> {
        let status = res.status.as_u16();
        let json: Option<Value> = serde_json::from_slice(&res.body).ok();
        if !res.status.is_success() {
            // Only the standard error fields: a body could echo anything.
            let why = json
                .as_ref()
                .and_then(|j| {
                    let e = j.get("error").and_then(Value::as_str)?;
                    let d = j.get("error_description").and_then(Value::as_str);
                    Some(match d {
                        Some(d) => format!(" ({e}: {})", truncate(d, 160)),
                        None => format!(" ({e})"),
                    })
                })
                .unwrap_or_default();
            let hint = match status {
                400 | 401 | 403 => "check clientid and clientsecret (or uaa.certificate and uaa.key) in the service binding, and that the binding is not outdated",
                404 => "check the token endpoint URL (oa2.tokenendpoint) in the service binding",
                _ => "the token endpoint may be down; it is asked again with back-off",
            };
            return Err(Error::new(
                ErrorCode::TokenFailed,
                format!(
                    "the token endpoint refused {} with HTTP {status}{why}; {hint}",
                    self.describe()
                ),
            ));
        }
        let Some(access) = json
            .as_ref()
            .and_then(|j| j.get("access_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        else {
            return Err(Error::new(
                ErrorCode::TokenFailed,
                format!(
                    "the token endpoint answered {} with HTTP {status} but without an access_token; check the token endpoint URL",
                    self.describe()
                ),
            ));
        };
        if http::HeaderValue::from_str(&format!("Bearer {access}")).is_err() {
            return Err(Error::new(
                ErrorCode::TokenFailed,
                format!(
                    "the token endpoint answered {} with a token that cannot be sent in a header",
                    self.describe()
                ),
            ));
        }
        let expires_in = json
            .as_ref()
            .and_then(|j| j.get("expires_in"))
            .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(3600.0);
        let life = Duration::from_secs_f64(expires_in.min(86_400.0 * 365.0));
        // A tenth of the life, at most 5 minutes; but short-lived tokens get up to half of it
        // (at most 30 s), so a connection opened with a cached token does not lose it at once.
        let margin = (life / 10)
            .max((life / 2).min(Duration::from_secs(30)))
            .min(Duration::from_secs(300));
        Ok(Token {
            value: Arc::from(access),
            refresh_at: Instant::now() + life - margin,
        })
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn jittered(b: TokenBackoff, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let d = b.base.saturating_mul(1u32 << exp).min(b.max);
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
}

#[cfg(test)]
#[path = "oauth_tests.rs"]
mod tests;
