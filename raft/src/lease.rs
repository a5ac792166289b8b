//! The active member's lease: the only thing a member's side effects (PLC
//! writes, publishing, command handling) may trust.
//!
//! The deadline lives in an `AtomicU64` (nanoseconds on a [`LeaseClock`])
//! so that any task can check it without asking the pair task, and so
//! that it expires by itself: nobody has to run for a lease to end.
//!
//! ## Why CLOCK_BOOTTIME, and only here
//!
//! The lease clock is `CLOCK_BOOTTIME` ([`BootClock`]), not tokio's
//! `Instant` (`CLOCK_MONOTONIC`): the monotonic clock stops while the
//! machine is suspended (and during some VM pauses), so a member that
//! wakes from a suspend would take its lease for still running, for as
//! long as the suspend lasted, while the leader has long granted the role
//! to the other member. BOOTTIME keeps counting through a suspend: the
//! member wakes with an expired lease. (A process stopped with SIGSTOP
//! was already safe: both clocks run on.)
//!
//! Only the member's side needs it. The leader's side of the inequality
//! is a wait (`grace` after it applied the last renewal), on tokio's
//! clock: a leader whose clock stops during a suspend waits *longer* in
//! real time before it grants, which is the safe side. Timers (when the
//! pair task wakes up to notice an expiry) may stay on tokio time too: the
//! deadline check itself reads the lease clock, so a late wake-up never
//! lengthens a lease.
//!
//! Tests inject a clock ([`TokioClock`]) that follows tokio's (possibly
//! paused) clock and can jump forward like a suspend.

use std::fmt::Debug;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The clock lease deadlines are kept on: time since an arbitrary fixed
/// origin, never going back, and running while the system is suspended.
/// `None` if the clock cannot be read (then no lease is ever valid).
pub trait LeaseClock: Send + Sync + Debug + 'static {
    /// Now, on this clock.
    fn now(&self) -> Option<Duration>;
}

/// `CLOCK_BOOTTIME`: monotonic, and counts the time the system spends
/// suspended (see the module documentation). Where the platform has no
/// such clock (not Linux or Android), `CLOCK_MONOTONIC`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BootClock;

impl LeaseClock for BootClock {
    fn now(&self) -> Option<Duration> {
        use nix::time::clock_gettime;
        use nix::time::ClockId;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let id = ClockId::CLOCK_BOOTTIME;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let id = ClockId::CLOCK_MONOTONIC;
        let ts = clock_gettime(id).ok()?;
        let secs = u64::try_from(ts.tv_sec()).ok()?;
        let nanos = u32::try_from(ts.tv_nsec()).ok()?;
        Some(Duration::new(secs, nanos))
    }
}

/// A lease clock for tests: follows tokio's clock (so `tokio::time::pause`
/// and `advance` move it), plus whatever [`TokioClock::suspend`] added: a
/// suspend moves BOOTTIME but not the monotonic clock tokio runs on.
#[derive(Debug)]
pub struct TokioClock {
    origin: Instant,
    /// Suspended time added, in nanoseconds.
    suspended: AtomicU64,
}

