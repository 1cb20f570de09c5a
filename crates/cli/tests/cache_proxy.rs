//! `hastack cache proxy` against real redis-servers: routing, split commands,
//! transactions, pub/sub, AUTH, real clients (redis-cli, redis-benchmark, python3-redis),
//! and a dead shard answering as a miss without any rehash.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache_support;
mod common;

use std::process::Command;
use std::time::Duration;

use cache_support::*;
use hastack_cache::resp::Value;
use hastack_cache::slotmap::SlotMap;
use nix::sys::signal::Signal;
use tokio::time::Instant;

/// Two shards (even split: a = slots 0-8191, b = 8192-16383), master only.
async fn two_shards(scratch: &Scratch, extra: &str) -> (Redis, Redis, Proxy) {
    let a = Redis::start(&scratch.path("a"), &[]).await;
    let b = Redis::start(&scratch.path("b"), &[]).await;
    let cfg = config(&[("a", a.addr(), vec![]), ("b", b.addr(), vec![])], extra);
    let p = Proxy::start(&cfg).await;
    (a, b, p)
}

/// `n` keys owned by shard `shard` of an even two-shard map.
fn keys_of(shard: usize, n: usize, prefix: &str) -> Vec<String> {
    let m = SlotMap::even(2);
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| m.shard_of(k.as_bytes()) == shard)
        .take(n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_splits_and_joins_like_one_redis() {
    let scratch = Scratch::new("routes");
    let (a, b, p) = two_shards(&scratch, "").await;
    let mut c = p.client().await;
    let ka = keys_of(0, 3, "k");
    let kb = keys_of(1, 3, "k");

    // Writes land on the shard that owns the key, and only there.
    for (i, k) in ka.iter().chain(&kb).enumerate() {
        assert_eq!(
            text(&c.cmd(&["SET", k, &i.to_string()]).await.unwrap()),
            "OK"
        );
    }
    let (mut da, mut db) = (a.client().await, b.client().await);
    for k in &ka {
        assert_ne!(text(&da.cmd(&["GET", k]).await.unwrap()), "nil");
        assert_eq!(text(&db.cmd(&["GET", k]).await.unwrap()), "nil");
    }
    for k in &kb {
        assert_eq!(text(&da.cmd(&["GET", k]).await.unwrap()), "nil");
        assert_ne!(text(&db.cmd(&["GET", k]).await.unwrap()), "nil");
    }

    // MGET across shards, in key order, with a missing key in the middle.
    let mget = c
        .cmd(&["MGET", &kb[0], &ka[0], "missing-key", &kb[1], &ka[1]])
        .await
        .unwrap();
    assert_eq!(texts(&mget), vec!["3", "0", "nil", "4", "1"]);
    // EXISTS / TOUCH sum over shards; DEL / UNLINK too.
    assert_eq!(
        text(
            &c.cmd(&["EXISTS", &ka[0], &kb[0], "nope", &ka[0]])
                .await
                .unwrap()
        ),
        ":3"
    );
    assert_eq!(
        text(&c.cmd(&["TOUCH", &ka[2], &kb[2]]).await.unwrap()),
        ":2"
    );
    assert_eq!(
        text(&c.cmd(&["DEL", &ka[0], &kb[0], "nope"]).await.unwrap()),
        ":2"
    );
    assert_eq!(
        text(&c.cmd(&["UNLINK", &ka[1], &kb[1]]).await.unwrap()),
        ":2"
    );
    // MSET across shards.
    assert_eq!(
        text(&c.cmd(&["MSET", &ka[0], "x", &kb[0], "y"]).await.unwrap()),
        "OK"
    );
    assert_eq!(text(&db.cmd(&["GET", &kb[0]]).await.unwrap()), "y");
    assert_eq!(
        texts(&c.cmd(&["MGET", &ka[0], &kb[0]]).await.unwrap()),
        vec!["x", "y"]
    );

    // Multi-key commands need one slot; hash tags make it so.
    let e = text(&c.cmd(&["RENAME", &ka[0], &kb[0]]).await.unwrap());
    assert!(e.starts_with("CROSSSLOT"), "{e}");
    assert_eq!(
        text(&c.cmd(&["SET", "{user1}.a", "1"]).await.unwrap()),
        "OK"
    );
    assert_eq!(
        text(&c.cmd(&["RENAME", "{user1}.a", "{user1}.b"]).await.unwrap()),
        "OK"
    );
    assert_eq!(text(&c.cmd(&["GET", "{user1}.b"]).await.unwrap()), "1");

    // MULTI/EXEC pinned to one shard; keys of another shard abort it.
    assert_eq!(text(&c.cmd(&["MULTI"]).await.unwrap()), "OK");
    assert_eq!(text(&c.cmd(&["INCR", "{t}x"]).await.unwrap()), "QUEUED");
    assert_eq!(text(&c.cmd(&["INCR", "{t}x"]).await.unwrap()), "QUEUED");
    assert_eq!(texts(&c.cmd(&["EXEC"]).await.unwrap()), vec![":1", ":2"]);
    let other = if SlotMap::even(2).shard_of(b"{t}x") == 0 {
        &kb[0]
    } else {
        &ka[0]
    };
    c.cmd(&["MULTI"]).await.unwrap();
    c.cmd(&["INCR", "{t}x"]).await.unwrap();
    assert!(text(&c.cmd(&["GET", other]).await.unwrap()).starts_with("CROSSSLOT"));
    assert!(text(&c.cmd(&["EXEC"]).await.unwrap()).starts_with("EXECABORT"));
    assert_eq!(text(&c.cmd(&["GET", "{t}x"]).await.unwrap()), "2");

    // Local and refused commands.
    assert_eq!(text(&c.cmd(&["PING"]).await.unwrap()), "PONG");
    assert_eq!(text(&c.cmd(&["ECHO", "hi"]).await.unwrap()), "hi");
    assert_eq!(text(&c.cmd(&["SELECT", "0"]).await.unwrap()), "OK");
    assert!(text(&c.cmd(&["SELECT", "3"]).await.unwrap()).contains("database 0 only"));
    assert!(text(&c.cmd(&["KEYS", "*"]).await.unwrap()).contains("not supported"));
    assert!(text(&c.cmd(&["FLUSHALL"]).await.unwrap()).contains("not supported"));
    assert!(text(&c.cmd(&["CONFIG", "GET", "save"]).await.unwrap()).contains("not supported"));
    assert!(text(&c.cmd(&["BLPOP", "l", "0"]).await.unwrap()).contains("blocking"));
    assert!(
        text(&c.cmd(&["NOSUCH", "x"]).await.unwrap()).starts_with("ERR unknown command 'NOSUCH'")
    );
    let info = text(&c.cmd(&["INFO"]).await.unwrap());
    assert!(
        info.contains("shards:2") && info.contains("state=up"),
        "{info}"
    );
    assert!(matches!(c.cmd(&["COMMAND", "COUNT"]).await.unwrap(), Value::Integer(n) if n > 100));
    // The connection survived every error above.
    assert_eq!(text(&c.cmd(&["GET", &ka[2]]).await.unwrap()), "2");

    // Pipelining: 1000 commands in one write, answers in order.
    let mut pipe = Vec::new();
    for i in 0..1000 {
        pipe.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n$4\r\np{i:03}\r\n${}\r\n{i}\r\n",
                i.to_string().len()
            )
            .as_bytes(),
        );
    }
    use tokio::io::AsyncWriteExt;
    c.stream.write_all(&pipe).await.unwrap();
    for _ in 0..1000 {
        assert_eq!(text(&c.read().await.unwrap()), "OK");
    }
    assert_eq!(text(&c.cmd(&["GET", "p999"]).await.unwrap()), "999");

    // /status shows both shards up with their slots.
    let st = p.status().await;
    assert_eq!(st["shards"][0]["slots"], "0-8191");
    assert_eq!(st["shards"][1]["state"], "up");
    assert_eq!(st["shards"][1]["master"]["addr"], b.addr().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_work_unmodified() {
    require("redis-cli");
    require("redis-benchmark");
    require("/usr/bin/python3");
    let scratch = Scratch::new("clients");
    let (a, b, p) = two_shards(&scratch, "").await;
    let port = p.addr.port().to_string();

    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "hello", "world"]), "OK");
    assert_eq!(cli(&["GET", "hello"]), "world");
    assert_eq!(cli(&["MSET", "a", "1", "b", "2", "c", "3"]), "OK");
    // redis-cli prints nil as an empty line when not on a terminal.
    assert_eq!(cli(&["MGET", "a", "b", "c", "d"]), "1\n2\n3");
    assert_eq!(cli(&["DEL", "a", "b", "c"]), "3");
    assert!(cli(&["KEYS", "*"]).contains("not supported"));

    // redis-benchmark, plain and pipelined: every test completes with a positive rate,
    // and the keys are spread over both shards.
    for extra in [&[][..], &["-P", "16"][..]] {
        let out = Command::new("redis-benchmark")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "set,get,mset",
                "-n",
                "3000",
                "-r",
                "1000",
                "--csv",
            ])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "redis-benchmark {extra:?}: {out:?}");
        for t in ["SET", "GET", "MSET (10 keys)"] {
            let rps: f64 = stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("\"{t}\",\"")))
                .and_then(|rest| rest.split('"').next()?.parse().ok())
                .unwrap_or_else(|| {
                    panic!("redis-benchmark {extra:?} has no {t} result:\n{stdout}")
                });
            assert!(rps > 0.0, "{t}: {rps}");
        }
    }
    let (mut da, mut db) = (a.client().await, b.client().await);
    for d in [&mut da, &mut db] {
        let Value::Integer(n) = d.cmd(&["DBSIZE"]).await.unwrap() else {
            panic!()
        };
        assert!(n > 100, "keys were not spread over both shards: {n}");
    }
    assert!(
        p.metric("hastack_cache_backend_errors_total{shard=\"a\"}")
            .await
            == Some(0.0)
            && p.metric("hastack_cache_backend_errors_total{shard=\"b\"}")
                .await
                == Some(0.0)
    );

    // redis-py (Debian's python3-redis): plain commands, pipeline, pub/sub.
    let script = format!(
        r#"
import redis, time
r = redis.Redis(host="127.0.0.1", port={port})
assert r.ping()
r.set("py:a", "1"); r.set("py:b", "2")
assert r.mget(["py:a", "py:b", "py:none"]) == [b"1", b"2", None]
pipe = r.pipeline(transaction=False)
for i in range(100): pipe.set("py:%d" % i, i)
assert all(pipe.execute())
tx = r.pipeline(transaction=True)
tx.incr("{{py}}n"); tx.incr("{{py}}n")
assert tx.execute() == [1, 2]
ps = r.pubsub(); ps.subscribe("news")
assert ps.get_message(timeout=5)["type"] == "subscribe"
assert r.publish("news", "hello") == 1
m = ps.get_message(timeout=5)
assert m["type"] == "message" and m["data"] == b"hello", m
print("ok")
"#
    );
    // Debian's interpreter, which python3-redis is installed for (not a pyenv one on PATH).
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "python3-redis through the proxy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_is_pinned_and_filtered() {
    let scratch = Scratch::new("pubsub");
    let (_a, _b, p) = two_shards(&scratch, "").await;
    let mut sub = p.client().await;
    let first = sub.cmd(&["SUBSCRIBE", "ch1", "ch2"]).await.unwrap();
    assert_eq!(texts(&first), vec!["subscribe", "ch1", ":1"]);
    assert_eq!(
        texts(&sub.read().await.unwrap()),
        vec!["subscribe", "ch2", ":2"]
    );
    let mut publisher = p.client().await;
    assert_eq!(
        text(&publisher.cmd(&["PUBLISH", "ch2", "m1"]).await.unwrap()),
        ":1"
    );
    assert_eq!(
        texts(&sub.read().await.unwrap()),
        vec!["message", "ch2", "m1"]
    );
    // PING in subscribed mode goes through.
    let pong = sub.cmd(&["PING"]).await.unwrap();
    assert_eq!(texts(&pong), vec!["pong", ""]);
    // Anything else is refused and the connection closed.
    let refused = sub.cmd(&["GET", "x"]).await.unwrap();
    assert!(
        text(&refused).contains("not allowed on a pub/sub connection"),
        "{refused:?}"
    );
    assert!(sub.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_side_auth() {
    let scratch = Scratch::new("auth");
    let (_a, _b, p) = two_shards(&scratch, "password = \"s3cret\"").await;
    let mut c = p.client().await;
    assert!(text(&c.cmd(&["GET", "a"]).await.unwrap()).starts_with("NOAUTH"));
    assert!(text(&c.cmd(&["AUTH", "wrong"]).await.unwrap()).starts_with("WRONGPASS"));
    assert_eq!(text(&c.cmd(&["AUTH", "s3cret"]).await.unwrap()), "OK");
    assert_eq!(text(&c.cmd(&["SET", "a", "1"]).await.unwrap()), "OK");
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &p.addr.port().to_string(),
            "-a",
            "s3cret",
            "--no-auth-warning",
            "GET",
            "a",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}

/// Place `n` keys per shard through the proxy; return them.
async fn place(c: &mut Client, n: usize) -> (Vec<String>, Vec<String>) {
    let ka = keys_of(0, n, "place:");
    let kb = keys_of(1, n, "place:");
    for k in ka.iter().chain(&kb) {
        assert_eq!(
            text(&c.cmd(&["SET", k, &format!("v-{k}")]).await.unwrap()),
            "OK"
        );
    }
    (ka, kb)
}

/// Every key of `keys` reads back its value through the proxy.
async fn all_intact(c: &mut Client, keys: &[String]) {
    for k in keys {
        assert_eq!(
            text(&c.cmd(&["GET", k]).await.unwrap()),
            format!("v-{k}"),
            "key {k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_shard_is_a_miss_then_comes_back_in_place() {
    let scratch = Scratch::new("kill");
    let (a, mut b, p) = two_shards(&scratch, "[cache.proxy.health]\ninterval = \"500ms\"").await;
    let mut c = p.client().await;
    let (ka, kb) = place(&mut c, 50).await;
    let mut da = a.client().await;
    let Value::Integer(a_before) = da.cmd(&["DBSIZE"]).await.unwrap() else {
        panic!()
    };

    b.kill9();
    let killed = Instant::now();
    // The very next read of a b-key is a miss (passive detection: the connection reset),
    // never an error, never another shard's answer.
    assert_eq!(text(&c.cmd(&["GET", &kb[0]]).await.unwrap()), "nil");
    // Within one probe interval (500ms +10% jitter, plus slack for a loaded machine),
    // the shard is marked down in /status too.
    eventually(Duration::from_secs(5), "shard b marked down", || async {
        (p.status().await["shards"][1]["state"] == "down").then_some(())
    })
    .await;
    let detected = killed.elapsed();
    for k in &kb {
        assert_eq!(text(&c.cmd(&["GET", k]).await.unwrap()), "nil", "{k}");
    }
    // Per key inside MGET; the other shard's values are unaffected.
    let mget = c.cmd(&["MGET", &ka[0], &kb[1], &ka[1]]).await.unwrap();
    assert_eq!(
        texts(&mget),
        vec![format!("v-{}", ka[0]), "nil".into(), format!("v-{}", ka[1])]
    );
    assert_eq!(
        text(&c.cmd(&["EXISTS", &ka[0], &kb[0]]).await.unwrap()),
        ":1"
    );
    assert_eq!(text(&c.cmd(&["TTL", &kb[0]]).await.unwrap()), ":-2");
    // Writes to the dead shard get a clear error; nothing is written anywhere else.
    let e = text(&c.cmd(&["SET", &kb[0], "new"]).await.unwrap());
    assert_eq!(e, "ERR shard b unavailable");
    assert_eq!(
        text(&c.cmd(&["DEL", &ka[2], &kb[2]]).await.unwrap()),
        "ERR shard b unavailable"
    );
    all_intact(&mut c, &ka[3..]).await;
    // No rehash: shard a holds exactly its own keys (minus the one DEL removed).
    let Value::Integer(a_during) = da.cmd(&["DBSIZE"]).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        a_during,
        a_before - 1,
        "keys moved onto the surviving shard"
    );
    assert!(
        p.metric("hastack_cache_dead_shard_misses_total{shard=\"b\"}")
            .await
            .unwrap()
            >= 50.0
    );
    assert_eq!(
        p.metric("hastack_cache_dead_shard_misses_total{shard=\"a\"}")
            .await,
        Some(0.0)
    );
    assert!(
        p.metric("hastack_cache_dead_shard_rejections_total{shard=\"b\"}")
            .await
            .unwrap()
            >= 2.0
    );
    assert_eq!(
        p.metric("hastack_cache_shard_up{shard=\"b\"}").await,
        Some(0.0)
    );

    // The shard comes back in place: same slots, same server, writes flow there again.
    b.restart().await;
    eventually(Duration::from_secs(10), "shard b back up", || async {
        (p.status().await["shards"][1]["state"] == "up").then_some(())
    })
    .await;
    assert_eq!(text(&c.cmd(&["SET", &kb[0], "again"]).await.unwrap()), "OK");
    let mut db = b.client().await;
    assert_eq!(text(&db.cmd(&["GET", &kb[0]]).await.unwrap()), "again");
    assert_eq!(text(&da.cmd(&["GET", &kb[0]]).await.unwrap()), "nil");
    let st = p.status().await;
    assert_eq!(st["shards"][1]["slots"], "8192-16383");
    eprintln!("kill -9 -> shard marked down in /status after {detected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_shard_is_a_miss_and_its_data_comes_back() {
    let scratch = Scratch::new("freeze");
    let (_a, b, p) = two_shards(
        &scratch,
        "timeout = \"300ms\"\n[cache.proxy.health]\ninterval = \"500ms\"\ntimeout = \"200ms\"",
    )
    .await;
    let mut c = p.client().await;
    let (ka, kb) = place(&mut c, 20).await;

    b.signal(Signal::SIGSTOP);
    let frozen = Instant::now();
    // A read in flight to the frozen shard times out into a miss.
    assert_eq!(text(&c.cmd(&["GET", &kb[0]]).await.unwrap()), "nil");
    eventually(
        Duration::from_secs(5),
        "frozen shard b marked down",
        || async { (p.status().await["shards"][1]["state"] == "down").then_some(()) },
    )
    .await;
    let detected = frozen.elapsed();
    // Once down, misses are answered at once, not after a timeout.
    let t = Instant::now();
    for k in &kb {
        assert_eq!(text(&c.cmd(&["GET", k]).await.unwrap()), "nil");
    }
    assert!(
        t.elapsed() < Duration::from_millis(300 * 20),
        "misses waited for timeouts"
    );
    all_intact(&mut c, &ka).await;

    b.signal(Signal::SIGCONT);
    eventually(Duration::from_secs(10), "shard b back up", || async {
        (p.status().await["shards"][1]["state"] == "up").then_some(())
    })
    .await;
    // Its keys were never rehashed anywhere, so its data is simply there again.
    all_intact(&mut c, &kb).await;
    eprintln!("SIGSTOP -> shard marked down after {detected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_replica_reads_from_replicas_and_survives_the_master() {
    let scratch = Scratch::new("replica");
    let mut m = Redis::start(&scratch.path("m"), &[]).await;
    let r = Redis::start(
        &scratch.path("r"),
        &[&format!("--replicaof 127.0.0.1 {}", m.port)],
    )
    .await;
    let cfg = config(
        &[("s", m.addr(), vec![r.addr()])],
        "read_policy = \"prefer_replica\"\n[cache.proxy.health]\ninterval = \"500ms\"",
    );
    let p = Proxy::start(&cfg).await;
    let mut c = p.client().await;
    assert_eq!(text(&c.cmd(&["SET", "k", "v"]).await.unwrap()), "OK");
    let mut dr = r.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while text(&dr.cmd(&["GET", "k"]).await.unwrap()) != "v" {
        assert!(Instant::now() < deadline, "k was not replicated within 10s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Reads are served by the replica: its command stats count them.
    let Value::Bulk(before) = dr.cmd(&["INFO", "commandstats"]).await.unwrap() else {
        panic!()
    };
    for _ in 0..20 {
        assert_eq!(text(&c.cmd(&["GET", "k"]).await.unwrap()), "v");
    }
    let Value::Bulk(after) = dr.cmd(&["INFO", "commandstats"]).await.unwrap() else {
        panic!()
    };
    let gets = |t: &[u8]| {
        String::from_utf8_lossy(t)
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
            .and_then(|v| v.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        gets(&after) >= gets(&before) + 20,
        "reads did not go to the replica"
    );

    // Master dead: reads still answered by the replica, writes refused.
    m.kill9();
    eventually(Duration::from_secs(5), "shard degraded", || async {
        (p.status().await["shards"][0]["state"] == "degraded").then_some(())
    })
    .await;
    assert_eq!(text(&c.cmd(&["GET", "k"]).await.unwrap()), "v");
    assert_eq!(
        text(&c.cmd(&["SET", "k", "w"]).await.unwrap()),
        "ERR shard s unavailable"
    );
}
