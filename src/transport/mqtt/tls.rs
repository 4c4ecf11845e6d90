//! TLS settings for `mqtts://` and `wss://`: rustls with the `ring` provider, the system's root
//! certificates or the `ca` given, and server verification on unless it is switched off.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, Result};

/// What the TLS client trusts and presents.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM certificates to trust instead of the system's root certificates.
    pub ca: Option<String>,
    /// Verify the broker's certificate and host name (default `true`).
    pub verify: bool,
    /// PEM client certificate chain (mutual TLS), together with `key`.
    pub cert: Option<String>,
    /// PEM private key of `cert`.
    pub key: Option<String>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field("verify", &self.verify)
            .field("cert", &self.cert.as_ref().map(|_| "<pem>"))
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::with_cause(
                crate::error::ErrorCode::InvalidConfig,
                format!("{what} is not valid PEM"),
                e,
            )
        })?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{what} contains no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certs)
}

/// Builds the rustls client configuration. Errors are `INVALID_CONFIG`.
pub fn client_config(o: &TlsOptions) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::with_cause(crate::error::ErrorCode::Internal, "TLS setup failed", e))?;
    let builder = if o.verify {
        let mut roots = RootCertStore::empty();
        match &o.ca {
            Some(ca) => {
                let (added, _) = roots.add_parsable_certificates(pem_certs(ca, "ca")?);
                if added == 0 {
                    return Err(Error::config("ca contains no usable CA certificate"));
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    return Err(Error::config(
                        "no system root certificates were found for TLS; give the broker's CA with the ca option",
                    ));
                }
            }
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    };
    let config = match (&o.cert, &o.key) {
        (Some(cert), Some(key)) => {
            let chain = pem_certs(cert, "cert")?;
            let key = rustls_pemfile::private_key(&mut key.as_bytes())
                .ok()
                .flatten()
                .ok_or_else(|| Error::config("key contains no PEM private key"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::with_cause(
                    crate::error::ErrorCode::InvalidConfig,
                    "cert and key do not form a usable client certificate",
                    e,
                )
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(Error::config("cert and key must be given together")),
    };
    Ok(Arc::new(config))
}

/// Accepts any server certificate (`rejectUnauthorized: false`); signatures are still checked.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_is_invalid_config() {
        let o = TlsOptions {
            ca: Some("not a certificate".into()),
            verify: true,
            ..Default::default()
        };
        let e = client_config(&o).unwrap_err();
        assert_eq!(e.code, crate::error::ErrorCode::InvalidConfig);
        assert!(e.message.contains("ca"), "{}", e.message);
    }

    #[test]
    fn without_verification_no_roots_are_needed() {
        let o = TlsOptions {
            verify: false,
            ..Default::default()
        };
        assert!(client_config(&o).is_ok());
    }

    #[test]
    fn cert_without_key_is_rejected() {
        let o = TlsOptions {
            verify: false,
            cert: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(
            client_config(&o).unwrap_err().code,
            crate::error::ErrorCode::InvalidConfig
        );
    }
}
