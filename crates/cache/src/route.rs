//! Routing decisions, pure: which shard a request goes to, how a multi-key command is
//! split and its answers joined, and what a dead shard answers. No IO, no state: the
//! client connection ([`crate::proxy`]) does what [`plan`] says.

use bytes::{Bytes, BytesMut};

use crate::command::{self, Access, Keys, Local, Miss, Route, Spec, Split};
use crate::resp::{Limits, Request, Scanner, parse_i64, write};
use crate::slot::key_slot;
use crate::slotmap::SlotMap;

/// What to do with one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Answer at once with these bytes (errors included).
    Reply(Bytes),
    /// Send the request unchanged to `shard`.
    Shard {
        /// Target shard.
        shard: usize,
        /// Read or write: decides the answer when the shard is dead, and whether a
        /// replica may serve it.
        access: Access,
    },
    /// Send a part to each shard and join the answers with [`join`].
    Split {
        /// How to join.
        how: Split,
        /// Read or write.
        access: Access,
        /// Number of keys in the request.
        keys: usize,
        /// One part per shard involved, in order of first appearance.
        parts: Vec<Part>,
    },
    /// Answered by the proxy from the connection's session.
    Local(Local),
    /// Send to any usable master.
    AnyServer,
    /// Send to the pub/sub shard's master.
    PubSub,
    /// Turn the connection into a pub/sub connection.
    Subscribe,
}

/// One shard's part of a split command.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// Target shard.
    pub shard: usize,
    /// The part as a command.
    pub frame: Bytes,
    /// Index (in the request's key order) of each key of this part, in the part's order.
    pub positions: Vec<usize>,
}

/// The answer of one part, or its absence.
#[derive(Clone, Debug, PartialEq)]
pub enum PartReply {
    /// What the shard answered.
    Reply(Bytes),
    /// The shard is dead or the connection failed: nothing trustworthy came back.
    Unavailable,
}

/// Redis's error for keys in different slots.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// Decide what to do with `req` (its name looked up in the command table).
pub fn plan(req: &Request, map: &SlotMap) -> Plan {
    let Some(spec) = command::lookup(req.name()) else {
        return Plan::Reply(unknown_command(&req.args));
    };
    if !command::arity_ok(spec.arity, req.args.len()) {
        return Plan::Reply(error(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name.to_ascii_lowercase()
        )));
    }
    match spec.route {
        Route::Refused(why) => Plan::Reply(error(&format!(
            "ERR command '{}' is not supported by hastack cache proxy: {why}",
            spec.name
        ))),
        Route::Local(what) => Plan::Local(what),
        Route::AnyServer => Plan::AnyServer,
        Route::PubSub => Plan::PubSub,
        Route::Subscribe => Plan::Subscribe,
        Route::Keyed => keyed(spec, req, map),
        Route::Split(how) => split(spec, how, req, map),
    }
}

fn keyed(spec: &Spec, req: &Request, map: &SlotMap) -> Plan {
    let positions = match command::key_positions(spec.keys, &req.args) {
        Ok(p) => p,
        Err(msg) => return Plan::Reply(error(&format!("ERR {msg}"))),
    };
    let mut keys = positions.iter().filter_map(|&i| req.args.get(i));
    let Some(first) = keys.next() else {
        return Plan::Reply(error(&format!(
            "ERR '{}' without keys cannot be routed to a shard by hastack cache proxy",
            spec.name
        )));
    };
    let slot = key_slot(first);
    if keys.any(|k| key_slot(k) != slot) {
        return Plan::Reply(error(CROSSSLOT));
    }
    Plan::Shard {
        shard: map.owner(slot),
        access: spec.access,
    }
}

fn split(spec: &Spec, how: Split, req: &Request, map: &SlotMap) -> Plan {
    let step = match spec.keys {
        Keys::Range { step, .. } => step.max(1),
        _ => 1,
    };
    if how == Split::Mset && (req.args.len() - 1) % 2 != 0 {
        return Plan::Reply(error(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name.to_ascii_lowercase()
        )));
    }
    let keys: Vec<usize> = (1..req.args.len()).step_by(step).collect();
    let shards: Vec<usize> = keys.iter().map(|&i| map.shard_of(&req.args[i])).collect();
    let first = shards[0];
    if shards.iter().all(|&s| s == first) {
        return Plan::Shard {
            shard: first,
            access: spec.access,
        };
    }
    let mut order: Vec<usize> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (n, &s) in shards.iter().enumerate() {
        match order.iter().position(|&o| o == s) {
            Some(i) => members[i].push(n),
            None => {
                order.push(s);
                members.push(vec![n]);
            }
        }
    }
    let parts = order
        .into_iter()
        .zip(members)
        .map(|(shard, positions)| {
            let mut out = BytesMut::new();
            write::array(&mut out, 1 + positions.len() * step);
            write::bulk(&mut out, &req.args[0]);
            for &p in &positions {
                let at = keys[p];
                for arg in &req.args[at..at + step] {
                    write::bulk(&mut out, arg);
                }
            }
            Part {
                shard,
                frame: out.freeze(),
                positions,
            }
        })
        .collect();
    Plan::Split {
        how,
        access: spec.access,
        keys: keys.len(),
        parts,
    }
}

