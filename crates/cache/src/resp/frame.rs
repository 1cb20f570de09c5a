//! The framer: where does the next complete RESP value end?

use super::{Limits, MAX_DEPTH, ProtocolError, bad_number, find_crlf, parse_i64};

/// Finds the end of one complete RESP2/RESP3 value at the start of a buffer, without
/// allocating (beyond a stack of at most [`MAX_DEPTH`] counters) or building a tree.
///
/// The scanner is resumable: when the value is incomplete it remembers how far it got, and
/// the next call (with the same buffer, grown) continues from there, so a large reply that
/// arrives in many reads is scanned once, not once per read. Call [`Scanner::reset`] when the
/// buffer is consumed by other means. It is iterative: nesting costs a counter, not stack.
#[derive(Clone, Debug, Default)]
pub struct Scanner {
    /// Offset of the next unread element header.
    pos: usize,
    /// Elements still owed by each open aggregate, innermost last.
    open: Vec<u64>,
}

impl Scanner {
    /// A scanner at the start of a value.
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// Forget any progress (the buffer was consumed or replaced).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.open.clear();
    }

    /// `Ok(Some(len))` when `buf[..len]` is one complete value (the scanner is then reset
    /// for the next one), `Ok(None)` when more bytes are needed, or the first protocol
    /// error. Bytes already seen must not change between calls.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
        loop {
            let Some(next) = self.element(buf, limits)? else {
                if buf.len() > limits.max_frame_len {
                    return Err(ProtocolError::FrameTooLong {
                        max: limits.max_frame_len,
                    });
                }
                return Ok(None);
            };
            self.pos = next;
            // One element is complete: close every aggregate it completes.
            loop {
                match self.open.last_mut() {
                    None => {
                        let len = self.pos;
                        self.reset();
                        return Ok(Some(len));
                    }
                    Some(owed) => {
                        *owed -= 1;
                        if *owed > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }

    /// Read the element header at `self.pos`. Scalars: `Some(end)`. A non-empty aggregate
    /// is pushed and the loop continues with its first element (returns through the
    /// recursion-free loop below). `None`: incomplete.
    fn element(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
        loop {
            let start = self.pos;
            let Some(&kind) = buf.get(start) else {
                return Ok(None);
            };
            let Some(cr) = find_crlf(buf, start + 1)? else {
                return Ok(None);
            };
            let line = &buf[start + 1..cr];
            let after = cr + 2;
            match kind {
                b'+' | b'-' => return Ok(Some(after)),
                b':' => {
                    parse_i64(line).ok_or_else(|| bad_number("integer", line))?;
                    return Ok(Some(after));
                }
                b'_' => {
                    if !line.is_empty() {
                        return Err(ProtocolError::BadScalar("null"));
                    }
                    return Ok(Some(after));
                }
                b'#' => {
                    if line != b"t" && line != b"f" {
                        return Err(ProtocolError::BadScalar("boolean"));
                    }
                    return Ok(Some(after));
                }
                b',' => {
                    if line.is_empty() {
                        return Err(ProtocolError::BadScalar("double"));
                    }
                    return Ok(Some(after));
                }
                b'(' => {
                    let digits = line.strip_prefix(b"-").unwrap_or(line);
                    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                        return Err(ProtocolError::BadScalar("big number"));
                    }
                    return Ok(Some(after));
                }
                b'$' | b'!' | b'=' => {
                    let Some(len) = length(line, "bulk length", kind == b'$')? else {
                        return Ok(Some(after)); // $-1: null bulk
                    };
                    if len > limits.max_bulk_len as u64 {
                        return Err(ProtocolError::BulkTooLong {
                            len,
                            max: limits.max_bulk_len,
                        });
                    }
                    // Fits in usize: bounded by max_bulk_len.
                    let end = after + len as usize;
                    if end + 2 > limits.max_frame_len.saturating_add(2) {
                        return Err(ProtocolError::FrameTooLong {
                            max: limits.max_frame_len,
                        });
                    }
                    return match buf.get(end..end + 2) {
                        None => Ok(None),
                        Some(b"\r\n") => Ok(Some(end + 2)),
                        Some(_) => Err(ProtocolError::MissingCrlf("after a bulk string")),
                    };
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let Some(n) = length(line, "multibulk length", kind == b'*')? else {
                        return Ok(Some(after)); // *-1: null array
                    };
                    // n <= i64::MAX, so 2n + 1 fits in u64.
                    let owed = match kind {
                        b'%' => 2 * n,
                        // An attribute map is followed by the value it annotates.
                        b'|' => 2 * n + 1,
                        _ => n,
                    };
                    if owed > limits.max_elements as u64 {
                        return Err(ProtocolError::TooManyElements {
                            len: owed,
                            max: limits.max_elements,
                        });
                    }
                    if owed == 0 {
                        return Ok(Some(after));
                    }
                    if self.open.len() >= MAX_DEPTH {
                        return Err(ProtocolError::TooDeep);
                    }
                    self.open.push(owed);
                    self.pos = after;
                }
                other => return Err(ProtocolError::UnknownType(char::from(other))),
            }
        }
    }
}

/// A length line: `Some(n)`, or `None` for `-1` when a null is allowed there.
fn length(line: &[u8], what: &'static str, null_ok: bool) -> Result<Option<u64>, ProtocolError> {
    if line == b"?" {
        return Err(ProtocolError::Streamed);
    }
    match parse_i64(line) {
        Some(-1) if null_ok => Ok(None),
        Some(n) if n >= 0 => Ok(Some(n as u64)),
        _ => Err(bad_number(what, line)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        Scanner::new().scan(buf, &Limits::default())
    }

    #[test]
    fn scalars_and_aggregates_frame() {
        for (text, len) in [
            (&b"+OK\r\n"[..], 5),
            (b"-ERR x\r\n", 8),
            (b":-12\r\n", 6),
            (b"$3\r\nfoo\r\n", 9),
            (b"$-1\r\n", 5),
            (b"$0\r\n\r\n", 6),
            (b"*-1\r\n", 5),
            (b"*0\r\n", 4),
            (b"*2\r\n$1\r\na\r\n:1\r\n", 15),
            (b"*2\r\n*1\r\n+a\r\n*0\r\n", 16),
            (b"%1\r\n+k\r\n:1\r\n", 12),
            (b"~1\r\n#t\r\n", 8),
            (b">2\r\n+a\r\n,1.5\r\n", 14),
            (b"|1\r\n+k\r\n+v\r\n:7\r\n", 16),
            (b"_\r\n", 3),
            (b"(-123\r\n", 7),
            (b"=7\r\ntxt:abc\r\n", 13),
            (b"!3\r\nerr\r\n", 9),
        ] {
            assert_eq!(
                scan_all(text),
                Ok(Some(len)),
                "{}",
                String::from_utf8_lossy(text)
            );
            // Trailing bytes belong to the next frame.
            let mut more = text.to_vec();
            more.extend_from_slice(b"+next\r\n");
            assert_eq!(scan_all(&more), Ok(Some(len)));
            // Every strict prefix is incomplete.
            for cut in 0..len {
                assert_eq!(scan_all(&text[..cut]), Ok(None), "prefix {cut}");
            }
        }
    }

    #[test]
    fn resumes_where_it_stopped() {
        let text = b"*3\r\n$5\r\nhello\r\n*2\r\n:1\r\n:2\r\n+end\r\n";
        let mut s = Scanner::new();
        let limits = Limits::default();
        for cut in 0..text.len() {
            assert_eq!(s.scan(&text[..cut], &limits), Ok(None));
        }
        assert_eq!(s.scan(text, &limits), Ok(Some(text.len())));
        // Reset after a complete frame: the next scan starts fresh.
        assert_eq!(s.scan(b"+OK\r\n", &limits), Ok(Some(5)));
    }

    #[test]
    fn limits_are_enforced_before_buffering() {
        let limits = Limits {
            max_bulk_len: 10,
            max_elements: 3,
            max_frame_len: 100,
        };
        let mut s = Scanner::new();
        assert!(matches!(
            s.scan(b"$11\r\n", &limits),
            Err(ProtocolError::BulkTooLong { len: 11, max: 10 })
        ));
        assert!(matches!(
            Scanner::new().scan(b"*4\r\n", &limits),
            Err(ProtocolError::TooManyElements { len: 4, max: 3 })
        ));
        assert!(matches!(
            Scanner::new().scan(b"%2\r\n", &limits),
            Err(ProtocolError::TooManyElements { len: 4, max: 3 })
        ));
        let mut many = b"*3\r\n".to_vec();
        many.extend(std::iter::repeat_n(b'+', 200));
        assert!(Scanner::new().scan(&many, &limits).is_err());
        // Deep nesting is refused, not recursed into.
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(
            Scanner::new().scan(&deep, &Limits::default()),
            Err(ProtocolError::TooDeep)
        );
        let ok_depth = [b"*1\r\n".repeat(MAX_DEPTH), b":1\r\n".to_vec()].concat();
        assert_eq!(
            Scanner::new().scan(&ok_depth, &Limits::default()),
            Ok(Some(ok_depth.len()))
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &b"?x\r\n"[..],
            b"$abc\r\n",
            b"$-2\r\n",
            b"*-2\r\n",
            b"%-1\r\n",
            b"$3\r\nfooXY",
            b":1.5\r\n",
            b"#x\r\n",
            b"_x\r\n",
            b"(12a\r\n",
            b"$?\r\n",
            b"+a\rb\r\n",
        ] {
            assert!(scan_all(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
