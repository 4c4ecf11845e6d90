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
