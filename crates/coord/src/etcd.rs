//! Running real etcd members (Debian's `etcd-server`) as child processes on loopback: a
//! cluster for tests and benchmarks, and the process faults chaos scenarios inject into the
//! coordination layer (kill -9, SIGSTOP/SIGCONT, restart on the same data).
//!
//! Ports: etcd's peer URLs must be known to every member before any starts, so members cannot
//! bind port 0 and report back. Ports are drawn at random below the kernel's ephemeral range
//! (which starts at 32768) and, if a member fails to bind (`address already in use` in its
//! log), the whole cluster is started again on new ports. Every member's data and log live
//! under the directory given to [`EtcdCluster::start`]; dropping the cluster kills every
//! member (SIGKILL) so no etcd outlives a test, whatever path it exits by.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::client::{Client, ClientOptions};
use crate::error::Error;

/// The etcd binary (`etcd` on `PATH`; override with `HASTACK_ETCD`).
pub fn etcd_binary() -> String {
    std::env::var("HASTACK_ETCD").unwrap_or_else(|_| "etcd".into())
}

/// Whether an etcd binary can be run here.
pub fn available() -> bool {
    std::process::Command::new(etcd_binary())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One member.
#[derive(Debug)]
pub struct Member {
    /// Its name (`m0`, `m1`, ...).
    pub name: String,
    /// Client URL (`http://127.0.0.1:PORT`).
    pub client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Member {
    /// The member's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether it is running (possibly paused).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The member's log (stderr), for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Faults a chaos scenario can inject into an etcd member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberFault {
    /// SIGKILL, then start again on the same data after the fault's duration.
    Kill,
    /// SIGSTOP, then SIGCONT after the fault's duration (a frozen member: its connections
    /// stay open and silent).
    Pause,
}

impl MemberFault {
    /// Every fault, for scenario schemas.
    pub const ALL: [MemberFault; 2] = [MemberFault::Kill, MemberFault::Pause];

    /// The name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            MemberFault::Kill => "etcd_kill",
            MemberFault::Pause => "etcd_pause",
        }
    }
}

/// A cluster of etcd members on loopback.
#[derive(Debug)]
pub struct EtcdCluster {
    dir: PathBuf,
    /// The members.
    pub members: Vec<Member>,
    initial_cluster: String,
    token: String,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(pid) = m.pid() {
                // SIGCONT first: a stopped process still dies of SIGKILL, but be explicit.
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            }
            if let Some(mut c) = m.child.take() {
                let _ = c.start_kill();
                let _ = c.try_wait();
            }
        }
    }
}

fn random_port(rng: &mut fastrand::Rng) -> u16 {
    rng.u16(20_000..32_000)
}

impl EtcdCluster {
    /// Start `n` members under `dir` and wait until they have a leader (within `timeout`).
    pub async fn start(dir: &Path, n: usize, timeout: Duration) -> Result<EtcdCluster, Error> {
        let mut rng = fastrand::Rng::new();
        let mut last = String::new();
        for attempt in 0..5 {
            let run = dir.join(format!("etcd-{attempt}"));
            std::fs::create_dir_all(&run)
                .map_err(|e| Error::Server(format!("cannot create {}: {e}", run.display())))?;
            let mut members = Vec::new();
            for i in 0..n {
                let (c, p) = (random_port(&mut rng), random_port(&mut rng));
                members.push(Member {
                    name: format!("m{i}"),
                    client_url: format!("http://127.0.0.1:{c}"),
                    peer_url: format!("http://127.0.0.1:{p}"),
                    data_dir: run.join(format!("m{i}.data")),
                    log: run.join(format!("m{i}.log")),
                    child: None,
                    paused: false,
                });
            }
            let initial_cluster = members
                .iter()
                .map(|m| format!("{}={}", m.name, m.peer_url))
                .collect::<Vec<_>>()
                .join(",");
            let mut c = EtcdCluster {
                dir: run,
                members,
                initial_cluster,
                token: format!("hastack-{}-{}", std::process::id(), rng.u32(..)),
            };
            for i in 0..n {
                c.spawn(i)?;
            }
            match c.wait_ready(timeout).await {
                Ok(()) => return Ok(c),
                Err(e) => {
                    let in_use = c
                        .members
                        .iter()
                        .any(|m| m.log_tail(50).contains("address already in use"));
                    last = e.to_string();
                    drop(c);
                    if !in_use {
                        break;
                    }
                    tracing::debug!(attempt, "etcd port in use; starting again on other ports");
                }
            }
        }
        Err(Error::Server(format!("etcd cluster did not start: {last}")))
    }

