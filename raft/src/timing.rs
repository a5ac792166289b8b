//! Every duration the pair runs on, in one place, with the inequalities
//! that make the lease safe checked before anything starts.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::RaftError;

/// Timing of the group (openraft) and of the lease protocol.
///
/// Safety rests on one inequality between `lease` and `grace` (see
/// [`Timing::validate`]); the rest trades failover speed against load.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// openraft heartbeat: how often the leader confirms itself to followers
    /// (openraft ticks every 1.5 × this, and gives each AppendEntries this
    /// long to answer).
    pub heartbeat: Duration,
    /// openraft election timeout, lower bound; must exceed `heartbeat`.
    /// Also the least pause between two elections a member starts on its
    /// own while none succeeds (see `Timing::stand_retry`).
    pub election_min: Duration,
    /// openraft election timeout, upper bound (randomised in between so
    /// that two members rarely stand at once). Also every voter's leader
    /// lease: a voter that heard a leader within this refuses to vote for
    /// another; a member stands on its own just after it (see
    /// `Timing::stand_after`).
    pub election_max: Duration,
    /// How often the active member proposes a Renew; several renewals fit in
    /// one lease so that a single slow commit does not drop the role.
    pub renew: Duration,
    /// How long a committed renewal keeps the active member's lease valid,
    /// counted from when it sent the proposal, on its own clock.
    pub lease: Duration,
    /// How long the leader waits after applying the last renewal before it
    /// may grant the role to someone else, on its own clock.
    pub grace: Duration,
    /// Bound on the rate error of any node's clocks (the lease clock, BOOTTIME,
    /// and the monotonic clock grants wait on), in parts per
    /// million; enters the lease/grace inequality.
    pub clock_drift_ppm: u32,
    /// Time every lease check may lag the real end of the lease: the delay
    /// between `Lease::is_valid()` and the side effect it guards finishing,
    /// plus timer lateness. Part of the inequality.
    pub margin: Duration,
    /// How often a member re-proposes an unchanged health report (a changed
    /// one goes out on the next turn).
    pub health_interval: Duration,
    /// A member whose last health report is older than this (as applied at
    /// the deciding node) is not alive and is never granted the role.
    pub health_fresh: Duration,
    /// No flapping: a member that lost the role is not chosen back, and a
    /// member that gained it does not give it up voluntarily, within this.
    pub flap_hold: Duration,
    /// Consecutive `plc_ok == Some(false)` reports after which the active
    /// hands the role to a standby whose PLC link is fine.
    pub field_bad_reports: u32,
    /// Timeout of one raft RPC connection attempt and of a forwarded
    /// proposal that is not a renewal (renewals use `lease`).
    pub rpc_timeout: Duration,
    /// Build a snapshot after this many log entries; the log is purged up
    /// to the snapshot right after.
    pub snapshot_every: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(40),
            election_min: Duration::from_millis(100),
            election_max: Duration::from_millis(150),
            renew: Duration::from_millis(50),
            lease: Duration::from_millis(250),
            grace: Duration::from_millis(350),
            clock_drift_ppm: 10_000,
            margin: Duration::from_millis(50),
            health_interval: Duration::from_millis(200),
            health_fresh: Duration::from_secs(1),
            flap_hold: Duration::from_secs(2),
            field_bad_reports: 3,
            rpc_timeout: Duration::from_millis(250),
            snapshot_every: 500,
        }
    }
}

impl Timing {
    /// The smallest `grace` that keeps leases disjoint for this `lease`,
    /// drift and margin.
    ///
    /// Let ρ be the clock-rate bound. The active member's lease lasts `lease`
    /// on its clock, so at most `lease / (1 − ρ)` of real time after it sent
    /// the renewal. The leader waits `grace` on its clock from the instant it
    /// applied that renewal (which is after the send), so at least
    /// `grace / (1 + ρ)` of real time. Grants never overlap a lease (with
    /// `margin` to spare for the side effect in progress) iff
    ///
    /// ```text
    /// grace / (1 + ρ) > lease / (1 − ρ) + margin
    /// grace > lease · (1 + ρ) / (1 − ρ) + margin · (1 + ρ)     (≈ lease · (1 + 2ρ) + margin)
    /// ```
    ///
    /// Defaults: 250 ms · 1.0202 + 50.5 ms ≈ 305.6 ms < 350 ms.
    pub fn min_grace(&self) -> Duration {
        let rho = f64::from(self.clock_drift_ppm) / 1_000_000.0;
        let lease = self.lease.as_secs_f64() * (1.0 + rho) / (1.0 - rho);
        let margin = self.margin.as_secs_f64() * (1.0 + rho);
        Duration::from_secs_f64(lease + margin)
    }

