//! Fuzz target `wire_json`: the checks of `checks/wire_json.rs` on every input (the
//! same checks the corpus replay in the test suite runs).

#![no_main]

#[path = "../checks/wire_json.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
