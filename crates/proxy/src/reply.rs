//! Answers the proxy writes itself: a plain-text body naming the problem, an
//! `x-hastack-error` header with a machine-readable code (an [`ErrorKind`] name, or a guard's
//! refusal reason), `Retry-After` when the proxy knows when to come back.

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::RespBody;
use crate::failure::ErrorKind;

/// The header naming why the proxy answered itself.
pub static ERROR_HEADER: HeaderName = HeaderName::from_static("x-hastack-error");

/// An answer for `kind` with its usual status.
pub fn error(kind: ErrorKind, message: String) -> Response<RespBody> {
    plain(kind.status(), kind.as_str(), message, None)
}

/// An answer with `status`, `x-hastack-error: code`, a plain-text `message` and, when
/// known, `Retry-After` in seconds.
pub fn plain(
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
) -> Response<RespBody> {
    let body = format!(
        "{} {}: {message}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut r = Response::new(RespBody::local(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(ERROR_HEADER.clone(), HeaderValue::from_static(code));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(s) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_their_kind() {
        let r = error(ErrorKind::TryTimeout, "slow".into());
        assert_eq!(r.status(), 504);
        assert_eq!(r.headers()["x-hastack-error"], "try_timeout");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let r = plain(StatusCode::SERVICE_UNAVAILABLE, "shed", "x".into(), Some(2));
        assert_eq!(r.headers()["retry-after"], "2");
    }
}
