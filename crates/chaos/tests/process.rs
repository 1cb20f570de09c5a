//! Process faults on real processes: signals, stop/start, readiness failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use hastack_chaos::ChaosError;
use hastack_chaos::fault::process::{ManagedProcess, ProcessSpec, Readiness};
use nix::sys::signal::Signal;

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Dir {
    let p = std::env::temp_dir().join(format!("hastack-chaos-proc-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    Dir(p)
}

fn spec(name: &str, program: &str, args: &[&str], ready: Readiness) -> ProcessSpec {
    ProcessSpec {
        name: name.into(),
        program: program.into(),
        args: args.iter().map(|s| (*s).to_string()).collect(),
        env: vec![],
        ready,
        ready_timeout: Duration::from_secs(2),
        stop_grace: Duration::from_millis(500),
        host: None,
    }
}

/// The state letter of `pid` from /proc (R, S, T, Z...).
fn state(pid: u32) -> char {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = s.rsplit_once(')').unwrap().1;
    after.trim_start().chars().next().unwrap()
}

async fn wait_state(pid: u32, want: char) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while state(pid) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pid {pid} never reached {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn pause_resume_term_start_kill() {
    let d = dir("sig");
    let mut p = ManagedProcess::new(spec("s", "sleep", &["30"], Readiness::Started), &d.0);
    p.start().await.unwrap();
    let pid = p.pid().unwrap();
    p.signal(Signal::SIGSTOP).unwrap();
    wait_state(pid, 'T').await;
    p.signal(Signal::SIGCONT).unwrap();
    wait_state(pid, 'S').await;
    // SIGTERM on a paused process still ends it (it is resumed first).
    p.signal(Signal::SIGSTOP).unwrap();
    p.stop().await.unwrap();
    assert!(!p.is_running());
    p.start().await.unwrap();
    let pid2 = p.pid().unwrap();
    assert_ne!(pid, pid2);
    p.kill().await.unwrap();
    assert!(!p.is_running());
    let err = p.signal(Signal::SIGTERM).unwrap_err();
    assert!(err.to_string().contains("not running"), "{err}");
}

#[tokio::test]
async fn a_process_that_exits_early_is_reported_with_its_log() {
    let d = dir("early");
    let mut p = ManagedProcess::new(
        spec(
            "bad",
            "sh",
            &["-c", "echo boom: config missing; exit 3"],
            Readiness::Tcp("127.0.0.1:1".parse().unwrap()),
        ),
        &d.0,
    );
    let err = p.start().await.unwrap_err();
    assert!(matches!(err, ChaosError::NotReady { .. }));
    let msg = err.to_string();
    assert!(msg.contains("exited with exit status: 3"), "{msg}");
    assert!(msg.contains("boom: config missing"), "{msg}");
}

#[tokio::test]
async fn readiness_times_out_with_a_clear_message() {
    let d = dir("slow");
    let mut p = ManagedProcess::new(
        spec(
            "never",
            "sleep",
            &["30"],
            Readiness::Tcp("127.0.0.1:1".parse().unwrap()),
        ),
        &d.0,
    );
    let err = p.start().await.unwrap_err().to_string();
    assert!(
        err.contains("no readiness (TCP connect to 127.0.0.1:1) within 2s"),
        "{err}"
    );
    p.shutdown().await;
    assert!(!p.is_running());
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_error() {
    let d = dir("missing");
    let mut p = ManagedProcess::new(
        spec("x", "/nonexistent/prog", &[], Readiness::Started),
        &d.0,
    );
    let err = p.start().await.unwrap_err().to_string();
    assert!(
        err.contains("cannot start process `x` (/nonexistent/prog)"),
        "{err}"
    );
}
