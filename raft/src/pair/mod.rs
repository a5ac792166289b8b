//! The pair task: one owner of this node's openraft instance, lease and
//! view, driven by ticks, applied-state changes, raft metrics, proposal
//! outcomes and commands from cheap [`Pair`] handles.
//!
//! Every turn it reads the applied state, renews the lease if this member
//! is active, proposes its health, asks [`decide`](crate::decide()) what to
//! do and carries the actions out. Proposals run as spawned tasks whose
//! outcomes come back into the loop, so the loop never waits on the network
//! and the lease timer fires on time.
//!
//! - `mod.rs`: the [`Pair`] handle, its `Command`s, and start-up.
//! - `config`: [`PairConfig`] and its validation.
//! - `view`: [`RoleView`], what the services see.
//! - `driver`: the task itself: its loop, the proposals it spawns and what
//!   it does with their outcomes.
//! - `rules`: its timing rules (standing for election, the next grant, the
//!   witness's rescue and stepping aside) as pure functions, tested alone.
//! - `boot`: what a voter whose store is empty does before it starts
//!   openraft (ask the others; the pure rule `empty_store`).

mod boot;
mod config;
mod driver;
mod rules;
mod view;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

use openraft::error::InitializeError;
use openraft::error::RaftError as OpenraftError;
use openraft::Raft;
use openraft::Vote;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::boot::EmptyStore;
pub use self::config::PairConfig;
use self::driver::Driver;
use self::driver::Wiring;
pub use self::view::RoleView;
use crate::error::RaftError;
use crate::lease::Lease;
use crate::metrics::Counters;
use crate::metrics::PairMetrics;
use crate::network::tcp::TcpTransport;
use crate::network::Core;
use crate::network::Inbound;
use crate::network::LeaderWatch;
use crate::network::NetFactory;
use crate::network::PeerLog;
use crate::network::Transport;
use crate::store::Applied;
use crate::store::GroupCell;
use crate::store::GroupFile;
use crate::store::Identity;
use crate::store::LogStore;
use crate::store::LogTail;
use crate::store::StateMachine;
use crate::types::new_incarnation;
use crate::types::Health;
use crate::types::Incarnation;
use crate::types::NodeId;
use crate::types::TypeConfig;
use crate::types::VOTERS;
use crate::types::WITNESS;

/// Bound of the command queue from handles; `step_down` callers wait for a
/// slot when it is full (back-pressure, nothing dropped).
const COMMAND_QUEUE: usize = 16;

