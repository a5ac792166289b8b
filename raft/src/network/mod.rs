//! Raft RPC between the three voters, behind the [`Transport`] trait so that
//! the same pair code runs over TCP (`tcp`) or over the in-process,
//! fault-injecting [`Router`](crate::router::Router) in tests.
//!
//! Besides openraft's own RPCs there are three application RPCs:
//! - [`Rpc::Forward`]: a node that is not the leader sends its proposal
//!   (Renew, Health, Release, Maintenance) to the leader, which proposes it
//!   and returns the state machine's response. A peer proposes only for
//!   itself: the leader refuses a forwarded request naming another member
//!   than the hello's `from_id`, and every Acquire, Probe or Group (see
//!   `forwardable`), with [`Reply::Failed`], counted in
//!   `PairMetrics::rejected_forwards`.
//! - [`Rpc::PreVote`]: would the receiver vote for the sender now (see
//!   `prevote`)? Asked before a member stands on its own.
//! - [`Rpc::Identity`]: the receiver's group id, term, leader and log
//!   ([`GroupIdentity`]), asked by a voter whose store is empty before it
//!   starts openraft (see `pair::boot`).

mod outbound;
pub(crate) mod prevote;
pub mod tcp;
pub mod tls;

pub(crate) use outbound::{NetFactory, PeerLog};

use std::fmt::Debug;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use futures::future::BoxFuture;
use openraft::error::ClientWriteError;
use openraft::error::InstallSnapshotError;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::RaftError as OpenraftError;
use openraft::error::ReplicationClosed;
use openraft::error::StreamingError;
use openraft::error::Unreachable;
use openraft::network::Backoff;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::AnyError;
use openraft::EmptyNode;
use openraft::LogId;
use openraft::Raft;
use openraft::RaftNetwork;
use openraft::RaftNetworkFactory;
use openraft::Snapshot;
use openraft::SnapshotMeta;
use openraft::Vote;
use serde::Deserialize;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::CallError;
use crate::error::RaftError;
use crate::metrics::Counters;
use crate::network::prevote::PreVote;
use crate::network::prevote::Voter;
use crate::store::GroupCell;
use crate::store::LogTail;
use crate::types::NodeId;
use crate::types::Request;
use crate::types::Response;
use crate::types::TypeConfig;
use crate::types::WITNESS;

/// One request between voters (the TCP frame body after the hello).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Rpc {
    /// openraft RequestVote.
    Vote(VoteRequest<NodeId>),
    /// openraft AppendEntries (also the heartbeat).
    Append(AppendEntriesRequest<TypeConfig>),
    /// A whole snapshot in one message (it is a few hundred bytes).
    Snapshot {
        /// The leader's vote.
        vote: Vote<NodeId>,
        /// Snapshot metadata.
        meta: SnapshotMeta<NodeId, EmptyNode>,
        /// Snapshot data (serde_json of `PairState`).
        data: Vec<u8>,
    },
    /// Propose `Request` on the receiver, which should be the leader.
    Forward(Request),
    /// Would the receiver vote for the sender now? Asked by a member
    /// before it stands for election on its own; changes nothing on the
    /// receiver (see `network::prevote`).
    PreVote {
        /// The sender's current term (informational: terms are not
        /// compared, see `network::prevote`).
        term: u64,
        /// The sender's last log id.
        last_log_id: Option<LogId<NodeId>>,
    },
    /// Which group does the receiver belong to, and what does it know of
    /// it now? Asked by a voter whose store is empty before it starts
    /// openraft (see `pair::boot`).
    Identity,
}

/// A voter's answer to [`Rpc::Identity`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupIdentity {
    /// The group id it knows (committed, or from its `raft-group.json`
    /// while it waits itself), if any.
    pub group: Option<u64>,
    /// It runs openraft; `false` while its own empty store waits for
    /// confirmation.
    pub running: bool,
    /// Its current term (running only).
    pub term: u64,
    /// Its current vote (running only).
    pub vote: Option<Vote<NodeId>>,
    /// The leader it knows (running only).
    pub leader: Option<NodeId>,
    /// Its last log id (running only).
    pub last_log_id: Option<LogId<NodeId>>,
    /// The last log id it applied (running only; a leader applies what
    /// it commits at once).
    #[serde(default)]
    pub applied: Option<LogId<NodeId>>,
}

