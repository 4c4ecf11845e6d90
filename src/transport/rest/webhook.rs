//! Registration of the app's webhook, as @sap/cds does it: after the waiting period (the app must
//! be reachable, Event Mesh calls it with `OPTIONS` at once), `DELETE /messagingrest/v1/subscriptions/{name}`
//! (404 is fine), then `POST /messagingrest/v1/subscriptions` with @sap/cds's body; an answer with
//! error code `CONFLICT` means another instance registered it — also fine. Failures are logged
//! and retried with back-off; the body holds the client secret and is never logged. A subscriber
//! tenant's webhook ([`register`], [`delete`], [`tenant_body`]) is registered once on its
//! subscribe and deleted on its unsubscribe (`src/napi/tenants.rs`).

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::provision::backoff;
use super::Api;
use crate::error::{Error, ErrorCode, Result};
use crate::log::Logger;
use crate::transport::support::url::percent_encode;

/// A pending webhook registration.
pub struct Registration {
    /// The REST API (httprest uri and client).
    pub api: Api,
    /// The registration body (JSON).
    pub body: String,
    /// The webhook subscription's name (the queue).
    pub name: String,
    /// Wait before registering.
    pub waiting_period: Duration,
    /// Logger.
    pub log: Logger,
}

/// `DELETE /messagingrest/v1/subscriptions/{name}`: `true` when a webhook subscription was deleted,
/// `false` when there was none (404).
pub async fn delete(api: &Api, name: &str) -> Result<bool> {
    let path = format!("/messagingrest/v1/subscriptions/{}", percent_encode(name));
    let r = api.call(http::Method::DELETE, &path, &[], None).await?;
    match r.status.as_u16() {
        s if (200..300).contains(&s) => Ok(true),
        404 => Ok(false),
        s => Err(Error::new(
            ErrorCode::ConnectionFailed,
            format!(
                "deleting the webhook subscription '{name}' failed with HTTP {s}: {}",
                r.body_excerpt()
            ),
        )),
    }
}

/// Registers the webhook subscription `name` as @sap/cds does: [`delete`] the old one, then
/// `POST /messagingrest/v1/subscriptions` with `body`; `CONFLICT` (another instance registered it
/// meanwhile) counts as success.
pub async fn register(api: &Api, name: &str, body: &str) -> Result<()> {
    delete(api, name).await?;
    let r = api
        .call(
            http::Method::POST,
            "/messagingrest/v1/subscriptions",
            &[("content-type", "application/json")],
            Some(Bytes::from(body.to_string())),
        )
        .await?;
    let conflict = r.status.as_u16() == 409
        || serde_json::from_slice::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/code")
                    .and_then(|c| c.as_str())
                    .map(|c| c == "CONFLICT")
            })
            .unwrap_or(false);
    if r.status.is_success() || conflict {
        return Ok(());
    }
    let hint = match r.status.as_u16() {
        400 => "check the webhook options and that the app URL is https and reachable",
        401 | 403 => "check the binding's httprest oa2 credentials",
        _ => "it is tried again",
    };
    Err(Error::new(
        ErrorCode::ConnectionFailed,
        format!(
            "registering the webhook for queue '{name}' failed with HTTP {} ({hint}): {}",
            r.status.as_u16(),
            r.body_excerpt()
        ),
    ))
}

/// The registration body of a subscriber tenant: the provider's `body` with
/// `pushConfig.securitySchema.tokenUrl` — when it is the binding's `provider_token_url` — replaced
/// by the tenant's `tenant_token_url`, so that Event Mesh calls the webhook with the tenant's tokens
/// (whose tenant CAP's auth puts into `cds.context.tenant`), as @sap/cds's tenant deployment does.
/// A token URL set in the `webhook.pushConfig` options is kept.
pub fn tenant_body(body: &str, provider_token_url: &str, tenant_token_url: &str) -> Result<String> {
    let mut v: serde_json::Value = serde_json::from_str(body).map_err(|e| {
        Error::with_cause(
            ErrorCode::InvalidConfig,
            "the webhook registration is not JSON",
            e,
        )
    })?;
    if let Some(url) = v.pointer_mut("/pushConfig/securitySchema/tokenUrl") {
        if url.as_str() == Some(provider_token_url) {
            *url = serde_json::Value::String(tenant_token_url.to_string());
        }
    }
    Ok(v.to_string())
}

impl Registration {
    /// Waits, registers, retries until it worked or the transport closed.
    pub async fn run(self, mut closed: watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(self.waiting_period) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
        let mut failures = 0u32;
        loop {
            match register(&self.api, &self.name, &self.body).await {
                Ok(()) => {
                    self.log
                        .info(&format!("webhook registered for queue '{}'", self.name));
                    return;
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff(failures.min(6) + 2);
                    self.log.error(&format!(
                        "cannot register the Event Mesh webhook (attempt {failures}, next in {} ms): {}",
                        wait.as_millis(),
                        e.full_message()
                    ));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = closed.wait_for(|c| *c) => return,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tenant_body;
    use serde_json::{json, Value};

    const PROVIDER: &str = "https://provider.auth.example.com/oauth/token";
    const TENANT: &str = "https://t1.auth.example.com/oauth/token";

    fn body(token_url: &str) -> String {
        json!({ "name": "q", "qos": 1, "pushConfig": { "endpoint": "https://app/x?q=q", "securitySchema": { "type": "oauth2", "clientId": "c", "tokenUrl": token_url } } }).to_string()
    }

    #[test]
    fn tenant_body_swaps_the_binding_token_url_only() {
        let out: Value =
            serde_json::from_str(&tenant_body(&body(PROVIDER), PROVIDER, TENANT).unwrap()).unwrap();
        let mut want: Value = serde_json::from_str(&body(TENANT)).unwrap();
        assert_eq!(out, want);
        // A token URL of the webhook options stays.
        let custom = "https://other.example.com/token";
        let out: Value =
            serde_json::from_str(&tenant_body(&body(custom), PROVIDER, TENANT).unwrap()).unwrap();
        want = serde_json::from_str(&body(custom)).unwrap();
        assert_eq!(out, want);
        // No security schema: unchanged.
        let plain = json!({ "name": "q", "pushConfig": { "endpoint": "e" } }).to_string();
        assert_eq!(
            serde_json::from_str::<Value>(&tenant_body(&plain, PROVIDER, TENANT).unwrap()).unwrap(),
            serde_json::from_str::<Value>(&plain).unwrap()
        );
        assert!(tenant_body("not json", PROVIDER, TENANT).is_err());
    }
}
