//! The pair task's timing rules as pure functions of `now` and what the
//! node observed: when a member stands for election on its own, when the
//! leader may next grant over a silent active, when the witness stands to
//! rescue a member and when it steps aside. The driver gathers the inputs,
//! calls these and carries the answer out (an election trigger, a timer, a
//! heartbeat switch, a log line); nothing here does I/O or reads a clock,
//! so every rule is tested below without sockets. The role rules proper
//! (who gets the role, when the active gives it up) are in
//! [`decide`](crate::decide()).

use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;

use crate::network::Heard;
use crate::timing::Timing;
use crate::types::is_member;
use crate::types::NodeId;
use crate::types::WITNESS;

/// What a member observed that decides when it stands for election on its
/// own.
#[derive(Clone, Copy, Debug)]
pub(super) struct StandInput {
    /// This node. Only a member stands on its own: the witness stands only
    /// to rescue (see [`rescue`]).
    pub(super) me: NodeId,
    /// Its openraft state: only a follower or a candidate stands (a leader
    /// has no one to wait for).
    pub(super) state: ServerState,
    /// Its current term.
    pub(super) term: u64,
    /// The leader it knows of in that term.
    pub(super) leader: Option<NodeId>,
    /// What it heard from leaders and candidates, from the RPCs it received.
    pub(super) heard: Heard,
    /// When this process started: with no sign of a leader since, its
    /// silence counts from there.
    pub(super) started_at: Instant,
    /// When it last stopped leading itself.
    pub(super) led_until: Option<Instant>,
    /// When it last stood on its own.
    pub(super) last_stand: Option<Instant>,
    /// How long without hearing a leader before it stands (see
    /// `Timing::stand_after`; random per process).
    pub(super) stand_after: Duration,
    /// Pause between two elections while none succeeds (see
    /// `Timing::stand_retry`; drawn again after each stand).
    pub(super) stand_retry: Duration,
}

/// Why a member stands now; only the log line differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stand {
    /// The first election of this silence: no leader heard for `silent`.
    First {
        /// Since the last sign of a leader.
        silent: Duration,
    },
    /// Again, `stand_retry` after the previous one, while nobody wins.
    Again,
}

/// The latest sign of a leader this member has: a leader's append or
/// snapshot accepted, an append from the leader it knows arrived (even if
/// not handled yet), a vote granted, or its own leadership ending; its
/// start if none.
pub(super) fn heard_base(i: &StandInput) -> Instant {
    let from_leader = i.heard.append_arrived.and_then(|(at, vote)| {
        let l = vote.leader_id();
        (vote.is_committed() && l.voted_for() == i.leader && l.term >= i.term).then_some(at)
    });
    [
        i.heard.leader_at,
        from_leader,
        i.heard.voted_at,
        i.led_until,
    ]
    .into_iter()
    .flatten()
    .fold(i.started_at, Instant::max)
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
///
/// A member that is a learner holds no membership yet (its store was
/// emptied and it started without a leader to catch up from: an operator
/// confirmed it while the other member is gone). It cannot stand, but it
/// asks all the same: the witness takes a refused pre-vote from a member
/// behind its log as the signal to rescue it (lead, and replicate its log,
/// membership included), after which it stands as any member.
pub(super) fn stand_at(i: &StandInput) -> Option<Instant> {
    let can_ask = matches!(
        i.state,
        ServerState::Follower | ServerState::Candidate | ServerState::Learner
    );
    if !is_member(i.me) || !can_ask {
        return None;
    }
    let base = heard_base(i);
    let caught_up = i.heard.witness_log_term == Some(i.term);
    let after = if i.leader == Some(WITNESS) && !caught_up {
        i.stand_after * 4
    } else {
        i.stand_after
    };
    let mut at = base + after;
    if let Some(last) = i.last_stand.filter(|t| *t >= base) {
        at = at.max(last + i.stand_retry);
    }
    Some(at)
}

/// Whether this member stands at `now`. The driver waits for [`stand_at`]
/// and asks again when it wakes: a leader may have been heard meanwhile.
pub(super) fn stand(i: &StandInput, now: Instant) -> Option<Stand> {
    stand_at(i).filter(|t| *t <= now)?;
    let base = heard_base(i);
    Some(if i.last_stand.is_none_or(|t| t < base) {
        Stand::First {
            silent: now.saturating_duration_since(base),
        }
    } else {
        Stand::Again
    })
}

/// When the leader may next grant the role: `grace` after the last
/// renewal applied here (`renewed_at`), over a named active that stopped
/// renewing and over a vacant role alike (the member that released may
/// still finish a side effect it checked before; see `decide`). `None`
/// when this node does not decide grants (`am_leader`: it leads and its
/// probe committed), in a group that never had an active (`epoch` 0: no
/// lease was ever held), or once that instant has passed (every turn
/// decides then; a deadline in the past would wake the loop again at once).
pub(super) fn grace_at(
    am_leader: bool,
    epoch: u64,
    renewed_at: Instant,
    grace: Duration,
    now: Instant,
) -> Option<Instant> {
    if !am_leader || epoch == 0 {
        return None;
    }
    Some(renewed_at + grace).filter(|t| *t > now)
}

/// The witness stands to rescue a member; only the log line differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rescue {
    /// The first rescue in a while (none within 10·`election_max`):
    /// worth a warning.
    First,
    /// Another attempt in the same streak.
    Again,
}