/// Join the answers of a split command. `replies[i]` answers `parts[i]`; `names` are the
/// shard names for error messages.
pub fn join(
    how: Split,
    access: Access,
    keys: usize,
    parts: &[Part],
    replies: Vec<PartReply>,
    names: &[impl AsRef<str>],
) -> Bytes {
    let name = |shard: usize| names.get(shard).map_or("?", |n| n.as_ref());
    let mut values: Vec<Option<Bytes>> = vec![None; if how == Split::Mget { keys } else { 0 }];
    let mut sum: i64 = 0;
    for (part, reply) in parts.iter().zip(replies) {
        let reply = match reply {
            PartReply::Reply(r) => r,
            PartReply::Unavailable => match (how, access) {
                // A dead shard is a miss: its keys are absent.
                (Split::Mget, _) | (Split::Sum, Access::Read(Some(_))) => continue,
                _ => return unavailable(name(part.shard)),
            },
        };
        if reply.first() == Some(&b'-') {
            return reply;
        }
        match how {
            Split::Mget => {
                let Some(items) = split_array(&reply) else {
                    return unexpected(name(part.shard), &reply);
                };
                if items.len() != part.positions.len() {
                    return unexpected(name(part.shard), &reply);
                }
                for (&p, item) in part.positions.iter().zip(items) {
                    if let Some(slot) = values.get_mut(p) {
                        *slot = Some(item);
                    }
                }
            }
            Split::Sum => match reply
                .strip_prefix(b":")
                .and_then(|r| r.strip_suffix(b"\r\n").and_then(parse_i64))
            {
                Some(n) => sum = sum.saturating_add(n),
                None => return unexpected(name(part.shard), &reply),
            },
            Split::Mset => {
                if &reply[..] != b"+OK\r\n" {
                    return unexpected(name(part.shard), &reply);
                }
            }
        }
    }
    let mut out = BytesMut::new();
    match how {
        Split::Mget => {
            write::array(&mut out, keys);
            for v in values {
                match v {
                    Some(item) => out.extend_from_slice(&item),
                    None => write::null(&mut out),
                }
            }
        }
        Split::Sum => write::integer(&mut out, sum),
        Split::Mset => write::simple(&mut out, "OK"),
    }
    out.freeze()
}

/// The elements of an array reply, each as its own encoded bytes (zero-copy slices).
pub fn split_array(reply: &Bytes) -> Option<Vec<Bytes>> {
    let limits = Limits {
        max_bulk_len: usize::MAX,
        max_elements: usize::MAX,
        max_frame_len: usize::MAX,
    };
    let rest = reply.strip_prefix(b"*")?;
    let cr = memchr::memchr(b'\r', rest)?;
    let n = usize::try_from(parse_i64(&rest[..cr])?).ok()?;
    let mut at = 1 + cr + 2;
    let mut out = Vec::with_capacity(n.min(4096));
    let mut scanner = Scanner::new();
    for _ in 0..n {
        let len = scanner.scan(reply.get(at..)?, &limits).ok()??;
        out.push(reply.slice(at..at + len));
        at += len;
    }
    (at == reply.len()).then_some(out)
}

/// What a request answers when its shard is dead: the miss answer of a read, or an error.
pub fn dead_shard_answer(access: Access, args: &[Bytes], shard: &str) -> Bytes {
    let Access::Read(Some(miss)) = access else {
        return unavailable(shard);
    };
    let mut out = BytesMut::new();
    match miss {
        Miss::Nil => write::null(&mut out),
        Miss::Zero => write::integer(&mut out, 0),
        Miss::MinusTwo => write::integer(&mut out, -2),
        Miss::EmptyBulk => write::bulk(&mut out, b""),
        Miss::EmptyArray => write::array(&mut out, 0),
        Miss::NoneType => write::simple(&mut out, "none"),
        Miss::NilPerArg(from) => {
            let n = args.len().saturating_sub(from);
            write::array(&mut out, n);
            (0..n).for_each(|_| write::null(&mut out));
        }
        Miss::ZeroPerArg(from) => {
            let n = args.len().saturating_sub(from);
            write::array(&mut out, n);
            (0..n).for_each(|_| write::integer(&mut out, 0));
        }
    }
    out.freeze()
}

