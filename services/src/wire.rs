//! JSON request/reply types of the node's NATS services.
//!
//! These are the wire contract for clients in any language (commands on
//! `canopy.cmd.<node>`, state on `canopy.state.<node>`, member info on
//! `canopy.member.<node>.<member>`). Events themselves are CBOR (see the
//! `events` crate); commands and queries are JSON so that a shell one-liner
//! or a dashboard can speak them.

use serde::{Deserialize, Serialize};

/// What a command asks the owning node to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Write a value to a writable PLC point.
    Write,
    /// Override a point's value until unforced.
    Force,
    /// Remove an override.
    Unforce,
}

/// A command request on `canopy.cmd.<node>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The operation.
    pub op: Op,
    /// The point's name within the node (not its full path).
    pub point: String,
    /// The value for `write` and `force`.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// Who asks (recorded in forced/unforced events).
    #[serde(default)]
    pub by: Option<String>,
}

/// A command reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the command was carried out.
    pub ok: bool,
    /// The node that handled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The handler's epoch (fencing token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The seq of the event the command produced (force/unforce), or the
    /// origin's last seq when the command produces no event itself (write:
    /// the PLC's change comes back as a later value event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// How long the handler took, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler_us: Option<u64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    /// A failure reply.
    pub fn error(msg: impl Into<String>) -> Self {
        Self {
            ok: false,
            origin: None,
            epoch: None,
            seq: None,
            handler_us: None,
            error: Some(msg.into()),
        }
    }
}

/// Member info on `canopy.member.<node>.<member>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Node id.
    pub node: String,
    /// Member name.
    pub member: String,
    /// The member's process id.
    pub pid: u32,
    /// Its nats-server's pid (None when attached to an external server or restarting).
    pub nats_pid: Option<u32>,
    /// `active`, `standby` or `witness`.
    pub role: String,
    /// Current epoch.
    pub epoch: u64,
    /// The member it believes active (None during a failover).
    #[serde(default)]
    pub active: Option<String>,
    /// Ready to serve (its NATS and, if any, its PLC link are up).
    #[serde(default)]
    pub healthy: bool,
    /// PLC link health, for nodes with a PLC.
    #[serde(default)]
    pub plc_ok: Option<bool>,
    /// Milliseconds since this process's role last changed.
    #[serde(default)]
    pub since_role_change_ms: u64,
    /// Counters.
    pub counters: Counters,
    /// The resources in service (active member only): name, state, health
    /// check and failures.
    #[serde(default)]
    pub resources: Vec<serde_json::Value>,
}

/// Counters a member exposes (monotonic since start).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Events this member published and had acknowledged.
    pub published: u64,
    /// Events pulled into replicas.
    pub replicated: u64,
    /// Messages kept out of the state because they failed to decode or
    /// verify (garbage, forgeries).
    pub rejected: u64,
    /// Gaps seen by the fold (should stay 0; a gap is filled by re-reading).
    pub gaps: u64,
    /// Commands handled (ok or not).
    pub commands: u64,
    /// Malformed command requests.
    pub bad_commands: u64,
    /// nats-server restarts by the supervisor.
    pub nats_restarts: u64,
    /// Publisher recoveries (stream unavailable, refused appends).
    pub publish_retries: u64,
    /// State snapshots written to the data directory.
    #[serde(default)]
    pub snapshots_written: u64,
    /// State snapshots that could not be written (disk full, permissions).
    #[serde(default)]
    pub snapshot_failures: u64,
    /// At start: a snapshot file refused (torn, another node's), or one
    /// origin's snapshot position the stream did not confirm.
    #[serde(default)]
    pub snapshots_refused: u64,
    /// At start: origins whose state came from the snapshot (the rest were
    /// folded from the start of their streams).
    #[serde(default)]
    pub origins_restored: u64,
}
