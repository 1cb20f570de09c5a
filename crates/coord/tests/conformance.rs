//! One conformance suite, run against both backends: the embedded store (`hastack coord`'s
//! server, in this process, data on disk) and a real 3-member etcd cluster (Debian's
//! etcd-server 3.4) started by the test. The same client code and the same assertions:
//! that is the point of speaking one protocol.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hastack_coord::{
    Cas, Client, Election, Error, EventKind, Expect, LeaseState, Txn, TxnOp, WatchSpec,
};
use tokio::time::Instant;

use common::*;

type Check<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>;

/// Every check, named; each uses its own key prefix.
async fn suite(c: &Client) {
    let checks: Vec<(&str, Check<'_>)> = vec![
        ("kv", Box::pin(kv(c, "kv/"))),
        (
            "cas_under_contention",
            Box::pin(cas_under_contention(c, "cas/")),
        ),
        (
            "lease_expires_on_time_not_before",
            Box::pin(lease_expires_on_time(c, "lease/")),
        ),
        ("lease_kept_alive", Box::pin(lease_kept_alive(c, "keep/"))),
        ("watch_order", Box::pin(watch_order(c, "watch/"))),
        (
            "watch_history_and_compaction",
            Box::pin(watch_history(c, "hist/")),
        ),
        ("election_fencing", Box::pin(election(c, "elect/"))),
        ("limits_and_bad_requests", Box::pin(limits(c, "lim/"))),
    ];
    for (name, check) in checks {
        let started = Instant::now();
        check
            .await
            .with_context(|| format!("check {name}"))
            .unwrap();
        eprintln!("  {name}: ok ({:?})", started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_embedded() {
    let dir = Scratch::new("conf-embedded");
    let server = embedded(dir.path("data"), 0).await;
    suite(&client(&[server.endpoint()])).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_etcd() {
    let dir = Scratch::new("conf-etcd");
    let cluster = etcd(&dir.0).await;
    suite(&client(&cluster.endpoints())).await;
    drop(cluster);
}

async fn kv(c: &Client, p: &str) -> Result<()> {
    let k = format!("{p}a");
    let r1 = c.put(&k, "1", None).await?;
    let (kv, rev) = c.get(&k).await?;
    let kv = kv.context("just written")?;
    ensure!(rev >= r1 && kv.mod_revision == r1 && kv.create_revision == r1 && kv.version == 1);
    let r2 = c.put(&k, "2", None).await?;
    ensure!(r2 > r1, "revisions grow: {r1} then {r2}");
    let kv = c.get(&k).await?.0.context("present")?;
    ensure!(
        kv.create_revision == r1 && kv.mod_revision == r2 && kv.version == 2 && kv.value == b"2"
    );
    c.put(format!("{p}b"), "x", None).await?;
    c.put(format!("{p}c"), "y", None).await?;
    let l = c.list(p).await?;
    ensure!(
        l.kvs
            .iter()
            .map(|kv| kv.key_str().into_owned())
            .collect::<Vec<_>>()
            == vec![k.clone(), format!("{p}b"), format!("{p}c")]
    );
    let (n, rd) = c.delete(&k).await?;
    ensure!(n == 1 && rd > r2);
    ensure!(c.get(&k).await?.0.is_none());
    let (n, _) = c.delete_prefix(p).await?;
    ensure!(n == 2);
    ensure!(c.list(p).await?.kvs.is_empty());
    Ok(())
}

/// Four clients increment one counter by CAS on its mod revision: no update is lost.
async fn cas_under_contention(c: &Client, p: &str) -> Result<()> {
    let key = format!("{p}counter");
    c.put(&key, "0", None).await?;
    let per_task = 20;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, key) = (c.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            for _ in 0..per_task {
                loop {
                    let kv = c.get(&key).await?.0.context("counter exists")?;
                    let n: u64 = kv.value_str().parse()?;
                    match c
                        .cas(
                            &key,
                            Expect::ModRevision(kv.mod_revision),
                            (n + 1).to_string(),
                            None,
                        )
                        .await?
                    {
                        Cas::Swapped(_) => break,
                        Cas::Conflict(_) => conflicts += 1,
                    }
                }
            }
            anyhow::Ok(conflicts)
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await??;
    }
    let kv = c.get(&key).await?.0.context("counter")?;
    ensure!(
        kv.value_str() == (4 * per_task).to_string(),
        "counter {} after {} increments",
        kv.value_str(),
        4 * per_task
    );
    ensure!(
        kv.version == 4 * per_task as i64 + 1,
        "one version per successful swap"
    );
    eprintln!("    {conflicts} conflicts retried");
    // Absent expectation: create-if-absent succeeds once.
    let once = format!("{p}once");
    ensure!(matches!(
        c.cas(&once, Expect::Absent, "a", None).await?,
        Cas::Swapped(_)
    ));
    match c.cas(&once, Expect::Absent, "b", None).await? {
        Cas::Conflict(Some(kv)) => ensure!(kv.value == b"a"),
        other => bail!("second create-if-absent: {other:?}"),
    }
    Ok(())
}

/// A lease's key disappears no earlier than TTL after the grant was sent, and not much later.
async fn lease_expires_on_time(c: &Client, p: &str) -> Result<()> {
    let ttl = Duration::from_secs(3);
    let key = format!("{p}k");
    let sent = Instant::now();
    let lease = c.grant(ttl).await?;
    ensure!(lease.ttl >= ttl, "granted {:?}", lease.ttl);
    let rev = c.put(&key, "v", Some(lease.id)).await?;
    let info = c.time_to_live(lease.id, true).await?;
    ensure!(
        info.granted == lease.ttl
            && info.remaining <= lease.ttl
            && info.keys == vec![key.as_bytes().to_vec()]
    );
    let mut w = c.watch(WatchSpec::key(&key).from_revision(rev + 1)).await?;
    let b = tokio::time::timeout(Duration::from_secs(30), w.next())
        .await
        .context("lease never expired")??;
    let gone = Instant::now();
    ensure!(b.events.len() == 1 && b.events[0].kind == EventKind::Delete);
    let after = gone - sent;
    // Never before: the server's countdown starts when it receives the grant, after `sent`.
    ensure!(
        after >= lease.ttl,
        "expired after {after:?}, before its TTL {:?}",
        lease.ttl
    );
    // On time: etcd checks expiry every 500 ms and revokes through raft; allow for CPU load.
    ensure!(
        after <= lease.ttl + Duration::from_secs(6),
        "expired only after {after:?}"
    );
    eprintln!("    expired {:?} after its TTL", after - lease.ttl);
    ensure!(matches!(
        c.keep_alive_once(lease.id).await,
        Err(Error::LeaseNotFound(_))
    ));
    ensure!(matches!(
        c.time_to_live(lease.id, false).await,
        Err(Error::LeaseNotFound(_))
    ));
    Ok(())
}

/// A kept-alive lease outlives its TTL; revoking it deletes its key at once.
async fn lease_kept_alive(c: &Client, p: &str) -> Result<()> {
    let key = format!("{p}k");
    let keeper = c.lease_keeper(Duration::from_secs(2)).await?;
    c.put(&key, "v", Some(keeper.id())).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(matches!(keeper.state(), LeaseState::Alive { deadline } if deadline > Instant::now()));
    ensure!(
        c.get(&key).await?.0.is_some(),
        "key lost although its lease was kept alive"
    );
    ensure!(c.leases().await?.contains(&keeper.id()));
    keeper.revoke().await?;
    ensure!(
        c.get(&key).await?.0.is_none(),
        "revoke deletes the lease's keys"
    );
    Ok(())
}

/// Two writers race on a prefix; one watcher sees every change once, in revision order.
async fn watch_order(c: &Client, p: &str) -> Result<()> {
    let mut w = c.watch(WatchSpec::prefix(p).with_prev_kv()).await?;
    let mut writers = Vec::new();
    for t in 0..2 {
        let (c, p) = (c.clone(), p.to_string());
        writers.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..40 {
                revs.push((
                    format!("{p}{t}/{}", i % 5),
                    c.put(format!("{p}{t}/{}", i % 5), i.to_string(), None)
                        .await?,
                ));
            }
            anyhow::Ok(revs)
        }));
    }
    let mut written = HashSet::new();
    for wr in writers {
        written.extend(wr.await??);
    }
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let b = tokio::time::timeout(Duration::from_secs(20), w.next())
            .await
            .context("watch stalled")??;
        for e in b.events {
            ensure!(e.kind == EventKind::Put);
            if e.kv.version > 1 {
                ensure!(e.prev.is_some(), "prev_kv asked for");
            }
            seen.push((e.kv.key_str().into_owned(), e.kv.mod_revision));
        }
    }
    ensure!(
        seen.windows(2).all(|w| w[0].1 < w[1].1),
        "revisions strictly increase: {seen:?}"
    );
    ensure!(
        seen.iter().cloned().collect::<HashSet<_>>() == written,
        "exactly the writes, each once"
    );
    ensure!(
        w.next_within(Duration::from_millis(300)).await?.is_none(),
        "nothing more"
    );
    Ok(())
}

