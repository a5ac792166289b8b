//! Role decisions as a pure function: applied state and local observations
//! in, proposals out. The pair task gathers the inputs, calls [`decide`]
//! every turn and carries the actions out; nothing here does I/O or reads a
//! clock, so every rule is tested below without sockets.
//!
//! Two kinds of rules:
//! - leader side (`am_leader`: this node leads and has applied everything
//!   committed before its term): who gets the role, via `Acquire`;
//! - active side (the state names this member *and* this process's
//!   incarnation): when to give it up, via `Release`.
//!
//! A state naming this member under another incarnation names a previous
//! process of this member (it restarted): this process is not active and
//! releases nothing; the leader treats that activation as dead once
//! `grace` has passed without renewals (nobody can renew it any more) and
//! grants the role afresh, possibly to the restarted member itself, with a
//! larger epoch.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::state::PairState;
use crate::timing::Timing;
use crate::types::is_member;
use crate::types::other_member;
use crate::types::Health;
use crate::types::Incarnation;
use crate::types::NodeId;
use crate::types::MEMBERS;

/// What the deciding node knows about one member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its last replicated health report, if any.
    pub health: Option<Health>,
    /// Time since this node applied that report; `None` if it never did
    /// (e.g. since it restarted): then the member is not alive here.
    pub since_report: Option<Duration>,
    /// Consecutive reports with `plc_ok == Some(false)`, as applied here.
    pub plc_bad_streak: u32,
    /// Its last replicated stream report (`None`: not reported; see
    /// [`Pair::report_stream`](crate::Pair::report_stream)).
    pub stream_ok: Option<bool>,
    /// Consecutive reports with `stream_ok == Some(false)`, as applied here.
    pub stream_bad_streak: u32,
    /// Consecutive reports with `stream_ok == Some(true)`, as applied here.
    pub stream_good_streak: u32,
    /// Time since the member last lost the role (released, or another was
    /// granted), as applied here.
    pub since_lost_role: Option<Duration>,
    /// Time since the member was last granted the role, as applied here.
    pub since_gained_role: Option<Duration>,
}

/// Everything a decision depends on.
#[derive(Clone, Debug)]
pub struct DecisionInput {
    /// The deciding node.
    pub me: NodeId,
    /// The deciding process's incarnation.
    pub incarnation: Incarnation,
    /// This node is the leader and its probe committed in this term.
    pub am_leader: bool,
    /// The state as applied on this node (its `incarnations` are each
    /// member's latest reported incarnation).
    pub state: PairState,
    /// Time since this node applied the entry that last moved
    /// `state.renew_index` (a Renew or an Acquire).
    pub since_last_renewal: Duration,
    /// Time since this node leads with a current state (its probe
    /// committed); `None` when it does not lead. Another member is alive
    /// for a leader only on a report it applied since then: a report from
    /// before may come from a member that froze, or was cut off, together
    /// with the previous leader, and `health_fresh` is long.
    pub since_leading: Option<Duration>,
    /// Members 1 and 2; a missing entry counts as "never heard of".
    pub members: BTreeMap<NodeId, MemberStatus>,
    /// The member the topology prefers, if any.
    pub prefer: Option<NodeId>,
    /// Thresholds.
    pub timing: Timing,
}

/// Why the active member gives the role up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseReason {
    /// It reports itself not ready while the other member is.
    NotReady,
    /// Its PLC link failed repeatedly while the other member's is fine.
    FieldHealth,
    /// It could not use its own stream (append as the active) for
    /// `field_bad_reports` reports in a row while the other member reads
    /// its stream fine: a member whose bus is frozen or cut while raft is
    /// fine would otherwise keep the role while its node falls silent.
    StreamHealth,
    /// The topology prefers the other member, which is back and no worse.
    Preferred,
    /// The service asked (`Pair::step_down`, `Pair::switchover`); never
    /// produced by [`decide`].
    Requested,
    /// It is in maintenance (`Pair::set_maintenance`) and the other member
    /// can take the role.
    Maintenance,
    /// Its lease ran out without a committed renewal while the state still
    /// named it: that epoch is over for it (see the crate's lease rule);
    /// never produced by [`decide`].
    Lapsed,
}

/// A proposal the pair task should make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Leader: grant the role to `candidate` (CAS on the applied epoch and
    /// renew index).
    ProposeAcquire {
        /// The member to grant the role to.
        candidate: NodeId,
    },
    /// Active member: give the role up.
    ProposeRelease {
        /// Why.
        reason: ReleaseReason,
    },
}

impl DecisionInput {
    fn status(&self, id: NodeId) -> MemberStatus {
        self.members.get(&id).cloned().unwrap_or_default()
    }

    fn alive(&self, id: NodeId) -> bool {
        self.status(id).since_report.is_some_and(|d| {
            d < self.timing.health_fresh
                && (id == self.me || self.since_leading.is_none_or(|l| d <= l))
        })
    }

    fn ready(&self, id: NodeId) -> bool {
        self.status(id).health.is_some_and(|h| h.ready)
    }

