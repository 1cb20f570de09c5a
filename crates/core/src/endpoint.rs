//! Endpoint identity.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// A backend member as the data plane knows it: a stable name and the address to dial.
///
/// The name is the member's identity inside its pool. It survives reloads: a member whose name
/// and address are unchanged keeps its health state, counters and connections. When the config
/// gives no name, the address's text is the name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    name: Arc<str>,
    addr: SocketAddr,
}

impl Endpoint {
    /// An endpoint called `name` at `addr`.
    pub fn new(name: impl Into<Arc<str>>, addr: SocketAddr) -> Self {
        Endpoint {
            name: name.into(),
            addr,
        }
    }

    /// An endpoint named after its address.
    pub fn from_addr(addr: SocketAddr) -> Self {
        Endpoint::new(addr.to_string(), addr)
    }

    /// The member's name (its identity within a pool).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shared name, cheap to clone into labels and logs.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self.name == *self.addr.to_string() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{} ({})", self.name, self.addr)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_omits_duplicate_name() {
        let a: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        assert_eq!(Endpoint::from_addr(a).to_string(), "127.0.0.1:9001");
        assert_eq!(
            Endpoint::new("web1", a).to_string(),
            "web1 (127.0.0.1:9001)"
        );
    }
}
