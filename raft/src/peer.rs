//! How to reach a voter: part of [`PairConfig`](crate::PairConfig), read by
//! the TCP transport. Kept apart from `pair` so that `network` does not
//! depend on the pair task that depends on it.

/// How to reach one voter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its process name in the topology (for logs).
    pub name: String,
    /// Host name or IP: where its raft listener is, and the only source
    /// address its connections are accepted from.
    pub host: String,
    /// Its raft listener port (the topology's raft port).
    pub raft_port: u16,
}
