//! `hastack proxy`: protocols (h2c, TLS with ALPN), routing, backups and panic mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

async fn h2_get<S>(io: S, authority: &str, path: &str) -> (u16, String, hyper::Version)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(format!("http://{authority}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let v = resp.version();
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned(), v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_and_tls_with_alpn() {
    let b = Backend::start("only").await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let scratch = Scratch::new("files");
    let cert_path = scratch.path("cert.pem");
    let key_path = scratch.path("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let cfg = format!(
        r#"
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:0"
[[proxy.listeners]]
name = "plain"
listen = "127.0.0.1:0"
pool = "app"
[[proxy.listeners]]
name = "tls"
listen = "127.0.0.1:0"
pool = "app"
tls = {{ cert = "{}", key = "{}" }}
[proxy.pools.app]
members = ["{}"]
"#,
        cert_path.display(),
        key_path.display(),
        b.addr
    );
    let _p = ProxyProc::start(&cfg).await;
    let (plain, tls) = (_p.listener("plain"), _p.listener("tls"));

    // h2c with prior knowledge on the plain listener.
    let s = tokio::net::TcpStream::connect(plain).await.unwrap();
    let (code, body, v) = h2_get(s, "example.test", "/").await;
    assert_eq!(
        (code, body.as_str(), v),
        (200, "only\n", hyper::Version::HTTP_2)
    );

    // TLS, ALPN h2 and http/1.1.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for alpn in [b"h2".to_vec(), b"http/1.1".to_vec()] {
        let mut cc = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        cc.alpn_protocols = vec![alpn.clone()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cc));
        let tcp = tokio::net::TcpStream::connect(tls).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn.as_slice()));
        if alpn == b"h2" {
            let (code, body, v) = h2_get(stream, "localhost", "/").await;
            assert_eq!(
                (code, body.as_str(), v),
                (200, "only\n", hyper::Version::HTTP_2)
            );
        } else {
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = hyper::Request::builder()
                .uri("/")
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = tx.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path_prefix() {
    let (web, api, img) = (
        Backend::start("web").await,
        Backend::start("api").await,
        Backend::start("img").await,
    );
    let cfg = format!(
        r#"
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:0"
[[proxy.listeners]]
listen = "127.0.0.1:0"
pool = "web"
[[proxy.listeners.routes]]
path_prefix = "/api/"
pool = "api"
[[proxy.listeners.routes]]
host = "*.img.test"
pool = "img"
[proxy.pools.web]
members = ["{}"]
[proxy.pools.api]
members = ["{}"]
[proxy.pools.img]
members = ["{}"]
"#,
        web.addr, api.addr, img.addr
    );
    let _p = ProxyProc::start(&cfg).await;
    let listen = _p.listen();
    for (host, path, want) in [
        ("x.test", "/", "web\n"),
        ("x.test", "/api/v1", "api\n"),
        ("x.test", "/apix", "web\n"),
        ("cdn.img.test", "/api/v1", "img\n"),
        ("img.test", "/", "web\n"),
    ] {
        let raw = raw_request(
            listen,
            &format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"),
        )
        .await;
        assert!(raw.ends_with(want), "{host}{path}: {raw}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_serve_only_when_every_primary_is_down_and_panic_spreads_load() {
    let mut primary = Backend::start("primary").await;
    let backup = Backend::start("backup").await;
    let cfg = format!(
        r#"
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:0"
[[proxy.listeners]]
listen = "127.0.0.1:0"
pool = "app"
[proxy.pools.app]
members = [{{ addr = "{}", name = "primary" }}, {{ addr = "{}", name = "backup", backup = true }}]
slow_start = "0s"
[proxy.pools.app.health]
type = "http"
path = "/health"
interval = "100ms"
timeout = "100ms"
"#,
        primary.addr, backup.addr
    );
    let p = ProxyProc::start(&cfg).await;
    let listen = p.listen();
    for _ in 0..20 {
        assert_eq!(http_get(listen, "/").await.unwrap().1, "primary\n");
    }
    primary.proc.kill9();
    for _ in 0..20 {
        assert_eq!(
            http_get(listen, "/").await.unwrap(),
            (200, "backup\n".to_string())
        );
    }
    assert_eq!(p.status().await["pools"]["app"]["mode"], "backup");
    primary.restart().await;
    eventually(
        Duration::from_secs(5),
        "primary back in rotation",
        || async { (http_get(listen, "/").await.ok()?.1 == "primary\n").then_some(()) },
    )
    .await;

    // Panic mode: with a threshold, a pool whose members are all ejected still routes.
    let b = Backend::start("flaky").await;
    let cfg = format!(
        r#"
[proxy]
workers = 1
[proxy.admin]
listen = "127.0.0.1:0"
[[proxy.listeners]]
listen = "127.0.0.1:0"
pool = "app"
[proxy.pools.app]
members = ["{}"]
panic_threshold = 50
[proxy.pools.app.outlier]
consecutive_errors = 2
max_ejected_percent = 100
"#,
        b.addr
    );
    let p = ProxyProc::start(&cfg).await;
    let listen = p.listen();
    http_request(b.addr, "POST", "/_control/fail")
        .await
        .unwrap();
    for _ in 0..3 {
        let _ = http_get(listen, "/").await;
    }
    assert_eq!(
        p.member_state("app", b.addr.to_string().as_str()).await,
        "ejected"
    );
    assert_eq!(p.status().await["pools"]["app"]["mode"], "panic");
    http_request(b.addr, "POST", "/_control/ok").await.unwrap();
    // Ejected, but panic routing still reaches it: not a 503.
    assert_eq!(http_get(listen, "/").await.unwrap().0, 200);
}
