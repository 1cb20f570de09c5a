//! Slot hashing bit-exact with Redis Cluster: the answers of a real `redis-server` in
//! cluster mode (`CLUSTER KEYSLOT`) for thousands of random keys, brace edge cases
//! included, against `hastack_cache::slot::key_slot`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache_support;
mod common;

use cache_support::*;
use hastack_cache::resp::Value;
use hastack_cache::slot::key_slot;
use tokio::io::AsyncWriteExt;

/// Keys that exercise every hash-tag rule, then random ones over a brace-heavy alphabet.
fn keys() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [
        "",
        "{",
        "}",
        "{}",
        "}{",
        "{{}}",
        "{a}",
        "a{b}c",
        "a{}b",
        "{}a{b}",
        "{a}{b}",
        "a{{b}}",
        "{{a}",
        "a}b{c}",
        "{user1000}.following",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "foo{bar}{zap}",
        "{\u{e9}}",
        "\u{1F600}{x}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let mut rng = fastrand::Rng::with_seed(0x5107);
    let alphabet = b"ab{}{}:._-xyz019\x00\xff ";
    for _ in 0..5000 {
        let len = rng.usize(0..24);
        out.push(
            (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect(),
        );
    }
    for _ in 0..1000 {
        let len = rng.usize(1..64);
        out.push((0..len).map(|_| rng.u8(..)).collect());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_slots_match_a_real_redis_cluster_node() {
    let scratch = Scratch::new("slots");
    let r = Redis::start(
        &scratch.path("cluster"),
        &["--cluster-enabled yes", "--cluster-config-file nodes.conf"],
    )
    .await;
    let mut c = r.client().await;
    let keys = keys();
    // Pipelined: one write for all the questions.
    let mut out = bytes::BytesMut::new();
    for k in &keys {
        hastack_cache::resp::write::command(&mut out, [&b"CLUSTER"[..], b"KEYSLOT", k].into_iter());
    }
    c.stream.write_all(&out).await.unwrap();
    let mut mismatches = Vec::new();
    for k in &keys {
        let Value::Integer(want) = c.read().await.unwrap() else {
            panic!("CLUSTER KEYSLOT did not answer an integer")
        };
        if i64::from(key_slot(k)) != want {
            mismatches.push((String::from_utf8_lossy(k).into_owned(), want, key_slot(k)));
        }
    }
    assert!(
        mismatches.is_empty(),
        "(key, redis, hastack): {mismatches:?}"
    );
    assert!(keys.len() > 6000);
}
