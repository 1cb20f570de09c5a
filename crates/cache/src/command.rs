//! The command table: for every command the proxy knows, where its keys are, how it is
//! routed, and what a read answers when its shard is dead.
//!
//! Commands not in the table are refused (`-ERR unknown command`); commands that cannot
//! work through a sharding, multiplexing proxy (they scan every shard, block the shared
//! backend connection, or change the connection's state) are in the table as
//! [`Route::Refused`] with the reason, so the client learns why.

/// Where a command's keys are, as positions in its arguments (0 is the command name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// No keys.
    None,
    /// Arguments `first..=last` (negative `last` counts from the end, -1 = the last
    /// argument), every `step`-th one: Redis's legacy key specification.
    Range {
        /// First key position.
        first: usize,
        /// Last key position; negative counts from the end.
        last: isize,
        /// Distance between keys (2 for `MSET k v k v`).
        step: usize,
    },
    /// `numkeys` at `at`, then that many keys; `fixed` is an extra leading key (the
    /// destination of `ZUNIONSTORE dest numkeys k...`, at position 1).
    NumKeys {
        /// Position of the `numkeys` argument.
        at: usize,
        /// Whether position 1 is a key too (a destination before `numkeys`).
        fixed: bool,
    },
}

/// One key, at argument 1.
const ONE: Keys = Keys::Range {
    first: 1,
    last: 1,
    step: 1,
};
/// Two keys, at arguments 1 and 2 (`RENAME src dst`).
const TWO: Keys = Keys::Range {
    first: 1,
    last: 2,
    step: 1,
};
/// Every argument from 1 is a key (`DEL k...`).
const ALL: Keys = Keys::Range {
    first: 1,
    last: -1,
    step: 1,
};

/// What the answer to a read is when the key does not exist: the proxy gives it for
/// keys of a dead shard (a dead shard is a miss).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// `$-1` (GET, HGET, ...).
    Nil,
    /// `:0` (STRLEN, EXISTS, HLEN, ...).
    Zero,
    /// `:-2` (TTL, PTTL, EXPIRETIME: "no such key").
    MinusTwo,
    /// `$0` (GETRANGE).
    EmptyBulk,
    /// `*0` (LRANGE, SMEMBERS, HGETALL, ...).
    EmptyArray,
    /// `+none` (TYPE).
    NoneType,
    /// An array of nils, one per argument from this position (HMGET, ZMSCORE, GEOPOS).
    NilPerArg(usize),
    /// An array of zeros, one per argument from this position (SMISMEMBER).
    ZeroPerArg(usize),
}

/// Whether a command reads or writes, which decides the answer when its shard is dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A read. With a miss answer, a dead shard answers it; without one (SRANDMEMBER,
    /// SINTER, ...: no answer means "the key does not exist" for every form), a dead shard
    /// is an error like a write. Reads may go to replicas under `prefer_replica`.
    Read(Option<Miss>),
    /// A write: a dead shard is an error.
    Write,
}

/// How the proxy splits a multi-key command across shards and joins the answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// `MGET`: per-shard `MGET`s, values put back in the order of the keys.
    Mget,
    /// `MSET`: per-shard `MSET`s; `+OK` when every part succeeded.
    Mset,
    /// `DEL`, `UNLINK`, `EXISTS`, `TOUCH`: per-shard calls, integer answers summed.
    Sum,
}

/// Commands the proxy answers itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// `AUTH [user] password`.
    Auth,
    /// `PING [message]`.
    Ping,
    /// `ECHO message`.
    Echo,
    /// `QUIT`.
    Quit,
    /// `SELECT db` (only 0).
    Select,
    /// `HELLO [protover ...]` (RESP2 only).
    Hello,
    /// `INFO [section]`: the proxy's own.
    Info,
    /// `CLIENT SETNAME | GETNAME | SETINFO | ID | INFO`.
    Client,
    /// `RESET`.
    Reset,
    /// `MULTI`.
    Multi,
    /// `EXEC`.
    Exec,
    /// `DISCARD`.
    Discard,
    /// `UNWATCH` (a no-op: `WATCH` is refused).
    Unwatch,
}

