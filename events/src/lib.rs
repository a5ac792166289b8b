//! `events`: canopy's wire format and the pure logic over it.
//!
//! Owns: the versioned event envelope and its CBOR codec ([`encode`],
//! [`decode`]); the hash chain, origin side ([`Chain`]) and reader side:
//! the one verifier of "is this message the next event of origin X's
//! chain" ([`ChainVerifier`], its typed [`Break`], and the strict
//! whole-stream [`verify_contiguous`]), which every reader below uses and
//! none re-implements; gap detection ([`GapTracker`]); NATS subject, stream
//! and header names ([`subjects`]); the state fold ([`State`]); the lenient
//! reader of a local stream ([`StreamCursor`]: the verifier, stepping over
//! a break); state snapshots ([`Snapshot`]); signed checkpoints
//! ([`sign_checkpoint`], [`verify_checkpoint`]); and the audit of an
//! origin's stream ([`audit`]: the verifier's breaks reported, plus the
//! epoch and checkpoint rules). `docs/wire-format.md` is the contract for
//! readers in other languages.
//!
//! Must never depend on: I/O of any kind (files, sockets, clocks: callers
//! pass `ts`), an async runtime, a NATS client, or any other canopy crate.
//! Everything here is a plain function over data, so the audit, the fold
//! and a `rebuild` give the same answer on every node, and the tests need
//! no broker.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod audit;
mod cbor;
mod chain;
mod checkpoint;
mod codec;
mod command;
mod gaps;
mod gate;
mod snapshot;
mod state;
mod stream;
pub mod subjects;
mod verify;
mod wire;

pub use chain::{Chain, EpochError, SealError, Sealed};
pub use checkpoint::{
    checkpoint_message, sign_checkpoint, verify_checkpoint, SigError, CHECKPOINT_DOMAIN,
};
pub use codec::{decode, encode, DecodeError};
pub use command::{
    command_message, json_value, sign_command, sign_control, verify_command, verify_control,
    verify_recorded, CommandProblem, ControlRequest, Request, COMMAND_DOMAIN, CONTROL_DOMAIN,
};
pub use gaps::{GapTracker, Observation};
pub use gate::{EpochGate, Gated, Opener, MAX_HELD};
/// The nkeys crate this one signs and verifies with, so callers build key
/// pairs of the same version (`nkeys::KeyPair::new_user()` for `canopy keys
/// gen`, `from_seed` to sign).
pub use nkeys;
pub use snapshot::{Position, Snapshot, SnapshotError};
pub use state::{point_key, Applied, OriginState, PointState, State};
pub use stream::{StreamCursor, Verdict};
pub use verify::{verify_contiguous, Break, ChainBroken, ChainVerifier, Link, Mark, Verified};
pub use wire::{
    hash, BirthBody, Body, CheckpointBody, CommandBody, CommandOp, Event, ForcedBody, Hash,
    InvalidEvent, PointInfo, Quality, ResourceBody, ResourceState, Role, RoleBody, Signature,
    UnforcedBody, Value, ValueBody, MAX_EVENT_BYTES, WIRE_VERSION, ZERO_HASH,
};
