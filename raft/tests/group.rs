//! Group tests: real openraft, real state machine and file stores, on the
//! in-process fault-injecting router. They check invariants (one active,
//! never the witness, epochs grow, a lease ends before the next grant),
//! never durations.

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;

use common::stable;
use common::Group;
use common::SETTLE;
use raft::other_member;
use raft::Health;
use raft::Timing;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_member_is_active_at_rest_and_never_the_witness() -> anyhow::Result<()> {
    let g = Group::start(None).await?;
    let (active, epoch) = g.settled().await?;
    assert!(active == 1 || active == 2);
    assert!(epoch >= 1);
    assert!(!g.pair(3).view().borrow().me_active);
    assert!(!g.pair(3).lease().is_valid());
    // The standby's lease is not valid either.
    let standby = other_member(active).expect("member");
    assert!(!g.pair(standby).lease().is_valid());
    assert!(g.pair(active).lease().is_valid());
    // Someone granted the role, and the leaders were counted.
    let grants: u64 = [1, 2].iter().map(|&id| g.pair(id).metrics().grants).sum();
    assert!(grants >= 1);
    assert!(g.pair(3).metrics().elections >= 1);
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_active_moves_the_role_with_a_larger_epoch() -> anyhow::Result<()> {
    let mut g = Group::start(None).await?;
    let (old, epoch) = g.settled().await?;
    let other = other_member(old).expect("member");
    g.stop_node(old).await?;
    let views = g
        .wait_for("the other member active", SETTLE, |v| {
            v[&other].me_active && v[&other].epoch > epoch
        })
        .await?;
    assert_eq!(
        views[&3].active.filter(|_| views[&3].epoch > epoch),
        Some(other)
    );
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_active_loses_its_lease_before_the_other_is_granted_and_stays_standby_after_heal(
) -> anyhow::Result<()> {
    let g = Group::start(None).await?;
    let (old, epoch) = g.settled().await?;
    let other = other_member(old).expect("member");

    // Record the instant the old active stops being active (its own view),
    // and the instant the other member learns it was granted the role,
    // together with whether the old lease was still valid right then.
    let lost_at = Arc::new(Mutex::new(None));
    {
        let mut rx = g.pair(old).view();
        let lost_at = lost_at.clone();
        tokio::spawn(async move {
            let _ = rx.wait_for(|v| !v.me_active).await;
            *lost_at.lock().expect("lock") = Some(Instant::now());
        });
    }
    let granted = {
        let mut rx = g.pair(other).view();
        let old_lease = g.pair(old).lease();
        tokio::spawn(async move {
            let _ = rx
                .wait_for(|v| v.active == Some(other) && v.epoch > epoch)
                .await;
            (Instant::now(), old_lease.is_valid())
        })
    };

    g.router.isolate(old);
    let (granted_at, old_lease_valid_at_grant) = tokio::time::timeout(SETTLE, granted).await??;
    assert!(
        !old_lease_valid_at_grant,
        "the old active's lease was still valid when the other was granted"
    );
    let lost = lost_at
        .lock()
        .expect("lock")
        .expect("old active lost its lease");
    assert!(
        lost < granted_at,
        "lease lost {lost:?} after grant {granted_at:?}"
    );

    // While cut off, the old active never regains the role.
    g.wait_for("the other member active", SETTLE, |v| {
        v[&other].me_active && !v[&old].me_active
    })
    .await?;

    // Heal: the old active catches up and stays standby (sticky).
    g.router.heal();
    let views = g
        .wait_for("old active caught up", SETTLE, |v| {
            stable(v) && v[&old].active == Some(other)
        })
        .await?;
    // Make sure the others have applied a report from the healed member
    // (so the leader could have chosen it), then watch that the role never
    // goes back to it. (Under load, the active's own lease may lapse: that
    // ends its epoch, and the role comes back to it under a larger one.)
    g.pair(old).report_health(Health {
        plc_ok: None,
        life_sign: Some(1),
        ready: true,
    });
    g.wait_for("old active heard from again", SETTLE, |v| {
        v[&other]
            .health
            .get(&old)
            .is_some_and(|(h, _)| h.life_sign == Some(1))
    })
    .await?;
    let moved = tokio::time::timeout(
        Duration::from_secs(1),
        g.wait_for("role moved", SETTLE, |v| {
            v[&old].me_active || v.values().any(|x| x.active == Some(old))
        }),
    )
    .await;
    assert!(
        moved.is_err(),
        "the role moved back without prefer: {moved:?}"
    );
    g.wait_for("the other member still active", SETTLE, |v| {
        stable(v) && v[&other].me_active && v[&other].epoch >= views[&other].epoch
    })
    .await?;
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_prefer_a_the_first_member_retakes_the_role_after_it_comes_back() -> anyhow::Result<()>
{
    let mut g = Group::start(Some(1)).await?;
    // Whoever was granted first, the preferred member ends up active.
    let views = g
        .wait_for("member 1 active", SETTLE, |v| stable(v) && v[&1].me_active)
        .await?;
    let first_epoch = views[&1].epoch;

    g.stop_node(1).await?;
    let views = g
        .wait_for("member 2 active", SETTLE, |v| {
            v[&2].me_active && v[&2].epoch > first_epoch
        })
        .await?;
    let second_epoch = views[&2].epoch;

    g.start_node(1).await?;
    let views = g
        .wait_for("member 1 active again", SETTLE, |v| {
            stable(v) && v[&1].me_active && v[&1].epoch > second_epoch
        })
        .await?;
    assert!(!views[&2].me_active);
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn field_health_moves_the_role_to_the_member_with_a_working_plc_link() -> anyhow::Result<()> {
    let g = Group::start(None).await?;
    let (active, epoch) = g.settled().await?;
    let standby = other_member(active).expect("member");
    g.pair(active).report_health(Health {
        plc_ok: Some(false),
        life_sign: None,
        ready: true,
    });
    g.pair(standby).report_health(Health {
        plc_ok: Some(true),
        life_sign: Some(7),
        ready: true,
    });
    let views = g
        .wait_for("the standby active", SETTLE, |v| {
            stable(v) && v[&standby].me_active && v[&standby].epoch > epoch
        })
        .await?;
    // Everyone sees both reports.
    let (h, _) = &views[&3].health[&standby];
    assert_eq!(h.plc_ok, Some(true));
    assert_eq!(h.life_sign, Some(7));
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_is_not_ready_hands_the_role_over_and_step_down_releases(
) -> anyhow::Result<()> {
    let g = Group::start(None).await?;
    let (active, epoch) = g.settled().await?;
    let standby = other_member(active).expect("member");
    g.pair(active).set_ready(false);
    let views = g
        .wait_for("the standby active", SETTLE, |v| {
            stable(v) && v[&standby].me_active && v[&standby].epoch > epoch
        })
        .await?;
    let epoch = views[&standby].epoch;

    // The not-ready member cannot be granted; once ready again the role
    // stays where it is (sticky) until the holder steps down.
    g.pair(active).set_ready(true);
    g.wait_for("the first member ready again everywhere", SETTLE, |v| {
        v.values()
            .all(|x| x.health.get(&active).is_some_and(|(h, _)| h.ready))
    })
    .await?;
    g.pair(standby).step_down().await?;
    assert!(
        !g.pair(standby).lease().is_valid(),
        "step_down ends the lease at once"
    );
    g.wait_for("the first member active again", SETTLE, |v| {
        stable(v) && v[&active].me_active && v[&active].epoch > epoch
    })
    .await?;
    // Stepping down when not active is a no-op.
    g.pair(standby).step_down().await?;
    g.pair(3).step_down().await?;
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_nodes_recover_from_disk_and_the_pair_keeps_one_active() -> anyhow::Result<()> {
    // Snapshot often so restarts go through snapshot + purged log.
    let timing = Timing {
        snapshot_every: 20,
        ..Timing::default()
    };
    let mut g = Group::start_with(None, timing).await?;
    let (mut active, mut epoch) = g.settled().await?;

    // The witness, then the standby, then the active: one at a time.
    for victim in [3, other_member(active).expect("member"), active] {
        g.stop_node(victim).await?;
        g.wait_for("one active without the victim", SETTLE, |v| {
            v.values().filter(|x| x.me_active).count() == 1
        })
        .await?;
        g.start_node(victim).await?;
        let views = g
            .wait_for("victim recovered", SETTLE, |v| {
                stable(v) && v[&victim].epoch >= epoch
            })
            .await?;
        let now_active = views[&victim].active.expect("active");
        let now_epoch = views[&victim].epoch;
        assert!(now_epoch >= epoch, "epochs never go back");
        if now_active != active {
            assert!(now_epoch > epoch, "a new active has a new epoch");
        }
        active = now_active;
        epoch = now_epoch;
    }
    for id in [1, 2, 3] {
        let dir = g.nodes[&id].pair.id();
        assert_eq!(dir, id);
    }
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn either_member_starts_alone_with_the_witness() -> anyhow::Result<()> {
    for alone in [1, 2] {
        let mut g = Group::start_only(None, Timing::default(), &[alone, 3]).await?;
        let views = g
            .wait_for("the lone member active", SETTLE, |v| {
                stable(v) && v[&alone].me_active
            })
            .await?;
        let epoch = views[&alone].epoch;
        let expiries = g.pair(alone).metrics().lease_expiries;
        // The other member joins later from an empty directory: it catches
        // up and stays standby.
        let late = other_member(alone).expect("member");
        g.start_node(late).await?;
        let views = g
            .wait_for("the late member caught up", SETTLE, |v| {
                stable(v)
                    && v[&alone].me_active
                    && v[&late].active == Some(alone)
                    && v[&late].epoch == v[&alone].epoch
            })
            .await?;
        assert_role_kept(&g, &views, alone, epoch, expiries);
        g.monitor.check()?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cutting_the_link_between_the_members_keeps_one_active() -> anyhow::Result<()> {
    let g = Group::start(None).await?;
    let (_, epoch) = g.settled().await?;
    // Both members still reach the witness, not each other.
    g.router.cut(1, 2);
    let views = g
        .wait_for("one active the witness agrees on", SETTLE, |v| {
            let actives: Vec<_> = v
                .iter()
                .filter(|(_, x)| x.me_active)
                .map(|(id, _)| *id)
                .collect();
            actives.len() == 1 && v[&3].active == Some(actives[0])
        })
        .await?;
    assert!(views[&3].epoch >= epoch);
    g.router.heal();
    g.settled().await?;
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_network_still_settles_on_one_active_and_fails_over() -> anyhow::Result<()> {
    let mut g = Group::start(None).await?;
    g.router.set_delay(Duration::from_millis(20));
    let (active, epoch) = g.settled().await?;
    g.stop_node(active).await?;
    let other = other_member(active).expect("member");
    g.wait_for("the other member active", SETTLE, |v| {
        v[&other].me_active && v[&other].epoch > epoch
    })
    .await?;
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_behind_the_witness_takes_over_when_the_leader_dies() -> anyhow::Result<()> {
    // The witness never stands on its own; if the leader dies after an
    // entry reached the witness but not the other member, that member
    // cannot win a vote without the witness's help.
    let mut g = Group::start(None).await?;
    g.settled().await?;
    let views = g
        .wait_for("a leader known everywhere", SETTLE, |v| {
            let l = v[&3].leader;
            l.is_some() && v.values().all(|x| x.leader == l)
        })
        .await?;
    let leader = views[&3].leader.expect("leader");
    let behind = other_member(leader).expect("member");

    // Cut the member off the leader only: entries commit with the witness.
    g.router.cut(leader, behind);
    g.pair(leader).report_health(Health {
        plc_ok: None,
        life_sign: Some(42),
        ready: true,
    });
    g.wait_for("the witness ahead of the cut-off member", SETTLE, |v| {
        v[&3]
            .health
            .get(&leader)
            .is_some_and(|(h, _)| h.life_sign == Some(42))
    })
    .await?;
    assert!(g
        .pair(behind)
        .view()
        .borrow()
        .health
        .get(&leader)
        .is_none_or(|(h, _)| h.life_sign != Some(42)));

    g.stop_node(leader).await?;
    g.router.heal();
    let views = g
        .wait_for("the member that was behind active", SETTLE, |v| {
            v[&behind].me_active && v[&behind].leader == Some(behind)
        })
        .await?;
    assert!(!views[&3].me_active);
    g.monitor.check()
}

/// Records every view of `pair` from now on in which it is active at an
/// epoch not above `epoch`: a restarted process must never continue its
/// predecessor's activation.
fn watch_for_stale_activation(pair: &raft::Pair, epoch: u64) -> Arc<Mutex<Vec<u64>>> {
    let stale = Arc::new(Mutex::new(Vec::new()));
    let mut rx = pair.view();
    let lease = pair.lease();
    let out = stale.clone();
    tokio::spawn(async move {
        loop {
            {
                let v = rx.borrow_and_update();
                if v.me_active && v.epoch <= epoch {
                    out.lock().expect("lock").push(v.epoch);
                }
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
    });
    // The lease too, sampled often: it is what side effects check.
    let pair_view = pair.view();
    let out = stale.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for _ in 0..20_000 {
            tick.tick().await;
            let e = pair_view.borrow().epoch;
            if lease.is_valid() && e <= epoch {
                out.lock().expect("lock").push(e);
            }
        }
    });
    stale
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_active_alone_with_the_witness_is_granted_a_larger_epoch() -> anyhow::Result<()>
{
    let mut g = Group::start(None).await?;
    let (active, _) = g.settled().await?;
    let standby = other_member(active).expect("member");
    let old_incarnation = g.pair(active).incarnation();

    // The standby dies first: the active keeps its role with the witness.
    g.stop_node(standby).await?;
    let views = g
        .wait_for("the active still active with the witness", SETTLE, |v| {
            stable(v) && v[&active].me_active
        })
        .await?;
    let epoch = views[&active].epoch;

    // Then the active dies too (like kill -9: nothing released), so the
    // state on every disk still names it at `epoch`.
    g.stop_node(active).await?;
    assert_eq!(g.pair(3).view().borrow().active, Some(active));
    assert_eq!(g.pair(3).view().borrow().epoch, epoch);

    // A new process of the same member, same data directory: a new
    // incarnation. It recovers a state naming its member active, but that
    // activation was its predecessor's.
    g.start_node(active).await?;
    let new_incarnation = g.pair(active).incarnation();
    assert_ne!(new_incarnation, old_incarnation);
    assert_ne!(new_incarnation, raft::NO_INCARNATION);
    let stale = watch_for_stale_activation(g.pair(active), epoch);

    let views = g
        .wait_for(
            "the restarted member active under a larger epoch",
            SETTLE,
            |v| stable(v) && v[&active].me_active && v[&active].epoch > epoch,
        )
        .await?;
    assert_eq!(views[&3].active, Some(active));
    assert_eq!(views[&3].epoch, views[&active].epoch);
    assert!(
        stale.lock().expect("lock").is_empty(),
        "the restarted process acted under its predecessor's epoch: {:?}",
        stale.lock().expect("lock")
    );

    // The other member comes back: it catches up and stays standby.
    let new_epoch = views[&active].epoch;
    g.start_node(standby).await?;
    g.wait_for("the other member caught up", SETTLE, |v| {
        stable(v) && v[&standby].active == Some(active) && v[&standby].epoch == new_epoch
    })
    .await?;
    assert!(stale.lock().expect("lock").is_empty());
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_active_restarted_at_once_never_continues_its_old_epoch() -> anyhow::Result<()> {
    // The other member is up: whoever gets the role, it is a new
    // activation with a larger epoch, and the restarted process never acts
    // under the old one.
    let mut g = Group::start(None).await?;
    let (active, epoch) = g.settled().await?;
    g.stop_node(active).await?;
    g.start_node(active).await?;
    let stale = watch_for_stale_activation(g.pair(active), epoch);
    let views = g
        .wait_for("one active under a larger epoch", SETTLE, |v| {
            stable(v) && v[&3].epoch > epoch
        })
        .await?;
    assert!(views.values().all(|v| v.epoch > epoch));
    assert!(
        stale.lock().expect("lock").is_empty(),
        "the restarted process acted under its predecessor's epoch: {:?}",
        stale.lock().expect("lock")
    );
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_restarted_behind_takes_over_when_the_leader_dies_at_once() -> anyhow::Result<()> {
    // The bench's pattern: the active dies, the other takes over, the dead
    // one restarts and, before it has caught up, the new active dies too.
    // The restarted member can win only through the witness's rescue, and
    // its own elections must not outrun the witness's term.
    let mut g = Group::start(None).await?;
    let (first, epoch) = g.settled().await?;
    let second = other_member(first).expect("member");
    g.stop_node(first).await?;
    let views = g
        .wait_for("the second member active", SETTLE, |v| {
            v[&second].me_active && v[&second].epoch > epoch
        })
        .await?;
    let epoch = views[&second].epoch;
    g.start_node(first).await?;
    g.stop_node(second).await?;
    g.wait_for("the restarted member active", SETTLE, |v| {
        v[&first].me_active && v[&first].epoch > epoch
    })
    .await?;
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_forward_naming_the_other_member_is_refused_and_changes_nothing(
) -> anyhow::Result<()> {
    use raft::network::Reply;
    use raft::network::Rpc;
    use raft::Request;

    let g = Group::start(None).await?;
    let (victim, epoch) = g.settled().await?;
    let expiries = g.pair(victim).metrics().lease_expiries;
    let views = g
        .wait_for("a member leader known everywhere", SETTLE, |v| {
            let l = v[&3].leader;
            l.is_some_and(raft::is_member) && v.values().all(|x| x.leader == l)
        })
        .await?;
    let leader = views[&3].leader.context("leader")?;
    // Forgers: the witness, and the standby unless it leads (a leader
    // proposes whatever it likes anyway). Each uses its own connection (its
    // hello says who it is) to ask the leader for what only the active, or
    // only the leader, may propose.
    let standby = other_member(victim).context("member")?;
    let forgers: Vec<_> = [3, standby].into_iter().filter(|&f| f != leader).collect();
    // A report for the active that says it cannot serve: applied, it would
    // hand the role over.
    let forged = Health {
        plc_ok: Some(false),
        life_sign: Some(4242),
        ready: false,
    };
    let mut refused = 0;
    for &forger in &forgers {
        let as_forger = g.router.transport(forger);
        for req in [
            Request::Health {
                member: victim,
                incarnation: g.pair(victim).incarnation(),
                report: forged.clone(),
                stream_ok: Some(false),
            },
            Request::Release {
                member: victim,
                incarnation: g.pair(victim).incarnation(),
                epoch,
                lapsed: false,
            },
            Request::Renew {
                member: victim,
                incarnation: g.pair(victim).incarnation(),
                epoch,
            },
            Request::Acquire {
                member: standby,
                incarnation: g.pair(standby).incarnation(),
                expect_epoch: epoch,
                expect_renew_index: 0,
            },
            Request::Probe,
        ] {
            let reply = as_forger
                .call(leader, Rpc::Forward(req.clone()), Duration::from_secs(5))
                .await?;
            assert!(
                matches!(&reply, Reply::Failed(why) if why.contains("refused")),
                "{forger}: {req:?} got {reply:?}"
            );
            refused += 1;
        }
    }
    assert_eq!(g.pair(leader).metrics().rejected_forwards, refused);
    // Nothing moved: the victim keeps the role, and no node ever applied
    // the forged report.
    let views = g
        .wait_for("the victim's next own report everywhere", SETTLE, |v| {
            stable(v)
                && v.values().all(|x| {
                    x.health
                        .get(&victim)
                        .is_some_and(|(_, age)| *age < Duration::from_millis(500))
                })
        })
        .await?;
    assert_role_kept(&g, &views, victim, epoch, expiries);
    for v in views.values() {
        assert!(v.health.values().all(|(h, _)| h.life_sign != Some(4242)));
    }
    // A peer's own report still goes through its forward.
    let own = Request::Health {
        member: standby,
        incarnation: g.pair(standby).incarnation(),
        report: Health::default(),
        stream_ok: None,
    };
    let reply = g
        .router
        .transport(standby)
        .call(leader, Rpc::Forward(own), Duration::from_secs(5))
        .await?;
    assert!(
        matches!(reply, Reply::Forward(raft::Response::Ok)),
        "{reply:?}"
    );
    g.monitor.check()
}

/// Every change of `me_active` and epoch in the views of `pair` from now
/// on, in order.
fn record_roles(pair: &raft::Pair) -> Arc<Mutex<Vec<(bool, u64)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut rx = pair.view();
    let out = seen.clone();
    tokio::spawn(async move {
        loop {
            {
                let v = rx.borrow_and_update();
                let mut s = out.lock().expect("lock");
                if s.last() != Some(&(v.me_active, v.epoch)) {
                    s.push((v.me_active, v.epoch));
                }
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
    });
    seen
}

/// The epochs at which `roles` shows the member active again after it
/// showed the role lost at that same epoch.
fn revived(roles: &[(bool, u64)]) -> Vec<u64> {
    let mut held = None;
    let mut lost = std::collections::BTreeSet::new();
    let mut bad = Vec::new();
    for &(active, epoch) in roles {
        if active {
            if lost.contains(&epoch) {
                bad.push(epoch);
            }
            held = Some(epoch);
        } else if let Some(e) = held.take() {
            lost.insert(e);
        }
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lapsed_lease_is_final_for_its_epoch_and_the_role_returns_with_a_larger_epoch(
) -> anyhow::Result<()> {
    let g = Group::start(None).await?;
    let (active, epoch) = g.settled().await?;
    let standby = other_member(active).context("member")?;
    // The standby cannot serve, so nobody but the active can ever be
    // granted; then the active is cut off: its renewals fail until its
    // lease lapses, and nobody else is granted meanwhile.
    g.pair(standby).set_ready(false);
    g.wait_for("the standby not ready everywhere", SETTLE, |v| {
        v.values()
            .all(|x| x.health.get(&standby).is_some_and(|(h, _)| !h.ready))
    })
    .await?;
    let roles: Vec<_> = [1, 2]
        .into_iter()
        .map(|m| (m, record_roles(g.pair(m))))
        .collect();
    let expiries = g.pair(active).metrics().lease_expiries;
    g.router.isolate(active);
    let views = g
        .wait_for("the active's lease lapsed", SETTLE, |v| {
            !v[&active].me_active
        })
        .await?;
    assert!(
        views.values().all(|v| v.epoch == epoch),
        "nobody was granted while nothing could commit: {views:#?}"
    );
    assert!(g.pair(active).metrics().lease_expiries > expiries);

    // Heal: the role comes back, only with a larger epoch (to the same
    // member: the only one that can serve).
    g.router.heal();
    let views = g.wait_for("one active again", SETTLE, stable).await?;
    for (m, seen) in &roles {
        let seen = seen.lock().expect("lock").clone();
        assert!(
            revived(&seen).is_empty(),
            "member {m} active again at an epoch it had lost: {seen:?}"
        );
    }
    assert!(views.values().all(|v| v.epoch > epoch), "{views:#?}");
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_cut_off_for_long_keeps_its_term_and_does_not_unseat_the_leader_when_back(
) -> anyhow::Result<()> {
    // Member 1 leads and is active; member 2 is the standby follower.
    let mut g = Group::start_only(None, Timing::default(), &[1, 3]).await?;
    g.wait_for("member 1 active", SETTLE, |v| stable(v) && v[&1].me_active)
        .await?;
    g.start_node(2).await?;
    let views = g
        .wait_for("member 2 caught up, 1 leads, one term", SETTLE, |v| {
            stable(v)
                && v[&1].me_active
                && v.values()
                    .all(|x| x.leader == Some(1) && x.term == v[&1].term)
        })
        .await?;
    let (leader, term, active, epoch) = (1, views[&1].term, 1, views[&1].epoch);
    let away = 2;
    let refused = g.pair(away).metrics().stands_refused;
    let expiries = g.pair(active).metrics().lease_expiries;

    // Cut off for long: it hears no leader and asks, again and again,
    // whether it should stand; nobody answers, so it never does.
    g.router.isolate(away);
    wait_until("ten refused pre-votes", || {
        g.pair(away).metrics().stands_refused >= refused + 10
    })
    .await?;
    assert_eq!(
        g.pair(away).view().borrow().term,
        term,
        "the cut-off member raised its term"
    );

    // Back: it follows the same leader in the same term; the role stays.
    g.router.heal();
    let views = g
        .wait_for("the member back under the same leader", SETTLE, |v| {
            stable(v) && v[&active].me_active && v[&away].leader == Some(leader)
        })
        .await?;
    for v in views.values() {
        assert_eq!((v.leader, v.term), (Some(leader), term), "{views:#?}");
    }
    assert_role_kept(&g, &views, active, epoch, expiries);
    g.monitor.check()
}

/// Asserts that every node names `active` and that `active` holds the role,
/// at `epoch` or at a later one that its own lease lapses since
/// (`expiries` is its `lease_expiries` when it held `epoch`) explain: a
/// renewal that a loaded machine delays past the lease costs an epoch, not
/// the role (see the crate's lease rule), and that is not what these tests
/// are about.
fn assert_role_kept(
    g: &Group,
    views: &common::Views,
    active: raft::NodeId,
    epoch: u64,
    expiries: u64,
) {
    let now = views[&active].epoch;
    let lapses = g.pair(active).metrics().lease_expiries - expiries;
    for v in views.values() {
        assert_eq!((v.active, v.epoch), (Some(active), now), "{views:#?}");
    }
    assert!(views[&active].me_active, "{views:#?}");
    assert!(
        now >= epoch && now - epoch <= lapses,
        "the role moved from epoch {epoch} to {now} with {lapses} lapses of its lease: {views:#?}"
    );
}

/// Polls `cond` (a counter, which has no change notification) until it
/// holds, for at most `SETTLE`.
async fn wait_until(what: &str, cond: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !cond() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tick.tick().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_health_moves_the_role_to_the_member_that_can_use_its_stream() -> anyhow::Result<()>
{
    let g = Group::start(None).await?;
    let (active, epoch) = g.settled().await?;
    let standby = other_member(active).context("member")?;
    g.pair(active).report_stream(Some(false));
    g.pair(standby).report_stream(Some(true));
    let views = g
        .wait_for("the standby active", SETTLE, |v| {
            stable(v) && v[&standby].me_active && v[&standby].epoch > epoch
        })
        .await?;
    assert_eq!(views[&3].stream_ok.get(&active), Some(&false));
    assert_eq!(views[&3].stream_ok.get(&standby), Some(&true));
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switchover_moves_the_role_to_the_other_member_with_the_next_epoch() -> anyhow::Result<()> {
    let g = Group::start(None).await?;
    let (active, epoch) = g.settled().await?;
    let standby = other_member(active).context("member")?;
    // Refused on anyone but the active.
    for id in [standby, 3] {
        let err = g.pair(id).switchover().await.expect_err("not active");
        assert!(err.to_string().contains("not active"), "{err}");
    }
    g.wait_for("the standby's report fresh everywhere", SETTLE, |v| {
        v.values()
            .all(|x| x.health.get(&standby).is_some_and(|(h, _)| h.ready))
    })
    .await?;
    g.pair(active).switchover().await?;
    assert!(
        !g.pair(active).lease().is_valid(),
        "the lease ends with the release"
    );
    let views = g
        .wait_for("the other member active", SETTLE, |v| v[&standby].me_active)
        .await?;
    assert_eq!(views[&standby].epoch, epoch + 1, "{views:#?}");
    assert!(!views[&active].me_active);
    g.wait_for("everyone agrees", SETTLE, |v| {
        stable(v) && v[&standby].me_active
    })
    .await?;
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_in_maintenance_hands_the_role_over_and_is_never_granted_until_it_leaves(
) -> anyhow::Result<()> {
    let mut g = Group::start(None).await?;
    let (first, epoch) = g.settled().await?;
    let second = other_member(first).context("member")?;

    // The active goes into maintenance: it hands the role over at once.
    g.wait_for("the other member's report fresh everywhere", SETTLE, |v| {
        v.values()
            .all(|x| x.health.get(&second).is_some_and(|(h, _)| h.ready))
    })
    .await?;
    g.pair(first).set_maintenance(true).await?;
    let views = g
        .wait_for("the other member active", SETTLE, |v| {
            stable(v) && v[&second].me_active && v[&second].epoch > epoch
        })
        .await?;
    assert!(views.values().all(|v| v.maintenance.contains(&first)));
    let epoch = views[&second].epoch;

    // The active dies: the member in maintenance is never granted.
    g.stop_node(second).await?;
    g.wait_for("the dead member stale where it counts", SETTLE, |v| {
        v.values().all(|x| {
            x.health
                .get(&second)
                .is_none_or(|(_, age)| *age >= g.timing.health_fresh)
                && x.leader.is_some()
        })
    })
    .await?;
    let granted = tokio::time::timeout(
        Duration::from_secs(2),
        g.wait_for("the member in maintenance granted", SETTLE, |v| {
            v[&first].me_active || v.values().any(|x| x.epoch > epoch)
        }),
    )
    .await;
    assert!(
        granted.is_err(),
        "a member in maintenance was granted: {granted:?}"
    );

    // Out of maintenance: it is granted.
    g.pair(first).set_maintenance(false).await?;
    let views = g
        .wait_for("the member out of maintenance active", SETTLE, |v| {
            v[&first].me_active && v[&first].epoch > epoch
        })
        .await?;
    assert!(views.values().all(|v| v.maintenance.is_empty()));

    // With nobody to take the role, the active may not go into
    // maintenance, nor switch over; the witness has no role to leave.
    for refused in [
        g.pair(first).set_maintenance(true).await,
        g.pair(first).switchover().await,
    ] {
        let err = refused.expect_err("no healthy peer");
        assert!(err.to_string().contains("no healthy peer"), "{err}");
    }
    assert!(g.pair(3).set_maintenance(true).await.is_err());
    assert!(g.pair(first).view().borrow().maintenance.is_empty());
    g.monitor.check()
}

/// Member 1 leads and is active, member 2 caught up, and every node knows
/// the same group id.
async fn one_leads_and_is_active_with_a_group_id() -> anyhow::Result<(Group, u64)> {
    let mut g = Group::start_only(None, Timing::default(), &[1, 3]).await?;
    g.wait_for("member 1 active", SETTLE, |v| stable(v) && v[&1].me_active)
        .await?;
    g.start_node(2).await?;
    let views = g
        .wait_for("member 2 caught up, 1 leads, one group id", SETTLE, |v| {
            stable(v)
                && v[&1].me_active
                && v[&2].health.contains_key(&2)
                && v.values()
                    .all(|x| x.leader == Some(1) && x.group.is_some() && x.group == v[&1].group)
        })
        .await?;
    Ok((g, views[&1].epoch))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_emptied_witness_cannot_help_a_stale_isolated_active_renew() -> anyhow::Result<()> {
    let (mut g, _) = one_leads_and_is_active_with_a_group_id().await?;
    // The active leader is cut off: member 2 and the witness elect 2,
    // which is granted the role. Member 1 still believes it leads its old
    // term (openraft 0.9 has no CheckQuorum).
    g.router.isolate(1);
    let views = g
        .wait_for("member 2 active", SETTLE, |v| {
            v[&2].me_active && v[&3].active == Some(2)
        })
        .await?;
    let epoch = views[&2].epoch;
    let roles_1 = record_roles(g.pair(1));

    // The witness loses its store, and comes back reaching only the stale
    // leader. At term 0 it would follow it, and member 1 would commit with
    // it again (release its lapsed epoch, be granted the role anew, under
    // an epoch the group already gave to member 2).
    g.stop_node(3).await?;
    g.wipe(3)?;
    g.router.rejoin(1);
    g.router.cut(1, 2);
    g.router.cut(2, 3);
    g.start_node(3).await?;
    let revived = tokio::time::timeout(
        Duration::from_secs(2),
        g.wait_for("member 1 active again", SETTLE, |v| v[&1].me_active),
    )
    .await;
    assert!(
        revived.is_err(),
        "the stale leader was active again: {revived:?}"
    );
    // It waits for both members, and says so.
    let waiting = g.pair(3).view().borrow().waiting.clone();
    assert!(
        waiting
            .as_deref()
            .is_some_and(|w| w.contains("both peers to confirm")),
        "{waiting:?}"
    );
    assert!(!g.pair(3).view().borrow().me_active);

    // Healed: both members agree on the term and leader, the witness
    // starts with that vote, and the pair has one active again.
    g.router.heal();
    let views = g
        .wait_for("the witness running and one active", SETTLE, |v| {
            stable(v) && v[&3].waiting.is_none() && v[&3].group.is_some()
        })
        .await?;
    assert!(views.values().all(|v| v.group == views[&1].group));
    let seen = roles_1.lock().expect("lock").clone();
    assert!(
        seen.iter().all(|&(active, e)| !active || e > epoch),
        "member 1 active under an epoch the group had already used: {seen:?} (member 2 had {epoch})"
    );
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_emptied_member_does_not_initialise_a_new_group_and_joins_once_both_confirm(
) -> anyhow::Result<()> {
    let (mut g, _) = one_leads_and_is_active_with_a_group_id().await?;
    let group = g.pair(3).view().borrow().group;
    // Member 2 loses its store; member 1 is down too: only the witness,
    // which knows the group, answers.
    g.stop_node(2).await?;
    g.wipe(2)?;
    g.stop_node(1).await?;
    g.start_node(2).await?;
    // Until it says it waits, or writes a log of its own.
    let dir = g.data_dir(2);
    let log_len = || std::fs::metadata(dir.join(raft::LOG_FILE)).map_or(0, |m| m.len());
    let view = g.pair(2).view();
    let says_why = |w: &Option<String>| {
        w.as_deref()
            .is_some_and(|w| w.contains("both peers to confirm"))
    };
    wait_until("the emptied member waits or writes", || {
        says_why(&view.borrow().waiting) || log_len() > 0
    })
    .await?;
    // It wrote nothing: no log entry (no initialise), no vote.
    assert_eq!(
        log_len(),
        0,
        "the emptied member initialised a group of its own"
    );
    assert!(!dir.join(raft::VOTE_FILE).exists());
    let waiting = view.borrow().waiting.clone();
    assert!(says_why(&waiting), "{waiting:?}");
    assert!(g
        .pair(2)
        .switchover()
        .await
        .is_err_and(|e| e.to_string().contains("not started")));

    // Member 1 comes back (store intact): both confirm; member 2 starts
    // with their vote and catches up as a member of the same group.
    g.start_node(1).await?;
    let views = g
        .wait_for("member 2 running in the same group", SETTLE, |v| {
            stable(v) && v[&2].waiting.is_none() && v[&2].group == group
        })
        .await?;
    assert!(views.values().all(|v| v.group == group));
    assert!(
        dir.join(raft::GROUP_FILE).exists(),
        "it learned the group id"
    );
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_can_confirm_an_empty_store_when_a_peer_is_gone() -> anyhow::Result<()> {
    let (mut g, epoch) = one_leads_and_is_active_with_a_group_id().await?;
    g.stop_node(2).await?;
    g.wipe(2)?;
    g.stop_node(1).await?;
    g.start_node(2).await?;
    g.wait_for("the emptied member waits", SETTLE, |v| {
        v[&2].waiting.is_some()
    })
    .await?;
    // Member 1 is gone for good: the operator confirms.
    g.pair(2).confirm_empty_store();
    let views = g
        .wait_for("member 2 active with the witness", SETTLE, |v| {
            stable(v) && v[&2].me_active && v[&2].waiting.is_none()
        })
        .await?;
    assert!(views[&2].epoch > epoch, "a new activation, a new epoch");
    assert_eq!(views[&2].group, views[&3].group);
    g.monitor.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_without_the_identity_file_keep_working_and_learn_it_back() -> anyhow::Result<()> {
    let (mut g, epoch) = one_leads_and_is_active_with_a_group_id().await?;
    let group = g.pair(1).view().borrow().group;
    // As a store from before the file existed: log, vote and snapshot,
    // no raft-group.json. All three restart on their stores.
    for id in [1, 2, 3] {
        g.stop_node(id).await?;
        std::fs::remove_file(g.data_dir(id).join(raft::GROUP_FILE))?;
    }
    for id in [1, 2, 3] {
        g.start_node(id).await?;
    }
    let views = g
        .wait_for("one active, nobody waiting", SETTLE, |v| {
            stable(v) && v.values().all(|x| x.waiting.is_none() && x.group == group)
        })
        .await?;
    assert!(views.values().all(|v| v.epoch > epoch));
    for id in [1, 2, 3] {
        assert!(g.data_dir(id).join(raft::GROUP_FILE).exists(), "voter {id}");
    }
    g.monitor.check()
}

/// An operator's maintenance request made just after the raft leader died
/// (the asker still names the dead leader) commits once the other two have
/// elected a new one, instead of failing on the forward to the dead one.
#[tokio::test]
async fn maintenance_asked_just_after_the_raft_leader_died_still_commits() -> anyhow::Result<()> {
    let mut g = Group::start(None).await?;
    g.settled().await?;
    let views = g
        .wait_for("one raft leader known everywhere", SETTLE, |v| {
            let leaders: std::collections::BTreeSet<_> = v.values().map(|x| x.leader).collect();
            leaders.len() == 1 && leaders.iter().all(Option::is_some)
        })
        .await?;
    let leader = views
        .values()
        .next()
        .and_then(|v| v.leader)
        .context("leader")?;
    let asker = [1, 2].into_iter().find(|m| *m != leader).context("asker")?;
    g.stop_node(leader).await?;
    // Taking a member out of maintenance passes every check of the asker:
    // what is tested is the proposal alone.
    g.pair(asker).set_maintenance(false).await?;
    Ok(())
}
