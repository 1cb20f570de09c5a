//! The Sentinel protocol face of the failover manager: what Sentinel-aware clients ask a
//! Sentinel, answered from a [`SentinelView`], so unmodified clients (redis-py's
//! `redis.sentinel.Sentinel`, ...) find the current master through hastack managers.
//!
//! [`answer`] is pure (a view and a command in, RESP out); [`serve`] is the listener, with
//! pub/sub for Sentinel's events (`+sdown`, `+odown`, `+switch-master`, in Sentinel's message
//! formats, see [`event_message`]). Phase 1 serves a view it is given; phase 2's manager
//! publishes its machine's view into the same [`tokio::sync::watch`] channel.
//!
//! `SENTINEL is-master-down-by-addr` answers this manager's opinion but never votes (the
//! leader field is `*`): hastack managers agree through the coordination store, not through
//! Sentinel's election, so real Sentinels and hastack managers cannot share a group.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::resp::{Limits, RequestParser, write};
use crate::route;

/// What a manager knows, as Sentinel clients see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SentinelView {
    /// This manager's run id (40 hex characters, like Sentinel's).
    pub my_id: String,
    /// The groups it watches.
    pub masters: Vec<MasterState>,
}

/// One monitored group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasterState {
    /// Group name (`mymaster`).
    pub name: String,
    /// Current master.
    pub addr: Option<SocketAddr>,
    /// Its run id, when known.
    pub run_id: String,
    /// Subjectively down.
    pub sdown: bool,
    /// Objectively down.
    pub odown: bool,
    /// Quorum.
    pub quorum: usize,
    /// Current epoch.
    pub config_epoch: u64,
    /// `down-after-milliseconds`.
    pub down_after_ms: u64,
    /// `failover-timeout`.
    pub failover_timeout_ms: u64,
    /// Its replicas.
    pub replicas: Vec<ReplicaState>,
    /// The other managers.
    pub sentinels: Vec<PeerState>,
}

/// One replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaState {
    /// Address.
    pub addr: Option<SocketAddr>,
    /// Run id.
    pub run_id: String,
    /// Subjectively down.
    pub sdown: bool,
    /// Link to the master up.
    pub link_up: bool,
    /// `replica-priority`.
    pub priority: u32,
    /// Replication offset.
    pub offset: u64,
}

/// Another manager.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerState {
    /// Its Sentinel address.
    pub addr: Option<SocketAddr>,
    /// Its run id.
    pub run_id: String,
}

/// A Sentinel event for pub/sub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SentinelEvent {
    /// `+sdown` (true) / `-sdown` of a group's master.
    Sdown(bool),
    /// `+odown` (true) / `-odown`.
    Odown(bool),
    /// `+switch-master` from `from` to `to`.
    SwitchMaster {
        /// Old master.
        from: SocketAddr,
        /// New master.
        to: SocketAddr,
    },
}

/// The channel and payload Sentinel publishes for `event` of group `m`:
/// `+sdown master mymaster 127.0.0.1 6379`, `+odown master mymaster 127.0.0.1 6379 #quorum 2/2`,
/// `+switch-master mymaster 127.0.0.1 6379 127.0.0.1 6380`.
pub fn event_message(m: &MasterState, event: &SentinelEvent, agreeing: usize) -> (String, String) {
    let (ip, port) = split(m.addr);
    match event {
        SentinelEvent::Sdown(on) => (
            format!("{}sdown", if *on { '+' } else { '-' }),
            format!("master {} {ip} {port}", m.name),
        ),
        SentinelEvent::Odown(on) => (
            format!("{}odown", if *on { '+' } else { '-' }),
            if *on {
                format!(
                    "master {} {ip} {port} #quorum {agreeing}/{}",
                    m.name, m.quorum
                )
            } else {
                format!("master {} {ip} {port}", m.name)
            },
        ),
        SentinelEvent::SwitchMaster { from, to } => (
            "+switch-master".to_string(),
            format!(
                "{} {} {} {} {}",
                m.name,
                from.ip(),
                from.port(),
                to.ip(),
                to.port()
            ),
        ),
    }
}

