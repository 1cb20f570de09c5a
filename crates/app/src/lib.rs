//! A tiny HTTP/1.1 + h2c app server: the "stateless app tier" of demos, integration tests and
//! drills. It is a real process with real sockets, so killing, freezing or slowing it
//! exercises the layers in front of it exactly as a production app would.
//!
//! Endpoints:
//!
//! | request | answer |
//! |---|---|
//! | `GET /` (or any unknown path) | `200`, body `<name>\n`, header `x-served-by: <name>` |
//! | `GET /health` | `200 ok`, or `503` after `POST /_control/unhealthy` |
//! | `GET /status/<code>` | that status |
//! | `GET /delay/<ms>` | `200` after `ms` milliseconds |
//! | `GET /bytes/<n>` | `n` bytes of `x` |
//! | `POST /echo`, `PUT /echo` | the request body |
//! | `GET /_stats` | `{"name":..,"requests":..}` |
//! | `POST /_control/unhealthy`, `/_control/healthy` | flip `/health` |
//! | `POST /_control/fail`, `/_control/ok` | every other path answers `500` / normally |
//! | `POST /_control/delay/<ms>` | add `ms` of latency to every answer (0 to clear) |
//! | `GET /_upgrade` with `Upgrade: echo` | `101`, then echoes every byte back (tests upgrades) |
//!
//! It deliberately has no configuration file: flags are enough for a test fixture.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Largest body `/echo` accepts.
pub const MAX_ECHO: usize = 16 * 1024 * 1024;

/// How the app should behave.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The name it answers with.
    pub name: String,
    /// Address to listen on.
    pub listen: SocketAddr,
}

/// Shared state: counters and the switches flipped through `/_control`.
#[derive(Debug)]
struct State {
    name: Bytes,
    header_name: http::HeaderValue,
    requests: AtomicU64,
    unhealthy: AtomicBool,
    failing: AtomicBool,
    delay_ms: AtomicU64,
}

/// Run the app until `shutdown` fires.
pub async fn run(config: AppConfig, shutdown: CancellationToken) -> std::io::Result<()> {
    let listener = TcpListener::bind(config.listen).await?;
    serve(listener, &config.name, shutdown).await
}

/// Serve on an already bound listener until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    name: &str,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let header_name = http::HeaderValue::from_str(name).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("app name {name:?} is not a valid header value"),
        )
    })?;
    let state = Arc::new(State {
        name: Bytes::from(format!("{name}\n")),
        header_name,
        requests: AtomicU64::new(0),
        unhealthy: AtomicBool::new(false),
        failing: AtomicBool::new(false),
        delay_ms: AtomicU64::new(0),
    });
    info!(addr = %listener.local_addr()?, name, "app listening");
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await
            {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

fn reply(state: &State, status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("x-served-by", state.header_name.clone());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    match (&method, segs.as_slice()) {
        (&Method::POST, ["_control", what @ ..]) => control(state, what),
        (&Method::GET, ["_upgrade"]) => upgrade(state, req),
        (_, ["health"]) => {
            if state.unhealthy.load(Ordering::Relaxed) {
                reply(state, StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
            } else {
                reply(state, StatusCode::OK, "ok\n")
            }
        }
        (_, ["_stats"]) => {
            let body = serde_json::json!({
                "name": String::from_utf8_lossy(&state.name).trim_end(),
                "requests": state.requests.load(Ordering::Relaxed),
            });
            reply(state, StatusCode::OK, body.to_string())
        }
        _ if state.failing.load(Ordering::Relaxed) => reply(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "failing on purpose\n",
        ),
        (_, ["status", code]) => match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(s) => reply(state, s, format!("{}\n", s.as_u16())),
            None => reply(state, StatusCode::BAD_REQUEST, "bad status code\n"),
        },
        (_, ["delay", ms]) => match ms.parse::<u64>() {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms.min(600_000))).await;
                reply(state, StatusCode::OK, state.name.clone())
            }
            Err(_) => reply(state, StatusCode::BAD_REQUEST, "bad delay\n"),
        },
        (_, ["bytes", n]) => match n.parse::<usize>() {
            Ok(n) if n <= MAX_ECHO => reply(state, StatusCode::OK, vec![b'x'; n]),
            _ => reply(state, StatusCode::BAD_REQUEST, "bad size\n"),
        },
        (&Method::POST | &Method::PUT, ["echo"]) => {
            match Limited::new(req.into_body(), MAX_ECHO).collect().await {
                Ok(b) => reply(state, StatusCode::OK, b.to_bytes()),
                Err(_) => reply(state, StatusCode::PAYLOAD_TOO_LARGE, "too large\n"),
            }
        }
        _ => reply(state, StatusCode::OK, state.name.clone()),
    }
}

/// Switch to an echo protocol: everything the client sends comes back.
fn upgrade(state: &State, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let wants_echo = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"echo"));
    if !wants_echo {
        return reply(state, StatusCode::BAD_REQUEST, "send Upgrade: echo\n");
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
            Err(e) => debug!(error = %e, "upgrade failed"),
        }
    });
    let mut r = reply(state, StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    r.headers_mut()
        .insert(header::UPGRADE, http::HeaderValue::from_static("echo"));
    r.headers_mut().insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    r.headers_mut().remove(header::CONTENT_TYPE);
    r
}

fn control(state: &State, what: &[&str]) -> Response<Full<Bytes>> {
    match what {
        ["unhealthy"] => state.unhealthy.store(true, Ordering::Relaxed),
        ["healthy"] => state.unhealthy.store(false, Ordering::Relaxed),
        ["fail"] => state.failing.store(true, Ordering::Relaxed),
        ["ok"] => state.failing.store(false, Ordering::Relaxed),
        ["delay", ms] => match ms.parse::<u64>() {
            Ok(ms) => state.delay_ms.store(ms, Ordering::Relaxed),
            Err(_) => return reply(state, StatusCode::BAD_REQUEST, "bad delay\n"),
        },
        _ => return reply(state, StatusCode::NOT_FOUND, "unknown control\n"),
    }
    reply(state, StatusCode::OK, "done\n")
}
