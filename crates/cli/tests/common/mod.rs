//! Test fixtures that run the real `hastack` binary: app backends, a proxy, and a steady
//! keep-alive load driver. Every process is killed when its fixture is dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

/// A scratch directory removed on every exit path.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh directory under the system's temp dir, named after the test.
    pub fn new(name: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "hastack-test-{}-{name}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    /// The directory.
    pub fn root(&self) -> &PathBuf {
        &self.0
    }

    /// `rel` inside the directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn hastack() -> &'static str {
    env!("CARGO_BIN_EXE_hastack")
}

/// Write `req` on a fresh connection and read until the peer closes or 3 s pass.
pub async fn raw_exchange(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(req).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut buf)).await;
    buf
}

/// [`raw_exchange`] with text in and out.
pub async fn raw_request(addr: SocketAddr, req: &str) -> String {
    String::from_utf8_lossy(&raw_exchange(addr, req.as_bytes()).await).into_owned()
}

/// Run `hastack check` on `text` saved as `name`: (exit code, stdout, stderr).
pub fn check_text(name: &str, text: &str) -> (Option<i32>, String, String) {
    let scratch = Scratch::new("check");
    let path = scratch.path(name);
    std::fs::write(&path, text).unwrap();
    check_file(path.to_str().unwrap())
}

