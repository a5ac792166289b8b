//! The `canopy` application: the node member, the lab, the command-line
//! clients and the benchmarks.
//!
//! This crate owns every piece of I/O (NATS, child processes, files,
//! terminals). The pure parts it builds on live in `events` (wire format,
//! chain, fold), `topology` (the topology model) and `adapters` (Modbus,
//! simulators); those crates must never depend on this one.

pub mod append;
pub mod certs;
pub mod child;
pub mod cli;
pub mod cmd;
pub mod faults;
pub mod ha;
pub mod keys;
pub mod logging;
pub mod member;
pub mod nats;
pub mod natsconf;
pub mod ports;
pub mod pull;
pub mod query;
pub mod rights;
pub mod streams;
pub mod supervisor;
pub mod wait;
pub mod wire;
