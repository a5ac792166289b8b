//! Booting a member: the node it runs, resolved once from the topology;
//! its streams; and where its role comes from (constant for a single node,
//! the pair's raft group and lease for an HA pair), with the fence every
//! side effect checks.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use topology::{Endpoint, Node, Topology};

use super::publisher::Fence;
use super::RoleState;
use crate::natsconf::{self, Role};

/// The node and member a process runs, resolved once: every later step
/// takes these, never names to look up again.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The loaded topology.
    pub topo: Arc<Topology>,
    /// The node this process runs.
    pub node: Node,
    /// The member name.
    pub member: String,
    /// The member's endpoint (host and ports).
    pub endpoint: Endpoint,
}

impl Identity {
    /// Resolves `node` and `member` (default: the node's only member) in
    /// `topo`; says what exists when a name does not.
    pub fn resolve(
        topo: Arc<Topology>,
        node: &str,
        member: Option<&str>,
    ) -> anyhow::Result<Identity> {
        let n = topo
            .node(node)
            .with_context(|| format!("node {node:?} is not in {}", topo.file))?
            .clone();
        let names: Vec<&str> = n.members.iter().map(|m| m.name.as_str()).collect();
        let member = match member {
            Some(m) => m.to_owned(),
            None if n.members.len() == 1 => n.members[0].name.clone(),
            None => anyhow::bail!(
                "node {} has members {}: pass --member",
                n.id,
                names.join(", ")
            ),
        };
        let endpoint = natsconf::endpoint(&n, Role::Member(&member))
            .with_context(|| {
                format!(
                    "node {} has no member {member:?} (members: {})",
                    n.id,
                    names.join(", ")
                )
            })?
            .clone();
        Ok(Identity {
            topo,
            node: n,
            member,
            endpoint,
        })
    }

    /// The node's own origin, every descendant's and, for a node with
    /// `view = "tree"`, every other origin of the tree: one local stream
    /// each.
    pub fn origins(&self) -> Vec<String> {
        crate::streams::held_origins(&self.topo, &self.node.id)
    }
}

