//! A lean HTTP/1.1 client for upstream connections, driven inline by the task that serves
//! the client's request.
//!
//! Why hand-written: with hyper's client every proxied request crosses three channels and
//! two extra tasks (request to the connection task, response back, body frames back), which
//! cost more CPU per request than all of HAProxy's user-space work (see
//! `docs/benchmarks.md`). Here the request task writes the request and reads the response
//! head itself, and the response body ([`crate::body::RespBody`]) reads the upstream socket
//! directly while the client connection polls it: one task, no channels, no extra wake-ups.
//! Only the HTTP/1.1 client side is ours; parsing of heads is `httparse`'s (the parser hyper
//! uses), the client-facing server is hyper's.
//!
//! Framing follows RFC 9112 section 6.3: no body for HEAD, 1xx, 204 and 304; chunked when the
//! last transfer coding is chunked (Content-Length is then ignored and the connection is not
//! reused); otherwise Content-Length; otherwise the body runs to connection close.
//!
//! Invariants:
//! * A connection is reused only after a response that ended exactly at its framing, with
//!   no unsolicited bytes after it, on HTTP/1.1 without `Connection: close` (or HTTP/1.0
//!   with `keep-alive`), and after a request whose body was sent completely.
//! * Nothing here panics on any bytes a member sends; malformed input is an [`H1Error`].

use std::io;
use std::ops::Range;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::body::ReqBody;

/// Largest response head (status line and headers) accepted from a member.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
pub const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (with extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// Read granularity.
const READ_CHUNK: usize = 16 * 1024;
/// Full bodies up to this size are written in the same syscall as the head.
const INLINE_BODY: usize = 16 * 1024;

/// What went wrong talking to a member.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// Writing the request failed.
    #[error("writing the request failed: {0}")]
    Write(io::Error),
    /// Reading the response failed.
    #[error("reading the response failed: {0}")]
    Read(io::Error),
    /// The member closed the connection before sending any response byte.
    #[error("the member closed the connection before answering")]
    ClosedBeforeResponse,
    /// The member closed the connection in the middle of a response.
    #[error("the member closed the connection in the middle of the response")]
    ClosedEarly,
    /// The response head is malformed.
    #[error("invalid response from the member: {0}")]
    Invalid(&'static str),
    /// The response head is too large.
    #[error("the response head exceeds {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The client's request body failed (client went away, sent garbage, or too much).
    #[error("the client's request body failed: {0}")]
    ClientBody(crate::body::BoxError),
}

/// One idle-able connection to a member.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    wbuf: Vec<u8>,
}

/// The head of a request, borrowed from the caller so a retry can reuse it unchanged.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// Method.
    pub method: &'a Method,
    /// Origin-form target (path and query).
    pub uri: &'a Uri,
    /// Headers, hop-by-hop already removed; Content-Length/Transfer-Encoding are ignored
    /// here (the body decides framing).
    pub headers: &'a HeaderMap,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Header fields (hop-by-hop ones included; the caller strips them).
    pub headers: HeaderMap,
}

/// How the response body is delimited.
#[derive(Debug)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes remain.
    Length(u64),
    /// Chunked transfer coding.
    Chunked(ChunkedDecoder),
    /// Until the member closes the connection.
    Close,
}

/// A failed exchange and how far it got.
#[derive(Debug)]
pub struct SendError {
    /// What failed.
    pub error: H1Error,
    /// Whether any request byte may have reached the member (if not, the request can be
    /// sent again anywhere, whatever its method).
    pub written: bool,
}

/// A completed exchange up to the response head.
#[derive(Debug)]
pub struct Exchange {
    /// The response head.
    pub head: ResponseHead,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether the connection may be reused after the body.
    pub keep_alive: bool,
}

