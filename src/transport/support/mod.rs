//! Mechanics shared by every transport; no transport imports another.

pub mod backoff;
pub mod em_management;
pub mod host;
pub mod http;
pub mod memory;
pub mod oauth;
pub mod resolve;
#[cfg(test)]
pub mod test_http;
pub mod tls;
pub mod trust;
pub mod url;
pub mod ws;