impl TokioClock {
    /// A clock reading (about) zero now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            suspended: AtomicU64::new(0),
        }
    }

    /// Simulates a suspend of `d`: this clock jumps forward, tokio's does
    /// not.
    pub fn suspend(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.suspended.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl LeaseClock for TokioClock {
    fn now(&self) -> Option<Duration> {
        let suspended = Duration::from_nanos(self.suspended.load(Ordering::SeqCst));
        // One nanosecond past the origin, so no reading is 0 (which the
        // lease keeps for "no deadline").
        Some(self.origin.elapsed() + suspended + Duration::from_nanos(1))
    }
}

fn to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A cheap, cloneable view of this member's lease.
///
/// Valid only while this member is active: between a committed renewal and
/// `send instant of that renewal + lease` (on the [`LeaseClock`]), and
/// never after the member released the role or saw another member granted
/// it.
#[derive(Clone, Debug)]
pub struct Lease {
    /// Deadline in ns on `clock`; 0 = no lease. Written only by the pair
    /// task; read by anyone.
    deadline: Arc<AtomicU64>,
    /// When the last lease ended, if it was revoked (ns on `clock`; 0 =
    /// never): a lease that runs out ends at its `deadline`, one revoked
    /// before that ends when it is revoked.
    revoked_at: Arc<AtomicU64>,
    /// The epoch the current (or last) deadline belongs to; 0 = none. A
    /// lease of a later epoch never validates an earlier one (see
    /// [`Lease::is_valid_for`]).
    epoch: Arc<AtomicU64>,
    clock: Arc<dyn LeaseClock>,
}

impl Default for Lease {
    /// A lease on [`BootClock`], not held.
    fn default() -> Self {
        Self::with_clock(Arc::new(BootClock))
    }
}

impl Lease {
    /// A lease on `clock`, not held.
    pub fn with_clock(clock: Arc<dyn LeaseClock>) -> Self {
        Self {
            deadline: Arc::new(AtomicU64::new(0)),
            revoked_at: Arc::new(AtomicU64::new(0)),
            epoch: Arc::new(AtomicU64::new(0)),
            clock,
        }
    }

    fn now_ns(&self) -> Option<u64> {
        self.clock.now().map(to_nanos)
    }

    /// True while the lease runs. Check it right before every side effect.
    pub fn is_valid(&self) -> bool {
        let deadline = self.deadline.load(Ordering::SeqCst);
        self.now_ns().is_some_and(|now| now < deadline)
    }

    /// True while the lease runs *for `epoch`*: what an activation of that
    /// epoch checks before each side effect. A member that lost its lease
    /// and is granted the role again holds it under a larger epoch; an
    /// activation of the old epoch whose resources are still stopping
    /// (a poller with the life sign on, a command handler, a publisher
    /// retrying) must not take that lease for its own, or it would drive
    /// the PLC before the new epoch is in the history.
    pub fn is_valid_for(&self, epoch: u64) -> bool {
        // The epoch is written before the deadline it belongs to, so a
        // deadline seen between two equal epoch readings is that epoch's.
        epoch != 0
            && self.epoch.load(Ordering::SeqCst) == epoch
            && self.is_valid()
            && self.epoch.load(Ordering::SeqCst) == epoch
    }

    /// The epoch of the current or last lease (0: never held).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A lease-clock reading `ns` as a tokio instant (for timers and
    /// logs): now plus the time from now to it on the lease clock.
    fn as_instant(&self, ns: u64) -> Option<Instant> {
        let now = self.now_ns()?;
        let here = Instant::now();
        if ns >= now {
            Some(here + Duration::from_nanos(ns - now))
        } else {
            here.checked_sub(Duration::from_nanos(now - ns))
        }
    }

    /// When the lease ends, if it is held at all (also once it ran out and
    /// until it is revoked), as a tokio instant mapped from the lease clock
    /// now. For timers; validity is [`Lease::is_valid`].
    pub fn deadline(&self) -> Option<Instant> {
        match self.deadline.load(Ordering::SeqCst) {
            0 => None,
            ns => self.as_instant(ns),
        }
    }

    /// Time left, zero when not valid.
    pub fn remaining(&self) -> Duration {
        let deadline = self.deadline.load(Ordering::SeqCst);
        self.now_ns()
            .map(|now| Duration::from_nanos(deadline.saturating_sub(now)))
            .unwrap_or_default()
    }

    /// Now on the lease clock, for the instant a renewal is sent; `None`
    /// if the clock cannot be read (then the renewal extends nothing).
    pub(crate) fn clock_now(&self) -> Option<Duration> {
        self.clock.now()
    }

    /// Extends the lease of `epoch` to `until` on the lease clock (never
    /// shortens it: renewals may answer out of order, and each one alone
    /// is a sufficient proof). A lease of another epoch than the last one
    /// starts afresh: the old one is revoked first, then the epoch is
    /// written, then the deadline.
    pub(crate) fn extend_to(&self, until: Duration, epoch: u64) {
        if self.epoch.load(Ordering::SeqCst) != epoch {
            self.revoke();
            self.epoch.store(epoch, Ordering::SeqCst);
        }
        self.deadline.fetch_max(to_nanos(until), Ordering::SeqCst);
    }

    /// When this member's last lease ended (ran out, or was revoked: a
    /// release, a fence, the pair stopping), as a tokio instant mapped from
    /// the lease clock now (the same clock as [`Lease::deadline`]). `None`
    /// while the lease is valid, and if none was ever held.
    ///
    /// For fencing what outlives the role, such as an `on_deactivate` hook
    /// script: another member can be granted the role no earlier than
    ///
    /// ```text
    /// ended_at + grace·(1 − ρ)/(1 + ρ) − lease      (this member's clock)
    /// ```
    ///
    /// ([`Timing::peer_grant_earliest`](crate::Timing::peer_grant_earliest);
    /// 93 ms with the defaults), so a hook that has ended, killed if need
    /// be, strictly before that instant never overlaps the next active's
    /// side effects. Why: the leader grants no earlier than `grace` on its
    /// clock after it applied this member's last successful renewal (a
    /// vacant role too, after a release), which it applied after the
    /// renewal was sent at `s`, so no earlier than `s + grace·(1 − ρ)/(1 +
    /// ρ)` on this member's clock; the lease that renewal gave ends at `s +
    /// lease`, no earlier than `ended_at`. The bound holds even when the
    /// lease ended because another member was already granted: it is then
    /// in the past, and tells the hook it is already late.
    pub fn ended_at(&self) -> Option<Instant> {
        let now = self.now_ns()?;
        let deadline = self.deadline.load(Ordering::SeqCst);
        if deadline != 0 {
            return (now >= deadline)
                .then(|| self.as_instant(deadline))
                .flatten();
        }
        match self.revoked_at.load(Ordering::SeqCst) {
            0 => None,
            ns => self.as_instant(ns),
        }
    }

    /// Ends the lease now.
    pub(crate) fn revoke(&self) {
        let deadline = self.deadline.load(Ordering::SeqCst);
        if deadline != 0 {
            // Ended now, or at its deadline if that came first (a lease that
            // ran out and is revoked afterwards). Written before the
            // deadline is cleared, so a reader never sees neither.
            let ended = self.now_ns().map_or(deadline, |now| now.min(deadline));
            self.revoked_at.store(ended.max(1), Ordering::SeqCst);
        }
        self.deadline.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// A lease on a clock that follows tokio's, and that clock.
    fn test_lease() -> (Lease, Arc<TokioClock>) {
        let clock = Arc::new(TokioClock::new());
        (Lease::with_clock(clock.clone()), clock)
    }

    fn now(clock: &TokioClock) -> Duration {
        clock.now().expect("test clock")
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_expires_at_its_deadline_without_anyone_running() {
        let (lease, clock) = test_lease();
        assert!(!lease.is_valid(), "a new lease is not valid");
        let sent = now(&clock);
        lease.extend_to(sent + MS(250), 1);
        let reader = lease.clone();
        assert!(reader.is_valid());
        tokio::time::advance(MS(249)).await;
        assert!(reader.is_valid());
        assert!(reader.remaining() <= MS(1));
        tokio::time::advance(MS(1)).await;
        assert!(!reader.is_valid(), "expired exactly at send + lease");
        assert_eq!(reader.remaining(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn extend_never_shortens_and_revoke_ends_at_once() {
        let (lease, clock) = test_lease();
        let t0 = now(&clock);
        lease.extend_to(t0 + MS(300), 1);
        lease.extend_to(t0 + MS(100), 1);
        tokio::time::advance(MS(200)).await;
        assert!(lease.is_valid(), "a late, older renewal did not shorten it");
        lease.revoke();
        assert!(!lease.is_valid());
        assert_eq!(lease.deadline(), None);
    }

    /// Found by the fault campaign (seed 20261202, schedule 6): a member
    /// whose lease of epoch 10 lapsed while it was frozen was granted epoch
    /// 12 after the other member's epoch 11; its epoch-10 activation was
    /// still stopping, saw "the lease is valid" again and wrote the PLC's
    /// life sign before epoch 12 was in the history.
    #[tokio::test(start_paused = true)]
    async fn a_lease_of_a_later_epoch_does_not_validate_an_earlier_one() {
        let (lease, clock) = test_lease();
        assert!(!lease.is_valid_for(10), "nothing held yet");
        lease.extend_to(now(&clock) + MS(250), 10);
        assert!(lease.is_valid_for(10));
        assert!(!lease.is_valid_for(9) && !lease.is_valid_for(12));
        tokio::time::advance(MS(300)).await;
        assert!(!lease.is_valid_for(10), "ran out");
        lease.extend_to(now(&clock) + MS(250), 12);
        assert!(lease.is_valid(), "the member holds a lease again");
        assert!(lease.is_valid_for(12));
        assert!(!lease.is_valid_for(10), "but not the old epoch's");
        assert_eq!(lease.epoch(), 12);
        // The new epoch starts afresh: the old deadline is not carried.
        tokio::time::advance(MS(250)).await;
        assert!(!lease.is_valid_for(12));
        assert!(!lease.is_valid_for(0), "epoch 0 is never valid");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_on_the_deadline_sees_the_lease_expired() {
        let (lease, clock) = test_lease();
        lease.extend_to(now(&clock) + MS(250), 1);
        let deadline = lease.deadline().expect("held");
        tokio::time::sleep_until(deadline).await;
        assert!(!lease.is_valid());
    }

    #[tokio::test(start_paused = true)]
    async fn a_suspend_ends_the_lease_although_the_monotonic_clock_stood_still() {
        let (lease, clock) = test_lease();
        lease.extend_to(now(&clock) + MS(250), 1);
        tokio::time::advance(MS(100)).await;
        assert!(lease.is_valid());
        // The machine sleeps for a minute: tokio's clock (CLOCK_MONOTONIC)
        // does not move, BOOTTIME does. A lease on tokio's clock would
        // still have 150 ms to run here.
        let before = Instant::now();
        clock.suspend(Duration::from_secs(60));
        assert_eq!(Instant::now(), before, "no time passed for tokio");
        assert!(!lease.is_valid(), "the lease survived a suspend");
        assert_eq!(lease.remaining(), Duration::ZERO);
        assert!(lease.deadline().is_some_and(|d| d < Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn ended_at_is_the_deadline_of_a_lease_that_ran_out_or_the_instant_of_a_revoke() {
        let (lease, clock) = test_lease();
        assert_eq!(lease.ended_at(), None, "never held");
        lease.extend_to(now(&clock) + MS(250), 1);
        let deadline = lease.deadline().expect("held");
        assert_eq!(lease.ended_at(), None, "valid");
        tokio::time::advance(MS(300)).await;
        assert_eq!(lease.ended_at(), Some(deadline), "ran out at its deadline");
        // Revoked after it ran out (a lapse released): still its deadline.
        lease.revoke();
        assert_eq!(lease.ended_at(), Some(deadline));

        // Held again, then revoked early (a release): the revoke's instant.
        lease.extend_to(now(&clock) + MS(250), 1);
        assert_eq!(lease.ended_at(), None);
        tokio::time::advance(MS(100)).await;
        let revoked = Instant::now();
        lease.revoke();
        assert_eq!(lease.ended_at(), Some(revoked));
        tokio::time::advance(MS(1000)).await;
        assert_eq!(lease.ended_at(), Some(revoked), "it stays the last end");
    }

    #[tokio::test(start_paused = true)]
    async fn ended_at_counts_a_suspend() {
        let (lease, clock) = test_lease();
        lease.extend_to(now(&clock) + MS(250), 1);
        tokio::time::advance(MS(50)).await;
        clock.suspend(Duration::from_secs(10));
        // It ended 200 ms into the suspend, 9.8 s ago as tokio counts.
        let ended = lease.ended_at().expect("ended");
        assert_eq!(Instant::now() - ended, Duration::from_millis(9800));
    }

    #[test]
    fn the_boot_clock_reads_and_never_goes_back() {
        let a = BootClock.now().expect("CLOCK_BOOTTIME");
        let b = BootClock.now().expect("CLOCK_BOOTTIME");
        assert!(b >= a);
        assert!(a > Duration::ZERO);
        let lease = Lease::default();
        assert!(!lease.is_valid());
        lease.extend_to(b + Duration::from_secs(60), 1);
        assert!(lease.is_valid());
        lease.revoke();
        assert!(!lease.is_valid());
    }
}
