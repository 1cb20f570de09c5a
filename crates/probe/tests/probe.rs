//! Probes against real sockets on loopback: a refusing port, a full accept queue, a black
//! hole, the real `hastack-app` server (healthy, told to be unhealthy, 503, body mismatch),
//! and hand-rolled servers that misbehave at the byte level.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hastack_core::health::{Event, HealthMachine, HealthPolicy, ProbePhase, State};
use hastack_probe::{Check, HttpCheck, Outcome, Schedule, Target, probe, spawn};
use http::Method;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_millis(300);

/// Aborts a background server task when the test ends, however it ends.
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

async fn app() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move {
        hastack_app::serve(listener, "app-1", s).await.unwrap();
    });
    Server { addr, task, stop }
}

/// A port with nothing listening (bound, then closed).
async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Accepts connections and never says a word.
async fn black_hole() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    Server {
        addr,
        task,
        stop: CancellationToken::new(),
    }
}

/// What a hand-rolled server does with each connection after reading the request head.
#[derive(Clone, Copy)]
enum Reply {
    Bytes(&'static [u8]),
    Reset,
    Close,
}

/// A byte-level server: reads one request head per connection, hands it to the test, then
/// answers per `reply`.
async fn raw(reply: Reply) -> (Server, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            match reply {
                Reply::Bytes(b) => {
                    let _ = s.write_all(b).await;
                    let _ = s.shutdown().await;
                }
                Reply::Reset => {
                    // Linger 0: close sends a RST at once (and never blocks).
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    drop(s);
                }
                Reply::Close => drop(s),
            }
        }
    });
    (
        Server {
            addr,
            task,
            stop: CancellationToken::new(),
        },
        rx,
    )
}

fn http(path: &str) -> Check {
    Check::Http(HttpCheck {
        path: path.to_string(),
        ..HttpCheck::default()
    })
}

fn http_with(f: impl FnOnce(&mut HttpCheck)) -> Check {
    let mut h = HttpCheck::default();
    f(&mut h);
    Check::Http(h)
}

fn assert_fails(o: &Outcome, detail: &str) {
    assert!(!o.ok, "expected failure {detail:?}, got {o:?}");
    assert!(
        o.detail.contains(detail),
        "expected {detail:?} in {:?}",
        o.detail
    );
}

#[tokio::test]
async fn tcp_connects_to_a_listener() {
    let s = black_hole().await;
    let o = probe(s.addr, &Check::Tcp, TIMEOUT).await;
    assert!(o.ok, "{o:?}");
    assert_eq!(o.detail, "connected");
    assert!(o.latency < TIMEOUT);
}

#[tokio::test]
async fn refused_is_reported_as_such() {
    let addr = refused_addr().await;
    for check in [Check::Tcp, http("/")] {
        let o = probe(addr, &check, TIMEOUT).await;
        assert_fails(&o, "connection refused");
        assert_eq!(o.detail, "connection refused");
    }
}

#[tokio::test]
async fn a_full_accept_queue_times_out_while_connecting() {
    // A listener with backlog 0 that never accepts: once its queue holds one connection, the
    // kernel drops further SYNs and connects hang (the client retransmits after 1 s).
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    let mut hung = None;
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("filler connect failed: {e}"),
            Err(_) => {
                hung = Some(());
                break;
            }
        }
    }
    assert!(hung.is_some(), "the accept queue never filled");
    for check in [Check::Tcp, http("/")] {
        let o = probe(addr, &check, TIMEOUT).await;
        assert_fails(&o, "timed out after 300ms while connecting");
        assert!(o.latency >= TIMEOUT);
        assert!(o.latency < TIMEOUT * 3, "{o:?}");
    }
    drop(sock);
}

#[tokio::test]
async fn a_black_hole_times_out_waiting_for_the_response() {
    let s = black_hole().await;
    let o = probe(s.addr, &http("/"), TIMEOUT).await;
    assert_eq!(o.detail, "timed out after 300ms waiting for the response");
    assert!(
        !o.ok && o.latency >= TIMEOUT && o.latency < TIMEOUT * 3,
        "{o:?}"
    );
}

