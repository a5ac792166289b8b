//! Replays the `wire_json` fuzz corpus (`fuzz/corpus/wire_json/`) through the
//! target's own checks (`fuzz/checks/wire_json.rs`, included by path, so the
//! fuzzer and this test assert the same things): every input the fuzzer
//! kept runs once in the normal test suite. Rerun the fuzzer with
//! `scripts/fuzz wire_json`.

#[path = "../../fuzz/checks/wire_json.rs"]
mod check;
#[path = "../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn every_corpus_input_passes_the_targets_checks() {
    replay::replay("wire_json", check::check);
}
