//! Turning the client's request into what is sent upstream ([`Outgoing`]), once per
//! request, before the first try: the body buffered when a retry could resend it (streamed
//! otherwise), headers rewritten, the hash key and sticky cookie read, an upgrade's client
//! half taken out of the request.

use bytes::{Bytes, BytesMut};
use http::header::HeaderMap;
use http::{Method, Request, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::conn_info::ConnInfo;
use super::headers::{
    content_length, cookie_value, hash_of, is_upgrade, origin_form, upstream_headers,
};
use crate::config::PoolSpec;
use crate::failure::Failure;
use crate::h1::ReqBody;

/// A request ready for its tries.
#[derive(Debug)]
pub struct Outgoing {
    /// Method.
    pub method: Method,
    /// Origin-form target.
    pub uri: Uri,
    /// Headers as sent upstream.
    pub headers: HeaderMap,
    /// The body: buffered (resendable) or streamed.
    pub body: ReqBody,
    /// Whether this is an HTTP/1.1 upgrade (sent on a fresh connection, spliced after 101).
    pub upgrade: bool,
    /// The client's half of an upgrade.
    pub on_upgrade: Option<OnUpgrade>,
    /// Whether a try that was written may be sent again: an idempotent method whose body is
    /// buffered, and not an upgrade.
    pub resendable: bool,
    /// Consistent-hashing key, for hashing pools.
    pub hash: Option<u64>,
    /// The sticky cookie's value, for pools with cookie affinity.
    pub sticky_cookie: Option<String>,
}

/// Why a request cannot be forwarded at all, with the message for the client.
#[derive(Debug)]
pub struct Refused {
    /// The failure (the client's).
    pub failure: Failure,
    /// What to tell the client.
    pub message: String,
}

/// What the listener allows and adds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body.
    pub max_body: u64,
    /// Whether to add `X-Forwarded-For` / `-Proto`.
    pub forwarded: bool,
}

/// Prepare `req` for pool `spec`: refuse a body over the limit, buffer a body that a retry
/// could resend (idempotent methods, up to `retry.buffer_body`), rewrite the headers.
pub async fn prepare(
    req: Request<Incoming>,
    spec: &PoolSpec,
    conn: &ConnInfo,
    limits: Limits,
) -> Result<Outgoing, Refused> {
    let (mut parts, body) = req.into_parts();
    let declared = content_length(&parts.headers);
    if let Some(len) = declared.filter(|l| *l > limits.max_body) {
        return Err(Refused {
            failure: Failure::client_body(true),
            message: format!(
                "request body of {len} bytes exceeds the limit of {} bytes",
                limits.max_body
            ),
        });
    }
    let upgrade = is_upgrade(&parts.headers, parts.version);
    let idempotent = is_idempotent(&parts.method);
    let body = if body.is_end_stream() {
        ReqBody::Empty
    } else if idempotent && !upgrade {
        match read_prefix(body, spec.retry.buffer_body, limits.max_body).await {
            Ok(Prefix::Complete(b)) => ReqBody::Full(b),
            Ok(Prefix::Partial(head, rest)) => ReqBody::Stream {
                seen: head.len() as u64,
                head: Some(head),
                rest,
                limit: limits.max_body,
                declared,
            },
            Err(PrefixError::TooLarge) => {
                return Err(Refused {
                    failure: Failure::client_body(true),
                    message: format!(
                        "request body exceeds the limit of {} bytes",
                        limits.max_body
                    ),
                });
            }
            Err(PrefixError::Client(e)) => {
                return Err(Refused {
                    failure: Failure::client_body(false),
                    message: format!("cannot read the request body: {e}"),
                });
            }
        }
    } else {
        ReqBody::Stream {
            head: None,
            rest: body,
            seen: 0,
            limit: limits.max_body,
            declared,
        }
    };
    let resendable = idempotent && !upgrade && body.resendable();
    let hash = spec
        .hash_key
        .as_ref()
        .and_then(|k| hash_of(k, &parts, conn.peer));
    let sticky_cookie = spec
        .sticky
        .as_ref()
        .and_then(|s| cookie_value(&parts.headers, &s.cookie).map(str::to_string));
    let headers = upstream_headers(&mut parts, conn, limits.forwarded, upgrade);
    let uri = origin_form(&parts.uri);
    let on_upgrade = upgrade.then(|| {
        // The client's upgrade future lives in the request extensions.
        let mut shell = Request::new(());
        *shell.extensions_mut() = std::mem::take(&mut parts.extensions);
        hyper::upgrade::on(&mut shell)
    });
    Ok(Outgoing {
        method: parts.method,
        uri,
        headers,
        body,
        upgrade,
        on_upgrade,
        resendable,
        hash,
        sticky_cookie,
    })
}

/// GET, HEAD, OPTIONS, PUT, DELETE, TRACE (RFC 9110 section 9.2.2).
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

enum Prefix {
    Complete(Bytes),
    Partial(Bytes, Incoming),
}

enum PrefixError {
    TooLarge,
    Client(hyper::Error),
}

/// Read the body up to `limit` bytes: all of it if it fits (resendable), else what was read
/// plus the rest of the stream.
async fn read_prefix(
    mut body: Incoming,
    limit: usize,
    max_body: u64,
) -> Result<Prefix, PrefixError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(PrefixError::Client)?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() as u64 > max_body {
                return Err(PrefixError::TooLarge);
            }
            if buf.len() > limit {
                return Ok(Prefix::Partial(buf.freeze(), body));
            }
        }
        // Request trailers are not forwarded (rare in practice; documented).
    }
    Ok(Prefix::Complete(buf.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::TRACE,
        ] {
            assert!(is_idempotent(&m));
        }
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