/// The answer to one [`Rpc`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// To [`Rpc::Vote`].
    Vote(VoteResponse<NodeId>),
    /// To [`Rpc::Append`].
    Append(AppendEntriesResponse<NodeId>),
    /// To [`Rpc::Snapshot`].
    Snapshot(SnapshotResponse<NodeId>),
    /// To [`Rpc::Forward`]: the state machine's response.
    Forward(Response),
    /// To [`Rpc::Forward`] on a node that is not the leader.
    NotLeader {
        /// The leader the receiver knows of.
        leader: Option<NodeId>,
    },
    /// To [`Rpc::Identity`].
    Identity(GroupIdentity),
    /// To [`Rpc::PreVote`].
    PreVote {
        /// The receiver would vote for the sender now.
        granted: bool,
        /// Why not, if not (for the sender's log).
        why: Option<String>,
    },
    /// The receiver failed to handle the request.
    Failed(String),
}

/// How a node reaches the other voters and receives their RPCs.
///
/// One instance per node (it knows who "me" is). `call` must not block on
/// anything but the RPC itself and must honour `timeout`.
pub trait Transport: Send + Sync + Debug + 'static {
    /// Starts receiving RPCs for this node, handing each to `inbound`, until
    /// `cancel`. Returns once the node can be reached (e.g. the listener is
    /// bound), with the handle of the receiving task.
    fn serve(
        &self,
        inbound: Inbound,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<JoinHandle<()>, RaftError>>;

    /// Sends `rpc` to voter `to` and waits for its reply, at most `timeout`.
    fn call(
        &self,
        to: NodeId,
        rpc: Rpc,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Reply, CallError>>;
}

/// What a node learns about the leader from the RPCs it receives: when it
/// last heard from a leader (or granted a vote), and, on a member, whether
/// it holds the witness's whole log while the witness leads to rescue it.
/// The pair task stands for election from this (see
/// `pair::rules::stand_at`); the witness also uses it to notice a member
/// that cannot win (the rescue).
#[derive(Debug)]
pub(crate) struct LeaderWatch {
    heard: std::sync::Mutex<Heard>,
    /// Witness only: a member that cannot win (its log is behind) asked for
    /// a vote while no leader was heard from for `quiet`.
    pub(crate) rescue: tokio::sync::Notify,
    /// How long without a leader before a behind member counts as stuck.
    quiet: Duration,
}

/// See [`LeaderWatch`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Heard {
    /// When an AppendEntries or a snapshot from a leader was last accepted.
    pub(crate) leader_at: Option<tokio::time::Instant>,
    /// When an AppendEntries last arrived, before openraft handled it, and
    /// the vote it carried: proof that its leader is alive even while this
    /// node's own core is slow to answer (e.g. waiting for the disk).
    pub(crate) append_arrived: Option<(tokio::time::Instant, Vote<NodeId>)>,
    /// When this node last granted its vote to a candidate.
    pub(crate) voted_at: Option<tokio::time::Instant>,
    /// The term in which the witness leads and this node is known to hold
    /// its whole log: an append from the witness that ends with an entry the
    /// witness wrote in that term (its blank entry; it writes nothing else)
    /// was accepted.
    pub(crate) witness_log_term: Option<u64>,
}

