//! Fuzz the VRRP parsers: raw-socket bytes (IPv4 header + VRRP) as they arrive from the LAN.
//! Run: `cargo +nightly fuzz run vrrp` from the repository root.
#![no_main]

use std::net::Ipv4Addr;

use hastack_vip::packet::{ChecksumKind, parse, parse_ipv4};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As the driver does: the IP header first, then the payload it delimits.
    if let Ok(ip) = parse_ipv4(data) {
        let payload = &data[ip.header_len..ip.total_len];
        if let Ok((advert, kind)) = parse(payload, ip.src, ip.dst) {
            // Whatever parses re-encodes to something that parses to the same advert.
            let bytes = advert.encode(ip.src, ip.dst, kind);
            let (again, _) = parse(&bytes, ip.src, ip.dst).expect("re-encoded advert parses");
            assert_eq!(again, advert);
        }
    }
    // And the VRRP parser alone, with fixed addresses and either checksum form.
    let src = Ipv4Addr::new(10, 0, 0, 1);
    let dst = Ipv4Addr::new(224, 0, 0, 18);
    if let Ok((a, _)) = parse(data, src, dst) {
        let _ = a.encode(src, dst, ChecksumKind::V2Style);
    }
});
