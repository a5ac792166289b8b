//! Cluster-level test helpers: real `canopy` and `nats-server` processes on
//! free loopback ports, stopped on `Drop` (also when a test fails).
//!
//! Nothing here sleeps to synchronise: [`wait_for`] polls a condition until
//! a deadline and fails with the last observation. Ports come from
//! `services::ports`, which reserves them across processes (nextest runs
//! every test in its own), below the kernel's ephemeral range.
//!
//! - `bin`: where `canopy`, nats-server and Python are; the CLI.
//! - `lab`: a `canopy lab` fixture; processes restarted from its argv.
//! - `nats`: requests, state, whole streams, the chain check.
//! - `topo`: topologies on free ports.
//! - `python`: pymodbus servers and the Modbus tap.
//! - `probe`: raw TLS and plaintext probes of a server port.
//! - signals and per-process network cuts: `services::faults`.

mod bin;
mod containers;
mod lab;
mod nats;
pub mod probe;
mod python;
mod topo;

pub use bin::{canopy_bin, cli, nats_server_bin, python_bin, workspace_root};
pub use containers::{build_lab_image, static_canopy_bin, ContainerLab, LAB_IMAGE};
pub use lab::{Lab, Respawned};
pub use nats::{
    check_contiguous_chain, connect, connect_as, member_info, read_stream, request, state, Refusals,
};
pub use python::PyModbus;
pub use services::faults::{kill, NetFault};
pub use services::wait::wait_for;
pub use topo::{sim_point, TopologyBuilder};

/// A block of `n` consecutive free loopback ports, reserved for the rest of
/// this test process (see `services::ports`).
pub fn free_ports(n: u16) -> u16 {
    match services::ports::reserve(n) {
        Ok(base) => base,
        Err(e) => panic!("no free ports for the test: {e:#}"),
    }
}
