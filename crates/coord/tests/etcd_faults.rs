//! The client against a real 3-member etcd cluster while members are killed -9, restarted and
//! frozen: watches resume without losing or repeating an event, and a CAS/read/write history
//! recorded meanwhile is linearizable (checked by `hastack_coord::lincheck`).
//!
//! Timing: etcd elections take about a second unloaded and longer under CPU load; every wait
//! here is for a condition, with generous timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hastack_coord::lincheck::{self, Verdict};
use hastack_coord::{Client, ClientOptions, EventKind, WatchSpec};
use parking_lot::Mutex;
use tokio::time::Instant;

use common::*;

/// The watcher sits on member 0; member 0 is killed -9, restarted, then frozen (SIGSTOP)
/// while another client writes through the other members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_across_member_kill_and_freeze() {
    let dir = Scratch::new("etcd-watch");
    let mut cluster = etcd(&dir.0).await;
    let eps = cluster.endpoints();
    let watcher = Client::new(
        &eps,
        ClientOptions {
            call_timeout: Duration::from_secs(30),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let writer = client(&[eps[1].clone(), eps[2].clone()]);
    let mut watch = watcher.watch(WatchSpec::prefix("w/")).await.unwrap();
    let mut acked = Vec::new();
    let mut attempted = HashSet::new();
    for i in 0..45 {
        match i {
            10 => cluster.kill(0).await,
            20 => {
                cluster.restart(0).unwrap();
                cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
            }
            30 => cluster.pause(0).unwrap(),
            _ => {}
        }
        let key = format!("w/{i}");
        attempted.insert(key.clone());
        if let Ok(rev) = writer.put(&key, "v", None).await {
            acked.push((key, rev));
        }
    }
    let last = acked.last().unwrap().1;
    let mut seen: Vec<(String, i64)> = Vec::new();
    while seen.last().map_or(0, |s| s.1) < last {
        let b = tokio::time::timeout(Duration::from_secs(60), watch.next())
            .await
            .expect("the watch stalled")
            .expect("the watch failed");
        for e in b.events {
            assert_eq!(e.kind, EventKind::Put);
            seen.push((e.kv.key_str().into_owned(), e.kv.mod_revision));
        }
    }
    cluster.resume(0).unwrap();
    assert!(watch.reconnects() >= 1, "the watch went through the faults");
    if let Err(e) = lincheck::check_watch_delivery(&seen, &acked, &attempted) {
        panic!("{e}; delivered: {seen:?}");
    }
}

/// Three clients run CAS/read/write on two registers while the leader is killed and
/// restarted twice; the history is linearizable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_history_across_leader_kills_is_linearizable() {
    let dir = Scratch::new("etcd-lin");
    let mut cluster = etcd(&dir.0).await;
    let t0 = Instant::now();
    let history: Arc<Mutex<Vec<lincheck::Op>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for id in 0..3u64 {
        let mut eps = cluster.endpoints();
        eps.rotate_left(id as usize);
        let c = Client::new(
            &eps,
            ClientOptions {
                call_timeout: Duration::from_secs(2),
                attempt_timeout: Duration::from_secs(1),
                ..ClientOptions::default()
            },
        )
        .unwrap();
        let (history, stop) = (history.clone(), stop.clone());
        clients.push(tokio::spawn(lincheck::register_client(
            id, c, t0, history, stop,
        )));
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let leader = cluster.leader().await.unwrap().expect("a leader");
        cluster.kill(leader).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.restart(leader).unwrap();
        cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let h = history.lock().clone();
    let done = h.iter().filter(|o| o.ret.is_some()).count();
    let unknown = h.len() - done;
    eprintln!("{} operations, {unknown} with an unknown outcome", h.len());
    assert!(
        done >= 50,
        "too few completed operations to say anything: {done}"
    );
    assert_eq!(lincheck::check(&h, 50_000_000), Verdict::Linearizable);
}
