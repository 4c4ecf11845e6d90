//! OAuth2 bearer tokens on MQTT's WebSocket upgrade (SAP Event Mesh `mqtt311ws`): rumqttc's
//! request modifier asks the [`TokenSource`] on every (re)connect, and a gateway answering 401
//! gets that token dropped so the next reconnect fetches a new one.

use std::sync::{Arc, Mutex};

use rumqttc::{ConnectionError, MqttOptions};

use crate::sync::lock;
use crate::transport::support::oauth::{Token, TokenSource};

/// The token source of one MQTT connection and what its last upgrade used.
pub struct Bearer {
    tokens: Arc<TokenSource>,
    last: Mutex<Option<std::result::Result<Token, String>>>,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer")
            .field("tokens", &self.tokens.describe())
            .finish_non_exhaustive()
    }
}

impl Bearer {
    /// Bearer tokens from `tokens`.
    pub fn new(tokens: Arc<TokenSource>) -> Arc<Self> {
        Arc::new(Bearer {
            tokens,
            last: Mutex::new(None),
        })
    }

    /// Sets `Authorization: Bearer <token>` on every WebSocket upgrade of `o`. When no token can be
    /// had, the upgrade goes without one (the gateway refuses it) and [`Bearer::after_error`] tells
    /// why.
    pub fn install(self: &Arc<Self>, o: &mut MqttOptions) {
        let me = self.clone();
        o.set_request_modifier(move |mut req: http::Request<()>| {
            let me = me.clone();
            async move {
                let got = me.tokens.token().await;
                if let Ok(t) = &got {
                    if let Ok(mut v) = http::HeaderValue::from_str(&t.bearer()) {
                        v.set_sensitive(true);
                        req.headers_mut().insert(http::header::AUTHORIZATION, v);
                    }
                }
                *lock(&me.last) = Some(got.map_err(|e| format!("{}: {}", e.code, e.message)));
                req
            }
        });
    }

    /// After a failed connect: drops a token the gateway refused (HTTP 401), and returns the token
    /// error when there was no token to send.
    pub fn after_error(&self, e: &ConnectionError) -> Option<String> {
        let last = lock(&self.last).clone();
        match last {
            Some(Err(why)) => Some(why),
            Some(Ok(t)) if unauthorized(e) => {
                self.tokens.invalidate(&t);
                None
            }
            _ => None,
        }
    }
}

fn unauthorized(e: &ConnectionError) -> bool {
    use async_tungstenite::tungstenite::Error as W;
    matches!(e, ConnectionError::Websocket(W::Http(r)) if r.status() == http::StatusCode::UNAUTHORIZED)
}
