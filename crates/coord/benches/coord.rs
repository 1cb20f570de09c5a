//! Coordination benchmarks, embedded store vs a 3-member etcd cluster in the same run (driven
//! by bench/coord.sh, which writes the table into docs/benchmarks.md):
//!
//! * CAS latency (one client, sequential) and throughput (16 clients on their own keys);
//! * lease keep-alive latency and throughput, same shapes;
//! * watch fan-out: 1,000 watchers on one key, time until the last one sees a put;
//! * etcd only: kill -9 of the leader -> first successful CAS (a client CASing in a loop).
//!
//! Environment: `HASTACK_BIN` (the `hastack` binary for the embedded store, required),
//! `BENCH_SECS` (seconds per measurement, default 5), `BENCH_KILLS` (leader kills, default 3),
//! `BENCH_WATCHERS` (default 1000), `BENCH_DIR` (scratch, default a temp dir).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hastack_coord::etcd::EtcdCluster;
use hastack_coord::{Cas, Client, ClientOptions, Expect, WatchSpec};
use hdrhistogram::Histogram;
use tokio::time::Instant;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Row {
    backend: &'static str,
    what: String,
    ops_per_sec: Option<f64>,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn options() -> ClientOptions {
    ClientOptions {
        call_timeout: Duration::from_secs(10),
        attempt_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    }
}

/// Run `clients` loops of `op` for `secs`; latency histogram (µs) and ops/s.
async fn load<F, Fut>(clients: usize, secs: u64, op: F) -> (Histogram<u64>, f64)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).unwrap();
            let mut n = 0u64;
            while Instant::now() < stop {
                let t = Instant::now();
                op(c, n).await;
                h.record(t.elapsed().as_micros() as u64).unwrap();
                n += 1;
            }
            h
        }));
    }
    let mut all = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        all.add(t.await.unwrap()).unwrap();
    }
    let rate = all.len() as f64 / secs as f64;
    (all, rate)
}

async fn cas_loop(c: &Client, key: &str) {
    loop {
        let (kv, _) = c.get(key).await.unwrap();
        let expect = kv
            .as_ref()
            .map_or(Expect::Absent, |kv| Expect::ModRevision(kv.mod_revision));
        let n: u64 = kv.map_or(0, |kv| kv.value_str().parse().unwrap_or(0));
        if let Cas::Swapped(_) = c.cas(key, expect, (n + 1).to_string(), None).await.unwrap() {
            return;
        }
    }
}

async fn measure(
    backend: &'static str,
    endpoints: Vec<String>,
    secs: u64,
    watchers: usize,
    rows: &mut Vec<Row>,
) {
    let c = Client::new(&endpoints, options()).unwrap();
    eprintln!("== {backend}: CAS");
    for clients in [1usize, 16] {
        // Separate connections per client, as separate processes would have.
        let cs: Arc<Vec<Client>> = Arc::new(
            (0..clients)
                .map(|_| Client::new(&endpoints, options()).unwrap())
                .collect(),
        );
        let (h, rate) = load(clients, secs, move |i, _| {
            let cs = cs.clone();
            async move { cas_loop(&cs[i], &format!("bench/cas/{i}")).await }
        })
        .await;
        rows.push(Row {
            backend,
            what: format!("CAS (get + txn), {clients} client(s)"),
            ops_per_sec: Some(rate),
            p50_ms: ms(&h, 0.5),
            p99_ms: ms(&h, 0.99),
            max_ms: h.max() as f64 / 1000.0,
        });
    }
    eprintln!("== {backend}: keep-alive");
    for clients in [1usize, 16] {
        let cs: Arc<Vec<(Client, i64)>> = {
            let mut v = Vec::new();
            for _ in 0..clients {
                let cl = Client::new(&endpoints, options()).unwrap();
                let id = cl.grant(Duration::from_secs(60)).await.unwrap().id;
                v.push((cl, id));
            }
            Arc::new(v)
        };
        let (h, rate) = load(clients, secs, move |i, _| {
            let cs = cs.clone();
            async move {
                cs[i].0.keep_alive_once(cs[i].1).await.unwrap();
            }
        })
        .await;
        rows.push(Row {
            backend,
            what: format!("lease keep-alive, {clients} client(s)"),
            ops_per_sec: Some(rate),
            p50_ms: ms(&h, 0.5),
            p99_ms: ms(&h, 0.99),
            max_ms: h.max() as f64 / 1000.0,
        });
    }
    eprintln!("== {backend}: watch fan-out ({watchers} watchers)");
    // Watchers spread over 10 connections (100 streams each).
    let conns: Vec<Client> = (0..10)
        .map(|_| Client::new(&endpoints, options()).unwrap())
        .collect();
    let mut ws = Vec::new();
    for i in 0..watchers {
        ws.push(
            conns[i % conns.len()]
                .watch(WatchSpec::key("bench/fanout"))
                .await
                .unwrap(),
        );
    }
    let mut h = Histogram::<u64>::new(3).unwrap();
    let rounds = 20;
    for round in 0..rounds {
        let t = Instant::now();
        let rev = c
            .put("bench/fanout", round.to_string(), None)
            .await
            .unwrap();
        let mut waits = Vec::new();
        for mut w in ws.drain(..) {
            waits.push(tokio::spawn(async move {
                loop {
                    let b = w.next().await.unwrap();
                    if b.events.iter().any(|e| e.revision() >= rev) {
                        return w;
                    }
                }
            }));
        }
        for wt in waits {
            ws.push(wt.await.unwrap());
        }
        h.record(t.elapsed().as_micros() as u64).unwrap();
    }
    rows.push(Row {
        backend,
        what: format!(
            "watch fan-out: put -> last of {watchers} watchers sees it ({rounds} rounds)"
        ),
        ops_per_sec: None,
        p50_ms: ms(&h, 0.5),
        p99_ms: ms(&h, 0.99),
        max_ms: h.max() as f64 / 1000.0,
    });
}

