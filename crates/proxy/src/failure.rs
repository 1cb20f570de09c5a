//! The proxy's failures as values: one list of what can go wrong ([`ErrorKind`], whose
//! names are the `x-hastack-error` values and metric labels), the [`Failure`] a try returns,
//! what it costs the member ([`Penalty`]) and what the request does next ([`decide`]).
//!
//! Blame and retry safety are the shared vocabulary of `hastack_core::failure`; this module
//! adds the proxy's kinds and the one rule that depends on a kind: only a refused connection
//! proves a member dead.
//!
//! Pure: nothing here does IO or reads a clock, so every rule is tested without sockets.

pub use hastack_core::failure::{Blame, Next, Progress, Retry, Tries};
use http::StatusCode;

/// Everything the proxy answers on its own, by cause. The first group can end a try (a
/// [`Failure`]); the rest end a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A fresh connection was refused or reset while connecting: nothing serves there.
    ConnectRefused,
    /// No connection within `connect_timeout`.
    ConnectTimeout,
    /// Any other socket error while connecting (unreachable network, or this process out
    /// of file descriptors or ports).
    ConnectFailed,
    /// The connection closed, reset or failed before the response head was complete.
    UpstreamReset,
    /// The member's response head is malformed or too large.
    InvalidResponse,
    /// No response head within `try_timeout`.
    TryTimeout,
    /// The member answered 5xx (when retried and no retry succeeded, the client gets the
    /// status with this kind).
    UpstreamStatus,
    /// The client's body exceeds `max_request_body`.
    BodyTooLarge,
    /// The client's body could not be read.
    BadRequestBody,
    /// No response head within `request_timeout`, retries included.
    RequestTimeout,
    /// The pool had no usable member.
    NoUsableMember,
    /// Every usable member was tried and failed.
    AllMembersFailed,
    /// No route matches the request.
    NoRoute,
    /// The connection's listener was removed by a reload.
    ListenerRemoved,
    /// A bug: a state the proxy should never be in.
    Internal,
}

impl ErrorKind {
    /// Every kind, those a try can end with first.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::ConnectFailed,
        ErrorKind::UpstreamReset,
        ErrorKind::InvalidResponse,
        ErrorKind::TryTimeout,
        ErrorKind::UpstreamStatus,
        ErrorKind::BodyTooLarge,
        ErrorKind::BadRequestBody,
        ErrorKind::RequestTimeout,
        ErrorKind::NoUsableMember,
        ErrorKind::AllMembersFailed,
        ErrorKind::NoRoute,
        ErrorKind::ListenerRemoved,
        ErrorKind::Internal,
    ];

    /// The `x-hastack-error` value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::UpstreamReset => "upstream_reset",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::TryTimeout => "try_timeout",
            ErrorKind::UpstreamStatus => "upstream_status",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::BadRequestBody => "bad_request_body",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::NoUsableMember => "no_usable_member",
            ErrorKind::AllMembersFailed => "all_members_failed",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::ListenerRemoved => "listener_removed",
            ErrorKind::Internal => "internal",
        }
    }

    /// Position in [`ErrorKind::ALL`] (for per-kind counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether a member can be blamed for this kind (it has a per-member error series).
    pub fn can_blame_member(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectRefused
                | ErrorKind::ConnectTimeout
                | ErrorKind::ConnectFailed
                | ErrorKind::UpstreamReset
                | ErrorKind::InvalidResponse
                | ErrorKind::TryTimeout
                | ErrorKind::UpstreamStatus
        )
    }

    /// The status the client gets for this kind (an upstream status is passed on instead).
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::ConnectRefused
            | ErrorKind::ConnectTimeout
            | ErrorKind::ConnectFailed
            | ErrorKind::UpstreamReset
            | ErrorKind::InvalidResponse
            | ErrorKind::UpstreamStatus
            | ErrorKind::AllMembersFailed => StatusCode::BAD_GATEWAY,
            ErrorKind::TryTimeout | ErrorKind::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::BadRequestBody => StatusCode::BAD_REQUEST,
            ErrorKind::NoUsableMember | ErrorKind::ListenerRemoved => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the proxy itself gave up waiting for an answer (its own 504, as opposed to a
    /// member's): what a fallback covering `timeout` replaces.
    pub fn is_proxy_timeout(self) -> bool {
        matches!(self, ErrorKind::TryTimeout | ErrorKind::RequestTimeout)
    }
}

