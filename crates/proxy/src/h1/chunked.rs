//! The chunked transfer coding (RFC 9112 section 7.1), decoded incrementally from the
//! connection's read buffer: chunk data is handed out as zero-copy slices, trailers as a
//! header map. Sizes, lines and trailer sections are bounded; malformed input is an error,
//! never a panic.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::error::{H1Error, MAX_HEAD, MAX_HEADERS};

/// Longest chunk-size line (with extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// Incremental decoder of the chunked transfer coding.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers,
}

/// Result of one decoding step.
#[derive(Debug)]
pub enum Decoded {
    /// Chunk data.
    Data(Bytes),
    /// More input is needed.
    NeedMore,
    /// The body ended (with trailers, if any).
    Done(Option<HeaderMap>),
}

impl ChunkedDecoder {
    /// Decode from the front of `buf`, consuming what it uses.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(eol) = find_eol(buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(H1Error::Invalid("chunk size line too long"));
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_chunk_size(&buf[..eol.start])?;
                    buf.advance(eol.end);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(rem) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(rem).unwrap_or(usize::MAX).min(buf.len());
                    let left = rem - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                ChunkState::DataEnd => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                    } else if buf.starts_with(b"\n") {
                        buf.advance(1);
                    } else if buf.is_empty() || buf[..] == b"\r"[..] {
                        return Ok(Decoded::NeedMore);
                    } else {
                        return Err(H1Error::Invalid("chunk data not followed by CRLF"));
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    // Empty trailer section: just the final CRLF.
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        return Ok(Decoded::Done(None));
                    }
                    if buf.starts_with(b"\n") {
                        buf.advance(1);
                        return Ok(Decoded::Done(None));
                    }
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((n, parsed))) => {
                            let mut map = HeaderMap::with_capacity(parsed.len());
                            for f in parsed {
                                let name = HeaderName::from_bytes(f.name.as_bytes())
                                    .map_err(|_| H1Error::Invalid("invalid trailer name"))?;
                                let value = HeaderValue::from_bytes(f.value)
                                    .map_err(|_| H1Error::Invalid("invalid trailer value"))?;
                                map.append(name, value);
                            }
                            buf.advance(n);
                            return Ok(Decoded::Done(Some(map)));
                        }
                        Ok(httparse::Status::Partial) => {
                            if buf.len() > MAX_HEAD {
                                return Err(H1Error::HeadTooLarge);
                            }
                            return Ok(Decoded::NeedMore);
                        }
                        Err(_) => return Err(H1Error::Invalid("malformed trailer section")),
                    }
                }
            }
        }
    }
}

/// The line ending at the front of `buf`: `start..end` where `start` is the line's length
/// and `end` is past its terminator (CRLF or bare LF).
fn find_eol(buf: &[u8]) -> Option<Range<usize>> {
    let lf = buf.iter().position(|&b| b == b'\n')?;
    let start = if lf > 0 && buf[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    Some(start..lf + 1)
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    // chunk-size [ chunk-ext ]: hex digits, then optional whitespace / extensions.
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits_end == 0 {
        return Err(H1Error::Invalid("chunk size is not hexadecimal"));
    }
    if digits_end > 16 {
        return Err(H1Error::Invalid("chunk size too large"));
    }
    let rest = &line[digits_end..];
    if !rest.is_empty() && !matches!(rest[0], b';' | b' ' | b'\t') {
        return Err(H1Error::Invalid("garbage after chunk size"));
    }
    let text = std::str::from_utf8(&line[..digits_end])
        .map_err(|_| H1Error::Invalid("chunk size is not hexadecimal"))?;
    u64::from_str_radix(text, 16).map_err(|_| H1Error::Invalid("chunk size too large"))
}

/// Decode a whole chunked body in one buffer (for tests and fuzzing): the data and the
/// trailers, or the error.
pub fn decode_chunked_all(input: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>, usize), H1Error> {
    let mut buf = BytesMut::from(input);
    let mut dec = ChunkedDecoder::default();
    let mut out = Vec::new();
    loop {
        match dec.decode(&mut buf)? {
            Decoded::Data(d) => out.extend_from_slice(&d),
            Decoded::NeedMore => return Err(H1Error::ClosedEarly),
            Decoded::Done(t) => return Ok((out, t, input.len() - buf.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chunked_decoding() {
        let (data, trailers, used) =
            decode_chunked_all(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 9\r\n\r\nNEXT")
                .unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["x-sum"], "9");
        assert_eq!(used, 42);
        let (data, trailers, _) = decode_chunked_all(b"3\nabc\n0\n\n").unwrap();
        assert_eq!((data.as_slice(), trailers.is_none()), (&b"abc"[..], true));
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"11111111111111111\r\n",
            b"5x\r\n",
        ] {
            assert!(
                matches!(decode_chunked_all(bad), Err(H1Error::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            decode_chunked_all(b"5\r\nhel"),
            Err(H1Error::ClosedEarly)
        ));
    }

    proptest! {
        /// Any way of chunking a body and splitting the stream decodes to the same bytes.
        #[test]
        fn chunked_roundtrip(body in proptest::collection::vec(any::<u8>(), 0..2000),
                             sizes in proptest::collection::vec(1usize..300, 1..20),
                             split in 1usize..64) {
            let mut enc = Vec::new();
            let mut rest = &body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                enc.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                enc.extend_from_slice(&rest[..n]);
                enc.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            enc.extend_from_slice(b"0\r\n\r\n");
            // Feed in pieces of `split` bytes, as a socket would.
            let mut dec = ChunkedDecoder::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut done = false;
            for piece in enc.chunks(split) {
                buf.extend_from_slice(piece);
                loop {
                    match dec.decode(&mut buf).unwrap() {
                        Decoded::Data(d) => out.extend_from_slice(&d),
                        Decoded::NeedMore => break,
                        Decoded::Done(_) => { done = true; break; }
                    }
                }
            }
            prop_assert!(done);
            prop_assert_eq!(out, body);
        }

    }
}
