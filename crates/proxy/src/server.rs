//! Data-plane workers: one OS thread per worker, each running its own single-threaded tokio
//! runtime and its own `SO_REUSEPORT` socket for every listener, so the kernel spreads
//! connections across workers and a request never hops threads (its upstream connection,
//! idle pool slot and timers all live on the worker that accepted it).
//!
//! Workers take commands from the control plane: start listening on a bound socket, stop a
//! listener (its connections finish gracefully), drain everything before exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};

use crate::Shared;
use crate::config::{HttpListenerSpec, ListenerKind};
use crate::http::ConnInfo;

/// Commands for a worker.
#[derive(Debug)]
pub enum WorkerCmd {
    /// Accept on this socket until `stop` fires; then let its connections finish.
    Listen {
        /// Listener name (looked up in the current runtime per connection).
        name: Arc<str>,
        /// A bound, listening, non-blocking socket.
        socket: std::net::TcpListener,
        /// Stops accepting and asks the listener's connections to close gracefully.
        stop: CancellationToken,
    },
    /// Stop every listener, let connections finish until `deadline`, then exit.
    Drain {
        /// When to give up on remaining connections.
        deadline: Instant,
        /// Answered when the worker is done.
        done: oneshot::Sender<()>,
    },
}

/// Handles to the worker threads.
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<WorkerCmd>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("count", &self.senders.len())
            .finish()
    }
}

impl Workers {
    /// Start `n` worker threads.
    pub fn start(n: usize, shared: Arc<Shared>) -> std::io::Result<Workers> {
        let mut senders = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            let shared = shared.clone();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let t = std::thread::Builder::new()
                .name(format!("hastack-w{i}"))
                .spawn(move || {
                    crate::upstream::set_worker(i);
                    rt.block_on(worker_main(shared, rx));
                })?;
            senders.push(tx);
            threads.push(t);
        }
        Ok(Workers { senders, threads })
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Whether there are no workers.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Bind one `SO_REUSEPORT` socket per worker on `addr` and start accepting on all of
    /// them; returns the bound address. Binding happens before anything starts, so an error
    /// (address in use, permission) leaves nothing half-started. Port 0 lets the kernel pick
    /// a free port for the first socket; the other workers join that port.
    pub fn listen(
        &self,
        name: &Arc<str>,
        addr: SocketAddr,
        stop: &CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let first = bind(addr)?;
        let local = first.local_addr()?;
        let mut sockets = Vec::with_capacity(self.senders.len());
        sockets.push(first);
        for _ in 1..self.senders.len() {
            sockets.push(bind(local)?);
        }
        for (tx, socket) in self.senders.iter().zip(sockets) {
            let _ = tx.send(WorkerCmd::Listen {
                name: name.clone(),
                socket,
                stop: stop.clone(),
            });
        }
        Ok(local)
    }

