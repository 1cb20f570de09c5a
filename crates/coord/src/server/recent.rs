//! The most recent changes, in memory, for watchers that are (nearly) caught up.
//!
//! After each commit the driver appends the batch's events here *before* it publishes the new
//! revision, so a watcher that sees revision `r` finds every event up to `r` either here or in
//! the history table. A live watcher then reads from memory instead of opening a storage read
//! per change (a thousand watchers on one key would otherwise mean a thousand reads per put);
//! one that is further behind than the cache reaches falls back to the table. The cache holds
//! whole revisions only, at most `cap` events (plus the rest of the revision that crosses it).

use std::collections::VecDeque;

use prost::Message;

use super::store::{HistoryRead, KeyRange};
use crate::proto::mvccpb::Event;

/// Recent events, oldest first.
#[derive(Debug)]
pub struct Recent {
    events: VecDeque<(i64, Event, usize)>,
    /// Every event with a revision at or above this is here (until newer ones push it out).
    first_rev: i64,
    cap: usize,
}

impl Recent {
    /// An empty cache for a store at revision `revision`.
    pub fn new(revision: i64, cap: usize) -> Recent {
        Recent {
            events: VecDeque::new(),
            first_rev: revision + 1,
            cap: cap.max(1),
        }
    }

    /// Append a committed batch's events (in revision order).
    pub fn push(&mut self, events: Vec<(i64, Event)>) {
        for (rev, e) in events {
            let size = e.encoded_len();
            self.events.push_back((rev, e, size));
        }
        let mut popped = None;
        while self.events.len() > self.cap {
            popped = self.events.pop_front().map(|(r, _, _)| r);
        }
        if let Some(cut) = popped {
            // Never keep part of a revision: drop the rest of the one that was cut.
            while self.events.front().is_some_and(|(r, _, _)| *r == cut) {
                self.events.pop_front();
            }
            self.first_rev = cut + 1;
        }
    }

    /// Events with revision in `[from, to]` whose key is in `range`, cut at a revision
    /// boundary after `max_events` events or `max_bytes` bytes; `None` when `from` is older
    /// than the cache.
    pub fn read(
        &self,
        range: &KeyRange<'_>,
        from: i64,
        to: i64,
        max_events: usize,
        max_bytes: usize,
    ) -> Option<HistoryRead> {
        if from < self.first_rev {
            return None;
        }
        let start = self.events.partition_point(|(r, _, _)| *r < from);
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut last = from - 1;
        for (rev, e, size) in self.events.range(start..) {
            if *rev > to {
                break;
            }
            if *rev != last && (out.len() >= max_events || bytes >= max_bytes) {
                return Some(HistoryRead::Events(out, last));
            }
            last = *rev;
            if e.kv.as_ref().is_some_and(|kv| range.contains(&kv.key)) {
                bytes += size;
                out.push(e.clone());
            }
        }
        Some(HistoryRead::Events(out, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;

    fn ev(rev: i64, key: &str) -> (i64, Event) {
        (
            rev,
            Event {
                r#type: 0,
                kv: Some(KeyValue {
                    key: key.into(),
                    mod_revision: rev,
                    ..Default::default()
                }),
                prev_kv: None,
            },
        )
    }

    fn revs(r: Option<HistoryRead>) -> Option<Vec<i64>> {
        match r? {
            HistoryRead::Events(e, _) => Some(
                e.iter()
                    .map(|e| e.kv.as_ref().unwrap().mod_revision)
                    .collect(),
            ),
            HistoryRead::Compacted(_) => None,
        }
    }

    #[test]
    fn serves_what_it_holds_and_declines_the_rest() {
        let mut r = Recent::new(1, 4);
        let all = KeyRange::new(b"\0", b"\0");
        r.push(vec![ev(2, "a"), ev(3, "b")]);
        assert_eq!(revs(r.read(&all, 2, 3, 100, usize::MAX)), Some(vec![2, 3]));
        assert_eq!(
            revs(r.read(&KeyRange::new(b"b", b""), 2, 3, 100, usize::MAX)),
            Some(vec![3])
        );
        // A txn's three events share revision 4: over the cap, revision 2 goes.
        r.push(vec![ev(4, "x"), ev(4, "y"), ev(4, "z")]);
        assert_eq!(
            revs(r.read(&all, 2, 4, 100, usize::MAX)),
            None,
            "revision 2 is gone"
        );
        assert_eq!(
            revs(r.read(&all, 3, 4, 100, usize::MAX)),
            Some(vec![3, 4, 4, 4])
        );
        // A batch that overflows in the middle of a revision drops that revision whole.
        r.push(vec![ev(5, "p"), ev(5, "q")]);
        assert_eq!(revs(r.read(&all, 4, 5, 100, usize::MAX)), None);
        assert_eq!(revs(r.read(&all, 5, 5, 100, usize::MAX)), Some(vec![5, 5]));
    }

    #[test]
    fn batches_end_at_a_revision_boundary() {
        let mut r = Recent::new(1, 100);
        r.push(vec![ev(2, "a"), ev(2, "b"), ev(3, "c")]);
        match r.read(&KeyRange::new(b"\0", b"\0"), 2, 3, 1, usize::MAX) {
            Some(HistoryRead::Events(e, last)) => {
                assert_eq!((e.len(), last), (2, 2), "revision 2 whole, then stop");
            }
            other => panic!("{other:?}"),
        }
    }
}
