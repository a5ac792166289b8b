//! JSON request/reply types of the node's NATS services: the one place
//! that defines them, for the services that answer and the clients that ask.
//!
//! These are the wire contract for clients in any language (commands on
//! `canopy.cmd.<node>`, state on `canopy.state.<node>`, member info on
//! `canopy.member.<node>.<member>` and, from every member and witness at
//! once, on `canopy.hello`, role control on `canopy.ctl.<node>.<member>`,
//! history and state-at queries on `canopy.query.<node>`). Events
//! themselves are CBOR (see the `events`
//! crate); commands and queries are JSON so that a shell one-liner or a
//! dashboard can speak them. Domain types (`events::State`) are converted
//! here, at the edge; they carry no JSON format of their own.

use std::collections::BTreeMap;

use events::{Quality, State, Value};
use serde::{Deserialize, Serialize};

/// What a command asks the owning node to do (write, force, unforce).
pub use events::CommandOp as Op;

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

/// A command signed by its client (the secured tree's form of a
/// [`Command`]): `signed` is the [`events::Request`] JSON exactly as
/// signed, `sig` the hex of the client's ed25519 signature over
/// [`events::command_message`] of it (`docs/wire-format.md`, "Command").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCommand {
    /// The request, a JSON text.
    pub signed: String,
    /// The client's public user nkey (`U...`).
    pub key: String,
    /// 128 hex digits: the signature.
    pub sig: String,
}

impl SignedCommand {
    /// Signs a request for `op` of `node`'s `point` (value absent for an
    /// unforce) with the client key `kp`, at `ts_ms` with a fresh nonce.
    pub fn sign(
        kp: &nkeys::KeyPair,
        node: &str,
        op: events::CommandOp,
        point: &str,
        value: Option<serde_json::Value>,
        ts_ms: u64,
    ) -> anyhow::Result<SignedCommand> {
        let nonce: [u8; 16] = rand::random();
        let request = events::Request {
            node: node.to_owned(),
            op,
            point: point.to_owned(),
            value,
            ts: ts_ms,
            nonce: hex::encode(nonce),
        };
        let signed = serde_json::to_string(&request)?;
        let sig = events::sign_command(kp, signed.as_bytes())
            .map_err(|e| anyhow::anyhow!("signing the command: {e}"))?;
        Ok(SignedCommand {
            signed,
            key: kp.public_key(),
            sig: hex::encode(sig),
        })
    }

    /// Signs a switchover (`control` [`Control::Switchover`], handing over
    /// `epoch`) or a maintenance change asked of `member` of `node`, in
    /// the same envelope as a command (its own signing domain,
    /// [`events::CONTROL_DOMAIN`]).
    pub fn sign_control(
        kp: &nkeys::KeyPair,
        node: &str,
        member: &str,
        control: Control,
        epoch: Option<u64>,
        ts_ms: u64,
    ) -> anyhow::Result<SignedCommand> {
        let nonce: [u8; 16] = rand::random();
        let (op, on) = match control {
            Control::Switchover => ("switchover", None),
            Control::Maintenance { on } => ("maintenance", Some(on)),
        };
        let request = events::ControlRequest {
            node: node.to_owned(),
            member: member.to_owned(),
            op: op.to_owned(),
            on,
            epoch: epoch.filter(|_| control == Control::Switchover),
            ts: ts_ms,
            nonce: hex::encode(nonce),
        };
        let signed = serde_json::to_string(&request)?;
        let sig = events::sign_control(kp, signed.as_bytes())
            .map_err(|e| anyhow::anyhow!("signing the control request: {e}"))?;
        Ok(SignedCommand {
            signed,
            key: kp.public_key(),
            sig: hex::encode(sig),
        })
    }
}

/// An operator's role control, asked of one member of a pair on
/// `canopy.ctl.<node>.<member>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Control {
    /// The active member (the one asked) hands the role to the other.
    Switchover,
    /// The member asked stays standby (`on`), never granted, until taken
    /// out of maintenance (`off`); an active one hands its role over first.
    Maintenance {
        /// In (true) or out of (false) maintenance.
        on: bool,
    },
}

impl Control {
    /// The control a checked signed request asks for.
    pub fn of(request: &events::ControlRequest) -> Result<Control, String> {
        match (request.op.as_str(), request.on) {
            ("switchover", None) => Ok(Control::Switchover),
            ("maintenance", Some(on)) => Ok(Control::Maintenance { on }),
            (op, on) => Err(format!(
                "not a control request (op {op:?}, on {on:?}): expected switchover, or maintenance with on"
            )),
        }
    }

