//! Fixtures for the cache tests: real `redis-server`s on loopback, the real
//! `hastack cache proxy`, and a small async RESP client. Every process dies with its fixture.
//!
//! Ports: `redis-server` cannot bind port 0, so [`Redis::start`] tries ports from a
//! per-process range and keeps the first one where *its own* server answers (checked by
//! `process_id` in `INFO`): a port taken by anyone else makes that server exit with
//! "Address already in use" and the next port is tried, so there is no window in which a
//! port is found free, released and reused. The proxy binds port 0 itself and reports the
//! port in its "cache proxy ready" log line.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hastack_cache::resp::{Limits, Value};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[allow(unused_imports, reason = "each test file uses a different part")]
pub use super::common::{Scratch, eventually};

/// Fail loudly when a package the tests need is missing (scripts/test.sh installs them).
pub fn require(tool: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{tool} is not installed: run scripts/test.sh (it installs redis-server, redis-tools, nutcracker, python3-redis)"
    );
}

/// Next candidate port: a range of 400 per process, spread by pid over 20000-43999, so
/// that a cluster-mode server's bus port (port + 10000) stays below 54000.
fn next_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 60) as u16 * 400;
    base + NEXT.fetch_add(1, Ordering::Relaxed) % 400
}

/// A `redis-server` child.
pub struct Redis {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
}

impl Redis {
    /// Start a server (no persistence) with `extra` arguments, on a port of ours.
    pub async fn start(dir: &Path, extra: &[&str]) -> Redis {
        require("redis-server");
        for _ in 0..40 {
            let port = next_port();
            let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            if let Some(r) = Redis::try_on(dir, port, args).await {
                return r;
            }
        }
        panic!("could not start redis-server on any of 40 ports");
    }

    async fn try_on(dir: &Path, port: u16, args: Vec<String>) -> Option<Redis> {
        let dir = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            child: None,
            port,
            dir,
            args,
        };
        r.spawn();
        r.wait_ours().await.then_some(r)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir.to_str().unwrap(),
                "--logfile",
                "redis.log",
            ])
            .args(self.args.iter().flat_map(|a| a.split(' ')))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
    }

    /// Until our child answers on its port (true), or exits (false: the port was taken).
    async fn wait_ours(&mut self) -> bool {
        let pid = self.child.as_ref().unwrap().id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let _ = status;
                self.child = None;
                return false;
            }
            if let Ok(mut c) = Client::connect(self.addr()).await {
                if let Ok(Value::Bulk(info)) = c.cmd(&["INFO", "server"]).await {
                    let text = String::from_utf8_lossy(&info);
                    if text.contains(&format!("process_id:{pid}\r\n")) {
                        return true;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not come up",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

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

    /// Start again on the same port (after [`Redis::kill9`]).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
        assert!(
            self.wait_ours().await,
            "port {} was taken while redis-server was down",
            self.port
        );
    }

    /// A direct connection (not through the proxy).
    pub async fn client(&self) -> Client {
        Client::connect(self.addr()).await.unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The real `hastack cache proxy`, with its log lines collected.
pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub logs: Arc<Mutex<Vec<String>>>,
    _scratch: Scratch,
}

impl Proxy {
    /// Start with `config` (TOML); `listen` and `admin` should use port 0.
    pub async fn start(config: &str) -> Proxy {
        let scratch = Scratch::new("proxy");
        let path = scratch.path("cache.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hastack"))
            .args([
                "--log-format",
                "json",
                "--log",
                "info,hastack_cache=debug",
                "cache",
                "proxy",
                "--config",
            ])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hastack");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("cache proxy ready") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().push(line);
            }
        });
        let ready = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
            .await
            .unwrap();
        let line = match ready {
            Ok(l) => l,
            Err(_) => panic!(
                "the proxy did not get ready; log:\n{}",
                logs.lock().join("\n")
            ),
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let fields = &v["fields"];
        let addr = fields["listen"].as_str().unwrap().parse().unwrap();
        let admin = fields["admin"].as_str().and_then(|a| a.parse().ok());
        Proxy {
            child,
            addr,
            admin,
            logs,
            _scratch: scratch,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await.unwrap()
    }

    /// `GET path` on the admin listener: the body.
    pub async fn admin_get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(self.admin.expect("admin listener"))
            .await
            .unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }

    /// The value of one metric series (exact name with labels) from `/metrics`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.admin_get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.admin_get("/status").await).unwrap()
    }

    /// The resident set size of the proxy process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small async RESP client.
pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        Ok(Client {
            stream,
            buf: BytesMut::new(),
        })
    }

    /// Send a command, read its answer (5 s bound).
    pub async fn cmd(&mut self, args: &[&str]) -> std::io::Result<Value> {
        self.send(args).await?;
        self.read().await
    }

    /// Send a command without reading.
    pub async fn send(&mut self, args: &[&str]) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        hastack_cache::resp::write::command(&mut out, args.iter().map(|a| a.as_bytes()));
        self.stream.write_all(&out).await
    }

    /// Read one answer (5 s bound).
    pub async fn read(&mut self) -> std::io::Result<Value> {
        let limits = Limits::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let frozen: Bytes = self.buf.clone().freeze();
            if let Some((v, len)) =
                Value::decode(&frozen, &limits).map_err(|e| std::io::Error::other(e.to_string()))?
            {
                let _ = self.buf.split_to(len);
                return Ok(v);
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .map_err(|_| std::io::Error::other("no answer within 5s"))??;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
        }
    }

    /// Whether the peer closed the connection (EOF or reset) within `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut scratch = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut scratch)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Text of a simple/bulk answer, `nil` for null, `ERR ...` for errors, `:n` for integers.
pub fn text(v: &Value) -> String {
    match v {
        Value::Simple(b) | Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Error(e) => String::from_utf8_lossy(e).into_owned(),
        Value::Null => "nil".into(),
        Value::Integer(n) => format!(":{n}"),
        other => format!("{other:?}"),
    }
}

/// The answers of an array as [`text`]s.
pub fn texts(v: &Value) -> Vec<String> {
    v.as_list()
        .unwrap_or_else(|| panic!("not an array: {v:?}"))
        .iter()
        .map(text)
        .collect()
}

/// A proxy config over `shards` (name, master, replicas), listening on port 0 with an
/// admin listener, plus `extra` TOML lines inside [cache.proxy].
pub fn config(shards: &[(&str, SocketAddr, Vec<SocketAddr>)], extra: &str) -> String {
    let mut s = format!(
        "[cache.proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nworkers = 2\n{extra}\n"
    );
    for (name, master, replicas) in shards {
        let reps: Vec<String> = replicas.iter().map(|r| format!("\"{r}\"")).collect();
        s.push_str(&format!(
            "\n[[cache.proxy.shards]]\nname = \"{name}\"\nmaster = \"{master}\"\nreplicas = [{}]\n",
            reps.join(", ")
        ));
    }
    s
}
