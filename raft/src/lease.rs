//! The active member's lease: the only thing a member's side effects (PLC
//! writes, publishing, command handling) may trust.
//!
//! The deadline lives in an `AtomicU64` (nanoseconds since a process-wide
//! base instant) so that any task can check it without asking the pair
//! task, and so that it expires by itself: nobody has to run for a lease to
//! end. Time is tokio's monotonic clock, which keeps running while a
//! process is stopped (SIGSTOP): a frozen member wakes up with an expired
//! lease. It is also what `tokio::time::pause()` controls in tests.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

static BASE: OnceLock<Instant> = OnceLock::new();

/// The process-wide origin of lease deadlines. Initialised by the first
/// caller (`Pair::start` calls it first); instants before it map to 0,
/// which reads as "expired", the safe side.
fn base() -> Instant {
    *BASE.get_or_init(Instant::now)
}

fn to_nanos(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(base()).as_nanos()).unwrap_or(u64::MAX)
}

/// A cheap, cloneable view of this member's lease.
///
/// Valid only while this member is active: between a committed renewal and
/// `send instant of that renewal + lease`, and never after the member
/// released the role or saw another member granted it.
#[derive(Clone, Debug, Default)]
pub struct Lease {
    /// Deadline in ns since [`base`]; 0 = no lease. Written only by the
    /// pair task; read by anyone.
    deadline: Arc<AtomicU64>,
}

impl Lease {
    /// True while the lease runs. Check it right before every side effect.
    pub fn is_valid(&self) -> bool {
        to_nanos(Instant::now()) < self.deadline.load(Ordering::SeqCst)
    }

    /// When the lease ends, if it is held at all.
    pub fn deadline(&self) -> Option<Instant> {
        match self.deadline.load(Ordering::SeqCst) {
            0 => None,
            ns => Some(base() + Duration::from_nanos(ns)),
        }
    }

    /// Time left, zero when not valid.
    pub fn remaining(&self) -> Duration {
        self.deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    /// Extends the lease to `until` (never shortens it: renewals may answer
    /// out of order, and each one alone is a sufficient proof).
    pub(crate) fn extend_to(&self, until: Instant) {
        self.deadline.fetch_max(to_nanos(until), Ordering::SeqCst);
    }

    /// Ends the lease now.
    pub(crate) fn revoke(&self) {
        self.deadline.store(0, Ordering::SeqCst);
    }

    /// Makes sure the base instant exists before any deadline is computed.
    pub(crate) fn init_clock() {
        base();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_expires_at_its_deadline_without_anyone_running() {
        Lease::init_clock();
        let lease = Lease::default();
        assert!(!lease.is_valid(), "a new lease is not valid");
        let sent = Instant::now();
        lease.extend_to(sent + Duration::from_millis(250));
        let reader = lease.clone();
        assert!(reader.is_valid());
        tokio::time::advance(Duration::from_millis(249)).await;
        assert!(reader.is_valid());
        assert!(reader.remaining() <= Duration::from_millis(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!reader.is_valid(), "expired exactly at send + lease");
        assert_eq!(reader.remaining(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn extend_never_shortens_and_revoke_ends_at_once() {
        Lease::init_clock();
        let lease = Lease::default();
        let t0 = Instant::now();
        lease.extend_to(t0 + Duration::from_millis(300));
        lease.extend_to(t0 + Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(lease.is_valid(), "a late, older renewal did not shorten it");
        lease.revoke();
        assert!(!lease.is_valid());
        assert_eq!(lease.deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_on_the_deadline_sees_the_lease_expired() {
        Lease::init_clock();
        let lease = Lease::default();
        lease.extend_to(Instant::now() + Duration::from_millis(250));
        let deadline = lease.deadline().expect("held");
        tokio::time::sleep_until(deadline).await;
        assert!(!lease.is_valid());
    }
}
