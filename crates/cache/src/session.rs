//! One client connection's state and the commands the proxy answers itself, pure.
//!
//! The proxy multiplexes many clients over each backend connection, so nothing may change
//! a backend connection's state: `AUTH` is checked against the proxy's own password,
//! `SELECT` accepts database 0 only, `CLIENT SETNAME` is kept here, and a transaction is
//! queued here and sent as one uninterrupted `MULTI ... EXEC` batch to its one shard.

use bytes::{Bytes, BytesMut};

use crate::command::Local;
use crate::resp::{Request, write};
use crate::route::{self, CROSSSLOT, Plan};
use crate::slotmap::SlotMap;

/// What the session needs from the proxy's configuration.
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig<'a> {
    /// The proxy-side password clients must `AUTH` with, if any.
    pub password: Option<&'a [u8]>,
    /// Most commands one transaction may queue.
    pub max_queued: usize,
    /// Most bytes one transaction may queue.
    pub max_queued_bytes: usize,
}

/// A transaction being queued.
#[derive(Clone, Debug, Default)]
struct Tx {
    shard: Option<usize>,
    queued: Vec<Bytes>,
    bytes: usize,
    aborted: bool,
}

/// The per-connection state.
#[derive(Clone, Debug)]
pub struct Session {
    id: u64,
    authenticated: bool,
    name: Option<Bytes>,
    tx: Option<Tx>,
}

/// What to do with a request after the session has seen it.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Route it as [`route::plan`] said (not a local command, not inside a transaction).
    Route(Plan),
    /// Answer with these bytes.
    Reply(Bytes),
    /// Answer, then close the connection (`QUIT`).
    Close(Bytes),
    /// Answer with the proxy's `INFO` text.
    Info,
    /// Send `batch` (`MULTI`, the queued commands, `EXEC`) to `shard`'s master; the last of
    /// its `replies` answers is `EXEC`'s, the client's answer.
    Exec {
        /// The transaction's shard.
        shard: usize,
        /// The whole batch.
        batch: Bytes,
        /// Number of answers the batch produces.
        replies: usize,
    },
}

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NO_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

impl Session {
    /// A new connection's session; `id` is its `CLIENT ID`.
    pub fn new(id: u64, cfg: &SessionConfig<'_>) -> Session {
        Session {
            id,
            authenticated: cfg.password.is_none(),
            name: None,
            tx: None,
        }
    }

    /// Whether a transaction is being queued.
    pub fn in_multi(&self) -> bool {
        self.tx.is_some()
    }

    /// The name set with `CLIENT SETNAME`.
    pub fn name(&self) -> Option<&Bytes> {
        self.name.as_ref()
    }

    /// Decide what to do with `req`.
    pub fn step(&mut self, req: &Request, map: &SlotMap, cfg: &SessionConfig<'_>) -> Step {
        let plan = route::plan(req, map);
        if !self.authenticated
            && !matches!(
                plan,
                Plan::Local(Local::Auth | Local::Hello | Local::Quit | Local::Reset)
            )
        {
            return Step::Reply(route::error(NOAUTH));
        }
        if self.tx.is_some() {
            return self.in_tx(plan, req, cfg);
        }
        match plan {
            Plan::Local(what) => self.local(what, req, cfg),
            other => Step::Route(other),
        }
    }

    fn in_tx(&mut self, plan: Plan, req: &Request, cfg: &SessionConfig<'_>) -> Step {
        let Some(tx) = self.tx.as_mut() else {
            return Step::Route(plan);
        };
        let refuse = |tx: &mut Tx, msg: &str| {
            tx.aborted = true;
            Step::Reply(route::error(msg))
        };
        match plan {
            Plan::Local(Local::Exec) => self.exec(),
            Plan::Local(Local::Discard) => {
                self.tx = None;
                Step::Reply(ok())
            }
            Plan::Local(Local::Multi) => {
                // Redis answers this without aborting the transaction.
                Step::Reply(route::error("ERR MULTI calls can not be nested"))
            }
            Plan::Local(Local::Quit) => self.local(Local::Quit, req, cfg),
            Plan::Reply(err) => {
                tx.aborted = true;
                Step::Reply(err)
            }
            Plan::Split { .. } => refuse(tx, CROSSSLOT),
            Plan::Shard { shard, .. } => {
                if tx.shard.is_some_and(|s| s != shard) {
                    return refuse(
                        tx,
                        "CROSSSLOT Keys in a transaction must all be on one shard (hastack cache proxy)",
                    );
                }
                if tx.queued.len() >= cfg.max_queued
                    || tx.bytes + req.frame.len() > cfg.max_queued_bytes
                {
                    return refuse(
                        tx,
                        &format!(
                            "ERR transaction too large for hastack cache proxy (at most {} commands and {} bytes)",
                            cfg.max_queued, cfg.max_queued_bytes
                        ),
                    );
                }
                tx.shard = Some(shard);
                tx.bytes += req.frame.len();
                tx.queued.push(req.frame.clone());
                Step::Reply(simple("QUEUED"))
            }
            Plan::Local(_) | Plan::AnyServer | Plan::PubSub | Plan::Subscribe => refuse(
                tx,
                &format!(
                    "ERR command '{}' is not allowed inside MULTI by hastack cache proxy",
                    String::from_utf8_lossy(req.name())
                ),
            ),
        }
    }

