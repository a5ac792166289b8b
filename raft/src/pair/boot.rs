//! What a voter does when it finds its raft store empty (no log, no vote,
//! no snapshot): it asks the other two voters before it starts openraft.
//!
//! Why: a voter whose store was lost votes and accepts appends at term 0
//! as if it had never been part of the group. openraft 0.9 has no
//! CheckQuorum, so a stale leader, cut off since another leader was
//! elected and another member granted the role, still believes it leads
//! in its old term; with the emptied voter it has a majority again, and
//! it can renew, release and grant under epochs the group has already
//! used. And an emptied member used to `initialize()` a new group of its
//! own. So an emptied voter starts openraft only once BOTH other voters
//! answer with the same group id, the same term and the same leader, and
//! the one that follows holds every entry the leader has applied (the
//! emptied voter may have been the only other copy of entries committed
//! before it lost them; once the follower holds them, they survive the
//! leader too): then it persists that vote (committed, for that leader)
//! before openraft starts, and openraft refuses anything older. Or when
//! an operator confirms
//! ([`Pair::confirm_empty_store`](super::Pair::confirm_empty_store)).
//!
//! A brand-new pair has no group id anywhere: once at least one other
//! voter answers and none knows a group, the voter starts as before (a
//! member initialises the group, the witness waits to be contacted). A
//! group id is known only once a leader committed it (`Request::Group`),
//! so two members that initialise at the same moment still form one
//! group. Until its first leader after an upgrade commits an id, a group
//! whose stores predate the id looks brand-new to an emptied voter: the
//! old behaviour, for that short window.
//!
//! [`empty_store`] is the pure rule; [`ask`] gathers the answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use openraft::Vote;

use crate::network::GroupIdentity;
use crate::network::Reply;
use crate::network::Rpc;
use crate::network::Transport;
use crate::types::is_member;
use crate::types::NodeId;
use crate::types::VOTERS;

/// Each other voter's answer to [`Rpc::Identity`], or why there is none.
pub(super) type Answers = BTreeMap<NodeId, Result<GroupIdentity, String>>;

/// What an emptied voter does now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum EmptyStore {
    /// Start openraft.
    Start {
        /// Persist this vote first (the peers' confirmed term and leader).
        vote: Option<Vote<NodeId>>,
        /// A member of a brand-new pair: initialise the group.
        initialise: bool,
    },
    /// Not yet; the reason, for the log and the view.
    Wait(String),
}

/// Asks every other voter for its [`GroupIdentity`], all at once, each
/// for at most `timeout`.
pub(super) async fn ask(transport: &Arc<dyn Transport>, me: NodeId, timeout: Duration) -> Answers {
    let calls = VOTERS
        .into_iter()
        .filter(|&v| v != me)
        .map(|v| async move { (v, identity(transport, v, timeout).await) });
    join_all(calls).await.into_iter().collect()
}

