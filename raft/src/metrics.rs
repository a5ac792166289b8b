//! A node's counters: [`PairMetrics`], the copy handles read, and the
//! shared atomics the pair task and the raft listener bump.
//!
//! Kept apart from `pair` so that `network` (which counts refused
//! connections) does not depend on the pair task that depends on it.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

/// Counters of one node, since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairMetrics {
    /// Leaders seen (a new term with a known leader).
    pub elections: u64,
    /// Grants (Acquire) this node proposed as leader that were applied.
    pub grants: u64,
    /// Renewals by this member that failed, timed out or were fenced.
    pub renew_failures: u64,
    /// Times this member's lease ran out while the state still named it
    /// (each one releases that epoch).
    pub lease_expiries: u64,
    /// Raft connections refused (bad hello, unknown id, wrong source IP).
    pub rejected_connections: u64,
    /// Forwarded proposals refused: a peer proposed for another member, or
    /// proposed what only a leader proposes (Acquire, Probe, Group).
    pub rejected_forwards: u64,
    /// Elections this member did not start on its own because no other
    /// voter would vote for it then (its pre-vote was refused or
    /// unanswered: cut off, the others still hear a leader, or its log is
    /// behind).
    pub stands_refused: u64,
    /// Raft connections closed at once because `MAX_PRE_HELLO` (16) others
    /// had not said hello yet (a flood of silent connections).
    pub refused_unauthenticated: u64,
}

/// Shared counters behind [`PairMetrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    elections: AtomicU64,
    grants: AtomicU64,
    renew_failures: AtomicU64,
    lease_expiries: AtomicU64,
    rejected_connections: AtomicU64,
    rejected_forwards: AtomicU64,
    stands_refused: AtomicU64,
    refused_unauthenticated: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bump_elections(&self) {
        Self::bump(&self.elections);
    }

    pub(crate) fn bump_grants(&self) {
        Self::bump(&self.grants);
    }

    pub(crate) fn bump_renew_failures(&self) {
        Self::bump(&self.renew_failures);
    }

    pub(crate) fn bump_lease_expiries(&self) {
        Self::bump(&self.lease_expiries);
    }

    pub(crate) fn bump_rejected(&self) {
        Self::bump(&self.rejected_connections);
    }

    pub(crate) fn bump_rejected_forwards(&self) {
        Self::bump(&self.rejected_forwards);
    }

    pub(crate) fn bump_stands_refused(&self) {
        Self::bump(&self.stands_refused);
    }

    pub(crate) fn bump_refused_unauthenticated(&self) {
        Self::bump(&self.refused_unauthenticated);
    }

    pub(crate) fn snapshot(&self) -> PairMetrics {
        PairMetrics {
            elections: self.elections.load(Ordering::Relaxed),
            grants: self.grants.load(Ordering::Relaxed),
            renew_failures: self.renew_failures.load(Ordering::Relaxed),
            lease_expiries: self.lease_expiries.load(Ordering::Relaxed),
            rejected_connections: self.rejected_connections.load(Ordering::Relaxed),
            rejected_forwards: self.rejected_forwards.load(Ordering::Relaxed),
            stands_refused: self.stands_refused.load(Ordering::Relaxed),
            refused_unauthenticated: self.refused_unauthenticated.load(Ordering::Relaxed),
        }
    }
}
