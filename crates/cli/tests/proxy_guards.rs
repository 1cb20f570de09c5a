//! Gateway guards in `hastack proxy`, end to end: the real binary in front of real
//! `hastack app` processes. Breakers trip and close, shedding keeps the critical route
//! whole under 2x overload, a rate limit holds over 10 s, refusals carry their headers,
//! route switches survive reloads, and bad guard config is caught by `hastack check`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

fn member(b: &Backend) -> String {
    format!("{{ addr = \"{}\", name = \"{}\" }}", b.addr, b.name)
}

async fn get(listen: SocketAddr, path: &str) -> Answer {
    http_full(listen, "GET", path, "test", &[]).await.unwrap()
}

/// How many requests a backend has served (its own `/_stats`).
async fn served(b: &Backend) -> u64 {
    let (_, body) = http_get(b.addr, "/_stats").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["requests"].as_u64().unwrap()
}

async fn control(b: &Backend, what: &str) {
    let (code, body) = http_request(b.addr, "POST", &format!("/_control/{what}"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
}

/// The route called `name` in `/status`.
async fn route(p: &ProxyProc, name: &str) -> serde_json::Value {
    let s = p.status().await;
    s["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {s}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_backend_trips_the_route_breaker_then_it_closes_after_recovery() {
    let b0 = Backend::start("b0").await;
    let scratch = Scratch::new("files");
    let page = scratch.path("sorry.html");
    std::fs::write(&page, "<h1>back soon</h1>").unwrap();
    let cfg = format!(
        r#"
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:0"
[[proxy.listeners]]
name = "web"
listen = "127.0.0.1:0"
[[proxy.listeners.routes]]
name = "shop"
pool = "app"
[proxy.listeners.routes.breaker]
window_calls = 10
min_calls = 5
failure_ratio = 0.5
open_for = "1s"
open_max = "2s"
half_open_calls = 2
[proxy.listeners.routes.fallback]
status = 503
body_file = "{page}"
headers = {{ content-type = "text/html" }}
[proxy.pools.app]
members = [{m}]
[proxy.pools.app.outlier]
consecutive_errors = 0
[proxy.pools.app.retry]
attempts = 1
"#,
        page = page.display(),
        m = member(&b0),
    );
    let p = ProxyProc::start(&cfg).await;
    let listen = p.listen();
    for _ in 0..3 {
        assert_eq!(get(listen, "/").await.status, 200);
    }
    control(&b0, "fail").await;
    // Window: 3 successes, then failures. The breaker judges from 5 calls and trips when
    // half of the window failed: at the 3rd failure (3 of 6). Every failure before that
    // passes through as the upstream's own 500 (this fallback does not cover upstream
    // errors); the next request already gets the fallback page.
    let mut failures = 0;
    let first = loop {
        let a = get(listen, "/").await;
        if a.status == 500 {
            failures += 1;
            assert!(
                failures <= 3,
                "breaker did not trip after {failures} failures"
            );
            continue;
        }
        break a;
    };
    assert_eq!(failures, 3, "tripped at the wrong call");
    assert_eq!(
        (first.status, first.body.as_str()),
        (503, "<h1>back soon</h1>")
    );
    assert_eq!(first.header("x-hastack-fallback"), "breaker_open");
    assert_eq!(first.header("content-type"), "text/html");
    // While open, nothing reaches the backend.
    let before = served(&b0).await;
    for _ in 0..5 {
        let a = get(listen, "/").await;
        assert_eq!(
            (a.status, a.header("x-hastack-fallback")),
            (503, "breaker_open")
        );
    }
    assert_eq!(
        served(&b0).await,
        before + 1,
        "only the /_stats call itself"
    );
    let r = route(&p, "shop").await;
    assert_eq!(r["guards"]["breaker"]["state"], "open", "{r}");

    // Recovery: after the open period two trial calls succeed and the breaker closes.
    control(&b0, "ok").await;
    eventually(
        Duration::from_secs(5),
        "the breaker to let traffic through",
        || async { (get(listen, "/").await.status == 200).then_some(()) },
    )
    .await;
    assert_eq!(get(listen, "/").await.status, 200);
    let r = route(&p, "shop").await;
    assert_eq!(r["guards"]["breaker"]["state"], "closed", "{r}");
    let m = p.metrics().await;
    assert_eq!(
        metric(
            &m,
            "hastack_guard_breaker_transitions_total{scope=\"shop\",to=\"open\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "hastack_guard_breaker_transitions_total{scope=\"shop\",to=\"closed\"}"
        ),
        1.0,
        "{m}"
    );
    assert!(metric(&m, "hastack_guard_fallback_served_total{scope=\"shop\"}") >= 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_breaker_takes_a_failing_member_out_of_rotation() {
    let b0 = Backend::start("good").await;
    let b1 = Backend::start("bad").await;
    let cfg = format!(
        r#"
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:0"
[[proxy.listeners]]
name = "web"
listen = "127.0.0.1:0"
pool = "app"
[proxy.pools.app]
members = [{m0}, {m1}]
strategy = "round_robin"
[proxy.pools.app.breaker]
window_calls = 10
min_calls = 4
failure_ratio = 0.5
open_for = "30s"
open_max = "30s"
[proxy.pools.app.outlier]
consecutive_errors = 0
[proxy.pools.app.retry]
attempts = 1
"#,
        m0 = member(&b0),
        m1 = member(&b1),
    );
    let p = ProxyProc::start(&cfg).await;
    let listen = p.listen();
    control(&b1, "fail").await;
    let mut errors = 0;
    for _ in 0..30 {
        match get(listen, "/").await.status {
            200 => {}
            500 => errors += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    // The member breaker opens at the 4th failure of `bad`; after that only `good` serves.
    assert_eq!(errors, 4);
    let bad = p.member("app", "bad").await;
    assert_eq!(bad["breaker"]["state"], "open", "{bad}");
    let m = p.metrics().await;
    assert_eq!(
        metric(
            &m,
            "hastack_guard_breaker_state{scope=\"app/bad\",state=\"open\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_2x_overload_shedding_keeps_the_critical_route_whole() {
    let b0 = Backend::start("b0").await;
    let b1 = Backend::start("b1").await;
    // Capacity: 8 slots x 100 ms per request = 80 requests/s. Offered: 40/s critical
    // (half the capacity) + 120/s best effort = 160/s, twice the capacity.
    let cfg = format!(
        r#"
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:0"
[[proxy.listeners]]
name = "web"
listen = "127.0.0.1:0"
[[proxy.listeners.routes]]
name = "checkout"
host = "critical.test"
pool = "app"
priority = "critical"
[[proxy.listeners.routes]]
name = "extras"
host = "extras.test"
pool = "app"
priority = "best_effort"
[proxy.pools.app]
members = [{m0}, {m1}]
[proxy.pools.app.concurrency]
max_inflight = 8
max_queue = 200
queue_timeout = "2s"
[proxy.pools.app.concurrency.shedding]
"#,
        m0 = member(&b0),
        m1 = member(&b1),
    );
    let p = ProxyProc::start(&cfg).await;
    let listen = p.listen();
    let run = Duration::from_secs(5);
    let (critical, extras) = tokio::join!(
        open_loop(listen, "critical.test", "/delay/100", 40.0, run),
        open_loop(listen, "extras.test", "/delay/100", 120.0, run),
    );
    let ok = critical.count(200);
    let total = critical.answers.len();
    let odd: Vec<String> = critical
        .answers
        .iter()
        .filter_map(|a| match a {
            Ok(a) if a.status == 200 => None,
            Ok(a) => Some(format!("{} {}", a.status, a.body.trim())),
            Err(e) => Some(e.clone()),
        })
        .take(5)
        .collect();
    assert!(
        ok as f64 >= 0.99 * total as f64,
        "critical: {ok} of {total} succeeded; e.g. {odd:?}"
    );
    let e_ok = extras.count(200);
    eprintln!(
        "overload: critical {ok}/{total} ok; best effort {e_ok}/{} ok",
        extras.answers.len()
    );
    let e_shed = extras
        .answers
        .iter()
        .filter(|a| {
            a.as_ref().is_ok_and(|a| {
                a.status == 503 && matches!(a.header("x-hastack-error"), "shed" | "overloaded")
            })
        })
        .count();
    // Best effort got what was left: clearly less than it asked for, the rest shed fast.
    assert!(e_shed > 0, "nothing was shed");
    assert!(
        (e_ok as f64) < 0.8 * extras.answers.len() as f64,
        "best effort was not shed: {e_ok} of {} succeeded",
        extras.answers.len()
    );
    assert_eq!(
        e_ok + e_shed,
        extras.answers.len(),
        "other answers than 200/503"
    );
    let m = p.metrics().await;
    assert!(
        metric(
            &m,
            "hastack_guard_shed_total{scope=\"pool:app\",class=\"best_effort\"}"
        ) > 0.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "hastack_guard_shed_total{scope=\"pool:app\",class=\"critical\"}"
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_within_five_percent_over_ten_seconds() {
    let b0 = Backend::start("b0").await;
    let (rate, burst) = (50.0, 10.0);
    let cfg = format!(
        r#"
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:0"
[[proxy.listeners]]
name = "web"
listen = "127.0.0.1:0"
[[proxy.listeners.routes]]
name = "api"
pool = "app"
[proxy.listeners.routes.rate_limit]
rate = {rate}
burst = {burst}
[proxy.pools.app]
members = [{m}]
"#,
        m = member(&b0),
    );
    let p = ProxyProc::start(&cfg).await;
    let listen = p.listen();
    // Offer twice the rate, open loop, for 10 s.
    let run = open_loop(listen, "test", "/", 2.0 * rate, Duration::from_secs(10)).await;
    let accepted = run.count(200);
    let refused = run.count(429);
    assert_eq!(
        accepted + refused,
        run.answers.len(),
        "answers other than 200/429: {:?}",
        run.answers
            .iter()
            .find(|a| !a.as_ref().is_ok_and(|a| a.status == 200 || a.status == 429))
    );
    // GCRA admits at most burst + rate x elapsed; offered at twice the rate, it admits
    // exactly that (up to one emission interval).
    let elapsed = run.last_sent.duration_since(run.first_sent).as_secs_f64();
    let expected = burst + rate * elapsed;
    let error = (accepted as f64 - expected) / expected;
    eprintln!(
        "rate limit: accepted {accepted}, refused {refused}, expected {expected:.1} over {elapsed:.2} s ({:+.2}%)",
        error * 100.0
    );
    assert!(
        error.abs() <= 0.05,
        "accepted {accepted} vs expected {expected:.1} over {elapsed:.2} s ({:+.1}%)",
        error * 100.0
    );
    let r = route(&p, "api").await;
    assert_eq!(
        r["guards"]["rate_limit"]["rejected"].as_u64().unwrap(),
        refused as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_retry_after_and_the_ratelimit_fields() {
    let b0 = Backend::start("b0").await;
    let cfg = format!(
        r#"
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:0"
[[proxy.listeners]]
name = "web"
listen = "127.0.0.1:0"
[[proxy.listeners.routes]]
name = "api"
path_prefix = "/api"
pool = "app"
[proxy.listeners.routes.rate_limit]
rate = 2
per = "10s"
[[proxy.listeners.routes]]
name = "open"
path_prefix = "/open"
pool = "app"
[proxy.listeners.routes.rate_limit]
rate = 100
headers = "always"
[[proxy.listeners]]
name = "edge"
listen = "127.0.0.1:0"
pool = "app"
[proxy.listeners.rate_limit]
rate = 1
per = "10s"
[proxy.pools.app]
members = [{m}]
"#,
        m = member(&b0),
    );
    let _p = ProxyProc::start(&cfg).await;
    let (listen, edge) = (_p.listener("web"), _p.listener("edge"));
    for _ in 0..2 {
        let a = get(listen, "/api/x").await;
        assert_eq!(a.status, 200);
        assert_eq!(
            a.header("ratelimit"),
            "",
            "on_reject: nothing on admitted answers"
        );
    }
    let a = get(listen, "/api/x").await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.header("x-hastack-error"), "rate_limited");
    let retry: u64 = a.header("retry-after").parse().unwrap();
    assert!((1..=10).contains(&retry), "retry-after {retry}");
    assert_eq!(a.header("ratelimit-policy"), "\"api\";q=2;w=10");
    assert!(
        a.header("ratelimit").starts_with("\"api\";r=0;t="),
        "{:?}",
        a.headers
    );
    assert!(a.body.contains("at most 2 requests per 10s"), "{}", a.body);

    let a = get(listen, "/open").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("ratelimit-policy"), "\"open\";q=100;w=1");
    assert!(
        a.header("ratelimit").starts_with("\"open\";r="),
        "{:?}",
        a.headers
    );

    // A listener-wide limit, before any route.
    assert_eq!(get(edge, "/").await.status, 200);
    let a = get(edge, "/").await;
    assert_eq!(a.status, 429);
    assert_eq!(a.header("ratelimit-policy"), "\"edge\";q=1;w=10");
    assert!(!a.header("retry-after").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_route_answers_its_fallback_survives_a_reload_and_reenables() {
    let b0 = Backend::start("b0").await;
    let fallback = Backend::start("static").await;
    let cfg = |paused: &str| {
        format!(
            r#"
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:0"
[[proxy.listeners]]
name = "web"
listen = "127.0.0.1:0"
pool = "app"
[[proxy.listeners.routes]]
name = "register"
path_prefix = "/register"
pool = "app"
[proxy.listeners.routes.fallback]
status = 503
body = "{paused}"
[[proxy.listeners.routes]]
name = "search"
path_prefix = "/search"
pool = "app"
[proxy.listeners.routes.fallback]
pool = "static"
[proxy.pools.app]
members = [{m}]
[proxy.pools.static]
members = [{f}]
"#,
            m = member(&b0),
            f = member(&fallback),
        )
    };
    let p = ProxyProc::start(&cfg("registration is paused")).await;
    let listen = p.listen();
    assert_eq!(get(listen, "/register").await.header("x-served-by"), "b0");

    let (code, body) = p.post("/admin/routes/register/disable").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["disabled"], true, "{v}");
    let a = get(listen, "/register").await;
    assert_eq!(
        (a.status, a.body.as_str(), a.header("x-hastack-fallback")),
        (503, "registration is paused", "disabled")
    );
    assert_eq!(
        a.header("retry-after"),
        "",
        "nobody knows when a switched-off route returns"
    );
    // Other routes are untouched.
    assert_eq!(get(listen, "/other").await.status, 200);

    // A fallback pool answers for a disabled route with a pool fallback.
    assert_eq!(p.post("/admin/routes/search/disable").await.0, 200);
    let a = get(listen, "/search").await;
    assert_eq!(
        (
            a.status,
            a.header("x-served-by"),
            a.header("x-hastack-fallback")
        ),
        (200, "static", "disabled")
    );

    // A reload with a changed page: the new page, still switched off.
    std::fs::write(&p.config, cfg("registration resumes at noon")).unwrap();
    let (code, body) = p.post("/admin/reload").await;
    assert_eq!(code, 200, "{body}");
    let a = get(listen, "/register").await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (503, "registration resumes at noon")
    );
    let r = route(&p, "register").await;
    assert_eq!(r["disabled"], true, "{r}");
    assert!(
        p.status().await["switches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["route"] == "register" && s["disabled"] == true)
    );

    // Enabled again: straight back to the pool, cleanly.
    assert_eq!(p.post("/admin/routes/register/enable").await.0, 200);
    assert_eq!(p.post("/admin/routes/search/enable").await.0, 200);
    for _ in 0..3 {
        let a = get(listen, "/register").await;
        assert_eq!((a.status, a.header("x-served-by")), (200, "b0"));
        assert_eq!(a.header("x-hastack-fallback"), "");
    }
    assert_eq!(get(listen, "/search").await.header("x-served-by"), "b0");
    let m = p.metrics().await;
    assert_eq!(
        metric(&m, "hastack_guard_route_disabled{scope=\"register\"}"),
        0.0
    );
    // The reload changed the page, so the fallback (and its count) is new: 1 since then.
    assert_eq!(
        metric(
            &m,
            "hastack_guard_fallback_served_total{scope=\"register\"}"
        ),
        1.0,
        "{m}"
    );
    // The search fallback did not change: its count spans the reload.
    assert_eq!(
        metric(&m, "hastack_guard_fallback_served_total{scope=\"search\"}"),
        1.0,
        "{m}"
    );

    // Unknown routes and actions.
    let (code, body) = p.post("/admin/routes/nope/disable").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no route") && body.contains("nope"), "{body}");
    assert_eq!(p.post("/admin/routes/register/explode").await.0, 400);
    // The default route is a route too, named after the listener.
    assert_eq!(p.post("/admin/routes/web/disable").await.0, 200);
    assert_eq!(get(listen, "/other").await.status, 503);
    assert_eq!(p.post("/admin/routes/web/enable").await.0, 200);
    assert_eq!(get(listen, "/other").await.status, 200);
}

/// A static fallback covering `timeout` replaces the proxy's own timeouts, never a member's
/// own 504 (retried, then passed on when no member was left): that one is an upstream
/// error, answered by the fallback only with `upstream_error = true` (docs/guards.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_own_504_is_not_taken_for_the_proxys_timeout() {
    let b0 = Backend::start("b0").await;
    let cfg = format!(
        r#"
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:0"
[[proxy.listeners]]
name = "web"
listen = "127.0.0.1:0"
[[proxy.listeners.routes]]
name = "strict"
host = "strict.test"
pool = "app"
[proxy.listeners.routes.fallback]
status = 200
body = "sorry"
on = ["timeout"]
[[proxy.listeners.routes]]
name = "lenient"
host = "lenient.test"
pool = "app"
[proxy.listeners.routes.fallback]
status = 200
body = "sorry"
on = ["timeout"]
upstream_error = true
[proxy.pools.app]
members = [{m}]
try_timeout = "200ms"
request_timeout = "1s"
"#,
        m = member(&b0),
    );
    let p = ProxyProc::start(&cfg).await;
    let listen = p.listen();
    let ask = |host: &'static str, path: &'static str| async move {
        http_full(listen, "GET", path, host, &[]).await.unwrap()
    };
    // The member's own 504, retried (504 is in on_status) until no member is left.
    let a = ask("strict.test", "/status/504").await;
    assert_eq!(
        (
            a.status,
            a.header("x-hastack-error"),
            a.header("x-hastack-fallback")
        ),
        (504, "upstream_status", ""),
        "{a:?}"
    );
    let a = ask("lenient.test", "/status/504").await;
    assert_eq!(
        (a.status, a.body.as_str(), a.header("x-hastack-fallback")),
        (200, "sorry", "upstream_error"),
        "{a:?}"
    );
    // The proxy's own timeout is what `timeout` covers, on both routes.
    for host in ["strict.test", "lenient.test"] {
        let a = ask(host, "/delay/2000").await;
        assert_eq!(
            (a.status, a.body.as_str(), a.header("x-hastack-fallback")),
            (200, "sorry", "timeout"),
            "{host}: {a:?}"
        );
    }
}

#[test]
fn invalid_guard_config_is_rejected_by_check_with_locations() {
    let (code, _, err) = check_text(
        "guards.toml",
        r#"[proxy]
[[proxy.listeners]]
listen = "127.0.0.1:1"
[[proxy.listeners.routes]]
name = "a"
pool = "app"
priority = "vip"
[proxy.listeners.routes.breaker]
failure_ratio = 2.0
[proxy.listeners.routes.fallback]
pool = "missing"
[proxy.pools.app]
members = ["127.0.0.1:2"]
[proxy.pools.app.concurrency]
max_queue = 10
queue_timeout = "0s"
"#,
    );
    assert_eq!(code, Some(1), "{err}");
    for needle in [
        "guards.toml:7:1: error: proxy.listeners[0].routes[0].priority: unknown priority \"vip\"",
        "guards.toml:9:1: error: proxy.listeners[0].routes[0].breaker.failure_ratio: 2 is not a ratio",
        "guards.toml:11:1: error: proxy.listeners[0].routes[0].fallback.pool: pool \"missing\" is not defined",
        "guards.toml:16:1: error: proxy.pools.app.concurrency.queue_timeout: queue_timeout must be above zero",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
}

#[test]
fn the_sale_day_example_passes_check() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/sale-day.toml");
    let (code, text, err) = check_file(file);
    assert_eq!(code, Some(0), "{err}");
    assert!(text.contains("configuration is valid"), "{text}");
    assert!(
        !err.contains("warning"),
        "the example should be warning-free: {err}"
    );
    // docs/guards.md shows the same file (everything from `[proxy]` on), so the doc's
    // worked example is the one checked here.
    let example = std::fs::read_to_string(file).unwrap();
    let body = &example[example.find("[proxy]\n").unwrap()..];
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/guards.md"))
        .unwrap();
    assert!(
        doc.contains(body),
        "docs/guards.md's sale-day example differs from examples/sale-day.toml"
    );
}
