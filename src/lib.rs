//! # cds-native-messaging
//!
//! The Rust engine behind the `native-*-messaging` kinds for SAP CAP Node.js. The JavaScript classes
//! in `srv/` extend `cds.MessagingService` and hand everything below it to an [`engine::Engine`]:
//! transports, subscriptions, acknowledgements, redelivery and dead-lettering.
//!
//! Only [`napi`] knows about Node-API; everything else is plain async Rust and is tested as such.

#![deny(missing_docs)]

pub mod cloudevents;
pub mod config;
pub mod engine;
pub mod error;
pub mod limits;
pub mod log;
pub mod message;
pub mod napi;
pub mod policy;
pub mod routing;
pub mod subscriptions;
pub mod sync;
pub mod transport;

pub use error::{Error, ErrorCode, Result};