fn split(addr: Option<SocketAddr>) -> (String, u16) {
    addr.map_or((String::new(), 0), |a| (a.ip().to_string(), a.port()))
}

/// Answer one command (not the pub/sub ones) from `view`.
pub fn answer(view: &SentinelView, args: &[Bytes]) -> Bytes {
    let name = args
        .first()
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    let arg = |i: usize| args.get(i).map(|a| String::from_utf8_lossy(a).into_owned());
    let mut out = BytesMut::new();
    match &name[..] {
        b"PING" => write::simple(&mut out, "PONG"),
        b"ROLE" => {
            write::array(&mut out, 2);
            write::bulk(&mut out, b"sentinel");
            write::array(&mut out, view.masters.len());
            for m in &view.masters {
                write::bulk(&mut out, m.name.as_bytes());
            }
        }
        b"INFO" => write::bulk(&mut out, info(view).as_bytes()),
        b"SENTINEL" => return sentinel(view, args, &arg),
        _ => return route::unknown_command(args),
    }
    out.freeze()
}

fn sentinel(view: &SentinelView, args: &[Bytes], arg: &dyn Fn(usize) -> Option<String>) -> Bytes {
    let sub = arg(1).unwrap_or_default().to_ascii_lowercase();
    let find = |i: usize| {
        let name = arg(i).unwrap_or_default();
        view.masters.iter().find(|m| m.name == name)
    };
    let no_master = || route::error("ERR No such master with that name");
    let mut out = BytesMut::new();
    match sub.as_str() {
        "get-master-addr-by-name" => match find(2).and_then(|m| m.addr) {
            Some(a) => {
                write::array(&mut out, 2);
                write::bulk(&mut out, a.ip().to_string().as_bytes());
                write::bulk(&mut out, a.port().to_string().as_bytes());
            }
            None => out.extend_from_slice(b"*-1\r\n"),
        },
        "masters" => {
            write::array(&mut out, view.masters.len());
            for m in &view.masters {
                master_fields(&mut out, m);
            }
        }
        "master" => match find(2) {
            Some(m) => master_fields(&mut out, m),
            None => return no_master(),
        },
        "replicas" | "slaves" => match find(2) {
            Some(m) => {
                write::array(&mut out, m.replicas.len());
                for r in &m.replicas {
                    replica_fields(&mut out, m, r);
                }
            }
            None => return no_master(),
        },
        "sentinels" => match find(2) {
            Some(m) => {
                write::array(&mut out, m.sentinels.len());
                for s in &m.sentinels {
                    let (ip, port) = split(s.addr);
                    fields(
                        &mut out,
                        &[
                            ("name", s.run_id.clone()),
                            ("ip", ip),
                            ("port", port.to_string()),
                            ("runid", s.run_id.clone()),
                            ("flags", "sentinel".into()),
                        ],
                    );
                }
            }
            None => return no_master(),
        },
        "ckquorum" => match find(2) {
            Some(m) => {
                let usable = m.sentinels.len() + 1;
                if usable >= m.quorum {
                    write::simple(
                        &mut out,
                        &format!(
                            "OK {usable} usable Sentinels. Quorum and failover authorization can be reached"
                        ),
                    );
                } else {
                    return route::error(&format!(
                        "NOQUORUM {usable} usable Sentinels. Not enough available Sentinels to reach the specified quorum for this master"
                    ));
                }
            }
            None => return no_master(),
        },
        "is-master-down-by-addr" => {
            let ip = arg(2).unwrap_or_default();
            let port = arg(3).unwrap_or_default();
            let down = view.masters.iter().any(|m| {
                m.sdown
                    && m.addr
                        .is_some_and(|a| a.ip().to_string() == ip && a.port().to_string() == port)
            });
            write::array(&mut out, 3);
            write::integer(&mut out, i64::from(down));
            write::bulk(&mut out, b"*");
            write::integer(&mut out, 0);
        }
        "myid" => write::bulk(&mut out, view.my_id.as_bytes()),
        _ => {
            return route::error(&format!(
                "ERR Unknown sentinel subcommand '{}'",
                String::from_utf8_lossy(args.get(1).map_or(&[][..], |a| &a[..]))
            ));
        }
    }
    out.freeze()
}

