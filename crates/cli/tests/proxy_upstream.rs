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
    let cfg = format!(
        r#"
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:0"
[[proxy.listeners]]
listen = "127.0.0.1:0"
pool = "m"
[proxy.pools.m]
members = ["{member}"]
try_timeout = "2s"
{pool_extra}
"#
    );
    let p = ProxyProc::start(&cfg).await;
    let listen = p.listen();
    (p, listen)
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
        assert!(
            r.contains("x-hastack-error: invalid_response"),
            "{path}: {r}"
        );
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
    let text = p.metrics().await;
    let errors = |kind: &str| {
        metric(
            &text,
            &format!(
                "hastack_proxy_member_errors_total{{pool=\"m\",member=\"{}\",kind=\"{kind}\"}}",
                m.addr
            ),
        )
    };
    assert_eq!(errors("invalid_response"), 3.0, "three bad heads: {text}");
    assert_eq!(errors("upstream_reset"), 1.0, "one cut body: {text}");
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
    // A member that closes every connection right after answering (like a keep-alive
    // timeout of zero): GETs back to back, so the close races the next request; each one
    // that loses the race is redone on a fresh connection, invisibly.
    let m = racer(Moment::IdleClose).await;
    let (p, listen) = proxy_to(m.addr, "").await;
    for i in 0..200 {
        let (code, body) = http_get(listen, "/").await.unwrap();
        assert_eq!((code, body.as_str()), (200, "ok"), "request {i}");
    }
    // A POST written into a closing connection may have been processed, so it is never
    // redone: it is safe only when the close was seen before writing. Once the member's
    // close is in (awaited here), the pooled connection is skipped, every time.
    for i in 0..50 {
        let mut closed = m.closed.clone();
        let opened = m.connections.load(Ordering::Relaxed);
        closed.wait_for(|n| *n >= opened).await.unwrap();
        let (code, _) = http_request(listen, "POST", "/").await.unwrap();
        assert_eq!(code, 200, "POST {i}");
    }
    let metrics = p.metrics().await;
    let errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("hastack_proxy_member_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(errors, 0.0, "the member is never blamed: {metrics}");
}

/// When a member misbehaves on a reused connection (the second request on a connection;
/// the first is always answered with keep-alive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Moment {
    /// Close every connection right after answering (an idle keep-alive timeout of zero).
    IdleClose,
    /// Read a few bytes of the request, then close (the rest unread: a reset).
    PartialRequest,
    /// Read the whole request, then close without answering.
    WholeRequest,
    /// Read the request, send part of the status line, close.
    PartialHead,
    /// Read the request, send the head and part of the body, close.
    PartialBody,
}

/// A member that misbehaves at `moment` on every reused connection. Counts connections and
/// closes; `closed` ticks after each close so a test can wait for it.
struct Racer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    closed: tokio::sync::watch::Receiver<usize>,
}

async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if buf.len() >= i + 4 + len {
                buf.drain(..i + 4 + len);
                return true;
            }
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn racer(moment: Moment) -> Racer {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let (closes, closed) = tokio::sync::watch::channel(0usize);
    let closes = Arc::new(closes);
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            count.fetch_add(1, Ordering::Relaxed);
            let closes = closes.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                // The first request on a connection is answered, with keep-alive.
                if read_request(&mut s, &mut buf).await {
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(ok).await.is_ok() && moment != Moment::IdleClose {
                        // The second one meets the misbehaviour.
                        match moment {
                            Moment::IdleClose => {}
                            Moment::PartialRequest => {
                                let mut few = [0u8; 5];
                                let _ = s.read(&mut few).await;
                            }
                            Moment::WholeRequest => {
                                read_request(&mut s, &mut buf).await;
                            }
                            Moment::PartialHead => {
                                read_request(&mut s, &mut buf).await;
                                let _ = s.write_all(b"HTTP/1.1 200 O").await;
                            }
                            Moment::PartialBody => {
                                read_request(&mut s, &mut buf).await;
                                let _ = s
                                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
                                    .await;
                            }
                        }
                    }
                }
                drop(s);
                closes.send_modify(|n| *n += 1);
            });
        }
    });
    Racer {
        addr,
        connections,
        closed,
    }
}

/// Send `req` on a fresh client connection: (status, body, whole answer).
async fn exchange(listen: SocketAddr, req: &str) -> (u16, String, String) {
    let r = text(&raw_exchange(listen, req.as_bytes()).await);
    let status = r
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = r.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (status, body, r)
}