    fn spawn(&mut self, i: usize) -> Result<(), Error> {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(|e| Error::Server(format!("cannot open {}: {e}", m.log.display())))?;
        let child = Command::new(etcd_binary())
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url])
            .args(["--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url])
            .args(["--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::Server(format!(
                    "cannot run {}: {e} (install Debian's etcd-server)",
                    etcd_binary()
                ))
            })?;
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// A client over every member.
    pub fn client(&self, options: ClientOptions) -> Result<Client, Error> {
        Client::new(&self.endpoints(), options)
    }

    /// The directory holding the members' data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Wait until every running, unpaused member reports the same leader.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut why = String::new();
            match self.leader().await {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => why = "no agreed leader yet".into(),
                Err(e) => why.push_str(&e.to_string()),
            }
            for m in &mut self.members {
                if m.child.is_some() && !m.is_running() {
                    return Err(Error::Server(format!(
                        "etcd member {} exited:\n{}",
                        m.name,
                        m.log_tail(15)
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Server(format!(
                    "etcd cluster not ready after {timeout:?}: {why}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the member every running, unpaused member names as leader, if they agree.
    pub async fn leader(&self) -> Result<Option<usize>, Error> {
        let opts = ClientOptions {
            call_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(500),
            ..ClientOptions::default()
        };
        let mut leader_id = None;
        let mut ids = Vec::new();
        for m in &self.members {
            if m.child.is_none() || m.paused {
                ids.push(None);
                continue;
            }
            let s = Client::new(&[&m.client_url], opts.clone())?
                .status()
                .await?;
            if s.leader == 0 || leader_id.is_some_and(|l| l != s.leader) {
                return Ok(None);
            }
            leader_id = Some(s.leader);
            ids.push(Some(s.member_id));
        }
        Ok(leader_id.and_then(|l| ids.iter().position(|id| *id == Some(l))))
    }

    /// kill -9 member `i` and reap it.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill().await;
        }
        self.members[i].paused = false;
    }

    /// Start member `i` again on its data (after [`EtcdCluster::kill`]).
    pub fn restart(&mut self, i: usize) -> Result<(), Error> {
        if self.members[i].child.is_some() {
            return Err(Error::Invalid(format!("member {i} is running")));
        }
        self.spawn(i)
    }

    /// SIGSTOP member `i`.
    pub fn pause(&mut self, i: usize) -> Result<(), Error> {
        self.signal(i, nix::sys::signal::Signal::SIGSTOP)?;
        self.members[i].paused = true;
        Ok(())
    }

    /// SIGCONT member `i`.
    pub fn resume(&mut self, i: usize) -> Result<(), Error> {
        self.signal(i, nix::sys::signal::Signal::SIGCONT)?;
        self.members[i].paused = false;
        Ok(())
    }

    fn signal(&self, i: usize, sig: nix::sys::signal::Signal) -> Result<(), Error> {
        let pid = self.members[i]
            .pid()
            .ok_or_else(|| Error::Invalid(format!("member {i} is not running")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
            .map_err(|e| Error::Server(format!("cannot signal member {i}: {e}")))
    }

    /// Inject `fault` into member `i` for `duration`, then heal it.
    pub async fn inject(
        &mut self,
        i: usize,
        fault: MemberFault,
        duration: Duration,
    ) -> Result<(), Error> {
        match fault {
            MemberFault::Kill => {
                self.kill(i).await;
                tokio::time::sleep(duration).await;
                self.restart(i)
            }
            MemberFault::Pause => {
                self.pause(i)?;
                tokio::time::sleep(duration).await;
                self.resume(i)
            }
        }
    }
}
