//! Test harness: a pair group (members 1, 2 and witness 3) on the
//! in-process router, with tempdir stores, condition waits on the view
//! channels, and a monitor that checks "at most one valid lease" every
//! millisecond for the whole test.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use raft::router::Router;
use raft::Lease;
use raft::NodeId;
use raft::Pair;
use raft::PairConfig;
use raft::Peer;
use raft::RoleView;
use raft::Timing;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Generous: a loaded CI machine may need several elections.
pub const SETTLE: Duration = Duration::from_secs(20);

pub fn peers() -> BTreeMap<NodeId, Peer> {
    [1, 2, 3]
        .into_iter()
        .map(|id| {
            (
                id,
                Peer {
                    name: format!("n{id}"),
                    host: "127.0.0.1".into(),
                    raft_port: 7000 + id as u16,
                },
            )
        })
        .collect()
}

pub struct Running {
    pub pair: Pair,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

/// Every lease any incarnation of any node ever had, checked continuously:
/// never two valid at once, and none valid before `peer_grant_after` has
/// passed since another one ended (the bound `Lease::ended_at` documents
/// for hooks that outlive the role).
#[derive(Clone, Default)]
pub struct Monitor {
    leases: Arc<Mutex<Vec<(NodeId, Lease)>>>,
    violation: Arc<Mutex<Option<String>>>,
}

impl Monitor {
    fn start(&self, timing: &Timing) {
        let m = self.clone();
        let after = timing.peer_grant_after();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            // Ends with the test's runtime.
            loop {
                tick.tick().await;
                let leases = m.leases.lock().expect("lock").clone();
                let valid: Vec<NodeId> = leases
                    .iter()
                    .filter(|(_, l)| l.is_valid())
                    .map(|(id, _)| *id)
                    .collect();
                if valid.len() > 1 {
                    *m.violation.lock().expect("lock") =
                        Some(format!("leases valid at once: {valid:?}"));
                }
                let now = Instant::now();
                // Against every other lease, a restarted node's earlier
                // process included.
                for (i, (holder, _)) in leases.iter().enumerate().filter(|(_, (_, l))| l.is_valid())
                {
                    for (j, (id, other)) in leases.iter().enumerate() {
                        let Some(ended) = other.ended_at().filter(|_| i != j) else {
                            continue;
                        };
                        if ended + after > now {
                            *m.violation.lock().expect("lock") = Some(format!(
                                "{holder} holds a lease {:?} after {id}'s ended, \
                                 before the {after:?} bound",
                                now - ended
                            ));
                        }
                    }
                }
            }
        });
    }

    fn add(&self, id: NodeId, lease: Lease) {
        self.leases.lock().expect("lock").push((id, lease));
    }

    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(v) = self.violation.lock().expect("lock").clone() {
            bail!("split brain: {v}");
        }
        Ok(())
    }
}

pub struct Group {
    pub router: Router,
    root: tempfile::TempDir,
    pub prefer: Option<NodeId>,
    pub timing: Timing,
    pub nodes: BTreeMap<NodeId, Running>,
    pub monitor: Monitor,
}

pub type Views = BTreeMap<NodeId, RoleView>;

impl Group {
    pub async fn start(prefer: Option<NodeId>) -> anyhow::Result<Group> {
        Self::start_with(prefer, Timing::default()).await
    }

    pub async fn start_with(prefer: Option<NodeId>, timing: Timing) -> anyhow::Result<Group> {
        Self::start_only(prefer, timing, &[1, 2, 3]).await
    }

    /// Starts only `ids`, from empty data directories.
    pub async fn start_only(
        prefer: Option<NodeId>,
        timing: Timing,
        ids: &[NodeId],
    ) -> anyhow::Result<Group> {
        let monitor = Monitor::default();
        monitor.start(&timing);
        let mut g = Group {
            router: Router::new(),
            root: tempfile::tempdir()?,
            prefer,
            timing,
            nodes: BTreeMap::new(),
            monitor,
        };
        for &id in ids {
            g.start_node(id).await?;
        }
        Ok(g)
    }