    /// May be granted the role: a member, ready, heard from recently, and
    /// not in maintenance.
    pub(crate) fn eligible(&self, id: NodeId) -> bool {
        is_member(id) && self.ready(id) && self.alive(id) && !self.state.maintenance.contains(&id)
    }

    fn plc_bad(&self, id: NodeId) -> bool {
        self.status(id)
            .health
            .is_some_and(|h| h.plc_ok == Some(false))
    }

    fn stream_bad(&self, id: NodeId) -> bool {
        self.status(id).stream_ok == Some(false)
    }

    /// `a`'s links are worse than `b`'s: its PLC link or its stream is down
    /// while `b`'s is not; only "down" versus "not down" counts (a member
    /// without a PLC, or that does not report its stream, is not worse than
    /// one that does).
    fn worse(&self, a: NodeId, b: NodeId) -> bool {
        (self.plc_bad(a) && !self.plc_bad(b)) || (self.stream_bad(a) && !self.stream_bad(b))
    }

    /// The state names this process active.
    fn i_am_active(&self) -> bool {
        self.state.names_active(self.me, self.incarnation)
    }

    fn recently_lost(&self, id: NodeId) -> bool {
        self.status(id)
            .since_lost_role
            .is_some_and(|d| d < self.timing.flap_hold)
    }

    fn recently_gained(&self, id: NodeId) -> bool {
        self.status(id)
            .since_gained_role
            .is_some_and(|d| d < self.timing.flap_hold)
    }

    /// The member to grant a vacant role to.
    fn pick_candidate(&self) -> Option<NodeId> {
        let eligible: Vec<NodeId> = MEMBERS.into_iter().filter(|&m| self.eligible(m)).collect();
        // No flapping: skip a member that just lost the role, unless it is
        // the only one that can take it. If every candidate lost it
        // recently, the one that lost it last is "the same member": take
        // the other.
        let settled: Vec<NodeId> = eligible
            .iter()
            .copied()
            .filter(|&m| !self.recently_lost(m))
            .collect();
        let pool: Vec<NodeId> = if settled.is_empty() {
            eligible
                .iter()
                .copied()
                .max_by_key(|&m| self.status(m).since_lost_role)
                .into_iter()
                .collect()
        } else {
            settled
        };
        if let Some(p) = self.prefer.filter(|p| pool.contains(p)) {
            if !pool.iter().any(|&o| o != p && self.worse(p, o)) {
                return Some(p);
            }
        }
        // Sticky: the member whose lease lapsed (it released that epoch, it
        // did not give the role up for cause) gets it back, with a new
        // epoch, unless its field link is worse.
        if let Some(l) = self.state.lapsed.filter(|l| pool.contains(l)) {
            if !pool.iter().any(|&o| o != l && self.worse(l, o)) {
                return Some(l);
            }
        }
        pool.iter()
            .copied()
            .find(|&m| !self.plc_bad(m) && !self.stream_bad(m))
            .or_else(|| pool.iter().copied().find(|&m| !self.plc_bad(m)))
            .or_else(|| pool.first().copied())
    }
}

