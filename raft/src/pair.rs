//! The pair task: one owner of this node's openraft instance, lease and
//! view, driven by ticks, applied-state changes, raft metrics, proposal
//! outcomes and commands from cheap [`Pair`] handles.
//!
//! Every turn it reads the applied state, renews the lease if this member
//! is active, proposes its health, asks [`decide`] what to do and carries
//! the actions out. Proposals run as spawned tasks whose outcomes come back
//! into the loop, so the loop never waits on the network and the lease
//! timer fires on time.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::ClientWriteError;
use openraft::error::InitializeError;
use openraft::error::RaftError as OpenraftError;
use openraft::EmptyNode;
use openraft::Raft;
use openraft::RaftMetrics;
use openraft::ServerState;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::decide::decide;
use crate::decide::Action;
use crate::decide::DecisionInput;
use crate::decide::MemberStatus;
use crate::decide::ReleaseReason;
use crate::error::CallError;
use crate::error::ProposeError;
use crate::error::RaftError;
use crate::lease::Lease;
use crate::metrics::Counters;
use crate::metrics::PairMetrics;
use crate::network::tcp::TcpTransport;
use crate::network::Inbound;
use crate::network::LeaderWatch;
use crate::network::NetFactory;
use crate::network::PeerLog;
use crate::network::Reply;
use crate::network::Rpc;
use crate::network::Transport;
use crate::peer::Peer;
use crate::store::Applied;
use crate::store::LogStore;
use crate::store::StateMachine;
use crate::timing::Timing;
use crate::types::is_member;
use crate::types::new_incarnation;
use crate::types::Health;
use crate::types::Incarnation;
use crate::types::NodeId;
use crate::types::Request;
use crate::types::Response;
use crate::types::TypeConfig;
use crate::types::MEMBERS;
use crate::types::NO_INCARNATION;
use crate::types::VOTERS;
use crate::types::WITNESS;

/// Renewals in flight at once: enough to ride out one slow commit without
/// a gap, few enough that a stalled leader does not pile up proposals.
const MAX_RENEW_INFLIGHT: usize = 3;
/// Bound of the command queue from handles; `step_down` callers wait for a
/// slot when it is full (back-pressure, nothing dropped).
const COMMAND_QUEUE: usize = 16;

/// Configuration of one voter of a pair.
#[derive(Clone, Debug)]
pub struct PairConfig {
    /// The mesh (plant) name; a connection from another mesh is refused.
    pub mesh: String,
    /// The pair's node name in the topology; same purpose.
    pub node: String,
    /// This voter's id: 1 = first member, 2 = second member, 3 = witness.
    pub me: NodeId,
    /// All three voters, by id, this one included.
    pub peers: BTreeMap<NodeId, Peer>,
    /// Where the log, vote and snapshot live; must survive restarts and
    /// belong to this voter alone.
    pub data_dir: PathBuf,
    /// The member the topology prefers as active (1 or 2), if any: it takes
    /// the role back when it is fit; otherwise the role is sticky.
    pub prefer: Option<NodeId>,
    /// Timing of the group and of the lease.
    pub timing: Timing,
}

impl PairConfig {
    /// Checks ids, peers, prefer and timing; names the bad field.
    pub fn validate(&self) -> Result<(), RaftError> {
        let bad = |field: &str, reason: String| {
            Err(RaftError::Config {
                field: field.to_string(),
                reason,
            })
        };
        if self.mesh.is_empty() {
            return bad("mesh", "must not be empty".into());
        }
        if self.node.is_empty() {
            return bad("node", "must not be empty".into());
        }
        if !VOTERS.contains(&self.me) {
            return bad("me", format!("{} is not a voter id (1, 2 or 3)", self.me));
        }
        let ids: BTreeSet<NodeId> = self.peers.keys().copied().collect();
        if ids != BTreeSet::from(VOTERS) {
            return bad(
                "peers",
                format!("must name exactly voters 1, 2 and 3, got {ids:?}"),
            );
        }
        if let Some(p) = self.prefer {
            if !is_member(p) {
                return bad("prefer", format!("{p} is not a member (1 or 2)"));
            }
        }
        self.timing.validate()
    }
}

/// What this node knows about the pair's role, as of `changed_at`.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleView {
    /// The member the replicated state names active (as applied here).
    pub active: Option<NodeId>,
    /// The current epoch (as applied here).
    pub epoch: u64,
    /// The replicated state names this member in this process's
    /// incarnation AND its lease is valid: the only condition under which
    /// it may have side effects (re-check [`Lease::is_valid`] right before
    /// each one). After a restart, `active` may name this member while
    /// `me_active` is false: the state names the previous process, until
    /// the role is granted again with a larger epoch.
    pub me_active: bool,
    /// The raft leader this node knows of (not the active member).
    pub leader: Option<NodeId>,
    /// Each member's last health report and how long before this view it
    /// was applied here; members not heard of since this node started are
    /// missing.
    pub health: BTreeMap<NodeId, (Health, Duration)>,
    /// When this view was created.
    pub changed_at: std::time::Instant,
}

