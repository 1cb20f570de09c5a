//! Every fault-proxy mode against real sockets: an echo server behind a real proxy.
//! Timing assertions are lower bounds that follow from the fault itself (a 300 ms delay
//! cannot answer in less), never performance limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use hastack_chaos::control;
use hastack_chaos::fault::FaultKind;
use hastack_chaos::fault::proxy::{Direction, FaultProxy, FaultProxyConfig, ProxyFault};
use hastack_config::{ByteSize, Dur};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

async fn echo_on(listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(echo_on(l));
    a
}

async fn proxy_to(upstream: SocketAddr) -> FaultProxy {
    FaultProxy::start(FaultProxyConfig {
        name: "p".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream,
        connect_timeout: Duration::from_secs(1),
        seed: 7,
        mirror_refusal: true,
    })
    .await
    .unwrap()
}

/// One echo round trip on `s`; its duration.
async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let t = Instant::now();
    s.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    timeout(Duration::from_secs(10), s.read_exact(&mut got))
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(got, msg);
    t.elapsed()
}

#[tokio::test]
async fn passes_bytes_through_untouched() {
    let p = proxy_to(echo_server().await).await;
    let mut s = TcpStream::connect(p.handle().listen_addr()).await.unwrap();
    round_trip(&mut s, b"hello").await;
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    round_trip(&mut s, &big).await;
    let st = p.handle().status();
    assert_eq!(st.connections, 1);
    assert_eq!(st.bytes_up, 200_005);
}

#[tokio::test]
async fn latency_applies_per_direction_and_clears() {
    let p = proxy_to(echo_server().await).await;
    let h = p.handle();
    let mut s = TcpStream::connect(h.listen_addr()).await.unwrap();
    round_trip(&mut s, b"warm").await;
    for direction in [Direction::Upstream, Direction::Downstream, Direction::Both] {
        h.apply(ProxyFault::Latency {
            delay: Dur::ms(300),
            jitter: Dur::ms(0),
            direction,
        })
        .unwrap();
        let rtt = round_trip(&mut s, b"x").await;
        let floor = if direction == Direction::Both {
            600
        } else {
            300
        };
        assert!(
            rtt >= Duration::from_millis(floor),
            "{direction:?}: {rtt:?}"
        );
    }
    // Jitter stays within delay ± jitter.
    h.apply(ProxyFault::Latency {
        delay: Dur::ms(100),
        jitter: Dur::ms(50),
        direction: Direction::Upstream,
    })
    .unwrap();
    for _ in 0..5 {
        let rtt = round_trip(&mut s, b"j").await;
        assert!(rtt >= Duration::from_millis(50), "{rtt:?}");
    }
    // Cleared: a 5 s delay would be unmistakable, and it is gone.
    h.apply(ProxyFault::Latency {
        delay: Dur::secs(5),
        jitter: Dur::ms(0),
        direction: Direction::Both,
    })
    .unwrap();
    assert!(h.clear(FaultKind::Latency));
    let rtt = round_trip(&mut s, b"y").await;
    assert!(rtt < Duration::from_secs(5), "{rtt:?}");
}

#[tokio::test]
async fn bandwidth_cap_holds_the_rate() {
    let p = proxy_to(echo_server().await).await;
    let h = p.handle();
    h.apply(ProxyFault::Bandwidth {
        rate: ByteSize::kib(64),
        direction: Direction::Downstream,
    })
    .unwrap();
    let mut s = TcpStream::connect(h.listen_addr()).await.unwrap();
    // 128 KiB at 64 KiB/s downstream: at least ~2 s minus the small burst.
    let data = vec![7u8; 128 * 1024];
    let t = round_trip(&mut s, &data).await;
    assert!(t >= Duration::from_millis(1800), "{t:?}");
}

#[tokio::test]
async fn reset_kills_open_and_new_connections() {
    let p = proxy_to(echo_server().await).await;
    let h = p.handle();
    let mut s = TcpStream::connect(h.listen_addr()).await.unwrap();
    round_trip(&mut s, b"before").await;
    h.apply(ProxyFault::Reset).unwrap();
    let mut buf = [0u8; 8];
    let r = timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
    // New connections are accepted and reset at once.
    let mut n = TcpStream::connect(h.listen_addr()).await.unwrap();
    let r = timeout(Duration::from_secs(5), n.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
    h.clear(FaultKind::Reset);
    let mut ok = TcpStream::connect(h.listen_addr()).await.unwrap();
    round_trip(&mut ok, b"after").await;
    assert!(h.status().resets >= 2);
}

#[tokio::test]
async fn blackhole_accepts_holds_and_delivers_after_clearing() {
    let p = proxy_to(echo_server().await).await;
    let h = p.handle();
    h.apply(ProxyFault::Blackhole {
        direction: Direction::Both,
    })
    .unwrap();
    let mut s = TcpStream::connect(h.listen_addr()).await.expect("accepted");
    s.write_all(b"anyone?").await.unwrap();
    let mut got = [0u8; 7];
    assert!(
        timeout(Duration::from_millis(500), s.read_exact(&mut got))
            .await
            .is_err(),
        "a black hole never answers"
    );
    assert_eq!(h.status().connections, 0, "not forwarded upstream yet");
    h.clear(FaultKind::Blackhole);
    timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .expect("held bytes delivered after the fault")
        .unwrap();
    assert_eq!(&got, b"anyone?");

    // Downstream only, on an open connection: requests go through, answers are held.
    h.apply(ProxyFault::Blackhole {
        direction: Direction::Downstream,
    })
    .unwrap();
    s.write_all(b"again").await.unwrap();
    let mut got = [0u8; 5];
    assert!(
        timeout(Duration::from_millis(500), s.read_exact(&mut got))
            .await
            .is_err()
    );
    h.clear_all();
    timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"again");
}

