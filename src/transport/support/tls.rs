//! One rustls client configuration for every transport: the roots of [`super::trust`] (system
//! roots + `NODE_EXTRA_CA_CERTS` + the `ca` given, as Node.js trusts), an optional client certificate (`cert` and `key` together), and server verification
//! on unless it is switched off. PEM is parsed with `rustls-pki-types`.
//!
//! Every error here is `INVALID_CONFIG`: a bad PEM text, a lone `cert` or `key`, and a system
//! without root certificates are all fixed by changing the configuration (give `ca`).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::error::{Error, ErrorCode, Result};

/// What the TLS client trusts and presents.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM certificates to trust in addition to the system's roots and `NODE_EXTRA_CA_CERTS`.
    pub ca: Option<String>,
    /// PEM client certificate chain (mutual TLS, SASL EXTERNAL), together with `key`.
    pub cert: Option<String>,
    /// PEM private key of `cert`.
    pub key: Option<String>,
    /// Verify the broker's certificate and host name.
    pub verify: bool,
    /// Name to verify instead of the host (SNI).
    pub servername: Option<String>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field("cert", &self.cert.as_ref().map(|_| "<pem>"))
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("verify", &self.verify)
            .field("servername", &self.servername)
            .finish()
    }
}

impl TlsOptions {
    /// Checks the pairing rule: `cert` and `key` are given together or not at all. `prefix` is how
    /// the options are named to the user (`"tls."` for AMQP, `""` for MQTT).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(Error::config(format!(
                "{prefix}cert and {prefix}key must be given together"
            )));
        }
        Ok(())
    }

    /// The server name to verify: `servername` if given, else `host`.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>> {
        let name = self.servername.clone().unwrap_or_else(|| host.to_string());
        ServerName::try_from(name.clone()).map_err(|e| {
            Error::with_cause(
                ErrorCode::InvalidConfig,
                format!("'{name}' is not a valid TLS server name"),
                e,
            )
        })
    }
}

/// The certificates of a PEM text; `what` names the option in errors (`INVALID_CONFIG`).
pub fn pem_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::with_cause(
                ErrorCode::InvalidConfig,
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

/// Builds the rustls client configuration (ring provider). `prefix` names the options in error
/// messages (`"tls."` → `tls.ca`). Errors are `INVALID_CONFIG` (see the module doc).
pub fn client_config(o: &TlsOptions, prefix: &str) -> Result<Arc<ClientConfig>> {
    o.validate(prefix)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::with_cause(ErrorCode::Internal, "TLS setup failed", e))?;
    let builder = if o.verify {
        // Like Node.js: system roots + NODE_EXTRA_CA_CERTS + the kind's own ca.
        let roots = super::trust::root_store(o.ca.as_deref(), &format!("{prefix}ca"))?;
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    let config = match (&o.cert, &o.key) {
        (Some(cert), Some(key)) => {
            let chain = pem_certs(cert, &format!("{prefix}cert"))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| {
                Error::with_cause(
                    ErrorCode::InvalidConfig,
                    format!("{prefix}key is not a valid PEM private key"),
                    e,
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::with_cause(
                    ErrorCode::InvalidConfig,
                    format!("{prefix}cert and {prefix}key do not form a usable client certificate"),
                    e,
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Accepts any server certificate (`rejectUnauthorized: false`); signatures are still checked.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
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
        let e = client_config(&o, "tls.").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.message.contains("tls.ca"), "{}", e.message);
    }

    #[test]
    fn without_verification_no_roots_are_needed() {
        let o = TlsOptions::default();
        assert!(client_config(&o, "").is_ok());
    }

    #[test]
    fn cert_without_key_is_rejected() {
        let o = TlsOptions {
            cert: Some("x".into()),
            ..Default::default()
        };
        let e = client_config(&o, "").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.message.contains("cert and key"), "{}", e.message);
    }

    #[test]
    fn a_bad_key_is_invalid_config() {
        let o = TlsOptions {
            cert: Some(String::new()),
            key: Some("not a key".into()),
            ..Default::default()
        };
        assert_eq!(
            client_config(&o, "").unwrap_err().code,
            ErrorCode::InvalidConfig
        );
    }

    #[test]
    fn servername_overrides_the_host() {
        let o = TlsOptions {
            servername: Some("broker.example".into()),
            ..Default::default()
        };
        assert_eq!(
            o.server_name("127.0.0.1").unwrap(),
            ServerName::try_from("broker.example").unwrap()
        );
        assert!(TlsOptions::default().server_name("not a name!").is_err());
    }
}
