use std::sync::atomic::Ordering;

use super::super::test_http::{serve, Reply};
use super::*;

fn client(url: &str) -> OAuthClient {
    OAuthClient {
        token_url: url.to_string(),
        client_id: "sb-client!b1".into(),
        client_secret: Some("s3cr3t-value".into()),
        tls: HttpTls::default(),
    }
}

fn ok(token: &str, expires_in: f64) -> Reply {
    (
        200,
        format!(r#"{{"access_token":"{token}","token_type":"bearer","expires_in":{expires_in}}}"#),
        Duration::ZERO,
    )
}

fn fast_backoff() -> TokenBackoff {
    TokenBackoff {
        base: Duration::from_millis(200),
        max: Duration::from_millis(400),
    }
}

#[test]
fn reads_both_spellings_and_mtls() {
    let a = serde_json::json!({"clientid": "c", "clientsecret": "s", "tokenendpoint": "https://x.auth.example/oauth/token"});
    let b = serde_json::json!({"client": "c", "secret": "s", "endpoint": "https://x.auth.example/oauth/token"});
    assert_eq!(
        OAuthClient::from_binding(&a, None, "oa2").unwrap(),
        OAuthClient::from_binding(&b, None, "oa2").unwrap()
    );
    let uaa = serde_json::json!({"certificate": "CERT", "key": "KEY", "certurl": "https://x.authentication.cert.example/"});
    let m = OAuthClient::from_binding(&serde_json::json!({"clientid": "c", "tokenendpoint": "https://x.auth.example/oauth/token"}), Some(&uaa), "oa2").unwrap();
    assert_eq!(m.client_secret, None);
    assert_eq!(
        m.token_url,
        "https://x.authentication.cert.example/oauth/token"
    );
    assert!(!format!("{m:?}").contains("KEY"));
    let e = OAuthClient::from_binding(
        &serde_json::json!({"clientid": "c", "tokenendpoint": "https://x/"}),
        None,
        "messaging[0].oa2",
    )
    .unwrap_err();
    assert!(e.message.contains("messaging[0].oa2"), "{}", e.message);
}

#[test]
fn subdomain_replaces_the_first_host_label() {
    assert_eq!(
        with_subdomain(
            "https://provider.authentication.eu10.hana.ondemand.com/oauth/token",
            "sub1"
        )
        .unwrap(),
        "https://sub1.authentication.eu10.hana.ondemand.com/oauth/token"
    );
}

#[tokio::test]
async fn caches_until_the_refresh_margin_then_fetches_again() {
    let srv = serve(|n, _| ok(&format!("tok-{n}"), 2.0)).await;
    let ts = TokenSource::new(client(&srv.url), Tenant::default(), fast_backoff()).unwrap();
    let a = ts.token().await.unwrap();
    assert_eq!(&*a.value, "tok-1");
    assert_eq!(&*ts.token().await.unwrap().value, "tok-1");
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1);
    // expires_in 2 s, margin half of it: stale after 1 s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(&*ts.token().await.unwrap().value, "tok-2");
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);
    let head = lock(&srv.heads)[0].clone();
    assert!(head.contains("grant_type=client_credentials"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("authorization: basic "),
        "{head}"
    );
    assert!(
        !head.contains("s3cr3t-value"),
        "the secret goes in Basic, not the body: {head}"
    );
}