    /// Where node `id` keeps its raft store.
    pub fn data_dir(&self, id: NodeId) -> std::path::PathBuf {
        self.root.path().join(format!("n{id}"))
    }

    /// Loses node `id`'s whole raft store (a replaced disk); the node must
    /// be stopped.
    pub fn wipe(&self, id: NodeId) -> anyhow::Result<()> {
        anyhow::ensure!(!self.nodes.contains_key(&id), "node {id} is running");
        std::fs::remove_dir_all(self.data_dir(id)).context("wipe")?;
        Ok(())
    }

    pub async fn start_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let cfg = PairConfig {
            mesh: "test".into(),
            node: "pair".into(),
            me: id,
            peers: peers(),
            data_dir: self.data_dir(id),
            prefer: self.prefer,
            timing: self.timing.clone(),
            tls: None,
        };
        let cancel = CancellationToken::new();
        let (pair, handle) =
            Pair::start_with_transport(cfg, self.router.transport(id), cancel.clone())
                .await
                .with_context(|| format!("start node {id}"))?;
        self.monitor.add(id, pair.lease());
        self.nodes.insert(
            id,
            Running {
                pair,
                cancel,
                handle,
            },
        );
        Ok(())
    }

    /// Stops a node's task (like a crash: nothing is released) and waits
    /// until openraft and its listener are down.
    pub async fn stop_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        let n = self.nodes.remove(&id).context("node not running")?;
        n.cancel.cancel();
        tokio::time::timeout(SETTLE, n.handle)
            .await
            .context("node did not stop")??;
        assert!(!n.pair.lease().is_valid(), "a stopped node holds no lease");
        Ok(())
    }

    pub fn pair(&self, id: NodeId) -> &Pair {
        &self.nodes[&id].pair
    }

    /// Waits until `cond` holds over the views of the running nodes,
    /// re-checking on every view change, for at most `within`.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        cond: impl Fn(&Views) -> bool,
    ) -> anyhow::Result<Views> {
        let rxs = self
            .nodes
            .iter()
            .map(|(id, n)| (*id, n.pair.view()))
            .collect();
        let views = wait_views(rxs, what, within, cond).await?;
        self.monitor.check()?;
        Ok(views)
    }

    /// Waits until exactly one member is active and every running node
    /// agrees on who and at which epoch. Returns (active, epoch).
    pub async fn settled(&self) -> anyhow::Result<(NodeId, u64)> {
        let views = self.wait_for("one agreed active", SETTLE, stable).await?;
        let v = views.values().next().context("no node running")?;
        let active = v.active.context("no active")?;
        Ok((active, v.epoch))
    }
}

/// Exactly one member holds the role with a valid lease, the witness never
/// does, and all running nodes agree on the active and the epoch.
pub fn stable(views: &Views) -> bool {
    let actives: Vec<NodeId> = views
        .iter()
        .filter(|(_, v)| v.me_active)
        .map(|(id, _)| *id)
        .collect();
    let [active] = actives[..] else {
        return false;
    };
    assert_ne!(active, 3, "the witness is never active");
    views
        .values()
        .all(|v| v.active == Some(active) && v.epoch == views[&active].epoch)
}

/// Waits until `cond` holds over the given views, re-checking on every
/// change of any of them, for at most `within`.
pub async fn wait_views(
    mut rxs: Vec<(NodeId, watch::Receiver<RoleView>)>,
    what: &str,
    within: Duration,
    cond: impl Fn(&Views) -> bool,
) -> anyhow::Result<Views> {
    let deadline = Instant::now() + within;
    loop {
        let views: Views = rxs
            .iter_mut()
            .map(|(id, rx)| (*id, rx.borrow_and_update().clone()))
            .collect();
        if cond(&views) {
            return Ok(views);
        }
        let changed =
            futures::future::select_all(rxs.iter_mut().map(|(_, rx)| Box::pin(rx.changed())));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            bail!("timed out waiting for {what}; views: {views:#?}");
        }
    }
}
