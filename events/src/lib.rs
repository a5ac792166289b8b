//! `events`: canopy's wire format and the pure logic over it.
//!
//! Owns: the versioned event envelope and its CBOR codec ([`encode`],
//! [`decode`]); the hash chain, origin side ([`Chain`]) and reader side
//! ([`OriginCursor`]); gap detection ([`GapTracker`]); NATS subject,
//! stream and header names ([`subjects`]); and the state fold ([`State`]).
//! `docs/wire-format.md` is the contract for readers in other languages.
//!
//! Must never depend on: I/O of any kind (files, sockets, clocks: callers
//! pass `ts`), an async runtime, a NATS client, or any other canopy crate.
//! Everything here is a plain function over data, so the audit, the fold
//! and a `rebuild` give the same answer on every node, and the tests need
//! no broker.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cbor;
mod chain;
mod codec;
mod state;
pub mod subjects;
mod verify;
mod wire;

pub use chain::{Chain, EpochError, SealError, Sealed};
pub use codec::{decode, encode, DecodeError};
pub use state::{point_key, Applied, OriginState, PointState, State};
pub use verify::{GapTracker, Observation, OriginCursor, Violation};
pub use wire::{
    hash, BirthBody, Body, Event, ForcedBody, Hash, InvalidEvent, PointInfo, Quality, ResourceBody,
    ResourceState, Role, RoleBody, UnforcedBody, Value, ValueBody, MAX_EVENT_BYTES, WIRE_VERSION,
    ZERO_HASH,
};
