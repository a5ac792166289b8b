//! An in-process [`Transport`] for tests: every node of a group registers
//! with one [`Router`], which delivers RPCs by calling the target's
//! [`Inbound`] directly, and injects faults on command: isolate a node,
//! cut a link, freeze a node, delay every message.
//!
//! Messages are round-tripped through serde_json on the way, so tests also
//! exercise the wire types. A dropped message fails at once as unreachable
//! (as a refused connection would) rather than after a timeout; a message
//! to or from a frozen node is never answered and fails only when the
//! caller's timeout runs out (as with a SIGSTOPped process, whose
//! connections stay open).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::CallError;
use crate::error::RaftError;
use crate::network::Inbound;
use crate::network::Reply;
use crate::network::Rpc;
use crate::network::Transport;
use crate::types::NodeId;

#[derive(Debug, Default)]
struct RouterState {
    /// Running nodes, with a registration number so that a node that
    /// restarted is not unregistered by its previous incarnation.
    nodes: BTreeMap<NodeId, (u64, Inbound)>,
    next_registration: u64,
    /// Nodes cut off from everyone.
    isolated: BTreeSet<NodeId>,
    /// Links cut in both directions, stored as (low, high).
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Nodes whose messages, both ways, hang until the caller gives up.
    frozen: BTreeSet<NodeId>,
    /// Added before delivering every message.
    delay: Duration,
}

/// The in-process network of one test group. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Router {
    state: Arc<Mutex<RouterState>>,
}

fn link(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl Router {
    /// A router with every link up.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The transport node `me` should be started with.
    pub fn transport(&self, me: NodeId) -> Arc<dyn Transport> {
        Arc::new(RouterTransport {
            me,
            router: self.clone(),
        })
    }

    /// Drops every message to and from `id` until [`Router::rejoin`] or
    /// [`Router::heal`].
    pub fn isolate(&self, id: NodeId) {
        self.lock().isolated.insert(id);
    }

    /// Ends the isolation of `id` (cut links stay cut).
    pub fn rejoin(&self, id: NodeId) {
        self.lock().isolated.remove(&id);
    }

    /// Drops every message between `a` and `b`, both ways.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.lock().cut.insert(link(a, b));
    }

    /// Restores the link between `a` and `b` (other faults stay).
    pub fn mend(&self, a: NodeId, b: NodeId) {
        self.lock().cut.remove(&link(a, b));
    }

    /// Freezes `id` as seen from the others: every message to or from it
    /// hangs without an error until the caller's timeout, like a stopped
    /// process whose connections stay open. The node's own tasks keep
    /// running (its lease runs out, its proposals never commit).
    pub fn freeze(&self, id: NodeId) {
        self.lock().frozen.insert(id);
    }

    /// Ends the freeze of `id`.
    pub fn thaw(&self, id: NodeId) {
        self.lock().frozen.remove(&id);
    }

    /// Restores every link, isolated and frozen node, and removes the delay.
    pub fn heal(&self) {
        let mut s = self.lock();
        s.isolated.clear();
        s.cut.clear();
        s.frozen.clear();
        s.delay = Duration::ZERO;
    }

    /// Delays every message by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    fn frozen(&self, a: NodeId, b: NodeId) -> bool {
        let s = self.lock();
        s.frozen.contains(&a) || s.frozen.contains(&b)
    }

    fn reachable(&self, from: NodeId, to: NodeId) -> bool {
        let s = self.lock();
        !s.isolated.contains(&from) && !s.isolated.contains(&to) && !s.cut.contains(&link(from, to))
    }
}

#[derive(Debug)]
struct RouterTransport {
    me: NodeId,
    router: Router,
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> Result<T, CallError> {
    let bytes = serde_json::to_vec(v).map_err(|e| CallError::Protocol(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| CallError::Protocol(e.to_string()))
}

impl Transport for RouterTransport {
    fn serve(
        &self,
        inbound: Inbound,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<JoinHandle<()>, RaftError>> {
        let me = self.me;
        let router = self.router.clone();
        Box::pin(async move {
            let registration = {
                let mut s = router.lock();
                s.next_registration += 1;
                let r = s.next_registration;
                s.nodes.insert(me, (r, inbound));
                r
            };
            Ok(tokio::spawn(async move {
                cancel.cancelled().await;
                let mut s = router.lock();
                if s.nodes.get(&me).is_some_and(|(r, _)| *r == registration) {
                    s.nodes.remove(&me);
                }
            }))
        })
    }

    fn call(
        &self,
        to: NodeId,
        rpc: Rpc,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Reply, CallError>> {
        let me = self.me;
        let router = self.router.clone();
        Box::pin(async move {
            let attempt = async {
                let delay = router.lock().delay;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if router.frozen(me, to) {
                    std::future::pending::<()>().await;
                }
                if !router.reachable(me, to) {
                    return Err(CallError::Unreachable(format!("router drops {me} -> {to}")));
                }
                let inbound = router.lock().nodes.get(&to).map(|(_, i)| i.clone());
                let Some(inbound) = inbound else {
                    return Err(CallError::Unreachable(format!("voter {to} is not running")));
                };
                let reply = inbound.handle(me, round_trip(&rpc)?).await;
                if router.frozen(me, to) {
                    std::future::pending::<()>().await;
                }
                if !router.reachable(me, to) {
                    return Err(CallError::Unreachable(format!("router drops {to} -> {me}")));
                }
                round_trip(&reply)
            };
            tokio::time::timeout(timeout, attempt)
                .await
                .unwrap_or(Err(CallError::Timeout))
        })
    }
}
