//! The replicated state machine's pure core: [`PairState`] and the rules
//! under which each [`Request`] is applied. No I/O and no clock: the store
//! (`store::sm`) stamps local instants from the [`Effect`] returned here.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use serde::Deserialize;
use serde::Serialize;

use crate::types::is_member;
use crate::types::Health;
use crate::types::Incarnation;
use crate::types::NodeId;
use crate::types::Request;
use crate::types::Response;
use crate::types::NO_INCARNATION;

/// Everything the group agrees on. Small on purpose: it is the snapshot.
///
/// The incarnation fields are `#[serde(default)]`: a snapshot written
/// before they existed loads with [`NO_INCARNATION`] as the active's
/// incarnation, which no process has, so the role it names is granted
/// again (with a larger epoch) once `grace` has passed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairState {
    /// The member the group last granted the role to (1 or 2), or `None`
    /// before the first grant and after a release. Naming a member is not
    /// enough to act: the member also needs a valid lease.
    pub active: Option<NodeId>,
    /// The incarnation (process) of `active` the role was granted to;
    /// [`NO_INCARNATION`] while `active` is `None`. Only that process may
    /// renew or release: a restarted member is a new activation.
    #[serde(default)]
    pub active_incarnation: Incarnation,
    /// The fencing token: raised by every grant, never lowered; downstream
    /// rejects events carrying an older epoch.
    pub epoch: u64,
    /// Log index of the last applied Renew or Acquire. Grants compare-and-set
    /// on it so that a renewal committed after the leader's check wins.
    pub renew_index: u64,
    /// The latest health report of each member.
    pub health: BTreeMap<NodeId, Health>,
    /// The incarnation that sent each member's latest health report.
    #[serde(default)]
    pub incarnations: BTreeMap<NodeId, Incarnation>,
    /// Each member's latest stream report, for the members that made one
    /// (`stream_ok: Some(_)`); a report of `None` removes the entry.
    #[serde(default)]
    pub stream_ok: BTreeMap<NodeId, bool>,
    /// The members in maintenance: never granted the role; an active one
    /// hands it over as soon as the other member can take it. Absent in
    /// snapshots from before it existed (nobody in maintenance).
    #[serde(default)]
    pub maintenance: BTreeSet<NodeId>,
    /// The group's id, once its first leader committed one (see
    /// `Request::Group`); `None` in a group whose state predates it,
    /// until its leader proposes one.
    #[serde(default)]
    pub group: Option<u64>,
    /// The member whose lease lapsed and that released its epoch for that
    /// reason (`Release { lapsed: true }`): the vacant role goes back to it
    /// first if it can take it (sticky). Cleared by the next grant.
    #[serde(default)]
    pub lapsed: Option<NodeId>,
}

/// What applying one request changed, for the non-replicated bookkeeping
/// (apply instants) that every node keeps on its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effect {
    /// `renew_index` moved (Renew or Acquire applied).
    pub renewed: bool,
    /// This member stopped being active (Release, or another member's
    /// Acquire; not a new incarnation of the same member re-granted).
    pub lost_role: Option<NodeId>,
    /// This member became active (Acquire).
    pub gained_role: Option<NodeId>,
    /// A health report of this member was recorded, with its PLC state.
    pub health_of: Option<(NodeId, Option<bool>)>,
    /// The same report's stream state (`None`: not reported).
    pub stream_of: Option<(NodeId, Option<bool>)>,
    /// The group's id was set by this entry.
    pub group_set: Option<u64>,
}

impl PairState {
    /// The state names `member` running as `incarnation` active.
    pub fn names_active(&self, member: NodeId, incarnation: Incarnation) -> bool {
        self.active == Some(member) && self.active_incarnation == incarnation
    }

    /// The latest incarnation `member` reported, if any.
    pub fn incarnation_of(&self, member: NodeId) -> Option<Incarnation> {
        self.incarnations.get(&member).copied()
    }

    /// The state names an active whose member has since reported another
    /// incarnation: the process the role was granted to is gone (the member
    /// restarted), so it can never renew again.
    pub fn active_superseded(&self) -> bool {
        self.active.is_some_and(|a| {
            self.incarnation_of(a)
                .is_some_and(|latest| latest != self.active_incarnation)
        })
    }