/// Requests from handles that need an answer.
enum Command {
    StepDown {
        reply: oneshot::Sender<Result<(), RaftError>>,
    },
    Switchover {
        reply: oneshot::Sender<Result<(), RaftError>>,
    },
    Maintenance {
        on: bool,
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
    stream: watch::Sender<Option<bool>>,
    confirm: watch::Sender<bool>,
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
    /// Starts this voter over TCP: opens the stores in `data_dir`, binds
    /// the raft listener on the own peer's host and port, and spawns the
    /// task. The task runs until `cancel`; its handle ends after openraft
    /// and the listener stopped.
    ///
    /// A store with a log, a vote or a snapshot starts openraft at once. An
    /// empty store (a brand-new voter, or one whose store was lost) returns
    /// at once too, but its task first asks the other two voters: it
    /// starts openraft only once both confirm the same group, term and
    /// leader (adopting that vote), or, if no voter knows a group, as a
    /// brand-new pair (a member initialises the group), or once
    /// [`Pair::confirm_empty_store`] is called. Meanwhile
    /// [`RoleView::waiting`] says why; it is never active then.
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
            cfg.tls.clone(),
        ));
        Self::start_with_transport(cfg, transport, cancel).await
    }

    /// As [`Pair::start`], over any [`Transport`] (tests use the
    /// in-process [`Router`](crate::router::Router)).
    ///
    /// If this voter's store is empty (no log, no vote, no snapshot), it
    /// returns as soon as the listener is bound, and the task asks the
    /// other voters before it starts openraft (see
    /// [`Pair::confirm_empty_store`]); meanwhile [`RoleView::waiting`] says
    /// why it waits, and it is never active.
    pub async fn start_with_transport(
        cfg: PairConfig,
        transport: Arc<dyn Transport>,
        cancel: CancellationToken,
    ) -> Result<(Pair, JoinHandle<()>), RaftError> {
        cfg.validate()?;
        let me = cfg.me;
        let incarnation = new_incarnation();
        let span = tracing::info_span!(
            "pair",
            mesh = %cfg.mesh,
            node = %cfg.node,
            me,
            incarnation = %format_args!("{incarnation:016x}")
        );
        let config = cfg
            .timing
            .openraft_config(format!("{}/{}", cfg.mesh, cfg.node))?;
        let own_group = GroupFile::read(&cfg.data_dir, &cfg.mesh, &cfg.node)?.map(|f| f.group);
        let group = GroupCell::new(own_group);
        let log = LogStore::open(&cfg.data_dir)?;
        let (sm, applied_rx) = StateMachine::open(
            &cfg.data_dir,
            Identity {
                mesh: cfg.mesh.clone(),
                node: cfg.node.clone(),
                cell: group.clone(),
            },
        )?;
        let emptied = log.is_empty() && sm.is_empty();

        let counters = Arc::new(Counters::default());
        let watch = Arc::new(LeaderWatch::new(cfg.timing.election_max));
        let inbound = Inbound::new(
            me,
            counters.clone(),
            cfg.timing.rpc_timeout.max(cfg.timing.lease) * 2,
            watch.clone(),
            cfg.timing.election_max,
            group,
        );
        let server_cancel = cancel.child_token();
        let server = transport
            .serve(inbound.clone(), server_cancel.clone())
            .await?;

        let (active, epoch, group) = {
            let applied = applied_rx.borrow();
            (
                applied.state.active,
                applied.state.epoch,
                applied.state.group,
            )
        };
        let lease = Lease::default();
        let (view_tx, view_rx) = watch::channel(RoleView {
            active,
            epoch,
            me_active: false,
            leader: None,
            term: 0,
            health: BTreeMap::new(),
            stream_ok: BTreeMap::new(),
            maintenance: BTreeSet::new(),
            group,
            waiting: emptied.then(|| "raft store empty: asking the other voters".to_string()),
            changed_at: std::time::Instant::now(),
        });
        let (health_tx, health_rx) = watch::channel(Health::default());
        let (ready_tx, ready_rx) = watch::channel(true);
        let (stream_tx, stream_rx) = watch::channel(None);
        let (confirm_tx, confirm_rx) = watch::channel(false);
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);

        let parts = Parts {
            cfg,
            config,
            incarnation,
            transport,
            tail: log.tail(),
            stores: Some((log, sm)),
            applied_rx,
            inbound,
            counters: counters.clone(),
            watch,
            server,
            server_cancel,
            health_rx,
            ready_rx,
            stream_rx,
            cmd_rx,
            view_tx,
            lease: lease.clone(),
        };
        let handle = if emptied {
            tokio::spawn(parts.boot(own_group, confirm_rx, cancel).instrument(span))
        } else {
            let driver = parts
                .launch(None, me != WITNESS)
                .instrument(span.clone())
                .await?;
            tokio::spawn(driver.run(cancel).instrument(span))
        };
        let pair = Pair {
            shared: Arc::new(Shared {
                me,
                incarnation,
                view: view_rx,
                lease,
                health: health_tx,
                ready: ready_tx,
                stream: stream_tx,
                confirm: confirm_tx,
                commands: cmd_tx,
                counters,
            }),
        };
        Ok((pair, handle))
    }

    /// An operator confirms that this voter's store is empty on purpose
    /// (a replaced disk, a rebuilt host) and that it may start without
    /// both other voters confirming the group's term and leader. Only
    /// meaningful while [`RoleView::waiting`] is `Some`; services map a
    /// command-line flag to it (call it right after the start). A member
    /// still never initialises a new group while a peer reports one.
    pub fn confirm_empty_store(&self) {
        self.shared.confirm.send_replace(true);
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

    /// Whether this member can use its own stream: `Some(false)` when it
    /// could not append to its stream (as the active) or read the stream
    /// leader (as the standby) for longer than the node's publish timeout,
    /// `Some(true)` when it can, `None` (the start) when it does not say.
    /// Proposed with the health reports. The active hands the role over
    /// after `timing.field_bad_reports` reports of `Some(false)` in a row,
    /// to a member that is eligible and reports `Some(true)`
    /// ([`ReleaseReason::StreamHealth`](crate::ReleaseReason::StreamHealth)),
    /// never to one that cannot use its stream either: an active whose bus
    /// is frozen or cut while raft is fine would otherwise keep the role
    /// while its node falls silent. (Not a field of [`Health`]: services
    /// build that struct field by field, so a new field would not compile
    /// there.) Ignored on the witness.
    pub fn report_stream(&self, ok: Option<bool>) {
        self.shared.stream.send_replace(ok);
    }

    /// Gives the role up if this member holds it (its lease ends at once);
    /// returns when the release is committed, or at once if not active.
    pub async fn step_down(&self) -> Result<(), RaftError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::StepDown { reply }).await?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// Operator switchover: the active member hands the role to the other
    /// one. Refused (with [`RaftError::Refused`] saying why) when this
    /// member is not active, when no raft leader is known ("no quorum"),
    /// or when the other member could not take the role now ("no healthy
    /// peer to take the role": not ready, not heard from within
    /// `timing.health_fresh`, or in maintenance). Otherwise it releases
    /// (reason `Requested`, the lease ends at once) and returns once the
    /// release is committed; the leader then grants the other member
    /// after `grace` (the released member just lost the role, so the flap
    /// hold keeps it from being chosen back unless it is the only one that
    /// can take it). Wait for the new epoch in [`Pair::view`]. With
    /// `prefer` naming this member, the role comes back after the flap
    /// hold: put it in maintenance to keep it away.
    pub async fn switchover(&self) -> Result<(), RaftError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Switchover { reply }).await?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// Puts this member in maintenance (`true`) or takes it out (`false`);
    /// returns once the change is committed. A member in maintenance is
    /// never granted the role; if it is active, it hands the role over as
    /// soon as the other member can take it. Putting the active member in
    /// maintenance is refused when the other member could not take the
    /// role now ("no healthy peer to take the role"), and the witness has
    /// no role to leave. [`RoleView::maintenance`] shows who is in it.
    pub async fn set_maintenance(&self, on: bool) -> Result<(), RaftError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Maintenance { on, reply }).await?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    async fn send(&self, cmd: Command) -> Result<(), RaftError> {
        self.shared
            .commands
            .send(cmd)
            .await
            .map_err(|_| RaftError::Stopped)
    }

    /// Counters since start.
    pub fn metrics(&self) -> PairMetrics {
        self.shared.counters.snapshot()
    }
}