impl Conn {
    /// Wrap a connected socket.
    pub fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(1024),
        }
    }

    /// Whether an idle connection is still usable, without a syscall in the common case:
    /// tokio clears a socket's read readiness when a read drains it, so readiness on an
    /// idle connection means the member closed it, reset it or sent unsolicited bytes
    /// (only then is one non-blocking read made to tell those apart from a stale flag).
    pub fn looks_alive(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// The socket and any bytes already read past the response head (after `101`).
    pub fn into_parts(self) -> (TcpStream, Bytes) {
        (self.io, self.buf.freeze())
    }

    /// Send a request and read the response head (skipping interim 1xx answers other than
    /// 101). `body` is only consumed if it is a stream; a buffered body stays intact for a
    /// retry.
    pub async fn send(
        &mut self,
        head: RequestHead<'_>,
        body: &mut ReqBody,
    ) -> Result<Exchange, SendError> {
        // An idle connection's buffer is empty (leftovers forbid reuse).
        debug_assert!(self.buf.is_empty());
        let mut written = false;
        let result = self.exchange(head, body, &mut written).await;
        result.map_err(|error| SendError { error, written })
    }

    async fn exchange(
        &mut self,
        head: RequestHead<'_>,
        body: &mut ReqBody,
        written: &mut bool,
    ) -> Result<Exchange, H1Error> {
        let mut body_complete = true;
        self.wbuf.clear();
        encode_head(&mut self.wbuf, head, body);
        match body {
            ReqBody::Empty => {
                *written = true;
                self.io
                    .write_all(&self.wbuf)
                    .await
                    .map_err(H1Error::Write)?;
            }
            ReqBody::Full(b) if b.len() <= INLINE_BODY => {
                self.wbuf.extend_from_slice(b);
                *written = true;
                self.io
                    .write_all(&self.wbuf)
                    .await
                    .map_err(H1Error::Write)?;
            }
            ReqBody::Full(b) => {
                *written = true;
                self.io
                    .write_all(&self.wbuf)
                    .await
                    .map_err(H1Error::Write)?;
                self.io.write_all(b).await.map_err(H1Error::Write)?;
            }
            ReqBody::Stream { .. } => {
                *written = true;
                self.io
                    .write_all(&self.wbuf)
                    .await
                    .map_err(H1Error::Write)?;
                body_complete = self.write_stream(body).await?;
            }
        }
        let response = self.read_head(head.method).await?;
        Ok(Exchange {
            keep_alive: response.keep_alive && body_complete,
            head: response.head,
            framing: response.framing,
        })
    }

    /// Stream the client's body (chunk-encoded unless it declared a length). Stops early if
    /// the member starts answering before the body is complete; returns whether the body
    /// was sent completely.
    async fn write_stream(&mut self, body: &mut ReqBody) -> Result<bool, H1Error> {
        let ReqBody::Stream {
            head,
            rest,
            seen,
            limit,
            declared,
            too_large,
        } = body
        else {
            return Ok(true);
        };
        let chunked = declared.is_none();
        if let Some(h) = head.take() {
            self.write_data(&h, chunked).await?;
        }
        loop {
            let frame = tokio::select! {
                biased;
                // The member answered early (e.g. 413 or 401 before reading the upload):
                // stop sending and read its answer. Readiness alone may be stale, so it is
                // confirmed by a non-blocking read whose bytes start the response.
                r = self.io.readable() => {
                    r.map_err(H1Error::Read)?;
                    self.buf.reserve(READ_CHUNK);
                    match self.io.try_read_buf(&mut self.buf) {
                        Ok(0) => return Err(H1Error::ClosedBeforeResponse),
                        Ok(_) => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(H1Error::Read(e)),
                    }
                }
                f = rest.frame() => f,
            };
            match frame {
                None => break,
                Some(Err(e)) => return Err(H1Error::ClientBody(Box::new(e))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        *seen += data.len() as u64;
                        if *seen > *limit {
                            too_large.store(true, std::sync::atomic::Ordering::Relaxed);
                            return Err(H1Error::ClientBody(Box::new(crate::body::BodyTooLarge {
                                limit: *limit,
                            })));
                        }
                        self.write_data(&data, chunked).await?;
                    }
                }
            }
        }
        if chunked {
            self.io
                .write_all(b"0\r\n\r\n")
                .await
                .map_err(H1Error::Write)?;
        }
        Ok(true)
    }

    async fn write_data(&mut self, data: &[u8], chunked: bool) -> Result<(), H1Error> {
        if data.is_empty() {
            return Ok(());
        }
        if chunked {
            let size = format!("{:x}\r\n", data.len());
            self.io
                .write_all(size.as_bytes())
                .await
                .map_err(H1Error::Write)?;
            self.io.write_all(data).await.map_err(H1Error::Write)?;
            self.io.write_all(b"\r\n").await.map_err(H1Error::Write)
        } else {
            self.io.write_all(data).await.map_err(H1Error::Write)
        }
    }

    async fn read_head(&mut self, method: &Method) -> Result<Parsed, H1Error> {
        let mut got_any = false;
        loop {
            if !self.buf.is_empty() {
                got_any = true;
                if let Some((n, parsed)) = parse_response(&self.buf, method)? {
                    let head_bytes = self.buf.split_to(n).freeze();
                    let head = parsed.build(&head_bytes)?;
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS
                    {
                        // 100 Continue, 103 Early Hints: not the answer; read on.
                        continue;
                    }
                    let (framing, keep_alive) = framing_of(&head, method)?;
                    return Ok(Parsed {
                        head,
                        framing,
                        keep_alive,
                    });
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(H1Error::HeadTooLarge);
                }
            }
            self.buf.reserve(READ_CHUNK);
            let n = read_buf(&mut self.io, &mut self.buf).await.map_err(|e| {
                if got_any {
                    H1Error::Read(e)
                } else {
                    match e.kind() {
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                            H1Error::ClosedBeforeResponse
                        }
                        _ => H1Error::Read(e),
                    }
                }
            })?;
            if n == 0 {
                return Err(if got_any {
                    H1Error::ClosedEarly
                } else {
                    H1Error::ClosedBeforeResponse
                });
            }
        }
    }

    /// Poll the next piece of the response body. `Ok(None)` at the end; `done` is then
    /// true when the connection is clean for reuse (exact end, no leftover bytes).
    pub fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        framing: &mut Framing,
    ) -> Poll<Result<Option<BodyPiece>, H1Error>> {
        loop {
            match framing {
                Framing::Empty => return Poll::Ready(Ok(None)),
                Framing::Length(0) => return Poll::Ready(Ok(None)),
                Framing::Length(rem) => {
                    if !self.buf.is_empty() {
                        let n = usize::try_from(*rem)
                            .unwrap_or(usize::MAX)
                            .min(self.buf.len());
                        *rem -= n as u64;
                        return Poll::Ready(Ok(Some(BodyPiece::Data(
                            self.buf.split_to(n).freeze(),
                        ))));
                    }
                }
                Framing::Close => {
                    if !self.buf.is_empty() {
                        let all = self.buf.split().freeze();
                        return Poll::Ready(Ok(Some(BodyPiece::Data(all))));
                    }
                }
                Framing::Chunked(dec) => match dec.decode(&mut self.buf)? {
                    Decoded::Data(d) => return Poll::Ready(Ok(Some(BodyPiece::Data(d)))),
                    Decoded::Done(trailers) => {
                        *framing = Framing::Empty;
                        return Poll::Ready(Ok(trailers.map(BodyPiece::Trailers)));
                    }
                    Decoded::NeedMore => {}
                },
            }
            // Need more bytes.
            self.buf.reserve(READ_CHUNK);
            let n = match tokio_util::io::poll_read_buf(
                std::pin::Pin::new(&mut self.io),
                cx,
                &mut self.buf,
            ) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(H1Error::Read(e))),
                Poll::Ready(Ok(n)) => n,
            };
            if n == 0 {
                return match framing {
                    Framing::Close => {
                        *framing = Framing::Empty;
                        Poll::Ready(Ok(None))
                    }
                    _ => Poll::Ready(Err(H1Error::ClosedEarly)),
                };
            }
        }
    }

    /// Whether bytes beyond the response were received (the connection must not be reused).
    pub fn has_leftover(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// A piece of a response body.
#[derive(Debug)]
pub enum BodyPiece {
    /// Data.
    Data(Bytes),
    /// Trailer fields (chunked bodies), always last.
    Trailers(HeaderMap),
}

struct Parsed {
    head: ResponseHead,
    framing: Framing,
    keep_alive: bool,
}

async fn read_buf(io: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    std::future::poll_fn(|cx| tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut *io), cx, buf))
        .await
}

