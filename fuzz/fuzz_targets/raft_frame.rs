//! Fuzz target `raft_frame`: the checks of `checks/raft_frame.rs` on every input (the
//! same checks the corpus replay in the test suite runs).

#![no_main]

#[path = "../checks/raft_frame.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