    /// Drain every worker (up to `deadline`) and join the threads.
    pub async fn drain(self, deadline: Instant) {
        let mut waits = Vec::new();
        for tx in &self.senders {
            let (done, wait) = oneshot::channel();
            if tx.send(WorkerCmd::Drain { deadline, done }).is_ok() {
                waits.push(wait);
            }
        }
        for w in waits {
            let _ = w.await;
        }
        let threads = self.threads;
        // Joining blocks; the threads are already finishing.
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// A listening socket with `SO_REUSEPORT` (one per worker on the same address).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_tcp_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))?;
    s.listen(4096)?;
    Ok(s.into())
}

async fn worker_main(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<WorkerCmd>) {
    let tracker = TaskTracker::new();
    // Every listener's stop token; cancelling them on drain also tells each connection to
    // finish gracefully (connections watch their listener's token).
    let mut listeners: Vec<CancellationToken> = Vec::new();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            WorkerCmd::Listen { name, socket, stop } => match TcpListener::from_std(socket) {
                Ok(l) => {
                    listeners.retain(|t| !t.is_cancelled());
                    listeners.push(stop.clone());
                    tracker.spawn(accept_loop(shared.clone(), name, l, stop, tracker.clone()));
                }
                Err(e) => error!(listener = %name, error = %e, "cannot use the listening socket"),
            },
            WorkerCmd::Drain { deadline, done } => {
                for l in &listeners {
                    l.cancel();
                }
                tracker.close();
                if tokio::time::timeout_at(deadline, tracker.wait())
                    .await
                    .is_err()
                {
                    warn!(
                        remaining = tracker.len(),
                        "drain deadline reached; closing remaining connections"
                    );
                }
                let _ = done.send(());
                return;
            }
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    name: Arc<str>,
    listener: TcpListener,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let freed = Arc::new(Notify::new());
    let mut backoff = Duration::from_millis(5);
    loop {
        // Back-pressure: at the connection limit, stop accepting (the kernel queues) until
        // a connection ends.
        let max = shared
            .runtime
            .load()
            .listeners
            .get(&name)
            .map_or(usize::MAX, |l| l.spec.max_connections);
        if active.load(Ordering::Relaxed) >= max {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = freed.notified() => continue,
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
            }
        }
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff = Duration::from_millis(5);
                    x
                }
                Err(e) => {
                    // EMFILE and friends: wait instead of spinning, growing up to 1 s.
                    warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let rt = shared.runtime.load_full();
        let Some(l) = rt.listeners.get(&name).cloned() else {
            return;
        };
        drop(rt);
        l.metrics.connections.inc();
        l.metrics.active.inc();
        active.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(ConnInfo::new(
            name.clone(),
            peer,
            matches!(&l.spec.kind, ListenerKind::Http(h) if h.tls.is_some()),
        ));
        let shared = shared.clone();
        let stop_conn = stop.clone();
        let active = active.clone();
        let freed = freed.clone();
        tracker.spawn(async move {
            match &l.spec.kind {
                // A TCP session cannot be closed gracefully: it runs until either side
                // closes it or the drain deadline passes (the worker then exits and drops it).
                ListenerKind::Tcp { .. } => crate::tcp::serve(shared, info, stream).await,
                ListenerKind::Http(h) => {
                    serve_http(shared, info, stream, h, stop_conn).await;
                }
            }
            l.metrics.active.dec();
            active.fetch_sub(1, Ordering::Relaxed);
            freed.notify_one();
        });
    }
}

async fn serve_http(
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    stream: TcpStream,
    spec: &HttpListenerSpec,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(spec.header_read_timeout)
        .max_buf_size(spec.max_header_size.max(8192))
        .max_headers(spec.max_headers)
        .keep_alive(true)
        // One contiguous write per response: for the small heads and bodies a proxy mostly
        // relays, a copy is cheaper in the kernel than a vectored write.
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(spec.max_header_size).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let svc = {
        let shared = shared.clone();
        let info = info.clone();
        hyper::service::service_fn(move |req| {
            crate::http::handle(shared.clone(), info.clone(), req)
        })
    };
    match &spec.tls {
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            drive(conn, &stop, &info).await;
        }
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
            let handshake = tokio::time::timeout(spec.header_read_timeout, acceptor.accept(stream));
            let tls_stream = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        debug!(client = %info.peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(client = %info.peer, "TLS handshake timed out");
                        return;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), svc);
            drive(conn, &stop, &info).await;
        }
    }
}

/// Run a connection; when its listener stops (a reload removed it, or the worker drains:
/// draining stops every listener first), ask it to finish gracefully (HTTP/1: close after
/// the current response; HTTP/2: GOAWAY) and keep driving it until it does.
async fn drive<C, E>(conn: C, stop: &CancellationToken, info: &ConnInfo)
where
    C: std::future::Future<Output = Result<(), E>> + GracefulConn,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let result = tokio::select! {
        biased;
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        debug!(client = %info.peer, error = %e, "client connection ended with an error");
    }
}

/// hyper-util's connection types all have an inherent `graceful_shutdown`; this names it.
pub trait GracefulConn {
    /// Start a graceful shutdown.
    fn graceful(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E> GracefulConn for auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: http_body::Body + Send + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