/// Write `METHOD target HTTP/1.1`, the headers, and the framing header the body needs.
pub fn encode_head(out: &mut Vec<u8>, head: RequestHead<'_>, body: &ReqBody) {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    match head.uri.path_and_query() {
        Some(pq) => out.extend_from_slice(pq.as_str().as_bytes()),
        None => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in head.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match body {
        ReqBody::Empty => {
            // Servers may insist on a length for methods that normally carry a body.
            if matches!(*head.method, Method::POST | Method::PUT | Method::PATCH) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        ReqBody::Full(b) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(b.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        ReqBody::Stream { declared, .. } => match declared {
            Some(n) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        },
    }
    out.extend_from_slice(b"\r\n");
}

/// Parse a response head at the start of `buf`: `Ok(None)` while incomplete.
fn parse_response(buf: &[u8], _method: &Method) -> Result<Option<(usize, HeadRanges)>, H1Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(H1Error::Invalid("too many header fields"));
        }
        Err(_) => return Err(H1Error::Invalid("malformed status line or header field")),
    };
    let code = resp.code.ok_or(H1Error::Invalid("no status code"))?;
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buf.as_ptr() as usize;
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let fields = resp
        .headers
        .iter()
        .map(|h| (range(h.name.as_bytes()), range(h.value)))
        .collect();
    Ok(Some((
        n,
        HeadRanges {
            code,
            version,
            fields,
        },
    )))
}