#[tokio::test]
async fn fifty_concurrent_callers_cause_one_request() {
    let srv = serve(|n, _| {
        let (s, b, _) = ok(&format!("tok-{n}"), 3600.0);
        (s, b, Duration::from_millis(300))
    })
    .await;
    let ts =
        Arc::new(TokenSource::new(client(&srv.url), Tenant::default(), fast_backoff()).unwrap());
    let calls = (0..50).map(|_| {
        let ts = ts.clone();
        tokio::spawn(async move { ts.token().await.map(|t| t.value.to_string()) })
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().unwrap(), "tok-1");
    }
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_401_invalidates_and_fetches_once_more() {
    let srv = serve(|n, _| ok(&format!("tok-{n}"), 3600.0)).await;
    let ts = TokenSource::new(client(&srv.url), Tenant::default(), fast_backoff()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let res = ts
        .authorized(|t| {
            let s = s.clone();
            async move {
                lock(&s).push(t.value.to_string());
                let status = if &*t.value == "tok-1" { 401 } else { 200 };
                Ok(super::super::http::Response {
                    status: http::StatusCode::from_u16(status).unwrap(),
                    headers: Default::default(),
                    body: Bytes::new(),
                })
            }
        })
        .await
        .unwrap();
    assert_eq!(res.status.as_u16(), 200);
    assert_eq!(*lock(&seen), vec!["tok-1".to_string(), "tok-2".to_string()]);
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);
    // An old token does not drop the new one.
    let old = Token {
        value: Arc::from("tok-1"),
        refresh_at: Instant::now(),
    };
    ts.invalidate(&old);
    assert_eq!(&*ts.token().await.unwrap().value, "tok-2");
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_failing_endpoint_is_asked_again_only_after_back_off() {
    let srv = serve(|n, _| {
        if n <= 2 {
            (503, r#"{"error":"unavailable"}"#.into(), Duration::ZERO)
        } else {
            ok("tok-ok", 3600.0)
        }
    })
    .await;
    let ts = TokenSource::new(client(&srv.url), Tenant::default(), fast_backoff()).unwrap();
    let e = ts.token().await.unwrap_err();
    assert_eq!(e.code, ErrorCode::TokenFailed);
    assert!(e.message.contains("HTTP 503"), "{}", e.message);
    for _ in 0..20 {
        assert_eq!(ts.token().await.unwrap_err().code, ErrorCode::TokenFailed);
    }
    assert_eq!(
        srv.hits.load(Ordering::SeqCst),
        1,
        "no request during the back-off"
    );
    tokio::time::sleep(Duration::from_millis(210)).await;
    assert!(ts.token().await.is_err());
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);
    // Second failure: 200–400 ms.
    tokio::time::sleep(Duration::from_millis(420)).await;
    assert_eq!(&*ts.token().await.unwrap().value, "tok-ok");
    assert_eq!(srv.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn basic_refused_falls_back_to_body_credentials() {
    let srv = serve(|_, req| {
        if req.contains("client_secret=") {
            ok("tok-body", 3600.0)
        } else {
            (401, r#"{"error":"unauthorized"}"#.into(), Duration::ZERO)
        }
    })
    .await;
    let ts = TokenSource::new(
        client(&srv.url),
        Tenant {
            subdomain: None,
            zid: Some("zid-1".into()),
        },
        fast_backoff(),
    )
    .unwrap();
    assert_eq!(&*ts.token().await.unwrap().value, "tok-body");
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);
    assert!(lock(&srv.heads)[0]
        .to_ascii_lowercase()
        .contains("x-zid: zid-1"));
}

#[tokio::test]
async fn no_secret_in_any_error() {
    let srv = serve(|_, _| {
        (
            401,
            r#"{"error":"unauthorized","error_description":"Bad credentials"}"#.into(),
            Duration::ZERO,
        )
    })
    .await;
    let ts = TokenSource::new(client(&srv.url), Tenant::default(), fast_backoff()).unwrap();
    let e = ts.token().await.unwrap_err();
    assert_eq!(e.code, ErrorCode::TokenFailed);
    let text = format!("{} {:?} {:?}", e.full_message(), e, ts);
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(text.contains("sb-client!b1"), "names the client: {text}");
    assert!(text.contains("clientsecret"), "says what to check: {text}");
    // Unreachable endpoint.
    let ts = TokenSource::new(
        client("http://127.0.0.1:1/oauth/token"),
        Tenant::default(),
        fast_backoff(),
    )
    .unwrap();
    let e = ts.token().await.unwrap_err();
    assert_eq!(e.code, ErrorCode::TokenFailed);
    assert!(!e.full_message().contains("s3cr3t"));
    assert!(e.message.contains("reachable"), "{}", e.message);
}

#[test]
fn shared_sources_are_one_per_client_and_tenant() {
    let c = client("http://provider.auth.example:9/oauth/token");
    let a = TokenSource::shared(&c, &Tenant::default()).unwrap();
    let b = TokenSource::shared(&c, &Tenant::default()).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let t = Tenant {
        subdomain: Some("sub".into()),
        zid: None,
    };
    let sub = a.for_tenant(&t).unwrap();
    assert!(!Arc::ptr_eq(&a, &sub));
    assert!(
        sub.describe()
            .contains("http://sub.auth.example:9/oauth/token"),
        "{}",
        sub.describe()
    );
    let other = TokenSource::shared(
        &client("http://127.0.0.2:9/oauth/token"),
        &Tenant::default(),
    )
    .unwrap();
    assert!(!Arc::ptr_eq(&a, &other));
}
