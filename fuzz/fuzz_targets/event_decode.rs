//! Fuzz target `event_decode`: the checks of `checks/event_decode.rs` on every input (the
//! same checks the corpus replay in the test suite runs).

#![no_main]

#[path = "../checks/event_decode.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
