//! The proposals the pair task spawns (renewals, health reports, grants,
//! releases, the leader's probe) and what it does with their outcomes when
//! they come back into the loop.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use openraft::error::ClientWriteError;
use openraft::error::RaftError as OpenraftError;
use openraft::LogId;
use openraft::Raft;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Driver;
use crate::decide::decide;
use crate::decide::Action;
use crate::decide::DecisionInput;
use crate::decide::MemberStatus;
use crate::decide::ReleaseReason;
use crate::error::CallError;
use crate::error::ProposeError;
use crate::error::RaftError;
use crate::network::Reply;
use crate::network::Rpc;
use crate::network::Transport;
use crate::pair::rules::Stand;
use crate::types::new_incarnation;
use crate::types::Health;
use crate::types::NodeId;
use crate::types::Request;
use crate::types::Response;
use crate::types::TypeConfig;
use crate::types::MEMBERS;
use crate::types::NO_INCARNATION;
use crate::types::VOTERS;

/// How long an operator's request (maintenance) may take to commit: a
/// person waits seconds, and no lease depends on it.
const OPERATOR_DEADLINE: Duration = Duration::from_secs(5);

/// Renewals in flight at once: enough to ride out one slow commit without
/// a gap, few enough that a stalled leader does not pile up proposals.
const MAX_RENEW_INFLIGHT: usize = 3;

/// Proposes `req`: locally if this node leads, else (when `forward`) on
/// the leader through [`Rpc::Forward`]. At most `timeout`.
pub(super) async fn propose(
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

/// What the other voters answered to a pre-vote.
#[derive(Debug, Default)]
pub(super) struct PreVoteAnswers {
    /// Each voter asked and its answer: `Ok(())` for a yes, else why not
    /// (its reason, or the RPC's error).
    pub(super) answers: Vec<(NodeId, Result<(), String>)>,
}

impl PreVoteAnswers {
    /// Some other voter would vote for this member: with its own vote, a
    /// majority of the three.
    pub(super) fn granted(&self) -> bool {
        self.answers.iter().any(|(_, a)| a.is_ok())
    }
}

impl std::fmt::Display for PreVoteAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (id, a)) in self.answers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match a {
                Ok(()) => write!(f, "{id}: yes")?,
                Err(why) => write!(f, "{id}: {why}")?,
            }
        }
        Ok(())
    }
}

/// Asks the other voters whether they would vote for `me` now (see
/// `network::prevote`), all at once, each for at most `timeout`; returns
/// at the first yes (one is enough), else once every voter answered or
/// failed.
pub(super) async fn pre_vote(
    transport: Arc<dyn Transport>,
    me: NodeId,
    term: u64,
    last_log_id: Option<LogId<NodeId>>,
    timeout: Duration,
) -> PreVoteAnswers {
    let mut calls: FuturesUnordered<_> = VOTERS
        .into_iter()
        .filter(|&v| v != me)
        .map(|v| {
            let call = transport.call(v, Rpc::PreVote { term, last_log_id }, timeout);
            async move { (v, call.await) }
        })
        .collect();
    let mut out = PreVoteAnswers::default();
    while let Some((v, reply)) = calls.next().await {
        let answer = match reply {
            Ok(Reply::PreVote { granted: true, .. }) => Ok(()),
            Ok(Reply::PreVote { why, .. }) => Err(why.unwrap_or_else(|| "no".into())),
            Ok(other) => Err(format!("unexpected reply {other:?}")),
            Err(e) => Err(e.to_string()),
        };
        let yes = answer.is_ok();
        out.answers.push((v, answer));
        if yes {
            break;
        }
    }
    out
}

