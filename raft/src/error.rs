//! Typed errors of the crate: one enum for the public API, one for a single
//! proposal and one for a single RPC, each saying what was being done.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why starting or using a [`Pair`](crate::Pair) failed.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// The configuration is unusable; `field` names it.
    #[error("bad pair configuration: {field}: {reason}")]
    Config {
        /// The offending field, e.g. `peers` or `timing.grace`.
        field: String,
        /// What was expected.
        reason: String,
    },
    /// The data directory could not be read or written.
    #[error("raft storage {path}: {source}")]
    Storage {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A peer's host name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host as configured.
        host: String,
        /// Why.
        reason: String,
    },
    /// The raft listener could not be bound.
    #[error("cannot bind raft listener on {addr}: {source}")]
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// openraft stopped or refused to start.
    #[error("openraft: {0}")]
    Openraft(String),
    /// A proposal to the group failed.
    #[error("proposal failed: {0}")]
    Propose(#[from] ProposeError),
    /// The pair task is gone (cancelled or failed).
    #[error("the pair task has stopped")]
    Stopped,
    /// An operator's request was refused; the text says why (e.g. "no
    /// healthy peer to take the role", "no quorum: no raft leader known").
    #[error("refused: {0}")]
    Refused(String),
}

/// Why one proposal did not produce a state-machine response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// No leader is known (election in progress, or cut off).
    #[error("no leader known")]
    NoLeader,
    /// The node asked is not (or no longer) the leader.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader it knows of, if any.
        leader: Option<u64>,
    },
    /// No response within the deadline; the proposal may still commit.
    #[error("timed out; the proposal may still commit")]
    Timeout,
    /// Forwarding to the leader failed.
    #[error("forward to leader failed: {0}")]
    Forward(#[from] CallError),
    /// openraft refused the write (e.g. it is shutting down).
    #[error("openraft: {0}")]
    Raft(String),
}

impl ProposeError {
    /// Whether proposing again may succeed: no leader yet, another
    /// leader, no answer in time, or the leader unreachable.
    pub fn is_transient(&self) -> bool {
        !matches!(self, ProposeError::Raft(_))
    }
}

/// Why one RPC to a peer failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The peer cannot be reached (connect failed, connection lost, or a
    /// test router drops the message).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No answer within the RPC's deadline.
    #[error("timed out")]
    Timeout,
    /// The peer answered with something that is not the expected reply, or
    /// reported an error handling the request.
    #[error("protocol: {0}")]
    Protocol(String),
}
