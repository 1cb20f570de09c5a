//! Overload benchmark: a real TCP backend with a fixed capacity, driven at 2x that capacity
//! by an open-loop load generator, with the adaptive concurrency limit off and on.
//!
//! * Backend (in-process tokio server on 127.0.0.1): `WORKERS` workers, each request holds
//!   one for `SERVICE` (a sleep: the capacity is `WORKERS / SERVICE` whatever else the
//!   machine is doing). Requests beyond that queue inside the backend without bound, and a
//!   request whose client gave up is still served: wasted work, as in real servers.
//! * Protocol: newline-terminated request ids over a few persistent connections, answered
//!   out of order (so the client does not need thousands of sockets).
//! * Load: open loop (requests start on schedule whatever happened to earlier ones, so
//!   there is no coordinated omission); latency is measured from the scheduled start.
//!   Client deadline `DEADLINE`: later answers count as failures.
//! * Goodput: answers within the deadline per second. p99: over successful answers.
//!
//! Run: `cargo bench -p hastack-guard --bench overload` (about 90 s), or `bench/overload.sh`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hastack_guard::adaptive::Algorithm;
use hastack_guard::{
    AdaptivePolicy, ConcurrencyLimiter, ConcurrencyPolicy, Outcome, RouteGuard, SwitchBoard,
};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

const WORKERS: usize = 8;
const SERVICE: Duration = Duration::from_millis(10);
const DEADLINE: Duration = Duration::from_secs(1);
const CONNECTIONS: usize = 4;

fn capacity() -> f64 {
    WORKERS as f64 / SERVICE.as_secs_f64()
}

async fn backend() -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let workers = Arc::new(Semaphore::new(WORKERS));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let workers = workers.clone();
            tokio::spawn(async move {
                let _ = sock.set_nodelay(true);
                let (r, mut w) = sock.into_split();
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                tokio::spawn(async move {
                    while let Some(line) = rx.recv().await {
                        if w.write_all(line.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(id)) = lines.next_line().await {
                    let (workers, tx) = (workers.clone(), tx.clone());
                    tokio::spawn(async move {
                        let Ok(_worker) = workers.acquire().await else {
                            return;
                        };
                        tokio::time::sleep(SERVICE).await;
                        let _ = tx.send(format!("{id}\n"));
                    });
                }
            });
        }
    });
    Ok(addr)
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>;

/// One multiplexed connection: send ids, get answers routed back by id.
#[derive(Clone)]
struct Conn {
    tx: mpsc::UnboundedSender<u64>,
    pending: Pending,
}