impl LeaderWatch {
    pub(crate) fn new(quiet: Duration) -> Self {
        Self {
            heard: std::sync::Mutex::new(Heard::default()),
            rescue: tokio::sync::Notify::new(),
            quiet,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Heard> {
        self.heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn heard(&self) -> Heard {
        *self.lock()
    }

    fn leader_heard(&self, witness_log_term: Option<u64>) {
        let mut h = self.lock();
        h.leader_at = Some(tokio::time::Instant::now());
        if witness_log_term.is_some() {
            h.witness_log_term = witness_log_term;
        }
    }

    fn append_arrived(&self, vote: Vote<NodeId>) {
        self.lock().append_arrived = Some((tokio::time::Instant::now(), vote));
    }

    fn voted(&self) {
        self.lock().voted_at = Some(tokio::time::Instant::now());
    }

    fn leader_silent(&self) -> bool {
        self.lock()
            .leader_at
            .is_none_or(|t| t.elapsed() >= self.quiet)
    }
}

/// The witness's term if `req` comes from the witness leading and ends
/// with an entry it wrote in that term: accepting it means this node holds
/// the witness's whole log.
fn witness_log_term(req: &AppendEntriesRequest<TypeConfig>) -> Option<u64> {
    let leader = req.vote.leader_id();
    let last = req.entries.last().map(|e| e.log_id).or(req.prev_log_id)?;
    (req.vote.is_committed() && leader.voted_for() == Some(WITNESS) && last.leader_id == *leader)
        .then_some(leader.term)
}

/// Whether a peer authenticated as `from` (its hello) may have `req`
/// proposed on its behalf; `Err` says why not.
///
/// A peer proposes only for itself: a forged report, renewal or release
/// naming the other member would let any voter (or anything that got a
/// voter's connection) force a failover, hold the role for someone else
/// or take it away. Acquire, Probe and Group are a leader's own
/// proposals, made after its own checks (grace, the probe's applied
/// state): nobody asks for them.
pub(crate) fn forwardable(from: NodeId, req: &Request) -> Result<(), &'static str> {
    let member = match req {
        Request::Renew { member, .. }
        | Request::Release { member, .. }
        | Request::Health { member, .. }
        | Request::Maintenance { member, .. } => *member,
        Request::Acquire { .. } => return Err("an Acquire is proposed by the leader only"),
        Request::Probe => return Err("a Probe is proposed by the leader only"),
        Request::Group { .. } => return Err("a Group is proposed by the leader only"),
    };
    if member == from {
        Ok(())
    } else {
        Err("a peer proposes only for itself (the request names another member)")
    }
}

/// What an [`Inbound`] hands RPCs to once this node's openraft instance
/// runs.
#[derive(Clone)]
pub(crate) struct Core {
    pub(crate) raft: Raft<TypeConfig>,
    /// The end of this node's log, for pre-vote answers.
    pub(crate) tail: LogTail,
}

/// The receiving side of one node: hands RPCs to its openraft instance.
///
/// It may serve before that instance runs (the listener is bound first):
/// until it is started, openraft's RPCs and forwarded proposals are
/// refused and pre-votes answered "no".
#[derive(Clone)]
pub struct Inbound {
    me: NodeId,
    core: Arc<OnceLock<Core>>,
    counters: Arc<Counters>,
    /// Bound on handling one forwarded proposal, so a partitioned leader
    /// does not keep connection tasks forever.
    forward_timeout: Duration,
    /// What this node hears from leaders.
    watch: Arc<LeaderWatch>,
    /// openraft's leader lease (`election_max`), for pre-vote answers.
    leader_lease: Duration,
    /// The group id this node knows, for identity answers.
    group: GroupCell,
}

impl Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("me", &self.me)
            .field("started", &self.core.get().is_some())
            .finish()
    }
}

/// What a node that does not run openraft yet answers to openraft's RPCs.
const NOT_STARTED: &str = "raft not started on this voter (its store is being confirmed)";

impl Inbound {
    pub(crate) fn new(
        me: NodeId,
        counters: Arc<Counters>,
        forward_timeout: Duration,
        watch: Arc<LeaderWatch>,
        leader_lease: Duration,
        group: GroupCell,
    ) -> Self {
        Self {
            me,
            core: Arc::new(OnceLock::new()),
            counters,
            forward_timeout,
            watch,
            leader_lease,
            group,
        }
    }

    /// What this node tells a voter whose store is empty.
    fn identity(&self) -> GroupIdentity {
        let group = self.group.get();
        let Some(core) = self.core.get() else {
            return GroupIdentity {
                group,
                ..GroupIdentity::default()
            };
        };
        let m = core.raft.metrics().borrow().clone();
        GroupIdentity {
            group,
            running: true,
            term: m.current_term,
            vote: Some(m.vote),
            leader: m.current_leader,
            last_log_id: core.tail.last_log_id(),
            applied: m.last_applied,
        }
    }

