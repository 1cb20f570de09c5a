//! TCP driver: connect, write a request, read the answer, close. One connection per request,
//! so every request also exercises connection setup (what an L4 balancer fails over).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http::io_outcome;
use super::{BoxFuture, CallError, Driver};
use crate::record::Outcome;

/// Largest answer read.
pub const MAX_ANSWER: usize = 64 * 1024;

/// What counts as a good answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpExpect {
    /// The same bytes as sent (an echo server).
    Echo,
    /// A line (up to `\n`) starting with these bytes.
    LinePrefix(Bytes),
}

/// The TCP driver.
#[derive(Debug, Clone)]
pub struct TcpDriver {
    /// Bytes to send.
    pub send: Bytes,
    /// What to expect back.
    pub expect: TcpExpect,
    /// Connect timeout per address.
    pub connect_timeout: Duration,
}

impl Driver for TcpDriver {
    fn call(&self, target: SocketAddr) -> BoxFuture<'_, Result<(), CallError>> {
        Box::pin(async move {
            let mut s = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(target))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(CallError::connect(io_outcome(&e, true))),
                Err(_) => return Err(CallError::connect(Outcome::ConnectTimeout)),
            };
            let _ = s.set_nodelay(true);
            s.write_all(&self.send)
                .await
                .map_err(|e| CallError::after(io_outcome(&e, false)))?;
            let mut got = Vec::with_capacity(self.send.len().max(64));
            let mut buf = [0u8; 4096];
            loop {
                let done = match &self.expect {
                    TcpExpect::Echo => got.len() >= self.send.len(),
                    TcpExpect::LinePrefix(_) => got.contains(&b'\n'),
                };
                if done {
                    break;
                }
                let n = s
                    .read(&mut buf)
                    .await
                    .map_err(|e| CallError::after(io_outcome(&e, false)))?;
                if n == 0 {
                    return Err(CallError::after(Outcome::Closed));
                }
                got.extend_from_slice(&buf[..n]);
                if got.len() > MAX_ANSWER {
                    return Err(CallError::after(Outcome::BadResponse));
                }
            }
            let ok = match &self.expect {
                TcpExpect::Echo => got.get(..self.send.len()) == Some(&self.send[..]),
                TcpExpect::LinePrefix(p) => got.starts_with(p),
            };
            if ok {
                Ok(())
            } else {
                Err(CallError::after(Outcome::BadResponse))
            }
        })
    }
}