/// Creates the node's own stream and one replica per descendant origin
/// (and per origin outside its subtree, with `view = "tree"`),
/// waiting (up to a minute) for JetStream to answer after the port opens.
pub async fn streams(
    js: &jetstream::Context,
    id: &Identity,
    url: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let replicas = if id.node.is_pair() { 3 } else { 1 };
    let started = Instant::now();
    let mut last_note = Instant::now();
    loop {
        match setup_streams(js, &id.topo, &id.node, replicas).await {
            Ok(()) => return Ok(()),
            Err(e) if e.downcast_ref::<crate::streams::NoStorage>().is_some() => return Err(e),
            Err(e) if !cancel.is_cancelled() && started.elapsed() < Duration::from_secs(60) => {
                if last_note.elapsed() > Duration::from_secs(5) {
                    tracing::info!("waiting for JetStream at {url}: {e:#}");
                    last_note = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.context(format!("JetStream at {url} is not available"))),
        }
    }
}

async fn setup_streams(
    js: &jetstream::Context,
    topo: &Topology,
    node: &Node,
    replicas: usize,
) -> anyhow::Result<()> {
    crate::streams::ensure(js, crate::streams::own(topo, &node.id, replicas)).await?;
    for origin in crate::streams::held_origins(topo, &node.id).iter().skip(1) {
        crate::streams::ensure(
            js,
            crate::streams::replica(topo, &node.id, origin, replicas),
        )
        .await?;
    }
    Ok(())
}

/// The fence of one activation, not of the member: side effects of the
/// activation of epoch `e` are allowed only while the lease is valid *for
/// `e`*. A member that loses its lease and is granted the role again holds
/// a later epoch's lease while its old activation may still be stopping
/// (pullers cancelled, hooks running); nothing of the old activation may
/// take that lease for its own (found by the fault campaign, seed
/// 20261202: the old activation's life sign reached the PLC before the new
/// epoch was in the history). A single node has one lasting activation:
/// always allowed.
#[derive(Clone, Debug)]
pub struct EpochFence {
    lease: Option<raft::Lease>,
    /// The epoch of the activation that has the PLC in service (0: none).
    plc_epoch: Arc<AtomicU64>,
}

impl EpochFence {
    fn new(lease: Option<raft::Lease>) -> Self {
        EpochFence {
            lease,
            plc_epoch: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The fence of the activation of `epoch`.
    pub fn of(&self, epoch: u64) -> Fence {
        match &self.lease {
            Some(lease) => {
                let lease = lease.clone();
                Arc::new(move || lease.is_valid_for(epoch))
            }
            None => Arc::new(|| true),
        }
    }

    /// The PLC is in service for the activation of `epoch`: the poller's
    /// writes (life sign, commands) are fenced by that activation's lease.
    pub fn plc_on(&self, epoch: u64) {
        self.plc_epoch.store(epoch, Ordering::SeqCst);
    }

    /// The PLC is out of service: no write of any activation goes out,
    /// whatever the lease, until an activation takes it into service.
    pub fn plc_off(&self) {
        self.plc_epoch.store(0, Ordering::SeqCst);
    }

    /// What the poller checks right before each write: the lease is valid
    /// for the activation that has the PLC in service.
    fn plc_guard(&self) -> Fence {
        match &self.lease {
            Some(lease) => {
                let (lease, epoch) = (lease.clone(), self.plc_epoch.clone());
                Arc::new(move || lease.is_valid_for(epoch.load(Ordering::SeqCst)))
            }
            None => Arc::new(|| true),
        }
    }
}

/// Where the member's role comes from.
pub struct RoleSource {
    /// The role as the member acts on it.
    pub rx: watch::Receiver<RoleState>,
    /// True while the member may have side effects (its lease is valid;
    /// always for a single node). Checked right before each one.
    pub fence: Fence,
    /// How PLC writes are fenced: the lease of the activation that has the
    /// PLC in service ([`EpochFence::plc_on`]), and for a pair the lease's
    /// end, which bounds every write's deadline (see
    /// `adapters::poller::Fencing`).
    pub fencing: adapters::poller::Fencing,
    /// Each activation's own fence.
    pub epochs: EpochFence,
    /// For a pair: once the lease has ended, the earliest instant another
    /// member can have been granted the role (what bounds an
    /// `on_deactivate` hook). None for a single node.
    pub peer_grant: Option<super::hooks::GrantBound>,
    /// The pair's raft handle and task (None for a single node).
    pub pair: Option<(raft::Pair, JoinHandle<()>)>,
    /// A single node's constant role: the sender lives as long as the
    /// member (a dropped sender would end the member's role loop).
    pub constant: Option<watch::Sender<RoleState>>,
}

impl std::fmt::Debug for RoleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleSource")
            .field("role", &*self.rx.borrow())
            .field("pair", &self.pair.as_ref().map(|(p, _)| p))
            .finish()
    }
}

impl RoleSource {
    /// A single node: always active, at epoch 1, no fence to lose. A pair:
    /// starts this member's raft voter (its store under `data/raft`) and
    /// follows its view; the fence is the lease.
    pub async fn start(
        id: &Identity,
        opts: &super::Options,
        cancel: CancellationToken,
    ) -> anyhow::Result<RoleSource> {
        let data = &opts.data;
        let node = &id.node;
        let (tx, rx) = watch::channel(RoleState {
            me_active: !node.is_pair(),
            epoch: if node.is_pair() { 0 } else { 1 },
            active: (!node.is_pair()).then(|| id.member.clone()),
            changed_at: Instant::now(),
            maintenance: BTreeSet::new(),
            waiting: None,
        });
        if !node.is_pair() {
            let fence: Fence = Arc::new(|| true);
            return Ok(RoleSource {
                rx,
                fencing: fence.clone().into(),
                fence,
                epochs: EpochFence::new(None),
                peer_grant: None,
                pair: None,
                constant: Some(tx),
            });
        }
        let me = crate::ha::member_id(node, &id.member).context("member id")?;
        let tls = crate::ha::raft_tls(&id.topo, node, opts.key.as_deref())?;
        let cfg = crate::ha::pair_config(&id.topo, node, me, data, tls)?;
        let (pair, task) = raft::Pair::start(cfg, cancel)
            .await
            .map_err(|e| anyhow::anyhow!("starting the pair's raft group: {e}"))?;
        if opts.confirm_empty_raft_store {
            pair.confirm_empty_store();
        }
        let lease = pair.lease();
        tokio::spawn(follow_pair(pair.view(), node.clone(), tx));
        let fence: Fence = {
            let lease = lease.clone();
            Arc::new(move || lease.is_valid())
        };
        let timing = raft::Timing::default();
        let peer_grant: super::hooks::GrantBound = {
            let (lease, timing) = (lease.clone(), timing.clone());
            Arc::new(move || lease.ended_at().map(|e| timing.peer_grant_earliest(e)))
        };
        let epochs = EpochFence::new(Some(lease.clone()));
        let fencing = adapters::poller::Fencing {
            allowed: epochs.plc_guard(),
            until: Some(Arc::new(move || lease.deadline())),
            margin: timing.margin,
        };
        Ok(RoleSource {
            rx,
            fence,
            fencing,
            epochs,
            peer_grant: Some(peer_grant),
            pair: Some((pair, task)),
            constant: None,
        })
    }
}

/// Turns the pair's view into the member's [`RoleState`], waking the member
/// only when the role, the active member, the epoch, the members in
/// maintenance or the voter's wait change (health
/// reports change the view several times a second).
async fn follow_pair(
    mut view: watch::Receiver<raft::RoleView>,
    node: Node,
    role: watch::Sender<RoleState>,
) {
    loop {
        let v = view.borrow_and_update().clone();
        let active = v.active.map(|id| crate::ha::id_name(&node, id));
        let maintenance: BTreeSet<String> = v
            .maintenance
            .iter()
            .map(|&id| crate::ha::id_name(&node, id))
            .collect();
        role.send_if_modified(|r| {
            let moved = r.me_active != v.me_active || r.epoch != v.epoch || r.active != active;
            let changed = moved || r.maintenance != maintenance || r.waiting != v.waiting;
            if changed {
                *r = RoleState {
                    me_active: v.me_active,
                    epoch: v.epoch,
                    active: active.clone(),
                    changed_at: if moved { Instant::now() } else { r.changed_at },
                    maintenance: maintenance.clone(),
                    waiting: v.waiting.clone(),
                };
            }
            changed
        });
        if view.changed().await.is_err() {
            return;
        }
    }
}