/// How a command is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Sent whole to the shard owning its keys; keys in several slots are `-CROSSSLOT`.
    Keyed,
    /// Split by shard ([`Split`]).
    Split(Split),
    /// Answered by the proxy.
    Local(Local),
    /// Sent to any usable master (`COMMAND`, `TIME`: the same answer everywhere).
    AnyServer,
    /// Sent to the pub/sub shard's master (`PUBLISH`, `PUBSUB`).
    PubSub,
    /// `SUBSCRIBE` / `PSUBSCRIBE`: the connection becomes a pub/sub connection pinned to
    /// the pub/sub shard's master.
    Subscribe,
    /// Refused, with the reason.
    Refused(&'static str),
}

/// One command's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Upper-case name.
    pub name: &'static str,
    /// Redis's arity: `n > 0` exactly n arguments (with the name), `n < 0` at least -n.
    pub arity: i32,
    /// Where the keys are.
    pub keys: Keys,
    /// How it is handled.
    pub route: Route,
    /// Read or write.
    pub access: Access,
}

const fn r(name: &'static str, arity: i32, keys: Keys, miss: Option<Miss>) -> Spec {
    Spec {
        name,
        arity,
        keys,
        route: Route::Keyed,
        access: Access::Read(miss),
    }
}

const fn w(name: &'static str, arity: i32, keys: Keys) -> Spec {
    Spec {
        name,
        arity,
        keys,
        route: Route::Keyed,
        access: Access::Write,
    }
}

const fn split(name: &'static str, arity: i32, how: Split, access: Access) -> Spec {
    let keys = match how {
        Split::Mset => Keys::Range {
            first: 1,
            last: -1,
            step: 2,
        },
        _ => ALL,
    };
    Spec {
        name,
        arity,
        keys,
        route: Route::Split(how),
        access,
    }
}

const fn local(name: &'static str, arity: i32, what: Local) -> Spec {
    Spec {
        name,
        arity,
        keys: Keys::None,
        route: Route::Local(what),
        access: Access::Write,
    }
}

const fn special(name: &'static str, arity: i32, route: Route, access: Access) -> Spec {
    Spec {
        name,
        arity,
        keys: Keys::None,
        route,
        access,
    }
}

const fn refused(name: &'static str, why: &'static str) -> Spec {
    Spec {
        name,
        arity: -1,
        keys: Keys::None,
        route: Route::Refused(why),
        access: Access::Write,
    }
}

const NUMKEYS_AT_1: Keys = Keys::NumKeys {
    at: 1,
    fixed: false,
};
const NUMKEYS_AT_2: Keys = Keys::NumKeys {
    at: 2,
    fixed: false,
};
const DEST_NUMKEYS: Keys = Keys::NumKeys { at: 2, fixed: true };

const SCANS: &str = "it would have to visit every shard";
const BLOCKS: &str = "blocking commands would stall the backend connection shared by many clients";
const ADMIN: &str =
    "server administration goes to the Redis servers directly, not through the proxy";
const STATE: &str = "it changes the state of the backend connection, which many clients share";
const SCRIPTS: &str = "scripts and functions must be loaded on every shard directly";

use Access::{Read, Write};
use Miss::*;

