//! The crate's one error type, and the reasons a guard turns a request away.

use std::time::Duration;

/// Why a guard refused (or gave up on) a request. Expected under load: these are values the
/// caller maps to a response (429, 503, the route's fallback), not bugs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The route was switched off by an operator (`POST /admin/routes/{route}/disable`).
    Disabled,
    /// A rate limit refused the request (answer 429 with `Retry-After`).
    RateLimited,
    /// The circuit breaker is open (or half-open with every trial slot taken).
    BreakerOpen,
    /// Priority shedding dropped the request to keep capacity for a more important class.
    Shed,
    /// The concurrency limit is full and so is its queue (or the queue wait timed out).
    Overloaded,
    /// The request (or one try of it) ran out of time.
    Timeout,
}

impl RejectReason {
    /// Every reason, in declaration order (used for metrics labels and config parsing).
    pub const ALL: [RejectReason; 6] = [
        RejectReason::Disabled,
        RejectReason::RateLimited,
        RejectReason::BreakerOpen,
        RejectReason::Shed,
        RejectReason::Overloaded,
        RejectReason::Timeout,
    ];

    /// The snake_case name used in config (`fallback.on`), metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Disabled => "disabled",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::BreakerOpen => "breaker_open",
            RejectReason::Shed => "shed",
            RejectReason::Overloaded => "overloaded",
            RejectReason::Timeout => "timeout",
        }
    }

    /// The HTTP status a proxy answers with when no fallback applies.
    pub fn status(self) -> http::StatusCode {
        match self {
            RejectReason::RateLimited => http::StatusCode::TOO_MANY_REQUESTS,
            RejectReason::Timeout => http::StatusCode::GATEWAY_TIMEOUT,
            _ => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Errors of this crate.
///
/// Data-plane variants say who is to blame and whether retrying is safe, so callers can
/// decide without string matching: every [`GuardError::Rejected`] happened *before* the
/// request reached the upstream (so a retry elsewhere is always safe), while
/// [`GuardError::Timeout`] may have reached it.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// A guard refused the request before it reached the upstream.
    #[error("request refused by guard: {}", reason.as_str())]
    Rejected {
        /// Which guard and why.
        reason: RejectReason,
        /// When the caller may try again, if known (rate limit, open breaker).
        retry_after: Option<Duration>,
    },
    /// The request did not finish within its timeout; it may have reached the upstream.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// A guard was built from parameters it cannot work with (caught by config validation;
    /// this is for direct API users).
    #[error("invalid guard parameters: {0}")]
    Invalid(String),
}

impl GuardError {
    /// The rejection reason, if this is a refusal or a timeout.
    pub fn reason(&self) -> Option<RejectReason> {
        match self {
            GuardError::Rejected { reason, .. } => Some(*reason),
            GuardError::Timeout(_) => Some(RejectReason::Timeout),
            GuardError::Invalid(_) => None,
        }
    }

    /// Whether the upstream certainly never saw the request (so any retry is safe).
    pub fn never_reached_upstream(&self) -> bool {
        matches!(self, GuardError::Rejected { .. })
    }
}
