//! The Sentinel protocol face with a real Sentinel-aware client: Debian's python3-redis
//! (`redis.sentinel.Sentinel`) finds the master and the replicas of real redis-servers
//! through it, writes and reads through them, and receives `+switch-master`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache_support;
mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use cache_support::*;
use hastack_cache::sentinel::{
    MasterState, PeerState, ReplicaState, SentinelEvent, SentinelView, event_message, serve,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_sentinel_client_works_through_the_face() {
    require("/usr/bin/python3");
    let scratch = Scratch::new("sentinel");
    let m = Redis::start(&scratch.path("m"), &[]).await;
    let r = Redis::start(
        &scratch.path("r"),
        &[&format!("--replicaof 127.0.0.1 {}", m.port)],
    )
    .await;

    let master = MasterState {
        name: "mymaster".into(),
        addr: Some(m.addr()),
        quorum: 2,
        down_after_ms: 1000,
        failover_timeout_ms: 10000,
        replicas: vec![ReplicaState {
            addr: Some(r.addr()),
            link_up: true,
            priority: 100,
            ..ReplicaState::default()
        }],
        sentinels: vec![PeerState {
            addr: Some("127.0.0.1:1".parse().unwrap()),
            run_id: "b".repeat(40),
        }],
        ..MasterState::default()
    };
    let view = SentinelView {
        my_id: "a".repeat(40),
        masters: vec![master.clone()],
    };
    let (view_tx, view_rx) = watch::channel(Arc::new(view));
    let (events, _) = broadcast::channel(64);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, view_rx, events.clone(), shutdown.clone()));

    let script = format!(
        r#"
import sys, redis
from redis.sentinel import Sentinel
s = Sentinel([("127.0.0.1", {port})], socket_timeout=5)
assert s.discover_master("mymaster") == ("127.0.0.1", {mport}), s.discover_master("mymaster")
assert s.discover_slaves("mymaster") == [("127.0.0.1", {rport})], s.discover_slaves("mymaster")
m = s.master_for("mymaster", socket_timeout=5)
m.set("through-sentinel", "yes")
assert m.get("through-sentinel") == b"yes"
ps = s.sentinels[0].pubsub()
ps.subscribe("+switch-master")
assert ps.get_message(timeout=5)["type"] == "subscribe"
print("subscribed", flush=True)
msg = ps.get_message(timeout=10)
while msg is None:
    msg = ps.get_message(timeout=10)
print(msg["data"].decode(), flush=True)
assert s.discover_master("mymaster") == ("127.0.0.1", {rport}), s.discover_master("mymaster")
print("ok", flush=True)
"#,
        mport = m.port,
        rport = r.port,
    );
    let mut child = tokio::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("python did not subscribe")
        .unwrap();
    if first.as_deref() != Some("subscribed") {
        let out = child.wait_with_output().await.unwrap();
        panic!(
            "python3-redis: {first:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A failover as phase 2's manager will report it: the view changes, the event goes out.
    let mut promoted = master.clone();
    promoted.addr = Some(r.addr());
    promoted.replicas.clear();
    view_tx
        .send(Arc::new(SentinelView {
            my_id: "a".repeat(40),
            masters: vec![promoted.clone()],
        }))
        .unwrap();
    let (channel, payload) = event_message(
        &promoted,
        &SentinelEvent::SwitchMaster {
            from: m.addr(),
            to: r.addr(),
        },
        0,
    );
    assert_eq!(channel, "+switch-master");
    events.send((channel, payload.clone())).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("no +switch-master message")
        .unwrap();
    assert_eq!(got.as_deref(), Some(payload.as_str()));
    // After the switch, the client finds the new master through the face.
    let last = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("python did not finish")
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success() && last.as_deref() == Some("ok"),
        "python3-redis: {last:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    shutdown.cancel();
}