    /// Parses a request, saying what is wrong with a bad one (serde's
    /// internally tagged form would take unknown fields of `switchover`).
    pub fn parse(payload: &[u8]) -> Result<Control, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            op: String,
            #[serde(default)]
            on: Option<bool>,
        }
        let expected = r#"expected {"op":"switchover"} or {"op":"maintenance","on":true}"#;
        let raw: Raw = serde_json::from_slice(payload)
            .map_err(|e| format!("not a control request ({e}): {expected}"))?;
        match (raw.op.as_str(), raw.on) {
            ("switchover", None) => Ok(Control::Switchover),
            ("maintenance", Some(on)) => Ok(Control::Maintenance { on }),
            (op, on) => Err(format!(
                "not a control request (op {op:?}, on {on:?}): {expected}"
            )),
        }
    }
}

/// The reply to a [`Control`] request: the pair's role once the change
/// took effect, or why it was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    /// Whether the change was carried out.
    pub ok: bool,
    /// The member active once it took effect (None: none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// The epoch then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The members in maintenance then.
    #[serde(default)]
    pub maintenance: Vec<String>,
    /// Why it was refused or did not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ControlReply {
    /// A refusal.
    pub fn refused(why: impl Into<String>) -> Self {
        Self {
            error: Some(why.into()),
            ..Self::default()
        }
    }
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

/// Member info on `canopy.member.<node>.<member>` and `canopy.hello`: what
/// a member (or the witness, `role` = `witness`) says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Node id.
    pub node: String,
    /// Member name (`witness` for the witness).
    pub member: String,
    /// The process id.
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
    /// The pair's raft leader as this process knows it (the witness says;
    /// members leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Ready to serve (its NATS and, if any, its PLC link are up).
    #[serde(default)]
    pub healthy: bool,
    /// PLC link health, for nodes with a PLC.
    #[serde(default)]
    pub plc_ok: Option<bool>,
    /// Milliseconds since this process's role last changed.
    #[serde(default)]
    pub since_role_change_ms: u64,
    /// In maintenance: never granted the role until taken out
    /// (`canopy maintenance NODE MEMBER off`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maintenance: bool,
    /// Why this process's raft voter does not run yet (its store was found
    /// empty: it waits for both other voters to confirm the group, or for
    /// `--confirm-empty-raft-store`). Never active meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Why this process's server does not hold current copies of the
    /// pair's streams yet (its store was wiped and is being copied again):
    /// until it does, losing another process of the pair stalls the
    /// pair's streams (an R3 stream needs two current copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catching_up: Option<String>,
    /// Counters (zero on the witness).
    #[serde(default)]
    pub counters: Counters,
    /// The resources in service (active member only).
    #[serde(default)]
    pub resources: Vec<ResourceInfo>,
    /// Origins whose history this member cannot carry on normally: a
    /// stalled or diverged replica, a fold that stopped. Empty when all is
    /// well.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub troubles: Vec<OriginTrouble>,
    /// When the TLS certificate this process and its nats-server present
    /// stops being valid (ms since the Unix epoch); absent on a plaintext
    /// tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_expires_ms: Option<u64>,
}

/// Something wrong with one origin's history at one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginTrouble {
    /// The origin concerned.
    pub origin: String,
    /// What kind of trouble.
    pub kind: TroubleKind,
    /// The stream sequence where it starts.
    pub seq: u64,
    /// What was found, for people (and the repair).
    pub reason: String,
    /// How long it has lasted.
    pub since_ms: u64,
}

/// The kinds of [`OriginTrouble`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TroubleKind {
    /// The replica puller cannot go on (the source lost events to
    /// retention, or skipped a sequence); it retries, and the replica stays
    /// short until the cause is repaired.
    ReplicaStalled,
    /// The source holds other bytes than this member's copy at the same
    /// seq (a child that lost its disk and started a new history, or a
    /// replica written by something else): the puller stopped and copies
    /// nothing until an operator repairs it (ARCHITECTURE.md, "Repairs").
    ReplicaDiverged,
    /// The fold stopped folding the origin: its stream continues with
    /// messages that are not the next event of its chain. The origin's
    /// points are shown `uncertain` until it folds again.
    FoldStalled,
    /// The member has no history of its own and cannot restore it from its
    /// parent yet (the parent does not answer): it does not publish, so it
    /// never forks its history.
    Restoring,
}

