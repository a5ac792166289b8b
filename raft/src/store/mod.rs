//! Durable storage of one node: the raft log and vote (`log`), the state
//! machine and its snapshot (`sm`), and the file primitives both use.
//!
//! Files in the data directory:
//! - `raft-log.bin`: length-prefixed (u32 big-endian) serde_json records,
//!   appended and fsync'd before openraft is told an append is durable;
//!   rewritten (temp file, fsync, rename, fsync dir) on truncate and purge.
//! - `raft-vote.json`: the vote, replaced atomically the same way.
//! - `raft-snapshot.json`: the last snapshot (meta + `PairState`).
//! - `raft-group.json`: the group's identity (mesh, pair, group id), written
//!   when the state machine learns the id (see `identity`).
//!
//! The files are small (the log is purged after every snapshot), so plain
//! synchronous I/O on the raft task is simpler than a writer thread and
//! fast enough for tens of entries per second.

pub(crate) mod file;
pub(crate) mod identity;
pub(crate) mod log;
pub(crate) mod sm;

pub(crate) use identity::GroupCell;
pub(crate) use identity::GroupFile;
pub(crate) use log::LogStore;
pub(crate) use log::LogTail;
pub(crate) use sm::Applied;
pub(crate) use sm::Identity;
pub(crate) use sm::StateMachine;

/// Log file name inside the data directory.
pub const LOG_FILE: &str = "raft-log.bin";
/// Vote file name inside the data directory.
pub const VOTE_FILE: &str = "raft-vote.json";
/// Snapshot file name inside the data directory.
pub const SNAPSHOT_FILE: &str = "raft-snapshot.json";
/// Group identity file name inside the data directory (see
/// `store::identity`).
pub const GROUP_FILE: &str = "raft-group.json";
