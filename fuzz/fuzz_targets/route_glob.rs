//! The route glob compiler: any pattern compiles to a valid anchored regex (or a config error),
//! and a router built from it routes any topic without panicking.
#![no_main]

#[path = "../../tests/common/napi_stubs.rs"]
mod napi_stubs;

use cds_native_messaging::routing::{glob_to_regex, Route, Router, Unmatched};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (glob, topic) = text.split_once('\n').unwrap_or((text, "a.b/c"));
    let Ok(re) = glob_to_regex(glob) else {
        assert!(glob.is_empty());
        return;
    };
    assert!(re.starts_with('^') && re.ends_with('$'));
    // A glob without wildcards matches itself literally.
    let router = Router::new(
        vec![Route {
            target: "svc".into(),
            patterns: vec![glob.to_string()],
        }],
        Unmatched::Drop,
    );
    let Ok(router) = router else {
        return; // e.g. a pattern too big for the regex engine: INVALID_CONFIG
    };
    let _ = router.route(topic);
    if !glob.contains(['*', '?']) {
        assert_eq!(router.route(glob).ok(), Some(vec!["svc"]));
    }
});