/// The proxy's idle connections to its only member, per `/status`.
async fn idle_connections(p: &ProxyProc) -> u64 {
    p.status().await["pools"]["m"]["members"][0]["idle_connections"]
        .as_u64()
        .unwrap()
}

/// The keep-alive race, made deterministic: for every moment a member can close a reused
/// connection and for idempotent and non-idempotent requests, what the client gets, whether
/// the request was redone for free, and whether the member was blamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_closing_at_every_moment_costs_only_what_it_must() {
    const GET: &str = "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    const PUT: &str =
        "PUT / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
    const POST: &str =
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
    // (moment, request, status, free redo, member blamed)
    let cases = [
        // Closed while idle and seen before the next request (the test waits for the
        // close): the connection is skipped, a fresh one serves, whatever the method.
        (Moment::IdleClose, GET, 200, false, false),
        (Moment::IdleClose, PUT, 200, false, false),
        (Moment::IdleClose, POST, 200, false, false),
        // Closed as the request arrived (part or all of it read, nothing answered): the
        // keep-alive race. Redone on a fresh connection if the request may be repeated;
        // a written POST may have been processed, so it is not, and gets 502. Nobody is
        // blamed either way.
        (Moment::PartialRequest, GET, 200, true, false),
        (Moment::PartialRequest, PUT, 200, true, false),
        (Moment::PartialRequest, POST, 502, false, false),
        (Moment::WholeRequest, GET, 200, true, false),
        (Moment::WholeRequest, PUT, 200, true, false),
        (Moment::WholeRequest, POST, 502, false, false),
        // The member started answering: it is to blame; no free redo (and no other member
        // to retry on).
        (Moment::PartialHead, GET, 502, false, true),
        (Moment::PartialHead, POST, 502, false, true),
        // The head was passed on: nothing can be retried; the client sees the cut (status 0
        // here: no complete answer).
        (Moment::PartialBody, GET, 0, false, true),
        (Moment::PartialBody, POST, 0, false, true),
    ];
    for (moment, req, status, redone, blamed) in cases {
        let method = req.split(' ').next().unwrap();
        let what = format!("{moment:?} {method}");
        let m = racer(moment).await;
        let (p, listen) = proxy_to(m.addr, "").await;
        // Warm up: one answered request leaves one pooled connection.
        let (code, body, _) = exchange(listen, GET).await;
        assert_eq!((code, body.as_str()), (200, "ok"), "{what}: warm-up");
        eventually(
            Duration::from_secs(5),
            "the connection to be pooled",
            || async { (idle_connections(&p).await == 1).then_some(()) },
        )
        .await;
        if moment == Moment::IdleClose {
            let mut closed = m.closed.clone();
            closed.wait_for(|n| *n >= 1).await.unwrap();
        }
        let (code, body, raw) = exchange(listen, req).await;
        match moment {
            // hyper may have sent the head (and the 3 bytes) before the cut, or nothing:
            // never a complete-looking answer.
            Moment::PartialBody => assert!(
                raw.is_empty() || (code == 200 && body.len() < 10),
                "{what}: the cut shows: {raw}"
            ),
            _ if code == 200 => assert_eq!(body, "ok", "{what}: {raw}"),
            _ => {
                assert_eq!(code, status, "{what}: {raw}");
                assert!(
                    raw.contains("x-hastack-error: upstream_reset"),
                    "{what}: {raw}"
                );
            }
        }
        assert!(
            moment == Moment::PartialBody || code == status,
            "{what}: {raw}"
        );
        let metrics = p.metrics().await;
        let redos = metric(&metrics, "hastack_proxy_redos_total{pool=\"m\"}");
        assert_eq!(redos, if redone { 1.0 } else { 0.0 }, "{what}: redos");
        let errors: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("hastack_proxy_member_errors_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(errors > 0.0, blamed, "{what}: member blamed? {metrics}");
        // A redo or a fresh connection means exactly one more connection than the warm-up's.
        let fresh = usize::from(code == 200 && moment != Moment::PartialBody);
        assert_eq!(
            m.connections.load(Ordering::Relaxed),
            1 + fresh,
            "{what}: upstream connections"
        );
        assert_eq!(
            p.member_state("m", &m.addr.to_string()).await,
            "up",
            "{what}"
        );
    }
}