    /// Applies `req`, carried by the log entry at `index`, and says what
    /// happened. Deterministic: every node gets the same state and response.
    pub fn apply(&mut self, index: u64, req: &Request) -> (Response, Effect) {
        let mut effect = Effect::default();
        let response = match req {
            Request::Renew {
                member,
                incarnation,
                epoch,
            } => {
                if self.names_active(*member, *incarnation) && *epoch == self.epoch {
                    self.renew_index = index;
                    effect.renewed = true;
                    Response::Ok
                } else {
                    Response::Fenced
                }
            }
            Request::Acquire {
                member,
                incarnation,
                expect_epoch,
                expect_renew_index,
            } => {
                // A member never heard from reads as NO_INCARNATION, so an
                // entry from before incarnations existed still applies.
                let latest = self.incarnation_of(*member).unwrap_or(NO_INCARNATION);
                if is_member(*member)
                    && *incarnation == latest
                    && *expect_epoch == self.epoch
                    && *expect_renew_index == self.renew_index
                {
                    if let Some(previous) = self.active.filter(|p| p != member) {
                        effect.lost_role = Some(previous);
                    }
                    self.lapsed = None;
                    self.active = Some(*member);
                    self.active_incarnation = *incarnation;
                    self.epoch += 1;
                    self.renew_index = index;
                    effect.renewed = true;
                    effect.gained_role = Some(*member);
                    Response::Granted { epoch: self.epoch }
                } else {
                    Response::Conflict
                }
            }
            Request::Release {
                member,
                incarnation,
                epoch,
                lapsed,
            } => {
                if self.names_active(*member, *incarnation) && *epoch == self.epoch {
                    self.active = None;
                    self.active_incarnation = NO_INCARNATION;
                    if *lapsed {
                        self.lapsed = Some(*member);
                    } else {
                        effect.lost_role = Some(*member);
                    }
                    Response::Ok
                } else {
                    Response::Fenced
                }
            }
            Request::Health {
                member,
                incarnation,
                report,
                stream_ok,
            } => {
                if is_member(*member) {
                    self.health.insert(*member, report.clone());
                    self.incarnations.insert(*member, *incarnation);
                    match stream_ok {
                        Some(ok) => self.stream_ok.insert(*member, *ok),
                        None => self.stream_ok.remove(member),
                    };
                    effect.health_of = Some((*member, report.plc_ok));
                    effect.stream_of = Some((*member, *stream_ok));
                    Response::Ok
                } else {
                    Response::Invalid
                }
            }
            Request::Probe => Response::Ok,
            Request::Group { id } => match self.group {
                _ if *id == 0 => Response::Invalid,
                None => {
                    self.group = Some(*id);
                    effect.group_set = Some(*id);
                    Response::Ok
                }
                Some(g) if g == *id => Response::Ok,
                Some(_) => Response::Conflict,
            },
            Request::Maintenance { member, on, .. } => {
                if !is_member(*member) {
                    Response::Invalid
                } else {
                    if *on {
                        self.maintenance.insert(*member);
                    } else {
                        self.maintenance.remove(member);
                    }
                    Response::Ok
                }
            }
        };
        (response, effect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The incarnation member `m` runs as in these tests.
    fn inc(m: NodeId) -> Incarnation {
        100 + m
    }

    /// A restarted process of member `m`.
    fn next(m: NodeId) -> Incarnation {
        200 + m
    }

    fn renew(member: NodeId, incarnation: Incarnation, epoch: u64) -> Request {
        Request::Renew {
            member,
            incarnation,
            epoch,
        }
    }

    fn acquire(member: NodeId, expect_epoch: u64, expect_renew_index: u64) -> Request {
        Request::Acquire {
            member,
            incarnation: inc(member),
            expect_epoch,
            expect_renew_index,
        }
    }

    fn release(member: NodeId, incarnation: Incarnation, epoch: u64) -> Request {
        Request::Release {
            member,
            incarnation,
            epoch,
            lapsed: false,
        }
    }

    fn report(member: NodeId, incarnation: Incarnation) -> Request {
        Request::Health {
            member,
            incarnation,
            report: Health::default(),
            stream_ok: None,
        }
    }

    /// Both members heard from (as `inc`), none active.
    fn heard() -> PairState {
        PairState {
            incarnations: BTreeMap::from([(1, inc(1)), (2, inc(2))]),
            ..PairState::default()
        }
    }

    fn active(member: NodeId, epoch: u64, renew_index: u64) -> PairState {
        PairState {
            active: Some(member),
            active_incarnation: inc(member),
            epoch,
            renew_index,
            ..heard()
        }
    }

    #[test]
    fn renew_applies_only_for_the_active_incarnation_at_its_epoch() {
        let mut s = active(1, 3, 10);
        let (r, e) = s.apply(11, &renew(1, inc(1), 3));
        assert_eq!(r, Response::Ok);
        assert!(e.renewed);
        assert_eq!(s.renew_index, 11);

        for req in [
            renew(2, inc(2), 3),
            renew(1, inc(1), 2),
            renew(1, inc(1), 4),
            renew(3, inc(3), 3),
            // Right member and epoch, another process: a restarted member.
            renew(1, next(1), 3),
            renew(1, NO_INCARNATION, 3),
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
        let (r, _) = s.apply(1, &renew(1, NO_INCARNATION, 0));
        assert_eq!(r, Response::Fenced);
        assert_eq!(s.renew_index, 0);
    }

    #[test]
    fn acquire_cases_on_epoch_and_renew_index() {
        let mut s = active(1, 3, 10);
        // Stale epoch.
        assert_eq!(s.apply(20, &acquire(2, 2, 10)).0, Response::Conflict);
        // A renewal committed after the leader looked.
        assert_eq!(s.apply(20, &acquire(2, 3, 9)).0, Response::Conflict);
        assert_eq!(s, active(1, 3, 10));

        let req = acquire(2, 3, 10);
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
                stream_of: None,
                group_set: None,
            }
        );

        // The same request again is a conflict: the epoch moved.
        assert_eq!(s.apply(22, &req).0, Response::Conflict);
    }

    #[test]
    fn acquire_names_the_candidates_latest_reported_incarnation() {
        let mut s = heard();
        // The member restarted after the leader looked: the grant would go
        // to a process that is gone.
        s.apply(1, &report(2, next(2)));
        assert_eq!(s.apply(2, &acquire(2, 0, 0)).0, Response::Conflict);
        assert_eq!(s.active, None);
        let (r, _) = s.apply(
            3,
            &Request::Acquire {
                member: 2,
                incarnation: next(2),
                expect_epoch: 0,
                expect_renew_index: 0,
            },
        );
        assert_eq!(r, Response::Granted { epoch: 1 });
        assert!(s.names_active(2, next(2)));
        assert!(!s.names_active(2, inc(2)));
        // A member never heard from can only be granted as NO_INCARNATION
        // (entries from before incarnations existed).
        let mut s = PairState::default();
        assert_eq!(s.apply(1, &acquire(1, 0, 0)).0, Response::Conflict);
        let req = Request::Acquire {
            member: 1,
            incarnation: NO_INCARNATION,
            expect_epoch: 0,
            expect_renew_index: 0,
        };
        assert_eq!(s.apply(1, &req).0, Response::Granted { epoch: 1 });
    }

    #[test]
    fn a_restarted_active_is_superseded_and_regranted_with_a_larger_epoch() {
        let mut s = active(2, 1, 10);
        assert!(!s.active_superseded());
        // The member's new process reports itself.
        let (r, e) = s.apply(11, &report(2, next(2)));
        assert_eq!(r, Response::Ok);
        assert_eq!(e.health_of, Some((2, None)));
        assert_eq!(s.incarnation_of(2), Some(next(2)));
        assert!(s.active_superseded());
        assert_eq!(s.active, Some(2), "a report does not move the role");
        // The new process cannot renew or release its predecessor's role,
        // and the old one is fenced once the role is granted again.
        let before = s.clone();
        assert_eq!(s.apply(12, &renew(2, next(2), 1)).0, Response::Fenced);
        assert_eq!(s.apply(12, &release(2, next(2), 1)).0, Response::Fenced);
        assert_eq!(s, before);
        let req = Request::Acquire {
            member: 2,
            incarnation: next(2),
            expect_epoch: 1,
            expect_renew_index: 10,
        };
        let (r, e) = s.apply(13, &req);
        assert_eq!(r, Response::Granted { epoch: 2 });
        assert_eq!(e.gained_role, Some(2));
        assert_eq!(e.lost_role, None, "the same member, re-granted");
        assert!(s.names_active(2, next(2)));
        assert!(!s.active_superseded());
        assert_eq!(s.apply(14, &renew(2, inc(2), 2)).0, Response::Fenced);
        assert_eq!(s.apply(14, &renew(2, inc(2), 1)).0, Response::Fenced);
        assert_eq!(s.apply(15, &renew(2, next(2), 2)).0, Response::Ok);
    }

    #[test]
    fn the_witness_or_an_unknown_id_is_never_granted() {
        for member in [0, 3, 4] {
            let mut s = PairState::default();
            for incarnation in [NO_INCARNATION, inc(member)] {
                let req = Request::Acquire {
                    member,
                    incarnation,
                    expect_epoch: 0,
                    expect_renew_index: 0,
                };
                assert_eq!(s.apply(5, &req).0, Response::Conflict);
                assert_eq!(s, PairState::default());
            }
        }
    }

    #[test]
    fn a_renewal_between_check_and_acquire_defeats_the_acquire() {
        // The leader checked at renew_index 10; member 1 renews at 11 before
        // the Acquire (expecting 10) is applied at 12.
        let mut s = active(1, 3, 10);
        assert_eq!(s.apply(11, &renew(1, inc(1), 3)).0, Response::Ok);
        assert_eq!(s.apply(12, &acquire(2, 3, 10)).0, Response::Conflict);
        assert_eq!(s.active, Some(1));
    }

    #[test]
    fn an_acquire_fences_the_old_actives_renewals() {
        let mut s = active(1, 3, 10);
        s.apply(11, &acquire(2, 3, 10));
        assert_eq!(s.apply(12, &renew(1, inc(1), 3)).0, Response::Fenced);
        assert_eq!(s.renew_index, 11);
    }

    #[test]
    fn release_clears_active_but_keeps_the_epoch() {
        let mut s = active(2, 7, 30);
        assert_eq!(s.apply(31, &release(1, inc(1), 7)).0, Response::Fenced);
        assert_eq!(s.apply(31, &release(2, inc(2), 6)).0, Response::Fenced);
        assert_eq!(
            s.apply(31, &release(2, next(2), 7)).0,
            Response::Fenced,
            "another incarnation of the member does not release"
        );
        let (r, e) = s.apply(32, &release(2, inc(2), 7));
        assert_eq!(r, Response::Ok);
        assert_eq!(e.lost_role, Some(2));
        assert_eq!(s.active, None);
        assert_eq!(s.active_incarnation, NO_INCARNATION);
        assert_eq!(s.epoch, 7);
        assert_eq!(s.renew_index, 30, "a release is not a renewal");
        // Renewals after a release are fenced; the next Acquire raises the epoch.
        assert_eq!(s.apply(33, &renew(2, inc(2), 7)).0, Response::Fenced);
        let (r, e) = s.apply(34, &acquire(1, 7, 30));
        assert_eq!(r, Response::Granted { epoch: 8 });
        assert_eq!(e.lost_role, None, "nobody was active");
    }

    #[test]
    fn a_lapsed_release_ends_the_epoch_and_names_the_member_for_the_next_grant() {
        let mut s = active(2, 7, 30);
        let lapse = Request::Release {
            member: 2,
            incarnation: inc(2),
            epoch: 7,
            lapsed: true,
        };
        let (r, e) = s.apply(31, &lapse);
        assert_eq!(r, Response::Ok);
        assert_eq!(e.lost_role, None, "not a loss for the flap hold");
        assert_eq!((s.active, s.epoch, s.lapsed), (None, 7, Some(2)));
        assert_eq!(s.renew_index, 30, "a release is not a renewal");
        // Fenced like any release when it is not the active's.
        let mut t = active(2, 7, 30);
        let other = Request::Release {
            member: 1,
            incarnation: inc(1),
            epoch: 7,
            lapsed: true,
        };
        assert_eq!(t.apply(31, &other).0, Response::Fenced);
        assert_eq!(t.lapsed, None);
        // The next grant (to anyone) clears it; the epoch grows as always.
        let (r, _) = s.apply(32, &acquire(2, 7, 30));
        assert_eq!(r, Response::Granted { epoch: 8 });
        assert_eq!(s.lapsed, None);
        // An entry from before the field existed is a plain release.
        let old: Request =
            serde_json::from_str(r#"{"Release":{"member":2,"incarnation":5,"epoch":7}}"#)
                .expect("old release");
        assert_eq!(old, release(2, 5, 7));
    }

    #[test]
    fn health_is_recorded_for_members_only() {
        let mut s = PairState::default();
        let h = Health {
            plc_ok: Some(false),
            life_sign: Some(4),
            ready: true,
        };
        let (r, e) = s.apply(
            1,
            &Request::Health {
                member: 2,
                incarnation: inc(2),
                report: h.clone(),
                stream_ok: Some(false),
            },
        );
        assert_eq!(r, Response::Ok);
        assert_eq!(e.health_of, Some((2, Some(false))));
        assert_eq!(e.stream_of, Some((2, Some(false))));
        assert_eq!(s.stream_ok.get(&2), Some(&false));
        assert_eq!(s.health.get(&2), Some(&h));
        assert_eq!(s.incarnation_of(2), Some(inc(2)));
        let (r, _) = s.apply(2, &report(3, inc(3)));
        assert_eq!(r, Response::Invalid);
        assert_eq!(s.health.len(), 1);
        assert_eq!(s.incarnations.len(), 1);
        assert_eq!(s.renew_index, 0);
        // A report without a stream state withdraws the last one.
        s.apply(3, &report(2, inc(2)));
        assert_eq!(s.stream_ok.get(&2), None);
        // Entries from before the field existed decode without one.
        let old: Request = serde_json::from_str(
            r#"{"Health":{"member":2,"incarnation":5,"report":{"plc_ok":null,"life_sign":null,"ready":true}}}"#,
        )
        .expect("old health");
        assert_eq!(old, report(2, 5));
    }

    #[test]
    fn maintenance_is_set_and_cleared_for_members_only() {
        let maint = |member, on| Request::Maintenance {
            member,
            incarnation: inc(member),
            on,
        };
        let mut s = active(1, 2, 3);
        assert_eq!(
            s.apply(4, &maint(2, true)),
            (Response::Ok, Effect::default())
        );
        assert_eq!(s.maintenance, BTreeSet::from([2]));
        // Idempotent, and it moves nothing by itself: the role rules act
        // on it (see `decide`).
        assert_eq!(s.apply(5, &maint(2, true)).0, Response::Ok);
        assert_eq!((s.active, s.epoch, s.renew_index), (Some(1), 2, 3));
        assert_eq!(s.apply(6, &maint(1, true)).0, Response::Ok);
        assert_eq!(s.maintenance, BTreeSet::from([1, 2]));
        assert_eq!(s.apply(7, &maint(2, false)).0, Response::Ok);
        assert_eq!(s.maintenance, BTreeSet::from([1]));
        for witness in [3, 0] {
            assert_eq!(s.apply(8, &maint(witness, true)).0, Response::Invalid);
        }
        assert_eq!(s.maintenance, BTreeSet::from([1]));
        // A snapshot from before it existed: nobody in maintenance.
        let old: PairState =
            serde_json::from_str(r#"{"active":2,"epoch":1,"renew_index":5,"health":{}}"#)
                .expect("old state");
        assert!(old.maintenance.is_empty());
    }

    #[test]
    fn the_first_group_id_committed_is_the_groups_for_good() {
        let mut s = active(1, 2, 3);
        let group = |id| Request::Group { id };
        let (r, e) = s.apply(4, &group(0xabc));
        assert_eq!(r, Response::Ok);
        assert_eq!(e.group_set, Some(0xabc));
        assert_eq!(s.group, Some(0xabc));
        // Both members' first leaders may propose one: the second loses.
        assert_eq!(
            s.apply(5, &group(0xdef)),
            (Response::Conflict, Effect::default())
        );
        assert_eq!(s.apply(6, &group(0xabc)), (Response::Ok, Effect::default()));
        assert_eq!(s.group, Some(0xabc));
        assert_eq!((s.active, s.epoch, s.renew_index), (Some(1), 2, 3));
        // 0 is never an id.
        let mut t = PairState::default();
        assert_eq!(t.apply(1, &group(0)).0, Response::Invalid);
        assert_eq!(t.group, None);
        // A snapshot from before it existed: no id, until a leader adds one.
        let old: PairState =
            serde_json::from_str(r#"{"active":null,"epoch":3,"renew_index":5,"health":{}}"#)
                .expect("old state");
        assert_eq!(old.group, None);
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
    fn state_and_entries_from_before_incarnations_decode_as_no_incarnation() {
        let old: PairState = serde_json::from_str(
            r#"{"active":2,"epoch":1,"renew_index":5,"health":{"2":{"plc_ok":null,"life_sign":null,"ready":true}}}"#,
        )
        .expect("old state");
        assert_eq!(old.active_incarnation, NO_INCARNATION);
        assert!(old.incarnations.is_empty());
        assert!(
            !old.active_superseded(),
            "nobody reported an incarnation yet"
        );
        let req: Request =
            serde_json::from_str(r#"{"Renew":{"member":2,"epoch":1}}"#).expect("old renew");
        assert_eq!(req, renew(2, NO_INCARNATION, 1));
        // Replaying an old log stays consistent...
        let mut s = old.clone();
        assert_eq!(s.apply(6, &req).0, Response::Ok);
        // ...and once a process reports itself, the old activation is
        // superseded: nobody can renew it.
        s.apply(7, &report(2, next(2)));
        assert!(s.active_superseded());
        assert_eq!(s.apply(8, &renew(2, next(2), 1)).0, Response::Fenced);
        // Round trip of the new format.
        let json = serde_json::to_string(&s).expect("encode");
        assert_eq!(serde_json::from_str::<PairState>(&json).expect("decode"), s);
    }

    #[test]
    fn epochs_only_grow_over_any_sequence() {
        // A small exhaustive walk: every request kind over a few indices,
        // with two incarnations per member (a restart) and NO_INCARNATION.
        let reqs = |s: &PairState| {
            let mut v = Vec::new();
            for m in 0..=3 {
                for i in [NO_INCARNATION, inc(m), next(m)] {
                    v.push(renew(m, i, s.epoch));
                    v.push(release(m, i, s.epoch));
                    v.push(Request::Release {
                        member: m,
                        incarnation: i,
                        epoch: s.epoch,
                        lapsed: true,
                    });
                    v.push(Request::Acquire {
                        member: m,
                        incarnation: i,
                        expect_epoch: s.epoch,
                        expect_renew_index: s.renew_index,
                    });
                    v.push(report(m, i));
                    v.push(Request::Group { id: i });
                    v.push(Request::Maintenance {
                        member: m,
                        incarnation: i,
                        on: i == inc(m),
                    });
                }
            }
            v
        };
        let mut frontier = vec![PairState::default()];
        for index in 1..=4 {
            let mut seen = std::collections::BTreeSet::new();
            let mut next = Vec::new();
            for s in &frontier {
                for r in reqs(s) {
                    let mut t = s.clone();
                    let (resp, _) = t.apply(index, &r);
                    assert!(t.epoch >= s.epoch);
                    assert!(t.active.is_none_or(is_member));
                    if t.active.is_none() {
                        assert_eq!(t.active_incarnation, NO_INCARNATION);
                    }
                    let who = |x: &PairState| (x.active, x.active_incarnation);
                    if t.active.is_some() && who(&t) != who(s) {
                        assert!(t.epoch > s.epoch, "a new activation has a new epoch");
                    }
                    if let Request::Renew {
                        member,
                        incarnation,
                        ..
                    } = r
                    {
                        if resp == Response::Ok {
                            assert!(s.names_active(member, incarnation));
                        }
                    }
                    if seen.insert(format!("{t:?}")) {
                        next.push(t);
                    }
                }
            }
            next.truncate(512);
            frontier = next;
        }
    }
}
