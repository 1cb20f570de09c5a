//! Bad input both ways: a hostile server (malformed answers, garbage bytes, silence) gets
//! clear errors from the client within its deadline and never a panic; floods of leases and
//! watches against the embedded store hit its documented limits with errors naming them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use hastack_coord::proto::etcdserverpb as pb;
use hastack_coord::proto::mvccpb;
use hastack_coord::server::{self, ServerConfig, Storage};
use hastack_coord::{Client, ClientOptions, Error, Retry, WatchSpec};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// A server that answers every call with something wrong.
#[derive(Clone, Copy)]
struct Liar;

type S<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::kv_server::Kv for Liar {
    async fn range(
        &self,
        _: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        // No header: no revision to report.
        Ok(Response::new(pb::RangeResponse::default()))
    }
    async fn put(&self, _: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        Ok(Response::new(pb::PutResponse {
            header: Some(pb::ResponseHeader {
                revision: -5,
                ..Default::default()
            }),
            prev_kv: None,
        }))
    }
    async fn delete_range(
        &self,
        _: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        Err(Status::internal(
            "failed to decode Protobuf message: buffer underflow",
        ))
    }
    async fn txn(&self, _: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        Ok(Response::new(pb::TxnResponse {
            header: Some(pb::ResponseHeader {
                revision: 9,
                ..Default::default()
            }),
            succeeded: true,
            responses: vec![pb::ResponseOp { response: None }],
        }))
    }
    async fn compact(
        &self,
        _: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        // Never answers: the client's deadline must end the call.
        std::future::pending().await
    }
}

#[tonic::async_trait]
impl pb::lease_server::Lease for Liar {
    async fn lease_grant(
        &self,
        _: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        Ok(Response::new(pb::LeaseGrantResponse {
            header: Some(pb::ResponseHeader {
                revision: 1,
                ..Default::default()
            }),
            id: 0,
            ttl: 0,
            error: String::new(),
        }))
    }
    async fn lease_revoke(
        &self,
        _: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        Ok(Response::new(pb::LeaseRevokeResponse::default()))
    }
    type LeaseKeepAliveStream = S<pb::LeaseKeepAliveResponse>;
    async fn lease_keep_alive(
        &self,
        _: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        // Ends the stream without an answer.
        Ok(Response::new(Box::pin(futures_util::stream::empty())))
    }
    async fn lease_time_to_live(
        &self,
        _: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            ttl: -1,
            ..Default::default()
        }))
    }
    async fn lease_leases(
        &self,
        _: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        Ok(Response::new(pb::LeaseLeasesResponse::default()))
    }
}

#[tonic::async_trait]
impl pb::watch_server::Watch for Liar {
    type WatchStream = S<pb::WatchResponse>;
    async fn watch(
        &self,
        _: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let header = Some(pb::ResponseHeader {
            revision: 10,
            ..Default::default()
        });
        let ev = |rev: i64| mvccpb::Event {
            r#type: 0,
            kv: Some(mvccpb::KeyValue {
                key: b"k".to_vec(),
                mod_revision: rev,
                ..Default::default()
            }),
            prev_kv: None,
        };
        let answers = vec![
            Ok(pb::WatchResponse {
                header,
                created: true,
                ..Default::default()
            }),
            // Events out of order within one answer.
            Ok(pb::WatchResponse {
                header,
                events: vec![ev(12), ev(11)],
                ..Default::default()
            }),
        ];
        Ok(Response::new(Box::pin(
            futures_util::stream::iter(answers).chain(futures_util::stream::pending()),
        )))
    }
}

use futures_util::StreamExt;

async fn serve_liar() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::kv_server::KvServer::new(Liar))
            .add_service(pb::lease_server::LeaseServer::new(Liar))
            .add_service(pb::watch_server::WatchServer::new(Liar))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    format!("http://{addr}")
}