/// The proposals this node should make now. Empty most of the time.
pub fn decide(input: &DecisionInput) -> Vec<Action> {
    let mut actions = Vec::new();
    let state = &input.state;

    if input.am_leader {
        match state.active {
            None => {
                // A vacant role waits out `grace` too (except in a group that
                // never had an active): the member that released it revoked
                // its lease first, but a side effect it checked just before
                // may still be in flight (bounded by `margin`), and the
                // safety inequality covers only grants that come `grace`
                // after the last successful renewal.
                let waited = state.epoch == 0 || input.since_last_renewal >= input.timing.grace;
                if let Some(candidate) = input.pick_candidate().filter(|_| waited) {
                    actions.push(Action::ProposeAcquire { candidate });
                }
            }
            Some(active) => {
                // The active's renewals stopped long enough that its lease
                // has certainly run out: hand over, if there is anyone to
                // hand over to (sticky otherwise: it may renew again).
                if input.since_last_renewal >= input.timing.grace {
                    if state.active_superseded() {
                        // The member restarted: the process the role was
                        // granted to is gone and nobody can renew it. The
                        // role is vacant in all but name; the restarted
                        // member is a candidate like any other.
                        if let Some(candidate) = input.pick_candidate() {
                            actions.push(Action::ProposeAcquire { candidate });
                        }
                    } else if let Some(other) = other_member(active).filter(|&o| input.eligible(o))
                    {
                        actions.push(Action::ProposeAcquire { candidate: other });
                    }
                }
            }
        }
    }

    if input.i_am_active() {
        if let Some(other) = other_member(input.me).filter(|&o| input.eligible(o)) {
            let mine = input.status(input.me);
            let not_ready = mine.health.as_ref().is_some_and(|h| !h.ready);
            // An operator's decision: at once, whatever the flap hold.
            if state.maintenance.contains(&input.me) {
                actions.push(Action::ProposeRelease {
                    reason: ReleaseReason::Maintenance,
                });
            } else if not_ready {
                actions.push(Action::ProposeRelease {
                    reason: ReleaseReason::NotReady,
                });
            } else if !input.recently_gained(input.me) {
                let theirs = input.status(other);
                let field_bad = mine.plc_bad_streak >= input.timing.field_bad_reports
                    && input.plc_bad(input.me)
                    && theirs
                        .health
                        .as_ref()
                        .is_some_and(|h| h.plc_ok == Some(true));
                // The same rule for the stream, never to a member that
                // cannot use its own either, nor to one that only got it
                // back first: it must have reached the stream all along
                // while this member could not (its good streak longer than
                // this member's bad one). When the stream's leader is lost
                // (the witness's server dies) both lose the stream at once
                // and regain it a few milliseconds apart, after JetStream's
                // election; the first to get it back is no better a writer
                // (found by `bench failover`: the role moved in 3 of 5
                // witness kills).
                let stream_bad = mine.stream_bad_streak >= input.timing.field_bad_reports
                    && input.stream_bad(input.me)
                    && theirs.stream_ok == Some(true)
                    && theirs.stream_good_streak > mine.stream_bad_streak;
                if field_bad {
                    actions.push(Action::ProposeRelease {
                        reason: ReleaseReason::FieldHealth,
                    });
                } else if stream_bad {
                    actions.push(Action::ProposeRelease {
                        reason: ReleaseReason::StreamHealth,
                    });
                } else if input.prefer == Some(other) && !input.worse(other, input.me) {
                    actions.push(Action::ProposeRelease {
                        reason: ReleaseReason::Preferred,
                    });
                }
            }
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn healthy(plc_ok: Option<bool>) -> MemberStatus {
        MemberStatus {
            health: Some(Health {
                plc_ok,
                life_sign: None,
                ready: true,
            }),
            since_report: Some(MS(100)),
            plc_bad_streak: u32::from(plc_ok == Some(false)),
            stream_ok: None,
            stream_bad_streak: 0,
            stream_good_streak: 0,
            since_lost_role: None,
            since_gained_role: None,
        }
    }

    /// A healthy member whose stream report is `stream_ok`, `streak` bad
    /// ones in a row (a good report: good for long).
    fn streaming(stream_ok: Option<bool>, streak: u32) -> MemberStatus {
        MemberStatus {
            stream_ok,
            stream_bad_streak: streak,
            stream_good_streak: if stream_ok == Some(true) { 1000 } else { 0 },
            ..healthy(None)
        }
    }

    fn not_ready() -> MemberStatus {
        let mut s = healthy(None);
        if let Some(h) = s.health.as_mut() {
            h.ready = false;
        }
        s
    }

    fn silent() -> MemberStatus {
        MemberStatus {
            since_report: Some(MS(1500)),
            ..healthy(None)
        }
    }

    type IncFn = fn(NodeId) -> Incarnation;

    /// The incarnation member `m` runs as in these tests.
    fn inc(m: NodeId) -> Incarnation {
        100 + m
    }

    /// A restarted process of member `m`.
    fn next(m: NodeId) -> Incarnation {
        200 + m
    }

    /// Leader input with no active and both members healthy.
    fn vacant() -> DecisionInput {
        DecisionInput {
            me: 1,
            incarnation: inc(1),
            am_leader: true,
            state: PairState {
                incarnations: BTreeMap::from([(1, inc(1)), (2, inc(2))]),
                ..PairState::default()
            },
            since_last_renewal: MS(0),
            since_leading: Some(MS(5000)),
            members: BTreeMap::from([(1, healthy(None)), (2, healthy(None))]),
            prefer: None,
            timing: Timing::default(),
        }
    }

    fn with_active(active: NodeId, me: NodeId, am_leader: bool) -> DecisionInput {
        let mut i = vacant();
        i.me = me;
        i.incarnation = inc(me);
        i.am_leader = am_leader;
        i.state.active = Some(active);
        i.state.active_incarnation = inc(active);
        i.state.epoch = 4;
        i.state.renew_index = 40;
        i
    }

    fn edit(i: &mut DecisionInput, id: NodeId, f: impl FnOnce(&mut MemberStatus)) {
        if let Some(s) = i.members.get_mut(&id) {
            f(s);
        }
    }

    fn acquire(candidate: NodeId) -> Vec<Action> {
        vec![Action::ProposeAcquire { candidate }]
    }

    fn release(reason: ReleaseReason) -> Vec<Action> {
        vec![Action::ProposeRelease { reason }]
    }

    // ---- vacant role -------------------------------------------------------

    #[test]
    fn vacant_role_goes_to_the_lowest_id_by_default() {
        assert_eq!(decide(&vacant()), acquire(1));
    }

    #[test]
    fn a_role_released_is_granted_only_after_grace() {
        // Member 1 held the role at epoch 4 and released it (prefer, field
        // health, step_down): its last renewal was applied 349 ms ago.
        let mut i = vacant();
        i.state.epoch = 4;
        i.state.renew_index = 40;
        edit(&mut i, 1, |s| s.since_lost_role = Some(MS(5)));
        i.since_last_renewal = MS(0);
        assert!(decide(&i).is_empty(), "no grant right after the release");
        i.since_last_renewal = MS(349);
        assert!(
            decide(&i).is_empty(),
            "a side effect may still be in flight"
        );
        i.since_last_renewal = MS(350);
        assert_eq!(decide(&i), acquire(2));
        // The released member alone: the same wait, then it is granted again.
        i.members.insert(2, not_ready());
        i.since_last_renewal = MS(349);
        assert!(decide(&i).is_empty());
        i.since_last_renewal = MS(350);
        assert_eq!(decide(&i), acquire(1));
    }

    #[test]
    fn a_member_whose_lease_lapsed_gets_the_role_back_first() {
        // Member 2's lease lapsed at epoch 4; it released that epoch.
        let mut i = vacant();
        i.state.epoch = 4;
        i.state.lapsed = Some(2);
        i.since_last_renewal = MS(349);
        assert!(decide(&i).is_empty(), "after grace, like any grant");
        i.since_last_renewal = MS(350);
        assert_eq!(decide(&i), acquire(2), "not the lowest id: sticky");
        // Prefer still wins, and a worse field link loses.
        i.prefer = Some(1);
        assert_eq!(decide(&i), acquire(1));
        i.prefer = None;
        i.members.insert(2, healthy(Some(false)));
        i.members.insert(1, healthy(Some(true)));
        assert_eq!(decide(&i), acquire(1));
        // Not fit: the other member.
        i.members.insert(2, not_ready());
        assert_eq!(decide(&i), acquire(1));
    }

    #[test]
    fn a_group_that_never_had_an_active_grants_at_once() {
        let i = vacant();
        assert_eq!((i.state.epoch, i.since_last_renewal), (0, MS(0)));
        assert_eq!(decide(&i), acquire(1));
    }

    #[test]
    fn only_the_leader_grants() {
        let mut i = vacant();
        i.am_leader = false;
        assert!(decide(&i).is_empty());
    }

    #[test]
    fn vacant_role_prefers_prefer() {
        let mut i = vacant();
        i.prefer = Some(2);
        assert_eq!(decide(&i), acquire(2));
    }

    #[test]
    fn vacant_role_avoids_a_failed_plc_link() {
        let mut i = vacant();
        i.members.insert(1, healthy(Some(false)));
        i.members.insert(2, healthy(Some(true)));
        assert_eq!(decide(&i), acquire(2));
        // Even over prefer: the preferred member's link is worse.
        i.prefer = Some(1);
        assert_eq!(decide(&i), acquire(2));
        // Both bad: lowest id (or prefer).
        i.members.insert(2, healthy(Some(false)));
        assert_eq!(decide(&i), acquire(1));
        i.prefer = Some(2);
        assert_eq!(decide(&i), acquire(2));
    }

    #[test]
    fn vacant_role_needs_ready_and_alive() {
        let mut i = vacant();
        i.members.insert(1, not_ready());
        assert_eq!(decide(&i), acquire(2));
        i.members.insert(2, silent());
        assert!(decide(&i).is_empty(), "nobody ready and alive");
        i.members.insert(2, MemberStatus::default());
        assert!(decide(&i).is_empty(), "never heard of 2");
        i.members.clear();
        assert!(decide(&i).is_empty());
    }

    #[test]
    fn the_witness_is_never_a_candidate() {
        let mut i = vacant();
        i.members = BTreeMap::from([(3, healthy(Some(true)))]);
        i.prefer = Some(3);
        assert!(decide(&i).is_empty());
        i.members.insert(1, healthy(None));
        assert_eq!(decide(&i), acquire(1));
    }

    #[test]
    fn no_flapping_skips_a_member_that_just_lost_the_role() {
        let mut i = vacant();
        edit(&mut i, 1, |s| s.since_lost_role = Some(MS(500)));
        assert_eq!(decide(&i), acquire(2));
        // Even if preferred.
        i.prefer = Some(1);
        assert_eq!(decide(&i), acquire(2));
        // Unless it is the only ready one.
        i.members.insert(2, not_ready());
        assert_eq!(decide(&i), acquire(1));
        // And the hold ends.
        i.members.insert(2, healthy(None));
        edit(&mut i, 1, |s| s.since_lost_role = Some(MS(2000)));
        assert_eq!(decide(&i), acquire(1));
    }

    #[test]
    fn no_flapping_when_both_lost_the_role_recently_the_earlier_loser_wins() {
        // 2 handed over to 1 (not ready) a second ago; 1 just released.
        let mut i = vacant();
        edit(&mut i, 2, |s| s.since_lost_role = Some(MS(1000)));
        edit(&mut i, 1, |s| s.since_lost_role = Some(MS(5)));
        assert_eq!(decide(&i), acquire(2));
        edit(&mut i, 2, |s| s.since_lost_role = Some(MS(4)));
        assert_eq!(decide(&i), acquire(1));
    }

    // ---- active exists, leader side ----------------------------------------

    #[test]
    fn a_renewing_active_keeps_the_role() {
        let mut i = with_active(1, 2, true);
        i.since_last_renewal = MS(349);
        assert!(decide(&i).is_empty());
    }

    #[test]
    fn after_grace_the_other_member_is_granted() {
        let mut i = with_active(1, 2, true);
        i.since_last_renewal = MS(350);
        assert_eq!(decide(&i), acquire(2));
        // Also when the leader is the witness-less other... any leader.
        i.me = 1;
        assert_eq!(decide(&i), acquire(2));
    }

    #[test]
    fn after_grace_nobody_unfit_is_granted() {
        let mut i = with_active(1, 1, true);
        i.since_last_renewal = MS(5000);
        i.members.insert(2, not_ready());
        assert!(decide(&i).is_empty());
        i.members.insert(2, silent());
        assert!(decide(&i).is_empty());
        i.members.remove(&2);
        assert!(decide(&i).is_empty());
    }

    #[test]
    fn after_grace_the_only_candidate_is_granted_even_if_it_just_lost_the_role() {
        let mut i = with_active(1, 1, true);
        i.since_last_renewal = MS(400);
        edit(&mut i, 2, |s| s.since_lost_role = Some(MS(10)));
        assert_eq!(decide(&i), acquire(2));
    }

    #[test]
    fn a_new_leader_grants_another_member_only_on_a_report_it_applied_since() {
        // 2 leads since 50 ms; active 2 stopped renewing; 1's last report is
        // 100 ms old: it may have frozen with the previous leader.
        let mut i = with_active(2, 2, true);
        i.since_last_renewal = MS(400);
        i.since_leading = Some(MS(50));
        assert!(decide(&i).is_empty());
        edit(&mut i, 1, |s| s.since_report = Some(MS(20)));
        assert_eq!(decide(&i), acquire(1));
        // Its own report counts whenever it was applied.
        let mut i = vacant();
        i.since_leading = Some(MS(10));
        assert_eq!(decide(&i), acquire(1));
        i.me = 2;
        i.incarnation = inc(2);
        assert_eq!(decide(&i), acquire(2));
    }

    #[test]
    fn a_follower_never_grants() {
        let mut i = with_active(1, 2, false);
        i.since_last_renewal = MS(5000);
        assert!(decide(&i).is_empty());
    }

    // ---- a restarted active ----------------------------------------------

    /// Member `m` was active as `inc(m)` and restarted: its new process
    /// `next(m)` reported itself. `me` decides as its current process.
    fn restarted(m: NodeId, me: NodeId) -> DecisionInput {
        let mut i = with_active(m, me, true);
        i.state.incarnations.insert(m, next(m));
        if me == m {
            i.incarnation = next(m);
        }
        i
    }

    #[test]
    fn a_restarted_active_alone_is_granted_the_role_again_after_grace() {
        // Only the restarted member (leading) and the witness are up.
        let mut i = restarted(2, 2);
        i.members.insert(1, MemberStatus::default());
        i.since_last_renewal = MS(349);
        assert!(decide(&i).is_empty(), "its predecessor's lease may run");
        i.since_last_renewal = MS(350);
        assert_eq!(decide(&i), acquire(2));
        // Whoever leads.
        i.me = 1;
        i.incarnation = inc(1);
        assert_eq!(decide(&i), acquire(2));
    }

    #[test]
    fn a_restarted_active_leaves_a_vacant_role_in_all_but_name() {
        // Both members up: the vacant-role rules pick, as for a release.
        let mut i = restarted(2, 1);
        i.since_last_renewal = MS(400);
        assert_eq!(decide(&i), acquire(1), "lowest id");
        i.prefer = Some(2);
        assert_eq!(decide(&i), acquire(2));
        i.members.insert(2, not_ready());
        assert_eq!(decide(&i), acquire(1));
        i.members.insert(1, silent());
        assert!(decide(&i).is_empty(), "nobody fit");
    }

    #[test]
    fn a_current_active_is_not_superseded() {
        // Same incarnation reported, or none reported: the usual rule (only
        // the other member, and only if fit).
        let mut i = with_active(2, 2, true);
        i.members.insert(1, MemberStatus::default());
        i.since_last_renewal = MS(5000);
        assert!(decide(&i).is_empty());
        i.state.incarnations.clear();
        assert!(decide(&i).is_empty());
    }

    #[test]
    fn a_restarted_member_does_not_act_for_its_predecessor() {
        // The state names member 2 as its old process; the new process
        // would release for prefer or readiness if it were the active.
        let mut i = restarted(2, 2);
        i.am_leader = false;
        i.prefer = Some(1);
        assert!(decide(&i).is_empty());
        i.members.insert(2, not_ready());
        assert!(decide(&i).is_empty());
        // Its predecessor (same member, old incarnation) would have.
        i.incarnation = inc(2);
        assert_eq!(decide(&i), release(ReleaseReason::NotReady));
    }

    // ---- sticky ------------------------------------------------------------

    #[test]
    fn sticky_a_returning_member_does_not_take_the_role() {
        // 2 is active and renewing; 1 came back healthy, no prefer.
        let mut i = with_active(2, 2, false);
        edit(&mut i, 2, |s| s.since_gained_role = Some(MS(60_000)));
        assert!(decide(&i).is_empty());
        i.me = 1;
        i.am_leader = true;
        assert!(decide(&i).is_empty());
        // Prefer naming the active does not move it either.
        i.prefer = Some(2);
        i.me = 2;
        assert!(decide(&i).is_empty());
    }

    #[test]
    fn prefer_makes_the_active_release_to_the_preferred_member() {
        let mut i = with_active(2, 2, false);
        i.prefer = Some(1);
        assert_eq!(decide(&i), release(ReleaseReason::Preferred));
        // Only the active decides that.
        i.me = 1;
        assert!(decide(&i).is_empty());
    }

    #[test]
    fn prefer_waits_for_the_preferred_member_to_be_fit_and_no_worse() {
        let mut i = with_active(2, 2, false);
        i.prefer = Some(1);
        i.members.insert(1, not_ready());
        assert!(decide(&i).is_empty());
        i.members.insert(1, silent());
        assert!(decide(&i).is_empty());
        i.members.insert(1, healthy(Some(false)));
        i.members.insert(2, healthy(Some(true)));
        assert!(
            decide(&i).is_empty(),
            "preferred member's PLC link is worse"
        );
        i.members.insert(1, healthy(None));
        assert_eq!(decide(&i), release(ReleaseReason::Preferred));
    }

    #[test]
    fn no_flapping_a_fresh_active_does_not_release_voluntarily() {
        let mut i = with_active(2, 2, false);
        i.prefer = Some(1);
        edit(&mut i, 2, |s| s.since_gained_role = Some(MS(1999)));
        assert!(decide(&i).is_empty());
        edit(&mut i, 2, |s| s.since_gained_role = Some(MS(2000)));
        assert_eq!(decide(&i), release(ReleaseReason::Preferred));
    }

    // ---- field health ------------------------------------------------------

    fn field(streak: u32, mine: Option<bool>, theirs: Option<bool>) -> DecisionInput {
        let mut i = with_active(1, 1, false);
        let mut me = healthy(mine);
        me.plc_bad_streak = streak;
        i.members.insert(1, me);
        i.members.insert(2, healthy(theirs));
        i
    }

    #[test]
    fn field_health_moves_the_role_after_three_bad_reports() {
        assert!(decide(&field(2, Some(false), Some(true))).is_empty());
        assert_eq!(
            decide(&field(3, Some(false), Some(true))),
            release(ReleaseReason::FieldHealth)
        );
        assert_eq!(
            decide(&field(7, Some(false), Some(true))),
            release(ReleaseReason::FieldHealth)
        );
    }

    #[test]
    fn field_health_needs_the_standby_link_to_be_up() {
        assert!(decide(&field(5, Some(false), Some(false))).is_empty());
        assert!(decide(&field(5, Some(false), None)).is_empty());
        let mut i = field(5, Some(false), Some(true));
        edit(&mut i, 2, |s| s.since_report = Some(MS(1000)));
        assert!(decide(&i).is_empty(), "standby not alive");
        let mut i = field(5, Some(false), Some(true));
        edit(&mut i, 2, |s| {
            if let Some(h) = s.health.as_mut() {
                h.ready = false;
            }
        });
        assert!(decide(&i).is_empty(), "standby not ready");
    }

    #[test]
    fn field_health_ignores_a_recovered_link() {
        // Streak counted, but the latest report says the link is back.
        assert!(decide(&field(5, Some(true), Some(true))).is_empty());
    }

    #[test]
    fn field_health_respects_the_flap_hold() {
        let mut i = field(5, Some(false), Some(true));
        edit(&mut i, 1, |s| s.since_gained_role = Some(MS(100)));
        assert!(decide(&i).is_empty());
    }

    #[test]
    fn after_a_field_health_release_the_leader_picks_the_standby() {
        let mut i = vacant();
        i.members.insert(1, healthy(Some(false)));
        edit(&mut i, 1, |s| s.since_lost_role = Some(MS(10)));
        i.members.insert(2, healthy(Some(true)));
        assert_eq!(decide(&i), acquire(2));
    }

    // ---- stream health -----------------------------------------------------

    fn stream(streak: u32, mine: Option<bool>, theirs: Option<bool>) -> DecisionInput {
        let mut i = with_active(1, 1, false);
        i.members.insert(1, streaming(mine, streak));
        i.members.insert(2, streaming(theirs, 0));
        i
    }

    #[test]
    fn stream_health_moves_the_role_after_three_bad_reports() {
        assert!(decide(&stream(2, Some(false), Some(true))).is_empty());
        assert_eq!(
            decide(&stream(3, Some(false), Some(true))),
            release(ReleaseReason::StreamHealth)
        );
        assert_eq!(
            decide(&stream(9, Some(false), Some(true))),
            release(ReleaseReason::StreamHealth)
        );
    }

    #[test]
    fn stream_health_never_hands_over_to_a_member_that_cannot_use_its_stream_either() {
        assert!(decide(&stream(5, Some(false), Some(false))).is_empty());
        assert!(
            decide(&stream(5, Some(false), None)).is_empty(),
            "the other did not report"
        );
        let mut i = stream(5, Some(false), Some(true));
        edit(&mut i, 2, |s| s.since_report = Some(MS(1000)));
        assert!(decide(&i).is_empty(), "the other is not alive");
        let mut i = stream(5, Some(false), Some(true));
        edit(&mut i, 2, |s| {
            if let Some(h) = s.health.as_mut() {
                h.ready = false;
            }
        });
        assert!(decide(&i).is_empty(), "the other is not ready");
    }

    #[test]
    fn stream_health_does_not_hand_over_to_a_member_that_only_got_the_stream_back_first() {
        // Both lost the stream (its leader's server died) for 50 reports;
        // the other got it back one report ago: no better a writer.
        let mut i = stream(50, Some(false), Some(true));
        edit(&mut i, 2, |s| s.stream_good_streak = 1);
        assert!(decide(&i).is_empty());
        // Reaching it for longer than this member has not: it can write
        // where this one cannot.
        edit(&mut i, 2, |s| s.stream_good_streak = 51);
        assert_eq!(decide(&i), release(ReleaseReason::StreamHealth));
    }

    #[test]
    fn stream_health_ignores_a_recovered_or_unreported_stream_and_respects_the_flap_hold() {
        assert!(decide(&stream(5, Some(true), Some(true))).is_empty());
        assert!(decide(&stream(5, None, Some(true))).is_empty());
        let mut i = stream(5, Some(false), Some(true));
        edit(&mut i, 1, |s| s.since_gained_role = Some(MS(100)));
        assert!(decide(&i).is_empty());
        // Only the active decides it.
        let mut i = stream(5, Some(false), Some(true));
        i.me = 2;
        i.incarnation = inc(2);
        assert!(decide(&i).is_empty());
    }

    #[test]
    fn a_vacant_role_avoids_a_member_that_cannot_use_its_stream() {
        let mut i = vacant();
        i.members.insert(1, streaming(Some(false), 3));
        i.members.insert(2, streaming(Some(true), 0));
        assert_eq!(decide(&i), acquire(2));
        // Over prefer too: the preferred member's stream is down.
        i.prefer = Some(1);
        assert_eq!(decide(&i), acquire(2));
        // Both down: the usual order.
        i.members.insert(2, streaming(Some(false), 3));
        assert_eq!(decide(&i), acquire(1));
    }

    // ---- maintenance -------------------------------------------------------

    #[test]
    fn a_member_in_maintenance_is_never_granted() {
        let mut i = vacant();
        i.state.maintenance.insert(1);
        assert_eq!(decide(&i), acquire(2));
        // Not even preferred, not even as the only candidate.
        i.prefer = Some(1);
        assert_eq!(decide(&i), acquire(2));
        i.members.insert(2, not_ready());
        assert!(decide(&i).is_empty());
        // Nor after grace over an active that stopped renewing.
        let mut i = with_active(2, 2, true);
        i.state.maintenance.insert(1);
        i.since_last_renewal = MS(5000);
        assert!(decide(&i).is_empty());
        // Nor when the active restarted (a vacant role in all but name).
        let mut i = restarted(2, 2);
        i.state.maintenance.insert(1);
        i.since_last_renewal = MS(400);
        assert_eq!(decide(&i), acquire(2));
        i.state.maintenance.insert(2);
        assert!(decide(&i).is_empty());
    }

    #[test]
    fn an_active_in_maintenance_releases_only_when_the_other_can_take_the_role() {
        let mut i = with_active(1, 1, false);
        i.state.maintenance.insert(1);
        assert_eq!(decide(&i), release(ReleaseReason::Maintenance));
        // At once: an operator's decision is no flapping.
        edit(&mut i, 1, |s| s.since_gained_role = Some(MS(1)));
        assert_eq!(decide(&i), release(ReleaseReason::Maintenance));
        // Not into the void: the other is silent, not ready, or in
        // maintenance too.
        i.members.insert(2, silent());
        assert!(decide(&i).is_empty());
        i.members.insert(2, not_ready());
        assert!(decide(&i).is_empty());
        i.members.insert(2, healthy(None));
        i.state.maintenance.insert(2);
        assert!(decide(&i).is_empty());
        // Only the active releases; the other member in maintenance moves
        // nothing.
        let mut i = with_active(1, 1, false);
        i.state.maintenance.insert(2);
        assert!(decide(&i).is_empty());
    }

    #[test]
    fn after_a_release_the_leader_does_not_grant_the_releasing_member_back() {
        // Switchover or maintenance: member 1 released a moment ago.
        let mut i = vacant();
        i.state.epoch = 4;
        i.since_last_renewal = MS(400);
        edit(&mut i, 1, |s| s.since_lost_role = Some(MS(50)));
        assert_eq!(decide(&i), acquire(2));
        i.prefer = Some(1);
        assert_eq!(decide(&i), acquire(2), "not even preferred");
    }

    // ---- readiness ---------------------------------------------------------

    #[test]
    fn an_active_that_is_not_ready_releases_if_the_other_can_serve() {
        let mut i = with_active(1, 1, false);
        i.members.insert(1, not_ready());
        assert_eq!(decide(&i), release(ReleaseReason::NotReady));
        // Even right after it gained the role.
        edit(&mut i, 1, |s| s.since_gained_role = Some(MS(1)));
        assert_eq!(decide(&i), release(ReleaseReason::NotReady));
        // But not into the void.
        i.members.insert(2, not_ready());
        assert!(decide(&i).is_empty());
    }

    // ---- combined roles ----------------------------------------------------

    #[test]
    fn a_leading_active_may_release_and_never_grants_over_itself() {
        let mut i = with_active(1, 1, true);
        i.prefer = Some(2);
        assert_eq!(decide(&i), release(ReleaseReason::Preferred));
        i.prefer = None;
        assert!(decide(&i).is_empty());
    }

    #[test]
    fn the_witness_never_releases_or_renews_anything() {
        let mut i = with_active(1, 3, false);
        i.prefer = Some(2);
        i.since_last_renewal = MS(10_000);
        assert!(decide(&i).is_empty());
    }

    #[test]
    fn exhaustive_invariants() {
        // Over a grid of inputs: never grant the witness or an unfit member,
        // never grant while the active renews, only the leader grants, only
        // the active releases.
        let statuses = [
            MemberStatus::default(),
            healthy(None),
            healthy(Some(true)),
            healthy(Some(false)),
            MemberStatus {
                plc_bad_streak: 3,
                ..healthy(Some(false))
            },
            not_ready(),
            silent(),
            MemberStatus {
                since_lost_role: Some(MS(10)),
                ..healthy(None)
            },
            MemberStatus {
                since_gained_role: Some(MS(10)),
                ..healthy(Some(true))
            },
            streaming(Some(false), 3),
            streaming(Some(true), 0),
        ];
        let mut count = 0;
        for me in [1, 2, 3] {
            // (this process, the active's, each member's latest report):
            // all current; this process restarted; the active restarted.
            let cases: [(Incarnation, IncFn, IncFn); 3] = [
                (inc(me), inc, inc),
                (next(me), inc, next),
                (inc(me), inc, next),
            ];
            for (my_inc, active_inc, latest) in cases {
                for am_leader in [false, true] {
                    for active in [None, Some(1), Some(2)] {
                        for (since, since_leading) in [
                            (MS(0), MS(10_000)),
                            (MS(349), MS(120)),
                            (MS(350), MS(10_000)),
                            (MS(10_000), MS(50)),
                        ] {
                            for (prefer, maintenance) in
                                [None, Some(1), Some(2), Some(3)].into_iter().flat_map(|p| {
                                    [vec![], vec![1], vec![2], vec![1, 2]]
                                        .into_iter()
                                        .map(move |m| (p, m))
                                })
                            {
                                for s1 in &statuses {
                                    for s2 in &statuses {
                                        let i = DecisionInput {
                                            me,
                                            incarnation: my_inc,
                                            am_leader: am_leader && me != 3,
                                            state: PairState {
                                                active,
                                                active_incarnation: active.map_or(0, active_inc),
                                                epoch: 5,
                                                renew_index: 50,
                                                health: BTreeMap::new(),
                                                incarnations: BTreeMap::from([
                                                    (1, latest(1)),
                                                    (2, latest(2)),
                                                ]),
                                                stream_ok: BTreeMap::new(),
                                                maintenance: maintenance.iter().copied().collect(),
                                                group: Some(7),
                                                lapsed: prefer.filter(|_| active.is_none()),
                                            },
                                            since_last_renewal: since,
                                            since_leading: (am_leader && me != 3)
                                                .then_some(since_leading),
                                            members: BTreeMap::from([
                                                (1, s1.clone()),
                                                (2, s2.clone()),
                                            ]),
                                            prefer,
                                            timing: Timing::default(),
                                        };
                                        for a in decide(&i) {
                                            count += 1;
                                            match a {
                                                Action::ProposeAcquire { candidate } => {
                                                    assert!(i.am_leader);
                                                    assert!(is_member(candidate));
                                                    assert!(!maintenance.contains(&candidate));
                                                    assert!(i.eligible(candidate), "{i:?}");
                                                    // Every grant after a first one
                                                    // waits out grace.
                                                    assert!(since >= i.timing.grace);
                                                    if let Some(x) = active {
                                                        if candidate == x {
                                                            assert!(i.state.active_superseded());
                                                        }
                                                    }
                                                }
                                                Action::ProposeRelease { .. } => {
                                                    assert_eq!(active, Some(me));
                                                    assert!(i.i_am_active());
                                                    let other = other_member(me).unwrap_or(0);
                                                    assert!(i.eligible(other));
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(count > 0);
    }
}