/// Why a try (or a request) failed: what happened, who is to blame, whether sending the
/// request again is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What happened.
    pub kind: ErrorKind,
    /// Who caused it.
    pub blame: Blame,
    /// Whether a resend is safe.
    pub retry: Retry,
}

impl Failure {
    /// A failure that ends the request (no route, no member, out of time...): nothing is
    /// retried and no member is blamed.
    pub fn request(kind: ErrorKind) -> Failure {
        let blame = match kind {
            ErrorKind::BodyTooLarge | ErrorKind::BadRequestBody => Blame::Client,
            ErrorKind::Internal => Blame::Local,
            _ => Blame::Nobody,
        };
        Failure {
            kind,
            blame,
            retry: Retry::Never,
        }
    }

    /// The connection broke (closed, reset, socket error) after `progress`.
    pub fn transport(progress: Progress) -> Failure {
        let (blame, retry) = progress.transport();
        Failure {
            kind: ErrorKind::UpstreamReset,
            blame,
            retry,
        }
    }

    /// The member's answer could not be parsed after `progress`: it answered, so it is
    /// blamed whether the connection was reused or not.
    pub fn invalid_response() -> Failure {
        Failure {
            kind: ErrorKind::InvalidResponse,
            blame: Blame::Upstream,
            retry: Retry::Sent,
        }
    }

    /// No response head within `try_timeout` after `progress`: the member is slow (a closed
    /// connection would have failed, not hung), reused connection or not.
    pub fn try_timeout(progress: Progress) -> Failure {
        Failure {
            kind: ErrorKind::TryTimeout,
            blame: Blame::Upstream,
            retry: if progress.written {
                Retry::Sent
            } else {
                Retry::Unsent
            },
        }
    }

    /// The member answered a 5xx; `retried` when the pool retries that status.
    pub fn status(retried: bool) -> Failure {
        Failure {
            kind: ErrorKind::UpstreamStatus,
            blame: Blame::Upstream,
            retry: if retried { Retry::Sent } else { Retry::Never },
        }
    }

    /// The client's own body failed (`too_large`: it crossed the limit).
    pub fn client_body(too_large: bool) -> Failure {
        Failure::request(if too_large {
            ErrorKind::BodyTooLarge
        } else {
            ErrorKind::BadRequestBody
        })
    }

    /// What the failure costs the member it happened on.
    pub fn penalty(&self) -> Penalty {
        match (self.blame, self.kind) {
            (Blame::Upstream, ErrorKind::ConnectRefused) => Penalty::Down,
            (Blame::Upstream, _) => Penalty::Error,
            _ => Penalty::None,
        }
    }
}

/// What a failure costs the member (the ejection rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Penalty {
    /// Nothing: not the member's fault (the client's, ours, or the keep-alive race).
    None,
    /// Marked down at once (nothing listens); only active probes re-admit it.
    Down,
    /// One gateway error towards `consecutive_errors` (outlier ejection) and the member's
    /// breaker.
    Error,
}

