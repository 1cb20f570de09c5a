//! The decoded tree of one RESP2/RESP3 value, for the replies hastack inspects.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Limits, ProtocolError, Scanner, bad_number, find_crlf, parse_i64, write};

/// One RESP value. Strings are slices of the received buffer (zero-copy).
///
/// RESP3 attributes (`|`) are read and dropped: the value they annotate is returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `+text`.
    Simple(Bytes),
    /// `-text` (RESP3 `!len` bulk errors decode here too).
    Error(Bytes),
    /// `:n`.
    Integer(i64),
    /// `$len` bytes.
    Bulk(Bytes),
    /// `$-1`, `*-1`, or RESP3 `_`.
    Null,
    /// `*n`.
    Array(Vec<Value>),
    /// RESP3 `%n`: key/value pairs in wire order.
    Map(Vec<(Value, Value)>),
    /// RESP3 `~n`.
    Set(Vec<Value>),
    /// RESP3 `>n` (pub/sub messages, invalidations).
    Push(Vec<Value>),
    /// RESP3 `,` as its text (`1.5`, `inf`, `nan`).
    Double(Bytes),
    /// RESP3 `#t` / `#f`.
    Boolean(bool),
    /// RESP3 `(` digits.
    BigNumber(Bytes),
    /// RESP3 `=len` `fmt:text`, kept whole.
    Verbatim(Bytes),
}

impl Value {
    /// Decode the value at the start of `buf`: `Ok(Some((value, len)))`, `Ok(None)` when
    /// incomplete. The framing is checked against `limits` first, so decoding never
    /// recurses deeper than [`super::MAX_DEPTH`] nor allocates for announced lengths that
    /// are not there.
    pub fn decode(buf: &Bytes, limits: &Limits) -> Result<Option<(Value, usize)>, ProtocolError> {
        let Some(len) = Scanner::new().scan(buf, limits)? else {
            return Ok(None);
        };
        let frame = buf.slice(..len);
        let (value, end) = decode_at(&frame, 0)?;
        debug_assert_eq!(end, len);
        Ok(Some((value, len)))
    }

    /// Append the value's encoding. RESP3 types are written as RESP3.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Value::Simple(s) => line(out, b'+', s),
            Value::Error(s) => line(out, b'-', s),
            Value::Integer(n) => write::integer(out, *n),
            Value::Bulk(b) => write::bulk(out, b),
            Value::Null => write::null(out),
            Value::Array(items) => {
                write::header(out, b'*', items.len());
                items.iter().for_each(|v| v.encode(out));
            }
            Value::Set(items) => {
                write::header(out, b'~', items.len());
                items.iter().for_each(|v| v.encode(out));
            }
            Value::Push(items) => {
                write::header(out, b'>', items.len());
                items.iter().for_each(|v| v.encode(out));
            }
            Value::Map(pairs) => {
                write::header(out, b'%', pairs.len());
                for (k, v) in pairs {
                    k.encode(out);
                    v.encode(out);
                }
            }
            Value::Double(s) => line(out, b',', s),
            Value::Boolean(b) => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Value::BigNumber(s) => line(out, b'(', s),
            Value::Verbatim(s) => {
                write::header(out, b'=', s.len());
                out.put_slice(s);
                out.put_slice(b"\r\n");
            }
        }
    }

    /// The bytes of a simple string, bulk string or verbatim string.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Simple(b) | Value::Bulk(b) | Value::Verbatim(b) => Some(b),
            _ => None,
        }
    }

    /// The integer of `:n`, or of a string holding a decimal integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Integer(n) => Some(*n),
            other => other.as_bytes().and_then(|b| parse_i64(b)),
        }
    }

    /// The elements of an array, set or push.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }
}

fn line(out: &mut BytesMut, kind: u8, text: &[u8]) {
    out.put_u8(kind);
    out.put_slice(text);
    out.put_slice(b"\r\n");
}

