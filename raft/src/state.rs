//! The replicated state machine's pure core: [`PairState`] and the rules
//! under which each [`Request`] is applied. No I/O and no clock: the store
//! (`store::sm`) stamps local instants from the [`Effect`] returned here.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

use crate::types::is_member;
use crate::types::Health;
use crate::types::NodeId;
use crate::types::Request;
use crate::types::Response;

/// Everything the group agrees on. Small on purpose: it is the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairState {
    /// The member the group last granted the role to (1 or 2), or `None`
    /// before the first grant and after a release. Naming a member is not
    /// enough to act: the member also needs a valid lease.
    pub active: Option<NodeId>,
    /// The fencing token: raised by every grant, never lowered; downstream
    /// rejects events carrying an older epoch.
    pub epoch: u64,
    /// Log index of the last applied Renew or Acquire. Grants compare-and-set
    /// on it so that a renewal committed after the leader's check wins.
    pub renew_index: u64,
    /// The latest health report of each member.
    pub health: BTreeMap<NodeId, Health>,
}

/// What applying one request changed, for the non-replicated bookkeeping
/// (apply instants) that every node keeps on its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effect {
    /// `renew_index` moved (Renew or Acquire applied).
    pub renewed: bool,
    /// This member stopped being active (Release, or another's Acquire).
    pub lost_role: Option<NodeId>,
    /// This member became active (Acquire).
    pub gained_role: Option<NodeId>,
    /// A health report of this member was recorded, with its PLC state.
    pub health_of: Option<(NodeId, Option<bool>)>,
}

