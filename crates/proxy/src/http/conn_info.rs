//! Who a downstream (client) connection is, made once per connection.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderValue;

/// Who a downstream connection is.
#[derive(Debug)]
pub struct ConnInfo {
    /// Listener name.
    pub listener: Arc<str>,
    /// Client address.
    pub peer: SocketAddr,
    /// Whether it arrived over TLS.
    pub tls: bool,
    /// The client's IP as a header value, made once per connection for X-Forwarded-For.
    pub peer_ip: HeaderValue,
}

impl ConnInfo {
    /// Describe a new client connection.
    pub fn new(listener: Arc<str>, peer: SocketAddr, tls: bool) -> ConnInfo {
        // An IP address's text is always a valid header value.
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ConnInfo {
            listener,
            peer,
            tls,
            peer_ip,
        }
    }
}
