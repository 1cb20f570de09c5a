//! The client's response from a member's answer: hop-by-hop headers removed and the body
//! read from the member's connection as the client consumes it; or, after `101 Switching
//! Protocols`, the two connections spliced; plus the sticky-session cookie.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::headers::strip_hop_by_hop;
use crate::body::RespBody;
use crate::config::StickySpec;
use crate::h1;
use crate::lease::Lease;

/// Turn an upstream response head into the client's response: hop-by-hop headers go, the
/// body is read from the member's connection as the client consumes it.
pub fn finish_response(exchange: h1::Exchange, mut lease: Lease) -> Response<RespBody> {
    let h1::Exchange {
        head,
        framing,
        keep_alive,
    } = exchange;
    let mut headers = head.headers;
    strip_hop_by_hop(&mut headers);
    let empty = matches!(framing, h1::Framing::Empty | h1::Framing::Length(0));
    if empty {
        // Nothing more to read: settle now (the client may never poll an empty body).
        let clean = lease.conn_mut().is_some_and(|c| !c.has_leftover());
        if keep_alive && clean {
            lease.mark_reusable();
        }
    }
    let mut resp = Response::new(RespBody::Upstream {
        lease,
        framing,
        keep_alive,
        finished: empty,
    });
    *resp.status_mut() = head.status;
    *resp.headers_mut() = headers;
    resp
}

/// A `101 Switching Protocols` from the member: answer the client with it and, once the
/// client's side is upgraded too, splice the two connections.
pub fn upgrade_response(
    exchange: h1::Exchange,
    mut lease: Lease,
    client: Option<hyper::upgrade::OnUpgrade>,
) -> Response<RespBody> {
    let conn = lease.take_conn();
    drop(lease);
    if let (Some(conn), Some(client)) = (conn, client) {
        tokio::spawn(splice_upgrade(client, conn));
    }
    let mut resp = Response::new(RespBody::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = exchange.head.headers;
    resp
}

async fn splice_upgrade(client: hyper::upgrade::OnUpgrade, upstream: h1::Conn) {
    use tokio::io::AsyncWriteExt;
    let client = match client.await {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "client upgrade failed");
            return;
        }
    };
    let mut c = TokioIo::new(client);
    let (mut u, early) = upstream.into_parts();
    // Bytes the member sent right after its 101 belong to the client.
    if !early.is_empty() && c.write_all(&early).await.is_err() {
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
        debug!(error = %e, "upgraded connection ended with an error");
    }
}

/// Bind the client to member `token` with the pool's sticky cookie.
pub fn set_sticky_cookie(resp: &mut Response<RespBody>, s: &StickySpec, token: &str) {
    let mut c = format!("{}={token}; Path=/; HttpOnly; SameSite=Lax", s.cookie);
    if let Some(age) = s.max_age {
        c.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}