/// One resource of the active member, as member info reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceInfo {
    /// Its name (`publisher`, `plc`, `pullers`, `sims`, `commands`, `hooks`).
    pub name: String,
    /// `in_service`, `pending_oos` or `oos`.
    pub state: String,
    /// Its health check: for `plc` the PLC link, otherwise true while running.
    pub healthy: bool,
    /// Failures counted since the member started (PLC errors, publish
    /// retries, interrupted pulls, failed hooks).
    pub failures: u64,
}

/// Counters a member exposes (monotonic since start).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Events this member published and had acknowledged.
    pub published: u64,
    /// Events sealed but given up unconfirmed, when the lease ran out or
    /// the member stopped with its stream unavailable (never acknowledged
    /// to anyone; the next activation announces every point afresh).
    pub dropped: u64,
    /// Events pulled into replicas.
    pub replicated: u64,
    /// Messages kept out of the state because they failed to decode or
    /// verify (garbage, forgeries).
    pub rejected: u64,
    /// Events the fold held back because their epoch was not opened (yet)
    /// by a checkpoint signed with a manifest key of their origin: an
    /// origin's first events until its first checkpoint, and anything an
    /// outsider chained onto a stream (stepped over, and counted in
    /// `rejected` too, once the origin's chain goes on without it).
    #[serde(default)]
    pub held_back: u64,
    /// Gaps seen by the fold (should stay 0; a gap is filled by re-reading).
    pub gaps: u64,
    /// Replica pullers that found the source differing from their copy.
    pub diverged: u64,
    /// Stream messages the fold has read (valid events and foreign ones).
    pub folded: u64,
    /// Commands handled (ok or not).
    pub commands: u64,
    /// Malformed command requests.
    pub bad_commands: u64,
    /// Commands refused by a check of the secured tree (unknown key, bad
    /// signature, wrong node, stale, replayed, role, scope).
    #[serde(default)]
    pub refused_commands: u64,
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
    pub origins_restored: u64,
    /// State requests dropped because they came faster than they could be
    /// answered (the asker timed out).
    pub state_requests_dropped: u64,
    /// Hook scripts killed or not started because the lease no longer
    /// covered them.
    pub hooks_fenced: u64,
    /// Leaf links of this member's server (its remote to the parent, its
    /// children's links to it) that closed, as its monitoring (`/leafz`,
    /// on loopback, every 2 s) shows them: a hub closes a link that breaks
    /// its rights, and the spoke waits before it connects again, so a
    /// growing count is a link to look at.
    #[serde(default)]
    pub leaf_links_lost: u64,
}

/// A state request on `canopy.state.<node>` (an empty body means "every
/// point").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateRequest {
    /// NATS-style pattern over full point names (`root.south.>`).
    #[serde(default)]
    pub pattern: Option<String>,
    /// Reply with the digest only.
    #[serde(default)]
    pub digest: bool,
}

impl StateRequest {
    /// Parses a request body; an empty (or blank) body is the default.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            Ok(Self::default())
        } else {
            serde_json::from_slice(body)
        }
    }
}

/// The reply to a [`StateRequest`]: `{"node", "member", "points",
/// "origins"}`, or `{"node", "member", "digest"}` when only the digest was
/// asked, or `{"error"}` for a request that does not parse.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateReply {
    /// The node whose state this is (every point of its subtree).
    #[serde(default)]
    pub node: String,
    /// The member that answered.
    #[serde(default)]
    pub member: String,
    /// Full point name (`<origin>.<point>`) → its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<BTreeMap<String, PointReply>>,
    /// Origin path → where its history stands in this fold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origins: Option<BTreeMap<String, OriginReply>>,
    /// `events::State::digest` of the (filtered) state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Why the request was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One point of a [`StateReply`] (the fold's stash of the field value under
/// a force is internal and not shown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointReply {
    /// The value shown: the forced value while forced, else the field value.
    pub value: Value,
    /// Quality of the shown value.
    pub quality: Quality,
    /// The origin owning the point.
    pub origin: String,
    /// Seq of the last event that touched the point.
    pub seq: u64,
    /// Epoch of that event.
    pub epoch: u64,
    /// `ts` of that event (µs since the Unix epoch).
    pub ts: u64,
    /// Whether an operator override is in force.
    pub forced: bool,
    /// The origin lies outside the answering node's subtree: a copy kept
    /// by a node with `view = "tree"`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outside: bool,
}