    /// How long after its lease ended (on its own clock) a member can be
    /// sure that no other member has been granted the role:
    /// `grace·(1 − ρ)/(1 + ρ) − lease` (93.07 ms with the defaults).
    ///
    /// The leader grants no earlier than `grace` on its clock after it
    /// applied the member's last successful renewal, which was after the
    /// member sent it at `s`: at least `grace/(1 + ρ)` of real time, at
    /// least `grace·(1 − ρ)/(1 + ρ)` on the member's clock. The lease from
    /// that renewal ended at `s + lease`, or earlier if revoked. The
    /// inequality [`Timing::validate`] checks makes this more than
    /// `margin·(1 − ρ)`.
    pub fn peer_grant_after(&self) -> Duration {
        let rho = f64::from(self.clock_drift_ppm) / 1_000_000.0;
        let grace = self.grace.as_secs_f64() * (1.0 - rho) / (1.0 + rho);
        Duration::from_secs_f64((grace - self.lease.as_secs_f64()).max(0.0))
    }

    /// The earliest instant another member can be granted the role, given
    /// the instant this member's lease ended
    /// ([`Lease::ended_at`](crate::Lease::ended_at)): `ended_at +
    /// peer_grant_after()`. A side effect that outlives the role (an
    /// `on_deactivate` hook) must have ended, killed if need be, strictly
    /// before it.
    pub fn peer_grant_earliest(&self, ended_at: Instant) -> Instant {
        ended_at + self.peer_grant_after()
    }

    /// Checks the safety inequality and the orderings openraft and the
    /// lease loop rely on; names the field that is wrong.
    pub fn validate(&self) -> Result<(), RaftError> {
        let bad = |field: &str, why: String| {
            Err(RaftError::Config {
                field: format!("timing.{field}"),
                reason: why,
            })
        };
        if self.clock_drift_ppm >= 100_000 {
            return bad("clock_drift_ppm", "must be below 100000 (10%)".into());
        }
        if self.heartbeat.is_zero() || self.heartbeat >= self.election_min {
            return bad(
                "heartbeat",
                format!(
                    "{:?} must be positive and below election_min {:?}",
                    self.heartbeat, self.election_min
                ),
            );
        }
        if self.election_min >= self.election_max {
            return bad(
                "election_min",
                format!(
                    "{:?} must be below election_max {:?}",
                    self.election_min, self.election_max
                ),
            );
        }
        if self.renew.is_zero() || self.renew >= self.lease {
            return bad(
                "renew",
                format!(
                    "{:?} must be positive and below lease {:?}",
                    self.renew, self.lease
                ),
            );
        }
        let min = self.min_grace();
        if self.grace <= min {
            return bad(
                "grace",
                format!(
                    "{:?} must exceed lease·(1+ρ)/(1−ρ) + margin·(1+ρ) = {:?}",
                    self.grace, min
                ),
            );
        }
        if self.health_interval.is_zero() || self.health_interval >= self.health_fresh {
            return bad(
                "health_interval",
                format!(
                    "{:?} must be positive and below health_fresh {:?}",
                    self.health_interval, self.health_fresh
                ),
            );
        }
        if self.snapshot_every == 0 {
            return bad("snapshot_every", "must be positive".into());
        }
        Ok(())
    }

    /// How long a member waits without hearing a leader before it stands
    /// for election on its own (the pair task triggers it; openraft's timer
    /// would wait about twice as long, longer after a rejected vote):
    /// `election_max` (the voters' leader lease, which must have run out
    /// for anyone to vote) plus a jitter between ¼ and ¾ `heartbeat` from
    /// `random`, so two members rarely stand at once and a voter that heard
    /// the last heartbeat a little later has let its lease run out too.
    pub(crate) fn stand_after(&self, random: u64) -> Duration {
        self.election_max + self.heartbeat / 4 + jitter(self.heartbeat / 2, random)
    }

    /// The pause before a member stands again while no election succeeds:
    /// `election_min` plus up to `heartbeat` of jitter from `random`.
    pub(crate) fn stand_retry(&self, random: u64) -> Duration {
        self.election_min + jitter(self.heartbeat, random)
    }

