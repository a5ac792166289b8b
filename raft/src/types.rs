//! The replicated vocabulary: node ids, health reports, requests and
//! responses, and the openraft type configuration that ties them together.
//!
//! These types are also the raft RPC wire format (serde_json), so renaming a
//! field or variant is a wire change between members of one pair: upgrade
//! both members and the witness together.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::hash::Hasher;
use std::io::Cursor;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::Deserialize;
use serde::Serialize;

/// A voter of the pair's group. Fixed by position, not configurable:
/// 1 = first member in the topology, 2 = second member, 3 = witness.
pub type NodeId = u64;

/// The first member of the pair in topology order.
pub const MEMBER_A: NodeId = 1;
/// The second member of the pair in topology order.
pub const MEMBER_B: NodeId = 2;
/// The witness: votes, never leads, never becomes active.
pub const WITNESS: NodeId = 3;
/// Every voter, in id order.
pub const VOTERS: [NodeId; 3] = [MEMBER_A, MEMBER_B, WITNESS];
/// The two ids that may ever hold the active role.
pub const MEMBERS: [NodeId; 2] = [MEMBER_A, MEMBER_B];

/// One run of a member's process: a random number chosen when
/// [`Pair::start`](crate::Pair::start) is called, never persisted. A process
/// that restarts (same id, same data directory) is a new incarnation, and
/// the state names the incarnation it granted the role to, so a restarted
/// member can never renew its predecessor's activation: it has to be
/// granted a new one, with a larger epoch.
pub type Incarnation = u64;

/// The incarnation no process ever has: what `PairState` holds while no
/// member is active, and what entries and snapshots written before
/// incarnations existed decode to (so such a state names nobody that can
/// renew, and the role is granted again, with a larger epoch, after grace).
pub const NO_INCARNATION: Incarnation = 0;

/// A fresh incarnation: never [`NO_INCARNATION`], and unique with
/// overwhelming probability across processes and within one. The standard
/// library's `RandomState` is keyed from the operating system's entropy
/// once per thread (then stepped per instance); a process-wide counter,
/// the process id and the wall clock are mixed in as well.
pub(crate) fn new_incarnation() -> Incarnation {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        if let Ok(d) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        let v = h.finish();
        if v != NO_INCARNATION {
            return v;
        }
    }
}

/// True for the two members (the only ids that can be active).
pub fn is_member(id: NodeId) -> bool {
    id == MEMBER_A || id == MEMBER_B
}

/// The other member of the pair, or `None` for an id that is not a member.
pub fn other_member(id: NodeId) -> Option<NodeId> {
    match id {
        MEMBER_A => Some(MEMBER_B),
        MEMBER_B => Some(MEMBER_A),
        _ => None,
    }
}

/// What a member says about itself; replicated so that the leader can pick
/// a candidate and the active member can see its standby's field link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// State of this member's PLC link: `None` when the member has no PLC
    /// (so the field-health rules never fire), `Some(false)` when the link
    /// is down; drives failover on field health.
    pub plc_ok: Option<bool>,
    /// Last life-sign counter read from the PLC (single-level HA: the
    /// active writes it, the standby reads it); informational for the view.
    pub life_sign: Option<u16>,
    /// The member can serve (its NATS, stores and resources are usable);
    /// a member that is not ready is never granted the role and releases it.
    pub ready: bool,
}

impl Default for Health {
    /// A member with no PLC that is ready: what a plain embedding reports
    /// until the service says otherwise.
    fn default() -> Self {
        Self {
            plc_ok: None,
            life_sign: None,
            ready: true,
        }
    }
}

