//! The request body on its way upstream: nothing, a buffered body (read by reference, so
//! every try can send it again), or the client's stream (sent once), optionally behind an
//! already-read prefix.

use bytes::Bytes;
use hyper::body::Incoming;

/// Boxed error type of the client's body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client sent more body than the listener allows.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {limit} bytes")]
pub struct BodyTooLarge {
    /// The limit.
    pub limit: u64,
}

/// A request body on its way upstream.
#[derive(Debug)]
pub enum ReqBody {
    /// No body.
    Empty,
    /// A fully buffered body: every try sends it again.
    Full(Bytes),
    /// The client's body, streamed: sent at most once.
    Stream {
        /// Already-read prefix, sent first.
        head: Option<Bytes>,
        /// The rest of the client's body.
        rest: Incoming,
        /// Bytes passed so far.
        seen: u64,
        /// Limit; crossing it fails the try with [`BodyTooLarge`].
        limit: u64,
        /// Length the client declared (Content-Length), if any; without it the body is sent
        /// chunked.
        declared: Option<u64>,
    },
}

impl ReqBody {
    /// Whether another try can send this body again (it is not a stream).
    pub fn resendable(&self) -> bool {
        !matches!(self, ReqBody::Stream { .. })
    }
}
