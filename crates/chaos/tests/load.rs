//! The load generator against real sockets: drivers, outcomes, and the open-loop property
//! with a server that accepts but never answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hastack_chaos::load::http::{HttpDriver, HttpRequestSpec};
use hastack_chaos::load::tcp::{TcpDriver, TcpExpect};
use hastack_chaos::load::{self, CallError, Driver, LoadPlan, LoadStats};
use hastack_chaos::record::{Outcome, Recorder};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

async fn app() -> (SocketAddr, CancellationToken) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(hastack_app::serve(l, "a1", stop.clone()));
    (a, stop)
}

fn http(path: &str) -> HttpDriver {
    HttpDriver::new(HttpRequestSpec {
        method: http::Method::GET,
        path: path.to_string(),
        host: None,
        connect_timeout: Duration::from_millis(500),
    })
}

async fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn http_outcomes_against_a_real_app() {
    let (a, _stop) = app().await;
    assert_eq!(http("/").call(a).await, Ok(()));
    assert_eq!(
        http("/status/503").call(a).await,
        Err(CallError::after(Outcome::Status))
    );
    let dead = free_addr().await;
    assert_eq!(
        http("/").call(dead).await,
        Err(CallError::connect(Outcome::Refused))
    );
    // Failover: the dead address first, then the live one.
    assert_eq!(
        load::call_with_failover(&http("/"), &[dead, a]).await,
        Ok(())
    );
}

#[tokio::test]
async fn tcp_echo_and_line_prefix() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut b = [0u8; 64];
                let n = s.read(&mut b).await.unwrap_or(0);
                if b.starts_with(b"PING") {
                    let _ = s.write_all(b"+PONG\r\n").await;
                } else {
                    let _ = s.write_all(&b[..n]).await;
                }
            });
        }
    });
    let echo = TcpDriver {
        send: Bytes::from_static(b"hello\n"),
        expect: TcpExpect::Echo,
        connect_timeout: Duration::from_millis(500),
    };
    assert_eq!(echo.call(a).await, Ok(()));
    let ping = TcpDriver {
        send: Bytes::from_static(b"PING\r\n"),
        expect: TcpExpect::LinePrefix(Bytes::from_static(b"+PONG")),
        connect_timeout: Duration::from_millis(500),
    };
    assert_eq!(ping.call(a).await, Ok(()));
    let wrong = TcpDriver {
        expect: TcpExpect::LinePrefix(Bytes::from_static(b"-ERR")),
        ..ping
    };
    assert_eq!(
        wrong.call(a).await,
        Err(CallError::after(Outcome::BadResponse))
    );
}

#[tokio::test]
async fn a_stalled_server_does_not_reduce_the_send_rate() {
    // A server that accepts and never answers. Keep-alive cannot reuse a busy connection,
    // so every request the generator really sends shows up as a new connection.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let acc = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            acc.fetch_add(1, Ordering::Relaxed);
            held.push(s);
        }
    });
    let plan = LoadPlan {
        rate: 100.0,
        duration: Duration::from_secs(1),
        targets: vec![a],
        timeout: Duration::from_millis(500),
        max_in_flight: 1000,
    };
    let rec = Arc::new(Mutex::new(Recorder::new(
        Duration::from_secs(1),
        Duration::from_secs(1),
    )));
    load::run(
        &plan,
        Arc::new(http("/")),
        rec.clone(),
        Arc::new(LoadStats::default()),
        Instant::now(),
        CancellationToken::new(),
    )
    .await;
    let h = Arc::try_unwrap(rec)
        .unwrap()
        .into_inner()
        .finish(Duration::from_secs(1));
    let t = h.totals();
    assert_eq!(t.total(), 100);
    assert_eq!(t.counts[Outcome::Timeout.index()], 100, "{t:?}");
    // Every request went out although none was ever answered.
    assert_eq!(accepted.load(Ordering::Relaxed), 100);
}
