//! Fuzz the RESP codec with bytes as they arrive from a client or a Redis server: the
//! framer, the request parser and the value decoder must never panic, and must agree.
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run resp`.
#![no_main]

use bytes::{Bytes, BytesMut};
use hastack_cache::resp::{Limits, RequestParser, Scanner, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = [
        Limits::default(),
        Limits {
            max_bulk_len: 64,
            max_elements: 16,
            max_frame_len: 1024,
        },
    ];
    for l in &limits {
        // Whole buffer vs. byte-by-byte: the same frame boundary.
        let whole = Scanner::new().scan(data, l);
        if let Ok(Some(len)) = whole {
            assert!(len > 0 && len <= data.len());
            let bytes = Bytes::copy_from_slice(data);
            let (v, vlen) = Value::decode(&bytes, l).expect("framed value decodes").expect("complete");
            assert_eq!(vlen, len);
            let mut again = BytesMut::new();
            v.encode(&mut again);
            let again = again.freeze();
            // A re-encoded value (attributes dropped, bulk errors as simple ones) frames
            // and decodes to itself.
            let (v2, _) = Value::decode(&again, &Limits::default())
                .expect("re-encoded value decodes")
                .expect("complete");
            assert_eq!(v2, v);
        }
        let mut s = Scanner::new();
        for cut in 1..=data.len() {
            match s.scan(&data[..cut], l) {
                Ok(None) => continue,
                r => {
                    if let Ok(Some(len)) = whole {
                        assert_eq!(r, Ok(Some(len)));
                    }
                    break;
                }
            }
        }
        // Requests: every one has a name; the parser never takes more than it has.
        let mut buf = BytesMut::from(data);
        let mut p = RequestParser::new();
        while let Ok(Some(req)) = p.parse(&mut buf, l) {
            assert!(!req.args.is_empty());
        }
    }
});
