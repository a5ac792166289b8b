//! Fuzz target `topology_load`: the checks of `checks/topology_load.rs` on every input (the
//! same checks the corpus replay in the test suite runs).

#![no_main]

#[path = "../checks/topology_load.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
