//! adapters: everything that talks to the field, or pretends to.
//!
//! This crate owns the value simulator ([`sim`]), the mapping between Modbus
//! registers and [`events::Value`]s ([`codec`]), a Modbus TCP client that
//! survives broken connections ([`modbus`]), the per-device polling task with
//! its write and life-sign commands ([`poller`]), and a Modbus TCP PLC
//! simulator for tests and the lab ([`plcsim`]).
//!
//! Architecture invariant: this crate never touches NATS, JetStream or the
//! events' wire codec. It produces plain readings (`point`, [`events::Value`],
//! [`events::Quality`]); deciding what is a change, assigning sequence numbers
//! and publishing belong to the caller. It depends on `topology` for the shape
//! of points and devices and on `events` only for the value and quality types.
//!
//! Architecture invariant: exactly one task owns a device's Modbus connection
//! (the [`poller::Poller`] task); reads, writes and life-sign writes go
//! through it in turn, so requests never interleave on one socket.
#![forbid(unsafe_code)]

pub mod codec;
pub mod modbus;
pub mod plcsim;
pub mod poller;
pub mod sim;
