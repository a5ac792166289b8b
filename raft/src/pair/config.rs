//! [`PairConfig`]: what one voter of a pair needs to start, checked before
//! anything is opened or bound.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::error::RaftError;
use crate::peer::Peer;
use crate::timing::Timing;
use crate::types::is_member;
use crate::types::NodeId;
use crate::types::VOTERS;

/// Configuration of one voter of a pair.
#[derive(Clone, Debug)]
pub struct PairConfig {
    /// The mesh (plant) name; a connection from another mesh is refused.
    pub mesh: String,
    /// The pair's node name in the topology; same purpose.
    pub node: String,
    /// This voter's id: 1 = first member, 2 = second member, 3 = witness.
    pub me: NodeId,
    /// All three voters, by id, this one included.
    pub peers: BTreeMap<NodeId, Peer>,
    /// Where the log, vote and snapshot live; must survive restarts and
    /// belong to this voter alone.
    pub data_dir: PathBuf,
    /// The member the topology prefers as active (1 or 2), if any: it takes
    /// the role back when it is fit; otherwise the role is sticky.
    pub prefer: Option<NodeId>,
    /// Timing of the group and of the lease.
    pub timing: Timing,
}

impl PairConfig {
    /// Checks ids, peers, prefer and timing; names the bad field.
    pub fn validate(&self) -> Result<(), RaftError> {
        let bad = |field: &str, reason: String| {
            Err(RaftError::Config {
                field: field.to_string(),
                reason,
            })
        };
        if self.mesh.is_empty() {
            return bad("mesh", "must not be empty".into());
        }
        if self.node.is_empty() {
            return bad("node", "must not be empty".into());
        }
        if !VOTERS.contains(&self.me) {
            return bad("me", format!("{} is not a voter id (1, 2 or 3)", self.me));
        }
        let ids: BTreeSet<NodeId> = self.peers.keys().copied().collect();
        if ids != BTreeSet::from(VOTERS) {
            return bad(
                "peers",
                format!("must name exactly voters 1, 2 and 3, got {ids:?}"),
            );
        }
        if let Some(p) = self.prefer {
            if !is_member(p) {
                return bad("prefer", format!("{p} is not a member (1 or 2)"));
            }
        }
        self.timing.validate()
    }
}