async fn connect(addr: std::net::SocketAddr) -> std::io::Result<Conn> {
    let sock = TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    let (r, mut w) = sock.into_split();
    let pending: Pending = Arc::default();
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    tokio::spawn(async move {
        while let Some(id) = rx.recv().await {
            if w.write_all(format!("{id}\n").as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let p = pending.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(id) = line.parse::<u64>()
                && let Some(done) = p.lock().remove(&id)
            {
                let _ = done.send(());
            }
        }
    });
    Ok(Conn { tx, pending })
}

#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    late: AtomicU64,
    rejected: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

struct Report {
    name: String,
    offered: f64,
    goodput: f64,
    rejected: u64,
    late: u64,
    p50_ms: f64,
    p99_ms: f64,
    limit: Option<usize>,
}

async fn run(
    name: &str,
    conns: &[Conn],
    rate: f64,
    secs: f64,
    guard: Option<&Arc<RouteGuard>>,
) -> Report {
    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let n = (rate * secs) as u64;
    let id_base = fastrand::u64(..1 << 40);
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(scheduled).await;
        let conn = conns[i as usize % conns.len()].clone();
        let stats = stats.clone();
        let guard = guard.cloned();
        tasks.push(tokio::spawn(async move {
            let permit = match &guard {
                Some(g) => match g.admit(0, Instant::now()).await {
                    Ok(p) => Some(p),
                    Err(_) => {
                        stats.rejected.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                },
                None => None,
            };
            let id = id_base + i;
            let (done_tx, done_rx) = oneshot::channel();
            conn.pending.lock().insert(id, done_tx);
            let _ = conn.tx.send(id);
            let left = DEADLINE.saturating_sub(scheduled.elapsed());
            let answered = tokio::time::timeout(left, done_rx)
                .await
                .is_ok_and(|r| r.is_ok());
            let now = Instant::now();
            if answered {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                stats
                    .latencies_us
                    .lock()
                    .push(now.duration_since(scheduled).as_micros() as u64);
            } else {
                conn.pending.lock().remove(&id);
                stats.late.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(p) = permit {
                p.complete(
                    now,
                    if answered {
                        Outcome::Success
                    } else {
                        Outcome::Dropped
                    },
                );
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut lat = std::mem::take(&mut *stats.latencies_us.lock());
    lat.sort_unstable();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .map_or(f64::NAN, |us| *us as f64 / 1000.0)
    };
    Report {
        name: name.to_string(),
        offered: rate,
        goodput: stats.ok.load(Ordering::Relaxed) as f64 / secs,
        rejected: stats.rejected.load(Ordering::Relaxed),
        late: stats.late.load(Ordering::Relaxed),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        limit: guard.and_then(|g| g.concurrency()).map(|c| c.limit()),
    }
}

fn guard(adaptive: Option<Algorithm>) -> Arc<RouteGuard> {
    let limiter = ConcurrencyLimiter::new(ConcurrencyPolicy {
        adaptive: adaptive.map(|algorithm| AdaptivePolicy {
            algorithm,
            initial_limit: 20,
            min_limit: 2,
            window: Duration::from_millis(100),
            ..AdaptivePolicy::default()
        }),
        // Without adaptive: a hand-tuned bulkhead of twice the backend's workers, which keeps
        // every worker busy (a small queue covers the client round trip): its goodput is
        // the backend's real capacity.
        ..ConcurrencyPolicy::fixed(
            if adaptive.is_some() {
                1000
            } else {
                2 * WORKERS
            },
            0,
            Duration::from_millis(1),
        )
    });
    let board = SwitchBoard::new();
    Arc::new(
        RouteGuard::new("overload", board.switch("overload"))
            .with_concurrency(limiter, hastack_guard::ClassId(0)),
    )
}

#[allow(clippy::print_stdout, reason = "a benchmark's output is its report")]
fn main() -> std::io::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 3.0 } else { 10.0 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let addr = backend().await?;
        let mut conns = Vec::new();
        for _ in 0..CONNECTIONS {
            conns.push(connect(addr).await?);
        }
        let cap = capacity();
        let mut reports = Vec::new();
        reports.push(run("unloaded (0.2x, no guard)", &conns, cap * 0.2, secs, None).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
        reports.push(run("2x, adaptive off", &conns, cap * 2.0, secs, None).await);
        // Let the backend drain the work the previous run left queued.
        tokio::time::sleep(Duration::from_secs(12)).await;
        for (name, alg) in [
            ("2x, fixed limit = 2 x workers (hand-tuned)", None),
            ("2x, adaptive on (gradient2, defaults)", Some(AdaptivePolicy::default().algorithm)),
            (
                "2x, adaptive on (gradient2, tolerance 1.3)",
                Some(Algorithm::Gradient2 { tolerance: 1.3, long_window: 600 }),
            ),
            (
                "2x, adaptive on (gradient2, tolerance 1.2)",
                Some(Algorithm::Gradient2 { tolerance: 1.2, long_window: 600 }),
            ),
            ("2x, adaptive on (vegas)", Some(Algorithm::Vegas)),
        ] {
            let guard = guard(alg);
            // Warm the limiter at half capacity so it learns the unloaded RTT.
            if alg.is_some() {
                let _ = run("warm-up", &conns, cap * 0.5, 3.0, Some(&guard)).await;
            }
            reports.push(run(name, &conns, cap * 2.0, secs, Some(&guard)).await);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let unloaded_p99 = reports[0].p99_ms;
        // The real capacity: what the saturating hand-tuned bulkhead gets through (timer
        // granularity makes each 10 ms "service" last a little longer than 10 ms).
        let measured = reports[2].goodput;
        println!("backend nominal capacity {cap:.0} req/s ({WORKERS} workers x {SERVICE:?}), measured {measured:.0} req/s; deadline {DEADLINE:?}; {secs} s per run");
        println!("| run | offered/s | goodput/s | goodput / measured capacity | refused fast | late/failed | p50 ms | p99 ms | p99 / unloaded p99 | final limit |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for r in &reports {
            println!(
                "| {} | {:.0} | {:.0} | {:.0}% | {} | {} | {:.1} | {:.1} | {:.2} | {} |",
                r.name,
                r.offered,
                r.goodput,
                100.0 * r.goodput / measured,
                r.rejected,
                r.late,
                r.p50_ms,
                r.p99_ms,
                r.p99_ms / unloaded_p99,
                r.limit.map_or_else(|| "-".to_string(), |l| l.to_string())
            );
        }
        Ok(())
    })
}
