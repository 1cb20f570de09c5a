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
//! The parts, one job each: [`Conn`] (this file: the connection, writing a request and
//! reading its answer), [`head`] (encoding request heads, parsing response heads, framing),
//! [`chunked`] (the chunked decoder), [`reqbody`] (what is sent), [`error`] (what can fail).
//!
//! Invariants:
//! * A connection is reused only after a response that ended exactly at its framing, with
//!   no unsolicited bytes after it, on HTTP/1.1 without `Connection: close` (or HTTP/1.0
//!   with `keep-alive`), and after a request whose body was sent completely.
//! * [`Conn::progress`] tells exactly how far an exchange got: `written` is set only once
//!   the kernel accepted a request byte, `answered` once a response byte arrived. Retry
//!   safety rests on it (`crate::failure`).
//! * Nothing here panics on any bytes a member sends; malformed input is an [`H1Error`].

pub mod chunked;
pub mod error;
pub mod head;
pub mod reqbody;

use std::io;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::HeaderMap;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::net::TcpStream;

pub use chunked::{ChunkedDecoder, Decoded, decode_chunked_all};
pub use error::{H1Error, MAX_HEAD, MAX_HEADERS};
pub use head::{Framing, RequestHead, ResponseHead, encode_head, parse_head_for_test};
pub use reqbody::{BodyTooLarge, BoxError, ReqBody};

use crate::failure::Progress;
use head::{framing_of, parse_response};

/// Read granularity.
const READ_CHUNK: usize = 16 * 1024;
/// Full bodies up to this size are written in the same syscall as the head.
const INLINE_BODY: usize = 16 * 1024;

/// One idle-able connection to a member.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    wbuf: Vec<u8>,
    /// A response head was read on this connection before (it is being reused).
    served: bool,
    /// How far the current exchange got.
    progress: Progress,
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
            served: false,
            progress: Progress::default(),
        }
    }

    /// Whether an idle connection is still usable, without a syscall in the common case:
    /// tokio clears a socket's read readiness when a read drains it, so readiness on an
    /// idle connection means the member closed it, reset it or sent unsolicited bytes
    /// (only then is one non-blocking read made to tell those apart from a stale flag).
    ///
    /// Readiness is only as fresh as the last turn of the worker's event loop: a close that
    /// reached the kernel since, or one still on the wire, is not seen here. That is the
    /// keep-alive race, handled by redoing the try (`crate::failure`); asking the kernel with
    /// a `MSG_PEEK` before every reuse was measured and did not make it rarer, because the
    /// closes that matter cross the request on the wire.
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

    /// How far the current (or last) exchange got.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// The socket and any bytes already read past the response head (after `101`).
    pub fn into_parts(self) -> (TcpStream, Bytes) {
        (self.io, self.buf.freeze())
    }

    /// Send a request and read the response head (skipping interim 1xx answers other than
    /// 101). `body` is only consumed if it is a stream; a buffered body stays intact for a
    /// retry. On failure, [`Conn::progress`] says how far it got.
    pub async fn send(
        &mut self,
        head: RequestHead<'_>,
        body: &mut ReqBody,
    ) -> Result<Exchange, H1Error> {
        // An idle connection's buffer is empty (leftovers forbid reuse).
        debug_assert!(self.buf.is_empty());
        self.progress = Progress {
            reused: self.served,
            written: false,
            answered: false,
        };
        let mut body_complete = true;
        self.wbuf.clear();
        encode_head(&mut self.wbuf, head, body);
        let wbuf = std::mem::take(&mut self.wbuf);
        let sent = match body {
            ReqBody::Full(b) if b.len() <= INLINE_BODY => {
                let mut wbuf = wbuf;
                wbuf.extend_from_slice(b);
                let r = self.write_all(&wbuf).await;
                self.wbuf = wbuf;
                r
            }
            ReqBody::Empty | ReqBody::Full(_) | ReqBody::Stream { .. } => {
                let r = self.write_all(&wbuf).await;
                self.wbuf = wbuf;
                r
            }
        };
        sent?;
        match body {
            ReqBody::Full(b) if b.len() > INLINE_BODY => self.write_all(b).await?,
            ReqBody::Stream { .. } => body_complete = self.write_stream(body).await?,
            _ => {}
        }
        let response = self.read_head(head.method).await?;
        self.served = true;
        Ok(Exchange {
            keep_alive: response.keep_alive && body_complete,
            head: response.head,
            framing: response.framing,
        })
    }

    /// Write all of `data`, recording in the progress once any byte was accepted.
    async fn write_all(&mut self, mut data: &[u8]) -> Result<(), H1Error> {
        use tokio::io::AsyncWriteExt;
        while !data.is_empty() {
            match self.io.write(data).await {
                Ok(0) => {
                    return Err(H1Error::Write(io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => {
                    self.progress.written = true;
                    data = &data[n..];
                }
                Err(e) => return Err(H1Error::Write(e)),
            }
        }
        Ok(())
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
                        Ok(_) => {
                            self.progress.answered = true;
                            return Ok(false);
                        }
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
                            return Err(H1Error::ClientBody(Box::new(BodyTooLarge {
                                limit: *limit,
                            })));
                        }
                        self.write_data(&data, chunked).await?;
                    }
                }
            }
        }
        if chunked {
            self.write_all(b"0\r\n\r\n").await?;
        }
        Ok(true)
    }

    async fn write_data(&mut self, data: &[u8], chunked: bool) -> Result<(), H1Error> {
        if data.is_empty() {
            return Ok(());
        }
        if chunked {
            let size = format!("{:x}\r\n", data.len());
            self.write_all(size.as_bytes()).await?;
            self.write_all(data).await?;
            self.write_all(b"\r\n").await
        } else {
            self.write_all(data).await
        }
    }

    async fn read_head(&mut self, method: &Method) -> Result<Parsed, H1Error> {
        loop {
            if !self.buf.is_empty() {
                self.progress.answered = true;
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
            let got_any = self.progress.answered;
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

    /// Poll the next piece of the response body. `Ok(None)` at the end of the body.
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
