//! Composite routing: which child services a topic goes to.
//!
//! Patterns use CAP's glob meaning — `**` any characters, `*` any characters except `/` and `.`,
//! `?` one character except `/` and `.` — but, unlike @sap/cds (which builds unanchored regexes
//! without escaping, so `*.created` matches `orderXcreated` and `other` matches `xxotherxx`), a
//! pattern must match the whole topic and every other character is literal.
//!
//! All patterns of all routes are compiled once into one [`regex::RegexSet`], so routing a topic is a
//! single pass over it however many routes there are. (`globset` was considered: its `*` can be kept
//! from crossing `/` but not from crossing `.`, which CAP's meaning requires.)

use regex::RegexSet;

use crate::error::{Error, ErrorCode, Result};

/// What happens to a topic no route matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmatched {
    /// Fail the emit with `NO_ROUTE` (the default, as in CAP Java).
    Error,
    /// Drop the message (logged by the caller).
    Drop,
    /// Send it to this service.
    Service(String),
}

impl Unmatched {
    /// Parses the `unmatched` option: `'error'`, `'drop'` or a service name.
    pub fn parse(value: Option<&str>) -> Result<Self> {
        Ok(match value.map(str::trim) {
            None | Some("error") => Unmatched::Error,
            Some("drop") => Unmatched::Drop,
            Some("") => {
                return Err(Error::config(
                    "unmatched must be 'error', 'drop' or a service name",
                ))
            }
            Some(s) => Unmatched::Service(s.to_string()),
        })
    }
}

/// One route: a target service and its patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The `cds.requires` name of the child service.
    pub target: String,
    /// Glob patterns.
    pub patterns: Vec<String>,
}

/// The compiled routing table.
#[derive(Debug)]
pub struct Router {
    set: RegexSet,
    owner: Vec<usize>,
    routes: Vec<Route>,
    unmatched: Unmatched,
}

/// Translates a CAP glob into an anchored regular expression.
pub fn glob_to_regex(glob: &str) -> Result<String> {
    if glob.is_empty() {
        return Err(Error::config("a route pattern must not be empty"));
    }
    let mut re = String::with_capacity(glob.len() * 2 + 2);
    re.push('^');
    let mut chars = glob.chars().peekable();
    let mut literal = String::new();
    let flush = |literal: &mut String, re: &mut String| {
        if !literal.is_empty() {
            re.push_str(&regex::escape(literal));
            literal.clear();
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                flush(&mut literal, &mut re);
                re.push_str(".*");
            }
            '*' => {
                flush(&mut literal, &mut re);
                re.push_str("[^/.]*");
            }
            '?' => {
                flush(&mut literal, &mut re);
                re.push_str("[^/.]");
            }
            c => literal.push(c),
        }
    }
    flush(&mut literal, &mut re);
    re.push('$');
    Ok(re)
}