impl PairState {
    /// Applies `req`, carried by the log entry at `index`, and says what
    /// happened. Deterministic: every node gets the same state and response.
    pub fn apply(&mut self, index: u64, req: &Request) -> (Response, Effect) {
        let mut effect = Effect::default();
        let response = match req {
            Request::Renew { member, epoch } => {
                if self.active == Some(*member) && *epoch == self.epoch {
                    self.renew_index = index;
                    effect.renewed = true;
                    Response::Ok
                } else {
                    Response::Fenced
                }
            }
            Request::Acquire {
                member,
                expect_epoch,
                expect_renew_index,
            } => {
                if is_member(*member)
                    && *expect_epoch == self.epoch
                    && *expect_renew_index == self.renew_index
                {
                    if let Some(previous) = self.active.filter(|p| p != member) {
                        effect.lost_role = Some(previous);
                    }
                    self.active = Some(*member);
                    self.epoch += 1;
                    self.renew_index = index;
                    effect.renewed = true;
                    effect.gained_role = Some(*member);
                    Response::Granted { epoch: self.epoch }
                } else {
                    Response::Conflict
                }
            }
            Request::Release { member, epoch } => {
                if self.active == Some(*member) && *epoch == self.epoch {
                    self.active = None;
                    effect.lost_role = Some(*member);
                    Response::Ok
                } else {
                    Response::Fenced
                }
            }
            Request::Health { member, report } => {
                if is_member(*member) {
                    self.health.insert(*member, report.clone());
                    effect.health_of = Some((*member, report.plc_ok));
                    Response::Ok
                } else {
                    Response::Invalid
                }
            }
            Request::Probe => Response::Ok,
        };
        (response, effect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(member: NodeId, epoch: u64, renew_index: u64) -> PairState {
        PairState {
            active: Some(member),
            epoch,
            renew_index,
            health: BTreeMap::new(),
        }
    }

    #[test]
    fn renew_applies_only_for_the_active_at_its_epoch() {
        let mut s = active(1, 3, 10);
        let (r, e) = s.apply(
            11,
            &Request::Renew {
                member: 1,
                epoch: 3,
            },
        );
        assert_eq!(r, Response::Ok);
        assert!(e.renewed);
        assert_eq!(s.renew_index, 11);

        for req in [
            Request::Renew {
                member: 2,
                epoch: 3,
            },
            Request::Renew {
                member: 1,
                epoch: 2,
            },
            Request::Renew {
                member: 1,
                epoch: 4,
            },
            Request::Renew {
                member: 3,
                epoch: 3,
            },
        ] {
            let before = s.clone();
            let (r, e) = s.apply(12, &req);
            assert_eq!(r, Response::Fenced, "{req:?}");
            assert_eq!(e, Effect::default());
            assert_eq!(s, before, "a fenced renew changes nothing");
        }
    }

    #[test]
    fn renew_with_no_active_is_fenced() {
        let mut s = PairState::default();
        let (r, _) = s.apply(
            1,
            &Request::Renew {
                member: 1,
                epoch: 0,
            },
        );
        assert_eq!(r, Response::Fenced);
        assert_eq!(s.renew_index, 0);
    }

    #[test]
    fn acquire_cases_on_epoch_and_renew_index() {
        let mut s = active(1, 3, 10);
        // Stale epoch.
        let req = Request::Acquire {
            member: 2,
            expect_epoch: 2,
            expect_renew_index: 10,
        };
        assert_eq!(s.apply(20, &req).0, Response::Conflict);
        // A renewal committed after the leader looked.
        let req = Request::Acquire {
            member: 2,
            expect_epoch: 3,
            expect_renew_index: 9,
        };
        assert_eq!(s.apply(20, &req).0, Response::Conflict);
        assert_eq!(s, active(1, 3, 10));

        let req = Request::Acquire {
            member: 2,
            expect_epoch: 3,
            expect_renew_index: 10,
        };
        let (r, e) = s.apply(21, &req);
        assert_eq!(r, Response::Granted { epoch: 4 });
        assert_eq!(s, active(2, 4, 21));
        assert_eq!(
            e,
            Effect {
                renewed: true,
                lost_role: Some(1),
                gained_role: Some(2),
                health_of: None,
            }
        );

        // The same request again is a conflict: the epoch moved.
        assert_eq!(s.apply(22, &req).0, Response::Conflict);
    }

    #[test]
    fn the_witness_or_an_unknown_id_is_never_granted() {
        for member in [0, 3, 4] {
            let mut s = PairState::default();
            let req = Request::Acquire {
                member,
                expect_epoch: 0,
                expect_renew_index: 0,
            };
            assert_eq!(s.apply(5, &req).0, Response::Conflict);
            assert_eq!(s, PairState::default());
        }
    }

    #[test]
    fn a_renewal_between_check_and_acquire_defeats_the_acquire() {
        // The leader checked at renew_index 10; member 1 renews at 11 before
        // the Acquire (expecting 10) is applied at 12.
        let mut s = active(1, 3, 10);
        assert_eq!(
            s.apply(
                11,
                &Request::Renew {
                    member: 1,
                    epoch: 3
                }
            )
            .0,
            Response::Ok
        );
        let req = Request::Acquire {
            member: 2,
            expect_epoch: 3,
            expect_renew_index: 10,
        };
        assert_eq!(s.apply(12, &req).0, Response::Conflict);
        assert_eq!(s.active, Some(1));
    }

    #[test]
    fn an_acquire_fences_the_old_actives_renewals() {
        let mut s = active(1, 3, 10);
        let req = Request::Acquire {
            member: 2,
            expect_epoch: 3,
            expect_renew_index: 10,
        };
        s.apply(11, &req);
        assert_eq!(
            s.apply(
                12,
                &Request::Renew {
                    member: 1,
                    epoch: 3
                }
            )
            .0,
            Response::Fenced
        );
        assert_eq!(s.renew_index, 11);
    }

    #[test]
    fn release_clears_active_but_keeps_the_epoch() {
        let mut s = active(2, 7, 30);
        assert_eq!(
            s.apply(
                31,
                &Request::Release {
                    member: 1,
                    epoch: 7
                }
            )
            .0,
            Response::Fenced
        );
        assert_eq!(
            s.apply(
                31,
                &Request::Release {
                    member: 2,
                    epoch: 6
                }
            )
            .0,
            Response::Fenced
        );
        let (r, e) = s.apply(
            32,
            &Request::Release {
                member: 2,
                epoch: 7,
            },
        );
        assert_eq!(r, Response::Ok);
        assert_eq!(e.lost_role, Some(2));
        assert_eq!(s.active, None);
        assert_eq!(s.epoch, 7);
        assert_eq!(s.renew_index, 30, "a release is not a renewal");
        // Renewals after a release are fenced; the next Acquire raises the epoch.
        assert_eq!(
            s.apply(
                33,
                &Request::Renew {
                    member: 2,
                    epoch: 7
                }
            )
            .0,
            Response::Fenced
        );
        let req = Request::Acquire {
            member: 1,
            expect_epoch: 7,
            expect_renew_index: 30,
        };
        let (r, e) = s.apply(34, &req);
        assert_eq!(r, Response::Granted { epoch: 8 });
        assert_eq!(e.lost_role, None, "nobody was active");
    }

    #[test]
    fn health_is_recorded_for_members_only() {
        let mut s = PairState::default();
        let report = Health {
            plc_ok: Some(false),
            life_sign: Some(4),
            ready: true,
        };
        let (r, e) = s.apply(
            1,
            &Request::Health {
                member: 2,
                report: report.clone(),
            },
        );
        assert_eq!(r, Response::Ok);
        assert_eq!(e.health_of, Some((2, Some(false))));
        assert_eq!(s.health.get(&2), Some(&report));
        let (r, _) = s.apply(
            2,
            &Request::Health {
                member: 3,
                report: Health::default(),
            },
        );
        assert_eq!(r, Response::Invalid);
        assert_eq!(s.health.len(), 1);
        assert_eq!(s.renew_index, 0);
    }

    #[test]
    fn probe_changes_nothing() {
        let mut s = active(1, 2, 3);
        assert_eq!(
            s.apply(9, &Request::Probe),
            (Response::Ok, Effect::default())
        );
        assert_eq!(s, active(1, 2, 3));
    }

    #[test]
    fn epochs_only_grow_over_any_sequence() {
        // A small exhaustive walk: every request kind over a few indices.
        let reqs = |s: &PairState| {
            let mut v = Vec::new();
            for m in 0..=3 {
                v.push(Request::Renew {
                    member: m,
                    epoch: s.epoch,
                });
                v.push(Request::Release {
                    member: m,
                    epoch: s.epoch,
                });
                v.push(Request::Acquire {
                    member: m,
                    expect_epoch: s.epoch,
                    expect_renew_index: s.renew_index,
                });
            }
            v
        };
        let mut frontier = vec![PairState::default()];
        for index in 1..=4 {
            let mut next = Vec::new();
            for s in &frontier {
                for r in reqs(s) {
                    let mut t = s.clone();
                    t.apply(index, &r);
                    assert!(t.epoch >= s.epoch);
                    assert!(t.active.is_none_or(is_member));
                    if t.active.is_some() && t.active != s.active {
                        assert!(t.epoch > s.epoch, "a new activation has a new epoch");
                    }
                    next.push(t);
                }
            }
            next.dedup();
            next.truncate(64);
            frontier = next;
        }
    }
}