/// Requests from handles that need an answer.
enum Command {
    StepDown {
        reply: oneshot::Sender<Result<(), RaftError>>,
    },
}

struct Shared {
    me: NodeId,
    incarnation: Incarnation,
    view: watch::Receiver<RoleView>,
    lease: Lease,
    health: watch::Sender<Health>,
    ready: watch::Sender<bool>,
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
}

/// A cheap, cloneable handle on this node's pair task.
#[derive(Clone)]
pub struct Pair {
    shared: Arc<Shared>,
}

impl Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("me", &self.shared.me)
            .field(
                "incarnation",
                &format_args!("{:016x}", self.shared.incarnation),
            )
            .field("view", &*self.shared.view.borrow())
            .finish()
    }
}

impl Pair {
    /// Starts this voter over TCP: binds the raft listener on the own
    /// peer's host and port, opens the stores in `data_dir`, initialises
    /// the group if this is a member that never was, and spawns the task.
    /// The task runs until `cancel`; its handle ends after openraft and
    /// the listener stopped.
    ///
    /// Every start is a new [incarnation](Pair::incarnation): if the
    /// recovered state names this member active, that was a previous
    /// process, and this one becomes active only through a new grant, with
    /// a larger epoch.
    pub async fn start(
        cfg: PairConfig,
        cancel: CancellationToken,
    ) -> Result<(Pair, JoinHandle<()>), RaftError> {
        cfg.validate()?;
        for (id, p) in &cfg.peers {
            if p.raft_port == 0 {
                return Err(RaftError::Config {
                    field: format!("peers.{id}.raft_port"),
                    reason: "must not be 0".into(),
                });
            }
        }
        let transport = Arc::new(TcpTransport::new(
            &cfg.mesh,
            &cfg.node,
            cfg.me,
            cfg.peers.clone(),
        ));
        Self::start_with_transport(cfg, transport, cancel).await
    }

    /// As [`Pair::start`], over any [`Transport`] (tests use the
    /// in-process [`Router`](crate::router::Router)).
    pub async fn start_with_transport(
        cfg: PairConfig,
        transport: Arc<dyn Transport>,
        cancel: CancellationToken,
    ) -> Result<(Pair, JoinHandle<()>), RaftError> {
        cfg.validate()?;
        Lease::init_clock();
        let me = cfg.me;
        let incarnation = new_incarnation();
        let span = tracing::info_span!(
            "pair",
            mesh = %cfg.mesh,
            node = %cfg.node,
            me,
            incarnation = %format_args!("{incarnation:016x}")
        );
        let log = LogStore::open(&cfg.data_dir)?;
        let (sm, applied_rx) = StateMachine::open(&cfg.data_dir)?;
        let config = cfg
            .timing
            .openraft_config(format!("{}/{}", cfg.mesh, cfg.node), me != WITNESS)?;
        let net = NetFactory {
            transport: transport.clone(),
            backoff: cfg.timing.heartbeat,
            // A restarted peer must hear the leader before it would stand
            // for election itself (`stand_after`).
            backoff_max: cfg.timing.election_min,
            peers: Arc::new(PeerLog::default()),
        };
        let raft = Raft::new(me, Arc::new(config), net, log, sm)
            .instrument(span.clone())
            .await
            .map_err(|e| RaftError::Openraft(e.to_string()))?;

        let counters = Arc::new(Counters::default());
        let watch = Arc::new(LeaderWatch::new(cfg.timing.election_max));
        let inbound = Inbound::new(
            me,
            raft.clone(),
            counters.clone(),
            cfg.timing.rpc_timeout.max(cfg.timing.lease) * 2,
            watch.clone(),
        );
        let server_cancel = cancel.child_token();
        let server = match transport.serve(inbound, server_cancel.clone()).await {
            Ok(h) => h,
            Err(e) => {
                let _ = raft.shutdown().await;
                return Err(e);
            }
        };

        if me != WITNESS {
            if let Err(e) = initialize(&raft).await {
                server_cancel.cancel();
                let _ = raft.shutdown().await;
                return Err(e);
            }
        }

        let applied = applied_rx.borrow().clone();
        let metrics_rx = raft.metrics();
        let metrics = metrics_rx.borrow().clone();
        let lease = Lease::default();
        let (view_tx, view_rx) = watch::channel(RoleView {
            active: applied.state.active,
            epoch: applied.state.epoch,
            me_active: false,
            leader: None,
            health: BTreeMap::new(),
            changed_at: std::time::Instant::now(),
        });
        let (health_tx, health_rx) = watch::channel(Health::default());
        let (ready_tx, ready_rx) = watch::channel(true);
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);