impl Router {
    /// Compiles the routes; errors carry `INVALID_CONFIG`.
    pub fn new(routes: Vec<Route>, unmatched: Unmatched) -> Result<Self> {
        let mut patterns = Vec::new();
        let mut owner = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            if r.target.trim().is_empty() {
                return Err(Error::config("a route needs a service name"));
            }
            if r.patterns.is_empty() {
                return Err(Error::config(format!(
                    "route '{}' has no patterns; give at least one, e.g. [\"**\"]",
                    r.target
                )));
            }
            for p in &r.patterns {
                patterns.push(
                    glob_to_regex(p).map_err(|e| {
                        Error::config(format!("route '{}': {}", r.target, e.message))
                    })?,
                );
                owner.push(i);
            }
        }
        let set = RegexSet::new(&patterns).map_err(|e| {
            Error::with_cause(ErrorCode::InvalidConfig, "cannot compile the routes", e)
        })?;
        Ok(Router {
            set,
            owner,
            routes,
            unmatched,
        })
    }

    /// The services `topic` goes to, each once, in route order. An empty list means: drop.
    pub fn route(&self, topic: &str) -> Result<Vec<&str>> {
        let mut hit = vec![false; self.routes.len()];
        for m in self.set.matches(topic).iter() {
            hit[self.owner[m]] = true;
        }
        let targets: Vec<&str> = self
            .routes
            .iter()
            .zip(hit)
            .filter(|(_, h)| *h)
            .map(|(r, _)| r.target.as_str())
            .collect();
        if !targets.is_empty() {
            return Ok(targets);
        }
        match &self.unmatched {
            Unmatched::Error => Err(Error::new(
                ErrorCode::NoRoute,
                format!(
                    "no route matches topic '{topic}'; add a pattern for it to the composite's routes, or set unmatched: 'drop' or a service name"
                ),
            )),
            Unmatched::Drop => Ok(Vec::new()),
            Unmatched::Service(s) => Ok(vec![s.as_str()]),
        }
    }

    /// The routing table as configured.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The policy for unmatched topics.
    pub fn unmatched(&self) -> &Unmatched {
        &self.unmatched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(unmatched: Unmatched) -> Router {
        let r = |t: &str, p: &[&str]| Route {
            target: t.into(),
            patterns: p.iter().map(|s| s.to_string()).collect(),
        };
        Router::new(
            vec![
                r("orders", &["*.created", "orders/**"]),
                r("audit", &["**"]),
                r("single", &["a?c", "other"]),
                r("ns", &["sap/s4/beh/*/v1/*/Created/v1"]),
                r("special", &["price+tax(1)", "[x]"]),
            ],
            unmatched,
        )
        .unwrap()
    }

    #[test]
    fn table() {
        let audit_only = Router::new(
            vec![Route {
                target: "orders".into(),
                patterns: vec!["*.created".into(), "orders/**".into()],
            }],
            Unmatched::Error,
        )
        .unwrap();
        // (topic, expected recipients of `audit_only`)
        let cases: &[(&str, &[&str])] = &[
            ("order.created", &["orders"]),
            ("orderXcreated", &[]),    // @sap/cds: matches (unescaped `.`)
            ("a.order.created", &[]),  // `*` does not cross `.`
            ("a/order.created", &[]),  // `*` does not cross `/`
            (".created", &["orders"]), // `*` may be empty
            ("order.created.v2", &[]), // anchored at the end
            ("xorder.created", &["orders"]),
            ("orders/a", &["orders"]),
            ("orders/a/b.c", &["orders"]),
            ("orders/", &["orders"]),
            ("orders", &[]),
            ("myorders/a", &[]), // anchored at the start
        ];
        for (topic, want) in cases {
            let got = audit_only.route(topic);
            if want.is_empty() {
                assert_eq!(got.unwrap_err().code, ErrorCode::NoRoute, "{topic}");
            } else {
                assert_eq!(&got.unwrap(), want, "{topic}");
            }
        }
        let full = router(Unmatched::Error);
        let cases: &[(&str, &[&str])] = &[
            ("order.created", &["orders", "audit"]),
            ("abc", &["audit", "single"]),
            ("a.c", &["audit"]), // `?` does not match `.`
            ("a/c", &["audit"]), // nor `/`
            ("abbc", &["audit"]),
            ("other", &["audit", "single"]),
            ("xxotherxx", &["audit"]), // @sap/cds: `other` matches anywhere
            (
                "sap/s4/beh/salesorder/v1/SalesOrder/Created/v1",
                &["ns", "audit"],
            ),
            (
                "sap/s4/beh/sales.order/v1/SalesOrder/Created/v1",
                &["audit"],
            ),
            ("price+tax(1)", &["audit", "special"]), // regex metacharacters are literal
            ("priceetax(1)", &["audit"]),
            ("[x]", &["audit", "special"]),
            ("x", &["audit"]),
            ("", &["audit"]),
        ];
        for (topic, want) in cases {
            let mut got = full.route(topic).unwrap();
            let mut want = want.to_vec();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{topic}");
        }
    }

    #[test]
    fn each_target_once_in_route_order() {
        let r = Router::new(
            vec![
                Route {
                    target: "b".into(),
                    patterns: vec!["x.*".into(), "**".into()],
                },
                Route {
                    target: "a".into(),
                    patterns: vec!["x.y".into()],
                },
            ],
            Unmatched::Error,
        )
        .unwrap();
        assert_eq!(r.route("x.y").unwrap(), vec!["b", "a"]);
    }

    #[test]
    fn unmatched_policies() {
        let only = |u| {
            Router::new(
                vec![Route {
                    target: "s".into(),
                    patterns: vec!["a".into()],
                }],
                u,
            )
            .unwrap()
        };
        let e = only(Unmatched::Error).route("b").unwrap_err();
        assert_eq!(e.code, ErrorCode::NoRoute);
        assert!(e.message.contains("'b'"));
        assert!(only(Unmatched::Drop).route("b").unwrap().is_empty());
        assert_eq!(
            only(Unmatched::Service("dlq".into())).route("b").unwrap(),
            vec!["dlq"]
        );
        assert_eq!(Unmatched::parse(None).unwrap(), Unmatched::Error);
        assert_eq!(Unmatched::parse(Some("drop")).unwrap(), Unmatched::Drop);
        assert_eq!(
            Unmatched::parse(Some("x")).unwrap(),
            Unmatched::Service("x".into())
        );
    }

    #[test]
    fn bad_routes_are_config_errors() {
        for routes in [
            vec![Route {
                target: "s".into(),
                patterns: vec![],
            }],
            vec![Route {
                target: "s".into(),
                patterns: vec!["".into()],
            }],
            vec![Route {
                target: " ".into(),
                patterns: vec!["a".into()],
            }],
        ] {
            assert_eq!(
                Router::new(routes, Unmatched::Error).unwrap_err().code,
                ErrorCode::InvalidConfig
            );
        }
    }
}
