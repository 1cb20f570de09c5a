//! What can go wrong talking HTTP/1.1 to a member, and the limits those errors refer to.

use std::io;

use super::reqbody::{BodyTooLarge, BoxError};
use crate::failure::{Failure, Progress};

/// Largest response head (status line and headers) accepted from a member.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
pub const MAX_HEADERS: usize = 128;

/// What went wrong talking to a member.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// Writing the request failed.
    #[error("writing the request failed: {0}")]
    Write(io::Error),
    /// Reading the response failed.
    #[error("reading the response failed: {0}")]
    Read(io::Error),
    /// The member closed the connection before sending any response byte.
    #[error("the member closed the connection before answering")]
    ClosedBeforeResponse,
    /// The member closed the connection in the middle of a response.
    #[error("the member closed the connection in the middle of the response")]
    ClosedEarly,
    /// The response head is malformed.
    #[error("invalid response from the member: {0}")]
    Invalid(&'static str),
    /// The response head is too large.
    #[error("the response head exceeds {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The client's request body failed (client went away, sent garbage, or too much).
    #[error("the client's request body failed: {0}")]
    ClientBody(BoxError),
}

impl H1Error {
    /// This error as a failure of the try, given how far the exchange got.
    pub fn failure(&self, progress: Progress) -> Failure {
        match self {
            H1Error::ClientBody(e) => Failure::client_body(e.is::<BodyTooLarge>()),
            H1Error::Invalid(_) | H1Error::HeadTooLarge => Failure::invalid_response(),
            H1Error::Write(_)
            | H1Error::Read(_)
            | H1Error::ClosedBeforeResponse
            | H1Error::ClosedEarly => Failure::transport(progress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::{Blame, ErrorKind, Retry};

    #[test]
    fn errors_become_failures() {
        let race = Progress {
            reused: true,
            written: true,
            answered: false,
        };
        let f = H1Error::ClosedBeforeResponse.failure(race);
        assert_eq!(
            (f.kind, f.blame, f.retry),
            (ErrorKind::UpstreamReset, Blame::Nobody, Retry::Sent)
        );
        let f = H1Error::Invalid("x").failure(race);
        assert_eq!(
            (f.kind, f.blame),
            (ErrorKind::InvalidResponse, Blame::Upstream)
        );
        let f = H1Error::ClientBody(Box::new(BodyTooLarge { limit: 1 })).failure(race);
        assert_eq!((f.kind, f.blame), (ErrorKind::BodyTooLarge, Blame::Client));
        let f = H1Error::ClientBody("gone".into()).failure(race);
        assert_eq!((f.kind, f.retry), (ErrorKind::BadRequestBody, Retry::Never));
    }
}