/// One origin of a [`StateReply`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginReply {
    /// Seq of the last event folded.
    pub seq: u64,
    /// Highest epoch folded.
    pub epoch: u64,
    /// Set when the fold stopped folding this origin (its stream goes on
    /// with messages that are not the next event of its chain): why. Its
    /// points are then shown `uncertain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
    /// Outside the answering node's subtree (see [`PointReply::outside`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outside: bool,
}

impl StateReply {
    /// The answer to `req` from the fold `state` of `node` held by `member`.
    pub fn answer(node: &str, member: &str, state: &State, req: &StateRequest) -> Self {
        let filtered;
        let view = match &req.pattern {
            Some(p) => {
                filtered = state.filter(p);
                &filtered
            }
            None => state,
        };
        let outside = |origin: &str| {
            origin != node
                && !origin
                    .strip_prefix(node)
                    .is_some_and(|rest| rest.starts_with('.'))
        };
        let mut reply = StateReply {
            node: node.to_owned(),
            member: member.to_owned(),
            ..Default::default()
        };
        if req.digest {
            reply.digest = Some(view.digest());
            return reply;
        }
        reply.points = Some(
            view.points
                .iter()
                .map(|(name, p)| {
                    let point = PointReply {
                        value: p.value.clone(),
                        quality: p.quality,
                        origin: p.origin.clone(),
                        seq: p.seq,
                        epoch: p.epoch,
                        ts: p.ts,
                        forced: p.forced,
                        outside: outside(&p.origin),
                    };
                    (name.clone(), point)
                })
                .collect(),
        );
        reply.origins = Some(
            view.origins
                .iter()
                .map(|(o, st)| {
                    let origin = OriginReply {
                        seq: st.seq,
                        epoch: st.epoch,
                        stalled: None,
                        outside: outside(o),
                    };
                    (o.clone(), origin)
                })
                .collect(),
        );
        reply
    }

    /// Marks the origins whose fold stalled (origin → why): the origin says
    /// why, and each of its points is shown `uncertain`, since its value
    /// may be stale while the reply would otherwise call it good.
    pub fn mark_stalled(mut self, stalled: &BTreeMap<String, String>) -> Self {
        if stalled.is_empty() {
            return self;
        }
        for (name, o) in self.origins.iter_mut().flatten() {
            if let Some(why) = stalled.get(name) {
                o.stalled = Some(why.clone());
            }
        }
        for p in self.points.iter_mut().flatten().map(|(_, p)| p) {
            if stalled.contains_key(&p.origin) {
                p.quality = Quality::Uncertain;
            }
        }
        self
    }

    /// A refusal.
    pub fn error(msg: impl Into<String>) -> Self {
        StateReply {
            error: Some(msg.into()),
            ..Default::default()
        }
    }

    /// The folded seq of `origin` (0 when unknown).
    pub fn origin_seq(&self, origin: &str) -> u64 {
        self.origins
            .as_ref()
            .and_then(|o| o.get(origin))
            .map(|o| o.seq)
            .unwrap_or(0)
    }
}

/// Most samples one [`Query::History`] reply carries (`limit`'s ceiling;
/// page on with `after_seq`).
pub const QUERY_MAX_LIMIT: usize = 10_000;
/// Most bytes of samples (or points) one reply carries, well under NATS's
/// default `max_payload` (1 MiB): a page that reaches it ends early, with
/// `next_after_seq` (`next_after_point`).
pub const QUERY_MAX_REPLY_BYTES: usize = 512 * 1024;
/// Samples a history reply carries when the request gives no `limit`.
pub const QUERY_DEFAULT_LIMIT: usize = 1_000;
/// The longest time range one history query may span (31 days).
pub const QUERY_MAX_RANGE_MS: u64 = 31 * 24 * 3600 * 1000;
/// Most events one query may walk (decode, verify, fold): a reply that
/// reaches it says where to go on.
pub const QUERY_MAX_SCAN: u64 = 2_000_000;
/// How long a worker works on one query at most.
pub const QUERY_TIMEOUT_MS: u64 = 10_000;

