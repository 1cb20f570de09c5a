//! The admin listener every hastack component exposes: `GET /status` (JSON), `GET /metrics`
//! (Prometheus text), and component-specific operator commands (`POST /admin/...`).
//!
//! A component implements [`AdminHandler`] for its own paths; [`serve`] adds the common
//! ones (`/metrics` from the component's [`prometheus_client`] registry, `/healthz`) and
//! runs an HTTP/1.1 server until the shutdown token fires.
//!
//! The admin API is deliberately small and plain: requests are read whole (bounded by
//! [`MAX_BODY`]), answers are JSON or text, and nothing here is on a data-plane hot path.
//! It must never share a listener with user traffic.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Largest request body the admin API reads.
pub const MAX_BODY: usize = 1024 * 1024;

/// An admin request, read whole.
#[derive(Debug, Clone)]
pub struct AdminRequest {
    /// HTTP method.
    pub method: Method,
    /// Path without the query string.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl AdminRequest {
    /// The path split on `/`, without empty segments: `/admin/members/a/b` ->
    /// `["admin", "members", "a", "b"]`.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }
}

/// An admin response.
#[derive(Debug, Clone)]
pub struct AdminResponse {
    /// Status code.
    pub status: StatusCode,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Bytes,
}

impl AdminResponse {
    /// A JSON response of `value`.
    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Self {
        match serde_json::to_vec_pretty(value) {
            Ok(mut body) => {
                body.push(b'\n');
                AdminResponse {
                    status,
                    content_type: "application/json",
                    body: body.into(),
                }
            }
            Err(e) => AdminResponse::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the answer as JSON: {e}"),
            ),
        }
    }

    /// A JSON error: `{"error": message}`.
    pub fn error(status: StatusCode, message: &str) -> Self {
        #[derive(Serialize)]
        struct E<'a> {
            error: &'a str,
        }
        let mut body = serde_json::to_vec(&E { error: message }).unwrap_or_default();
        body.push(b'\n');
        AdminResponse {
            status,
            content_type: "application/json",
            body: body.into(),
        }
    }

    /// A plain-text response.
    pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Self {
        AdminResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// 404 naming the path and listing what exists.
    pub fn not_found(req: &AdminRequest, known: &str) -> Self {
        AdminResponse::error(
            StatusCode::NOT_FOUND,
            &format!(
                "no admin endpoint {} {}; known: {known}",
                req.method, req.path
            ),
        )
    }
}

/// Boxed future returned by handlers.
pub type HandlerFuture = Pin<Box<dyn Future<Output = AdminResponse> + Send>>;

/// A component's admin endpoints.
pub trait AdminHandler: Send + Sync + 'static {
    /// Answer `req`, or `None` if the path is not the component's (the server then answers
    /// 404 listing [`AdminHandler::describe`]).
    fn handle(&self, req: &AdminRequest) -> Option<HandlerFuture>;

    /// A one-line list of the component's endpoints, for 404 messages.
    fn describe(&self) -> &'static str;
}

/// The metrics registry shared between a component and its admin listener. Components
/// register their metrics once at start; the admin listener encodes it on each scrape.
pub type SharedRegistry = Arc<Mutex<Registry>>;

/// Bind the admin listener. Separate from [`serve`] so that callers can report a bind error
/// (address in use) before anything else starts.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve admin requests on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn AdminHandler>,
    registry: SharedRegistry,
    shutdown: CancellationToken,
) {
    let local = listener.local_addr().ok();
    debug!(?local, "admin listener running");
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(dispatch(req, &*handler, &registry).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "admin connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
}

async fn dispatch(
    req: http::Request<Incoming>,
    handler: &dyn AdminHandler,
    registry: &SharedRegistry,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return into_http(AdminResponse::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("cannot read the request body (limit {MAX_BODY} bytes): {e}"),
            ));
        }
    };
    let req = AdminRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        body,
    };
    let resp = match (req.method.clone(), req.path.as_str()) {
        (Method::GET, "/metrics") => metrics_response(registry),
        (Method::GET, "/healthz") => AdminResponse::text(StatusCode::OK, "ok\n"),
        _ => match handler.handle(&req) {
            Some(fut) => fut.await,
            None => AdminResponse::not_found(
                &req,
                &format!("GET /metrics, GET /healthz, {}", handler.describe()),
            ),
        },
    };
    into_http(resp)
}

/// Encode `registry` in the Prometheus/OpenMetrics text format.
pub fn metrics_response(registry: &SharedRegistry) -> AdminResponse {
    let mut out = String::with_capacity(16 * 1024);
    match prometheus_client::encoding::text::encode(&mut out, &registry.lock()) {
        Ok(()) => AdminResponse {
            status: StatusCode::OK,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: out.into(),
        },
        Err(e) => AdminResponse::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode metrics: {e}"),
        ),
    }
}

fn into_http(r: AdminResponse) -> http::Response<Full<Bytes>> {
    let mut resp = http::Response::new(Full::new(r.body));
    *resp.status_mut() = r.status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(r.content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Echo;
    impl AdminHandler for Echo {
        fn handle(&self, req: &AdminRequest) -> Option<HandlerFuture> {
            if req.path == "/status" {
                let n = req.body.len();
                Some(Box::pin(async move {
                    AdminResponse::json(StatusCode::OK, &serde_json::json!({ "len": n }))
                }))
            } else {
                None
            }
        }
        fn describe(&self) -> &'static str {
            "GET /status"
        }
    }

    async fn request(addr: SocketAddr, raw: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn routes_common_and_component_paths() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut reg = Registry::default();
        let c: prometheus_client::metrics::counter::Counter = Default::default();
        reg.register("hastack_test", "a test counter", c.clone());
        c.inc();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            Arc::new(Echo),
            Arc::new(Mutex::new(reg)),
            shutdown.clone(),
        ));
        let m = request(
            addr,
            "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(m.contains("hastack_test_total 1"), "{m}");
        let s = request(
            addr,
            "POST /status HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc",
        )
        .await;
        assert!(
            s.starts_with("HTTP/1.1 200") && s.contains("\"len\": 3"),
            "{s}"
        );
        let n = request(
            addr,
            "GET /nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(
            n.starts_with("HTTP/1.1 404") && n.contains("GET /status"),
            "{n}"
        );
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
