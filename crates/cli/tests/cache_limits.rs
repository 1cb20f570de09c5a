//! Bad input against `hastack cache proxy`: malformed and oversized RESP from clients and
//! from servers, unknown commands, huge pipelines, and a client that never reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache_support;
mod common;

use std::time::Duration;

use cache_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const LIMITS: &str = "[cache.proxy.limits]
proto_max_bulk_len = \"1MiB\"
client_query_buffer_limit = \"2MiB\"
max_reply_size = \"2MiB\"
client_output_buffer_limit = \"4MiB\"
max_pipeline = 256";

async fn one_shard(scratch: &Scratch, extra: &str) -> (Redis, Proxy) {
    let r = Redis::start(&scratch.path("r"), &[]).await;
    let p = Proxy::start(&config(&[("s", r.addr(), vec![])], extra)).await;
    (r, p)
}

/// Write raw bytes, read until the proxy closes (or 5 s pass): everything it answered.
async fn raw(p: &Proxy, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    // The proxy may close before reading everything: a failed write is fine, the answer
    // it sent first is what is checked.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_a_clear_error_and_a_close() {
    let scratch = Scratch::new("badreq");
    let (_r, mut p) = one_shard(&scratch, LIMITS).await;
    let cases: [(&[u8], &str); 6] = [
        (
            b"*1\r\n:1\r\n",
            "-ERR Protocol error: expected '$', got ':'",
        ),
        (b"*x\r\n", "-ERR Protocol error: invalid multibulk length"),
        (
            b"*2\r\n$3\r\nGET\r\n$-5\r\n",
            "-ERR Protocol error: invalid bulk length",
        ),
        (
            b"*2\r\n$3\r\nSET\r\n$2000000\r\n",
            "-ERR Protocol error: bulk string of 2000000 bytes exceeds the limit of 1048576 bytes",
        ),
        (
            b"*2000000\r\n",
            "-ERR Protocol error: 2000000 elements exceed the limit",
        ),
        (
            b"GET \"unterminated\r\n",
            "-ERR Protocol error: unbalanced quotes",
        ),
    ];
    for (input, want) in cases {
        let got = raw(&p, input).await;
        assert!(
            got.starts_with(want),
            "{:?}: got {got:?}",
            String::from_utf8_lossy(input)
        );
    }
    // A value of exactly proto_max_bulk_len is accepted.
    let mut big = b"*3\r\n$4\r\nMSET\r\n$1\r\nk\r\n$1048576\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 1_048_576));
    big.extend_from_slice(b"\r\n*1\r\n$4\r\nQUIT\r\n");
    assert_eq!(raw(&p, &big).await, "+OK\r\n+OK\r\n");
    // Two 1,000,000-byte arguments, then the header of a third that would cross 2 MiB:
    // refused at that header, before its bytes are buffered.
    let mut huge = b"*4\r\n$4\r\nMSET\r\n".to_vec();
    for _ in 0..2 {
        huge.extend_from_slice(b"$1000000\r\n");
        huge.extend(std::iter::repeat_n(b'x', 1_000_000));
        huge.extend_from_slice(b"\r\n");
    }
    huge.extend_from_slice(b"$1000000\r\n");
    assert!(raw(&p, &huge).await.contains("frame larger than the limit"));
    assert!(
        p.metric("hastack_cache_client_disconnects_total{reason=\"protocol_error\"}")
            .await
            .unwrap()
            >= 7.0
    );
    // Unknown commands do not close the connection.
    let mut c = p.client().await;
    assert!(text(&c.cmd(&["FOO", "bar"]).await.unwrap()).starts_with("ERR unknown command 'FOO'"));
    assert_eq!(text(&c.cmd(&["PING"]).await.unwrap()), "PONG");
    assert!(p.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_at_its_output_limit() {
    let scratch = Scratch::new("slowreader");
    let (_r, mut p) = one_shard(&scratch, LIMITS).await;
    let mut c = p.client().await;
    let value = "v".repeat(512 * 1024);
    assert_eq!(text(&c.cmd(&["SET", "big", &value]).await.unwrap()), "OK");
    let rss_before = p.rss_kib();
    // 200 GETs of 512 KiB = 100 MiB of answers, never read: the limit is 4 MiB. The
    // proxy's memory must not follow the answers (it holds at most the limit, plus
    // allocator slack: the 512 KiB answers are slices of larger receive buffers).
    let mut reader = p.client().await;
    let mut pipe = Vec::new();
    for _ in 0..200 {
        pipe.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n");
    }
    reader.stream.write_all(&pipe).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "output_limit disconnect counted",
        || async {
            (p.metric("hastack_cache_client_disconnects_total{reason=\"output_limit\"}")
                .await
                == Some(1.0))
            .then_some(())
        },
    )
    .await;
    assert!(reader.closed_within(Duration::from_secs(5)).await);
    let rss_after = p.rss_kib();
    eprintln!("RSS {rss_before} KiB -> {rss_after} KiB");
    assert!(
        rss_after < rss_before + 40 * 1024,
        "the proxy buffered the answers: RSS {rss_before} KiB -> {rss_after} KiB"
    );
    // Other clients are unaffected.
    assert_eq!(text(&c.cmd(&["STRLEN", "big"]).await.unwrap()), ":524288");
    assert!(p.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_pipeline_is_back_pressured_not_buffered() {
    let scratch = Scratch::new("pipeline");
    let (_r, mut p) = one_shard(&scratch, LIMITS).await;
    let rss_before = p.rss_kib();
    // 100,000 SETs (about 4 MiB) written by one task while another reads the answers
    // slowly: the proxy holds at most max_pipeline requests, the rest waits in TCP buffers.
    let stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let n = 100_000usize;
    let writer = tokio::spawn(async move {
        let mut chunk = Vec::new();
        for i in 0..n {
            chunk.extend_from_slice(
                format!("*3\r\n$3\r\nSET\r\n$7\r\nk{i:06}\r\n$1\r\nv\r\n").as_bytes(),
            );
            if chunk.len() > 64 * 1024 {
                wr.write_all(&chunk).await.unwrap();
                chunk.clear();
            }
        }
        wr.write_all(&chunk).await.unwrap();
        wr
    });
    let mut got = 0usize;
    let mut buf = vec![0u8; 4096];
    let mut peak_rss = 0;
    let mut reads = 0u64;
    while got < n * 5 {
        let k = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut buf))
            .await
            .expect("answers stalled")
            .unwrap();
        assert!(
            k > 0,
            "proxy closed the connection after {} answers",
            got / 5
        );
        got += k;
        reads += 1;
        if reads % 64 == 0 {
            peak_rss = peak_rss.max(p.rss_kib());
            // Read slowly: the writer runs far ahead.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(got, n * 5, "every SET answered +OK exactly once");
    let _ = writer.await.unwrap();
    assert!(
        peak_rss < rss_before + 32 * 1024,
        "memory grew with the pipeline: {rss_before} KiB -> {peak_rss} KiB"
    );
    assert!(p.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_server_answers_are_failures_not_panics() {
    let scratch = Scratch::new("badserver");
    let good = Redis::start(&scratch.path("good"), &[]).await;
    // A fake "Redis" that answers every read with a malformed frame.
    let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = fake.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(b"$-7\r\n?garbage\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let cfg = config(
        &[("a", good.addr(), vec![]), ("b", fake_addr, vec![])],
        "[cache.proxy.health]\ninterval = \"10s\"",
    );
    let mut p = Proxy::start(&cfg).await;
    let mut c = p.client().await;
    let kb = hastack_cache::slotmap::SlotMap::even(2);
    let key_b = (0..)
        .map(|i| format!("x{i}"))
        .find(|k| kb.shard_of(k.as_bytes()) == 1)
        .unwrap();
    let key_a = (0..)
        .map(|i| format!("x{i}"))
        .find(|k| kb.shard_of(k.as_bytes()) == 0)
        .unwrap();
    // A read gets a miss, a write a clear error; the good shard is unaffected.
    assert_eq!(text(&c.cmd(&["GET", &key_b]).await.unwrap()), "nil");
    assert_eq!(
        text(&c.cmd(&["SET", &key_b, "1"]).await.unwrap()),
        "ERR shard b unavailable"
    );
    assert_eq!(text(&c.cmd(&["SET", &key_a, "1"]).await.unwrap()), "OK");
    assert_eq!(
        texts(&c.cmd(&["MGET", &key_a, &key_b]).await.unwrap()),
        vec!["1", "nil"]
    );
    assert!(
        p.metric("hastack_cache_backend_errors_total{shard=\"b\"}")
            .await
            .unwrap()
            >= 3.0
    );
    assert!(p.alive());
    let logs = p.logs.lock().join("\n");
    assert!(
        logs.contains("BadReply"),
        "the failure is logged with its cause:\n{logs}"
    );
}