    fn exec(&mut self) -> Step {
        let Some(tx) = self.tx.take() else {
            return Step::Reply(route::error("ERR EXEC without MULTI"));
        };
        if tx.aborted {
            return Step::Reply(route::error(
                "EXECABORT Transaction discarded because of previous errors.",
            ));
        }
        let Some(shard) = tx.shard else {
            // Nothing queued: Redis answers an empty array.
            let mut out = BytesMut::new();
            write::array(&mut out, 0);
            return Step::Reply(out.freeze());
        };
        let mut batch = BytesMut::with_capacity(tx.bytes + 32);
        write::command(&mut batch, [&b"MULTI"[..]].into_iter());
        for frame in &tx.queued {
            batch.extend_from_slice(frame);
        }
        write::command(&mut batch, [&b"EXEC"[..]].into_iter());
        Step::Exec {
            shard,
            batch: batch.freeze(),
            replies: tx.queued.len() + 2,
        }
    }

    fn local(&mut self, what: Local, req: &Request, cfg: &SessionConfig<'_>) -> Step {
        let args = &req.args;
        let arg = |i: usize| args.get(i).map(|a| &a[..]);
        match what {
            Local::Auth => Step::Reply(self.auth(args.get(1..).unwrap_or_default(), cfg)),
            Local::Ping => match arg(1) {
                None => Step::Reply(simple("PONG")),
                Some(msg) if args.len() == 2 => Step::Reply(bulk(msg)),
                Some(_) => Step::Reply(route::error(
                    "ERR wrong number of arguments for 'ping' command",
                )),
            },
            Local::Echo => Step::Reply(bulk(arg(1).unwrap_or_default())),
            Local::Quit => Step::Close(ok()),
            Local::Select => match arg(1) {
                Some(b"0") => Step::Reply(ok()),
                _ => Step::Reply(route::error(
                    "ERR hastack cache proxy serves database 0 only",
                )),
            },
            Local::Hello => self.hello(args, cfg),
            Local::Info => Step::Info,
            Local::Client => Step::Reply(self.client(args)),
            Local::Reset => {
                self.tx = None;
                self.name = None;
                self.authenticated = cfg.password.is_none();
                Step::Reply(simple("RESET"))
            }
            Local::Multi => {
                self.tx = Some(Tx::default());
                Step::Reply(ok())
            }
            Local::Exec => Step::Reply(route::error("ERR EXEC without MULTI")),
            Local::Discard => Step::Reply(route::error("ERR DISCARD without MULTI")),
            Local::Unwatch => Step::Reply(ok()),
        }
    }

    /// `AUTH password` or `AUTH default password`.
    fn auth(&mut self, args: &[Bytes], cfg: &SessionConfig<'_>) -> Bytes {
        let Some(expected) = cfg.password else {
            return route::error(NO_PASSWORD);
        };
        let (user, given) = match args {
            [p] => (&b"default"[..], &p[..]),
            [u, p] => (&u[..], &p[..]),
            _ => return route::error("ERR wrong number of arguments for 'auth' command"),
        };
        if user == b"default" && constant_time_eq(given, expected) {
            self.authenticated = true;
            ok()
        } else {
            route::error(WRONGPASS)
        }
    }