/// Everything a pair task needs before its openraft instance exists: the
/// stores, the listener (already serving), and the driver's channels.
struct Parts {
    cfg: PairConfig,
    config: openraft::Config,
    incarnation: Incarnation,
    transport: Arc<dyn Transport>,
    /// The stores, until openraft takes them.
    stores: Option<(LogStore, StateMachine)>,
    /// The end of the log, which the pair keeps reading.
    tail: LogTail,
    applied_rx: watch::Receiver<Applied>,
    inbound: Inbound,
    counters: Arc<Counters>,
    watch: Arc<LeaderWatch>,
    server: JoinHandle<()>,
    server_cancel: CancellationToken,
    health_rx: watch::Receiver<Health>,
    ready_rx: watch::Receiver<bool>,
    stream_rx: watch::Receiver<Option<bool>>,
    cmd_rx: mpsc::Receiver<Command>,
    view_tx: watch::Sender<RoleView>,
    lease: Lease,
}

impl Parts {
    /// Starts openraft (after persisting `vote`, if any), hands the
    /// listener to it, initialises the group if `initialise` (a member;
    /// harmless when it already is) and builds the driver. On error the
    /// listener is stopped.
    async fn launch(
        mut self,
        vote: Option<Vote<NodeId>>,
        initialise: bool,
    ) -> Result<Driver, RaftError> {
        let result = self.start_raft(vote, initialise).await;
        match result {
            Ok(raft) => {
                let Parts {
                    cfg,
                    incarnation,
                    transport,
                    applied_rx,
                    counters,
                    watch,
                    server,
                    server_cancel,
                    health_rx,
                    ready_rx,
                    stream_rx,
                    cmd_rx,
                    view_tx,
                    lease,
                    tail,
                    ..
                } = self;
                let metrics_rx = raft.metrics();
                Ok(Driver::new(
                    &cfg,
                    incarnation,
                    Wiring {
                        raft,
                        transport,
                        applied_rx,
                        metrics_rx,
                        health_rx,
                        ready_rx,
                        stream_rx,
                        cmd_rx,
                        view_tx,
                        lease,
                        counters,
                        watch,
                        tail,
                        server,
                        server_cancel,
                    },
                ))
            }
            Err(e) => {
                self.server_cancel.cancel();
                Err(e)
            }
        }
    }

