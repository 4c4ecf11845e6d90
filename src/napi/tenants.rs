//! The JavaScript boundary of SAP Event Mesh multitenancy: a subscriber tenant's queue and its
//! subscriptions (and, for the REST kinds with a webhook, the tenant's webhook subscription),
//! created on the tenant's subscribe and deleted on its unsubscribe (`lib/event-mesh-tenants.js`
//! calls these from `cds.xt.DeploymentService`'s hooks and from the `/deploy` endpoint). Converts
//! the options and delegates to [`crate::transport::support::em_management::Management`] and
//! [`crate::transport::rest::webhook`]; the tokens are the tenant's (`subdomain` of the OAuth
//! options, see [`crate::transport::support::oauth::TokenSource`]).
//!
//! Errors resolve as a [`Failure`] (see [`super::error`]).

use napi::bindgen_prelude::Either;
use napi_derive::napi;

use super::error::Failure;
use super::ops::settled;
use super::options::{EventMeshOptions, OAuthOptions};
use crate::error::{Error, Result};
use crate::transport::rest::{webhook, Api};
use crate::transport::support::em_management::Management;

/// A tenant's webhook subscription (REST kinds with `inbound: 'webhook'`).
#[napi(object)]
#[derive(Debug, Default)]
pub struct TenantWebhookOptions {
    /// The `httprest` entry's `uri`.
    pub uri: String,
    /// The `httprest` entry's `oa2` (with the tenant's `subdomain`).
    pub oauth: OAuthOptions,
    /// The provider's registration body (JSON; holds the client secret — never logged). Its
    /// `pushConfig.securitySchema.tokenUrl`, when it is the binding's, becomes the tenant's.
    pub registration: String,
}

/// One tenant's queue: the management API (with the tenant's subdomain on `managementOauth`),
/// the queue and its topics.
#[napi(object)]
#[derive(Debug, Default)]
pub struct TenantQueueOptions {
    /// `managementUri`, `managementOauth` (with `subdomain`, optionally `zid`),
    /// `managementBasePath`, `queueConfig`.
    pub event_mesh: EventMeshOptions,
    /// The queue's name.
    pub queue: String,
    /// The topic subscriptions of the queue (deploy only).
    pub topics: Option<Vec<String>>,
    /// The tenant's webhook subscription (named as the queue), if the kind has one.
    pub webhook: Option<TenantWebhookOptions>,
}

/// What a tenant's deployment did.
#[napi(object)]
pub struct TenantDeployed {
    /// The queue was created rather than found.
    pub created: bool,
    /// Subscriptions created.
    pub added: Vec<String>,
    /// Obsolete subscriptions deleted.
    pub removed: Vec<String>,
    /// The webhook was registered (`false`: the kind has none).
    pub webhook: bool,
}

/// What a tenant's undeployment did.
#[napi(object)]
pub struct TenantUndeployed {
    /// The queue was deleted (`false`: there was none).
    pub queue: bool,
    /// The webhook subscription was deleted (`false`: there was none, or the kind has none).
    pub webhook: bool,
}

fn api(o: &TenantQueueOptions) -> Result<Management> {
    if o.queue.is_empty() {
        return Err(Error::config("a tenant's queue needs a name"));
    }
    if o.event_mesh
        .management_oauth
        .as_ref()
        .and_then(|a| a.subdomain.as_deref())
        .is_none_or(str::is_empty)
    {
        return Err(Error::config(
            "a tenant's queue needs the tenant's subdomain (subscribedSubdomain of the subscription)",
        ));
    }
    super::config::management(Some(&o.event_mesh))?
        .ok_or_else(|| Error::config("a tenant's queue needs management[0].uri of the binding"))
}

/// The REST API with the tenant's token and the tenant's registration body, if there is a webhook.
fn webhook_api(o: &TenantQueueOptions) -> Result<Option<(Api, String)>> {
    let Some(w) = &o.webhook else { return Ok(None) };
    if w.oauth.subdomain.as_deref().is_none_or(str::is_empty) {
        return Err(Error::config(
            "a tenant's webhook needs the tenant's subdomain (subscribedSubdomain of the subscription)",
        ));
    }
    let (api, provider_token_url) = super::config::rest_api(&w.uri, &w.oauth)?;
    let body = webhook::tenant_body(&w.registration, &provider_token_url, api.token_url())?;
    Ok(Some((api, body)))
}

/// Waits for the management API's readiness check, then creates the tenant's queue (if absent)
/// and makes its subscriptions `topics`, then registers the tenant's webhook (if any: the old one
/// deleted, then created), with the tenant's tokens.
#[napi]
pub async fn event_mesh_tenant_deploy(
    options: TenantQueueOptions,
) -> napi::Result<Either<TenantDeployed, Failure>> {
    settled(
        async {
            let m = api(&options)?;
            let hook = webhook_api(&options)?;
            let topics = options.topics.clone().unwrap_or_default();
            let p = m.deploy(&options.queue, &topics).await?;
            if let Some((rest, body)) = &hook {
                webhook::register(rest, &options.queue, body).await?;
            }
            Ok(TenantDeployed {
                created: p.created,
                added: p.added,
                removed: p.removed,
                webhook: hook.is_some(),
            })
        }
        .await,
    )
}

/// Deletes the tenant's webhook subscription (if the kind has one), then its queue (and with it
/// its subscriptions), with the tenant's tokens; each is `false` when there was none.
#[napi]
pub async fn event_mesh_tenant_undeploy(
    options: TenantQueueOptions,
) -> napi::Result<Either<TenantUndeployed, Failure>> {
    settled(
        async {
            let m = api(&options)?;
            let webhook = match webhook_api(&options)? {
                Some((rest, _)) => webhook::delete(&rest, &options.queue).await?,
                None => false,
            };
            let queue = m.delete_queue(&options.queue).await?;
            Ok(TenantUndeployed { queue, webhook })
        }
        .await,
    )
}
