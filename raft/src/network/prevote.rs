//! The pre-vote: before a member stands for election on its own, it asks
//! the other voters whether they would vote for it now, and stands only
//! if one says yes (with its own vote, a majority of three).
//!
//! Why: a member cut off from both others used to stand again and again,
//! raising its term each time; when the cut healed, its higher term made
//! the leader step down (openraft answers an append from a lower term with
//! `HigherVote`), an election followed, and the active's renewals stalled
//! meanwhile. Under load that stall exceeded `grace`, the leader handed
//! the role over, and the healed member could end up with the role
//! without `prefer`. A voter answers with openraft's own vote rules,
//! without changing its vote: so a member that cannot win (cut off, or
//! the others still hear a leader, or its log is behind) never raises its
//! term, and a healthy leader is never disturbed by a returning member.
//!
//! The candidate's term is not compared: a voter whose term is higher
//! answers yes if the rest holds; the candidate's election then fails, but
//! openraft's vote answer teaches it the higher term, and it wins the next
//! one. A "no" for the term would leave it stuck below forever, since only
//! a real election moves a term.

use std::time::Duration;

use openraft::LogId;
use openraft::ServerState;
use openraft::Vote;
use tokio::time::Instant;

use crate::types::NodeId;
use crate::types::WITNESS;

/// A voter's answer to a pre-vote, with the reason for a "no".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PreVote {
    /// It would vote for the candidate now.
    Granted,
    /// It leads (a member leader; the witness leads only to hand over).
    Leading,
    /// It heard a leader within its leader lease (openraft refuses any
    /// vote then).
    LeaderLease,
    /// The candidate's log is behind its own (openraft refuses then).
    LogBehind,
    /// It cannot answer: its store is being confirmed, or openraft is
    /// not running.
    NotRunning,
}

/// What a voter knows when it answers a pre-vote.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Voter {
    /// This voter.
    pub(crate) me: NodeId,
    /// Its openraft state.
    pub(crate) state: ServerState,
    /// Its current vote.
    pub(crate) vote: Vote<NodeId>,
    /// When that vote was last granted, renewed by a leader's append, or
    /// adopted (openraft's `vote_last_modified`).
    pub(crate) vote_at: Option<Instant>,
    /// Its leader lease (`election_max`): openraft refuses votes while a
    /// committed vote is younger than this.
    pub(crate) lease: Duration,
    /// The id of its last log entry.
    pub(crate) last_log_id: Option<LogId<NodeId>>,
}

/// Whether `voter` would vote at `now` for a candidate whose last log id
/// is `candidate_log`: openraft's rules (`Engine::handle_vote_req`), read
/// without changing anything, plus "a member that leads says no"
/// (openraft's leader refuses for as long as its own lease runs, which it
/// does not renew on heartbeats: without this, a returning member could
/// still unseat a healthy leader whose vote is older than its lease).
pub(crate) fn answer(voter: &Voter, candidate_log: Option<LogId<NodeId>>, now: Instant) -> PreVote {
    if voter.state == ServerState::Leader && voter.me != WITNESS {
        return PreVote::Leading;
    }
    if voter.vote.is_committed() && voter.vote_at.is_some_and(|t| now <= t + voter.lease) {
        return PreVote::LeaderLease;
    }
    if candidate_log < voter.last_log_id {
        return PreVote::LogBehind;
    }
    PreVote::Granted
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;
    use crate::types::MEMBER_A;
    use crate::types::MEMBER_B;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn log(term: u64, index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(term, MEMBER_A), index))
    }

    /// The witness following member 1 in term 5, its last append 10 ms
    /// before `now`, its log at (5, 40).
    fn following(now: Instant) -> Voter {
        Voter {
            me: WITNESS,
            state: ServerState::Follower,
            vote: Vote::new_committed(5, MEMBER_A),
            vote_at: Some(now - MS(10)),
            lease: MS(150),
            last_log_id: log(5, 40),
        }
    }

    #[test]
    fn a_voter_that_hears_a_leader_says_no() {
        let now = Instant::now() + MS(10_000);
        let v = following(now);
        assert_eq!(answer(&v, log(5, 40), now), PreVote::LeaderLease);
        assert_eq!(answer(&v, log(9, 90), now), PreVote::LeaderLease);
        // Up to and including the end of the lease, as openraft.
        let v = Voter {
            vote_at: Some(now - MS(150)),
            ..v
        };
        assert_eq!(answer(&v, log(5, 40), now), PreVote::LeaderLease);
    }

    #[test]
    fn once_the_lease_ran_out_a_voter_says_yes_to_a_log_at_least_its_own() {
        let now = Instant::now() + MS(10_000);
        let v = Voter {
            vote_at: Some(now - MS(151)),
            ..following(now)
        };
        assert_eq!(answer(&v, log(5, 40), now), PreVote::Granted);
        assert_eq!(answer(&v, log(5, 41), now), PreVote::Granted);
        assert_eq!(answer(&v, log(6, 2), now), PreVote::Granted, "a later term");
        assert_eq!(answer(&v, log(5, 39), now), PreVote::LogBehind);
        assert_eq!(answer(&v, log(4, 90), now), PreVote::LogBehind);
        assert_eq!(answer(&v, None, now), PreVote::LogBehind);
    }

    #[test]
    fn an_uncommitted_vote_or_none_holds_nothing_back() {
        let now = Instant::now() + MS(10_000);
        for (vote, at) in [
            (Vote::new(6, MEMBER_B), Some(now - MS(1))),
            (Vote::default(), None),
            (Vote::new_committed(5, MEMBER_A), None),
        ] {
            let v = Voter {
                vote,
                vote_at: at,
                ..following(now)
            };
            assert_eq!(answer(&v, log(5, 40), now), PreVote::Granted, "{vote:?}");
        }
        // A brand-new voter: nothing logged, nothing voted.
        let v = Voter {
            vote: Vote::default(),
            vote_at: None,
            last_log_id: None,
            ..following(now)
        };
        assert_eq!(answer(&v, None, now), PreVote::Granted);
    }

    #[test]
    fn a_member_that_leads_says_no_the_witness_leading_to_hand_over_does_not() {
        let now = Instant::now() + MS(10_000);
        let old = Some(now - MS(5000));
        let leader = Voter {
            me: MEMBER_A,
            state: ServerState::Leader,
            vote: Vote::new_committed(5, MEMBER_A),
            vote_at: old,
            ..following(now)
        };
        assert_eq!(answer(&leader, log(9, 99), now), PreVote::Leading);
        // The witness leads only to bring a member up to date and stops
        // heartbeats: once its lease ran out, a member with its log stands.
        let witness = Voter {
            me: WITNESS,
            vote: Vote::new_committed(6, WITNESS),
            ..leader
        };
        assert_eq!(answer(&witness, log(5, 40), now), PreVote::Granted);
        assert_eq!(answer(&witness, log(5, 39), now), PreVote::LogBehind);
        let fresh = Voter {
            vote_at: Some(now - MS(20)),
            ..witness
        };
        assert_eq!(answer(&fresh, log(5, 40), now), PreVote::LeaderLease);
    }
}
