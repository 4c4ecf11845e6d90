//! An operational host override for the HTTP client, like `curl --resolve host:port:address`:
//! `CDS_NATIVE_RESOLVE="t1.auth.example.test:8080:127.0.0.1,auth.example.test:8080:127.0.0.1"`
//! makes a request to exactly that host **and** port connect to that IP address instead of
//! resolving the name. Nothing else changes: the `Host` header and the TLS server name stay the
//! URL's host, and a host or port not listed is resolved as usual. The address must be an IP
//! literal, so an override can only send traffic to the address written in it.
//!
//! Used where DNS cannot be changed, e.g. to reach subscriber-subdomain token URLs
//! (`<subdomain>.<host>`) of a local test server.

use std::net::IpAddr;

use crate::error::{Error, Result};

/// The environment variable read by [`Overrides::from_env`].
pub const ENV: &str = "CDS_NATIVE_RESOLVE";

/// Host overrides: (lower-case host, port) → IP address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    entries: Vec<(String, u16, IpAddr)>,
}

impl Overrides {
    /// Parses `host:port:address[,host:port:address…]` (an IPv6 address in brackets or bare).
    /// An empty string means no override; anything malformed is an `INVALID_CONFIG` error.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut entries = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || {
                Error::config(format!(
                    "{ENV} entry '{item}' must be host:port:address with an IP address (like curl --resolve)"
                ))
            };
            let mut parts = item.splitn(3, ':');
            let host = parts.next().filter(|h| !h.is_empty()).ok_or_else(bad)?;
            let port: u16 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .filter(|p| *p != 0)
                .ok_or_else(bad)?;
            let addr = parts
                .next()
                .map(|a| a.trim_start_matches('[').trim_end_matches(']'))
                .and_then(|a| a.parse::<IpAddr>().ok())
                .ok_or_else(bad)?;
            entries.push((host.to_ascii_lowercase(), port, addr));
        }
        Ok(Overrides { entries })
    }

    /// The overrides of `CDS_NATIVE_RESOLVE` (none when it is unset).
    pub fn from_env() -> Result<Self> {
        match std::env::var(ENV) {
            Ok(s) => Self::parse(&s),
            Err(_) => Ok(Self::default()),
        }
    }

    /// The address to connect to for `host`:`port`, if overridden.
    pub fn lookup(&self, host: &str, port: u16) -> Option<IpAddr> {
        self.entries
            .iter()
            .find(|(h, p, _)| *p == port && h.eq_ignore_ascii_case(host))
            .map(|(_, _, a)| *a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_host_and_port_are_overridden() {
        let o = Overrides::parse("t1.auth.test:8080:127.0.0.1, Auth.Test:8080:[::1]").unwrap();
        assert_eq!(
            o.lookup("T1.auth.test", 8080),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(o.lookup("auth.test", 8080), Some("::1".parse().unwrap()));
        assert_eq!(o.lookup("t1.auth.test", 443), None);
        assert_eq!(o.lookup("t2.auth.test", 8080), None);
        assert_eq!(Overrides::parse("").unwrap(), Overrides::default());
    }

    #[test]
    fn an_entry_without_an_ip_address_is_refused() {
        for bad in [
            "a.test:80:evil.example",
            "a.test:80",
            "a.test:x:127.0.0.1",
            ":80:127.0.0.1",
            "a.test:0:127.0.0.1",
        ] {
            let e = Overrides::parse(bad).unwrap_err();
            assert_eq!(e.code.as_str(), "INVALID_CONFIG", "{bad}");
            assert!(e.message.contains("CDS_NATIVE_RESOLVE"), "{}", e.message);
        }
    }

    #[tokio::test]
    async fn the_http_client_connects_to_the_override_and_keeps_the_host_header() {
        use crate::sync::lock;
        use crate::transport::support::http::{HttpClient, HttpTls};
        use crate::transport::support::test_http::serve;
        let srv = serve(|_, _| (200, "{}".into(), std::time::Duration::ZERO)).await;
        let port: u16 = srv
            .url
            .trim_start_matches("http://127.0.0.1:")
            .trim_end_matches("/oauth/token")
            .parse()
            .unwrap();
        let http = HttpClient::new(&HttpTls::default(), std::time::Duration::from_secs(5))
            .unwrap()
            .with_overrides(
                Overrides::parse(&format!("t1.auth.invalid:{port}:127.0.0.1")).unwrap(),
            );
        let req = http::Request::get(format!("http://t1.auth.invalid:{port}/oauth/token"))
            .body(bytes::Bytes::new())
            .unwrap();
        let r = http.send(req).await.unwrap();
        assert_eq!(r.status.as_u16(), 200);
        let head = lock(&srv.heads)[0].to_ascii_lowercase();
        assert!(
            head.contains(&format!("host: t1.auth.invalid:{port}")),
            "{head}"
        );
    }
}
