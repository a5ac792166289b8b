//! [`RoleView`]: what this node tells the services about the role, and the
//! part of it whose change is worth publishing.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;

use crate::types::Health;
use crate::types::NodeId;

/// What this node knows about the pair's role, as of `changed_at`.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleView {
    /// The member the replicated state names active (as applied here).
    pub active: Option<NodeId>,
    /// The current epoch (as applied here).
    pub epoch: u64,
    /// The replicated state names this member in this process's
    /// incarnation AND its lease is valid: the only condition under which
    /// it may have side effects (re-check
    /// [`Lease::is_valid`](crate::Lease::is_valid) right before each one).
    /// After a restart, `active` may name this member while `me_active` is
    /// false: the state names the previous process, until the role is
    /// granted again with a larger epoch.
    pub me_active: bool,
    /// The raft leader this node knows of (not the active member).
    pub leader: Option<NodeId>,
    /// This node's current raft term. A member cut off from the others
    /// keeps it (it stands only after a pre-vote); it moves when an
    /// election succeeds somewhere.
    pub term: u64,
    /// Each member's last health report and how long before this view it
    /// was applied here; members not heard of since this node started are
    /// missing.
    pub health: BTreeMap<NodeId, (Health, Duration)>,
    /// Each member's last stream report (see
    /// [`Pair::report_stream`](crate::Pair::report_stream)), for the
    /// members that made one.
    pub stream_ok: BTreeMap<NodeId, bool>,
    /// The members in maintenance (see
    /// [`Pair::set_maintenance`](crate::Pair::set_maintenance)).
    pub maintenance: BTreeSet<NodeId>,
    /// The group's id once this node knows it (its first leader commits
    /// one; all three voters of a group end up with the same).
    pub group: Option<u64>,
    /// `Some(why)` while this voter does not run raft yet: its store was
    /// found empty and it waits for both other voters to confirm the same
    /// group, term and leader (or for
    /// [`Pair::confirm_empty_store`](crate::Pair::confirm_empty_store)),
    /// or it failed to start. Never active meanwhile. `None` once running.
    pub waiting: Option<String>,
    /// When this view was created.
    pub changed_at: std::time::Instant,
}

/// The part of a view whose change is worth publishing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Material {
    pub(super) active: Option<NodeId>,
    pub(super) epoch: u64,
    pub(super) me_active: bool,
    pub(super) leader: Option<NodeId>,
    pub(super) term: u64,
    /// Reports and whether each member is still alive.
    pub(super) health: BTreeMap<NodeId, (Health, bool)>,
    pub(super) stream_ok: BTreeMap<NodeId, bool>,
    pub(super) maintenance: BTreeSet<NodeId>,
    pub(super) group: Option<u64>,
}
