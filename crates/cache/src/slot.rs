//! Redis Cluster key slots: CRC16/XMODEM of the key (or of its `{hash tag}`) mod 16384,
//! bit-exact with Redis's `keyHashSlot` (checked against a real `redis-server` in cluster
//! mode by `crates/cli/tests/cache_slots.rs`).

use crc::{CRC_16_XMODEM, Crc};

/// Number of slots in the key space.
pub const SLOTS: usize = 16384;

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_XMODEM);

/// The part of `key` that is hashed: the text between the first `{` and the first `}`
/// after it, when that text is not empty; otherwise the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = memchr::memchr(b'{', key) {
        let rest = &key[open + 1..];
        if let Some(close) = memchr::memchr(b'}', rest) {
            if close > 0 {
                return &rest[..close];
            }
        }
    }
    key
}

/// The slot of `key`, in `0..16384`.
pub fn key_slot(key: &[u8]) -> u16 {
    // 16384 is a power of two: `& (SLOTS - 1)` is Redis's `& 0x3FFF`.
    CRC16.checksum(hash_tag(key)) & (SLOTS as u16 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vectors_from_the_redis_cluster_spec() {
        // The spec's CRC16 check value: "123456789" -> 0x31C3.
        assert_eq!(CRC16.checksum(b"123456789"), 0x31C3);
        // `CLUSTER KEYSLOT` answers of redis-server 7.0.15.
        for (key, slot) in [
            (&b"foo"[..], 12182),
            (b"bar", 5061),
            (b"hello", 866),
            (b"", 0),
            (b"{user1000}.following", 3443),
            (b"{user1000}.followers", 3443),
            (b"foo{}{bar}", 8363),
            (b"foo{{bar}}zap", 4015),
            (b"foo{bar}{zap}", 5061),
        ] {
            assert_eq!(key_slot(key), slot, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn hash_tag_rules() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
        assert_eq!(hash_tag(b"}{x}"), b"x");
    }

    proptest! {
        #[test]
        fn slot_in_range_and_tag_decides(prefix in ".*", tag in "[^{}]+", suffix in ".*") {
            let key = format!("{}{{{tag}}}{suffix}", prefix.replace('{', ""));
            let slot = key_slot(key.as_bytes());
            prop_assert!((slot as usize) < SLOTS);
            // Keys sharing a non-empty tag (with no `{` before it) share a slot.
            prop_assert_eq!(slot, key_slot(tag.as_bytes()));
        }
    }
}
