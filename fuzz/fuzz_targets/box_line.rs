//! The box line parser: any text parses to one `Line` without panicking, and a message or claim
//! written back in the box format parses to the same line again.
#![no_main]

#[path = "../../tests/common/napi_stubs.rs"]
mod napi_stubs;

use cds_native_messaging::transport::file::line::{self, Line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for raw in text.split('\n') {
        match line::parse(raw) {
            Line::Message { topic, json } => {
                let mut out = String::new();
                line::write_message(&mut out, topic, json);
                assert_eq!(line::parse(&out[1..]), Line::Message { topic, json });
            }
            Line::Claimed { claim, topic, json } => {
                let mut out = String::new();
                line::write_claimed(&mut out, &claim, topic, json);
                assert_eq!(
                    line::parse(&out[1..]),
                    Line::Claimed {
                        claim: claim.clone(),
                        topic,
                        json
                    }
                );
            }
            Line::Blank | Line::Malformed(_) => {}
        }
    }
});