/// A watch from a past revision replays the history; one from a compacted revision fails
/// with `Compacted`; the deletes of a prefix are seen.
async fn watch_history(c: &Client, p: &str) -> Result<()> {
    let first = c.put(format!("{p}a"), "1", None).await?;
    c.put(format!("{p}a"), "2", None).await?;
    let r = c
        .txn(Txn::new().and_then([
            TxnOp::put(format!("{p}b"), "x", None),
            TxnOp::delete(format!("{p}a")),
        ]))
        .await?;
    let mut w = c.watch(WatchSpec::prefix(p).from_revision(first)).await?;
    let mut events = Vec::new();
    while events.len() < 4 {
        let b = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .context("no replay")??;
        events.extend(b.events);
    }
    let kinds: Vec<(EventKind, i64)> = events.iter().map(|e| (e.kind, e.revision())).collect();
    ensure!(kinds[0] == (EventKind::Put, first));
    ensure!(
        kinds[2].1 == r.revision && kinds[3].1 == r.revision,
        "a transaction's events share its revision: {kinds:?}"
    );
    ensure!(kinds.iter().filter(|k| k.0 == EventKind::Delete).count() == 1);
    drop(w);
    // Compact up to the current revision: the replay above is no longer possible.
    let now = c.get(format!("{p}b")).await?.1;
    c.compact(now).await?;
    match c.watch(WatchSpec::prefix(p).from_revision(first)).await {
        Err(Error::Compacted { compact_revision }) => ensure!(
            compact_revision == now,
            "compacted at {compact_revision}, expected {now}"
        ),
        Ok(mut w) => match w.next().await {
            Err(Error::Compacted { compact_revision }) => ensure!(compact_revision == now),
            other => bail!("watch from a compacted revision: {other:?}"),
        },
        Err(e) => bail!("watch from a compacted revision: {e}"),
    }
    Ok(())
}