        let driver = Driver {
            me,
            incarnation,
            prefer: cfg.prefer,
            timing: cfg.timing.clone(),
            raft,
            transport,
            applied_rx,
            applied,
            metrics_rx,
            metrics,
            health_rx,
            ready_rx,
            cmd_rx,
            view_tx,
            last_material: None,
            lease: lease.clone(),
            lease_epoch: None,
            counters: counters.clone(),
            tasks: JoinSet::new(),
            seen_leader: None,
            probe_term: None,
            ready_term: None,
            renew_inflight: 0,
            renew_term: 0,
            next_renew_at: Instant::now(),
            predecessor_noted: None,
            released_epoch: None,
            release_inflight: false,
            acquire_inflight: false,
            health_inflight: None,
            last_health: None,
            step_down_waiters: Vec::new(),
            stand_after: cfg.timing.stand_after(new_incarnation()),
            stand_retry: cfg.timing.stand_retry(new_incarnation()),
            started_at: Instant::now(),
            led_until: None,
            last_stand: None,
            ready_at: None,
            watch,
            last_rescue: None,
            stepping_aside: false,
            was_leading: false,
            server,
            server_cancel,
        };
        let handle = tokio::spawn(driver.run(cancel).instrument(span));
        let pair = Pair {
            shared: Arc::new(Shared {
                me,
                incarnation,
                view: view_rx,
                lease,
                health: health_tx,
                ready: ready_tx,
                commands: cmd_tx,
                counters,
            }),
        };
        Ok((pair, handle))
    }

    /// This voter's id.
    pub fn id(&self) -> NodeId {
        self.shared.me
    }

    /// This process's incarnation: random, chosen at start, never
    /// [`NO_INCARNATION`](crate::NO_INCARNATION). Reported with every
    /// health report; the role is granted to a member's incarnation, so a
    /// restarted member never continues its predecessor's activation.
    pub fn incarnation(&self) -> Incarnation {
        self.shared.incarnation
    }

    /// The role as this node sees it; updated on every change.
    pub fn view(&self) -> watch::Receiver<RoleView> {
        self.shared.view.clone()
    }

    /// This member's lease: valid only while it is active.
    pub fn lease(&self) -> Lease {
        self.shared.lease.clone()
    }

    /// The latest health of this member; proposed on change and every
    /// `timing.health_interval`, tagged with this process's incarnation by
    /// the crate. Ignored on the witness.
    pub fn report_health(&self, h: Health) {
        self.shared.health.send_replace(h);
    }

    /// Whether this member can serve; a member that is not ready is never
    /// granted the role and hands it over when the other member can take
    /// it. Combined with the `ready` of the last reported health (both must
    /// be true). Starts true.
    pub fn set_ready(&self, ready: bool) {
        self.shared.ready.send_replace(ready);
    }

    /// Gives the role up if this member holds it (its lease ends at once);
    /// returns when the release is committed, or at once if not active.
    pub async fn step_down(&self) -> Result<(), RaftError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .commands
            .send(Command::StepDown { reply })
            .await
            .map_err(|_| RaftError::Stopped)?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// Counters since start.
    pub fn metrics(&self) -> PairMetrics {
        self.shared.counters.snapshot()
    }
}

/// Initialises the group with the three voters if this node never was part
/// of it. Both members may do this: the same membership is allowed.
async fn initialize(raft: &Raft<TypeConfig>) -> Result<(), RaftError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| RaftError::Openraft(e.to_string()))?;
    if initialized {
        return Ok(());
    }
    match raft.initialize(BTreeSet::from(VOTERS)).await {
        Ok(()) => {
            tracing::info!("initialised the group with voters 1, 2, 3");
            Ok(())
        }
        Err(OpenraftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(RaftError::Openraft(e.to_string())),
    }
}

/// Proposes `req`: locally if this node leads, else (when `forward`) on
/// the leader through [`Rpc::Forward`]. At most `timeout`.
async fn propose(
    raft: Raft<TypeConfig>,
    transport: Arc<dyn Transport>,
    me: NodeId,
    req: Request,
    timeout: Duration,
    forward: bool,
) -> Result<Response, ProposeError> {
    let work = async {
        match raft.client_write(req.clone()).await {
            Ok(r) => Ok(r.data),
            Err(OpenraftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                match f.leader_id {
                    Some(l) if forward && l != me => {
                        match transport.call(l, Rpc::Forward(req), timeout).await? {
                            Reply::Forward(r) => Ok(r),
                            Reply::NotLeader { leader } => Err(ProposeError::NotLeader { leader }),
                            other => Err(ProposeError::Forward(CallError::Protocol(format!(
                                "unexpected reply {other:?}"
                            )))),
                        }
                    }
                    Some(l) => Err(ProposeError::NotLeader { leader: Some(l) }),
                    None => Err(ProposeError::NoLeader),
                }
            }
            Err(e) => Err(ProposeError::Raft(e.to_string())),
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(ProposeError::Timeout))
}

/// The result of a spawned proposal, back in the loop.
enum Outcome {
    Probe {
        term: u64,
        result: Result<Response, ProposeError>,
    },
    Renew {
        term: u64,
        epoch: u64,
        sent: Instant,
        result: Result<Response, ProposeError>,
    },
    Health {
        term: u64,
        result: Result<Response, ProposeError>,
    },
    Acquire {
        candidate: NodeId,
        result: Result<Response, ProposeError>,
    },
    Release {
        result: Result<Response, ProposeError>,
    },
}

/// The part of a view whose change is worth publishing.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Material {
    active: Option<NodeId>,
    epoch: u64,
    me_active: bool,
    leader: Option<NodeId>,
    /// Reports and whether each member is still alive.
    health: BTreeMap<NodeId, (Health, bool)>,
}