async fn reset_on_accept(addr: SocketAddr) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(b"q").await;
    let mut b = [0u8; 1];
    match timeout(Duration::from_secs(5), s.read(&mut b))
        .await
        .unwrap()
    {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(0) => true,
        Ok(_) => false,
    }
}

#[tokio::test]
async fn drop_resets_the_given_fraction_of_new_connections() {
    let p = proxy_to(echo_server().await).await;
    let h = p.handle();
    h.apply(ProxyFault::Drop { fraction: 1.0 }).unwrap();
    for _ in 0..5 {
        assert!(reset_on_accept(h.listen_addr()).await);
    }
    h.apply(ProxyFault::Drop { fraction: 0.5 }).unwrap();
    let mut dropped = 0;
    for _ in 0..40 {
        if reset_on_accept(h.listen_addr()).await {
            dropped += 1;
        }
    }
    // Binomial(40, 0.5) from a fixed seed: far from both ends.
    assert!((8..=32).contains(&dropped), "{dropped} of 40");
    assert_eq!(h.status().dropped, 5 + dropped);
}

#[tokio::test]
async fn a_refusing_upstream_makes_the_proxy_refuse_until_it_is_back() {
    // Reserve a port, then free it: nothing listens there.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = l.local_addr().unwrap();
    drop(l);
    let p = proxy_to(upstream).await;
    let addr = p.handle().listen_addr();
    // The first connection is accepted and reset; then the proxy stops listening.
    let _ = reset_on_accept(addr).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the proxy never started refusing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The upstream comes back: the proxy listens again and forwards.
    let l = TcpListener::bind(upstream).await.unwrap();
    tokio::spawn(echo_on(l));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut s = loop {
        if let Ok(s) = TcpStream::connect(addr).await {
            break s;
        }
        assert!(Instant::now() < deadline, "the proxy never listened again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    round_trip(&mut s, b"back").await;
}

async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn control_api_applies_lists_and_clears_faults() {
    let upstream = echo_server().await;
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(control::standalone(
        FaultProxyConfig {
            name: "p1".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream,
            connect_timeout: Duration::from_secs(1),
            seed: 1,
            mirror_refusal: true,
        },
        Some("127.0.0.1:0".parse().unwrap()),
        vec![],
        shutdown.clone(),
        move |listen, control| {
            let _ = tx.send((listen, control.unwrap()));
        },
    ));
    let (listen, ctl) = rx.await.unwrap();
    let (code, body) = http(
        ctl,
        "POST",
        "/admin/proxies/p1/faults",
        r#"{"kind":"latency","delay":"300ms","direction":"upstream","duration":"60s"}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let mut s = TcpStream::connect(listen).await.unwrap();
    assert!(round_trip(&mut s, b"z").await >= Duration::from_millis(300));
    let (_, status) = http(ctl, "GET", "/status", "").await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["proxies"]["p1"]["faults"][0]["kind"], "latency");
    // Bad input gets a clear error, not a panic.
    let (code, body) = http(
        ctl,
        "POST",
        "/admin/proxies/p1/faults",
        r#"{"kind":"melt"}"#,
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("kinds: latency"), "{body}");
    let (code, body) = http(ctl, "POST", "/admin/proxies/nope/faults", "{}").await;
    assert_eq!(code, 404);
    assert!(body.contains("known: p1"), "{body}");
    let (code, _) = http(
        ctl,
        "POST",
        "/events",
        r#"{"kind":"detected","subject":"a"}"#,
    )
    .await;
    assert_eq!(code, 409, "a standalone proxy records no events");
    let (code, _) = http(ctl, "POST", "/admin/proxies/p1/clear", "").await;
    assert_eq!(code, 200);
    let (_, status) = http(ctl, "GET", "/status", "").await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["proxies"]["p1"]["faults"].as_array().unwrap().len(), 0);
    let (_, metrics) = http(ctl, "GET", "/metrics", "").await;
    assert!(
        metrics.contains("chaos_proxy_connections_total{proxy=\"p1\"}"),
        "{metrics}"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
