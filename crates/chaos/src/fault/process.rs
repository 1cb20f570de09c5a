//! Processes the harness starts, watches for readiness, and hurts on schedule.
//!
//! Each process's stdout and stderr go to `<run dir>/logs/<name>.log` (appended across
//! restarts), so a failed run can be explained. Children are killed when their
//! [`ManagedProcess`] is dropped (`kill_on_drop`), on every exit path of the harness short
//! of the harness itself being SIGKILLed.
//!
//! In namespace mode a process has a [`Placement`]: it is started as `ip netns exec <netns>
//! <program> ...` (which execs the program after entering the namespace, so the pid the
//! harness signals is the program's own), and its readiness is checked from inside the same
//! namespace.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::ChaosError;
use crate::netns::Placement;

/// How to tell that a process is ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// A TCP connect to this address succeeds.
    Tcp(SocketAddr),
    /// A GET of this `http://` URL answers 2xx.
    Http(String),
    /// Ready as soon as it is started.
    Started,
}

/// A process to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Name in the scenario (fault target).
    pub name: String,
    /// Program to run.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Readiness check.
    pub ready: Readiness,
    /// How long to wait for readiness.
    pub ready_timeout: Duration,
    /// After SIGTERM, how long before SIGKILL (stop and restart).
    pub stop_grace: Duration,
    /// The namespace host it runs in (namespace mode), `None` = the harness's own.
    pub host: Option<String>,
}

impl ProcessSpec {
    /// The command line, for messages.
    pub fn command_line(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

/// One started process.
#[derive(Debug)]
pub struct ManagedProcess {
    spec: ProcessSpec,
    log: PathBuf,
    child: Option<Child>,
    /// Whether it is stopped by SIGSTOP now.
    paused: bool,
    /// Its namespace, in namespace mode.
    placement: Option<Placement>,
}

impl ManagedProcess {
    /// A process not yet started; its log goes to `log_dir/<name>.log`.
    pub fn new(spec: ProcessSpec, log_dir: &Path) -> Self {
        let log = log_dir.join(format!("{}.log", spec.name));
        ManagedProcess {
            spec,
            log,
            child: None,
            paused: false,
            placement: None,
        }
    }

    /// Run it inside a namespace (see the module docs).
    #[must_use]
    pub fn with_placement(mut self, placement: Option<Placement>) -> Self {
        self.placement = placement;
        self
    }

    /// Its spec.
    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// Its pid while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Start it and wait until it is ready.
    pub async fn start(&mut self) -> Result<(), ChaosError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| ChaosError::io(format!("opening {}", self.log.display()), e))?;
        let err = file
            .try_clone()
            .map_err(|e| ChaosError::io("duplicating the log file handle", e))?;
        let mut cmd = match &self.placement {
            Some(p) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", p.netns.as_str()])
                    .arg(&self.spec.program);
                c
            }
            None => Command::new(&self.spec.program),
        };
        cmd.args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| ChaosError::Spawn {
            name: self.spec.name.clone(),
            command: self.command_line(),
            source,
        })?;
        debug!(process = %self.spec.name, pid = child.id(), "process started");
        self.child = Some(child);
        self.paused = false;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), ChaosError> {
        let deadline = Instant::now() + self.spec.ready_timeout;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(
                    self.not_ready(format!("it exited with {status} before becoming ready"))
                );
            }
            let ready = match &self.placement {
                Some(p) => p
                    .run(is_ready(self.spec.ready.clone()))
                    .await
                    .unwrap_or(false),
                None => is_ready(self.spec.ready.clone()).await,
            };
            if ready {
                debug!(process = %self.spec.name, "process ready");
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.not_ready(format!(
                    "no readiness ({}{}) within {}",
                    describe_ready(&self.spec.ready),
                    self.placement.as_ref().map_or(String::new(), |p| format!(
                        ", checked from host `{}`",
                        p.host
                    )),
                    humantime::format_duration(self.spec.ready_timeout)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The command line as started (with the `ip netns exec` prefix in namespace mode).
    pub fn command_line(&self) -> String {
        match &self.placement {
            Some(p) => format!("ip netns exec {} {}", p.netns, self.spec.command_line()),
            None => self.spec.command_line(),
        }
    }

    fn not_ready(&self, reason: String) -> ChaosError {
        ChaosError::NotReady {
            name: self.spec.name.clone(),
            reason,
            log: log_tail(&self.log, 15),
        }
    }

    /// Send `signal`.
    pub fn signal(&mut self, signal: Signal) -> Result<(), ChaosError> {
        let pid = self.pid().ok_or_else(|| ChaosError::Signal {
            name: self.spec.name.clone(),
            pid: 0,
            signal: signal.as_str().to_string(),
            reason: "it is not running".to_string(),
        })?;
        let pid = i32::try_from(pid).unwrap_or(i32::MAX);
        kill(Pid::from_raw(pid), signal).map_err(|e| ChaosError::Signal {
            name: self.spec.name.clone(),
            pid,
            signal: signal.as_str().to_string(),
            reason: e.desc().to_string(),
        })?;
        debug!(process = %self.spec.name, pid, signal = signal.as_str(), "signal sent");
        match signal {
            Signal::SIGSTOP => self.paused = true,
            Signal::SIGCONT => self.paused = false,
            _ => {}
        }
        Ok(())
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) -> Result<(), ChaosError> {
        self.signal(Signal::SIGKILL)?;
        self.reap(Duration::from_secs(5)).await;
        Ok(())
    }

    /// SIGTERM; after the grace period SIGKILL; reap.
    pub async fn stop(&mut self) -> Result<(), ChaosError> {
        if self.paused {
            // A stopped process cannot act on SIGTERM.
            let _ = self.signal(Signal::SIGCONT);
        }
        self.signal(Signal::SIGTERM)?;
        if !self.reap(self.spec.stop_grace).await {
            warn!(process = %self.spec.name, "no exit after SIGTERM, sending SIGKILL");
            let _ = self.signal(Signal::SIGKILL);
            self.reap(Duration::from_secs(5)).await;
        }
        Ok(())
    }

    /// Wait up to `limit` for the child to exit; true if it did.
    async fn reap(&mut self, limit: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(_) => {
                self.child = None;
                self.paused = false;
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the child is still running (not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stop for good at the end of a run: SIGCONT if paused, SIGTERM, SIGKILL after grace.
    pub async fn shutdown(&mut self) {
        if self.is_running() {
            let _ = self.stop().await;
        }
        self.child = None;
    }
}

/// One readiness check, from the namespace of the calling thread.
async fn is_ready(ready: Readiness) -> bool {
    match ready {
        Readiness::Started => true,
        Readiness::Tcp(addr) => matches!(
            tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await,
            Ok(Ok(_))
        ),
        Readiness::Http(url) => matches!(
            crate::events::http_get(&url, Duration::from_millis(500)).await,
            Ok((status, _)) if status.is_success()
        ),
    }
}

fn describe_ready(r: &Readiness) -> String {
    match r {
        Readiness::Tcp(a) => format!("TCP connect to {a}"),
        Readiness::Http(u) => format!("HTTP 2xx from {u}"),
        Readiness::Started => "started".to_string(),
    }
}

/// The last `n` lines of a log, prefixed with a newline and indented, or empty.
pub fn log_tail(path: &Path, n: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(n);
    let mut out = format!("\n  last lines of {}:", path.display());
    for l in lines.get(start..).unwrap_or_default() {
        out.push_str("\n    ");
        out.push_str(l);
    }
    out
}