fn fields(out: &mut BytesMut, pairs: &[(&str, String)]) {
    write::array(out, pairs.len() * 2);
    for (k, v) in pairs {
        write::bulk(out, k.as_bytes());
        write::bulk(out, v.as_bytes());
    }
}

fn master_fields(out: &mut BytesMut, m: &MasterState) {
    let (ip, port) = split(m.addr);
    let mut flags = String::from("master");
    if m.sdown {
        flags.push_str(",s_down");
    }
    if m.odown {
        flags.push_str(",o_down");
    }
    fields(
        out,
        &[
            ("name", m.name.clone()),
            ("ip", ip),
            ("port", port.to_string()),
            ("runid", m.run_id.clone()),
            ("flags", flags),
            ("down-after-milliseconds", m.down_after_ms.to_string()),
            ("role-reported", "master".into()),
            ("config-epoch", m.config_epoch.to_string()),
            ("num-slaves", m.replicas.len().to_string()),
            ("num-other-sentinels", m.sentinels.len().to_string()),
            ("quorum", m.quorum.to_string()),
            ("failover-timeout", m.failover_timeout_ms.to_string()),
            ("parallel-syncs", "1".into()),
        ],
    );
}

fn replica_fields(out: &mut BytesMut, m: &MasterState, r: &ReplicaState) {
    let (ip, port) = split(r.addr);
    let (mip, mport) = split(m.addr);
    fields(
        out,
        &[
            ("name", format!("{ip}:{port}")),
            ("ip", ip),
            ("port", port.to_string()),
            ("runid", r.run_id.clone()),
            (
                "flags",
                if r.sdown { "slave,s_down" } else { "slave" }.into(),
            ),
            ("role-reported", "slave".into()),
            (
                "master-link-status",
                if r.link_up { "ok" } else { "err" }.into(),
            ),
            ("master-host", mip),
            ("master-port", mport.to_string()),
            ("slave-priority", r.priority.to_string()),
            ("slave-repl-offset", r.offset.to_string()),
        ],
    );
}

fn info(view: &SentinelView) -> String {
    let mut t = String::new();
    let _ = write!(
        t,
        "# Server\r\nredis_mode:sentinel\r\nhastack_version:{}\r\nrun_id:{}\r\n\r\n# Sentinel\r\nsentinel_masters:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        view.my_id,
        view.masters.len()
    );
    for (i, m) in view.masters.iter().enumerate() {
        let (ip, port) = split(m.addr);
        let status = if m.odown {
            "odown"
        } else if m.sdown {
            "sdown"
        } else {
            "ok"
        };
        let _ = write!(
            t,
            "master{i}:name={},status={status},address={ip}:{port},slaves={},sentinels={}\r\n",
            m.name,
            m.replicas.len(),
            m.sentinels.len() + 1
        );
    }
    t
}

/// An event as published: `(channel, payload)`.
pub type Published = (String, String);

/// Serve Sentinel clients on `listener` until `shutdown`: commands from the current view,
/// pub/sub from `events`.
pub async fn serve(
    listener: TcpListener,
    view: watch::Receiver<Arc<SentinelView>>,
    events: broadcast::Sender<Published>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "sentinel accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let view = view.clone();
        let events = events.subscribe();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = connection(stream, view, events) => {}
            }
        });
    }
}