/// Offsets of a parsed head's parts, so that the header values can be zero-copy slices of
/// the frozen head bytes.
struct HeadRanges {
    code: u16,
    version: Version,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl HeadRanges {
    fn build(self, bytes: &Bytes) -> Result<ResponseHead, H1Error> {
        let status = StatusCode::from_u16(self.code)
            .map_err(|_| H1Error::Invalid("status code out of range"))?;
        let mut headers = HeaderMap::with_capacity(self.fields.len());
        for (name, value) in self.fields {
            let name = HeaderName::from_bytes(&bytes[name])
                .map_err(|_| H1Error::Invalid("invalid header name"))?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(value))
                .map_err(|_| H1Error::Invalid("invalid header value"))?;
            headers.append(name, value);
        }
        Ok(ResponseHead {
            status,
            version: self.version,
            headers,
        })
    }
}

/// Body framing and reusability of a response (RFC 9112 section 6.3).
fn framing_of(head: &ResponseHead, method: &Method) -> Result<(Framing, bool), H1Error> {
    let h = &head.headers;
    let conn_has = |token: &str| {
        h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    let mut keep_alive = match head.version {
        Version::HTTP_10 => conn_has("keep-alive"),
        _ => !conn_has("close"),
    };
    let status = head.status.as_u16();
    if *method == Method::HEAD || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok((Framing::Empty, keep_alive && status != 101));
    }
    let te: Vec<&HeaderValue> = h.get_all(header::TRANSFER_ENCODING).iter().collect();
    if !te.is_empty() {
        let last_is_chunked = te
            .last()
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.rsplit(',').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        if h.contains_key(header::CONTENT_LENGTH) {
            // Both present: a smuggling vector; decode by Transfer-Encoding, never reuse.
            keep_alive = false;
        }
        return Ok(if last_is_chunked {
            (Framing::Chunked(ChunkedDecoder::default()), keep_alive)
        } else {
            (Framing::Close, false)
        });
    }
    let mut length: Option<u64> = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        for part in v
            .to_str()
            .map_err(|_| H1Error::Invalid("invalid Content-Length"))?
            .split(',')
        {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| H1Error::Invalid("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Invalid("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), keep_alive),
        None => (Framing::Close, false),
    })
}

/// Incremental decoder of the chunked transfer coding.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers,
}

/// Result of one decoding step.
#[derive(Debug)]
pub enum Decoded {
    /// Chunk data.
    Data(Bytes),
    /// More input is needed.
    NeedMore,
    /// The body ended (with trailers, if any).
    Done(Option<HeaderMap>),
}