/// One voter's [`GroupIdentity`], or why there is none.
async fn identity(
    transport: &Arc<dyn Transport>,
    peer: NodeId,
    timeout: Duration,
) -> Result<GroupIdentity, String> {
    match transport.call(peer, Rpc::Identity, timeout).await {
        Ok(Reply::Identity(id)) => Ok(id),
        Ok(other) => Err(format!("unexpected reply {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The peer to ask once more before [`empty_store`] decides: when both
/// running peers agree on group, term and leader but the follower's log
/// looked behind what the leader had applied. The answers were taken at
/// once, so a renewal committed between the follower's answer and the
/// leader's makes the follower look behind although it holds it (with this
/// voter down, nothing commits without the follower). Asked *after* the
/// leader answered, the follower's log must hold everything the leader had
/// applied then; under load the skew otherwise outlasted every retry (the
/// compose lab's late member waited for good).
pub(super) fn follower_to_ask_again(answers: &Answers) -> Option<NodeId> {
    let running: Vec<(NodeId, &GroupIdentity)> = answers
        .iter()
        .filter_map(|(id, a)| a.as_ref().ok().filter(|a| a.running).map(|a| (*id, a)))
        .collect();
    let [(ia, a), (ib, b)] = running[..] else {
        return None;
    };
    let agree = a.group.is_some() && a.group == b.group && a.term == b.term && a.leader == b.leader;
    match a.leader {
        Some(l) if agree && l == ia && b.last_log_id < a.applied => Some(ib),
        Some(l) if agree && l == ib && a.last_log_id < b.applied => Some(ia),
        _ => None,
    }
}

/// Asks `peer` alone for its identity again and puts the answer in
/// `answers`.
pub(super) async fn ask_again(
    transport: &Arc<dyn Transport>,
    peer: NodeId,
    timeout: Duration,
    answers: &mut Answers,
) {
    answers.insert(peer, identity(transport, peer, timeout).await);
}

fn describe(answers: &Answers) -> String {
    answers
        .iter()
        .map(|(id, a)| match a {
            Ok(i) if i.running => format!(
                "{id}: group {}, term {}, leader {}",
                i.group.map_or("none".into(), |g| format!("{g:016x}")),
                i.term,
                i.leader.map_or("none".into(), |l| l.to_string())
            ),
            Ok(i) => format!(
                "{id}: waiting itself (group {})",
                i.group.map_or("none".into(), |g| format!("{g:016x}"))
            ),
            Err(e) => format!("{id}: {e}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What voter `me`, whose store is empty, does given the other voters'
/// `answers`, the group id its own `raft-group.json` names (if it
/// survived) and whether an operator confirmed the empty store.
pub(super) fn empty_store(
    me: NodeId,
    own_group: Option<u64>,
    answers: &Answers,
    confirmed: bool,
) -> EmptyStore {
    let answered: Vec<&GroupIdentity> = answers.values().filter_map(|a| a.as_ref().ok()).collect();
    let groups: Vec<u64> = answered.iter().filter_map(|a| a.group).collect();
    if let Some(own) = own_group {
        if groups.iter().any(|&g| g != own) {
            // Never, even when confirmed: this directory was another
            // group's (a pair rebuilt from scratch, a directory mixed up).
            return EmptyStore::Wait(format!(
                "this store belonged to group {own:016x} but the peers are in another one \
                 ({}): remove raft-group.json from this data directory to join them",
                describe(answers)
            ));
        }
    }
    if groups.is_empty() && own_group.is_none() {
        // No group anywhere: a brand-new pair.
        if answered.is_empty() && !confirmed {
            return EmptyStore::Wait(format!(
                "raft store empty; no peer answers yet, so it is not known whether a group \
                 exists ({})",
                describe(answers)
            ));
        }
        return EmptyStore::Start {
            vote: None,
            initialise: is_member(me),
        };
    }
    let running: Vec<(NodeId, &GroupIdentity)> = answers
        .iter()
        .filter_map(|(id, a)| a.as_ref().ok().filter(|a| a.running).map(|a| (*id, a)))
        .collect();
    if let [(ia, a), (ib, b)] = running[..] {
        let agree = a.group.is_some()
            && a.group == b.group
            && own_group.is_none_or(|g| a.group == Some(g))
            && a.term == b.term
            && a.leader.is_some()
            && a.leader == b.leader;
        // The follower holds everything the leader applied.
        let caught_up = match a.leader {
            Some(l) if l == ia => b.last_log_id >= a.applied,
            Some(l) if l == ib => a.last_log_id >= b.applied,
            _ => false,
        };
        if let (true, true, Some(leader)) = (agree, caught_up, a.leader) {
            return EmptyStore::Start {
                vote: Some(Vote::new_committed(a.term, leader)),
                initialise: false,
            };
        }
    }
    let running: Vec<&GroupIdentity> = running.into_iter().map(|(_, a)| a).collect();
    if confirmed {
        // The operator takes the risk; still adopt the newest vote a peer
        // confirmed, so that nothing older is accepted.
        let vote = running
            .iter()
            .filter_map(|a| a.leader.map(|l| Vote::new_committed(a.term, l)))
            .max_by_key(|v| v.leader_id().term);
        return EmptyStore::Start {
            vote,
            initialise: false,
        };
    }
    EmptyStore::Wait(format!(
        "raft store empty and a group exists: waiting for both peers to confirm the same \
         group, term and leader, the follower holding the leader's log (or for an operator \
         to confirm the empty store) ({})",
        describe(answers)
    ))
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;
    use openraft::LogId;

    use super::*;
    use crate::types::MEMBER_A;
    use crate::types::MEMBER_B;
    use crate::types::WITNESS;

    const G: u64 = 0xa11ce;

    fn running(
        group: Option<u64>,
        term: u64,
        leader: Option<NodeId>,
    ) -> Result<GroupIdentity, String> {
        // Log and applied entries end at index 40.
        Ok(GroupIdentity {
            group,
            running: true,
            term,
            vote: leader.map(|l| Vote::new_committed(term, l)),
            leader,
            last_log_id: log(40),
            applied: log(40),
        })
    }

    fn log(index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(7, 2), index))
    }

    fn waiting(group: Option<u64>) -> Result<GroupIdentity, String> {
        Ok(GroupIdentity {
            group,
            ..GroupIdentity::default()
        })
    }

    fn down() -> Result<GroupIdentity, String> {
        Err("unreachable".into())
    }

    fn answers(a: Result<GroupIdentity, String>, b: Result<GroupIdentity, String>) -> Answers {
        // As asked by the witness: the two members.
        BTreeMap::from([(MEMBER_A, a), (MEMBER_B, b)])
    }

    fn start(term: u64, leader: NodeId) -> EmptyStore {
        EmptyStore::Start {
            vote: Some(Vote::new_committed(term, leader)),
            initialise: false,
        }
    }

    fn waits(d: &EmptyStore) -> bool {
        matches!(d, EmptyStore::Wait(_))
    }

    #[test]
    fn both_peers_agreeing_on_group_term_and_leader_start_it_with_their_vote() {
        let a = answers(running(Some(G), 7, Some(2)), running(Some(G), 7, Some(2)));
        assert_eq!(empty_store(WITNESS, None, &a, false), start(7, 2));
        assert_eq!(empty_store(WITNESS, Some(G), &a, false), start(7, 2));
    }

    #[test]
    fn a_follower_that_looked_behind_the_leader_is_asked_again() {
        let mut leader = running(Some(G), 7, Some(2));
        if let Ok(l) = leader.as_mut() {
            l.last_log_id = log(46);
            l.applied = log(45);
        }
        let mut follower = running(Some(G), 7, Some(2));
        if let Ok(f) = follower.as_mut() {
            f.last_log_id = log(44);
        }
        let a = BTreeMap::from([(WITNESS, follower.clone()), (MEMBER_B, leader.clone())]);
        assert_eq!(follower_to_ask_again(&a), Some(WITNESS));
        // Caught up, disagreeing, or only one running: nothing to ask.
        let mut caught_up = running(Some(G), 7, Some(2));
        if let Ok(f) = caught_up.as_mut() {
            f.last_log_id = log(45);
        }
        let a = BTreeMap::from([(WITNESS, caught_up), (MEMBER_B, leader.clone())]);
        assert_eq!(follower_to_ask_again(&a), None);
        let a = BTreeMap::from([
            (WITNESS, running(Some(G), 8, Some(2))),
            (MEMBER_B, leader.clone()),
        ]);
        assert_eq!(follower_to_ask_again(&a), None);
        let a = BTreeMap::from([(WITNESS, down()), (MEMBER_B, leader)]);
        assert_eq!(follower_to_ask_again(&a), None);
    }

    #[test]
    fn the_follower_must_hold_what_the_leader_applied() {
        // Member 2 leads and applied up to 45; member 1 has only 43: the
        // emptied witness may have been the only other copy of 44 and 45.
        let mut leader = running(Some(G), 7, Some(2));
        if let Ok(l) = leader.as_mut() {
            l.last_log_id = log(46);
            l.applied = log(45);
        }
        let mut follower = running(Some(G), 7, Some(2));
        if let Ok(f) = follower.as_mut() {
            f.last_log_id = log(43);
            f.applied = log(43);
        }
        let a = answers(follower.clone(), leader.clone());
        assert!(waits(&empty_store(WITNESS, None, &a, false)));
        if let Ok(f) = follower.as_mut() {
            f.last_log_id = log(45);
        }
        let a = answers(follower, leader);
        assert_eq!(empty_store(WITNESS, None, &a, false), start(7, 2));
    }

    #[test]
    fn a_stale_leader_and_the_new_one_disagree_so_it_waits() {
        // Member 1 still leads its old term, cut off; member 2 leads since.
        let a = answers(running(Some(G), 5, Some(1)), running(Some(G), 6, Some(2)));
        assert!(waits(&empty_store(WITNESS, None, &a, false)));
        // Same term, no leader yet, or different leaders: wait too.
        let a = answers(running(Some(G), 6, None), running(Some(G), 6, None));
        assert!(waits(&empty_store(WITNESS, None, &a, false)));
        let a = answers(running(Some(G), 6, Some(1)), running(Some(G), 6, Some(2)));
        assert!(waits(&empty_store(WITNESS, None, &a, false)));
    }

    #[test]
    fn one_peer_alone_is_not_enough() {
        // The stale leader may be the only one it reaches.
        let a = answers(running(Some(G), 5, Some(1)), down());
        assert!(waits(&empty_store(WITNESS, None, &a, false)));
        let a = answers(running(Some(G), 5, Some(1)), waiting(None));
        assert!(waits(&empty_store(WITNESS, None, &a, false)));
    }

    #[test]
    fn a_member_never_initialises_while_a_peer_knows_a_group() {
        let peers = BTreeMap::from([(MEMBER_B, down()), (WITNESS, running(Some(G), 4, None))]);
        assert!(waits(&empty_store(MEMBER_A, None, &peers, false)));
        // Its own file says there was a group, and nobody answers.
        let none = BTreeMap::from([(MEMBER_B, down()), (WITNESS, down())]);
        assert!(waits(&empty_store(MEMBER_A, Some(G), &none, false)));
        // A waiting peer that remembers the group counts too.
        let peers = BTreeMap::from([(MEMBER_B, waiting(Some(G))), (WITNESS, down())]);
        assert!(waits(&empty_store(MEMBER_A, None, &peers, false)));
    }

    #[test]
    fn a_brand_new_pair_starts_once_one_peer_answers_and_only_members_initialise() {
        let peers = BTreeMap::from([(MEMBER_B, down()), (WITNESS, down())]);
        assert!(
            waits(&empty_store(MEMBER_A, None, &peers, false)),
            "nobody answers: not known"
        );
        // Either the other member or the witness, running or waiting
        // itself, empty: a brand-new pair.
        for (b, w) in [
            (down(), waiting(None)),
            (waiting(None), down()),
            (running(None, 1, None), running(None, 1, Some(2))),
        ] {
            let peers = BTreeMap::from([(MEMBER_B, b.clone()), (WITNESS, w.clone())]);
            assert_eq!(
                empty_store(MEMBER_A, None, &peers, false),
                EmptyStore::Start {
                    vote: None,
                    initialise: true
                }
            );
            let peers = BTreeMap::from([(MEMBER_A, b), (MEMBER_B, w)]);
            assert_eq!(
                empty_store(WITNESS, None, &peers, false),
                EmptyStore::Start {
                    vote: None,
                    initialise: false
                },
                "the witness never initialises"
            );
        }
    }

    #[test]
    fn another_groups_directory_never_starts() {
        let a = answers(running(Some(G), 7, Some(2)), running(Some(G), 7, Some(2)));
        let d = empty_store(WITNESS, Some(0xbad), &a, true);
        assert!(
            matches!(&d, EmptyStore::Wait(why) if why.contains("raft-group.json")),
            "{d:?}"
        );
    }

    #[test]
    fn an_operator_confirmation_starts_it_with_the_newest_vote_seen_and_never_initialises() {
        let a = answers(running(Some(G), 5, Some(1)), running(Some(G), 6, Some(2)));
        assert_eq!(empty_store(WITNESS, None, &a, true), start(6, 2));
        let peers = BTreeMap::from([(MEMBER_B, down()), (WITNESS, running(Some(G), 4, None))]);
        assert_eq!(
            empty_store(MEMBER_A, None, &peers, true),
            EmptyStore::Start {
                vote: None,
                initialise: false
            }
        );
        // A brand-new pair nobody answers for yet: confirmed, it starts as
        // a new pair would.
        let none = BTreeMap::from([(MEMBER_B, down()), (WITNESS, down())]);
        assert_eq!(
            empty_store(MEMBER_A, None, &none, true),
            EmptyStore::Start {
                vote: None,
                initialise: true
            }
        );
    }
}