    /// `HELLO [2 [AUTH user pass] [SETNAME name]]`: RESP2 only.
    fn hello(&mut self, args: &[Bytes], cfg: &SessionConfig<'_>) -> Step {
        let mut i = 1;
        if let Some(v) = args.get(1) {
            if &v[..] != b"2" {
                return Step::Reply(route::error(
                    "NOPROTO sorry, this protocol version is not supported (hastack cache proxy speaks RESP2)",
                ));
            }
            i = 2;
        }
        while i < args.len() {
            let opt = args[i].to_ascii_uppercase();
            match (&opt[..], args.get(i + 1), args.get(i + 2)) {
                (b"AUTH", Some(user), Some(pass)) => {
                    let r = self.auth(&[user.clone(), pass.clone()], cfg);
                    if r.first() == Some(&b'-') {
                        return Step::Reply(r);
                    }
                    i += 3;
                }
                (b"SETNAME", Some(name), _) => {
                    self.name = Some(name.clone());
                    i += 2;
                }
                _ => {
                    return Step::Reply(route::error(&format!(
                        "ERR Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(&args[i])
                    )));
                }
            }
        }
        if !self.authenticated {
            return Step::Reply(route::error(NOAUTH));
        }
        let mut out = BytesMut::new();
        write::array(&mut out, 14);
        for (k, v) in [
            ("server", "hastack"),
            ("version", env!("CARGO_PKG_VERSION")),
        ] {
            write::bulk(&mut out, k.as_bytes());
            write::bulk(&mut out, v.as_bytes());
        }
        write::bulk(&mut out, b"proto");
        write::integer(&mut out, 2);
        write::bulk(&mut out, b"id");
        write::integer(&mut out, i64::try_from(self.id).unwrap_or(i64::MAX));
        for (k, v) in [("mode", "proxy"), ("role", "master")] {
            write::bulk(&mut out, k.as_bytes());
            write::bulk(&mut out, v.as_bytes());
        }
        write::bulk(&mut out, b"modules");
        write::array(&mut out, 0);
        Step::Reply(out.freeze())
    }

