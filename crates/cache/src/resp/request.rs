//! Client requests: multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and inline (`GET k\r\n`).

use bytes::{Buf, Bytes, BytesMut};

use super::{Limits, MAX_LINE_LEN, ProtocolError, bad_number, find_crlf, parse_i64, write};

/// One command from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The command in multibulk encoding: the bytes as received for multibulk requests
    /// (forwarded without re-encoding), re-encoded for inline ones.
    pub frame: Bytes,
    /// The arguments, name first; never empty. Slices of `frame` for multibulk requests.
    pub args: Vec<Bytes>,
}

impl Request {
    /// A request from its arguments (`args` must not be empty), encoded as multibulk.
    pub fn from_args(args: Vec<Bytes>) -> Request {
        let mut out = BytesMut::new();
        write::command(&mut out, args.iter().map(|a| &a[..]));
        Request {
            frame: out.freeze(),
            args,
        }
    }

    /// A request from space-separated words (tests).
    #[cfg(test)]
    pub(crate) fn words(text: &str) -> Request {
        Request::from_args(
            text.split(' ')
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect(),
        )
    }

    /// The command name as sent (any case).
    pub fn name(&self) -> &[u8] {
        self.args.first().map_or(&[][..], |a| &a[..])
    }
}

/// Parses requests out of a client's receive buffer, consuming each complete one.
///
/// Resumable like [`super::Scanner`]: the arguments found so far are kept between calls,
/// so a long pipeline or a large `MSET` is parsed once however it is split across reads.
#[derive(Clone, Debug, Default)]
pub struct RequestParser {
    /// Inside a multibulk request: offset of the next argument header.
    pos: usize,
    /// Arguments still owed by the current multibulk request (0: between requests).
    owed: u64,
    /// Byte ranges of the arguments found so far.
    args: Vec<(usize, usize)>,
}

impl RequestParser {
    /// A parser between requests.
    pub fn new() -> RequestParser {
        RequestParser::default()
    }

    /// Take the next complete request off the front of `buf`: `Ok(None)` when more bytes
    /// are needed. Empty requests (a blank inline line, `*0`) are skipped, as Redis does.
    /// After an error the connection must be closed: the stream cannot be resynchronised.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Request>, ProtocolError> {
        loop {
            if self.owed == 0 {
                let Some(&first) = buf.first() else {
                    return Ok(None);
                };
                if first != b'*' {
                    match inline(buf)? {
                        Inline::Request(r) => return Ok(Some(r)),
                        Inline::Empty => continue,
                        Inline::Incomplete => return Ok(None),
                    }
                }
                let Some(cr) = find_crlf(buf, 1)? else {
                    return incomplete(buf, limits);
                };
                let line = &buf[1..cr];
                let n = parse_i64(line).ok_or_else(|| bad_number("multibulk length", line))?;
                if n > limits.max_elements as i64 {
                    return Err(ProtocolError::TooManyElements {
                        len: n as u64,
                        max: limits.max_elements,
                    });
                }
                if n <= 0 {
                    buf.advance(cr + 2);
                    continue;
                }
                self.owed = n as u64;
                self.pos = cr + 2;
                self.args.clear();
                self.args.reserve((n as usize).min(64));
            }
            while self.owed > 0 {
                let Some(&b) = buf.get(self.pos) else {
                    return incomplete(buf, limits);
                };
                if b != b'$' {
                    return Err(ProtocolError::ExpectedBulk(char::from(b)));
                }
                let Some(cr) = find_crlf(buf, self.pos + 1)? else {
                    return incomplete(buf, limits);
                };
                let line = &buf[self.pos + 1..cr];
                let len = match parse_i64(line) {
                    Some(n) if n >= 0 => n as u64,
                    _ => return Err(bad_number("bulk length", line)),
                };
                if len > limits.max_bulk_len as u64 {
                    return Err(ProtocolError::BulkTooLong {
                        len,
                        max: limits.max_bulk_len,
                    });
                }
                let start = cr + 2;
                // Fits: len <= max_bulk_len.
                let end = start + len as usize;
                if end > limits.max_frame_len {
                    return Err(ProtocolError::FrameTooLong {
                        max: limits.max_frame_len,
                    });
                }
                match buf.get(end..end + 2) {
                    None => {
                        // Make room for the whole argument at once (bounded just above),
                        // instead of growing the buffer read by read.
                        buf.reserve(end + 2 - buf.len());
                        return Ok(None);
                    }
                    Some(b"\r\n") => {}
                    Some(_) => return Err(ProtocolError::MissingCrlf("after a bulk string")),
                }
                self.args.push((start, end));
                self.pos = end + 2;
                self.owed -= 1;
            }
            let frame = buf.split_to(self.pos).freeze();
            self.pos = 0;
            let args = self
                .args
                .drain(..)
                .map(|(s, e)| frame.slice(s..e))
                .collect();
            return Ok(Some(Request { frame, args }));
        }
    }
}

fn incomplete(buf: &BytesMut, limits: &Limits) -> Result<Option<Request>, ProtocolError> {
    if buf.len() > limits.max_frame_len {
        Err(ProtocolError::FrameTooLong {
            max: limits.max_frame_len,
        })
    } else {
        Ok(None)
    }
}

enum Inline {
    Request(Request),
    Empty,
    Incomplete,
}