    async fn start_raft(
        &mut self,
        vote: Option<Vote<NodeId>>,
        initialise: bool,
    ) -> Result<Raft<TypeConfig>, RaftError> {
        let Some((mut log, sm)) = self.stores.take() else {
            return Err(RaftError::Openraft(
                "the pair's raft was started twice".into(),
            ));
        };
        if let Some(v) = vote {
            log.persist_vote(v)?;
            tracing::info!(vote = %v, "adopted the vote the other voters confirmed");
        }
        let net = NetFactory {
            transport: self.transport.clone(),
            backoff: self.cfg.timing.heartbeat,
            // A restarted peer must hear the leader before it would stand
            // for election itself (`stand_after`).
            backoff_max: self.cfg.timing.election_min,
            peers: Arc::new(PeerLog::default()),
        };
        let raft = Raft::new(self.cfg.me, Arc::new(self.config.clone()), net, log, sm)
            .await
            .map_err(|e| RaftError::Openraft(e.to_string()))?;
        self.inbound.start(Core {
            raft: raft.clone(),
            tail: self.tail.clone(),
        });
        if initialise {
            if let Err(e) = initialize(&raft).await {
                let _ = raft.shutdown().await;
                return Err(e);
            }
        }
        Ok(raft)
    }

    /// The task of a voter whose store is empty: asks the other voters
    /// until [`boot::empty_store`] says it may start (or an operator
    /// confirms), then runs as any other. Commands meanwhile are answered
    /// at once: nothing is active here yet.
    async fn boot(
        mut self,
        own_group: Option<u64>,
        mut confirm: watch::Receiver<bool>,
        cancel: CancellationToken,
    ) {
        let me = self.cfg.me;
        let timing = self.cfg.timing.clone();
        let mut reason: Option<String> = None;
        let start = loop {
            let mut answers = boot::ask(&self.transport, me, timing.rpc_timeout).await;
            if let Some(follower) = boot::follower_to_ask_again(&answers) {
                boot::ask_again(&self.transport, follower, timing.rpc_timeout, &mut answers).await;
            }
            match boot::empty_store(me, own_group, &answers, *confirm.borrow()) {
                EmptyStore::Start { vote, initialise } => break Some((vote, initialise)),
                EmptyStore::Wait(why) => {
                    if reason.as_ref() != Some(&why) {
                        tracing::warn!("{why}");
                        let shown = why.clone();
                        self.view_tx.send_modify(|v| {
                            v.waiting = Some(shown);
                            v.changed_at = std::time::Instant::now();
                        });
                        reason = Some(why);
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break None,
                _ = tokio::time::sleep(timing.election_min) => {}
                Ok(()) = confirm.changed() => {
                    tracing::warn!("an operator confirmed the empty raft store");
                }
                Some(cmd) = self.cmd_rx.recv() => answer_while_waiting(cmd, reason.as_deref()),
            }
        };
        let Some((vote, initialise)) = start else {
            self.server_cancel.cancel();
            let _ = (&mut self.server).await;
            return;
        };
        tracing::info!(
            ?vote,
            initialise,
            confirmed = *confirm.borrow(),
            "raft store empty: starting"
        );
        let view_tx = self.view_tx.clone();
        match self.launch(vote, initialise).await {
            Ok(driver) => driver.run(cancel).await,
            Err(e) => {
                tracing::error!(error = %e, "raft failed to start");
                view_tx.send_modify(|v| v.waiting = Some(format!("raft failed to start: {e}")));
            }
        }
    }
}

/// What a voter that waits for its peers answers to handles' commands.
fn answer_while_waiting(cmd: Command, why: Option<&str>) {
    let waiting = format!(
        "raft not started: {}",
        why.unwrap_or("raft store empty: asking the other voters")
    );
    match cmd {
        // Not active: nothing to give up.
        Command::StepDown { reply } => {
            let _ = reply.send(Ok(()));
        }
        Command::Switchover { reply } => {
            let _ = reply.send(Err(RaftError::Refused(format!(
                "this member is not active ({waiting})"
            ))));
        }
        Command::Maintenance { reply, .. } => {
            let _ = reply.send(Err(RaftError::Refused(waiting)));
        }
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
