//! Any bytes as a config file: loading must return a spec or located errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(src) = hastack_config::Source::parse("fuzz.toml", text.to_string()) {
            let _ = hastack_proxy::config::load(&src);
        }
    }
});
