//! Any bytes a member may send: the response-head parser and the chunked decoder must
//! return a value or an error, never panic, for every method.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for method in [http::Method::GET, http::Method::HEAD] {
        let _ = hastack_proxy::h1::parse_head_for_test(data, &method);
    }
    let _ = hastack_proxy::h1::decode_chunked_all(data);
});