/// The result of a spawned proposal, back in the loop.
pub(super) enum Outcome {
    /// A pre-vote answered (not a proposal, but spawned the same way so
    /// the loop never waits on the network).
    PreVote {
        stand: Stand,
        asked_at: Instant,
        answers: PreVoteAnswers,
    },
    Probe {
        term: u64,
        result: Result<Response, ProposeError>,
    },
    Renew {
        term: u64,
        epoch: u64,
        /// When it was sent, on the lease clock (`None`: unreadable, and
        /// the renewal extends nothing).
        sent: Option<Duration>,
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
    Maintenance {
        on: bool,
        reply: oneshot::Sender<Result<(), RaftError>>,
        result: Result<Response, ProposeError>,
    },
    Group {
        id: u64,
        result: Result<Response, ProposeError>,
    },
}

impl Driver {
    pub(super) fn maybe_renew(&mut self, now: Instant) {
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
        // Read before the proposal leaves: the lease counts from no later
        // than the send. On the lease clock (BOOTTIME), not tokio's: see
        // `lease`.
        let sent = self.lease.clock_now();
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

    pub(super) fn maybe_report_health(&mut self, now: Instant) {
        let term = self.metrics.current_term;
        if self.health_inflight == Some(term) {
            return;
        }
        let h = (self.effective_health(), *self.stream_rx.borrow());
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
        let (report, stream_ok) = h;
        let fut = self.propose_fut(
            Request::Health {
                member: self.me,
                incarnation: self.incarnation,
                report,
                stream_ok,
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

    pub(super) fn decision_input(&self, now: Instant) -> DecisionInput {
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
                        stream_ok: st.stream_ok.get(&m).copied(),
                        stream_bad_streak: local.stream_bad_streak.get(&m).copied().unwrap_or(0),
                        stream_good_streak: local.stream_good_streak.get(&m).copied().unwrap_or(0),
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

    pub(super) fn run_decisions(&mut self, now: Instant) {
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
    pub(super) fn release(&mut self, reason: ReleaseReason) {
        if !self.named_active() {
            return;
        }
        let st = &self.applied.state;
        if self.released_epoch != Some(st.epoch) {
            tracing::info!(epoch = st.epoch, ?reason, "releasing the role");
            self.released_epoch = Some(st.epoch);
            self.release_lapsed = reason == ReleaseReason::Lapsed;
            self.lease.revoke();
            self.lease_epoch = None;
        }
        self.send_release();
    }

    pub(super) fn retry_release(&mut self) {
        if self.named_active()
            && self.released_epoch == Some(self.applied.state.epoch)
            && Instant::now() >= self.next_release_at
        {
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
        // Retries at the renewal pace: often enough that the role is
        // vacant soon after a leader is back, never in a tight loop.
        self.next_release_at = Instant::now() + self.timing.renew;
        let fut = self.propose_fut(
            Request::Release {
                member: self.me,
                incarnation: self.incarnation,
                epoch,
                lapsed: self.release_lapsed,
            },
            self.timing.rpc_timeout,
            true,
        );
        self.spawn(async move { Outcome::Release { result: fut.await } });
    }

    /// The leader gives a group that has no id one: a random number, the
    /// first committed wins (see `store::identity`). Every voter learns it
    /// by applying it, so that an emptied voter can later tell an existing
    /// group from a brand-new pair.
    pub(super) fn maybe_name_group(&mut self) {
        if !self.am_leader() || self.applied.state.group.is_some() || self.group_inflight {
            return;
        }
        self.group_inflight = true;
        let id = new_incarnation();
        let fut = self.propose_fut(Request::Group { id }, self.timing.rpc_timeout, false);
        self.spawn(async move {
            Outcome::Group {
                id,
                result: fut.await,
            }
        });
    }

    /// Proposes this member's maintenance flag; `reply` gets the outcome.
    /// An operator's request, so it rides out a leader election or a slow
    /// commit by proposing again until [`OPERATOR_DEADLINE`] (the flag is
    /// set, not toggled: proposing it twice is harmless); each try has the
    /// RPC timeout. Answered at once, as before, it failed whenever the
    /// raft leader had just died or a commit took over 250 ms under load
    /// (CI: "proposal failed: timed out" taking a member out of
    /// maintenance right after the active died).
    pub(super) fn propose_maintenance(
        &mut self,
        on: bool,
        reply: oneshot::Sender<Result<(), RaftError>>,
    ) {
        tracing::info!(on, "maintenance");
        let req = Request::Maintenance {
            member: self.me,
            incarnation: self.incarnation,
            on,
        };
        let (raft, transport, me) = (self.raft.clone(), self.transport.clone(), self.me);
        let rpc = self.timing.rpc_timeout;
        self.spawn(async move {
            let deadline = Instant::now() + OPERATOR_DEADLINE;
            let result = loop {
                let r = propose(
                    raft.clone(),
                    transport.clone(),
                    me,
                    req.clone(),
                    rpc,
                    true,
                )
                .await;
                match r {
                    Err(e) if e.is_transient() && Instant::now() + rpc < deadline => {
                        tracing::debug!(error = %e, "maintenance not committed yet; proposing again");
                        tokio::time::sleep(rpc / 5).await;
                    }
                    other => break other,
                }
            };
            Outcome::Maintenance { on, reply, result }
        });
    }

    pub(super) fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::PreVote {
                stand,
                asked_at,
                answers,
            } => self.on_pre_vote(stand, asked_at, answers),
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
                        // A renewal that commits after the lease ran out does
                        // not revive it: the epoch is released (see
                        // `check_lapse`), so the test below fails.
                        self.check_lapse();
                        let still_mine = self.named_active() && self.applied.state.epoch == epoch;
                        if let Some(sent) =
                            sent.filter(|_| still_mine && self.released_epoch != Some(epoch))
                        {
                            self.lease.extend_to(sent + self.timing.lease, epoch);
                            // A renewal that answers after its own window
                            // (sent + lease) proves nothing for now: the
                            // lease is held only if it is valid, so a slow
                            // first renewal is not taken for a lapse.
                            if self.lease.is_valid() && self.lease_epoch != Some(epoch) {
                                tracing::info!(epoch, "lease held");
                                self.lease_epoch = Some(epoch);
                            }
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
            Outcome::Group { id, result } => {
                self.group_inflight = false;
                match result {
                    Ok(Response::Ok) => tracing::info!(
                        group = %format_args!("{id:016x}"),
                        "named the raft group"
                    ),
                    Ok(other) => tracing::debug!(?other, "the group already has an id"),
                    Err(e) => tracing::debug!(error = %e, "group id not committed"),
                }
            }
            Outcome::Maintenance { on, reply, result } => {
                let answer = match result {
                    Ok(Response::Ok) => Ok(()),
                    Ok(other) => Err(RaftError::Refused(format!(
                        "maintenance {on}: the state machine answered {other:?}"
                    ))),
                    Err(e) => Err(RaftError::Propose(e)),
                };
                if let Err(e) = &answer {
                    tracing::warn!(on, error = %e, "maintenance not committed");
                }
                let _ = reply.send(answer);
            }
        }
    }
}