/// The second candidate waits while the first leads, then wins with a larger token; the
/// first's fenced write fails after it lost.
async fn election(c: &Client, p: &str) -> Result<()> {
    let e = Election::new(c, format!("{p}leader"));
    let ka = c.lease_keeper(Duration::from_secs(5)).await?;
    let kb = c.lease_keeper(Duration::from_secs(5)).await?;
    let a = e.campaign(&ka, "a").await?;
    let info = e.leader().await?.context("a leader")?;
    ensure!(info.value == b"a" && info.token == a.token());
    let eb = e.clone();
    let mut b = tokio::spawn(async move {
        let l = eb.campaign(&kb, "b").await;
        (l, kb)
    });
    // Safety: b cannot win while a holds its lease.
    ensure!(
        tokio::time::timeout(Duration::from_millis(700), &mut b)
            .await
            .is_err(),
        "two leaders at once"
    );
    ensure!(a.is_leader().await?);
    ensure!(a.proclaim("a2").await?);
    let fence = a.fence();
    let token_a = a.token();
    ka.revoke().await?; // a's lease gone: its key is deleted, b takes over
    let (lb, _kb) = tokio::time::timeout(Duration::from_secs(20), b)
        .await
        .context("b never won")??;
    let lb = lb?;
    ensure!(
        lb.token() > token_a,
        "fencing tokens increase: {} then {}",
        token_a,
        lb.token()
    );
    let fenced = c
        .txn(
            Txn::new()
                .when([fence])
                .and_then([TxnOp::put(format!("{p}data"), "from a", None)]),
        )
        .await?;
    ensure!(
        !fenced.succeeded,
        "a deposed leader's fenced write must fail"
    );
    ensure!(e.leader().await?.context("b leads")?.value == b"b");
    lb.resign(Duration::from_secs(5)).await?;
    ensure!(e.leader().await?.is_none());
    Ok(())
}

/// Oversized values, unknown leases, empty keys: named errors, nothing applied.
async fn limits(c: &Client, p: &str) -> Result<()> {
    let key = format!("{p}big");
    c.put(&key, vec![7u8; 1024 * 1024], None)
        .await
        .context("a 1 MiB value is within etcd's limit")?;
    match c.put(&key, vec![7u8; 2 * 1024 * 1024], None).await {
        Err(Error::TooLarge(_)) => {}
        other => bail!("2 MiB value: {other:?}"),
    }
    ensure!(c.get(&key).await?.0.context("still there")?.value.len() == 1024 * 1024);
    match c.put(format!("{p}x"), "v", Some(0x7777_1234)).await {
        Err(Error::LeaseNotFound(id)) => ensure!(id == 0x7777_1234),
        other => bail!("put with an unknown lease: {other:?}"),
    }
    ensure!(matches!(
        c.keep_alive_once(0x7777_1234).await,
        Err(Error::LeaseNotFound(_))
    ));
    match c.put("", "v", None).await {
        Err(e @ Error::Rejected { .. }) => {
            ensure!(e.to_string().contains("key is not provided"), "{e}")
        }
        other => bail!("empty key: {other:?}"),
    }
    Ok(())
}
