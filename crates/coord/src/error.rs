//! The crate's one error type: failures as values that say whether a retry is safe.

use std::time::Duration;

use tonic::Code;

/// Whether a failed call may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The request was certainly not applied: retrying is always safe.
    Safe,
    /// The request may or may not have been applied (sent, then the connection broke or the
    /// deadline passed): retry only if applying it twice is harmless, else read back first.
    IfIdempotent,
    /// Retrying the same request fails the same way.
    No,
}

/// A coord failure.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// No endpoint could be reached before the deadline: nothing was sent.
    #[error("no coord endpoint reachable ({endpoints}): {last}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The last connect error.
        last: String,
    },
    /// The request was sent but no answer came (connection broke, server overloaded, member
    /// cut off from its quorum): it may or may not have been applied.
    #[error("{endpoint}: {what}; the request may or may not have been applied")]
    Unknown {
        /// The endpoint the request went to.
        endpoint: String,
        /// What happened.
        what: String,
    },
    /// The call's deadline passed.
    #[error("coord call deadline of {after:?} exceeded{}", if *.sent { " (the request may or may not have been applied)" } else { "" })]
    Deadline {
        /// The deadline.
        after: Duration,
        /// Whether the request had been sent.
        sent: bool,
    },
    /// The revision asked for is below the compact revision: the history is gone. A watcher
    /// must list again and watch from the listing's revision.
    #[error("revision compacted (oldest available: {compact_revision})")]
    Compacted {
        /// The compact revision, when the server said (0 otherwise).
        compact_revision: i64,
    },
    /// The lease does not exist (expired or revoked).
    #[error("lease {0:x} not found (expired or revoked)")]
    LeaseNotFound(i64),
    /// The request exceeds the server's size limit (etcd: 1.5 MiB by default).
    #[error("request too large: {0}")]
    TooLarge(String),
    /// The server refused the request.
    #[error("{endpoint} refused the request: {code:?}: {message}")]
    Rejected {
        /// The endpoint.
        endpoint: String,
        /// The gRPC code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// The server answered something that is not a valid answer (corrupt, hostile, or a
    /// different protocol).
    #[error("malformed answer from {endpoint}: {what}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// What was wrong.
        what: String,
    },
    /// The server canceled a watch.
    #[error("watch canceled by the server: {0}")]
    WatchCanceled(String),
    /// A bad argument or client configuration.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The embedded server could not start or failed.
    #[error("{0}")]
    Server(String),
}

impl Error {
    /// Whether (and when) a retry is safe.
    pub fn retry(&self) -> Retry {
        match self {
            Error::Unreachable { .. } => Retry::Safe,
            Error::Deadline { sent: false, .. } => Retry::Safe,
            Error::Unknown { .. } | Error::Deadline { sent: true, .. } => Retry::IfIdempotent,
            Error::Protocol { .. } => Retry::IfIdempotent,
            Error::Compacted { .. }
            | Error::LeaseNotFound(_)
            | Error::TooLarge(_)
            | Error::Rejected { .. }
            | Error::WatchCanceled(_)
            | Error::Invalid(_)
            | Error::Server(_) => Retry::No,
        }
    }

    /// Classify a gRPC status from `endpoint`.
    pub(crate) fn from_status(endpoint: &str, s: &tonic::Status) -> Error {
        let msg = s.message();
        let endpoint = endpoint.to_string();
        match s.code() {
            Code::OutOfRange if msg.contains("compacted") => Error::Compacted {
                compact_revision: 0,
            },
            Code::NotFound if msg.contains("lease not found") => Error::LeaseNotFound(0),
            Code::InvalidArgument if msg.contains("too large") => Error::TooLarge(msg.to_string()),
            Code::ResourceExhausted
                if msg.contains("larger than max") || msg.contains("too large") =>
            {
                Error::TooLarge(msg.to_string())
            }
            Code::Unavailable if is_connect_error(s) => Error::Unreachable {
                endpoints: endpoint,
                last: msg.to_string(),
            },
            // etcd's own "no leader" and "not capable" refusals come before applying anything.
            Code::Unavailable if msg.starts_with("etcdserver: no leader") => Error::Unreachable {
                endpoints: endpoint,
                last: msg.to_string(),
            },
            Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted => Error::Unknown {
                endpoint,
                what: format!("{:?}: {msg}", s.code()),
            },
            Code::Internal
                if msg.contains("decode")
                    || msg.contains("h2 protocol")
                    || msg.contains("protocol error") =>
            {
                Error::Protocol {
                    endpoint,
                    what: msg.to_string(),
                }
            }
            code => Error::Rejected {
                endpoint,
                code,
                message: msg.to_string(),
            },
        }
    }
}

/// Whether the status comes from failing to connect (nothing was sent).
fn is_connect_error(s: &tonic::Status) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        let text = e.to_string();
        if text.contains("error trying to connect") || text.contains("tcp connect error") {
            return true;
        }
        src = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_messages_map_to_kinds() {
        let e = |s: tonic::Status| Error::from_status("e", &s);
        assert!(matches!(
            e(tonic::Status::out_of_range(
                "etcdserver: mvcc: required revision has been compacted"
            )),
            Error::Compacted { .. }
        ));
        assert!(matches!(
            e(tonic::Status::not_found(
                "etcdserver: requested lease not found"
            )),
            Error::LeaseNotFound(_)
        ));
        assert!(matches!(
            e(tonic::Status::invalid_argument(
                "etcdserver: request is too large"
            )),
            Error::TooLarge(_)
        ));
        assert_eq!(
            e(tonic::Status::unavailable("etcdserver: no leader")).retry(),
            Retry::Safe
        );
        assert_eq!(
            e(tonic::Status::unavailable("etcdserver: request timed out")).retry(),
            Retry::IfIdempotent
        );
        assert_eq!(
            e(tonic::Status::invalid_argument(
                "etcdserver: key is not provided"
            ))
            .retry(),
            Retry::No
        );
    }
}
