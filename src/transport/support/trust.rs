//! Which server certificates a native TLS connection trusts: like Node.js, the system's roots plus
//! the PEM file named by `NODE_EXTRA_CA_CERTS`, plus the kind's own `ca` option.
//!
//! Every TLS client in the crate builds its root store with [`root_store`], so corporate-proxy and
//! test CAs work the same way for WebSocket, token, management and broker connections.

use std::sync::OnceLock;

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use super::tls::pem_certs;
use crate::error::{Error, Result};

fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// The certificates in the file named by `NODE_EXTRA_CA_CERTS` (none when unset). As in Node.js,
/// an unreadable file is a warning, not an error.
pub fn node_extra_ca_certs() -> Vec<CertificateDer<'static>> {
    let Some(path) = std::env::var_os("NODE_EXTRA_CA_CERTS").filter(|p| !p.is_empty()) else {
        return Vec::new();
    };
    match std::fs::read_to_string(&path) {
        Ok(pem) => pem_certs(&pem, "NODE_EXTRA_CA_CERTS").unwrap_or_else(|e| {
            tracing::warn!("ignoring NODE_EXTRA_CA_CERTS: {}", e.message);
            Vec::new()
        }),
        Err(e) => {
            tracing::warn!("ignoring NODE_EXTRA_CA_CERTS {:?}: {e}", path);
            Vec::new()
        }
    }
}

/// System roots + `NODE_EXTRA_CA_CERTS` + `ca` (PEM text; `option` names it in errors). Fails only
/// when `ca` is not valid PEM or when nothing at all is trusted.
pub fn root_store(ca: Option<&str>, option: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    roots.add_parsable_certificates(node_extra_ca_certs());
    if let Some(ca) = ca {
        let (added, _) = roots.add_parsable_certificates(pem_certs(ca, option)?);
        if added == 0 {
            return Err(Error::config(format!(
                "{option} holds no usable CA certificate"
            )));
        }
    }
    if roots.is_empty() {
        return Err(Error::config(format!(
            "no trusted CA certificates found on this system; give {option} or set NODE_EXTRA_CA_CERTS"
        )));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn bad_ca_is_a_config_error_that_names_the_option() {
        let e = root_store(Some("not pem"), "tls.ca").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.message.contains("tls.ca"), "{}", e.message);
    }
}
