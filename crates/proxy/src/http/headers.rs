//! Request headers on their way upstream, and what is read from them: hop-by-hop fields
//! removed (RFC 9110 section 7.6.1), `Host` and `X-Forwarded-*` set, the origin-form target,
//! the request's host for routing, cookies, the hash key of consistent-hashing pools.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri, Version};

use super::conn_info::ConnInfo;
use crate::config::HashKey;

pub fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn is_upgrade(h: &HeaderMap, v: Version) -> bool {
    v == Version::HTTP_11 && h.contains_key(header::UPGRADE) && connection_has(h, "upgrade")
}

fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// The request's host, lower case, without port (borrowed when already lower case).
pub fn request_host<B>(req: &Request<B>) -> std::borrow::Cow<'_, str> {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.host())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let host = if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port.
        raw.split_once(']')
            .map_or(raw, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        raw.split(':').next().unwrap_or(raw)
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the (few) names present instead of a hashed lookup per hop-by-hop
    // name: most messages carry none of them, and this runs twice per request.
    let present = h.keys().any(|k| HOP_BY_HOP.contains(k));
    if !present {
        return;
    }
    // Headers named by Connection are hop-by-hop too.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The headers sent upstream: the client's minus hop-by-hop, plus Host (from the authority
/// for HTTP/2 clients) and X-Forwarded-*; upgrade requests keep Connection/Upgrade.
pub fn upstream_headers(
    parts: &mut http::request::Parts,
    conn: &ConnInfo,
    forwarded: bool,
    upgrade: bool,
) -> HeaderMap {
    let mut h = std::mem::take(&mut parts.headers);
    let upgrade_to = if upgrade {
        h.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(&mut h);
    if let Some(u) = upgrade_to {
        h.insert(header::UPGRADE, u);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if !h.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                h.insert(header::HOST, v);
            }
        }
    }
    if forwarded {
        match h.get(&XFF).and_then(|v| v.to_str().ok()) {
            Some(prev) => {
                let xff = format!("{prev}, {}", conn.peer.ip());
                if let Ok(v) = HeaderValue::from_str(&xff) {
                    h.insert(XFF.clone(), v);
                }
            }
            None => {
                h.insert(XFF.clone(), conn.peer_ip.clone());
            }
        }
        h.insert(
            XFP.clone(),
            HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
        );
    }
    h
}

/// Path and query only (what an HTTP/1.1 origin server expects).
pub fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(_) if uri.scheme().is_none() && uri.authority().is_none() => uri.clone(),
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

pub fn hash_of(key: &HashKey, parts: &http::request::Parts, peer: SocketAddr) -> Option<u64> {
    let h = match key {
        HashKey::ClientIp => match peer.ip() {
            std::net::IpAddr::V4(a) => hastack_balance::hash_key(&a.octets()),
            std::net::IpAddr::V6(a) => hastack_balance::hash_key(&a.octets()),
        },
        HashKey::Uri => hastack_balance::hash_key(
            parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .as_bytes(),
        ),
        HashKey::Header(name) => hastack_balance::hash_key(parts.headers.get(name)?.as_bytes()),
        HashKey::Cookie(name) => {
            hastack_balance::hash_key(cookie_value(&parts.headers, name)?.as_bytes())
        }
    };
    Some(h)
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie_value<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalised() {
        let r = Request::builder()
            .uri("/x")
            .header("host", "Example.COM:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r), "example.com");
        let r = Request::builder()
            .uri("http://[::1]:80/x")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r), "::1");
        let r = Request::builder().uri("/x").body(()).unwrap();
        assert_eq!(request_host(&r), "");
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn cookies_are_found() {
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1; srv=abc"));
        h.append("cookie", HeaderValue::from_static("b=\"2\""));
        assert_eq!(cookie_value(&h, "srv"), Some("abc"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, "c"), None);
    }

    #[test]
    fn origin_form_drops_scheme_and_authority() {
        let u: Uri = "http://a.example/x?y=1".parse().unwrap();
        assert_eq!(origin_form(&u).to_string(), "/x?y=1");
        let u: Uri = "/p".parse().unwrap();
        assert_eq!(origin_form(&u).to_string(), "/p");
    }
}