    /// From now on, RPCs go to this openraft instance. Once only: a second
    /// call is ignored (and logged).
    pub(crate) fn start(&self, core: Core) {
        if self.core.set(core).is_err() {
            tracing::error!("raft inbound started twice; keeping the first instance");
        }
    }

    /// This node's answer to a pre-vote from `from` (see
    /// `network::prevote`). On the witness, a "no" because the member's
    /// log is behind while no leader is heard is also the rescue signal, as
    /// for a real vote request: the member could never win, and without
    /// the signal the witness would never stand for it.
    async fn pre_vote(&self, from: NodeId, candidate_log: Option<LogId<NodeId>>) -> PreVote {
        let Some(core) = self.core.get() else {
            return PreVote::NotRunning;
        };
        let me = self.me;
        let lease = self.leader_lease;
        let tail = core.tail.clone();
        let voter = core
            .raft
            .with_raft_state(move |st| Voter {
                me,
                state: st.server_state,
                vote: *st.vote_ref(),
                vote_at: st.vote_last_modified(),
                lease,
                last_log_id: tail.last_log_id(),
            })
            .await;
        let Ok(voter) = voter else {
            return PreVote::NotRunning;
        };
        let answer = prevote::answer(&voter, candidate_log, tokio::time::Instant::now());
        if answer == PreVote::LogBehind && self.me == WITNESS && self.watch.leader_silent() {
            tracing::debug!(
                candidate = from,
                "a member behind the witness's log asks for a pre-vote and no leader is heard"
            );
            self.watch.rescue.notify_one();
        }
        answer
    }

    /// The node this handler serves.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Counts a refused connection (for `PairMetrics::rejected_connections`).
    pub fn count_rejected(&self) {
        self.counters.bump_rejected();
    }

    /// Counts a connection closed at once because too many others have
    /// not said hello yet (for `PairMetrics::refused_unauthenticated`).
    pub fn count_refused_unauthenticated(&self) {
        self.counters.bump_refused_unauthenticated();
    }

