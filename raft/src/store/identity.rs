//! The group identity of one voter's store: `raft-group.json`, `{mesh,
//! node, group}`, and the in-memory cell the listener answers from.
//!
//! The group id is a random number the group's first leader proposes
//! (`Request::Group`) and every voter learns by applying it: the log
//! decides it, so the three voters always end up with the same one, even
//! when both members initialised a brand-new pair at once, and even for a
//! group whose stores predate the id (its first leader after the upgrade
//! proposes one). The state machine writes the file whenever the applied
//! id differs from it. The file survives the loss of the log and vote
//! (another disk, another backup), and says which mesh and pair the data
//! directory belongs to.

use std::io;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Deserialize;
use serde::Serialize;

use super::file;
use super::GROUP_FILE;
use crate::error::RaftError;

/// The contents of `raft-group.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupFile {
    /// The mesh the data directory belongs to.
    pub(crate) mesh: String,
    /// The pair (topology node) it belongs to.
    pub(crate) node: String,
    /// The group id, as committed.
    pub(crate) group: u64,
}

impl GroupFile {
    /// Reads the file in `dir`, if any, and checks that it belongs to
    /// `mesh`/`node` (a data directory copied from another pair is a
    /// configuration error, not a store to start from).
    pub(crate) fn read(dir: &Path, mesh: &str, node: &str) -> Result<Option<GroupFile>, RaftError> {
        let path = dir.join(GROUP_FILE);
        let found: Option<GroupFile> =
            file::read_json(&path).map_err(|source| RaftError::Storage {
                path: path.clone(),
                source,
            })?;
        if let Some(f) = &found {
            if f.mesh != mesh || f.node != node {
                return Err(RaftError::Config {
                    field: "data_dir".into(),
                    reason: format!(
                        "{} belongs to {}/{}, not {mesh}/{node}",
                        path.display(),
                        f.mesh,
                        f.node
                    ),
                });
            }
        }
        Ok(found)
    }

    pub(crate) fn write(&self, dir: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        file::write_atomic(&dir.join(GROUP_FILE), &bytes)
    }
}

/// The group id this node knows, shared between the state machine (which
/// sets it when it applies one) and the listener (which tells peers).
#[derive(Clone, Debug, Default)]
pub(crate) struct GroupCell(Arc<AtomicU64>);

impl GroupCell {
    pub(crate) fn new(group: Option<u64>) -> Self {
        Self(Arc::new(AtomicU64::new(group.unwrap_or(0))))
    }

    /// The id, if known. 0 is never an id (see `Request::Group`).
    pub(crate) fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::SeqCst)).filter(|&g| g != 0)
    }

    pub(crate) fn set(&self, group: u64) {
        self.0.store(group, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_refuses_another_pairs_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(GroupFile::read(dir.path(), "m", "n").expect("read"), None);
        let f = GroupFile {
            mesh: "m".into(),
            node: "n".into(),
            group: 0xfeed,
        };
        f.write(dir.path()).expect("write");
        assert_eq!(
            GroupFile::read(dir.path(), "m", "n").expect("read"),
            Some(f)
        );
        for (mesh, node) in [("m", "other"), ("other", "n")] {
            match GroupFile::read(dir.path(), mesh, node) {
                Err(RaftError::Config { field, .. }) => assert_eq!(field, "data_dir"),
                other => panic!("expected a config error, got {other:?}"),
            }
        }
        std::fs::write(dir.path().join(GROUP_FILE), b"{").expect("write");
        assert!(matches!(
            GroupFile::read(dir.path(), "m", "n"),
            Err(RaftError::Storage { .. })
        ));
    }

    #[test]
    fn the_cell_holds_no_id_as_none() {
        let c = GroupCell::new(None);
        assert_eq!(c.get(), None);
        c.set(7);
        assert_eq!(c.clone().get(), Some(7));
        assert_eq!(GroupCell::new(Some(9)).get(), Some(9));
    }
}
