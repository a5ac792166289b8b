//! Replays the `event_decode` fuzz corpus (`fuzz/corpus/event_decode/`) through the
//! target's own checks (`fuzz/checks/event_decode.rs`, included by path, so the
//! fuzzer and this test assert the same things): every input the fuzzer
//! kept runs once in the normal test suite. Rerun the fuzzer with
//! `scripts/fuzz event_decode`.

#[path = "../../fuzz/checks/event_decode.rs"]
mod check;
#[path = "../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn every_corpus_input_passes_the_targets_checks() {
    replay::replay("event_decode", check::check);
}