/// A query on `canopy.query.<node>`, answered by any of the node's `canopy
/// query` workers (queue group `canopy-query`) from the node's streams:
/// the node's own origin's and its replicas (every descendant's, and with
/// `view = "tree"` every origin's).
///
/// Every event a worker reads passes the checks the fold makes (decode,
/// seq = stream sequence, the hash chain from the first event read, and,
/// on the secured tree, an epoch opened by a checkpoint signed with the
/// origin's manifest key): a query never shows a value the fold refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Query {
    /// Every recorded change of one point (value, forced, unforced) with
    /// `from_ms <= ts <= to_ms` (ms since the Unix epoch), oldest first,
    /// at most `limit`; `after_seq` pages on from a previous reply's
    /// `next_after_seq`.
    History {
        /// The origin owning the point.
        origin: String,
        /// The point's name within the origin.
        point: String,
        /// Start of the range (ms since the Unix epoch), inclusive.
        from_ms: u64,
        /// End of the range, inclusive.
        to_ms: u64,
        /// Most samples in the reply ([`QUERY_DEFAULT_LIMIT`] by default,
        /// at most [`QUERY_MAX_LIMIT`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
        /// Only events after this seq (paging).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_seq: Option<u64>,
    },
    /// The origin's state as it stood at `at_ms`: the fold of its events
    /// with `ts <= at_ms` (within what retention kept), its points in
    /// order of their ids; `after_point` pages on from a previous reply's
    /// `next_after_point`.
    StateAt {
        /// The origin.
        origin: String,
        /// The instant (ms since the Unix epoch).
        at_ms: u64,
        /// Only points whose id sorts after this one (paging).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_point: Option<String>,
    },
}

impl Query {
    /// Parses and checks a request: the error names the field and the
    /// limit it breaks.
    pub fn parse(body: &[u8]) -> Result<Query, String> {
        let q: Query = serde_json::from_slice(body).map_err(|e| {
            format!("not a query ({e}); expected {{\"kind\": \"history\" | \"state_at\", ...}}")
        })?;
        q.check()?;
        Ok(q)
    }

    /// The origin the query reads.
    pub fn origin(&self) -> &str {
        match self {
            Query::History { origin, .. } | Query::StateAt { origin, .. } => origin,
        }
    }