/// A state-machine command. See the crate documentation for the rules each
/// one is applied under.
///
/// Every `incarnation` field is `#[serde(default)]`: an entry written before
/// incarnations existed decodes with [`NO_INCARNATION`] instead of failing
/// (a log record that does not decode at the end of the log would be taken
/// for a torn write and cut).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The active member confirms its role at `epoch`; its committed
    /// proposal is what extends its lease.
    Renew {
        /// The proposing member.
        member: NodeId,
        /// The proposing process: must be the incarnation the role was
        /// granted to.
        #[serde(default)]
        incarnation: Incarnation,
        /// The epoch the member believes it holds.
        epoch: u64,
    },
    /// The leader grants the role to `member`, compare-and-set on the epoch
    /// and on the index of the last renewal it waited out.
    Acquire {
        /// The member to make active.
        member: NodeId,
        /// The incarnation of `member` to make active: its latest reported
        /// one, as the leader saw it; the grant fails if the member has
        /// reported another since (it restarted in between).
        #[serde(default)]
        incarnation: Incarnation,
        /// The epoch the leader saw; the grant fails if it moved.
        expect_epoch: u64,
        /// The last renewal the leader saw; the grant fails if a newer one
        /// committed in between (the active is still alive).
        expect_renew_index: u64,
    },
    /// The active member gives the role up voluntarily.
    Release {
        /// The releasing member.
        member: NodeId,
        /// The releasing process: must be the incarnation the role was
        /// granted to (a restarted member does not release its
        /// predecessor's role; it waits out `grace` like anyone else).
        #[serde(default)]
        incarnation: Incarnation,
        /// The epoch it releases.
        epoch: u64,
        /// Its lease ran out without a committed renewal (it did not give
        /// the role up for cause): the epoch ends, but the role goes back to
        /// it first when the leader grants the vacant role, and the flap
        /// hold does not count it as having lost the role. A stall longer
        /// than `lease` (a slow election, load) then costs an epoch, not a
        /// failover; handing the role over stays the leader's call, after
        /// `grace` without renewals. Absent in entries written before it
        /// existed: a plain release.
        #[serde(default)]
        lapsed: bool,
    },
    /// A member's latest self-report.
    Health {
        /// The reporting member.
        member: NodeId,
        /// The reporting process: recorded as the member's latest
        /// incarnation, which tells the leader that a member named active
        /// under another incarnation has restarted.
        #[serde(default)]
        incarnation: Incarnation,
        /// Its report.
        report: Health,
        /// Whether it can use its own stream (see
        /// [`Pair::report_stream`](crate::Pair::report_stream)): `None` not
        /// reported, `Some(false)` it could not append to (active) or read
        /// the leader of (standby) its stream for longer than the node's
        /// publish timeout. Beside `report` rather than in [`Health`], which
        /// services build field by field; absent in entries from before it
        /// existed (`None`).
        #[serde(default)]
        stream_ok: Option<bool>,
    },
    /// No-op a new leader commits so that everything before it is applied
    /// locally before it decides anything.
    Probe,
    /// The group's identity: a random id (never 0) the first leader
    /// proposes when the state has none. Applied only while the state has
    /// none (or has this one), so the first one committed is the group's
    /// for good and every voter learns it by applying it (see
    /// `store::identity`). A leader's own proposal, never forwarded.
    Group {
        /// The id.
        id: u64,
    },
    /// A member goes into maintenance (`on`) or out of it: while in it, it
    /// is never granted the role, and, if active, it hands the role over
    /// as soon as the other member can take it. Proposed by the member it
    /// concerns, for itself (an operator's `set_maintenance` on that
    /// member's process).
    Maintenance {
        /// The member concerned (and proposing).
        member: NodeId,
        /// The proposing process (recorded in the log for the audit; the
        /// flag is about the member, whichever process sets it).
        incarnation: Incarnation,
        /// In maintenance from now on (`true`) or no longer (`false`).
        on: bool,
    },
}

/// The state machine's answer to one [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Applied (Renew, Release, Health, Probe, and non-request entries).
    Ok,
    /// Renew or Release by someone who is not the active (member and
    /// incarnation) at that epoch.
    Fenced,
    /// Acquire applied: `epoch` is the new fencing token.
    Granted {
        /// The epoch of the new activation.
        epoch: u64,
    },
    /// Acquire lost its compare-and-set (or named the witness).
    Conflict,
    /// A request no rule accepts (e.g. Health from the witness).
    Invalid,
}

openraft::declare_raft_types!(
    /// openraft type configuration of a pair group.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::EmptyNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
