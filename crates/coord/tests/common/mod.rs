//! Fixtures for the coord tests: scratch directories, an embedded server in this process, a
//! 3-member etcd cluster, and awaiting conditions.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hastack_coord::etcd::EtcdCluster;
use hastack_coord::server::{self, Running, ServerConfig, Storage};
use hastack_coord::{Client, ClientOptions};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A scratch directory removed on every exit path.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!(
            "hastack-coord-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Client options for tests: the defaults, with a generous call deadline (elections under
/// CPU load can take seconds).
pub fn options() -> ClientOptions {
    ClientOptions {
        call_timeout: Duration::from_secs(15),
        ..ClientOptions::default()
    }
}

/// Start the embedded server on 127.0.0.1 (port `port`, 0 for any) with data in `dir`.
pub async fn embedded(dir: PathBuf, port: u16) -> Running {
    let cfg = ServerConfig {
        listen: ([127, 0, 0, 1], port).into(),
        ..ServerConfig::default()
    };
    server::start(
        &cfg,
        Storage::Dir(dir),
        Arc::new(Mutex::new(Registry::default())),
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

/// Start a 3-member etcd cluster under `dir`.
pub async fn etcd(dir: &std::path::Path) -> EtcdCluster {
    assert!(
        hastack_coord::etcd::available(),
        "etcd is not installed: apt-get install etcd-server (scripts/test.sh does)"
    );
    EtcdCluster::start(dir, 3, Duration::from_secs(60))
        .await
        .unwrap()
}

pub fn client(endpoints: &[String]) -> Client {
    Client::new(endpoints, options()).unwrap()
}

/// Poll `f` every 20 ms until it returns `Some`, or panic naming `what` after `timeout`.
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
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