/// What the request does after `failure`: the retry rules of `hastack_core::failure::decide`
/// applied to a try of this proxy. `budget` is asked (and spends a unit) only when a retry
/// to another member would otherwise go ahead.
pub fn decide(failure: &Failure, tries: &Tries, budget: impl FnOnce() -> bool) -> Next {
    hastack_core::failure::decide(failure.blame, failure.retry, tries, budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_listed_once_in_order() {
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "{k:?}");
        }
        let mut names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorKind::ALL.len(), "names are unique");
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
    }

    /// The ways a try can fail, each as the proxy builds it from what it observed.
    fn try_failures(p: Progress) -> Vec<Failure> {
        let mut v = vec![
            Failure {
                kind: ErrorKind::ConnectRefused,
                blame: Blame::Upstream,
                retry: Retry::Unsent,
            },
            Failure {
                kind: ErrorKind::ConnectTimeout,
                blame: Blame::Upstream,
                retry: Retry::Unsent,
            },
            Failure {
                kind: ErrorKind::ConnectFailed,
                blame: Blame::Local,
                retry: Retry::Unsent,
            },
            Failure::transport(p),
            Failure::invalid_response(),
            Failure::try_timeout(p),
            Failure::status(true),
            Failure::status(false),
            Failure::client_body(true),
            Failure::client_body(false),
        ];
        v.retain(|f| f.kind.can_blame_member() || f.blame == Blame::Client);
        v
    }

    /// The retry table of docs/proxy.md, over every kind x reused/fresh x written/unwritten
    /// x idempotent (resendable)/not x attempts left x budget x redo left.
    #[test]
    fn retry_table() {
        for bits in 0..64u8 {
            let p = Progress {
                reused: bits & 1 != 0,
                written: bits & 2 != 0,
                answered: false,
            };
            let t = Tries {
                attempt: 1,
                attempts: if bits & 8 != 0 { 3 } else { 1 },
                redos_left: if bits & 32 != 0 { 2 } else { 0 },
                resendable: bits & 4 != 0,
                time_left: true,
            };
            let budget = bits & 16 != 0;
            for f in try_failures(p) {
                let next = decide(&f, &t, || budget);
                let more = t.attempt < t.attempts && budget;
                let expected = match f.kind {
                    // Never sent: any method goes to another member.
                    ErrorKind::ConnectRefused | ErrorKind::ConnectTimeout if more => Next::Retry,
                    ErrorKind::ConnectRefused | ErrorKind::ConnectTimeout => Next::Fail,
                    // Our own resources: another member would not help.
                    ErrorKind::ConnectFailed => Next::Fail,
                    // The keep-alive race: free redo when the request may be repeated
                    // (nothing written, or resendable), never for a written POST.
                    ErrorKind::UpstreamReset if p.reused => {
                        if (!p.written || t.resendable) && t.redos_left > 0 {
                            Next::Redo
                        } else if (!p.written || t.resendable) && more {
                            Next::Retry
                        } else {
                            Next::Fail
                        }
                    }
                    ErrorKind::UpstreamReset | ErrorKind::TryTimeout
                        if (!p.written || t.resendable) && more =>
                    {
                        Next::Retry
                    }
                    ErrorKind::UpstreamReset | ErrorKind::TryTimeout => Next::Fail,
                    ErrorKind::InvalidResponse if t.resendable && more => Next::Retry,
                    ErrorKind::UpstreamStatus if f.retry == Retry::Sent && t.resendable && more => {
                        Next::Retry
                    }
                    ErrorKind::InvalidResponse | ErrorKind::UpstreamStatus => Next::Fail,
                    ErrorKind::BodyTooLarge | ErrorKind::BadRequestBody => Next::Fail,
                    k => unreachable!("{k:?} does not end a try"),
                };
                assert_eq!(next, expected, "{f:?} {p:?} {t:?} budget={budget}");
                // No time left: nothing more, whatever the failure.
                let late = Tries {
                    time_left: false,
                    ..t
                };
                assert_eq!(decide(&f, &late, || true), Next::Fail);
            }
        }
    }

    #[test]
    fn only_refused_connections_mark_down_and_only_members_pay() {
        for bits in 0..4u8 {
            let p = Progress {
                reused: bits & 1 != 0,
                written: bits & 2 != 0,
                answered: false,
            };
            for f in try_failures(p) {
                let expected = match (f.kind, f.blame) {
                    (ErrorKind::ConnectRefused, _) => Penalty::Down,
                    (_, Blame::Upstream) => Penalty::Error,
                    _ => Penalty::None,
                };
                assert_eq!(f.penalty(), expected, "{f:?}");
            }
        }
        // The race costs the member nothing; the same failure on a fresh connection does.
        let race = Failure::transport(Progress {
            reused: true,
            written: true,
            answered: false,
        });
        assert_eq!(race.penalty(), Penalty::None);
        let fresh = Failure::transport(Progress {
            reused: false,
            written: true,
            answered: false,
        });
        assert_eq!(fresh.penalty(), Penalty::Error);
        // Part of an answer on a reused connection: the member did answer, so it pays.
        let partial = Failure::transport(Progress {
            reused: true,
            written: true,
            answered: true,
        });
        assert_eq!(partial.penalty(), Penalty::Error);
    }

    #[test]
    fn statuses_and_timeouts() {
        assert_eq!(ErrorKind::TryTimeout.status(), 504);
        assert_eq!(ErrorKind::NoUsableMember.status(), 503);
        assert!(ErrorKind::TryTimeout.is_proxy_timeout());
        assert!(ErrorKind::RequestTimeout.is_proxy_timeout());
        // A member's own 504 is not the proxy's timeout.
        assert!(!ErrorKind::UpstreamStatus.is_proxy_timeout());
        for k in ErrorKind::ALL {
            let f = Failure::request(k);
            assert_eq!(f.retry, Retry::Never);
            assert_ne!(f.blame, Blame::Upstream, "{k:?}");
        }
    }
}
