//! Encoders of single RESP2 replies and of commands, appending to a buffer.

use bytes::{BufMut, BytesMut};

/// `+text\r\n`. `text` must not contain CR or LF (callers pass constants or sanitised text).
pub fn simple(out: &mut BytesMut, text: &str) {
    out.put_u8(b'+');
    put_line(out, text.as_bytes());
}

/// `-message\r\n`; CR and LF inside `message` become spaces, so an error built from
/// arbitrary text can never break the framing.
pub fn error(out: &mut BytesMut, message: &str) {
    out.put_u8(b'-');
    put_line(out, message.as_bytes());
}

/// `:n\r\n`.
pub fn integer(out: &mut BytesMut, n: i64) {
    out.put_u8(b':');
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
    out.put_slice(b"\r\n");
}

/// `$len\r\nbytes\r\n`.
pub fn bulk(out: &mut BytesMut, bytes: &[u8]) {
    header(out, b'$', bytes.len());
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

/// `$-1\r\n`: the RESP2 null.
pub fn null(out: &mut BytesMut) {
    out.put_slice(b"$-1\r\n");
}

/// `*n\r\n`: the header of an array of `n` elements, which the caller appends.
pub fn array(out: &mut BytesMut, n: usize) {
    header(out, b'*', n);
}

/// A command as a multibulk array of bulk strings.
pub fn command<'a>(out: &mut BytesMut, args: impl ExactSizeIterator<Item = &'a [u8]>) {
    array(out, args.len());
    for a in args {
        bulk(out, a);
    }
}

/// `<kind><n>\r\n`.
pub(crate) fn header(out: &mut BytesMut, kind: u8, n: usize) {
    out.put_u8(kind);
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
    out.put_slice(b"\r\n");
}

fn put_line(out: &mut BytesMut, text: &[u8]) {
    out.reserve(text.len() + 2);
    for &b in text {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes() {
        let mut out = BytesMut::new();
        simple(&mut out, "OK");
        error(&mut out, "ERR bad\r\nthing");
        integer(&mut out, -42);
        bulk(&mut out, b"a\r\nb");
        null(&mut out);
        command(&mut out, [&b"GET"[..], b"k"].into_iter());
        assert_eq!(
            &out[..],
            &b"+OK\r\n-ERR bad  thing\r\n:-42\r\n$4\r\na\r\nb\r\n$-1\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"[..]
        );
    }
}
