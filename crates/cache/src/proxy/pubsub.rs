//! Pub/sub connections: after `SUBSCRIBE` or `PSUBSCRIBE` a client connection is pinned to
//! its own connection to the pub/sub shard's master, and messages flow through as frames.
//!
//! Only the pub/sub commands, `PING` and `QUIT` pass; anything else is answered with an
//! error and the connection is closed (forwarding it would run it unfiltered on the master
//! once the client has unsubscribed from everything). Buffers are bounded both ways: when
//! the client stops reading, the proxy stops reading the master, and Redis's own pub/sub
//! output limit takes over.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::Worker;
use super::backend::connect;
use super::metrics::Disconnect;
use crate::resp::{Request, RequestParser, Scanner};
use crate::route;

/// Commands a pub/sub connection may send.
const ALLOWED: [&[u8]; 6] = [
    b"SUBSCRIBE",
    b"PSUBSCRIBE",
    b"UNSUBSCRIBE",
    b"PUNSUBSCRIBE",
    b"PING",
    b"QUIT",
];

/// Stop reading one side while this much waits for the other.
const HIGH_WATER: usize = 256 * 1024;

/// Run the pinned connection until either side closes.
pub async fn tunnel(mut client: TcpStream, worker: &Worker, first: Request, mut inbuf: BytesMut) {
    let shared = &worker.shared;
    let shard = shared.spec.pubsub_shard;
    let Some(master) = shared.shards.get(shard).map(|s| s.master.clone()) else {
        return;
    };
    let name = shared.shard_name(shard).to_string();
    if !master.usable() {
        let _ = client.write_all(&route::unavailable(&name)).await;
        return;
    }
    let mut backend = match connect(&master, &worker.backend_config).await {
        Ok(s) => s,
        Err(failure) => {
            debug!(?failure, "pub/sub connect failed");
            let _ = client.write_all(&route::unavailable(&name)).await;
            return;
        }
    };
    let limits = shared.spec.limits;
    let mut to_backend = BytesMut::from(&first.frame[..]);
    let mut to_client = BytesMut::new();
    let mut from_backend = BytesMut::with_capacity(16 * 1024);
    let mut parser = RequestParser::new();
    let mut scanner = Scanner::new();
    let mut closing = false;
    let mut backend_done = false;
    let shutdown = shared.shutdown.clone();
    let (mut crd, mut cwr) = client.split();
    let (mut brd, mut bwr) = backend.split();
    loop {
        while !closing {
            match parser.parse(&mut inbuf, &limits.request) {
                Ok(Some(req)) => {
                    if ALLOWED.iter().any(|a| req.name().eq_ignore_ascii_case(a)) {
                        to_backend.extend_from_slice(&req.frame);
                    } else {
                        to_client.extend_from_slice(&route::error(&format!(
                            "ERR '{}' is not allowed on a pub/sub connection through hastack cache proxy: only (P)SUBSCRIBE, (P)UNSUBSCRIBE, PING and QUIT",
                            String::from_utf8_lossy(req.name())
                        )));
                        closing = true;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    shared.metrics.disconnect(Disconnect::protocol_error);
                    to_client.extend_from_slice(&e.to_reply());
                    closing = true;
                }
            }
        }
        loop {
            match scanner.scan(&from_backend, &limits.reply) {
                Ok(Some(len)) => to_client.extend_from_slice(&from_backend.split_to(len)),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if closing && to_client.is_empty() {
            let _ = cwr.shutdown().await;
            return;
        }
        tokio::select! {
            r = cwr.write(&to_client), if !to_client.is_empty() => match r {
                Ok(n) if n > 0 => to_client.advance(n),
                _ => return,
            },
            r = bwr.write(&to_backend), if !to_backend.is_empty() => match r {
                Ok(n) if n > 0 => to_backend.advance(n),
                _ => return,
            },
            r = crd.read_buf(&mut inbuf), if !closing && to_backend.len() < HIGH_WATER => match r {
                Ok(n) if n > 0 => {}
                _ => return,
            },
            r = brd.read_buf(&mut from_backend), if !backend_done && to_client.len() < HIGH_WATER => match r {
                Ok(n) if n > 0 => {}
                // The master closed (QUIT, restart): flush what is owed, then close.
                _ => {
                    backend_done = true;
                    closing = true;
                }
            },
            () = shutdown.cancelled(), if !closing => closing = true,
        }
    }
}
