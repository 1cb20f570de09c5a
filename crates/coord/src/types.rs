//! Plain values the client returns (the generated protobuf types stay inside the crate's
//! `proto` module; consumers see these).

use std::time::Duration;

use crate::error::Error;
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb;

/// A key and its value with etcd's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the key's creation (unchanged by later puts; a new key after a delete
    /// gets a new one).
    pub create_revision: i64,
    /// Revision of its last change.
    pub mod_revision: i64,
    /// Number of changes since its creation (1 on creation).
    pub version: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

impl KeyValue {
    pub(crate) fn from_proto(kv: mvccpb::KeyValue) -> Self {
        KeyValue {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }

    /// The key as text (lossy).
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }

    /// The value as text (lossy).
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// The answer to a range read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The keys, in the order asked for (key order by default).
    pub kvs: Vec<KeyValue>,
    /// The store's revision at the read.
    pub revision: i64,
    /// Whether a limit cut the answer short.
    pub more: bool,
    /// How many keys matched.
    pub count: i64,
}

impl Listing {
    pub(crate) fn from_proto(r: pb::RangeResponse) -> Result<Listing, Error> {
        let revision = crate::client::revision_of(r.header.as_ref())?;
        Ok(Listing {
            kvs: r.kvs.into_iter().map(KeyValue::from_proto).collect(),
            revision,
            more: r.more,
            count: r.count,
        })
    }
}

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease id.
    pub id: i64,
    /// The TTL granted.
    pub ttl: Duration,
}

/// What the server knows of a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease id.
    pub id: i64,
    /// Time left before it expires (whole seconds, rounded down).
    pub remaining: Duration,
    /// The TTL it was granted.
    pub granted: Duration,
    /// Its keys, when asked for.
    pub keys: Vec<Vec<u8>>,
}

/// One member's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// Server version.
    pub version: String,
    /// The member answering.
    pub member_id: u64,
    /// The leader it knows (0: none).
    pub leader: u64,
    /// Its revision.
    pub revision: i64,
    /// Raft term.
    pub raft_term: u64,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created or changed.
    Put,
    /// Deleted (or its lease expired).
    Delete,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change (for a delete: the key and the deletion's revision).
    pub kv: KeyValue,
    /// The key before the change, when the watch asked for it.
    pub prev: Option<KeyValue>,
}

impl Event {
    pub(crate) fn from_proto(e: mvccpb::Event) -> Result<Event, String> {
        let kind = match mvccpb::event::EventType::try_from(e.r#type) {
            Ok(mvccpb::event::EventType::Put) => EventKind::Put,
            Ok(mvccpb::event::EventType::Delete) => EventKind::Delete,
            Err(_) => return Err(format!("unknown event type {}", e.r#type)),
        };
        let kv = e.kv.ok_or("an event without a key")?;
        if kv.mod_revision <= 0 {
            return Err(format!("an event with mod revision {}", kv.mod_revision));
        }
        Ok(Event {
            kind,
            kv: KeyValue::from_proto(kv),
            prev: e.prev_kv.map(KeyValue::from_proto),
        })
    }

    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// The end of the range of keys starting with `prefix` (etcd's `GetPrefixRangeEnd`): the
/// prefix with its last byte below 0xff incremented; `\0` (everything) if there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_like_etcd() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
