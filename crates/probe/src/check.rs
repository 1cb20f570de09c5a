//! One probe: what to check ([`Check`]) and how it went ([`Outcome`]).

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// At most this much of a response body is read for [`HttpCheck::body_contains`].
pub const MAX_BODY: usize = 64 * 1024;

/// The `User-Agent` of HTTP probes, so backends can tell probes from traffic in their logs.
pub const USER_AGENT: &str = "hastack-probe";

/// What a probe checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// A TCP connection can be opened (then closed at once).
    Tcp,
    /// An HTTP/1.1 request on a fresh connection gets an expected answer.
    Http(HttpCheck),
}

/// An HTTP/1.1 probe: `method path` with `Connection: close`, `User-Agent: hastack-probe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// Request method.
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// `Host` header; the member's `ip:port` when `None`.
    pub host: Option<String>,
    /// Statuses that count as healthy.
    pub expect_status: RangeInclusive<u16>,
    /// Text the first [`MAX_BODY`] bytes of the body must contain.
    pub body_contains: Option<String>,
}

impl Default for HttpCheck {
    /// `GET /`, any 2xx or 3xx.
    fn default() -> Self {
        HttpCheck {
            method: Method::GET,
            path: "/".to_string(),
            host: None,
            expect_status: 200..=399,
            body_contains: None,
        }
    }
}

/// The result of one probe. A failed probe is a value, not an error: `detail` says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the member passed.
    pub ok: bool,
    /// Time from the start of the probe to its verdict.
    pub latency: Duration,
    /// On failure, why, in plain words ("connection refused", "timed out after 1s waiting for
    /// the response", "status 503 not in 200-399", "body lacks \"ok\""); on success, what was
    /// seen ("connected", "status 200").
    pub detail: String,
}

/// A duration as config files write it: "1s", "250ms", "1s 500ms".
pub(crate) fn human(d: Duration) -> String {
    hastack_config::Dur(d).to_string()
}

/// `200-399`, or `200` for a one-status range.
pub(crate) struct StatusRange<'a>(pub(crate) &'a RangeInclusive<u16>);

impl fmt::Display for StatusRange<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.start() == self.0.end() {
            write!(f, "{}", self.0.start())
        } else {
            write!(f, "{}-{}", self.0.start(), self.0.end())
        }
    }
}

/// Probe `addr` once, bounded by `timeout` from start to verdict (connect, request, response
/// head and body together).
pub async fn probe(addr: SocketAddr, check: &Check, timeout: Duration) -> Outcome {
    let start = Instant::now();
    // Where the probe is, for the timeout message (an atomic so the future stays `Send`).
    let phase = PhaseCell::default();
    let work = async {
        match check {
            Check::Tcp => tcp(addr).await,
            Check::Http(h) => http(addr, h, &phase).await,
        }
    };
    // `timeout` (not `timeout_at(start + timeout)`): it saturates instead of overflowing.
    let (ok, detail) = match tokio::time::timeout(timeout, work).await {
        Ok(verdict) => verdict,
        Err(_) => (
            false,
            format!("timed out after {} {}", human(timeout), phase.get()),
        ),
    };
    Outcome {
        ok,
        latency: start.elapsed(),
        detail,
    }
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Connecting = 0,
    AwaitingResponse = 1,
    ReadingBody = 2,
}

#[derive(Default)]
struct PhaseCell(AtomicU8);

impl PhaseCell {
    fn set(&self, p: Phase) {
        self.0.store(p as u8, Ordering::Relaxed);
    }

    fn get(&self) -> Phase {
        match self.0.load(Ordering::Relaxed) {
            0 => Phase::Connecting,
            1 => Phase::AwaitingResponse,
            _ => Phase::ReadingBody,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connecting => "while connecting",
            Phase::AwaitingResponse => "waiting for the response",
            Phase::ReadingBody => "reading the body",
        })
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect(addr).await.map_err(|e| describe_io(&e))
}

fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".to_string(),
        K::ConnectionReset => "connection reset".to_string(),
        K::ConnectionAborted => "connection aborted".to_string(),
        K::BrokenPipe => "connection closed by the member (broken pipe)".to_string(),
        K::HostUnreachable | K::NetworkUnreachable => format!("unreachable: {e}"),
        _ => format!("connection error: {e}"),
    }
}

fn describe_hyper(e: &hyper::Error) -> String {
    // An IO error underneath (a reset mid-request) says more than hyper's wrapper.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return describe_io(io);
        }
        source = s.source();
    }
    if e.is_incomplete_message() {
        "connection closed before a complete response".to_string()
    } else if e.is_parse() {
        format!("invalid HTTP response: {e}")
    } else {
        format!("HTTP error: {e}")
    }
}

async fn tcp(addr: SocketAddr) -> (bool, String) {
    match connect(addr).await {
        // Dropping the stream closes it: the member only needed to accept.
        Ok(_stream) => (true, "connected".to_string()),
        Err(why) => (false, why),
    }
}

async fn http(addr: SocketAddr, check: &HttpCheck, phase: &PhaseCell) -> (bool, String) {
    let stream = match connect(addr).await {
        Ok(s) => s,
        Err(why) => return (false, why),
    };
    let _ = stream.set_nodelay(true);
    phase.set(Phase::AwaitingResponse);
    let host = check.host.clone().unwrap_or_else(|| addr.to_string());
    let req = Request::builder()
        .method(check.method.clone())
        .uri(check.path.as_str())
        .header(header::HOST, host)
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new());
    let req = match req {
        Ok(r) => r,
        Err(e) => return (false, format!("cannot build the probe request: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => return (false, describe_hyper(&e)),
    };
    let exchange = async {
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return (false, describe_hyper(&e)),
        };
        let status = resp.status().as_u16();
        if !check.expect_status.contains(&status) {
            return (
                false,
                format!(
                    "status {status} not in {}",
                    StatusRange(&check.expect_status)
                ),
            );
        }
        let Some(needle) = check.body_contains.as_deref() else {
            return (true, format!("status {status}"));
        };
        phase.set(Phase::ReadingBody);
        let mut body = resp.into_body();
        let mut seen: Vec<u8> = Vec::new();
        while seen.len() < MAX_BODY {
            match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    return (
                        false,
                        format!("error reading the body: {}", describe_hyper(&e)),
                    );
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = MAX_BODY - seen.len();
                        seen.extend_from_slice(&data[..data.len().min(room)]);
                        if contains(&seen, needle.as_bytes()) {
                            return (true, format!("status {status}, body contains {needle:?}"));
                        }
                    }
                }
            }
        }
        let within = if seen.len() >= MAX_BODY {
            " (in its first 64KiB)"
        } else {
            ""
        };
        (false, format!("body lacks {needle:?}{within}"))
    };
    // Drive the connection and the exchange together in this task (no spawn): the
    // connection future finishes on its own after a `Connection: close` exchange, and is
    // dropped (closing the socket) if the exchange ends first.
    let mut exchange = std::pin::pin!(exchange);
    let mut conn = std::pin::pin!(conn);
    let mut conn_done = false;
    loop {
        tokio::select! {
            verdict = &mut exchange => return verdict,
            _ = &mut conn, if !conn_done => conn_done = true,
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substring() {
        assert!(contains(b"hello ok\n", b"ok"));
        assert!(!contains(b"o", b"ok"));
        assert!(contains(b"", b""));
    }

    #[test]
    fn ranges_print_like_config() {
        assert_eq!(StatusRange(&(200..=399)).to_string(), "200-399");
        assert_eq!(StatusRange(&(204..=204)).to_string(), "204");
        assert_eq!(human(Duration::from_millis(1500)), "1s 500ms");
    }
}