/// Every command the proxy knows, sorted by name (a unit test checks the order).
pub static TABLE: &[Spec] = &[
    refused("ACL", ADMIN),
    w("APPEND", 3, ONE),
    local("AUTH", -2, Local::Auth),
    refused("BGREWRITEAOF", ADMIN),
    refused("BGSAVE", ADMIN),
    r("BITCOUNT", -2, ONE, Some(Zero)),
    w("BITFIELD", -2, ONE),
    r("BITFIELD_RO", -2, ONE, None),
    w(
        "BITOP",
        -4,
        Keys::Range {
            first: 2,
            last: -1,
            step: 1,
        },
    ),
    r("BITPOS", -3, ONE, None),
    refused("BLMOVE", BLOCKS),
    refused("BLMPOP", BLOCKS),
    refused("BLPOP", BLOCKS),
    refused("BRPOP", BLOCKS),
    refused("BRPOPLPUSH", BLOCKS),
    refused("BZMPOP", BLOCKS),
    refused("BZPOPMAX", BLOCKS),
    refused("BZPOPMIN", BLOCKS),
    local("CLIENT", -2, Local::Client),
    refused(
        "CLUSTER",
        "the proxy is not a Redis Cluster node; it routes by slot itself",
    ),
    special("COMMAND", -1, Route::AnyServer, Read(None)),
    refused("CONFIG", ADMIN),
    w("COPY", -3, TWO),
    refused("DBSIZE", SCANS),
    refused("DEBUG", ADMIN),
    w("DECR", 2, ONE),
    w("DECRBY", 3, ONE),
    split("DEL", -2, Split::Sum, Write),
    local("DISCARD", 1, Local::Discard),
    r("DUMP", 2, ONE, Some(Nil)),
    local("ECHO", 2, Local::Echo),
    w("EVAL", -3, NUMKEYS_AT_2),
    w("EVALSHA", -3, NUMKEYS_AT_2),
    r("EVALSHA_RO", -3, NUMKEYS_AT_2, None),
    r("EVAL_RO", -3, NUMKEYS_AT_2, None),
    local("EXEC", 1, Local::Exec),
    split("EXISTS", -2, Split::Sum, Read(Some(Zero))),
    w("EXPIRE", -3, ONE),
    w("EXPIREAT", -3, ONE),
    r("EXPIRETIME", 2, ONE, Some(MinusTwo)),
    refused("FAILOVER", ADMIN),
    w("FCALL", -3, NUMKEYS_AT_2),
    r("FCALL_RO", -3, NUMKEYS_AT_2, None),
    refused("FLUSHALL", SCANS),
    refused("FLUSHDB", SCANS),
    refused("FUNCTION", SCRIPTS),
    w("GEOADD", -5, ONE),
    r("GEODIST", -4, ONE, Some(Nil)),
    r("GEOHASH", -2, ONE, Some(NilPerArg(2))),
    r("GEOPOS", -2, ONE, Some(NilPerArg(2))),
    r("GEOSEARCH", -7, ONE, Some(EmptyArray)),
    w("GEOSEARCHSTORE", -8, TWO),
    r("GET", 2, ONE, Some(Nil)),
    r("GETBIT", 3, ONE, Some(Zero)),
    w("GETDEL", 2, ONE),
    w("GETEX", -2, ONE),
    r("GETRANGE", 4, ONE, Some(EmptyBulk)),
    w("GETSET", 3, ONE),
    w("HDEL", -3, ONE),
    local("HELLO", -1, Local::Hello),
    r("HEXISTS", 3, ONE, Some(Zero)),
    r("HGET", 3, ONE, Some(Nil)),
    r("HGETALL", 2, ONE, Some(EmptyArray)),
    w("HINCRBY", 4, ONE),
    w("HINCRBYFLOAT", 4, ONE),
    r("HKEYS", 2, ONE, Some(EmptyArray)),
    r("HLEN", 2, ONE, Some(Zero)),
    r("HMGET", -3, ONE, Some(NilPerArg(2))),
    w("HMSET", -4, ONE),
    r("HRANDFIELD", -2, ONE, None),
    r("HSCAN", -3, ONE, None),
    w("HSET", -4, ONE),
    w("HSETNX", 4, ONE),
    r("HSTRLEN", 3, ONE, Some(Zero)),
    r("HVALS", 2, ONE, Some(EmptyArray)),
    w("INCR", 2, ONE),
    w("INCRBY", 3, ONE),
    w("INCRBYFLOAT", 3, ONE),
    local("INFO", -1, Local::Info),
    refused("KEYS", SCANS),
    refused("LASTSAVE", ADMIN),
    r("LCS", -3, TWO, None),
    r("LINDEX", 3, ONE, Some(Nil)),
    w("LINSERT", 5, ONE),
    r("LLEN", 2, ONE, Some(Zero)),
    w("LMOVE", 5, TWO),
    w("LMPOP", -4, NUMKEYS_AT_1),
    w("LPOP", -2, ONE),
    r("LPOS", -3, ONE, None),
    w("LPUSH", -3, ONE),
    w("LPUSHX", -3, ONE),
    r("LRANGE", 4, ONE, Some(EmptyArray)),
    w("LREM", 4, ONE),
    w("LSET", 4, ONE),
    w("LTRIM", 4, ONE),
    refused("MEMORY", ADMIN),
    split("MGET", -2, Split::Mget, Read(Some(Nil))),
    refused("MIGRATE", ADMIN),
    refused("MODULE", ADMIN),
    refused("MONITOR", ADMIN),
    refused("MOVE", "the proxy serves database 0 only"),
    split("MSET", -3, Split::Mset, Write),
    w(
        "MSETNX",
        -3,
        Keys::Range {
            first: 1,
            last: -1,
            step: 2,
        },
    ),
    local("MULTI", 1, Local::Multi),
    refused("OBJECT", ADMIN),
    w("PERSIST", 2, ONE),
    w("PEXPIRE", -3, ONE),
    w("PEXPIREAT", -3, ONE),
    r("PEXPIRETIME", 2, ONE, Some(MinusTwo)),
    w("PFADD", -2, ONE),
    r("PFCOUNT", -2, ALL, Some(Zero)),
    w("PFMERGE", -2, ALL),
    local("PING", -1, Local::Ping),
    w("PSETEX", 4, ONE),
    special("PSUBSCRIBE", -2, Route::Subscribe, Write),
    refused("PSYNC", ADMIN),
    r("PTTL", 2, ONE, Some(MinusTwo)),
    special("PUBLISH", 3, Route::PubSub, Write),
    special("PUBSUB", -2, Route::PubSub, Read(None)),
    special("PUNSUBSCRIBE", -1, Route::Subscribe, Write),
    local("QUIT", -1, Local::Quit),
    refused("RANDOMKEY", SCANS),
    refused("READONLY", STATE),
    refused("READWRITE", STATE),
    w("RENAME", 3, TWO),
    w("RENAMENX", 3, TWO),
    refused("REPLICAOF", ADMIN),
    local("RESET", 1, Local::Reset),
    w("RESTORE", -4, ONE),
    w("RPOP", -2, ONE),
    w("RPOPLPUSH", 3, TWO),
    w("RPUSH", -3, ONE),
    w("RPUSHX", -3, ONE),
    w("SADD", -3, ONE),
    refused("SAVE", ADMIN),
    refused("SCAN", SCANS),
    r("SCARD", 2, ONE, Some(Zero)),
    refused("SCRIPT", SCRIPTS),
    r("SDIFF", -2, ALL, None),
    w("SDIFFSTORE", -3, ALL),
    local("SELECT", 2, Local::Select),
    w("SET", -3, ONE),
    w("SETBIT", 4, ONE),
    w("SETEX", 4, ONE),
    w("SETNX", 3, ONE),
    w("SETRANGE", 4, ONE),
    refused("SHUTDOWN", ADMIN),
    r("SINTER", -2, ALL, None),
    r("SINTERCARD", -3, NUMKEYS_AT_1, None),
    w("SINTERSTORE", -3, ALL),
    r("SISMEMBER", 3, ONE, Some(Zero)),
    refused("SLAVEOF", ADMIN),
    refused("SLOWLOG", ADMIN),
    r("SMEMBERS", 2, ONE, Some(EmptyArray)),
    r("SMISMEMBER", -3, ONE, Some(ZeroPerArg(2))),
    w("SMOVE", 4, TWO),
    refused(
        "SORT",
        "SORT may read and write keys of other shards (BY, GET, STORE)",
    ),
    refused("SORT_RO", "SORT may read keys of other shards (BY, GET)"),
    w("SPOP", -2, ONE),
    r("SRANDMEMBER", -2, ONE, None),
    w("SREM", -3, ONE),
    r("SSCAN", -3, ONE, None),
    refused(
        "SSUBSCRIBE",
        "use SUBSCRIBE: the proxy has one pub/sub shard",
    ),
    r("STRLEN", 2, ONE, Some(Zero)),
    special("SUBSCRIBE", -2, Route::Subscribe, Write),
    r("SUBSTR", 4, ONE, Some(EmptyBulk)),
    r("SUNION", -2, ALL, None),
    w("SUNIONSTORE", -3, ALL),
    refused("SWAPDB", "the proxy serves database 0 only"),
    refused("SYNC", ADMIN),
    special("TIME", 1, Route::AnyServer, Read(None)),
    split("TOUCH", -2, Split::Sum, Read(Some(Zero))),
    r("TTL", 2, ONE, Some(MinusTwo)),
    r("TYPE", 2, ONE, Some(NoneType)),
    split("UNLINK", -2, Split::Sum, Write),
    special("UNSUBSCRIBE", -1, Route::Subscribe, Write),
    local("UNWATCH", 1, Local::Unwatch),
    refused("WAIT", STATE),
    refused("WAITAOF", STATE),
    refused("WATCH", STATE),
    w("XACK", -4, ONE),
    w("XADD", -5, ONE),
    w("XDEL", -3, ONE),
    r("XLEN", 2, ONE, Some(Zero)),
    r("XRANGE", -4, ONE, Some(EmptyArray)),
    refused("XREAD", "XREAD may block; read streams with XRANGE"),
    refused(
        "XREADGROUP",
        "XREADGROUP may block the shared backend connection",
    ),
    r("XREVRANGE", -4, ONE, Some(EmptyArray)),
    w("XTRIM", -4, ONE),
    w("ZADD", -4, ONE),
    r("ZCARD", 2, ONE, Some(Zero)),
    r("ZCOUNT", 4, ONE, Some(Zero)),
    r("ZDIFF", -3, NUMKEYS_AT_1, None),
    w("ZDIFFSTORE", -4, DEST_NUMKEYS),
    w("ZINCRBY", 4, ONE),
    r("ZINTER", -3, NUMKEYS_AT_1, None),
    r("ZINTERCARD", -3, NUMKEYS_AT_1, None),
    w("ZINTERSTORE", -4, DEST_NUMKEYS),
    r("ZLEXCOUNT", 4, ONE, Some(Zero)),
    w("ZMPOP", -4, NUMKEYS_AT_1),
    r("ZMSCORE", -3, ONE, Some(NilPerArg(2))),
    w("ZPOPMAX", -2, ONE),
    w("ZPOPMIN", -2, ONE),
    r("ZRANDMEMBER", -2, ONE, None),
    r("ZRANGE", -4, ONE, Some(EmptyArray)),
    r("ZRANGEBYLEX", -4, ONE, Some(EmptyArray)),
    r("ZRANGEBYSCORE", -4, ONE, Some(EmptyArray)),
    w("ZRANGESTORE", -5, TWO),
    r("ZRANK", -3, ONE, Some(Nil)),
    w("ZREM", -3, ONE),
    w("ZREMRANGEBYLEX", 4, ONE),
    w("ZREMRANGEBYRANK", 4, ONE),
    w("ZREMRANGEBYSCORE", 4, ONE),
    r("ZREVRANGE", -4, ONE, Some(EmptyArray)),
    r("ZREVRANGEBYLEX", -4, ONE, Some(EmptyArray)),
    r("ZREVRANGEBYSCORE", -4, ONE, Some(EmptyArray)),
    r("ZREVRANK", -3, ONE, Some(Nil)),
    r("ZSCAN", -3, ONE, None),
    r("ZSCORE", 3, ONE, Some(Nil)),
    r("ZUNION", -3, NUMKEYS_AT_1, None),
    w("ZUNIONSTORE", -4, DEST_NUMKEYS),
];

