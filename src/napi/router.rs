//! [`NativeRouter`]: the compiled routing table of `native-composite-messaging`.

use napi_derive::napi;

use super::error::{Code, IntoJs};
use crate::routing::{Route, Router, Unmatched};

/// One route of a composite messaging service.
#[napi(object)]
pub struct RouteSpec {
    /// The `cds.requires` name of the child service.
    pub service: String,
    /// Glob patterns (`**`, `*`, `?` with CAP's meaning; anchored; other characters literal).
    pub patterns: Vec<String>,
}

/// The compiled routing table of `native-composite-messaging`.
#[napi]
pub struct NativeRouter {
    inner: Router,
}

#[napi]
impl NativeRouter {
    /// Compiles the routes once. `unmatched` is `'error'` (default), `'drop'` or a service name.
    /// Throws `INVALID_CONFIG` with `err.code`.
    #[napi(constructor, catch_unwind)]
    pub fn new(routes: Vec<RouteSpec>, unmatched: Option<String>) -> napi::Result<Self, Code> {
        let routes = routes
            .into_iter()
            .map(|r| Route {
                target: r.service,
                patterns: r.patterns,
            })
            .collect();
        Unmatched::parse(unmatched.as_deref())
            .and_then(|u| Router::new(routes, u))
            .map(|inner| NativeRouter { inner })
            .into_js()
    }

    /// The services a topic goes to, each once, in route order (empty: drop). Throws `NO_ROUTE`.
    #[napi(catch_unwind)]
    pub fn route(&self, topic: String) -> napi::Result<Vec<String>, Code> {
        self.inner
            .route(&topic)
            .map(|v| v.into_iter().map(str::to_string).collect())
            .into_js()
    }

    /// The routing table as configured.
    #[napi]
    pub fn routes(&self) -> Vec<RouteSpec> {
        self.inner
            .routes()
            .iter()
            .map(|r| RouteSpec {
                service: r.target.clone(),
                patterns: r.patterns.clone(),
            })
            .collect()
    }
}