#[tokio::test]
async fn the_app_is_healthy_until_told_otherwise() {
    let s = app().await;
    let o = probe(s.addr, &http("/health"), TIMEOUT).await;
    assert!(o.ok, "{o:?}");
    assert_eq!(o.detail, "status 200");

    let control = |what: &str| {
        http_with(|h| {
            h.method = Method::POST;
            h.path = format!("/_control/{what}");
        })
    };
    assert!(probe(s.addr, &control("unhealthy"), TIMEOUT).await.ok);
    let o = probe(s.addr, &http("/health"), TIMEOUT).await;
    assert_fails(&o, "status 503 not in 200-399");
    // `/` is still fine: only the health endpoint reports trouble.
    assert!(probe(s.addr, &http("/"), TIMEOUT).await.ok);

    assert!(probe(s.addr, &control("healthy"), TIMEOUT).await.ok);
    assert!(probe(s.addr, &http("/health"), TIMEOUT).await.ok);
}

#[tokio::test]
async fn expected_status_range_is_honoured() {
    let s = app().await;
    let o = probe(s.addr, &http("/status/503"), TIMEOUT).await;
    assert_eq!(o.detail, "status 503 not in 200-399");
    let o = probe(
        s.addr,
        &http_with(|h| {
            h.path = "/status/503".into();
            h.expect_status = 500..=503;
        }),
        TIMEOUT,
    )
    .await;
    assert!(o.ok, "{o:?}");
    let o = probe(
        s.addr,
        &http_with(|h| {
            h.path = "/health".into();
            h.expect_status = 204..=204;
        }),
        TIMEOUT,
    )
    .await;
    assert_eq!(o.detail, "status 200 not in 204");
}

#[tokio::test]
async fn body_must_contain_the_text() {
    let s = app().await;
    let check = |needle: &str| {
        let needle = needle.to_string();
        http_with(move |h| {
            h.path = "/health".into();
            h.body_contains = Some(needle);
        })
    };
    let o = probe(s.addr, &check("ok"), TIMEOUT).await;
    assert!(o.ok, "{o:?}");
    let o = probe(s.addr, &check("pong"), TIMEOUT).await;
    assert_eq!(o.detail, "body lacks \"pong\"");
    // A large body: only the first 64 KiB are searched, and the probe does not wait for more.
    let o = probe(
        s.addr,
        &http_with(|h| {
            h.path = "/bytes/200000".into();
            h.body_contains = Some("y".into());
        }),
        TIMEOUT,
    )
    .await;
    assert_eq!(o.detail, "body lacks \"y\" (in its first 64KiB)");
}

#[tokio::test]
async fn text_beyond_64kib_is_not_seen() {
    // 70 000 bytes of 'a', then the needle.
    static BODY: std::sync::LazyLock<&'static [u8]> = std::sync::LazyLock::new(|| {
        let mut r =
            b"HTTP/1.1 200 OK\r\ncontent-length: 70006\r\nconnection: close\r\n\r\n".to_vec();
        r.extend(std::iter::repeat_n(b'a', 70_000));
        r.extend_from_slice(b"NEEDLE");
        Box::leak(r.into_boxed_slice())
    });
    let (s, _rx) = raw(Reply::Bytes(*BODY)).await;
    let o = probe(
        s.addr,
        &http_with(|h| h.body_contains = Some("NEEDLE".into())),
        TIMEOUT,
    )
    .await;
    assert_eq!(o.detail, "body lacks \"NEEDLE\" (in its first 64KiB)");
    let o = probe(
        s.addr,
        &http_with(|h| h.body_contains = Some("aaaa".into())),
        TIMEOUT,
    )
    .await;
    assert!(o.ok, "{o:?}");
}

