//! A local HTTP/1.1 test server on 127.0.0.1 (tests only): counts requests, records them and
//! answers with a closure. A 429 carries `Retry-After: 1`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::sync::lock;

/// What the test token endpoint answers: status, body, delay.
pub type Reply = (u16, String, Duration);

/// A local HTTP/1.1 server on 127.0.0.1 that counts requests and answers with `reply(n, head)`.
pub struct TestServer {
    /// `http://127.0.0.1:<port>/oauth/token`.
    pub url: String,
    /// Requests so far.
    pub hits: Arc<AtomicUsize>,
    /// Every request (head and body).
    pub heads: Arc<Mutex<Vec<String>>>,
}

/// Starts the server; `reply(n, request)` answers the n-th request (1-based).
pub async fn serve<F>(reply: F) -> TestServer
where
    F: Fn(usize, &str) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/oauth/token", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let reply = Arc::new(reply);
    let (h, hd) = (hits.clone(), heads.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (h, hd, reply) = (h.clone(), hd.clone(), reply.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    // One request at a time per connection (keep-alive).
                    let end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < end + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = String::from_utf8_lossy(&buf[end..end + len]).to_string();
                    buf.drain(..end + len);
                    let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                    lock(&hd).push(format!("{head}{body}"));
                    let (status, out, delay) = reply(n, &format!("{head}{body}"));
                    tokio::time::sleep(delay).await;
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json; charset=utf-8\r\n{}content-length: {}\r\n\r\n{out}",
                        if status == 429 { "retry-after: 1\r\n" } else { "" },
                        out.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    TestServer { url, hits, heads }
}
