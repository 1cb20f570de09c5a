//! HTTP/1.1 heads: the request head we write (with our own framing header), the response
//! head we parse (with `httparse`, the parser hyper uses; header values are zero-copy slices
//! of the received bytes), and the response's body framing and reusability (RFC 9112
//! section 6.3): no body for HEAD, 1xx, 204 and 304; chunked when the last transfer coding
//! is chunked (Content-Length is then ignored and the connection is not reused); otherwise
//! Content-Length; otherwise the body runs to connection close.

use std::ops::Range;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

use super::chunked::ChunkedDecoder;
use super::error::{H1Error, MAX_HEADERS};
use super::reqbody::ReqBody;

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
pub(super) fn parse_response(
    buf: &[u8],
    _method: &Method,
) -> Result<Option<(usize, HeadRanges)>, H1Error> {
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
pub(super) struct HeadRanges {
    code: u16,
    version: Version,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl HeadRanges {
    pub(super) fn build(self, bytes: &Bytes) -> Result<ResponseHead, H1Error> {
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
pub(super) fn framing_of(head: &ResponseHead, method: &Method) -> Result<(Framing, bool), H1Error> {
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
        /// Arbitrary bytes from a member never panic the head parser or the decoder.
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_head_for_test(&input, &Method::GET);
            let _ = crate::h1::decode_chunked_all(&input);
            let mut with_status = b"HTTP/1.1 200 OK\r\n".to_vec();
            with_status.extend_from_slice(&input);
            let _ = parse_head_for_test(&with_status, &Method::GET);
        }
    }
}