/// Kill -9 the leader while a client CASes in a loop; time from the kill to the first CAS
/// that succeeds after it.
async fn leader_kill(cluster: &mut EtcdCluster, kills: u64, rows: &mut Vec<Row>) {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for k in 0..kills {
        cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
        let leader = cluster.leader().await.unwrap().expect("a leader");
        // The client prefers the leader's endpoint, so the kill also breaks its connection.
        let mut eps = cluster.endpoints();
        eps.rotate_left(leader);
        let c = Client::new(&eps, options()).unwrap();
        let ok_after = Arc::new(parking_lot::Mutex::new(None::<Instant>));
        let killed_at = Arc::new(parking_lot::Mutex::new(None::<Instant>));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (ok_after, killed_at, stop) = (ok_after.clone(), killed_at.clone(), stop.clone());
            tokio::spawn(async move {
                let key = format!("bench/kill/{k}");
                while !stop.load(Ordering::Relaxed) {
                    let (kv, _) = match c.get(&key).await {
                        Ok(x) => x,
                        Err(_) => continue,
                    };
                    let expect = kv
                        .as_ref()
                        .map_or(Expect::Absent, |kv| Expect::ModRevision(kv.mod_revision));
                    if let Ok(Cas::Swapped(_)) = c.cas(&key, expect, "x", None).await {
                        let now = Instant::now();
                        if killed_at.lock().is_some_and(|t| now > t) && ok_after.lock().is_none() {
                            *ok_after.lock() = Some(now);
                        }
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        *killed_at.lock() = Some(Instant::now());
        cluster.kill(leader).await;
        let t0 = killed_at.lock().unwrap();
        let deadline = t0 + Duration::from_secs(60);
        while ok_after.lock().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let _ = task.await;
        let took = ok_after
            .lock()
            .map(|t| t - t0)
            .expect("no CAS succeeded within 60 s of the kill");
        eprintln!("   kill {k}: first CAS after {took:?}");
        h.record(took.as_micros() as u64).unwrap();
        cluster.restart(leader).unwrap();
    }
    rows.push(Row {
        backend: "etcd x3",
        what: format!("leader kill -9 -> first successful CAS ({kills} kills)"),
        ops_per_sec: None,
        p50_ms: ms(&h, 0.5),
        p99_ms: ms(&h, 0.99),
        max_ms: h.max() as f64 / 1000.0,
    });
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let bin = match std::env::var("HASTACK_BIN") {
        Ok(b) => b,
        Err(_) => {
            eprintln!("coord bench: set HASTACK_BIN to the hastack binary (bench/coord.sh does)");
            return;
        }
    };
    let secs = env_u64("BENCH_SECS", 5);
    let kills = env_u64("BENCH_KILLS", 3);
    let watchers = env_u64("BENCH_WATCHERS", 1000) as usize;
    let dir = std::env::var("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::temp_dir().join(format!("hastack-coord-bench-{}", std::process::id()))
        });
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    rt.block_on(async {
        // The embedded store as its own process, like the etcd members.
        let config = dir.join("coord.toml");
        std::fs::write(
            &config,
            format!("[coord]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nmax_streams_per_connection = 2000\n", dir.join("coord-data").display()),
        )
        .unwrap();
        let mut child = Command::new(&bin)
            .args(["coord", "--config", config.to_str().unwrap()])
            .env("HASTACK_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let ep = line.split_whitespace().nth(4).expect("readiness line").to_string();
        measure("embedded", vec![ep], secs, watchers, &mut rows).await;
        let _ = child.kill();
        let _ = child.wait();

        let mut cluster = EtcdCluster::start(&dir, 3, Duration::from_secs(60)).await.unwrap();
        measure("etcd x3", cluster.endpoints(), secs, watchers, &mut rows).await;
        leader_kill(&mut cluster, kills, &mut rows).await;
    });
    println!("| backend | measurement | ops/s | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} |",
            r.backend,
            r.what,
            r.ops_per_sec.map_or("-".into(), |v| format!("{v:.0}")),
            r.p50_ms,
            r.p99_ms,
            r.max_ms
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
