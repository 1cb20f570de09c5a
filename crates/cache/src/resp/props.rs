//! Properties of the codec over arbitrary input: never a panic, never an answer that
//! contradicts itself. The same properties run unbounded in `fuzz/fuzz_targets/resp.rs`.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn small_limits() -> Limits {
    Limits {
        max_bulk_len: 64,
        max_elements: 16,
        max_frame_len: 512,
    }
}

/// Bytes that look like RESP often enough to get deep into the parsers.
fn resp_like() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"*".to_vec()),
        Just(b"$".to_vec()),
        Just(b"%".to_vec()),
        Just(b"|".to_vec()),
        Just(b">".to_vec()),
        Just(b"+".to_vec()),
        Just(b"-".to_vec()),
        Just(b":".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"\"".to_vec()),
        (0u32..20).prop_map(|n| n.to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..4),
    ];
    proptest::collection::vec(token, 0..64).prop_map(|v| v.concat())
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9 ]{0,8}".prop_map(|s| Value::Simple(Bytes::from(s))),
        "[a-zA-Z ]{0,8}".prop_map(|s| Value::Error(Bytes::from(s))),
        any::<i64>().prop_map(Value::Integer),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(|b| Value::Bulk(Bytes::from(b))),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Boolean),
        "-?[0-9]{1,30}".prop_map(|s| Value::BigNumber(Bytes::from(s))),
        "[0-9]{1,4}\\.[0-9]{1,3}".prop_map(|s| Value::Double(Bytes::from(s))),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Set),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Push),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop_oneof![resp_like(), proptest::collection::vec(any::<u8>(), 0..256)]) {
        for limits in [small_limits(), Limits::default()] {
            // The framer: a length within the buffer, and the same answer however the
            // bytes are split across calls.
            let whole = Scanner::new().scan(&data, &limits);
            if let Ok(Some(len)) = whole {
                prop_assert!(len > 0 && len <= data.len());
                let bytes = Bytes::copy_from_slice(&data);
                let decoded = Value::decode(&bytes, &limits);
                prop_assert!(matches!(decoded, Ok(Some((_, l))) if l == len), "{decoded:?}");
            }
            let mut s = Scanner::new();
            let mut split = Ok(None);
            for cut in 1..=data.len() {
                split = s.scan(&data[..cut], &limits);
                if !matches!(split, Ok(None)) {
                    break;
                }
            }
            if let Ok(Some(len)) = whole {
                prop_assert_eq!(split, Ok(Some(len)));
            }
            // The request parser: consumes what it returns, never more than it has.
            let mut buf = BytesMut::from(&data[..]);
            let mut p = RequestParser::new();
            let mut guard = 0;
            while let Ok(Some(req)) = p.parse(&mut buf, &limits) {
                prop_assert!(!req.args.is_empty());
                guard += 1;
                prop_assert!(guard <= data.len());
            }
        }
    }

    #[test]
    fn encoded_values_frame_and_decode_to_themselves(v in value()) {
        let mut out = BytesMut::new();
        v.encode(&mut out);
        let bytes = out.freeze();
        let limits = Limits::default();
        prop_assert_eq!(Scanner::new().scan(&bytes, &limits), Ok(Some(bytes.len())));
        let (back, len) = Value::decode(&bytes, &limits).unwrap().unwrap();
        prop_assert_eq!(len, bytes.len());
        prop_assert_eq!(back, v);
    }

    #[test]
    fn commands_round_trip_through_the_request_parser(
        args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..8),
        split in 0usize..200,
    ) {
        let mut enc = BytesMut::new();
        write::command(&mut enc, args.iter().map(|a| &a[..]));
        let limits = Limits::default();
        let mut p = RequestParser::new();
        let cut = split.min(enc.len());
        let mut buf = BytesMut::from(&enc[..cut]);
        let first = p.parse(&mut buf, &limits).unwrap();
        let req = match first {
            Some(r) => r,
            None => {
                buf.extend_from_slice(&enc[cut..]);
                p.parse(&mut buf, &limits).unwrap().unwrap()
            }
        };
        let got: Vec<Vec<u8>> = req.args.iter().map(|a| a.to_vec()).collect();
        prop_assert_eq!(got, args);
        prop_assert_eq!(&req.frame[..], &enc[..]);
        prop_assert!(buf.is_empty());
    }
}
