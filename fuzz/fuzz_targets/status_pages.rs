//! Fuzz the chaos harness's status-page parsers: the bytes a polled component returns
//! (HAProxy's stats CSV, a JSON `/status` document) as they arrive over HTTP.
//! Run: `cargo +nightly fuzz run status_pages` from the repository root.
#![no_main]

use hastack_chaos::events::{diff_states, parse_haproxy_csv, parse_json_members};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The harness decodes bodies lossily, exactly like this.
    let text = String::from_utf8_lossy(data);
    let csv = parse_haproxy_csv(&text);
    if let Ok(states) = &csv {
        // Every server is named `backend/server`; aggregates are never members.
        for name in states.keys() {
            assert!(name.contains('/'), "{name:?}");
            assert!(!name.ends_with("/FRONTEND") && !name.ends_with("/BACKEND"));
        }
    }
    // The same bytes after a valid header line, so the row parser gets exercised too.
    let _ = parse_haproxy_csv(&format!("# pxname,svname,status\n{text}"));
    // JSON: the first line is the member pointer, the rest the document (so pointers are
    // fuzzed as well as documents); and the document with the demo's fixed pointers.
    let (ptr, doc) = text.split_once('\n').unwrap_or(("/members", &text));
    let down = ["down".to_string(), "master".to_string()];
    let a = parse_json_members(doc, ptr, "name", "state", &down);
    let b = parse_json_members(&text, "/pools/app/members", "addr", "state", &down);
    let c = parse_json_members(&text, "/vip/instances", "name", "state", &down);
    // Diffing any two polls never panics and only reports members of the second.
    for (x, y) in [(&a, &b), (&b, &c), (&csv, &a)] {
        if let (Ok(x), Ok(y)) = (x, y) {
            for (_, name) in diff_states(x, y) {
                assert!(y.contains_key(&name));
            }
        }
    }
});
