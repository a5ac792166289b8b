//! The pair task itself: one loop that owns this node's openraft
//! instance, lease and view. Each turn it gathers its inputs, asks the
//! pure rules what to do ([`decide`](crate::decide()) for the role,
//! `pair::rules` for elections and deadlines) and carries the answer out;
//! `proposals` spawns the proposals and takes their outcomes back into the
//! loop.

mod elections;
mod proposals;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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

use self::proposals::pre_vote;
use self::proposals::propose;
use self::proposals::Outcome;
use self::proposals::PreVoteAnswers;
use super::rules;
use super::rules::Heartbeats;
use super::rules::Rescue;
use super::rules::Stand;
use super::rules::StandInput;
use super::view::Material;
use super::Command;
use super::PairConfig;
use super::RoleView;
use crate::decide::ReleaseReason;
use crate::error::ProposeError;
use crate::error::RaftError;
use crate::lease::Lease;
use crate::metrics::Counters;
use crate::network::LeaderWatch;
use crate::network::Transport;
use crate::store::Applied;
use crate::store::LogTail;
use crate::timing::Timing;
use crate::types::is_member;
use crate::types::new_incarnation;
use crate::types::other_member;
use crate::types::Health;
use crate::types::Incarnation;
use crate::types::NodeId;
use crate::types::Request;
use crate::types::Response;
use crate::types::TypeConfig;
use crate::types::WITNESS;

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

/// The task behind the [`Pair`](super::Pair) handles: it alone owns the
/// openraft instance, the lease and the view.
pub(super) struct Driver {
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

    /// Latest health, readiness and stream state from handles.
    health_rx: watch::Receiver<Health>,
    ready_rx: watch::Receiver<bool>,
    stream_rx: watch::Receiver<Option<bool>>,
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
    /// This member gave up the role at this epoch (released it, or its
    /// lease lapsed): never renew it again, keep proposing Release until
    /// the state no longer names it.
    released_epoch: Option<u64>,
    /// That release is because the lease lapsed (`Release { lapsed }`).
    release_lapsed: bool,
    release_inflight: bool,
    /// The leader's proposal of a group id is in flight.
    group_inflight: bool,
    /// No Release goes out again before this: a leader that cannot be
    /// reached fails a proposal at once, and every outcome runs a turn.
    next_release_at: Instant,
    acquire_inflight: bool,
    /// Term in which the health report in flight was proposed; a report
    /// stuck on a previous leader does not hold back the next one.
    health_inflight: Option<u64>,
    /// Last health (and stream state) proposed and when.
    last_health: Option<((Health, Option<bool>), Instant)>,
    step_down_waiters: Vec<oneshot::Sender<Result<(), RaftError>>>,

    /// Members: how long without hearing a leader before standing for
    /// election (see `Timing::stand_after`; random per process).
    stand_after: Duration,
    /// Members: pause between two elections while none succeeds.
    stand_retry: Duration,
    started_at: Instant,
    /// When this node last stopped leading.
    led_until: Option<Instant>,
    /// Members: when this node last stood for election on its own (or
    /// asked the others whether it should: a pre-vote).
    last_stand: Option<Instant>,
    /// Members: a pre-vote is in flight.
    pre_vote_inflight: bool,
    /// The end of this node's log, sent with a pre-vote.
    tail: LogTail,
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

/// What [`Pair::start_with_transport`](super::Pair::start_with_transport)
/// built for the driver: the openraft instance and its listener, and the
/// ends of the channels whose other ends the handles hold.
pub(super) struct Wiring {
    pub(super) raft: Raft<TypeConfig>,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) applied_rx: watch::Receiver<Applied>,
    pub(super) metrics_rx: watch::Receiver<RaftMetrics<NodeId, EmptyNode>>,
    pub(super) health_rx: watch::Receiver<Health>,
    pub(super) ready_rx: watch::Receiver<bool>,
    pub(super) stream_rx: watch::Receiver<Option<bool>>,
    pub(super) cmd_rx: mpsc::Receiver<Command>,
    pub(super) view_tx: watch::Sender<RoleView>,
    pub(super) lease: Lease,
    pub(super) counters: Arc<Counters>,
    pub(super) watch: Arc<LeaderWatch>,
    pub(super) tail: LogTail,
    pub(super) server: JoinHandle<()>,
    pub(super) server_cancel: CancellationToken,
}

