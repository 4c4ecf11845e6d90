//! The JavaScript boundary: the only module that uses `#[napi]`. It converts values and delegates
//! to [`crate::engine::Engine`]. One file per exported class (lancedb's `nodejs/src` layout):
//!
//! | file | exports |
//! |---|---|
//! | [`engine`] | `NativeEngine` (+ `GuaranteeInfo`, `DeadLetterInfo`) |
//! | [`router`] | `NativeRouter` (+ `RouteSpec`) |
//! | [`bridge`] | the handler and log callbacks (`InboundBatch`, `HandlerFailure`) |
//! | [`options`] | the option objects (`EngineOptions` and one per transport) |
//! | [`config`] | options → [`crate::config::EngineConfig`] (overrides the transports' defaults) |
//! | [`error`] | `err.code` as a napi custom status, `Failure`, `errorCodes()` |
//! | [`cloudevents`] | `completeCloudEventHeaders()` |
//! | [`tenants`] | SAP Event Mesh per-tenant queues (`eventMeshTenantDeploy`, `eventMeshTenantUndeploy`) |
//! | [`ops`] | the CLI's probes and inspections (`probeConnection`, `tailMessages`, `inspectDeadLetters`, …) |
//!
//! Errors cross as data: a thrown error has `code` set natively, an asynchronous operation resolves
//! to a `Failure { code, message }` (see [`error`]).

pub mod bridge;
pub mod cloudevents;
pub mod config;
pub mod engine;
pub mod error;
pub mod ops;
pub mod options;
pub mod router;
pub mod tenants;

/// The engine's tokio runtime: with `CDS_NATIVE_THREADS` set (1–64) at load, that many
/// worker threads; otherwise napi-rs's default (one per core). See README, "Engine threads".
#[napi_derive::module_init]
fn init_runtime() {
    let Some(workers) = std::env::var("CDS_NATIVE_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
    else {
        return;
    };
    // napi-rs makes its default runtime when this one cannot be built
    if let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("cds-native-messaging")
        .enable_all()
        .build()
    {
        napi::bindgen_prelude::create_custom_tokio_runtime(rt);
    }
}