/// Whether the witness stands now, on a signal that a member behind its
/// log asked for votes while no leader was heard.
///
/// The witness stands only to rescue a member whose log is behind its
/// own when there is no leader: openraft elects only a voter whose log
/// is at least as long as a quorum's, and with two voters left the
/// witness's vote is needed, so a member that missed the last entries
/// (they reached the witness, not it, before the leader died) could
/// never win while the witness never stands. Once leading, the witness
/// replicates its log to the member (openraft commits a blank entry on
/// election), then steps aside: no heartbeats and no proposals, so the
/// member, now up to date, stands (see [`stand_at`]) and wins.
///
/// The witness stands for each such vote request (at most once per
/// `heartbeat`): its election takes the term after its own vote's, and
/// the member may have raised its term past that by standing more than
/// once, so a first attempt can fail; openraft then records the
/// member's term in the witness's vote, and the attempt on the member's
/// next request (one term up) carries the same term as the member's own
/// vote, where the witness wins the tie (openraft orders equal terms by
/// node id, and the witness is 3).
pub(super) fn rescue(
    leading: bool,
    last_rescue: Option<Instant>,
    now: Instant,
    timing: &Timing,
) -> Option<Rescue> {
    if leading || last_rescue.is_some_and(|t| now < t + timing.heartbeat) {
        return None;
    }
    // Logged once per streak of rescues.
    Some(
        if last_rescue.is_some_and(|t| now < t + timing.election_max * 10) {
            Rescue::Again
        } else {
            Rescue::First
        },
    )
}

/// What the witness does with openraft's heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Heartbeats {
    /// It leads (to rescue a member): stop them, so that its leader lease
    /// runs out on the member, which then stands and wins.
    Stop,
    /// It no longer leads: turn them back on.
    Resume,
}

