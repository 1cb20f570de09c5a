//! `hastack proxy` against scripted upstreams: every framing a member may use, broken
//! members, big bodies both ways, and connection reuse. The members here are raw TCP
//! servers inside the test, so each byte they send is under control.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A scripted member: for every request head it reads, `answer` says what bytes to send
/// back and whether to close afterwards. Counts accepted connections.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn scripted<F>(answer: F) -> Scripted
where
    F: Fn(&str) -> (Vec<u8>, bool) + Send + Sync + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(answer);
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            count.fetch_add(1, Ordering::Relaxed);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Read one request head (and a body announced by content-length).
                    let head_end = loop {
                        if let Some(i) = find(&buf, b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 65536];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 65536];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[head_end..head_end + len].to_vec();
                    buf.drain(..head_end + len);
                    let (mut out, close) = answer(&head);
                    if out.is_empty() {
                        // "echo": answer the body back.
                        out = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
                            .into_bytes();
                        out.extend_from_slice(&body);
                    }
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    Scripted { addr, connections }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

async fn proxy_to(member: SocketAddr, pool_extra: &str) -> (ProxyProc, SocketAddr) {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = format!(
        r#"
[proxy]
workers = 1
[proxy.admin]
listen = "{admin}"
[[proxy.listeners]]
listen = "{listen}"
pool = "m"
[proxy.pools.m]
members = ["{member}"]
try_timeout = "2s"
{pool_extra}
"#
    );
    (ProxyProc::start(&cfg, admin, &[listen]).await, listen)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_with_trailers_close_delimited_head_and_204() {
    let m = scripted(|head| {
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        match path.as_str() {
            "/chunked" => (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\nx-t: 1\r\n\r\n".to_vec(), false),
            "/close" => (b"HTTP/1.0 200 OK\r\n\r\nuntil the end".to_vec(), true),
            "/nocontent" => (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false),
            "/continue" => (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), false),
            _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody".to_vec(), false),
        }
    })
    .await;
    let (_p, listen) = proxy_to(m.addr, "").await;
    let r = text(
        &raw_exchange(
            listen,
            b"GET /chunked HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // Re-chunked to the client; the data is intact.
    assert!(r.contains("hello") && r.contains(", world"), "{r}");
    let r = text(
        &raw_exchange(
            listen,
            b"GET /close HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await,
    );
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("until the end"),
        "{r}"
    );
    let r = text(
        &raw_exchange(
            listen,
            b"HEAD /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await,
    );
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("content-length: 4") && !r.contains("body"),
        "{r}"
    );
    let r = text(
        &raw_exchange(
            listen,
            b"GET /nocontent HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await,
    );
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    let r = text(
        &raw_exchange(
            listen,
            b"GET /continue HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await,
    );
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("ok"),
        "interim 1xx must be skipped: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_reach_http2_clients() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    let m = scripted(|_| (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-checksum: 42\r\n\r\n".to_vec(), false)).await;
    let (_p, listen) = proxy_to(m.addr, "").await;
    let s = TcpStream::connect(listen).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = tx
        .send_request(
            hyper::Request::builder()
                .uri("http://x/")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    assert_eq!(collected.to_bytes(), "abc");
    assert_eq!(trailers.unwrap()["x-checksum"], "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_members_get_502_and_never_wedge_the_proxy() {
    let m = scripted(|head| {
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        match path.as_str() {
            "/garbage" => (b"SPDY/9 what\r\n\r\n".to_vec(), true),
            "/huge" => {
                let mut v = b"HTTP/1.1 200 OK\r\n".to_vec();
                for i in 0..5000 {
                    v.extend_from_slice(format!("x-h{i}: {}\r\n", "v".repeat(20)).as_bytes());
                }
                v.extend_from_slice(b"\r\n");
                (v, true)
            }
            "/badlen" => (
                b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n".to_vec(),
                true,
            ),
            "/short" => (
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this".to_vec(),
                true,
            ),
            "/closed" => (Vec::from(&b""[..]), true),
            _ => (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                false,
            ),
        }
    })
    .await;
    // No retries: each broken answer must surface as one clear error.
    let (p, listen) = proxy_to(
        m.addr,
        "[proxy.pools.m.retry]\nattempts = 1\n[proxy.pools.m.outlier]\nconsecutive_errors = 0\n",
    )
    .await;
    for path in ["/garbage", "/huge", "/badlen"] {
        let r = text(
            &raw_exchange(
                listen,
                format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await,
        );
        assert!(r.starts_with("HTTP/1.1 502"), "{path}: {r}");
        assert!(r.contains("x-hastack-error: upstream_reset"), "{path}: {r}");
    }
    // Truncated body: the status was already decided, so the client must see the
    // connection cut (never a complete-looking response).
    let r = raw_exchange(
        listen,
        b"GET /short HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    let r = text(&r);
    let complete = r
        .split_once("\r\n\r\n")
        .is_some_and(|(_, b)| b.len() >= 100);
    assert!(
        !complete && (r.is_empty() || r.starts_with("HTTP/1.1 200")),
        "{r}"
    );
    // The proxy still works.
    let r = text(
        &raw_exchange(
            listen,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await,
    );
    assert!(r.ends_with("ok"), "{r}");
    let m = p.metrics().await;
    let resets: f64 = m
        .lines()
        .filter(|l| {
            l.starts_with("hastack_proxy_member_errors_total{") && l.contains("kind=\"reset\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        resets >= 4.0,
        "three bad heads and one cut body are counted: {resets}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_stream_both_ways_and_connections_are_reused() {
    let m = scripted(|_| (Vec::new(), false)).await; // echo
    let (_p, listen) = proxy_to(m.addr, "").await;
    // 3 MiB POST (streamed, not buffered) echoed back.
    let body: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = raw_exchange(listen, &req).await;
    let split = find(&r, b"\r\n\r\n").unwrap() + 4;
    assert!(text(&r[..split]).starts_with("HTTP/1.1 200"));
    assert_eq!(r.len() - split, body.len());
    assert!(r[split..] == body[..], "echoed body differs");
    // Chunked upload from the client (no length): forwarded chunked, echoed with a length.
    let r = text(&raw_exchange(listen, b"PUT /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").await);
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("abcde"), "{r}");

    // Sequential keep-alive requests reuse one upstream connection, with and without a
    // response body.
    let before = m.connections.load(Ordering::Relaxed);
    for i in 0..50 {
        let (code, body) = if i % 2 == 0 {
            http_get(listen, "/x").await.unwrap()
        } else {
            let r = text(&raw_exchange(listen, b"PUT /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello").await);
            (200, r.split_once("\r\n\r\n").unwrap().1.to_string())
        };
        assert_eq!(code, 200);
        assert_eq!(body, if i % 2 == 0 { "" } else { "hello" });
    }
    let used = m.connections.load(Ordering::Relaxed) - before;
    assert!(
        used <= 1,
        "50 sequential requests opened {used} upstream connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_closing_idle_connections_costs_no_request() {
    // A member that closes every connection right after answering (like a short
    // keep-alive timeout): the pooled connection is found dead and replaced, invisibly.
    let m = scripted(|_| {
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            true,
        )
    })
    .await;
    let (_p, listen) = proxy_to(m.addr, "").await;
    for i in 0..100 {
        let (code, body) = http_get(listen, "/").await.unwrap();
        assert_eq!((code, body.as_str()), (200, "ok"), "request {i}");
        if i % 10 == 0 {
            // Give the close time to arrive so the idle connection is seen dead.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // POST too (never retried after being sent): must still never fail.
    for i in 0..50 {
        let (code, _) = http_request(listen, "POST", "/").await.unwrap();
        assert_eq!(code, 200, "POST {i}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
