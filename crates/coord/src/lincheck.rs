//! A linearizability checker for register histories (Wing & Gong's search with Lowe's
//! memoization, the algorithm of Knossos and Porcupine).
//!
//! A history is a list of operations on keys, each with the instant it was invoked and the
//! instant its answer arrived, or no answer (the outcome is unknown: a write may or may not
//! have happened, at any point after its invocation). The history is linearizable if every
//! operation can be placed at one instant between its invocation and its answer so that the
//! sequence is a valid run of a register: each read sees the last write, each CAS succeeds
//! exactly when the value matches.
//!
//! Linearizability is local (Herlihy & Wing), so each key is checked on its own. The search
//! is exponential in the worst case; [`check`] takes a step budget and answers
//! [`Verdict::Inconclusive`] rather than run forever.
//!
//! Written here because no maintained Rust crate checks a recorded history this way (the
//! `stateright` crate checks models it explores itself, not a history recorded from a real
//! system; Porcupine and Knossos are Go and Clojure).

use std::collections::{BTreeMap, HashSet};

/// What an operation did, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A read that returned this value (`None`: the key was absent).
    Read(Option<u64>),
    /// A write of this value.
    Write(u64),
    /// Compare-and-swap `from` -> `to`; `ok` is what the server answered (`None`: unknown).
    Cas {
        /// Expected value (`None`: absent).
        from: Option<u64>,
        /// New value.
        to: u64,
        /// Whether it swapped, if known.
        ok: Option<bool>,
    },
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// Which register.
    pub key: String,
    /// What it did.
    pub kind: OpKind,
    /// Invocation time (any monotonic unit, e.g. nanoseconds since the test began).
    pub call: u64,
    /// Answer time; `None` when no answer came (outcome unknown).
    pub ret: Option<u64>,
}

/// The checker's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable,
    /// This key's history is not.
    Violation {
        /// The key.
        key: String,
        /// The operations on that key.
        ops: usize,
    },
    /// The step budget ran out on this key.
    Inconclusive {
        /// The key.
        key: String,
    },
}

/// Check `history`, spending at most `budget` search steps per key. Reads with an unknown
/// outcome are dropped (they constrain nothing).
pub fn check(history: &[Op], budget: u64) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        if matches!(op.kind, OpKind::Read(_)) && op.ret.is_none() {
            continue;
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        match check_key(&ops, budget) {
            Some(true) => {}
            Some(false) => {
                return Verdict::Violation {
                    key: key.to_string(),
                    ops: ops.len(),
                };
            }
            None => {
                return Verdict::Inconclusive {
                    key: key.to_string(),
                };
            }
        }
    }
    Verdict::Linearizable
}

/// Apply `kind` to a register holding `state`: the new state, or `None` if the operation's
/// observed result is impossible in that state.
fn step(state: Option<u64>, kind: &OpKind) -> Option<Option<u64>> {
    match kind {
        OpKind::Read(v) => (*v == state).then_some(state),
        OpKind::Write(v) => Some(Some(*v)),
        OpKind::Cas { from, to, ok } => {
            let matches = state == *from;
            match ok {
                Some(true) => matches.then_some(Some(*to)),
                Some(false) => (!matches).then_some(state),
                None => Some(if matches { Some(*to) } else { state }),
            }
        }
    }
}

/// An entry of the time-ordered event list: a call or a return of operation `op`.
#[derive(Clone, Copy, Debug)]
struct Entry {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// WGL search over one key. `Some(true)`: linearizable; `None`: budget exhausted.
fn check_key(ops: &[&Op], budget: u64) -> Option<bool> {
    const NIL: usize = usize::MAX;
    let n = ops.len();
    // Events: (time, returns-before-calls at equal times, op, is_call). Unknown answers are at
    // the end of time.
    let mut events: Vec<(u64, u8, usize, bool)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, 1, i, true));
        events.push((op.ret.unwrap_or(u64::MAX), 0, i, false));
    }
    events.sort();
    // Doubly linked list with a head sentinel at index 0.
    let mut list: Vec<Entry> = Vec::with_capacity(2 * n + 1);
    list.push(Entry {
        op: NIL,
        is_call: false,
        prev: NIL,
        next: 1,
    });
    let mut call_at = vec![0usize; n];
    let mut ret_at = vec![0usize; n];
    for (k, (_, _, op, is_call)) in events.iter().enumerate() {
        let idx = k + 1;
        list.push(Entry {
            op: *op,
            is_call: *is_call,
            prev: idx - 1,
            next: if k + 1 == events.len() { NIL } else { idx + 1 },
        });
        if *is_call {
            call_at[*op] = idx;
        } else {
            ret_at[*op] = idx;
        }
    }
    if events.is_empty() {
        list[0].next = NIL;
    }
    let unlink = |list: &mut Vec<Entry>, i: usize| {
        let (p, nx) = (list[i].prev, list[i].next);
        list[p].next = nx;
        if nx != NIL {
            list[nx].prev = p;
        }
    };
    let relink = |list: &mut Vec<Entry>, i: usize| {
        let (p, nx) = (list[i].prev, list[i].next);
        list[p].next = i;
        if nx != NIL {
            list[nx].prev = i;
        }
    };
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new(); // (op, state before it)
    let mut state: Option<u64> = None;
    let mut entry = list[0].next;
    let mut steps = 0u64;
    while list[0].next != NIL {
        steps += 1;
        if steps > budget {
            return None;
        }
        if entry != NIL && list[entry].is_call {
            let op = list[entry].op;
            let mut next_state = None;
            if let Some(s) = step(state, &ops[op].kind) {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), s)) {
                    next_state = Some(s);
                } else {
                    linearized[op / 64] &= !(1 << (op % 64));
                }
            }
            match next_state {
                Some(s) => {
                    stack.push((op, state));
                    state = s;
                    unlink(&mut list, call_at[op]);
                    unlink(&mut list, ret_at[op]);
                    entry = list[0].next;
                }
                None => entry = list[entry].next,
            }
        } else {
            // A return whose call is not linearized yet (or the end): backtrack.
            let Some((op, before)) = stack.pop() else {
                return Some(false);
            };
            state = before;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut list, ret_at[op]);
            relink(&mut list, call_at[op]);
            entry = list[call_at[op]].next;
        }
    }
    Some(true)
}