/// Decode a value already validated by the scanner. Still returns errors rather than
/// assuming validity, so a logic slip can never become a panic.
fn decode_at(buf: &Bytes, at: usize) -> Result<(Value, usize), ProtocolError> {
    let kind = *buf
        .get(at)
        .ok_or(ProtocolError::MissingCrlf("in a frame"))?;
    let cr = find_crlf(buf, at + 1)?.ok_or(ProtocolError::MissingCrlf("in a frame"))?;
    let text = buf.slice(at + 1..cr);
    let after = cr + 2;
    let count = |what| -> Result<i64, ProtocolError> {
        parse_i64(&text).ok_or_else(|| bad_number(what, &text))
    };
    let list = |n: i64, mut pos: usize| -> Result<(Vec<Value>, usize), ProtocolError> {
        let mut items = Vec::with_capacity((n as usize).min(1024));
        for _ in 0..n {
            let (v, next) = decode_at(buf, pos)?;
            items.push(v);
            pos = next;
        }
        Ok((items, pos))
    };
    Ok(match kind {
        b'+' => (Value::Simple(text), after),
        b'-' => (Value::Error(text), after),
        b':' => (Value::Integer(count("integer")?), after),
        b'_' => (Value::Null, after),
        b'#' => (Value::Boolean(&text[..] == b"t"), after),
        b',' => (Value::Double(text), after),
        b'(' => (Value::BigNumber(text), after),
        b'$' | b'!' | b'=' => {
            let n = count("bulk length")?;
            if n < 0 {
                (Value::Null, after)
            } else {
                let end = after + n as usize;
                let body = buf
                    .get(after..end)
                    .map(|_| buf.slice(after..end))
                    .ok_or(ProtocolError::MissingCrlf("after a bulk string"))?;
                let v = match kind {
                    b'$' => Value::Bulk(body),
                    b'!' => Value::Error(body),
                    _ => Value::Verbatim(body),
                };
                (v, end + 2)
            }
        }
        b'*' | b'~' | b'>' => {
            let n = count("multibulk length")?;
            if n < 0 {
                (Value::Null, after)
            } else {
                let (items, end) = list(n, after)?;
                let v = match kind {
                    b'*' => Value::Array(items),
                    b'~' => Value::Set(items),
                    _ => Value::Push(items),
                };
                (v, end)
            }
        }
        b'%' => {
            let n = count("map length")?;
            let (items, end) = list(2 * n.max(0), after)?;
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            (Value::Map(pairs), end)
        }
        b'|' => {
            let n = count("attribute length")?;
            let (_, end) = list(2 * n.max(0), after)?;
            decode_at(buf, end)?
        }
        other => return Err(ProtocolError::UnknownType(char::from(other))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &[u8]) -> Value {
        let (v, len) = Value::decode(&Bytes::copy_from_slice(text), &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(len, text.len());
        v
    }

    #[test]
    fn decodes_resp2_and_resp3() {
        assert_eq!(
            decode(b"*3\r\n$1\r\na\r\n$-1\r\n:5\r\n"),
            Value::Array(vec![
                Value::Bulk(Bytes::from_static(b"a")),
                Value::Null,
                Value::Integer(5)
            ])
        );
        assert_eq!(
            decode(b"%1\r\n+role\r\n#t\r\n"),
            Value::Map(vec![(
                Value::Simple(Bytes::from_static(b"role")),
                Value::Boolean(true)
            )])
        );
        assert_eq!(
            decode(b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n"),
            Value::Bulk(Bytes::from_static(b"v"))
        );
        assert_eq!(
            decode(b"!5\r\nERR x\r\n"),
            Value::Error(Bytes::from_static(b"ERR x"))
        );
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let v = Value::Array(vec![
            Value::Simple(Bytes::from_static(b"OK")),
            Value::Map(vec![(
                Value::Integer(1),
                Value::Double(Bytes::from_static(b"2.5")),
            )]),
            Value::Set(vec![Value::Boolean(false), Value::Null]),
            Value::Push(vec![Value::BigNumber(Bytes::from_static(
                b"-12345678901234567890",
            ))]),
            Value::Verbatim(Bytes::from_static(b"txt:hello")),
            Value::Error(Bytes::from_static(b"ERR nope")),
        ]);
        let mut out = BytesMut::new();
        v.encode(&mut out);
        assert_eq!(decode(&out), v);
    }
}
