//! The topology: the model of the node tree (mesh settings, nodes, members,
//! witnesses, ports, Modbus devices, points) and its validation.
//!
//! It owns parsing one TOML file into a [`Topology`] and checking every rule
//! of the contract in `shared/TOPOLOGY.md`, reporting each problem as
//! `FILE:LINE:COL: message`. It is pure: the only I/O is reading the file in
//! [`Topology::load`].
//!
//! It must never depend on NATS, tokio or any other canopy crate: every
//! process reads the topology before anything else starts, and tools that
//! only check a file must not pull in a runtime.

#![forbid(unsafe_code)]

mod error;
mod model;
mod raw;
mod tree;
mod validate;

pub use error::{Diagnostic, TopologyError};
pub use model::{
    Checkpoint, Client, ClientRole, DataType, Endpoint, Hooks, InvalidValue, Member, Mesh,
    ModbusDevice, ModbusPoint, Node, Point, Ports, Register, RegisterKind, Retention, Security,
    SimKind, SimSpec, Source, SyncPolicy, Topology, View,
};

/// The topology `canopy lab` runs when no file is given: a 3-level tree of
/// single members on 127.0.0.1 (ports 14000-14306), with simulated points and
/// one Modbus node polling 127.0.0.1:15020.
pub const DEFAULT_TOPOLOGY: &str = include_str!("default.toml");

/// The first example of `shared/TOPOLOGY.md` (plus a comment line for each
/// option this build adds), so a test keeps the contract's example loading.
pub const EXAMPLE_TOPOLOGY: &str = include_str!("example.toml");
