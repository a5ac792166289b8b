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
    /// Mutual TLS on the raft port (a secured tree); `None`: plaintext.
    pub tls: Option<std::sync::Arc<crate::RaftTls>>,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::types::WITNESS;

    fn valid() -> PairConfig {
        let peer = |name: &str, port| Peer {
            name: name.into(),
            host: "127.0.0.1".into(),
            raft_port: port,
        };
        PairConfig {
            mesh: "plant".into(),
            node: "press".into(),
            me: 1,
            peers: BTreeMap::from([
                (1, peer("press-a", 7001)),
                (2, peer("press-b", 7002)),
                (WITNESS, peer("press-w", 7003)),
            ]),
            data_dir: PathBuf::from("/var/lib/canopy/press-a"),
            prefer: Some(1),
            timing: Timing::default(),
            tls: None,
        }
    }

    fn refused_field(cfg: &PairConfig) -> String {
        match cfg.validate() {
            Err(RaftError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_config_passes_on_every_voter() {
        for me in VOTERS {
            let cfg = PairConfig { me, ..valid() };
            assert!(cfg.validate().is_ok(), "voter {me}");
        }
        assert!(PairConfig {
            prefer: None,
            ..valid()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn each_bad_field_is_refused_by_name() {
        let mut c = valid();
        c.mesh.clear();
        assert_eq!(refused_field(&c), "mesh");
        let mut c = valid();
        c.node.clear();
        assert_eq!(refused_field(&c), "node");
        for me in [0, 4] {
            assert_eq!(refused_field(&PairConfig { me, ..valid() }), "me");
        }
        let mut c = valid();
        c.peers.remove(&2);
        assert_eq!(refused_field(&c), "peers", "a voter missing");
        let mut c = valid();
        let extra = c.peers[&1].clone();
        c.peers.insert(4, extra);
        assert_eq!(refused_field(&c), "peers", "a fourth voter");
        for prefer in [WITNESS, 0] {
            let c = PairConfig {
                prefer: Some(prefer),
                ..valid()
            };
            assert_eq!(refused_field(&c), "prefer", "prefer {prefer}");
        }
        let c = PairConfig {
            timing: Timing {
                grace: Duration::from_millis(300),
                ..Timing::default()
            },
            ..valid()
        };
        assert_eq!(refused_field(&c), "timing.grace");
    }
}
