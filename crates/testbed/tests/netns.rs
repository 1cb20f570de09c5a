//! The testbed against the real kernel (root only: fails loudly otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hastack_testbed::{Direction, Testbed, pause};

#[test]
fn builds_probes_injects_faults_and_cleans_up() {
    let tb = Testbed::new(2).expect("testbed (needs root, ip, iptables)");
    let prefix = tb.prefix().to_string();
    let (h1, h2) = (tb.host(0).clone(), tb.host(1).clone());
    // Each host owns its own address and not the other's.
    assert_eq!(tb.holders(h1.ip).unwrap(), vec![0]);
    assert_eq!(tb.holders(h2.ip).unwrap(), vec![1]);
    // The client reaches h1; a bridge-port outage shows up as a gap of about its length.
    let probe = tb.probe(h1.ip, Duration::from_millis(10)).unwrap();
    pause(Duration::from_millis(300));
    tb.link_down(&h1).unwrap();
    pause(Duration::from_millis(400));
    tb.link_up(&h1).unwrap();
    pause(Duration::from_millis(300));
    let r = probe.stop().unwrap();
    assert!(r.replies.len() > 20, "too few replies: {}", r.replies.len());
    let gap = r.largest_gap();
    assert!(gap >= Duration::from_millis(350), "gap {gap:?}");
    // A one-way drop of ICMP (protocol 1) into h2 stops replies; heal restores them.
    tb.drop_proto(&h2, Direction::In, 1).unwrap();
    assert!(
        tb.exec(tb.client(), &["ping", "-c1", "-W1", &h2.ip.to_string()])
            .is_err()
    );
    tb.heal().unwrap();
    tb.exec(tb.client(), &["ping", "-c1", "-W2", &h2.ip.to_string()])
        .unwrap();
    // Processes run inside the namespace and are signalled.
    let mut p = tb.spawn(&h1, "sleeper", &["sleep", "30"]).unwrap();
    assert!(p.running());
    p.stop().unwrap();
    p.cont().unwrap();
    p.kill9().unwrap();
    assert!(!p.running());
    drop(tb);
    let left = std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0, "namespaces left behind");
}

#[test]
fn parallel_testbeds_do_not_collide() {
    let a = Testbed::new(1).unwrap();
    let b = Testbed::new(1).unwrap();
    assert_ne!(a.prefix(), b.prefix());
    // Same subnet, separate segments: each client reaches its own h1.
    a.exec(
        a.client(),
        &["ping", "-c1", "-W2", &a.host(0).ip.to_string()],
    )
    .unwrap();
    b.exec(
        b.client(),
        &["ping", "-c1", "-W2", &b.host(0).ip.to_string()],
    )
    .unwrap();
}

/// Without root the testbed refuses loudly (never skips): re-run this test binary as
/// `nobody` and check the error it reports.
#[test]
fn fails_loudly_without_root() {
    if std::env::var_os("HSTB_EXPECT_NOT_ROOT").is_some() {
        let e = Testbed::new(1).unwrap_err();
        assert!(matches!(e, hastack_testbed::TestbedError::NotRoot), "{e}");
        println!("NOT-ROOT-REFUSED: {e}");
        return;
    }
    hastack_testbed::preflight().expect("this test starts as root and drops to nobody");
    // Copy the binary somewhere `nobody` can execute it (the checkout may be under /root).
    let dir = std::env::temp_dir().join(format!("hstb-notroot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("self-test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    for p in [&dir, &exe] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["--exact", "fails_loudly_without_root", "--nocapture"])
        .env("HSTB_EXPECT_NOT_ROOT", "1")
        .output()
        .expect("setpriv (util-linux)");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("NOT-ROOT-REFUSED"), "{text}");
    assert!(text.contains("needs root"), "{text}");
}