async fn rescue_signal(watch: Option<Arc<LeaderWatch>>) {
    match watch {
        Some(w) => w.rescue.notified().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct Driver {
    me: NodeId,
    /// This process's incarnation: the only one whose role it may renew.
    incarnation: Incarnation,
    prefer: Option<NodeId>,
    timing: Timing,
    raft: Raft<TypeConfig>,
    transport: Arc<dyn Transport>,

    /// Applied state from the state machine; `applied` is the latest copy.
    applied_rx: watch::Receiver<Applied>,
    applied: Applied,
    /// openraft metrics; `metrics` is the latest copy.
    metrics_rx: watch::Receiver<RaftMetrics<NodeId, EmptyNode>>,
    metrics: RaftMetrics<NodeId, EmptyNode>,

    /// Latest health and readiness from handles.
    health_rx: watch::Receiver<Health>,
    ready_rx: watch::Receiver<bool>,
    cmd_rx: mpsc::Receiver<Command>,

    view_tx: watch::Sender<RoleView>,
    last_material: Option<Material>,

    lease: Lease,
    /// The epoch the lease was last extended for; `None` = no lease.
    lease_epoch: Option<u64>,
    counters: Arc<Counters>,

    /// Proposals in flight.
    tasks: JoinSet<Outcome>,

    /// (term, leader) last counted as an election.
    seen_leader: Option<(u64, NodeId)>,
    /// Term whose probe is in flight.
    probe_term: Option<u64>,
    /// Term in which this node leads and its probe committed: only then
    /// does it decide grants.
    ready_term: Option<u64>,

    /// Renewals in flight that were proposed in term `renew_term`; those
    /// of earlier terms (sent to a leader that may be gone or frozen) do
    /// not hold back renewals through the new leader.
    renew_inflight: usize,
    renew_term: u64,
    next_renew_at: Instant,
    /// Epoch at which the state was last seen naming a previous process
    /// of this member (logged once).
    predecessor_noted: Option<u64>,
    /// This member gave up the role at this epoch: never renew it again,
    /// keep proposing Release until the state no longer names it.
    released_epoch: Option<u64>,
    release_inflight: bool,
    acquire_inflight: bool,
    /// Term in which the health report in flight was proposed; a report
    /// stuck on a previous leader does not hold back the next one.
    health_inflight: Option<u64>,
    /// Last health proposed and when.
    last_health: Option<(Health, Instant)>,
    step_down_waiters: Vec<oneshot::Sender<Result<(), RaftError>>>,

    /// Members: how long without hearing a leader before standing for
    /// election (see `Timing::stand_after`; random per process).
    stand_after: Duration,
    /// Members: pause between two elections while none succeeds.
    stand_retry: Duration,
    started_at: Instant,
    /// When this node last stopped leading.
    led_until: Option<Instant>,
    /// Members: when this node last stood for election on its own.
    last_stand: Option<Instant>,
    /// When this node's probe committed in the current term (it leads and
    /// its state is current since then).
    ready_at: Option<Instant>,
    /// What this node hears from leaders; on the witness, also the signal
    /// that a member cannot win an election.
    watch: Arc<LeaderWatch>,
    /// Witness only: when it last stood.
    last_rescue: Option<Instant>,
    /// Witness only: it leads and has stopped heartbeats so that a member
    /// takes over.
    stepping_aside: bool,
    /// This node led at the previous turn.
    was_leading: bool,

    server: JoinHandle<()>,
    server_cancel: CancellationToken,
}

impl Driver {
    async fn run(mut self, cancel: CancellationToken) {
        // Half the renewal period, so renewals go out close to on time.
        let mut tick = tokio::time::interval(self.timing.renew / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let lease_timer = if self.lease_epoch.is_some() {
                self.lease.deadline().filter(|d| *d > Instant::now())
            } else {
                None
            };
            let rescue = (self.me == WITNESS).then(|| self.watch.clone());
            let stand_at = self.stand_at();
            let grace_at = self.grace_at();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = sleep_until_opt(lease_timer) => self.on_lease_timer(),
                _ = rescue_signal(rescue) => self.rescue().await,
                _ = sleep_until_opt(stand_at) => self.stand().await,
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match joined {
                        Ok(outcome) => self.on_outcome(outcome),
                        Err(e) => tracing::error!(error = %e, "proposal task failed"),
                    }
                }
                changed = self.applied_rx.changed() => {
                    if changed.is_err() {
                        tracing::error!("state machine stopped");
                        break;
                    }
                }
                changed = self.metrics_rx.changed() => {
                    if changed.is_err() {
                        tracing::error!("openraft stopped");
                        break;
                    }
                    if let Err(e) = &self.metrics_rx.borrow().running_state {
                        tracing::error!(error = %e, "openraft failed");
                        break;
                    }
                }
                Some(cmd) = self.cmd_rx.recv() => self.on_command(cmd),
                // A grant falls due: decide on time, not on the next tick.
                _ = sleep_until_opt(grace_at) => {}
                _ = tick.tick() => {}
            }
            self.step();
        }
        self.shutdown().await;
    }

    fn spawn(&mut self, fut: impl std::future::Future<Output = Outcome> + Send + 'static) {
        self.tasks.spawn(fut);
    }

    fn propose_fut(
        &self,
        req: Request,
        timeout: Duration,
        forward: bool,
    ) -> impl std::future::Future<Output = Result<Response, ProposeError>> + Send + 'static {
        propose(
            self.raft.clone(),
            self.transport.clone(),
            self.me,
            req,
            timeout,
            forward,
        )
    }

    /// One turn: refresh inputs, keep the lease honest, renew, report,
    /// decide, publish.
    fn step(&mut self) {
        let now = Instant::now();
        self.applied = self.applied_rx.borrow_and_update().clone();
        self.metrics = self.metrics_rx.borrow_and_update().clone();
        self.track_leadership();
        self.drop_lease_if_not_named();
        if self.me == WITNESS {
            self.witness_steps_aside();
        }
        if is_member(self.me) {
            self.note_predecessor();
            self.retry_release();
            self.maybe_renew(now);
            self.maybe_report_health(now);
            self.run_decisions(now);
        }
        self.publish_view(now);
    }

    fn leading(&self) -> bool {
        self.metrics.state == ServerState::Leader && self.metrics.current_leader == Some(self.me)
    }

    fn track_leadership(&mut self) {
        let term = self.metrics.current_term;
        let leading = self.leading();
        if !leading && self.was_leading {
            self.led_until = Some(Instant::now());
        }
        self.was_leading = leading;
        if let Some(leader) = self.metrics.current_leader {
            if self.seen_leader != Some((term, leader)) {
                self.seen_leader = Some((term, leader));
                self.counters.bump_elections();
                tracing::info!(term, leader, "raft leader");
            }
        }
        if self.leading() && is_member(self.me) {
            if self.ready_term != Some(term) && self.probe_term != Some(term) {
                // Commit a no-op first: when it returns, everything
                // committed before this term is applied here too.
                self.probe_term = Some(term);
                let fut = self.propose_fut(Request::Probe, self.timing.election_max * 2, false);
                self.spawn(async move {
                    Outcome::Probe {
                        term,
                        result: fut.await,
                    }
                });
            }
        } else {
            self.ready_term = None;
            self.ready_at = None;
        }
    }

    /// The latest sign of a leader this member has: a leader's append or
    /// snapshot accepted, an append from the leader it knows arrived (even
    /// if not handled yet), a vote granted, or its own leadership ending.
    fn heard_base(&self) -> Instant {
        let heard = self.watch.heard();
        let from_leader = heard.append_arrived.and_then(|(at, vote)| {
            let l = vote.leader_id();
            (vote.is_committed()
                && l.voted_for() == self.metrics.current_leader
                && l.term >= self.metrics.current_term)
                .then_some(at)
        });
        [heard.leader_at, from_leader, heard.voted_at, self.led_until]
            .into_iter()
            .flatten()
            .fold(self.started_at, Instant::max)
    }

    /// When this member stands for election on its own, if it should.
    ///
    /// openraft's own timer is slow for a pair: a follower that knew a
    /// leader waits `election_max` (its leader lease) plus its election
    /// timeout, and 2·`election_max` more once any vote answer showed it a
    /// longer log, a flag that stays set until its next timed election, so
    /// a single rejected vote at start-up slowed the first failover. So a
    /// member stands by itself once no leader was heard for `stand_after`
    /// (just above the voters' leader lease, so their leases have run out),
    /// and again every `stand_retry` while nobody wins. While the witness
    /// leads to rescue it, it stands as soon as it holds the witness's
    /// whole log (the witness stopped heartbeats and its lease runs out as
    /// above); before that only after a long silence.
    fn stand_at(&self) -> Option<Instant> {
        if !is_member(self.me)
            || !matches!(
                self.metrics.state,
                ServerState::Follower | ServerState::Candidate
            )
        {
            return None;
        }
        let base = self.heard_base();
        let caught_up = self.watch.heard().witness_log_term == Some(self.metrics.current_term);
        let after = if self.metrics.current_leader == Some(WITNESS) && !caught_up {
            self.stand_after * 4
        } else {
            self.stand_after
        };
        let mut at = base + after;
        if let Some(last) = self.last_stand.filter(|t| *t >= base) {
            at = at.max(last + self.stand_retry);
        }
        Some(at)
    }

    async fn stand(&mut self) {
        let now = Instant::now();
        // The deadline was computed before the wait: a leader may have been
        // heard since.
        if self.stand_at().is_none_or(|t| t > now) {
            return;
        }
        let base = self.heard_base();
        if self.last_stand.is_none_or(|t| t < base) {
            tracing::info!(
                term = self.metrics.current_term,
                leader = ?self.metrics.current_leader,
                silent = ?now.saturating_duration_since(base),
                "no leader heard; standing for election"
            );
        } else {
            tracing::debug!(
                term = self.metrics.current_term,
                "standing for election again"
            );
        }
        self.last_stand = Some(now);
        self.stand_retry = self.timing.stand_retry(new_incarnation());
        if let Err(e) = self.raft.trigger().elect().await {
            tracing::warn!(error = %e, "election trigger");
        }
    }

    /// When the leader may next grant the role over a named active that
    /// stopped renewing (`grace` after the last renewal applied here).
    fn grace_at(&self) -> Option<Instant> {
        if !self.am_leader() || self.applied.state.active.is_none() {
            return None;
        }
        Some(self.applied.local.renewed_at + self.timing.grace).filter(|t| *t > Instant::now())
    }

    /// The witness stands only to rescue a member whose log is behind its
    /// own when there is no leader: openraft elects only a voter whose log
    /// is at least as long as a quorum's, and with two voters left the
    /// witness's vote is needed, so a member that missed the last entries
    /// (they reached the witness, not it, before the leader died) could
    /// never win while the witness never stands. Once leading, the witness
    /// replicates its log to the member (openraft commits a blank entry on
    /// election), then steps aside: no heartbeats and no proposals, so the
    /// member, now up to date, stands (see `stand_at`) and wins.
    ///
    /// The witness stands for each such vote request (at most once per
    /// `heartbeat`): its election takes the term after its own vote's, and
    /// the member may have raised its term past that by standing more than
    /// once, so a first attempt can fail; openraft then records the
    /// member's term in the witness's vote, and the attempt on the member's
    /// next request (one term up) carries the same term as the member's own
    /// vote, where the witness wins the tie (openraft orders equal terms by
    /// node id, and the witness is 3).
    async fn rescue(&mut self) {
        let now = Instant::now();
        if self.leading()
            || self
                .last_rescue
                .is_some_and(|t| now < t + self.timing.heartbeat)
        {
            return;
        }
        // Logged once per streak of rescues.
        if self
            .last_rescue
            .is_some_and(|t| now < t + self.timing.election_max * 10)
        {
            tracing::debug!("witness stands again for a member behind its log");
        } else {
            tracing::warn!(
                "witness stands once: a member is behind its log and no leader is heard"
            );
        }
        self.last_rescue = Some(now);
        if let Err(e) = self.raft.trigger().elect().await {
            tracing::warn!(error = %e, "witness election trigger");
        }
    }

    fn witness_steps_aside(&mut self) {
        let leading = self.leading();
        if leading && !self.stepping_aside {
            tracing::warn!(
                term = self.metrics.current_term,
                "witness leads to bring a member up to date; stepping aside"
            );
            self.raft.runtime_config().heartbeat(false);
            self.stepping_aside = true;
        } else if !leading && self.stepping_aside {
            tracing::info!("witness stepped aside");
            self.raft.runtime_config().heartbeat(true);
            self.stepping_aside = false;
        }
    }

    fn am_leader(&self) -> bool {
        self.leading() && self.ready_term == Some(self.metrics.current_term)
    }

    /// The applied state names this process (member and incarnation)
    /// active. A state naming this member under another incarnation names
    /// a previous process of it: not this one's role to renew or release.
    fn named_active(&self) -> bool {
        self.applied.state.names_active(self.me, self.incarnation)
    }

    /// Logs once per epoch that the recovered state names a previous
    /// process of this member: the role comes back only through a new
    /// grant, after `grace`.
    fn note_predecessor(&mut self) {
        let st = &self.applied.state;
        if st.active == Some(self.me)
            && !self.named_active()
            && self.predecessor_noted != Some(st.epoch)
        {
            self.predecessor_noted = Some(st.epoch);
            tracing::info!(
                epoch = st.epoch,
                predecessor = %format_args!("{:016x}", st.active_incarnation),
                "the state names a previous process of this member active; \
                 waiting for a new grant"
            );
        }
    }

    /// The lease belongs to an epoch naming this process; anything else
    /// ends it at once.
    fn drop_lease_if_not_named(&mut self) {
        if let Some(epoch) = self.lease_epoch {
            let st = &self.applied.state;
            if !self.named_active() || st.epoch != epoch {
                self.lease.revoke();
                self.lease_epoch = None;
                tracing::info!(epoch, now = st.epoch, active = ?st.active, "no longer named active; lease dropped");
            }
        }
    }

    fn maybe_renew(&mut self, now: Instant) {
        let st = &self.applied.state;
        if !self.named_active() || self.released_epoch == Some(st.epoch) {
            return;
        }
        let term = self.metrics.current_term;
        if self.renew_term != term {
            self.renew_term = term;
            self.renew_inflight = 0;
        }
        if self.renew_inflight >= MAX_RENEW_INFLIGHT || now < self.next_renew_at {
            return;
        }
        let epoch = st.epoch;
        self.next_renew_at = now + self.timing.renew;
        self.renew_inflight += 1;
        // `now` was read before the proposal leaves: the lease counts from
        // no later than the send.
        let sent = now;
        let fut = self.propose_fut(
            Request::Renew {
                member: self.me,
                incarnation: self.incarnation,
                epoch,
            },
            self.timing.lease,
            true,
        );
        self.spawn(async move {
            Outcome::Renew {
                term,
                epoch,
                sent,
                result: fut.await,
            }
        });
    }

    fn effective_health(&self) -> Health {
        let mut h = self.health_rx.borrow().clone();
        h.ready = h.ready && *self.ready_rx.borrow();
        h
    }

    fn maybe_report_health(&mut self, now: Instant) {
        let term = self.metrics.current_term;
        if self.health_inflight == Some(term) {
            return;
        }
        let h = self.effective_health();
        // A report stuck on a previous leader goes again through the new one.
        let stuck = self.health_inflight.is_some();
        let due = match &self.last_health {
            None => true,
            Some((prev, at)) => *prev != h || now >= *at + self.timing.health_interval || stuck,
        };
        if !due {
            return;
        }
        self.health_inflight = Some(term);
        self.last_health = Some((h.clone(), now));
        let fut = self.propose_fut(
            Request::Health {
                member: self.me,
                incarnation: self.incarnation,
                report: h,
            },
            self.timing.rpc_timeout,
            true,
        );
        self.spawn(async move {
            Outcome::Health {
                term,
                result: fut.await,
            }
        });
    }

    fn decision_input(&self, now: Instant) -> DecisionInput {
        let st = &self.applied.state;
        let local = &self.applied.local;
        let since = |t: Option<&Instant>| t.map(|t| now.saturating_duration_since(*t));
        let members = MEMBERS
            .iter()
            .map(|&m| {
                (
                    m,
                    MemberStatus {
                        health: st.health.get(&m).cloned(),
                        since_report: since(local.health_at.get(&m)),
                        plc_bad_streak: local.plc_bad_streak.get(&m).copied().unwrap_or(0),
                        since_lost_role: since(local.lost_role_at.get(&m)),
                        since_gained_role: since(local.gained_role_at.get(&m)),
                    },
                )
            })
            .collect();
        DecisionInput {
            me: self.me,
            incarnation: self.incarnation,
            am_leader: self.am_leader(),
            state: st.clone(),
            since_last_renewal: now.saturating_duration_since(local.renewed_at),
            since_leading: self
                .ready_at
                .filter(|_| self.am_leader())
                .map(|t| now.saturating_duration_since(t)),
            members,
            prefer: self.prefer,
            timing: self.timing.clone(),
        }
    }

    fn run_decisions(&mut self, now: Instant) {
        let input = self.decision_input(now);
        for action in decide(&input) {
            match action {
                Action::ProposeAcquire { candidate } => {
                    if self.acquire_inflight {
                        continue;
                    }
                    self.acquire_inflight = true;
                    let st = &input.state;
                    // The candidate's latest reported incarnation: the
                    // grant fails if it restarts before this applies.
                    let incarnation = st.incarnation_of(candidate).unwrap_or(NO_INCARNATION);
                    tracing::info!(
                        candidate,
                        incarnation = %format_args!("{incarnation:016x}"),
                        epoch = st.epoch,
                        renew_index = st.renew_index,
                        since_last_renewal = ?input.since_last_renewal,
                        "granting the role"
                    );
                    let fut = self.propose_fut(
                        Request::Acquire {
                            member: candidate,
                            incarnation,
                            expect_epoch: st.epoch,
                            expect_renew_index: st.renew_index,
                        },
                        self.timing.rpc_timeout,
                        false,
                    );
                    self.spawn(async move {
                        Outcome::Acquire {
                            candidate,
                            result: fut.await,
                        }
                    });
                }
                Action::ProposeRelease { reason } => self.release(reason),
            }
        }
    }

    /// Gives the role up: the lease ends now, before the Release is even
    /// sent, and this epoch is never renewed again.
    fn release(&mut self, reason: ReleaseReason) {
        if !self.named_active() {
            return;
        }
        let st = &self.applied.state;
        if self.released_epoch != Some(st.epoch) {
            tracing::info!(epoch = st.epoch, ?reason, "releasing the role");
            self.released_epoch = Some(st.epoch);
            self.lease.revoke();
            self.lease_epoch = None;
        }
        self.send_release();
    }

    fn retry_release(&mut self) {
        if self.named_active() && self.released_epoch == Some(self.applied.state.epoch) {
            self.send_release();
        }
    }

    fn send_release(&mut self) {
        if self.release_inflight {
            return;
        }
        let Some(epoch) = self.released_epoch else {
            return;
        };
        self.release_inflight = true;
        let fut = self.propose_fut(
            Request::Release {
                member: self.me,
                incarnation: self.incarnation,
                epoch,
            },
            self.timing.rpc_timeout,
            true,
        );
        self.spawn(async move { Outcome::Release { result: fut.await } });
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::StepDown { reply } => {
                if is_member(self.me) && self.named_active() {
                    self.release(ReleaseReason::Requested);
                    self.step_down_waiters.push(reply);
                } else {
                    let _ = reply.send(Ok(()));
                }
            }
        }
    }

    fn on_lease_timer(&mut self) {
        if self.lease_epoch.is_some() && !self.lease.is_valid() {
            self.counters.bump_lease_expiries();
            tracing::warn!(epoch = ?self.lease_epoch, "lease expired without a committed renewal");
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Probe { term, result } => {
                self.probe_term = None;
                match result {
                    Ok(_) => {
                        if self.leading() && self.metrics.current_term == term {
                            tracing::info!(term, "leading; applied state is current");
                            self.ready_term = Some(term);
                            self.ready_at = Some(Instant::now());
                        }
                    }
                    Err(e) => tracing::debug!(term, error = %e, "probe failed"),
                }
            }
            Outcome::Renew {
                term,
                epoch,
                sent,
                result,
            } => {
                if term == self.renew_term {
                    self.renew_inflight = self.renew_inflight.saturating_sub(1);
                }
                match result {
                    Ok(Response::Ok) => {
                        let still_mine = self.named_active() && self.applied.state.epoch == epoch;
                        if still_mine && self.released_epoch != Some(epoch) {
                            if self.lease_epoch != Some(epoch) || !self.lease.is_valid() {
                                tracing::info!(epoch, "lease held");
                            }
                            self.lease.extend_to(sent + self.timing.lease);
                            self.lease_epoch = Some(epoch);
                        }
                    }
                    Ok(Response::Fenced) => {
                        self.counters.bump_renew_failures();
                        tracing::warn!(epoch, "renewal fenced: another member holds the role");
                        self.lease.revoke();
                        self.lease_epoch = None;
                    }
                    Ok(other) => {
                        self.counters.bump_renew_failures();
                        tracing::warn!(epoch, ?other, "unexpected renewal response");
                    }
                    Err(e) => {
                        self.counters.bump_renew_failures();
                        tracing::debug!(epoch, error = %e, "renewal failed");
                    }
                }
            }
            Outcome::Health { term, result } => {
                if self.health_inflight == Some(term) {
                    self.health_inflight = None;
                }
                if let Err(e) = result {
                    tracing::debug!(error = %e, "health report not committed");
                }
            }
            Outcome::Acquire { candidate, result } => {
                self.acquire_inflight = false;
                match result {
                    Ok(Response::Granted { epoch }) => {
                        self.counters.bump_grants();
                        tracing::info!(candidate, epoch, "role granted");
                    }
                    Ok(other) => {
                        tracing::info!(candidate, ?other, "grant lost its compare-and-set")
                    }
                    Err(e) => tracing::debug!(candidate, error = %e, "grant not committed"),
                }
            }
            Outcome::Release { result } => {
                self.release_inflight = false;
                let answer = match &result {
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.clone()),
                };
                if let Err(e) = &result {
                    tracing::debug!(error = %e, "release not committed; retrying");
                }
                for w in self.step_down_waiters.drain(..) {
                    let _ = w.send(answer.clone().map_err(RaftError::Propose));
                }
            }
        }
    }

    fn publish_view(&mut self, now: Instant) {
        let st = &self.applied.state;
        let local = &self.applied.local;
        let me_active = st.names_active(self.me, self.incarnation)
            && self.lease_epoch == Some(st.epoch)
            && self.lease.is_valid();
        let health: BTreeMap<NodeId, (Health, Duration)> = st
            .health
            .iter()
            .filter_map(|(id, h)| {
                local
                    .health_at
                    .get(id)
                    .map(|t| (*id, (h.clone(), now.saturating_duration_since(*t))))
            })
            .collect();
        let material = Material {
            active: st.active,
            epoch: st.epoch,
            me_active,
            leader: self.metrics.current_leader,
            health: health
                .iter()
                .map(|(id, (h, d))| (*id, (h.clone(), *d < self.timing.health_fresh)))
                .collect(),
        };
        if self.last_material.as_ref() == Some(&material) {
            return;
        }
        let was_active = self.last_material.as_ref().is_some_and(|m| m.me_active);
        if was_active != me_active {
            if me_active {
                tracing::info!(epoch = st.epoch, "active");
            } else {
                tracing::info!(epoch = st.epoch, active = ?st.active, "not active");
            }
        }
        self.last_material = Some(material);
        self.view_tx.send_replace(RoleView {
            active: st.active,
            epoch: st.epoch,
            me_active,
            leader: self.metrics.current_leader,
            health,
            changed_at: std::time::Instant::now(),
        });
    }

    async fn shutdown(mut self) {
        self.lease.revoke();
        self.lease_epoch = None;
        self.publish_view(Instant::now());
        for w in self.step_down_waiters.drain(..) {
            let _ = w.send(Err(RaftError::Stopped));
        }
        self.tasks.abort_all();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "openraft shutdown");
        }
        self.server_cancel.cancel();
        let _ = (&mut self.server).await;
        tracing::info!("pair task stopped");
    }
}