/// The witness steps aside as soon as it leads, and undoes that once it no
/// longer does; `stepping_aside` says whether heartbeats are off now.
/// `None`: nothing to change.
pub(super) fn witness_steps_aside(leading: bool, stepping_aside: bool) -> Option<Heartbeats> {
    match (leading, stepping_aside) {
        (true, false) => Some(Heartbeats::Stop),
        (false, true) => Some(Heartbeats::Resume),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use openraft::Vote;

    use super::*;
    use crate::types::MEMBER_A;
    use crate::types::MEMBER_B;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// An arbitrary origin. The rules never read the clock: every instant
    /// below is this one plus an offset.
    fn t0() -> Instant {
        Instant::now()
    }

    const AFTER: Duration = Duration::from_millis(330);
    const RETRY: Duration = Duration::from_millis(180);

    /// Member 1, follower in term 5 under leader 2, started at `t0` and
    /// never heard anything.
    fn follower(t0: Instant) -> StandInput {
        StandInput {
            me: MEMBER_A,
            state: ServerState::Follower,
            term: 5,
            leader: Some(MEMBER_B),
            heard: Heard::default(),
            started_at: t0,
            led_until: None,
            last_stand: None,
            stand_after: AFTER,
            stand_retry: RETRY,
        }
    }

    // ---- standing for election -----------------------------------------

    #[test]
    fn a_member_that_heard_a_leader_10_ms_ago_does_not_stand() {
        let t0 = t0();
        let now = t0 + MS(5000);
        let mut i = follower(t0);
        i.heard.leader_at = Some(now - MS(10));
        assert_eq!(stand(&i, now), None);
        assert_eq!(stand_at(&i), Some(now - MS(10) + AFTER));
    }

    #[test]
    fn a_member_stands_stand_after_past_the_last_sign_of_a_leader() {
        let t0 = t0();
        let mut i = follower(t0);
        let heard = t0 + MS(1000);
        i.heard.leader_at = Some(heard);
        assert_eq!(stand(&i, heard + AFTER - MS(1)), None);
        assert_eq!(
            stand(&i, heard + AFTER),
            Some(Stand::First { silent: AFTER })
        );
        assert_eq!(
            stand(&i, heard + AFTER + MS(50)),
            Some(Stand::First {
                silent: AFTER + MS(50)
            })
        );
    }

    #[test]
    fn a_member_that_never_heard_a_leader_counts_from_its_start() {
        let t0 = t0();
        let i = follower(t0);
        assert_eq!(heard_base(&i), t0);
        assert_eq!(stand_at(&i), Some(t0 + AFTER));
    }

    #[test]
    fn every_sign_of_a_leader_moves_the_base_and_the_latest_counts() {
        let t0 = t0();
        let mut i = follower(t0);
        i.heard.leader_at = Some(t0 + MS(100));
        assert_eq!(heard_base(&i), t0 + MS(100));
        i.heard.voted_at = Some(t0 + MS(200));
        assert_eq!(heard_base(&i), t0 + MS(200), "a vote granted");
        i.led_until = Some(t0 + MS(300));
        assert_eq!(heard_base(&i), t0 + MS(300), "its own leadership ended");
        i.heard.append_arrived = Some((t0 + MS(400), Vote::new_committed(5, MEMBER_B)));
        assert_eq!(heard_base(&i), t0 + MS(400), "an append arrived");
        // An older sign does not move it back.
        i.heard.leader_at = Some(t0 + MS(50));
        assert_eq!(heard_base(&i), t0 + MS(400));
        assert_eq!(stand_at(&i), Some(t0 + MS(400) + AFTER));
    }

    #[test]
    fn an_arrived_append_counts_only_from_the_leader_known_in_this_term() {
        let t0 = t0();
        let at = t0 + MS(400);
        let mut i = follower(t0);
        for (vote, counts) in [
            (Vote::new_committed(5, MEMBER_B), true),
            (Vote::new_committed(6, MEMBER_B), true),
            (Vote::new(5, MEMBER_B), false),
            (Vote::new_committed(5, WITNESS), false),
            (Vote::new_committed(4, MEMBER_B), false),
        ] {
            i.heard.append_arrived = Some((at, vote));
            let want = if counts { at } else { t0 };
            assert_eq!(heard_base(&i), want, "{vote:?}");
        }
    }

    #[test]
    fn only_a_following_member_stands_on_its_own_and_a_learner_asks() {
        let t0 = t0();
        let now = t0 + MS(10_000);
        let mut i = follower(t0);
        assert!(stand(&i, now).is_some());
        i.state = ServerState::Candidate;
        assert!(stand(&i, now).is_some(), "a candidate that did not win");
        for state in [ServerState::Leader, ServerState::Shutdown] {
            i.state = state;
            assert_eq!(stand_at(&i), None, "{state:?}");
        }
        // A learner (an emptied member without membership yet) asks, so
        // that the witness can rescue it; the driver never elects for it.
        i.state = ServerState::Learner;
        assert!(stand(&i, now).is_some());
        let mut i = follower(t0);
        i.me = WITNESS;
        assert_eq!(stand_at(&i), None, "the witness stands only to rescue");
    }

    #[test]
    fn while_the_witness_leads_and_the_member_lacks_its_log_it_waits_4x_stand_after() {
        let t0 = t0();
        let heard = t0 + MS(1000);
        let mut i = follower(t0);
        i.leader = Some(WITNESS);
        i.heard.leader_at = Some(heard);
        assert_eq!(stand_at(&i), Some(heard + AFTER * 4));
        assert_eq!(stand(&i, heard + AFTER * 4 - MS(1)), None);
        assert!(stand(&i, heard + AFTER * 4).is_some());
        // Holding the witness's log of an earlier term is not enough.
        i.heard.witness_log_term = Some(4);
        assert_eq!(stand_at(&i), Some(heard + AFTER * 4));
        // Once it holds the witness's whole log of this term: the usual wait.
        i.heard.witness_log_term = Some(5);
        assert_eq!(stand_at(&i), Some(heard + AFTER));
        // A member leader: the usual wait, whatever it holds.
        i.leader = Some(MEMBER_B);
        i.heard.witness_log_term = None;
        assert_eq!(stand_at(&i), Some(heard + AFTER));
    }

    #[test]
    fn retry_no_earlier_than_last_stand_plus_stand_retry() {
        let t0 = t0();
        let heard = t0 + MS(1000);
        let mut i = follower(t0);
        i.heard.leader_at = Some(heard);
        // It stood at heard + AFTER; nobody has won since.
        let last = heard + AFTER;
        i.last_stand = Some(last);
        assert_eq!(stand_at(&i), Some(last + RETRY));
        assert_eq!(stand(&i, last + RETRY - MS(1)), None);
        assert_eq!(stand(&i, last + RETRY), Some(Stand::Again));
        // A retry pause shorter than what is left of the silence changes
        // nothing: no earlier than `stand_after` past the base either.
        i.last_stand = Some(heard);
        i.stand_retry = MS(10);
        assert_eq!(stand_at(&i), Some(heard + AFTER));
        assert_eq!(stand(&i, heard + AFTER), Some(Stand::Again));
        // A stand at the very instant of the last sign of a leader belongs
        // to this silence: its retry pause holds.
        i.stand_retry = AFTER * 2;
        assert_eq!(stand_at(&i), Some(heard + AFTER * 2));
    }

    #[test]
    fn a_stand_before_the_last_sign_of_a_leader_does_not_hold_back_the_next() {
        let t0 = t0();
        let mut i = follower(t0);
        i.last_stand = Some(t0 + MS(900));
        i.stand_retry = MS(5000);
        i.heard.leader_at = Some(t0 + MS(1000));
        assert_eq!(stand_at(&i), Some(t0 + MS(1000) + AFTER));
        assert_eq!(
            stand(&i, t0 + MS(1000) + AFTER),
            Some(Stand::First { silent: AFTER })
        );
    }

    #[test]
    fn stand_is_due_exactly_from_stand_at_and_never_within_stand_after_of_a_leader() {
        let t0 = t0();
        let signs = [None, Some(MS(100)), Some(MS(700))];
        for me in [MEMBER_A, MEMBER_B, WITNESS] {
            for state in [
                ServerState::Follower,
                ServerState::Candidate,
                ServerState::Leader,
            ] {
                for leader in [None, Some(MEMBER_B), Some(WITNESS)] {
                    for leader_at in signs {
                        for voted_at in signs {
                            for last_stand in signs {
                                for caught_up in [None, Some(5)] {
                                    let mut i = follower(t0);
                                    i.me = me;
                                    i.state = state;
                                    i.leader = leader;
                                    i.heard.leader_at = leader_at.map(|d| t0 + d);
                                    i.heard.voted_at = voted_at.map(|d| t0 + d);
                                    i.heard.witness_log_term = caught_up;
                                    i.last_stand = last_stand.map(|d| t0 + d);
                                    let base = heard_base(&i);
                                    for now in (0..30).map(|k| t0 + MS(100 * k)) {
                                        let due = stand_at(&i).is_some_and(|t| t <= now);
                                        assert_eq!(stand(&i, now).is_some(), due, "{i:?}");
                                        if due {
                                            assert!(now >= base + AFTER, "{i:?}");
                                            assert!(is_member(me));
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

    // ---- the leader's next grant ---------------------------------------

    #[test]
    fn grace_at_is_none_when_not_leader_or_never_granted() {
        let t0 = t0();
        let grace = MS(350);
        assert_eq!(grace_at(false, 4, t0, grace, t0), None);
        assert_eq!(grace_at(true, 0, t0, grace, t0), None, "no lease ever held");
        assert_eq!(grace_at(false, 0, t0, grace, t0), None);
    }

    #[test]
    fn grace_at_is_grace_after_the_last_renewal_applied_here() {
        // Whether the state names an active or the role was released: the
        // grant waits for the same instant.
        let t0 = t0();
        let grace = MS(350);
        let renewed = t0 + MS(1000);
        assert_eq!(
            grace_at(true, 4, renewed, grace, renewed + MS(100)),
            Some(renewed + grace)
        );
        assert_eq!(
            grace_at(true, 4, renewed, grace, renewed + grace - MS(1)),
            Some(renewed + grace)
        );
    }

    #[test]
    fn grace_at_is_none_once_it_has_passed() {
        let t0 = t0();
        let grace = MS(350);
        assert_eq!(grace_at(true, 4, t0, grace, t0 + grace), None);
        assert_eq!(grace_at(true, 4, t0, grace, t0 + MS(5000)), None);
    }

    // ---- the witness's rescue ------------------------------------------

    #[test]
    fn the_witness_stands_to_rescue_when_it_does_not_lead() {
        let t = Timing::default();
        let now = t0() + MS(10_000);
        assert_eq!(rescue(false, None, now, &t), Some(Rescue::First));
    }

    #[test]
    fn the_witness_does_not_stand_while_it_leads() {
        let t = Timing::default();
        let now = t0() + MS(10_000);
        assert_eq!(rescue(true, None, now, &t), None);
        assert_eq!(rescue(true, Some(now - MS(5000)), now, &t), None);
    }

    #[test]
    fn the_witness_does_not_stand_twice_within_a_heartbeat() {
        let t = Timing::default();
        let last = t0() + MS(10_000);
        assert_eq!(rescue(false, Some(last), last, &t), None);
        assert_eq!(
            rescue(false, Some(last), last + t.heartbeat - MS(1), &t),
            None
        );
        assert_eq!(
            rescue(false, Some(last), last + t.heartbeat, &t),
            Some(Rescue::Again)
        );
    }

    #[test]
    fn a_streak_of_rescues_warns_once_then_again_after_a_quiet_spell() {
        let t = Timing::default();
        let last = t0() + MS(10_000);
        let quiet = t.election_max * 10;
        assert_eq!(
            rescue(false, Some(last), last + quiet - MS(1), &t),
            Some(Rescue::Again)
        );
        assert_eq!(
            rescue(false, Some(last), last + quiet, &t),
            Some(Rescue::First)
        );
    }

    #[test]
    fn the_witness_stops_heartbeats_when_it_leads_and_resumes_them_when_not() {
        assert_eq!(witness_steps_aside(true, false), Some(Heartbeats::Stop));
        assert_eq!(witness_steps_aside(true, true), None, "already aside");
        assert_eq!(witness_steps_aside(false, true), Some(Heartbeats::Resume));
        assert_eq!(witness_steps_aside(false, false), None);
    }
}