fn quick(endpoint: &str) -> Client {
    Client::new(
        &[endpoint],
        ClientOptions {
            call_timeout: Duration::from_millis(800),
            attempt_timeout: Duration::from_millis(400),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_are_protocol_errors() {
    let c = quick(&serve_liar().await);
    assert!(
        matches!(c.get("k").await, Err(Error::Protocol { .. })),
        "range without a header"
    );
    assert!(
        matches!(c.put("k", "v", None).await, Err(Error::Protocol { .. })),
        "negative revision"
    );
    assert!(
        matches!(
            c.txn(hastack_coord::Txn::new()).await,
            Err(Error::Protocol { .. })
        ),
        "empty op result"
    );
    assert!(
        matches!(
            c.grant(Duration::from_secs(5)).await,
            Err(Error::Protocol { .. })
        ),
        "lease id 0"
    );
    let e = c.delete("k").await.unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    let e = c.keep_alive_once(1).await.unwrap_err();
    assert_eq!(e.retry(), Retry::IfIdempotent, "{e:?}");
    // Silence: the deadline ends the call, as a write whose outcome is unknown.
    let started = tokio::time::Instant::now();
    let e = c.compact(5).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the deadline held"
    );
    assert_eq!(e.retry(), Retry::IfIdempotent, "{e:?}");
    // A watch whose events go back in revision.
    let mut w = c.watch(WatchSpec::key("k")).await.unwrap();
    match w.next().await {
        Err(Error::Protocol { what, .. }) => assert!(what.contains("out of order"), "{what}"),
        other => panic!("{other:?}"),
    }
}

/// Not a gRPC server at all: garbage bytes, then a server that accepts and never speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_silence_end_within_the_deadline() {
    let garbage = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gaddr = garbage.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = garbage.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello\xff\xfe\x00garbage",
                    )
                    .await;
            });
        }
    });
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let saddr = silent.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = silent.accept().await {
            h.lock().push(s); // keep it open, say nothing
        }
    });
    for addr in [gaddr, saddr] {
        let c = quick(&format!("http://{addr}"));
        let started = tokio::time::Instant::now();
        let e = c.get("k").await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{addr}: no deadline"
        );
        assert_ne!(e.retry(), Retry::No, "{addr}: {e:?}");
        let e = c.put("k", "v", None).await.unwrap_err();
        assert_ne!(e.retry(), Retry::No, "{addr}: {e:?}");
    }
}

async fn small_server(max_leases: usize, max_watchers: usize) -> (server::Running, Client) {
    let cfg = ServerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        max_leases,
        max_watchers,
        ..ServerConfig::default()
    };
    let s = server::start(
        &cfg,
        Storage::Memory,
        Arc::new(Mutex::new(Registry::default())),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let c = Client::new(&[s.endpoint()], ClientOptions::default()).unwrap();
    (s, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_and_watch_floods_hit_named_limits() {
    let (s, c) = small_server(20, 30).await;
    for _ in 0..20 {
        c.grant(Duration::from_secs(60)).await.unwrap();
    }
    match c.grant(Duration::from_secs(60)).await {
        Err(e @ Error::Rejected { .. }) => assert!(e.to_string().contains("max_leases"), "{e}"),
        other => panic!("21st lease: {other:?}"),
    }
    let mut watches = Vec::new();
    for i in 0..30 {
        watches.push(c.watch(WatchSpec::key(format!("k{i}"))).await.unwrap());
    }
    match c.watch(WatchSpec::key("one-too-many")).await {
        Err(Error::WatchCanceled(reason)) => assert!(reason.contains("max_watchers"), "{reason}"),
        other => panic!("31st watch: {other:?}"),
    }
    // Closing watches frees their places.
    watches.truncate(10);
    common::eventually(
        Duration::from_secs(10),
        "a watcher place is free again",
        || {
            let c = c.clone();
            async move { c.watch(WatchSpec::key("again")).await.ok().map(|_| ()) }
        },
    )
    .await;
    s.stop().await.unwrap();
}