/// Limits for Sentinel clients: their commands are short.
const LIMITS: Limits = Limits {
    max_bulk_len: 64 * 1024,
    max_elements: 1024,
    max_frame_len: 1024 * 1024,
};

async fn connection(
    mut stream: TcpStream,
    view: watch::Receiver<Arc<SentinelView>>,
    mut events: broadcast::Receiver<Published>,
) {
    let mut inbuf = BytesMut::with_capacity(4096);
    let mut parser = RequestParser::new();
    let mut channels: Vec<Bytes> = Vec::new();
    let mut patterns: Vec<Bytes> = Vec::new();
    loop {
        let mut out = BytesMut::new();
        loop {
            match parser.parse(&mut inbuf, &LIMITS) {
                Ok(Some(req)) => {
                    let name = req.name().to_ascii_uppercase();
                    match &name[..] {
                        b"SUBSCRIBE" | b"PSUBSCRIBE" | b"UNSUBSCRIBE" | b"PUNSUBSCRIBE" => {
                            pubsub(
                                &name,
                                &req.args[1..],
                                &mut channels,
                                &mut patterns,
                                &mut out,
                            );
                        }
                        b"QUIT" => {
                            out.extend_from_slice(b"+OK\r\n");
                            let _ = stream.write_all(&out).await;
                            return;
                        }
                        _ => {
                            let v = view.borrow().clone();
                            out.extend_from_slice(&answer(&v, &req.args));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    out.extend_from_slice(&e.to_reply());
                    let _ = stream.write_all(&out).await;
                    return;
                }
            }
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
        tokio::select! {
            r = stream.read_buf(&mut inbuf) => match r {
                Ok(n) if n > 0 => {}
                _ => return,
            },
            e = events.recv() => match e {
                Ok((channel, payload)) => {
                    let mut msg = BytesMut::new();
                    if channels.iter().any(|c| c[..] == *channel.as_bytes()) {
                        write::array(&mut msg, 3);
                        write::bulk(&mut msg, b"message");
                        write::bulk(&mut msg, channel.as_bytes());
                        write::bulk(&mut msg, payload.as_bytes());
                    } else if let Some(p) = patterns.iter().find(|p| glob(p, channel.as_bytes())) {
                        write::array(&mut msg, 4);
                        write::bulk(&mut msg, b"pmessage");
                        write::bulk(&mut msg, p);
                        write::bulk(&mut msg, channel.as_bytes());
                        write::bulk(&mut msg, payload.as_bytes());
                    }
                    if !msg.is_empty() && stream.write_all(&msg).await.is_err() {
                        return;
                    }
                }
                // A subscriber too slow for the event rate: close it, as Redis would at
                // its pub/sub output limit.
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

fn pubsub(
    name: &[u8],
    args: &[Bytes],
    channels: &mut Vec<Bytes>,
    patterns: &mut Vec<Bytes>,
    out: &mut BytesMut,
) {
    let pattern = name.starts_with(b"P");
    let list = if pattern { patterns } else { channels };
    let subscribe = !name.ends_with(b"UNSUBSCRIBE");
    let kind: &[u8] = match (pattern, subscribe) {
        (false, true) => b"subscribe",
        (true, true) => b"psubscribe",
        (false, false) => b"unsubscribe",
        (true, false) => b"punsubscribe",
    };
    let targets: Vec<Bytes> = if !subscribe && args.is_empty() {
        list.clone()
    } else {
        args.to_vec()
    };
    for t in targets {
        if subscribe {
            if !list.contains(&t) {
                list.push(t.clone());
            }
        } else {
            list.retain(|c| *c != t);
        }
        write::array(out, 3);
        write::bulk(out, kind);
        write::bulk(out, &t);
        write::integer(out, list.len() as i64);
    }
}

/// Redis's glob for PSUBSCRIBE patterns: `*`, `?`, `[...]` classes are approximated by `*`
/// and `?` (Sentinel clients subscribe to `*` or to exact event names).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.split_first(), text.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            glob(rest, text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some((b'?', rest)), Some((_, t))) => glob(rest, t),
        (Some((p, rest)), Some((c, t))) if p == c => glob(rest, t),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{Request, Value};

    fn view() -> SentinelView {
        SentinelView {
            my_id: "a".repeat(40),
            masters: vec![MasterState {
                name: "mymaster".into(),
                addr: Some("127.0.0.1:6379".parse().unwrap()),
                run_id: "r0".into(),
                quorum: 2,
                config_epoch: 3,
                down_after_ms: 1000,
                failover_timeout_ms: 10000,
                replicas: vec![ReplicaState {
                    addr: Some("127.0.0.1:6380".parse().unwrap()),
                    run_id: "r1".into(),
                    link_up: true,
                    priority: 100,
                    offset: 42,
                    ..ReplicaState::default()
                }],
                sentinels: vec![PeerState {
                    addr: Some("127.0.0.1:26380".parse().unwrap()),
                    run_id: "b".repeat(40),
                }],
                ..MasterState::default()
            }],
        }
    }

    fn ask(text: &str) -> Value {
        let b = answer(&view(), &Request::words(text).args);
        Value::decode(&b, &Limits::default()).unwrap().unwrap().0
    }

    fn strings(v: &Value) -> Vec<String> {
        v.as_list()
            .unwrap()
            .iter()
            .map(|x| String::from_utf8_lossy(x.as_bytes().unwrap()).into_owned())
            .collect()
    }

    #[test]
    fn answers_what_clients_ask() {
        assert_eq!(
            strings(&ask("SENTINEL get-master-addr-by-name mymaster")),
            vec!["127.0.0.1", "6379"]
        );
        assert_eq!(ask("SENTINEL get-master-addr-by-name nope"), Value::Null);
        let masters = ask("SENTINEL masters");
        let m = strings(&masters.as_list().unwrap()[0]);
        assert_eq!(
            &m[..6],
            &["name", "mymaster", "ip", "127.0.0.1", "port", "6379"]
        );
        assert!(m.windows(2).any(|w| w == ["flags", "master"]));
        assert!(m.windows(2).any(|w| w == ["num-other-sentinels", "1"]));
        let r = strings(&ask("SENTINEL replicas mymaster").as_list().unwrap()[0]);
        assert!(r.windows(2).any(|w| w == ["flags", "slave"]));
        assert!(r.windows(2).any(|w| w == ["slave-repl-offset", "42"]));
        assert_eq!(
            ask("SENTINEL ckquorum mymaster")
                .as_bytes()
                .map(|b| b.starts_with(b"OK 2 usable")),
            Some(true)
        );
        assert!(ask("SENTINEL master nope").is_error());
        let down = ask("SENTINEL is-master-down-by-addr 127.0.0.1 6379 0 *");
        assert_eq!(down.as_list().unwrap()[0], Value::Integer(0));
        assert!(ask("SENTINEL frobnicate").is_error());
        assert_eq!(ask("PING"), Value::Simple(Bytes::from_static(b"PONG")));
    }

    #[test]
    fn event_formats_are_sentinels() {
        let v = view();
        let m = &v.masters[0];
        assert_eq!(
            event_message(m, &SentinelEvent::Odown(true), 2),
            (
                "+odown".into(),
                "master mymaster 127.0.0.1 6379 #quorum 2/2".into()
            )
        );
        assert_eq!(
            event_message(
                m,
                &SentinelEvent::SwitchMaster {
                    from: "127.0.0.1:6379".parse().unwrap(),
                    to: "127.0.0.1:6380".parse().unwrap()
                },
                0
            ),
            (
                "+switch-master".into(),
                "mymaster 127.0.0.1 6379 127.0.0.1 6380".into()
            )
        );
        assert!(glob(b"*", b"+switch-master"));
        assert!(glob(b"+s*", b"+sdown"));
        assert!(!glob(b"+o*", b"+sdown"));
    }
}