    fn client(&mut self, args: &[Bytes]) -> Bytes {
        let sub = args
            .get(1)
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        match (&sub[..], args.len()) {
            (b"SETNAME", 3) => {
                let name = &args[2];
                if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                    return route::error(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.name = (!name.is_empty()).then(|| name.clone());
                ok()
            }
            (b"GETNAME", 2) => match &self.name {
                Some(n) => bulk(n),
                None => {
                    let mut out = BytesMut::new();
                    write::null(&mut out);
                    out.freeze()
                }
            },
            (b"ID", 2) => {
                let mut out = BytesMut::new();
                write::integer(&mut out, i64::try_from(self.id).unwrap_or(i64::MAX));
                out.freeze()
            }
            (b"SETINFO", 4) => ok(),
            (b"INFO", 2) => {
                let name = self
                    .name
                    .as_ref()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default();
                bulk(
                    format!(
                        "id={} name={name} db=0 multi={}\n",
                        self.id,
                        self.tx.as_ref().map_or(-1, |t| t.queued.len() as i64)
                    )
                    .as_bytes(),
                )
            }
            _ => route::error(&format!(
                "ERR CLIENT {} is not supported by hastack cache proxy (SETNAME, GETNAME, ID, SETINFO and INFO are)",
                String::from_utf8_lossy(&sub)
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn ok() -> Bytes {
    Bytes::from_static(b"+OK\r\n")
}

fn simple(text: &str) -> Bytes {
    let mut out = BytesMut::new();
    write::simple(&mut out, text);
    out.freeze()
}

fn bulk(bytes: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    write::bulk(&mut out, bytes);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        Request::words(text)
    }

    fn reply(step: Step) -> String {
        match step {
            Step::Reply(b) | Step::Close(b) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("not a reply: {other:?}"),
        }
    }

    const CFG: SessionConfig<'static> = SessionConfig {
        password: None,
        max_queued: 3,
        max_queued_bytes: 1 << 20,
    };

    #[test]
    fn auth_gate() {
        let cfg = SessionConfig {
            password: Some(b"s3cret"),
            ..CFG
        };
        let m = SlotMap::even(2);
        let mut s = Session::new(1, &cfg);
        assert!(reply(s.step(&req("GET a"), &m, &cfg)).starts_with("-NOAUTH"));
        assert!(reply(s.step(&req("AUTH nope"), &m, &cfg)).starts_with("-WRONGPASS"));
        assert!(reply(s.step(&req("AUTH bob s3cret"), &m, &cfg)).starts_with("-WRONGPASS"));
        assert_eq!(
            reply(s.step(&req("AUTH default s3cret"), &m, &cfg)),
            "+OK\r\n"
        );
        assert!(matches!(s.step(&req("GET a"), &m, &cfg), Step::Route(_)));
        assert_eq!(reply(s.step(&req("RESET"), &m, &cfg)), "+RESET\r\n");
        assert!(reply(s.step(&req("GET a"), &m, &cfg)).starts_with("-NOAUTH"));
        // Without a password configured, AUTH is Redis's error.
        let mut open = Session::new(2, &CFG);
        assert!(reply(open.step(&req("AUTH x"), &m, &CFG)).contains("without any password"));
    }

    #[test]
    fn local_commands() {
        let m = SlotMap::even(2);
        let mut s = Session::new(7, &CFG);
        assert_eq!(reply(s.step(&req("ping"), &m, &CFG)), "+PONG\r\n");
        assert_eq!(reply(s.step(&req("PING hi"), &m, &CFG)), "$2\r\nhi\r\n");
        assert_eq!(reply(s.step(&req("ECHO x"), &m, &CFG)), "$1\r\nx\r\n");
        assert_eq!(reply(s.step(&req("SELECT 0"), &m, &CFG)), "+OK\r\n");
        assert!(reply(s.step(&req("SELECT 1"), &m, &CFG)).contains("database 0 only"));
        assert_eq!(
            reply(s.step(&req("CLIENT SETNAME web1"), &m, &CFG)),
            "+OK\r\n"
        );
        assert_eq!(
            reply(s.step(&req("CLIENT GETNAME"), &m, &CFG)),
            "$4\r\nweb1\r\n"
        );
        assert_eq!(reply(s.step(&req("CLIENT ID"), &m, &CFG)), ":7\r\n");
        assert!(reply(s.step(&req("CLIENT KILL x"), &m, &CFG)).contains("not supported"));
        assert!(reply(s.step(&req("HELLO 3"), &m, &CFG)).starts_with("-NOPROTO"));
        assert!(reply(s.step(&req("HELLO 2"), &m, &CFG)).starts_with("*14\r\n"));
        assert!(matches!(s.step(&req("QUIT"), &m, &CFG), Step::Close(_)));
        assert_eq!(s.step(&req("INFO"), &m, &CFG), Step::Info);
    }

    #[test]
    fn transactions_are_pinned_to_one_shard() {
        let m = SlotMap::even(2);
        let mut s = Session::new(1, &CFG);
        assert_eq!(reply(s.step(&req("MULTI"), &m, &CFG)), "+OK\r\n");
        assert_eq!(reply(s.step(&req("SET b 1"), &m, &CFG)), "+QUEUED\r\n");
        assert_eq!(reply(s.step(&req("INCR c"), &m, &CFG)), "+QUEUED\r\n");
        let Step::Exec {
            shard,
            batch,
            replies,
        } = s.step(&req("EXEC"), &m, &CFG)
        else {
            panic!()
        };
        assert_eq!((shard, replies), (0, 4));
        assert!(batch.starts_with(b"*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n"));
        assert!(batch.ends_with(b"*1\r\n$4\r\nEXEC\r\n"));
        assert!(!s.in_multi());

        // Keys on another shard abort the transaction, as Redis does for errors at queue time.
        s.step(&req("MULTI"), &m, &CFG);
        s.step(&req("SET b 1"), &m, &CFG);
        assert!(reply(s.step(&req("SET a 1"), &m, &CFG)).starts_with("-CROSSSLOT"));
        assert!(reply(s.step(&req("EXEC"), &m, &CFG)).starts_with("-EXECABORT"));

        // Size bound.
        s.step(&req("MULTI"), &m, &CFG);
        for _ in 0..3 {
            assert_eq!(reply(s.step(&req("INCR b"), &m, &CFG)), "+QUEUED\r\n");
        }
        assert!(reply(s.step(&req("INCR b"), &m, &CFG)).contains("too large"));
        assert_eq!(reply(s.step(&req("DISCARD"), &m, &CFG)), "+OK\r\n");

        // Empty transaction, and EXEC without MULTI.
        s.step(&req("MULTI"), &m, &CFG);
        assert_eq!(reply(s.step(&req("EXEC"), &m, &CFG)), "*0\r\n");
        assert!(reply(s.step(&req("EXEC"), &m, &CFG)).contains("without MULTI"));
        // Pub/sub inside MULTI is refused.
        s.step(&req("MULTI"), &m, &CFG);
        assert!(reply(s.step(&req("SUBSCRIBE ch"), &m, &CFG)).contains("not allowed inside MULTI"));
    }
}
