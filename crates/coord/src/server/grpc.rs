//! The etcd v3 gRPC services of the embedded store: KV, Lease, Watch, and the parts of
//! Maintenance and Cluster that `etcdctl endpoint status` / `member list` use.
//!
//! Each handler decodes (tonic/prost did that), checks size, turns the request into an
//! [`Op`] for the driver and the answer back into etcd's response with its header. Nothing
//! here decides anything: the store does.

use std::pin::Pin;

use futures_util::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::ServeError;
use super::core::Core;
use super::store::{Op, OpResult};
use crate::proto::etcdserverpb as pb;

/// The version string `Maintenance.Status` reports: etcd's API level, marked as ours.
pub const VERSION: &str = "3.4.0-hastack";

/// Shared state of every service.
#[derive(Debug, Clone)]
pub struct Services {
    pub(super) core: Core,
    pub(super) max_request_bytes: usize,
    pub(super) client_url: String,
    pub(super) watch: super::watch::WatchLimits,
    pub(super) db_path: Option<std::path::PathBuf>,
}

impl Services {
    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        let id = self.core.identity();
        Some(pb::ResponseHeader {
            cluster_id: id.cluster_id,
            member_id: id.member_id,
            revision,
            raft_term: 1,
        })
    }

    fn check_size(&self, len: usize) -> Result<(), Status> {
        if len > self.max_request_bytes {
            return Err(ServeError::RequestTooLarge.status());
        }
        Ok(())
    }

    async fn call(&self, op: Op) -> Result<(OpResult, i64), Status> {
        self.core.call(op).await.map_err(|e| e.status())
    }
}

fn unexpected() -> Status {
    Status::internal("hastack coord: the store answered a different request kind")
}

#[tonic::async_trait]
impl pb::kv_server::Kv for Services {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let req = req.into_inner();
        self.check_size(req.encoded_len())?;
        match self.call(Op::Range(req)).await? {
            (OpResult::Range(mut r), rev) => {
                r.header = self.header(rev);
                Ok(Response::new(r))
            }
            _ => Err(unexpected()),
        }
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let req = req.into_inner();
        self.check_size(req.encoded_len())?;
        match self.call(Op::Put(req)).await? {
            (OpResult::Put(mut r), rev) => {
                r.header = self.header(rev);
                Ok(Response::new(r))
            }
            _ => Err(unexpected()),
        }
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let req = req.into_inner();
        self.check_size(req.encoded_len())?;
        match self.call(Op::Delete(req)).await? {
            (OpResult::Delete(mut r), rev) => {
                r.header = self.header(rev);
                Ok(Response::new(r))
            }
            _ => Err(unexpected()),
        }
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let req = req.into_inner();
        self.check_size(req.encoded_len())?;
        match self.call(Op::Txn(req)).await? {
            (OpResult::Txn(mut r), rev) => {
                r.header = self.header(rev);
                Ok(Response::new(r))
            }
            _ => Err(unexpected()),
        }
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let req = req.into_inner();
        match self.call(Op::Compact(req.revision)).await? {
            (OpResult::Compacted, rev) => Ok(Response::new(pb::CompactionResponse {
                header: self.header(rev),
            })),
            _ => Err(unexpected()),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::lease_server::Lease for Services {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let req = req.into_inner();
        match self
            .call(Op::Grant {
                id: req.id,
                ttl: req.ttl,
            })
            .await?
        {
            (OpResult::Granted { id, ttl }, rev) => Ok(Response::new(pb::LeaseGrantResponse {
                header: self.header(rev),
                id,
                ttl,
                error: String::new(),
            })),
            _ => Err(unexpected()),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        match self.call(Op::Revoke(req.into_inner().id)).await? {
            (OpResult::Revoked(_), rev) => Ok(Response::new(pb::LeaseRevokeResponse {
                header: self.header(rev),
            })),
            _ => Err(unexpected()),
        }
    }

    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            // One renewal at a time per stream, in order; a client that stops reading stalls
            // only its own stream (the channel is bounded).
            while let Ok(Some(r)) = inbound.message().await {
                let answer = match this.call(Op::KeepAlive(r.id)).await {
                    Ok((OpResult::KeptAlive(ttl), rev)) => Ok(pb::LeaseKeepAliveResponse {
                        header: this.header(rev),
                        id: r.id,
                        ttl: ttl.unwrap_or(0),
                    }),
                    Ok(_) => Err(unexpected()),
                    Err(e) => Err(e),
                };
                let stop = answer.is_err();
                if tx.send(answer).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        match self
            .call(Op::TimeToLive {
                id: req.id,
                keys: req.keys,
            })
            .await?
        {
            (OpResult::TimeToLive { ttl, granted, keys }, rev) => {
                Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header: self.header(rev),
                    id: req.id,
                    ttl,
                    granted_ttl: granted,
                    keys,
                }))
            }
            _ => Err(unexpected()),
        }
    }

    async fn lease_leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        match self.call(Op::Leases).await? {
            (OpResult::Leases(ids), rev) => Ok(Response::new(pb::LeaseLeasesResponse {
                header: self.header(rev),
                leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
            })),
            _ => Err(unexpected()),
        }
    }
}

#[tonic::async_trait]
impl pb::watch_server::Watch for Services {
    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let rx = super::watch::spawn_stream(self.clone(), req.into_inner());
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl Services {
    /// The header for watch responses.
    pub(super) fn watch_header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        self.header(revision)
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Services {
    async fn alarm(
        &self,
        _req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        // No quota, no corruption check: there is never an alarm to report or clear.
        let rev = self.core.revs().borrow().revision;
        Ok(Response::new(pb::AlarmResponse {
            header: self.header(rev),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let rev = self.core.revs().borrow().revision;
        let db_size = self
            .db_path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| i64::try_from(m.len()).unwrap_or(i64::MAX));
        let id = self.core.identity();
        Ok(Response::new(pb::StatusResponse {
            header: self.header(rev),
            version: VERSION.to_string(),
            db_size,
            leader: id.member_id,
            raft_index: rev as u64,
            raft_term: 1,
            raft_applied_index: rev as u64,
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: 0,
            downgrade_info: None,
        }))
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for Services {
    async fn member_list(
        &self,
        _req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let id = self.core.identity();
        let rev = self.core.revs().borrow().revision;
        Ok(Response::new(pb::MemberListResponse {
            header: self.header(rev),
            members: vec![pb::Member {
                id: id.member_id,
                name: "hastack-coord".into(),
                peer_ur_ls: Vec::new(),
                client_ur_ls: vec![self.client_url.clone()],
                is_learner: false,
            }],
        }))
    }
}