impl Driver {
    pub(super) fn new(cfg: &PairConfig, incarnation: Incarnation, w: Wiring) -> Self {
        let applied = w.applied_rx.borrow().clone();
        let metrics = w.metrics_rx.borrow().clone();
        Driver {
            me: cfg.me,
            incarnation,
            prefer: cfg.prefer,
            timing: cfg.timing.clone(),
            raft: w.raft,
            transport: w.transport,
            applied_rx: w.applied_rx,
            applied,
            metrics_rx: w.metrics_rx,
            metrics,
            health_rx: w.health_rx,
            ready_rx: w.ready_rx,
            stream_rx: w.stream_rx,
            cmd_rx: w.cmd_rx,
            view_tx: w.view_tx,
            last_material: None,
            lease: w.lease,
            lease_epoch: None,
            counters: w.counters,
            tasks: JoinSet::new(),
            seen_leader: None,
            probe_term: None,
            ready_term: None,
            renew_inflight: 0,
            renew_term: 0,
            next_renew_at: Instant::now(),
            predecessor_noted: None,
            released_epoch: None,
            release_lapsed: false,
            release_inflight: false,
            group_inflight: false,
            next_release_at: Instant::now(),
            acquire_inflight: false,
            health_inflight: None,
            last_health: None,
            step_down_waiters: Vec::new(),
            stand_after: cfg.timing.stand_after(new_incarnation()),
            stand_retry: cfg.timing.stand_retry(new_incarnation()),
            started_at: Instant::now(),
            led_until: None,
            last_stand: None,
            pre_vote_inflight: false,
            tail: w.tail,
            ready_at: None,
            watch: w.watch,
            last_rescue: None,
            stepping_aside: false,
            was_leading: false,
            server: w.server,
            server_cancel: w.server_cancel,
        }
    }

    pub(super) async fn run(mut self, cancel: CancellationToken) {
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
            let stand_at = rules::stand_at(&self.stand_input());
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
        self.check_lapse();
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
            self.maybe_name_group();
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
            Command::Switchover { reply } => match self.switchover_refused() {
                Some(why) => {
                    tracing::info!(why, "switchover refused");
                    let _ = reply.send(Err(RaftError::Refused(why.into())));
                }
                None => {
                    tracing::info!(epoch = self.applied.state.epoch, "switchover");
                    self.release(ReleaseReason::Requested);
                    self.step_down_waiters.push(reply);
                }
            },
            Command::Maintenance { on, reply } => {
                if !is_member(self.me) {
                    let why = "the witness is never active: maintenance is for members";
                    let _ = reply.send(Err(RaftError::Refused(why.into())));
                } else if on && self.named_active() && !self.other_eligible() {
                    tracing::info!("maintenance refused: no healthy peer to take the role");
                    let why = "no healthy peer to take the role";
                    let _ = reply.send(Err(RaftError::Refused(why.into())));
                } else {
                    self.propose_maintenance(on, reply);
                }
            }
        }
    }

    /// The other member could be granted the role now, as this node sees it.
    fn other_eligible(&self) -> bool {
        let input = self.decision_input(Instant::now());
        other_member(self.me).is_some_and(|o| input.eligible(o))
    }

    /// Why a switchover cannot go ahead now, if it cannot.
    fn switchover_refused(&self) -> Option<&'static str> {
        if !is_member(self.me) || !self.named_active() || !self.lease.is_valid() {
            return Some("this member is not active");
        }
        if self.metrics.current_leader.is_none() {
            return Some("no quorum: no raft leader known");
        }
        if !self.other_eligible() {
            return Some("no healthy peer to take the role");
        }
        None
    }

    fn on_lease_timer(&mut self) {
        self.check_lapse();
    }

    /// A lease that ran out while the state still names this process at
    /// its epoch (no renewal committed in time: a partition, a slow
    /// election, load) is final for that epoch: this process never renews
    /// it again and releases it, so the role comes back only through an
    /// Acquire, with a larger epoch (possibly to this same member).
    /// Renewing it later would make the member active again at the same
    /// epoch after it stopped acting ("role lost epoch=6", then "active
    /// epoch=6"), while everything downstream takes a lost role for the end
    /// of that activation; every activation gets a strictly larger epoch.
    pub(super) fn check_lapse(&mut self) {
        let Some(epoch) = self.lease_epoch else {
            return;
        };
        if self.lease.is_valid() {
            return;
        }
        if !self.named_active() || self.applied.state.epoch != epoch {
            // Not a lapse: the role moved on (`drop_lease_if_not_named`).
            return;
        }
        self.counters.bump_lease_expiries();
        tracing::warn!(
            epoch,
            "lease ran out without a committed renewal; releasing this epoch \
             (the role comes back only through a new grant, with a larger epoch)"
        );
        self.release(ReleaseReason::Lapsed);
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
            term: self.metrics.current_term,
            health: health
                .iter()
                .map(|(id, (h, d))| (*id, (h.clone(), *d < self.timing.health_fresh)))
                .collect(),
            stream_ok: st.stream_ok.clone(),
            maintenance: st.maintenance.clone(),
            group: st.group,
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
            term: self.metrics.current_term,
            health,
            stream_ok: st.stream_ok.clone(),
            maintenance: st.maintenance.clone(),
            group: st.group,
            waiting: None,
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
