//! `hastack check` on [cache] configs: valid ones summarised, mistakes located.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache_support;
mod common;

use std::process::Command;

use cache_support::Scratch;

fn check(text: &str) -> (bool, String) {
    let scratch = Scratch::new("check");
    let path = scratch.path("cache.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hastack"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn valid_config_is_summarised() {
    let (ok, out) = check(
        r#"
[cache.proxy]
listen = "127.0.0.1:7000"
read_policy = "prefer_replica"
[[cache.proxy.shards]]
name = "a"
master = "127.0.0.1:6379"
replicas = ["127.0.0.1:6380"]
[[cache.proxy.shards]]
name = "b"
master = "127.0.0.1:6381"
"#,
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("a 127.0.0.1:6379 + 1 replica(s) slots 0-8191"),
        "{out}"
    );
    assert!(out.contains("read policy prefer_replica"), "{out}");
}

#[test]
fn every_mistake_is_located() {
    let (ok, out) = check(
        r#"
[cache.proxy]
listen = "127.0.0.1:7000"
pubsub_shard = "nope"
[cache.proxy.limits]
client_output_buffer_limit = "1MiB"
[[cache.proxy.shards]]
name = "a"
master = "127.0.0.1:6379"
slots = "0-100"
[[cache.proxy.shards]]
name = "a"
master = "redis.local:6379"
slots = "50-16383"
"#,
    );
    assert!(!ok, "{out}");
    for (line, want) in [
        (4, "pubsub_shard \"nope\" names no shard"),
        (
            6,
            "client_output_buffer_limit (1048576 bytes) must be at least max_reply_size",
        ),
        (12, "shard name \"a\" is used twice"),
        (13, "is not an IP address and port"),
    ] {
        assert!(
            out.contains(&format!("cache.toml:{line}:")) && out.contains(want),
            "want line {line}: {want}\n{out}"
        );
    }
    assert!(
        out.contains("slot 50 is given to shard \"a\" and to shard \"a\""),
        "{out}"
    );
}