impl ChunkedDecoder {
    /// Decode from the front of `buf`, consuming what it uses.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(eol) = find_eol(buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(H1Error::Invalid("chunk size line too long"));
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_chunk_size(&buf[..eol.start])?;
                    buf.advance(eol.end);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(rem) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(rem).unwrap_or(usize::MAX).min(buf.len());
                    let left = rem - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                ChunkState::DataEnd => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                    } else if buf.starts_with(b"\n") {
                        buf.advance(1);
                    } else if buf.is_empty() || buf[..] == b"\r"[..] {
                        return Ok(Decoded::NeedMore);
                    } else {
                        return Err(H1Error::Invalid("chunk data not followed by CRLF"));
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    // Empty trailer section: just the final CRLF.
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        return Ok(Decoded::Done(None));
                    }
                    if buf.starts_with(b"\n") {
                        buf.advance(1);
                        return Ok(Decoded::Done(None));
                    }
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((n, parsed))) => {
                            let mut map = HeaderMap::with_capacity(parsed.len());
                            for f in parsed {
                                let name = HeaderName::from_bytes(f.name.as_bytes())
                                    .map_err(|_| H1Error::Invalid("invalid trailer name"))?;
                                let value = HeaderValue::from_bytes(f.value)
                                    .map_err(|_| H1Error::Invalid("invalid trailer value"))?;
                                map.append(name, value);
                            }
                            buf.advance(n);
                            return Ok(Decoded::Done(Some(map)));
                        }
                        Ok(httparse::Status::Partial) => {
                            if buf.len() > MAX_HEAD {
                                return Err(H1Error::HeadTooLarge);
                            }
                            return Ok(Decoded::NeedMore);
                        }
                        Err(_) => return Err(H1Error::Invalid("malformed trailer section")),
                    }
                }
            }
        }
    }
}

