//! A member's counters: plain atomics, written by the task that sees the
//! event and read by the member-info service. Counters are the one place
//! where tasks share state: they are monotonic and need no ordering.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::Counters;

/// Monotonic counters since the member started (see [`Counters`] for
/// meanings), and the registry of origins in trouble (not a counter, but
/// written by the same tasks and read by the same reporter).
#[derive(Debug, Default)]
pub struct Metrics {
    pub troubles: super::status::Troubles,
    pub published: AtomicU64,
    pub dropped: AtomicU64,
    pub replicated: AtomicU64,
    pub rejected: AtomicU64,
    pub held_back: AtomicU64,
    pub gaps: AtomicU64,
    pub folded: AtomicU64,
    pub commands: AtomicU64,
    pub bad_commands: AtomicU64,
    pub refused_commands: AtomicU64,
    pub publish_retries: AtomicU64,
    pub pull_restarts: AtomicU64,
    pub diverged: AtomicU64,
    pub hook_failures: AtomicU64,
    pub hooks_fenced: AtomicU64,
    pub snapshots_written: AtomicU64,
    pub snapshot_failures: AtomicU64,
    pub snapshots_refused: AtomicU64,
    pub origins_restored: AtomicU64,
    pub state_requests_dropped: AtomicU64,
    pub leaf_links_lost: AtomicU64,
}

impl Metrics {
    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self, nats_restarts: u64) -> Counters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            published: g(&self.published),
            dropped: g(&self.dropped),
            replicated: g(&self.replicated),
            rejected: g(&self.rejected),
            held_back: g(&self.held_back),
            gaps: g(&self.gaps),
            folded: g(&self.folded),
            diverged: g(&self.diverged),
            commands: g(&self.commands),
            bad_commands: g(&self.bad_commands),
            refused_commands: g(&self.refused_commands),
            nats_restarts,
            publish_retries: g(&self.publish_retries),
            snapshots_written: g(&self.snapshots_written),
            snapshot_failures: g(&self.snapshot_failures),
            snapshots_refused: g(&self.snapshots_refused),
            origins_restored: g(&self.origins_restored),
            hooks_fenced: g(&self.hooks_fenced),
            state_requests_dropped: g(&self.state_requests_dropped),
            leaf_links_lost: g(&self.leaf_links_lost),
        }
    }
}

/// Whether the `n`-th occurrence (1-based) of a repeated problem should be
/// logged: the first ten, then every thousandth. A flood of garbage must be
/// counted in full but must not flood the log.
pub fn worth_logging(n: u64) -> bool {
    n <= 10 || n.is_multiple_of(1000)
}
