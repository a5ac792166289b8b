//! Outbound raft RPC: openraft's network factory and clients over a
//! [`Transport`], with the replication backoff and the log of each peer's
//! reachability (logged on change, not on every failed RPC).

use super::*;

/// openraft's network factory over a [`Transport`].
pub(crate) struct NetFactory {
    pub(crate) transport: Arc<dyn Transport>,
    /// First pause after an unreachable peer before replication retries
    /// (openraft defaults to 500 ms, slow for a pair that fails over in
    /// well under a second); doubles up to `backoff_max` while the peer
    /// stays unreachable, and starts over once it answers.
    pub(crate) backoff: Duration,
    pub(crate) backoff_max: Duration,
    /// Reachability of each peer, logged on change.
    pub(crate) peers: Arc<PeerLog>,
}

/// openraft's client towards one voter.
pub(crate) struct NetClient {
    target: NodeId,
    transport: Arc<dyn Transport>,
    backoff: Duration,
    backoff_max: Duration,
    peers: Arc<PeerLog>,
}

impl RaftNetworkFactory<TypeConfig> for NetFactory {
    type Network = NetClient;

    async fn new_client(&mut self, target: NodeId, _node: &EmptyNode) -> NetClient {
        NetClient {
            target,
            transport: self.transport.clone(),
            backoff: self.backoff,
            backoff_max: self.backoff_max,
            peers: self.peers.clone(),
        }
    }
}

/// Consecutive failed RPCs to a peer before it is logged as unreachable
/// (one slow answer on a loaded machine is not worth a line).
const FAILURES_BEFORE_LOG: u64 = 3;

/// Each peer's reachability as seen by this node's RPCs, logged only when
/// it changes: openraft itself logs an error for every failed RPC (every
/// replication retry and every vote request to a dead or frozen peer).
#[derive(Debug, Default)]
pub(crate) struct PeerLog {
    /// Peers whose last RPCs failed: since when and how many.
    failing: std::sync::Mutex<std::collections::BTreeMap<NodeId, (tokio::time::Instant, u64)>>,
}

impl PeerLog {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<NodeId, (tokio::time::Instant, u64)>>
    {
        self.failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn answered(&self, peer: NodeId) {
        let Some((since, failures)) = self.lock().remove(&peer) else {
            return;
        };
        if failures >= FAILURES_BEFORE_LOG {
            tracing::info!(
                peer,
                failures,
                after = ?since.elapsed(),
                "raft peer answers again"
            );
        }
    }

    fn failed(&self, peer: NodeId, error: &CallError) {
        let mut failing = self.lock();
        let (since, failures) = failing
            .entry(peer)
            .or_insert((tokio::time::Instant::now(), 0));
        *failures += 1;
        if *failures == FAILURES_BEFORE_LOG {
            tracing::warn!(
                peer,
                %error,
                since = ?since.elapsed(),
                "raft peer does not answer (logged again when it does)"
            );
        }
    }
}

fn rpc_error<E: std::error::Error>(e: CallError) -> RPCError<NodeId, EmptyNode, E> {
    match e {
        CallError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Timeout | CallError::Protocol(_) => RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected(what: &str, reply: &Reply) -> CallError {
    match reply {
        Reply::Failed(msg) => CallError::Protocol(format!("{what}: remote error: {msg}")),
        other => CallError::Protocol(format!("{what}: unexpected reply {other:?}")),
    }
}

impl NetClient {
    async fn call(&self, rpc: Rpc, timeout: Duration) -> Result<Reply, CallError> {
        let res = self.transport.call(self.target, rpc, timeout).await;
        match &res {
            Ok(_) => self.peers.answered(self.target),
            Err(e) => self.peers.failed(self.target, e),
        }
        res
    }
}

impl RaftNetwork<TypeConfig> for NetClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, EmptyNode, OpenraftError<NodeId>>>
    {
        match self.call(Rpc::Append(rpc), option.hard_ttl()).await {
            Ok(Reply::Append(r)) => Ok(r),
            Ok(other) => Err(rpc_error(unexpected("append", &other))),
            Err(e) => Err(rpc_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, EmptyNode, OpenraftError<NodeId, InstallSnapshotError>>,
    > {
        // Never called: `full_snapshot` below sends snapshots whole.
        Err(RPCError::Network(NetworkError::new(&AnyError::error(
            "chunked snapshots are not used; see full_snapshot",
        ))))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, EmptyNode, OpenraftError<NodeId>>> {
        match self.call(Rpc::Vote(rpc), option.hard_ttl()).await {
            Ok(Reply::Vote(r)) => Ok(r),
            Ok(other) => Err(rpc_error(unexpected("vote", &other))),
            Err(e) => Err(rpc_error(e)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, openraft::error::Fatal<NodeId>>>
    {
        let rpc = Rpc::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        let res = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            res = self.call(rpc, option.hard_ttl()) => res,
        };
        match res {
            Ok(Reply::Snapshot(r)) => Ok(r),
            Ok(other) => Err(StreamingError::Network(NetworkError::new(&unexpected(
                "snapshot", &other,
            )))),
            Err(e @ CallError::Unreachable(_)) => {
                Err(StreamingError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => Err(StreamingError::Network(NetworkError::new(&e))),
        }
    }

    fn backoff(&self) -> Backoff {
        let max = self.backoff_max.max(self.backoff);
        Backoff::new(std::iter::successors(Some(self.backoff), move |d| {
            Some((*d * 2).min(max))
        }))
    }
}