/// The line ending at the front of `buf`: `start..end` where `start` is the line's length
/// and `end` is past its terminator (CRLF or bare LF).
fn find_eol(buf: &[u8]) -> Option<Range<usize>> {
    let lf = buf.iter().position(|&b| b == b'\n')?;
    let start = if lf > 0 && buf[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    Some(start..lf + 1)
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    // chunk-size [ chunk-ext ]: hex digits, then optional whitespace / extensions.
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits_end == 0 {
        return Err(H1Error::Invalid("chunk size is not hexadecimal"));
    }
    if digits_end > 16 {
        return Err(H1Error::Invalid("chunk size too large"));
    }
    let rest = &line[digits_end..];
    if !rest.is_empty() && !matches!(rest[0], b';' | b' ' | b'\t') {
        return Err(H1Error::Invalid("garbage after chunk size"));
    }
    let text = std::str::from_utf8(&line[..digits_end])
        .map_err(|_| H1Error::Invalid("chunk size is not hexadecimal"))?;
    u64::from_str_radix(text, 16).map_err(|_| H1Error::Invalid("chunk size too large"))
}

/// Decode a whole chunked body in one buffer (for tests and fuzzing): the data and the
/// trailers, or the error.
pub fn decode_chunked_all(input: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>, usize), H1Error> {
    let mut buf = BytesMut::from(input);
    let mut dec = ChunkedDecoder::default();
    let mut out = Vec::new();
    loop {
        match dec.decode(&mut buf)? {
            Decoded::Data(d) => out.extend_from_slice(&d),
            Decoded::NeedMore => return Err(H1Error::ClosedEarly),
            Decoded::Done(t) => return Ok((out, t, input.len() - buf.len())),
        }
    }
}

/// Parse a response head from bytes (for tests and fuzzing).
pub fn parse_head_for_test(
    input: &[u8],
    method: &Method,
) -> Result<Option<(ResponseHead, Framing, bool)>, H1Error> {
    match parse_response(input, method)? {
        None => Ok(None),
        Some((n, ranges)) => {
            let bytes = Bytes::copy_from_slice(&input[..n]);
            let head = ranges.build(&bytes)?;
            let (framing, keep_alive) = framing_of(&head, method)?;
            Ok(Some((head, framing, keep_alive)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(s: &str) -> (ResponseHead, Framing, bool) {
        parse_head_for_test(s.as_bytes(), &Method::GET)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn framing_rules() {
        let (h, f, ka) = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\n");
        assert_eq!(h.status, 200);
        assert_eq!(h.headers["x-a"], "b");
        assert!(matches!(f, Framing::Length(5)) && ka);
        let (_, f, ka) = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert!(matches!(f, Framing::Chunked(_)) && ka);
        let (_, f, ka) =
            head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n");
        assert!(
            matches!(f, Framing::Chunked(_)) && !ka,
            "TE + CL must not be reused"
        );
        let (_, f, ka) = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert!(matches!(f, Framing::Close) && !ka);
        let (_, f, ka) = head("HTTP/1.1 200 OK\r\n\r\n");
        assert!(matches!(f, Framing::Close) && !ka);
        let (_, f, ka) = head("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n");
        assert!(matches!(f, Framing::Empty) && ka);
        let (_, f, ka) = head("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n");
        assert!(matches!(f, Framing::Length(1)) && !ka);
        let (_, _, ka) = head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n");
        assert!(!ka, "HTTP/1.0 without keep-alive closes");
        let (_, _, ka) =
            head("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n");
        assert!(ka);
        let (_, f, _) = head("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n");
        assert!(matches!(f, Framing::Length(7)));
        let r = parse_head_for_test(
            b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\ncontent-length: 8\r\n\r\n",
            &Method::GET,
        );
        assert!(matches!(r, Err(H1Error::Invalid(_))));
        let r = parse_head_for_test(
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            &Method::GET,
        );
        assert!(matches!(r, Err(H1Error::Invalid(_))));
        let (_, f, _) = parse_head_for_test(
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
            &Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(f, Framing::Empty), "HEAD has no body");
        assert!(
            parse_head_for_test(b"HTTP/1.1 200 OK\r\nx: y\r\n", &Method::GET)
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            parse_head_for_test(b"HTTX/1.1 200 OK\r\n\r\n", &Method::GET),
            Err(H1Error::Invalid(_))
        ));
    }

    #[test]
    fn chunked_decoding() {
        let (data, trailers, used) =
            decode_chunked_all(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 9\r\n\r\nNEXT")
                .unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["x-sum"], "9");
        assert_eq!(used, 42);
        let (data, trailers, _) = decode_chunked_all(b"3\nabc\n0\n\n").unwrap();
        assert_eq!((data.as_slice(), trailers.is_none()), (&b"abc"[..], true));
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"11111111111111111\r\n",
            b"5x\r\n",
        ] {
            assert!(
                matches!(decode_chunked_all(bad), Err(H1Error::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            decode_chunked_all(b"5\r\nhel"),
            Err(H1Error::ClosedEarly)
        ));
    }

    #[test]
    fn request_heads_are_encoded_with_our_framing() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a"));
        h.insert("content-length", HeaderValue::from_static("999"));
        h.insert("expect", HeaderValue::from_static("100-continue"));
        let uri: Uri = "/p?q=1".parse().unwrap();
        let mut out = Vec::new();
        let head = RequestHead {
            method: &Method::PUT,
            uri: &uri,
            headers: &h,
        };
        encode_head(&mut out, head, &ReqBody::Full(Bytes::from_static(b"abc")));
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "PUT /p?q=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n"
        );
        out.clear();
        encode_head(
            &mut out,
            RequestHead {
                method: &Method::GET,
                ..head
            },
            &ReqBody::Empty,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nhost: a\r\n\r\n"
        );
    }

    proptest! {
        /// Any way of chunking a body and splitting the stream decodes to the same bytes.
        #[test]
        fn chunked_roundtrip(body in proptest::collection::vec(any::<u8>(), 0..2000),
                             sizes in proptest::collection::vec(1usize..300, 1..20),
                             split in 1usize..64) {
            let mut enc = Vec::new();
            let mut rest = &body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                enc.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                enc.extend_from_slice(&rest[..n]);
                enc.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            enc.extend_from_slice(b"0\r\n\r\n");
            // Feed in pieces of `split` bytes, as a socket would.
            let mut dec = ChunkedDecoder::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut done = false;
            for piece in enc.chunks(split) {
                buf.extend_from_slice(piece);
                loop {
                    match dec.decode(&mut buf).unwrap() {
                        Decoded::Data(d) => out.extend_from_slice(&d),
                        Decoded::NeedMore => break,
                        Decoded::Done(_) => { done = true; break; }
                    }
                }
            }
            prop_assert!(done);
            prop_assert_eq!(out, body);
        }

        /// Arbitrary bytes from a member never panic the head parser or the decoder.
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_head_for_test(&input, &Method::GET);
            let _ = decode_chunked_all(&input);
            let mut with_status = b"HTTP/1.1 200 OK\r\n".to_vec();
            with_status.extend_from_slice(&input);
            let _ = parse_head_for_test(&with_status, &Method::GET);
        }
    }
}