/// Compare a command name as sent (any case) with a table name (upper case).
fn cmp_name(sent: &[u8], table: &str) -> std::cmp::Ordering {
    let a = sent.iter().map(u8::to_ascii_uppercase);
    a.cmp(table.bytes())
}

/// The table entry of `name` (any case), if the proxy knows the command.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    TABLE
        .binary_search_by(|s| cmp_name(name, s.name).reverse())
        .ok()
        .and_then(|i| TABLE.get(i))
}

/// Whether `argc` arguments (with the name) satisfy `arity`.
pub fn arity_ok(arity: i32, argc: usize) -> bool {
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    let arity = i64::from(arity);
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

/// Positions of the keys of a command with `argc` arguments, or an error message when the
/// arguments do not say (a bad `numkeys`). Assumes the arity was checked.
pub fn key_positions(keys: Keys, args: &[bytes::Bytes]) -> Result<Vec<usize>, &'static str> {
    let argc = args.len();
    match keys {
        Keys::None => Ok(Vec::new()),
        Keys::Range { first, last, step } => {
            let last = if last < 0 {
                argc as isize + last
            } else {
                last.min(argc as isize - 1)
            };
            if last < first as isize {
                return Ok(Vec::new());
            }
            Ok((first..=last as usize).step_by(step.max(1)).collect())
        }
        Keys::NumKeys { at, fixed } => {
            let n = args
                .get(at)
                .and_then(|a| crate::resp::parse_i64(a))
                .ok_or("numkeys must be a positive integer")?;
            if n < 0 {
                return Err("numkeys can't be negative");
            }
            let n = n as usize;
            if at + 1 + n > argc {
                return Err("Number of keys can't be greater than number of args");
            }
            let mut out = Vec::with_capacity(n + 1);
            if fixed {
                out.push(1);
            }
            out.extend(at + 1..at + 1 + n);
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn args(text: &str) -> Vec<Bytes> {
        text.split(' ')
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in TABLE.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} must sort before {}",
                pair[0].name,
                pair[1].name
            );
        }
        for s in TABLE {
            assert_eq!(s.name, s.name.to_ascii_uppercase());
            assert_eq!(lookup(s.name.as_bytes()), Some(s));
            assert_eq!(lookup(s.name.to_ascii_lowercase().as_bytes()), Some(s));
            // Reads with a miss answer and splits are routed by key; locals have no keys.
            if let Route::Local(_) = s.route {
                assert_eq!(s.keys, Keys::None, "{}", s.name);
            }
        }
        assert_eq!(lookup(b"NOPE"), None);
        assert_eq!(lookup(b""), None);
    }

    #[test]
    fn arity_like_redis() {
        assert!(arity_ok(2, 2));
        assert!(!arity_ok(2, 3));
        assert!(arity_ok(-3, 3));
        assert!(arity_ok(-3, 9));
        assert!(!arity_ok(-3, 2));
    }

    #[test]
    fn key_positions_follow_the_specs() {
        let spec = |n: &str| lookup(n.as_bytes()).unwrap().keys;
        assert_eq!(key_positions(spec("GET"), &args("GET k")), Ok(vec![1]));
        assert_eq!(
            key_positions(spec("MSET"), &args("MSET a 1 b 2")),
            Ok(vec![1, 3])
        );
        assert_eq!(
            key_positions(spec("DEL"), &args("DEL a b c")),
            Ok(vec![1, 2, 3])
        );
        assert_eq!(
            key_positions(spec("BITOP"), &args("BITOP AND d a b")),
            Ok(vec![2, 3, 4])
        );
        assert_eq!(
            key_positions(spec("EVAL"), &args("EVAL s 2 a b x")),
            Ok(vec![3, 4])
        );
        assert_eq!(key_positions(spec("EVAL"), &args("EVAL s 0")), Ok(vec![]));
        assert!(key_positions(spec("EVAL"), &args("EVAL s 3 a")).is_err());
        assert!(key_positions(spec("EVAL"), &args("EVAL s x a")).is_err());
        assert_eq!(
            key_positions(
                spec("ZUNIONSTORE"),
                &args("ZUNIONSTORE d 2 a b WEIGHTS 1 2")
            ),
            Ok(vec![1, 3, 4])
        );
        assert_eq!(
            key_positions(spec("ZUNION"), &args("ZUNION 2 a b")),
            Ok(vec![2, 3])
        );
        assert_eq!(
            key_positions(spec("RENAME"), &args("RENAME a b")),
            Ok(vec![1, 2])
        );
    }
}