/// An inline command: one line, arguments split like Redis's `sdssplitargs`.
fn inline(buf: &mut BytesMut) -> Result<Inline, ProtocolError> {
    let window = &buf[..buf.len().min(MAX_LINE_LEN + 1)];
    let Some(nl) = memchr::memchr(b'\n', window) else {
        return if buf.len() > MAX_LINE_LEN {
            Err(ProtocolError::LineTooLong)
        } else {
            Ok(Inline::Incomplete)
        };
    };
    let line = buf.split_to(nl + 1);
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = split_args(line)?;
    if args.is_empty() {
        return Ok(Inline::Empty);
    }
    Ok(Inline::Request(Request::from_args(
        args.into_iter().map(Bytes::from).collect(),
    )))
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Past the closing quote at `i`, which must be followed by a space or the end.
fn close_quote(line: &[u8], i: usize) -> Result<usize, ProtocolError> {
    if line.get(i + 1).is_some_and(|&b| !is_space(b)) {
        return Err(ProtocolError::UnbalancedQuotes);
    }
    Ok(i + 1)
}

/// Redis's `sdssplitargs`: words separated by spaces; `"..."` with C escapes (`\n`, `\xHH`,
/// ...) and `'...'` with `\'`; a closing quote must be followed by a space or the end.
pub(crate) fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(out);
        }
        let mut word = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(ProtocolError::UnbalancedQuotes),
                        Some(b'\\') => {
                            let next = line.get(i + 1).copied();
                            let escaped = match next {
                                Some(b'x') => match (
                                    line.get(i + 2).and_then(|&b| hex(b)),
                                    line.get(i + 3).and_then(|&b| hex(b)),
                                ) {
                                    (Some(h), Some(l)) => {
                                        word.push(h * 16 + l);
                                        i += 4;
                                        continue;
                                    }
                                    _ => b'x',
                                },
                                Some(b'n') => b'\n',
                                Some(b'r') => b'\r',
                                Some(b't') => b'\t',
                                Some(b'b') => 0x08,
                                Some(b'a') => 0x07,
                                Some(c) => c,
                                None => return Err(ProtocolError::UnbalancedQuotes),
                            };
                            word.push(escaped);
                            i += 2;
                        }
                        Some(b'"') => {
                            i = close_quote(line, i)?;
                            break;
                        }
                        Some(&c) => {
                            word.push(c);
                            i += 1;
                        }
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(ProtocolError::UnbalancedQuotes),
                        Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                            word.push(b'\'');
                            i += 2;
                        }
                        Some(b'\'') => {
                            i = close_quote(line, i)?;
                            break;
                        }
                        Some(&c) => {
                            word.push(c);
                            i += 1;
                        }
                    }
                }
            }
            _ => {
                while i < line.len() && !is_space(line[i]) {
                    word.push(line[i]);
                    i += 1;
                }
            }
        }
        out.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], limits: &Limits) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut p = RequestParser::new();
        let mut out = Vec::new();
        while let Some(r) = p.parse(&mut buf, limits)? {
            out.push(r.args);
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_inline_pipelines() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n\r\n*0\r\nset \"a b\" 'c\\'d' \"\\x41\\n\"\r\n*1\r\n$4\r\nQUIT\r\n";
        let got = parse_all(input, &Limits::default()).unwrap();
        let want: Vec<Vec<&[u8]>> = vec![
            vec![b"GET", b"k"],
            vec![b"PING"],
            vec![b"set", b"a b", b"c'd", b"A\n"],
            vec![b"QUIT"],
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            let g: Vec<&[u8]> = g.iter().map(|b| &b[..]).collect();
            assert_eq!(g, w);
        }
    }

    #[test]
    fn multibulk_frame_is_the_bytes_received() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let mut buf = BytesMut::from(&input[..]);
        let r = RequestParser::new()
            .parse(&mut buf, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(&r.frame[..], &input[..]);
        assert!(buf.is_empty());
        // Inline requests are re-encoded as multibulk.
        let mut buf = BytesMut::from(&b"get k\r\n"[..]);
        let r = RequestParser::new()
            .parse(&mut buf, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(&r.frame[..], b"*2\r\n$3\r\nget\r\n$1\r\nk\r\n");
    }

    #[test]
    fn resumes_across_reads() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        let limits = Limits::default();
        let mut p = RequestParser::new();
        let mut buf = BytesMut::new();
        for (i, b) in input.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let r = p.parse(&mut buf, &limits).unwrap();
            if i + 1 < input.len() {
                assert!(r.is_none(), "complete too early at {i}");
            } else {
                assert_eq!(r.unwrap().args.len(), 3);
            }
        }
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let limits = Limits {
            max_bulk_len: 8,
            max_elements: 4,
            max_frame_len: 50,
        };
        let cases: [(&[u8], &str); 7] = [
            (b"*x\r\n", "invalid multibulk length"),
            (b"*5\r\n", "5 elements exceed the limit of 4"),
            (b"*1\r\n:1\r\n", "expected '$', got ':'"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (
                b"*1\r\n$9\r\n",
                "bulk string of 9 bytes exceeds the limit of 8",
            ),
            (b"*1\r\n$2\r\nabcd\r\n", "expected CRLF"),
            (b"set \"a\r\n", "unbalanced quotes"),
        ];
        for (input, msg) in cases {
            let e = parse_all(input, &limits).unwrap_err();
            assert!(e.to_string().contains(msg), "{e} / {msg}");
        }
        // A pipeline of small requests is fine; one incomplete request beyond the frame
        // limit is not.
        let big = b"*4\r\n$8\r\naaaaaaaa\r\n$8\r\naaaaaaaa\r\n$8\r\naaaaaaaa\r\n$8\r\naaaa";
        assert!(matches!(
            parse_all(big, &limits),
            Err(ProtocolError::FrameTooLong { max: 50 })
        ));
        let long_inline = vec![b'a'; MAX_LINE_LEN + 1];
        assert_eq!(
            parse_all(&long_inline, &limits),
            Err(ProtocolError::LineTooLong)
        );
    }
}