    fn check(&self) -> Result<(), String> {
        if !events::subjects::valid_path(self.origin()) {
            return Err(format!("origin {:?} is not a node path", self.origin()));
        }
        if let Query::History {
            point,
            from_ms,
            to_ms,
            limit,
            ..
        } = self
        {
            if !events::subjects::valid_point_name(point) {
                return Err(format!("point {point:?} is not a point name"));
            }
            if from_ms > to_ms {
                return Err(format!("from_ms {from_ms} is after to_ms {to_ms}"));
            }
            if to_ms - from_ms > QUERY_MAX_RANGE_MS {
                return Err(format!(
                    "the range spans {} ms, more than the {QUERY_MAX_RANGE_MS} ms (31 days) one query may: split it",
                    to_ms - from_ms
                ));
            }
            if let Some(l) = limit {
                if *l == 0 || *l > QUERY_MAX_LIMIT {
                    return Err(format!(
                        "limit {l} is not within 1..={QUERY_MAX_LIMIT}: page on with after_seq"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One recorded change of a point in a [`QueryReply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The event's seq (the origin's).
    pub seq: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Its `ts` (µs since the Unix epoch).
    pub ts: u64,
    /// `value`, `forced` or `unforced`.
    pub kind: String,
    /// The value recorded (none for `unforced`: the field value shows
    /// again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// The quality of a `value` sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    /// Who forced or unforced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The reply to a [`Query`], or `{"error"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryReply {
    /// The node whose streams answered.
    pub node: String,
    /// The worker that answered.
    pub worker: String,
    /// How long the worker worked on it (µs), not counting its wait in
    /// the worker's queue.
    pub handler_us: u64,
    /// How long the request waited at the worker before that (µs).
    #[serde(default)]
    pub queued_us: u64,
    /// Events read (decoded and verified) to answer.
    #[serde(default)]
    pub scanned: u64,
    /// History: the samples, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<Vec<Sample>>,
    /// History: more samples may follow; ask again with this `after_seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after_seq: Option<u64>,
    /// State-at: the origin's points then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<BTreeMap<String, PointReply>>,
    /// State-at: the last seq folded (0: nothing recorded by then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_seq: Option<u64>,
    /// State-at: more points follow (the reply reached
    /// [`QUERY_MAX_REPLY_BYTES`]); ask again with this `after_point`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after_point: Option<String>,
    /// Messages of the stream that are not events of the origin's chain
    /// (stepped over, as the fold does).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub foreign: u64,
    /// Why the query was not answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl QueryReply {
    /// A refusal of `worker` of `node`.
    pub fn error(node: &str, worker: &str, msg: impl Into<String>) -> Self {
        Self {
            node: node.to_owned(),
            worker: worker.to_owned(),
            error: Some(msg.into()),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_reply_has_the_documented_shape_and_reads_back() {
        let mut chain = events::Chain::new("root.a", "a", 3);
        let ev = chain
            .seal(
                7,
                events::Body::Value(events::ValueBody {
                    point: "t".into(),
                    value: Value::Float(1.5),
                    quality: Quality::Good,
                }),
            )
            .expect("seal")
            .event;
        let mut state = State::default();
        state.apply(&ev);
        let reply = StateReply::answer("root", "a", &state, &StateRequest::default());
        let json: serde_json::Value = serde_json::to_value(&reply).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "node": "root", "member": "a",
                "points": {"root.a.t": {"value": 1.5, "quality": "good", "origin": "root.a",
                                         "seq": 1, "epoch": 3, "ts": 7, "forced": false}},
                "origins": {"root.a": {"seq": 1, "epoch": 3}},
            })
        );
        let back: StateReply = serde_json::from_value(json).expect("typed");
        assert_eq!(back, reply);
        assert_eq!(back.origin_seq("root.a"), 1);

        let digest = StateReply::answer(
            "root",
            "a",
            &state,
            &StateRequest {
                digest: true,
                ..Default::default()
            },
        );
        let json = serde_json::to_value(&digest).expect("json");
        assert_eq!(json["digest"], serde_json::json!(state.digest()));
        assert!(json.get("points").is_none());
    }

    /// The state reply's points and origins, as `events::State` used to
    /// render them itself (the test moved here with the format).
    #[test]
    fn json_shape() {
        let mut chain = events::Chain::new("root.south", "a", 1);
        let mut state = State::default();
        let temp = events::Body::Value(events::ValueBody {
            point: "temp1".into(),
            value: Value::Float(21.5),
            quality: Quality::Good,
        });
        let pump = events::Body::Forced(events::ForcedBody {
            point: "pump".into(),
            value: Value::Bool(true),
            by: "jo".into(),
        });
        state.apply(&chain.seal(1000, temp).expect("seal").event);
        state.apply(&chain.seal(2000, pump).expect("seal").event);
        let reply = StateReply::answer("root", "a", &state, &StateRequest::default());
        let mut json = serde_json::to_value(&reply).expect("json");
        if let Some(o) = json.as_object_mut() {
            o.remove("node");
            o.remove("member");
        }
        assert_eq!(
            json,
            serde_json::json!({
                "points": {
                    "root.south.pump": {
                        "value": true, "quality": "good", "origin": "root.south",
                        "seq": 2, "epoch": 1, "ts": 2000, "forced": true
                    },
                    "root.south.temp1": {
                        "value": 21.5, "quality": "good", "origin": "root.south",
                        "seq": 1, "epoch": 1, "ts": 1000, "forced": false
                    }
                },
                "origins": { "root.south": { "seq": 2, "epoch": 1 } }
            })
        );
    }

    #[test]
    fn blank_state_requests_mean_everything_and_unknown_fields_are_refused() {
        assert!(StateRequest::parse(b"  ").expect("blank").pattern.is_none());
        let r = StateRequest::parse(br#"{"pattern":"root.>"}"#).expect("pattern");
        assert_eq!(r.pattern.as_deref(), Some("root.>"));
        assert!(StateRequest::parse(br#"{"patern":"x"}"#).is_err());
    }

    #[test]
    fn control_requests_have_the_documented_shape_and_bad_ones_say_why() {
        assert_eq!(
            Control::parse(br#"{"op":"switchover"}"#),
            Ok(Control::Switchover)
        );
        assert_eq!(
            Control::parse(br#"{"op":"maintenance","on":false}"#),
            Ok(Control::Maintenance { on: false })
        );
        for bad in [
            &b""[..],
            br#"{"op":"maintenance"}"#,
            br#"{"op":"reboot"}"#,
            br#"{"op":"switchover","to":"b"}"#,
            br#"{"op":"switchover","on":true}"#,
        ] {
            let e = Control::parse(bad).expect_err("refused");
            assert!(e.starts_with("not a control request"), "{e}");
        }
        for c in [Control::Switchover, Control::Maintenance { on: true }] {
            let json = serde_json::to_vec(&c).expect("json");
            assert_eq!(Control::parse(&json), Ok(c));
        }
        let json = serde_json::to_value(ControlReply::refused("no quorum")).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"ok": false, "maintenance": [], "error": "no quorum"})
        );
    }
}