/// A workload for [`check`]: client `id` runs random reads, writes and compare-and-swaps on
/// the registers `x` and `y` until `stop`, recording each operation with its invocation and
/// answer times (nanoseconds since `t0`) into `history`. A call that certainly was not applied
/// ([`crate::Retry::Safe`]) is left out; one whose outcome is unknown is recorded without an
/// answer. Values are unique per client and operation, so a read names the write it saw.
pub async fn register_client(
    id: u64,
    c: crate::Client,
    t0: tokio::time::Instant,
    history: std::sync::Arc<parking_lot::Mutex<Vec<Op>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use crate::{Cas, Expect, Retry};
    use tokio::time::Instant;
    let mut rng = fastrand::Rng::with_seed(id);
    let mut n = 0u64;
    let ns = |t: Instant| u64::try_from((t - t0).as_nanos()).unwrap_or(u64::MAX);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let key = if rng.bool() { "x" } else { "y" };
        n += 1;
        let value = id * 1_000_000 + n;
        let call = Instant::now();
        let (kind, outcome) = match rng.u8(0..3) {
            0 => match c.get(key).await {
                Ok((kv, _)) => {
                    let v = kv.and_then(|kv| kv.value_str().parse().ok());
                    (OpKind::Read(v), Ok(()))
                }
                Err(e) => (OpKind::Read(None), Err(e)),
            },
            1 => (
                OpKind::Write(value),
                c.put(key, value.to_string(), None).await.map(|_| ()),
            ),
            _ => {
                // Expect absent, or a value this client may have written recently.
                let back = rng.u64(0..4);
                let from = (back > 0 && n > back).then(|| id * 1_000_000 + n - back);
                let expect = match from {
                    None => Expect::Absent,
                    Some(v) => Expect::Value(v.to_string().into_bytes()),
                };
                let r = c.cas(key, expect, value.to_string(), None).await;
                let ok = match &r {
                    Ok(Cas::Swapped(_)) => Some(true),
                    Ok(Cas::Conflict(_)) => Some(false),
                    Err(_) => None,
                };
                (
                    OpKind::Cas {
                        from,
                        to: value,
                        ok,
                    },
                    r.map(|_| ()),
                )
            }
        };
        let ret = match &outcome {
            Ok(()) => Some(ns(Instant::now())),
            Err(e) if e.retry() == Retry::Safe => continue,
            Err(_) if matches!(kind, OpKind::Read(_)) => continue,
            Err(_) => None,
        };
        history.lock().push(Op {
            key: key.to_string(),
            kind,
            call: ns(call),
            ret,
        });
        if outcome.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Check a watch's delivery log against the writes: `seen` (key, revision) in the order the
/// watch delivered them, `acked` the writes whose put was acknowledged, `attempted` every key
/// a put was tried on (acknowledged or not: one with an unknown outcome may be seen). The
/// watch must deliver in strictly increasing revision order (so nothing twice), every
/// acknowledged write, and nothing that was never written. `Err` names the first breach.
pub fn check_watch_delivery(
    seen: &[(String, i64)],
    acked: &[(String, i64)],
    attempted: &std::collections::HashSet<String>,
) -> Result<(), String> {
    if let Some(w) = seen.windows(2).find(|w| w[0].1 >= w[1].1) {
        return Err(format!(
            "out of order or repeated: {:?} then {:?}",
            w[0], w[1]
        ));
    }
    let delivered: HashSet<&(String, i64)> = seen.iter().collect();
    if let Some(lost) = acked.iter().find(|a| !delivered.contains(a)) {
        return Err(format!("acknowledged write {lost:?} never delivered"));
    }
    if let Some(invented) = seen.iter().find(|(k, _)| !attempted.contains(k)) {
        return Err(format!("event {invented:?} for a key never written"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, call: u64, ret: Option<u64>) -> Op {
        Op {
            key: "x".into(),
            kind,
            call,
            ret,
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            op(OpKind::Read(None), 0, Some(1)),
            op(OpKind::Write(1), 2, Some(3)),
            op(OpKind::Read(Some(1)), 4, Some(5)),
            op(
                OpKind::Cas {
                    from: Some(1),
                    to: 2,
                    ok: Some(true),
                },
                6,
                Some(7),
            ),
            op(
                OpKind::Cas {
                    from: Some(1),
                    to: 3,
                    ok: Some(false),
                },
                8,
                Some(9),
            ),
            op(OpKind::Read(Some(2)), 10, Some(11)),
        ];
        assert_eq!(check(&h, 1_000_000), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_rejected() {
        // The write of 2 completed before the read began; the read still saw 1.
        let h = vec![
            op(OpKind::Write(1), 0, Some(1)),
            op(OpKind::Write(2), 2, Some(3)),
            op(OpKind::Read(Some(1)), 4, Some(5)),
        ];
        assert!(matches!(check(&h, 1_000_000), Verdict::Violation { .. }));
    }

    #[test]
    fn two_successful_cas_from_the_same_value_are_rejected() {
        // Split brain: two clients both swapped 0 -> their value.
        let h = vec![
            op(OpKind::Write(0), 0, Some(1)),
            op(
                OpKind::Cas {
                    from: Some(0),
                    to: 1,
                    ok: Some(true),
                },
                2,
                Some(6),
            ),
            op(
                OpKind::Cas {
                    from: Some(0),
                    to: 2,
                    ok: Some(true),
                },
                3,
                Some(5),
            ),
        ];
        assert!(matches!(check(&h, 1_000_000), Verdict::Violation { .. }));
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        let h = vec![
            op(OpKind::Write(1), 0, Some(10)),
            op(OpKind::Read(None), 1, Some(2)),
            op(OpKind::Read(Some(1)), 3, Some(4)),
            op(OpKind::Read(Some(1)), 11, Some(12)),
        ];
        assert_eq!(check(&h, 1_000_000), Verdict::Linearizable);
        // But a read cannot go back to the old value once another read saw the new one.
        let h = vec![
            op(OpKind::Write(1), 0, Some(10)),
            op(OpKind::Read(Some(1)), 1, Some(2)),
            op(OpKind::Read(None), 3, Some(4)),
        ];
        assert!(matches!(check(&h, 1_000_000), Verdict::Violation { .. }));
    }

    #[test]
    fn an_unanswered_write_may_or_may_not_have_happened() {
        let happened = vec![
            op(OpKind::Write(1), 0, None),
            op(OpKind::Read(Some(1)), 5, Some(6)),
        ];
        assert_eq!(check(&happened, 1_000), Verdict::Linearizable);
        let not_happened = vec![
            op(OpKind::Write(1), 0, None),
            op(OpKind::Read(None), 5, Some(6)),
        ];
        assert_eq!(check(&not_happened, 1_000), Verdict::Linearizable);
        // But not both: once seen, it cannot be unseen.
        let flip = vec![
            op(OpKind::Write(1), 0, None),
            op(OpKind::Read(Some(1)), 5, Some(6)),
            op(OpKind::Read(None), 7, Some(8)),
        ];
        assert!(matches!(check(&flip, 1_000), Verdict::Violation { .. }));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut h = vec![op(OpKind::Write(1), 0, Some(1))];
        h.push(Op {
            key: "y".into(),
            kind: OpKind::Read(Some(1)),
            call: 2,
            ret: Some(3),
        });
        assert_eq!(
            check(&h, 1000),
            Verdict::Violation {
                key: "y".into(),
                ops: 1
            }
        );
    }

    #[test]
    fn watch_delivery_breaches_are_named() {
        let k = |s: &str, r: i64| (s.to_string(), r);
        let attempted: HashSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let acked = vec![k("a", 2), k("b", 3)];
        assert_eq!(
            check_watch_delivery(&[k("a", 2), k("b", 3)], &acked, &attempted),
            Ok(())
        );
        assert!(
            check_watch_delivery(&[k("a", 2), k("a", 2), k("b", 3)], &acked, &attempted).is_err()
        );
        assert!(check_watch_delivery(&[k("b", 3)], &acked, &attempted).is_err());
        assert!(
            check_watch_delivery(&[k("a", 2), k("b", 3), k("z", 4)], &acked, &attempted).is_err()
        );
    }

    #[test]
    fn the_budget_bounds_the_search() {
        // Many fully concurrent writes and a read that no order explains.
        let mut h: Vec<Op> = (0..40)
            .map(|i| op(OpKind::Write(i), 0, Some(100)))
            .collect();
        h.push(op(OpKind::Read(Some(999)), 0, Some(100)));
        assert!(matches!(check(&h, 500), Verdict::Inconclusive { .. }));
    }
}
