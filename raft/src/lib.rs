//! raft (placeholder)
