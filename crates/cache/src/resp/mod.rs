//! RESP2/RESP3, the Redis wire protocol: a bounded, resumable framer, a request parser,
//! a value tree and encoders.
//!
//! Written by hand (see ARCHITECTURE.md, "What is written by hand"): the maintained crate
//! (`redis-protocol` 6) bounds neither bulk lengths, aggregate lengths nor nesting depth
//! (`*1\r\n*1\r\n...` recurses until the stack overflows), re-parses a partial frame from its
//! start on every read, and builds a tree for every frame, where a proxy only needs frame
//! boundaries and passes replies through as bytes.
//!
//! * [`Scanner`] finds where one complete value ends, for any RESP2/RESP3 type, without
//!   allocating or building a tree, resuming where it stopped when more bytes arrive.
//! * [`RequestParser`] turns client bytes into [`Request`]s: multibulk (`*N` of `$len` bulk
//!   strings, what every client library sends) or inline (`PING\r\n`, what `telnet` sends),
//!   zero-copy: arguments are slices of the receive buffer.
//! * [`Value`] is the decoded tree, for the few replies hastack inspects (ROLE, INFO, split
//!   replies), and the encoder of values hastack writes.
//! * [`write`] holds the encoders of single reply types.
//!
//! Every length is checked against [`Limits`] *before* anything is buffered or allocated
//! for it; every malformed input is a [`ProtocolError`] naming the problem, never a panic.

mod frame;
#[cfg(test)]
mod props;
mod request;
mod value;
pub mod write;

pub use frame::Scanner;
pub use request::{Request, RequestParser};
pub use value::Value;

/// Bounds on what one peer may make hastack buffer or allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string (Redis's `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Most elements in one array, set, push or map (a map counts its keys and values);
    /// Redis accepts at most 1,048,576 arguments in one request.
    pub max_elements: usize,
    /// Largest single frame, counted while it is still incomplete: a request beyond it
    /// (Redis's `client-query-buffer-limit`) or a reply beyond it is an error, not a buffer
    /// that grows without end.
    pub max_frame_len: usize,
}

/// Longest line: a simple string, error, number or length line, or an inline command
/// (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// Deepest nesting of aggregates accepted. Replies hastack sees nest a few levels
/// (`EXEC` of `XRANGE`: 4; `COMMAND DOCS`: about 7).
pub const MAX_DEPTH: usize = 64;

impl Default for Limits {
    /// 16 MiB bulk strings, 1,048,576 elements, 64 MiB frames.
    fn default() -> Self {
        Limits {
            max_bulk_len: 16 * 1024 * 1024,
            max_elements: 1024 * 1024,
            max_frame_len: 64 * 1024 * 1024,
        }
    }
}

/// Malformed or oversized RESP. The text follows Redis's own wording where Redis has one
/// (`Protocol error: invalid bulk length`), so clients see familiar messages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The first byte of a value is not a RESP type.
    #[error("Protocol error: unknown RESP type byte {0:?}")]
    UnknownType(char),
    /// A request element is not a bulk string.
    #[error("Protocol error: expected '$', got {0:?}")]
    ExpectedBulk(char),
    /// A length or integer line is not a decimal integer.
    #[error("Protocol error: invalid {what} {text:?}")]
    BadNumber {
        /// What was being read ("bulk length", "multibulk length", "integer").
        what: &'static str,
        /// The offending line (at most 32 bytes of it).
        text: String,
    },
    /// A boolean (`#`) that is neither `t` nor `f`, a null (`_`) with content, ...
    #[error("Protocol error: invalid {0} value")]
    BadScalar(&'static str),
    /// A bulk string longer than `max_bulk_len`.
    #[error("Protocol error: bulk string of {len} bytes exceeds the limit of {max} bytes")]
    BulkTooLong {
        /// Announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// An aggregate with more elements than `max_elements`.
    #[error("Protocol error: {len} elements exceed the limit of {max}")]
    TooManyElements {
        /// Announced element count.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// Aggregates nested deeper than [`MAX_DEPTH`].
    #[error("Protocol error: aggregates nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A line without CRLF within [`MAX_LINE_LEN`] bytes (Redis: "too big inline request").
    #[error("Protocol error: line longer than {MAX_LINE_LEN} bytes (too big inline request)")]
    LineTooLong,
    /// A frame larger than `max_frame_len` while still incomplete.
    #[error("Protocol error: frame larger than the limit of {max} bytes")]
    FrameTooLong {
        /// The limit.
        max: usize,
    },
    /// A CR not followed by LF, or a bulk string not followed by CRLF.
    #[error("Protocol error: expected CRLF {0}")]
    MissingCrlf(&'static str),
    /// RESP3 streamed strings and aggregates (`$?`, `*?`), which Redis itself never sends.
    #[error("Protocol error: streamed RESP3 values are not supported")]
    Streamed,
    /// An inline command with an unterminated quote.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

impl ProtocolError {
    /// The error as a RESP error reply (`-ERR Protocol error: ...\r\n`).
    pub fn to_reply(&self) -> bytes::Bytes {
        let mut out = bytes::BytesMut::new();
        write::error(&mut out, &format!("ERR {self}"));
        out.freeze()
    }
}

/// Parse a signed decimal integer the way Redis's `string2ll` does: optional `-`, digits
/// only, no `+`, no spaces, no leading zeros except `0` itself, within `i64`.
pub(crate) fn parse_i64(text: &[u8]) -> Option<i64> {
    let (neg, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let v = i64::from(d - b'0');
        n = if neg {
            n.checked_mul(10)?.checked_sub(v)?
        } else {
            n.checked_mul(10)?.checked_add(v)?
        };
    }
    if neg && n == 0 {
        return None; // "-0"
    }
    Some(n)
}

pub(crate) fn bad_number(what: &'static str, text: &[u8]) -> ProtocolError {
    let shown = &text[..text.len().min(32)];
    ProtocolError::BadNumber {
        what,
        text: String::from_utf8_lossy(shown).into_owned(),
    }
}

/// Find the CRLF that ends the line starting at `from`. `Ok(None)`: not yet in `buf`.
pub(crate) fn find_crlf(buf: &[u8], from: usize) -> Result<Option<usize>, ProtocolError> {
    let rest = buf.get(from..).unwrap_or_default();
    let window = &rest[..rest.len().min(MAX_LINE_LEN + 2)];
    match memchr::memchr(b'\r', window) {
        Some(i) if i > MAX_LINE_LEN => Err(ProtocolError::LineTooLong),
        Some(i) => match rest.get(i + 1) {
            Some(b'\n') => Ok(Some(from + i)),
            Some(_) => Err(ProtocolError::MissingCrlf("after a line")),
            None => Ok(None),
        },
        None if rest.len() > MAX_LINE_LEN => Err(ProtocolError::LineTooLong),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"01",
            b"-0",
            b"1a",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn crlf_search_is_bounded() {
        assert_eq!(find_crlf(b"+OK\r\n", 0), Ok(Some(3)));
        assert_eq!(find_crlf(b"+OK\r", 0), Ok(None));
        assert_eq!(find_crlf(b"+OK", 0), Ok(None));
        assert!(find_crlf(b"+O\rK\r\n", 0).is_err());
        let long = vec![b'a'; MAX_LINE_LEN + 2];
        assert_eq!(find_crlf(&long, 0), Err(ProtocolError::LineTooLong));
    }
}