/// `-ERR shard NAME unavailable`.
pub fn unavailable(shard: &str) -> Bytes {
    error(&format!("ERR shard {shard} unavailable"))
}

fn unexpected(shard: &str, reply: &[u8]) -> Bytes {
    let shown = String::from_utf8_lossy(&reply[..reply.len().min(40)]).into_owned();
    error(&format!(
        "ERR unexpected reply from shard {shard} to a split command: {shown:?}"
    ))
}

/// Redis's unknown-command error, with the first arguments quoted like Redis does.
pub fn unknown_command(args: &[Bytes]) -> Bytes {
    let name = args.first().map_or(String::new(), |a| lossy(a, 64));
    let mut rest = String::new();
    for a in args.iter().skip(1).take(8) {
        rest.push('\'');
        rest.push_str(&lossy(a, 32));
        rest.push_str("' ");
    }
    error(&format!(
        "ERR unknown command '{name}', with args beginning with: {rest}"
    ))
}

fn lossy(b: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned()
}

/// An error reply from text.
pub fn error(message: &str) -> Bytes {
    let mut out = BytesMut::new();
    write::error(&mut out, message);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        Request::words(text)
    }

    fn text(b: &Bytes) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// Keys on shard 0 and 1 of an even two-shard map: slot("a") = 15495 -> 1,
    /// slot("b") = 3300 -> 0, slot("c") = 7365 -> 0.
    fn map2() -> SlotMap {
        SlotMap::even(2)
    }

    #[test]
    fn single_key_commands_go_to_the_owner() {
        let m = map2();
        assert_eq!(
            plan(&req("GET a"), &m),
            Plan::Shard {
                shard: 1,
                access: Access::Read(Some(Miss::Nil))
            }
        );
        assert_eq!(
            plan(&req("set b 1"), &m),
            Plan::Shard {
                shard: 0,
                access: Access::Write
            }
        );
    }

    #[test]
    fn multi_key_commands_need_one_slot() {
        let m = map2();
        assert_eq!(plan(&req("RENAME a b"), &m), Plan::Reply(error(CROSSSLOT)));
        // b and c share a shard but not a slot: still CROSSSLOT, as in Redis Cluster.
        assert_eq!(plan(&req("SINTER b c"), &m), Plan::Reply(error(CROSSSLOT)));
        assert!(matches!(
            plan(&req("RENAME {u}a {u}b"), &m),
            Plan::Shard { .. }
        ));
        assert!(matches!(plan(&req("EVAL s 0"), &m), Plan::Reply(_)));
    }

    #[test]
    fn refusals_and_errors_name_the_command() {
        let m = map2();
        let Plan::Reply(r) = plan(&req("KEYS *"), &m) else {
            panic!()
        };
        assert!(text(&r).starts_with("-ERR command 'KEYS' is not supported"));
        let Plan::Reply(r) = plan(&req("NOPE x"), &m) else {
            panic!()
        };
        assert_eq!(
            text(&r),
            "-ERR unknown command 'NOPE', with args beginning with: 'x' \r\n"
        );
        let Plan::Reply(r) = plan(&req("GET"), &m) else {
            panic!()
        };
        assert_eq!(
            text(&r),
            "-ERR wrong number of arguments for 'get' command\r\n"
        );
        let Plan::Reply(r) = plan(&req("MSET a 1 b"), &m) else {
            panic!()
        };
        assert!(text(&r).contains("wrong number of arguments"));
    }

    #[test]
    fn mget_splits_and_joins_in_key_order() {
        let m = map2();
        let Plan::Split {
            how,
            access,
            keys,
            parts,
        } = plan(&req("MGET a b c a"), &m)
        else {
            panic!()
        };
        assert_eq!((how, keys), (Split::Mget, 4));
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].shard, 1);
        assert_eq!(parts[0].positions, vec![0, 3]);
        assert_eq!(
            &parts[0].frame[..],
            b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\na\r\n"
        );
        assert_eq!(parts[1].positions, vec![1, 2]);
        let names = ["s0", "s1"];
        let joined = join(
            how,
            access,
            keys,
            &parts,
            vec![
                PartReply::Reply(Bytes::from_static(b"*2\r\n$2\r\nA1\r\n$2\r\nA2\r\n")),
                PartReply::Reply(Bytes::from_static(b"*2\r\n$-1\r\n$1\r\nC\r\n")),
            ],
            &names,
        );
        assert_eq!(
            text(&joined),
            "*4\r\n$2\r\nA1\r\n$-1\r\n$1\r\nC\r\n$2\r\nA2\r\n"
        );
        // A dead shard: its keys are nil, the others' values are unaffected.
        let joined = join(
            how,
            access,
            keys,
            &parts,
            vec![
                PartReply::Unavailable,
                PartReply::Reply(Bytes::from_static(b"*2\r\n$1\r\nB\r\n$1\r\nC\r\n")),
            ],
            &names,
        );
        assert_eq!(text(&joined), "*4\r\n$-1\r\n$1\r\nB\r\n$1\r\nC\r\n$-1\r\n");
    }

    #[test]
    fn sums_and_msets_with_a_dead_shard() {
        let m = map2();
        let names = ["s0", "s1"];
        for (cmd, dead_ok) in [("EXISTS a b", true), ("DEL a b", false)] {
            let Plan::Split {
                how,
                access,
                keys,
                parts,
            } = plan(&req(cmd), &m)
            else {
                panic!("{cmd}")
            };
            let both = join(
                how,
                access,
                keys,
                &parts,
                vec![
                    PartReply::Reply(Bytes::from_static(b":1\r\n")),
                    PartReply::Reply(Bytes::from_static(b":1\r\n")),
                ],
                &names,
            );
            assert_eq!(text(&both), ":2\r\n");
            let one_dead = join(
                how,
                access,
                keys,
                &parts,
                vec![
                    PartReply::Unavailable,
                    PartReply::Reply(Bytes::from_static(b":1\r\n")),
                ],
                &names,
            );
            if dead_ok {
                assert_eq!(text(&one_dead), ":1\r\n");
            } else {
                assert_eq!(text(&one_dead), "-ERR shard s1 unavailable\r\n");
            }
        }
        let Plan::Split {
            how,
            access,
            keys,
            parts,
        } = plan(&req("MSET a 1 b 2"), &m)
        else {
            panic!()
        };
        assert_eq!(
            &parts[0].frame[..],
            b"*3\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n"
        );
        let ok = Bytes::from_static(b"+OK\r\n");
        assert_eq!(
            text(&join(
                how,
                access,
                keys,
                &parts,
                vec![PartReply::Reply(ok.clone()), PartReply::Reply(ok.clone())],
                &names
            )),
            "+OK\r\n"
        );
        assert!(
            text(&join(
                how,
                access,
                keys,
                &parts,
                vec![PartReply::Reply(ok), PartReply::Unavailable],
                &names
            ))
            .contains("shard s0 unavailable")
        );
    }

    #[test]
    fn same_shard_splits_are_sent_whole() {
        let m = map2();
        assert!(matches!(
            plan(&req("MGET b c"), &m),
            Plan::Shard { shard: 0, .. }
        ));
    }

    #[test]
    fn dead_shard_answers() {
        let r = |access, cmd: &str| text(&dead_shard_answer(access, &req(cmd).args, "s1"));
        let spec = |n: &str| command::lookup(n.as_bytes()).unwrap().access;
        assert_eq!(r(spec("GET"), "GET a"), "$-1\r\n");
        assert_eq!(r(spec("TTL"), "TTL a"), ":-2\r\n");
        assert_eq!(r(spec("HMGET"), "HMGET h f g"), "*2\r\n$-1\r\n$-1\r\n");
        assert_eq!(r(spec("TYPE"), "TYPE a"), "+none\r\n");
        assert_eq!(r(spec("SET"), "SET a 1"), "-ERR shard s1 unavailable\r\n");
        assert_eq!(
            r(spec("SRANDMEMBER"), "SRANDMEMBER a"),
            "-ERR shard s1 unavailable\r\n"
        );
    }

    #[test]
    fn split_array_rejects_malformed_replies() {
        assert_eq!(
            split_array(&Bytes::from_static(b"*2\r\n:1\r\n$1\r\nx\r\n")).map(|v| v.len()),
            Some(2)
        );
        assert_eq!(split_array(&Bytes::from_static(b"*2\r\n:1\r\n")), None);
        assert_eq!(split_array(&Bytes::from_static(b"+OK\r\n")), None);
        assert_eq!(
            split_array(&Bytes::from_static(b"*1\r\n:1\r\n:2\r\n")),
            None
        );
    }
}