    /// Handles one RPC from voter `from`.
    pub async fn handle(&self, from: NodeId, rpc: Rpc) -> Reply {
        if let Rpc::Identity = rpc {
            return Reply::Identity(self.identity());
        }
        let Some(core) = self.core.get() else {
            return match rpc {
                Rpc::PreVote { .. } => Reply::PreVote {
                    granted: false,
                    why: Some(format!("{:?}", PreVote::NotRunning)),
                },
                Rpc::Forward(_) => Reply::NotLeader { leader: None },
                Rpc::Vote(_) | Rpc::Append(_) | Rpc::Snapshot { .. } | Rpc::Identity => {
                    Reply::Failed(NOT_STARTED.into())
                }
            };
        };
        match rpc {
            Rpc::Vote(req) => {
                let candidate_log = req.last_log_id;
                match core.raft.vote(req).await {
                    Ok(r) => {
                        if r.vote_granted {
                            self.watch.voted();
                        } else if self.me == WITNESS
                            && r.last_log_id > candidate_log
                            && self.watch.leader_silent()
                        {
                            // Logged by the pair task when it stands (at
                            // most once per election_max).
                            tracing::debug!(
                                candidate = from,
                                "a member behind the witness's log asks for votes and no leader is heard"
                            );
                            self.watch.rescue.notify_one();
                        }
                        Reply::Vote(r)
                    }
                    Err(e) => Reply::Failed(e.to_string()),
                }
            }
            Rpc::Append(req) => {
                self.watch.append_arrived(req.vote);
                let witness_term = witness_log_term(&req);
                match core.raft.append_entries(req).await {
                    Ok(r) => {
                        match &r {
                            AppendEntriesResponse::Success => self.watch.leader_heard(witness_term),
                            AppendEntriesResponse::PartialSuccess(_)
                            | AppendEntriesResponse::Conflict => self.watch.leader_heard(None),
                            AppendEntriesResponse::HigherVote(_) => {}
                        }
                        Reply::Append(r)
                    }
                    Err(e) => Reply::Failed(e.to_string()),
                }
            }
            Rpc::Snapshot { vote, meta, data } => {
                let sent = vote;
                let snapshot = Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data)),
                };
                match core.raft.install_full_snapshot(vote, snapshot).await {
                    Ok(r) => {
                        if r.vote == sent {
                            self.watch.leader_heard(None);
                        }
                        Reply::Snapshot(r)
                    }
                    Err(e) => Reply::Failed(e.to_string()),
                }
            }
            Rpc::Identity => Reply::Identity(self.identity()),
            Rpc::PreVote { term, last_log_id } => {
                let answer = self.pre_vote(from, last_log_id).await;
                tracing::debug!(candidate = from, term, ?answer, "pre-vote");
                Reply::PreVote {
                    granted: answer == PreVote::Granted,
                    why: (answer != PreVote::Granted).then(|| format!("{answer:?}")),
                }
            }
            Rpc::Forward(req) => {
                if let Err(why) = forwardable(from, &req) {
                    self.counters.bump_rejected_forwards();
                    tracing::warn!(from, ?req, why, "forwarded proposal refused");
                    return Reply::Failed(format!("forward refused: {why}"));
                }
                // The witness never proposes on anyone's behalf, even during
                // the brief time it leads to rescue a member (see
                // `pair::rules::rescue`): refusing keeps its log still so the
                // member can take over.
                if self.me == WITNESS {
                    return Reply::NotLeader { leader: None };
                }
                tracing::trace!(from, ?req, "forwarded proposal");
                match tokio::time::timeout(self.forward_timeout, core.raft.client_write(req)).await
                {
                    Err(_) => Reply::Failed("forwarded proposal timed out".into()),
                    Ok(Ok(r)) => Reply::Forward(r.data),
                    Ok(Err(OpenraftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                        Reply::NotLeader {
                            leader: f.leader_id,
                        }
                    }
                    Ok(Err(e)) => Reply::Failed(e.to_string()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::Vote;

    use super::forwardable;
    use crate::types::Health;
    use crate::types::Request;
    use crate::types::MEMBER_A;
    use crate::types::MEMBER_B;
    use crate::types::WITNESS;

    #[test]
    fn a_peer_may_forward_only_its_own_renew_release_health_and_maintenance() {
        let own = |m| {
            [
                Request::Renew {
                    member: m,
                    incarnation: 7,
                    epoch: 3,
                },
                Request::Release {
                    member: m,
                    incarnation: 7,
                    epoch: 3,
                    lapsed: true,
                },
                Request::Health {
                    member: m,
                    incarnation: 7,
                    report: Health::default(),
                    stream_ok: Some(true),
                },
                Request::Maintenance {
                    member: m,
                    incarnation: 7,
                    on: true,
                },
            ]
        };
        for from in [MEMBER_A, MEMBER_B, WITNESS] {
            for req in own(from) {
                assert_eq!(forwardable(from, &req), Ok(()), "{from} {req:?}");
            }
            for other in [MEMBER_A, MEMBER_B, WITNESS, 0, 9] {
                if other != from {
                    for req in own(other) {
                        assert!(forwardable(from, &req).is_err(), "{from} {req:?}");
                    }
                }
            }
            let acquire = Request::Acquire {
                member: from,
                incarnation: 7,
                expect_epoch: 3,
                expect_renew_index: 30,
            };
            assert!(forwardable(from, &acquire).is_err(), "even for itself");
            assert!(forwardable(from, &Request::Probe).is_err());
            assert!(forwardable(from, &Request::Group { id: 5 }).is_err());
        }
    }

    #[test]
    fn the_witness_wins_a_tie_with_a_member_in_the_same_term() {
        // The rescue relies on it (see `pair::rules::rescue`): openraft
        // orders the votes of one term by node id unless
        // "single-term-leader" is enabled.
        for m in [MEMBER_A, MEMBER_B] {
            assert!(Vote::new(7, WITNESS) > Vote::new(7, m));
            assert!(Vote::new(7, WITNESS) < Vote::new(8, m));
        }
    }
}