#[tokio::test]
async fn the_request_is_a_plain_http11_request() {
    let (s, mut rx) = raw(Reply::Bytes(b"HTTP/1.1 204 No Content\r\n\r\n")).await;
    let o = probe(s.addr, &http("/health?x=1"), TIMEOUT).await;
    assert!(o.ok, "{o:?}");
    let head = rx.recv().await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /health?x=1 http/1.1\r\n"), "{head}");
    assert!(head.contains(&format!("host: {}\r\n", s.addr)), "{head}");
    assert!(head.contains("user-agent: hastack-probe\r\n"), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");

    let o = probe(
        s.addr,
        &http_with(|h| {
            h.method = Method::HEAD;
            h.host = Some("app.internal".into());
        }),
        TIMEOUT,
    )
    .await;
    assert!(o.ok, "{o:?}");
    let head = rx.recv().await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("head / http/1.1\r\n"), "{head}");
    assert!(head.contains("host: app.internal\r\n"), "{head}");
}

#[tokio::test]
async fn misbehaving_servers_fail_with_a_reason() {
    let (s, _rx) = raw(Reply::Bytes(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")).await;
    let o = probe(s.addr, &http("/"), TIMEOUT).await;
    assert_fails(&o, "invalid HTTP response");

    let (s, _rx) = raw(Reply::Close).await;
    let o = probe(s.addr, &http("/"), TIMEOUT).await;
    assert_fails(&o, "connection closed before a complete response");

    let (s, _rx) = raw(Reply::Reset).await;
    let o = probe(s.addr, &http("/"), TIMEOUT).await;
    assert_fails(&o, "connection reset");

    let (s, _rx) = raw(Reply::Bytes(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort",
    ))
    .await;
    let o = probe(
        s.addr,
        &http_with(|h| h.body_contains = Some("missing".into())),
        TIMEOUT,
    )
    .await;
    assert_fails(&o, "error reading the body");
}

/// The whole loop with real parts: the scheduler probes the real app, a real
/// `HealthMachine` turns outcomes into states, and the app going unhealthy and healthy
/// again takes the member down after `fall` probes and back after `rise`.
#[tokio::test]
async fn scheduler_drives_a_health_machine_against_the_app() {
    struct Member {
        addr: SocketAddr,
        machine: Mutex<HealthMachine>,
        states: mpsc::UnboundedSender<State>,
    }
    impl Target for Member {
        fn addr(&self) -> SocketAddr {
            self.addr
        }
        fn report(&self, outcome: Outcome) -> ProbePhase {
            let mut m = self.machine.lock();
            let ev = if outcome.ok {
                Event::ProbeOk
            } else {
                Event::ProbeFailed
            };
            if let Some(tr) = m.on_event(tokio::time::Instant::now(), ev) {
                let _ = self.states.send(tr.to);
            }
            m.probe_phase()
        }
    }
    let s = app().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let member = Arc::new(Member {
        addr: s.addr,
        machine: Mutex::new(HealthMachine::new(HealthPolicy::default(), true)),
        states: tx,
    });
    let schedule = Schedule {
        interval: Duration::from_millis(40),
        fast_interval: Duration::from_millis(10),
        down_interval: Duration::from_millis(40),
        timeout: Duration::from_millis(500),
        jitter: 0.1,
    };
    let stop = CancellationToken::new();
    let task = spawn(
        member.clone(),
        Arc::new(http("/health")),
        schedule,
        stop.clone(),
    );
    let control = |what: &'static str| {
        let addr = s.addr;
        async move {
            let c = http_with(|h| {
                h.method = Method::POST;
                h.path = format!("/_control/{what}");
            });
            assert!(probe(addr, &c, TIMEOUT).await.ok);
        }
    };
    let next_state = async |rx: &mut mpsc::UnboundedReceiver<State>| {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("no transition within 10 s")
            .unwrap()
    };
    control("unhealthy").await;
    assert_eq!(next_state(&mut rx).await, State::Down);
    control("healthy").await;
    assert_eq!(next_state(&mut rx).await, State::Up);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("scheduler did not stop")
        .unwrap();
}
