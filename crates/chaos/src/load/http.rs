//! HTTP/1.1 driver: a hyper client with a keep-alive pool per entry address.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{BoxFuture, CallError, Driver};
use crate::record::Outcome;

/// What each HTTP request looks like.
#[derive(Debug, Clone)]
pub struct HttpRequestSpec {
    /// Method.
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// `Host` header; the entry address when `None`.
    pub host: Option<String>,
    /// Connect timeout per address.
    pub connect_timeout: Duration,
}

/// The HTTP driver. Success = a complete answer with status 2xx or 3xx.
#[derive(Debug, Clone)]
pub struct HttpDriver {
    client: Client<HttpConnector, Empty<Bytes>>,
    spec: HttpRequestSpec,
}

impl HttpDriver {
    /// A driver with its own connection pool.
    pub fn new(spec: HttpRequestSpec) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(spec.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        HttpDriver { client, spec }
    }
}

impl Driver for HttpDriver {
    fn call(&self, target: SocketAddr) -> BoxFuture<'_, Result<(), CallError>> {
        Box::pin(async move {
            let uri = format!("http://{target}{}", self.spec.path);
            let host = self.spec.host.clone().unwrap_or_else(|| target.to_string());
            let req = Request::builder()
                .method(self.spec.method.clone())
                .uri(uri)
                .header(header::HOST, host)
                .body(Empty::<Bytes>::new())
                .map_err(|_| CallError::after(Outcome::Other))?;
            let resp = self.client.request(req).await.map_err(|e| {
                if e.is_connect() {
                    CallError::connect(classify(&e, true))
                } else {
                    CallError::after(classify(&e, false))
                }
            })?;
            let status = resp.status();
            resp.into_body()
                .collect()
                .await
                .map_err(|e| CallError::after(classify(&e, false)))?;
            if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(CallError::after(Outcome::Status))
            }
        })
    }
}

/// Map an error (and its sources) to an outcome.
pub fn classify(e: &(dyn std::error::Error + 'static), connecting: bool) -> Outcome {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io_outcome(io, connecting);
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return Outcome::Closed;
            }
            if h.is_parse() {
                return Outcome::BadResponse;
            }
            if h.is_timeout() {
                return Outcome::Timeout;
            }
        }
        cur = err.source();
    }
    // The legacy connector reports its own timeout as a plain message.
    if connecting {
        let text = format!("{e:?}");
        if text.contains("timed out") || text.contains("Timeout") {
            return Outcome::ConnectTimeout;
        }
        return Outcome::Refused;
    }
    Outcome::Other
}

/// Map an I/O error to an outcome.
pub fn io_outcome(io: &std::io::Error, connecting: bool) -> Outcome {
    use std::io::ErrorKind as K;
    match io.kind() {
        K::ConnectionRefused => Outcome::Refused,
        K::TimedOut if connecting => Outcome::ConnectTimeout,
        K::TimedOut => Outcome::Timeout,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Outcome::Reset,
        K::UnexpectedEof => Outcome::Closed,
        _ if connecting => Outcome::Refused,
        _ => Outcome::Other,
    }
}