/// Run `hastack check FILE`: (exit code, stdout, stderr).
pub fn check_file(path: &str) -> (Option<i32>, String, String) {
    let out = Command::new(hastack())
        .args(["check", path])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Poll `f` every 10 ms until it returns `Some`, or panic with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The lines a child process prints on stdout, read by a thread (to the end, so the child
/// never blocks on a full pipe) and handed over as they come.
pub struct Announcements {
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    what: String,
}

impl Announcements {
    /// Read `child`'s stdout (it must have been spawned with `Stdio::piped()`).
    pub fn of(child: &mut Child, what: &str) -> Announcements {
        use std::io::BufRead;
        let out = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining.
                    continue;
                }
            }
        });
        Announcements {
            lines,
            what: what.to_string(),
        }
    }

    /// The next line, or a panic naming the process after `timeout` (or if it exited).
    pub async fn next(&mut self, timeout: Duration) -> String {
        match tokio::time::timeout(timeout, self.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("{} exited before announcing its address", self.what),
            Err(_) => panic!("{} announced nothing within {timeout:?}", self.what),
        }
    }
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Option<Child>,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait for the process to exit by itself, up to `timeout`; returns its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("{} did not exit within {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // A frozen process must be thawed to die cleanly under some kernels.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `hastack app` backend, on a port the kernel picked.
pub struct Backend {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub name: String,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Backend::start_on(name, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Start on `listen` and wait for the app to announce its bound address.
    pub async fn start_on(name: &str, listen: SocketAddr) -> Backend {
        let mut child = Command::new(hastack())
            .args(["app", "--listen", &listen.to_string(), "--name", name])
            .env("HASTACK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let what = format!("backend {name}");
        let mut out = Announcements::of(&mut child, &what);
        let proc = Proc {
            child: Some(child),
            name: what,
        };
        let line = out.next(Duration::from_secs(10)).await;
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from backend {name}: {line:?}"));
        Backend {
            proc,
            addr,
            name: name.to_string(),
        }
    }

    /// Start again at the same address after a kill (a member that restarts). Rebinding a
    /// port just released is the one place a number is reused; a clash fails loudly.
    pub async fn restart(&mut self) {
        self.proc.kill9();
        let again = Backend::start_on(&self.name, self.addr).await;
        *self = again;
    }
}

/// A `hastack proxy` process with its config file. Configs should listen on port 0
/// (`listen = "127.0.0.1:0"`, listeners named when there are several) and have an admin
/// listener: the proxy prints each bound address on stdout, the admin line last.
pub struct ProxyProc {
    pub proc: Proc,
    pub admin: SocketAddr,
    /// Bound listeners by name.
    pub listeners: Vec<(String, SocketAddr)>,
    pub config: PathBuf,
    /// Holds `config`; removed when the proxy is dropped.
    _scratch: Scratch,
}

impl ProxyProc {
    /// Start with `config` and wait until every socket is bound.
    pub async fn start(config: &str) -> ProxyProc {
        let scratch = Scratch::new("proxy");
        let path = scratch.path("proxy.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(hastack())
            .args(["proxy", "--config", path.to_str().unwrap()])
            .env(
                "HASTACK_LOG",
                std::env::var("TEST_PROXY_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = Announcements::of(&mut child, "proxy");
        let proc = Proc {
            child: Some(child),
            name: "proxy".into(),
        };
        let mut listeners = Vec::new();
        let admin = loop {
            let line = out.next(Duration::from_secs(10)).await;
            if let Some(a) = line.strip_prefix("admin listening on ") {
                break a.parse().unwrap();
            }
            let parsed = line
                .strip_prefix("listener ")
                .and_then(|l| l.rsplit_once(" listening on "))
                .and_then(|(name, a)| Some((name.to_string(), a.parse().ok()?)));
            match parsed {
                Some(l) => listeners.push(l),
                None => panic!("unexpected line from the proxy: {line:?}"),
            }
        };
        ProxyProc {
            proc,
            admin,
            listeners,
            config: path,
            _scratch: scratch,
        }
    }

    /// The address of listener `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no listener {name:?} in {:?}", self.listeners))
            .1
    }

    /// The address of the only listener.
    pub fn listen(&self) -> SocketAddr {
        assert_eq!(self.listeners.len(), 1, "{:?}", self.listeners);
        self.listeners[0].1
    }

    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = http_get(self.admin, "/status").await.unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await.unwrap().1
    }

    /// The state of member `member` of pool `pool` per `/status`.
    pub async fn member(&self, pool: &str, member: &str) -> serde_json::Value {
        let s = self.status().await;
        s["pools"]
            .get(pool)
            .unwrap_or_else(|| panic!("no pool {pool} in {s}"))["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == member)
            .unwrap_or_else(|| panic!("no member {member} in {s}"))
            .clone()
    }

    pub async fn member_state(&self, pool: &str, member: &str) -> String {
        self.member(pool, member).await["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn post(&self, path: &str) -> (u16, String) {
        http_request(self.admin, "POST", path).await.unwrap()
    }
}

/// The value of the metric line starting with `prefix` (labels included), or 0.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    http_request(addr, "GET", path).await
}

/// One request on a fresh connection.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), tx.send_request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// Totals of a load run.
#[derive(Debug, Default, Clone)]
pub struct LoadStats {
    pub ok: u64,
    pub failed: u64,
    pub failures: Vec<String>,
    /// Responses per backend name (from `x-served-by`).
    pub by_backend: std::collections::BTreeMap<String, u64>,
}

/// Steady closed-loop GET load from `conns` keep-alive connections until stopped. A
/// connection that errors is replaced (the error counts as a failed request).
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<LoadStats>>,
    pub ok: Arc<AtomicU64>,
}

impl Load {
    pub fn start(addr: SocketAddr, path: &str, conns: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let tasks = (0..conns)
            .map(|_| {
                let stop = stop.clone();
                let ok = ok.clone();
                let path = path.to_string();
                tokio::spawn(async move { load_loop(addr, &path, stop, ok).await })
            })
            .collect();
        Load { stop, tasks, ok }
    }

    /// Wait until at least `n` more requests succeeded (proves traffic flows).
    pub async fn wait_progress(&self, n: u64) {
        let start = self.ok.load(Ordering::Relaxed);
        let ok = self.ok.clone();
        eventually(Duration::from_secs(20), "load to make progress", || {
            let ok = ok.clone();
            async move { (ok.load(Ordering::Relaxed) >= start + n).then_some(()) }
        })
        .await;
    }

    pub async fn stop(self) -> LoadStats {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadStats::default();
        for t in self.tasks {
            let s = t.await.unwrap();
            total.ok += s.ok;
            total.failed += s.failed;
            total.failures.extend(s.failures);
            for (k, v) in s.by_backend {
                *total.by_backend.entry(k).or_default() += v;
            }
        }
        total
    }
}

async fn load_loop(
    addr: SocketAddr,
    path: &str,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
) -> LoadStats {
    let mut stats = LoadStats::default();
    let mut tx: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
    let fail = |stats: &mut LoadStats, why: String| {
        stats.failed += 1;
        if stats.failures.len() < 20 {
            stats.failures.push(why);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        if tx.as_ref().is_none_or(|t| t.is_closed()) {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => match hyper::client::conn::http1::handshake(TokioIo::new(s)).await {
                    Ok((t, conn)) => {
                        tokio::spawn(conn);
                        tx = Some(t);
                    }
                    Err(e) => {
                        fail(&mut stats, format!("handshake: {e}"));
                        continue;
                    }
                },
                Err(e) => {
                    fail(&mut stats, format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            }
        }
        let t = tx.as_mut().unwrap();
        if t.ready().await.is_err() {
            tx = None;
            continue;
        }
        let req = Request::builder()
            .uri(path)
            .header("host", "test")
            .body(Empty::<Bytes>::new())
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(15), t.send_request(req)).await {
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                let served = resp
                    .headers()
                    .get("x-served-by")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string();
                let body = resp.into_body().collect().await;
                match (status, body) {
                    (200, Ok(_)) => {
                        stats.ok += 1;
                        ok.fetch_add(1, Ordering::Relaxed);
                        *stats.by_backend.entry(served).or_default() += 1;
                    }
                    (s, Ok(b)) => fail(
                        &mut stats,
                        format!("status {s}: {}", String::from_utf8_lossy(&b.to_bytes())),
                    ),
                    (s, Err(e)) => fail(&mut stats, format!("status {s}, body error: {e}")),
                }
            }
            Ok(Err(e)) => {
                fail(&mut stats, format!("request: {e}"));
                tx = None;
            }
            Err(_) => {
                fail(&mut stats, "request timed out".into());
                tx = None;
            }
        }
    }
    stats
}

/// A response as a test sees it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Answer {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// One request on a fresh connection with the given `Host` and extra headers.
pub async fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::<Bytes>::new()).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), tx.send_request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// What an open-loop run sent and got back.
#[derive(Debug)]
pub struct OpenLoop {
    /// Every answer (or the error), in send order.
    pub answers: Vec<Result<Answer, String>>,
    /// When the first and the last request were sent.
    pub first_sent: Instant,
    pub last_sent: Instant,
}

impl OpenLoop {
    /// Answers with `status`.
    pub fn count(&self, status: u16) -> usize {
        self.answers
            .iter()
            .filter(|a| a.as_ref().is_ok_and(|a| a.status == status))
            .count()
    }
}

/// Send GET `path` with `Host: host` at `rate` requests per second for `duration`, each on
/// its own connection, on schedule whether or not earlier ones were answered (open loop: a
/// slow answer never delays the next request, so overload is real and no coordinated
/// omission hides it). A late tick sends at once.
pub async fn open_loop(
    addr: SocketAddr,
    host: &str,
    path: &str,
    rate: f64,
    duration: Duration,
) -> OpenLoop {
    let n = (duration.as_secs_f64() * rate).round() as u64;
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    let mut last_sent = start;
    for i in 0..n {
        tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
        last_sent = Instant::now();
        let (host, path) = (host.to_string(), path.to_string());
        tasks.push(tokio::spawn(async move {
            http_full(addr, "GET", &path, &host, &[]).await
        }));
    }
    let mut answers = Vec::with_capacity(tasks.len());
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    OpenLoop {
        answers,
        first_sent: start,
        last_sent,
    }
}