    /// The openraft configuration of one node.
    ///
    /// `enable_elect` is false on every node: openraft's own election
    /// timer would stand without asking anyone first, so a member cut off
    /// from both others would raise its term every few hundred
    /// milliseconds and unseat the leader when the cut heals. The pair
    /// task starts every election itself (`Raft::trigger().elect()`): a
    /// member after a pre-vote, the witness only to rescue a member (see
    /// the crate documentation).
    pub(crate) fn openraft_config(&self, cluster: String) -> Result<openraft::Config, RaftError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: cluster,
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_min),
            election_timeout_max: ms(self.election_max),
            install_snapshot_timeout: ms(self.rpc_timeout).max(200),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            // Purge right after a snapshot: a lagging follower gets the
            // (tiny) snapshot instead of old entries.
            max_in_snapshot_log_to_keep: 0,
            enable_elect: false,
            ..Default::default()
        };
        config.validate().map_err(|e| RaftError::Config {
            field: "timing".into(),
            reason: e.to_string(),
        })
    }
}

/// A duration in `[0, span)` picked by `random`.
fn jitter(span: Duration, random: u64) -> Duration {
    let span = u64::try_from(span.as_micros()).unwrap_or(u64::MAX);
    if span == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(random % span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_satisfy_the_inequality() {
        let t = Timing::default();
        t.validate().expect("defaults valid");
        assert!(t.grace > t.min_grace());
        t.openraft_config("m/n".into()).expect("openraft config");
    }

    #[test]
    fn a_peer_is_granted_no_earlier_than_grace_less_the_lease_after_the_lease_ended() {
        let t = Timing::default();
        // 350 ms · 0.99/1.01 − 250 ms = 93.07 ms.
        let after = t.peer_grant_after();
        assert!(
            after > Duration::from_millis(93) && after < Duration::from_millis(94),
            "{after:?}"
        );
        let ended = Instant::now();
        assert_eq!(t.peer_grant_earliest(ended), ended + after);
        // Whatever valid timing: more than the margin a side effect may
        // take past a lease check, less than grace.
        for (lease, grace, ppm) in [(250, 350, 10_000), (100, 200, 0), (400, 700, 50_000)] {
            let t = Timing {
                lease: Duration::from_millis(lease),
                grace: Duration::from_millis(grace),
                clock_drift_ppm: ppm,
                renew: Duration::from_millis(lease / 5),
                ..Timing::default()
            };
            t.validate().expect("valid");
            let rho = f64::from(ppm) / 1e6;
            assert!(t.peer_grant_after().as_secs_f64() > t.margin.as_secs_f64() * (1.0 - rho));
            assert!(t.peer_grant_after() < t.grace);
        }
    }

    #[test]
    fn members_stand_after_the_leader_lease_and_before_openraft_would() {
        let t = Timing::default();
        for r in [0, 1, 7_777, u64::MAX / 3, u64::MAX] {
            let after = t.stand_after(r);
            assert!(after > t.election_max, "{after:?}");
            assert!(after < t.election_max + t.heartbeat, "{after:?}");
            assert!(after < t.election_max + t.election_min);
            let retry = t.stand_retry(r);
            assert!(retry >= t.election_min && retry < t.election_min + t.heartbeat);
        }
    }

    #[test]
    fn a_grace_not_above_the_bound_is_refused_by_name() {
        let t = Timing {
            grace: Duration::from_millis(300),
            ..Timing::default()
        };
        match t.validate() {
            Err(RaftError::Config { field, .. }) => assert_eq!(field, "timing.grace"),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn orderings_are_checked() {
        let cases = [
            (
                Timing {
                    renew: Duration::from_millis(300),
                    ..Timing::default()
                },
                "timing.renew",
            ),
            (
                Timing {
                    heartbeat: Duration::from_millis(200),
                    ..Timing::default()
                },
                "timing.heartbeat",
            ),
            (
                Timing {
                    election_max: Duration::from_millis(100),
                    ..Timing::default()
                },
                "timing.election_min",
            ),
        ];
        for (t, want) in cases {
            match t.validate() {
                Err(RaftError::Config { field, .. }) => assert_eq!(field, want),
                other => panic!("expected {want}, got {other:?}"),
            }
        }
    }
}
