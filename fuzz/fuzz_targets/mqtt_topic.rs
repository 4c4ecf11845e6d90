//! The MQTT topic matcher against a reference implementation of MQTT 3.1.1 §4.7, on arbitrary
//! topic/filter pairs.
#![no_main]

#[path = "../../tests/common/napi_stubs.rs"]
mod napi_stubs;

use cds_native_messaging::transport::mqtt::topic;
use libfuzzer_sys::fuzz_target;

/// MQTT 3.1.1 §4.7 matching, written plainly for the comparison.
fn reference(t: &str, f: &str) -> bool {
    if t.starts_with('$') != f.starts_with('$') && !f.starts_with('$') {
        return false;
    }
    let tl: Vec<&str> = t.split('/').collect();
    let fl: Vec<&str> = f.split('/').collect();
    for (i, level) in fl.iter().enumerate() {
        match *level {
            "#" => return i == fl.len() - 1,
            "+" if i < tl.len() => {}
            l if i < tl.len() && tl[i] == l => {}
            _ => return false,
        }
    }
    tl.len() == fl.len()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((t, f)) = text.split_once('\n') else {
        return;
    };
    let _ = topic::publish_problem(t);
    let valid = topic::valid_filter(f);
    let m = topic::matches(t, f);
    if topic::publish_problem(t).is_none() && valid {
        assert_eq!(m, reference(t, f), "topic {t:?} filter {f:?}");
    }
});
