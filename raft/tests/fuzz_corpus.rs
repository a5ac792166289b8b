//! Replays the `raft_frame` fuzz corpus (`fuzz/corpus/raft_frame/`) through the
//! target's own checks (`fuzz/checks/raft_frame.rs`, included by path, so the
//! fuzzer and this test assert the same things): every input the fuzzer
//! kept runs once in the normal test suite. Rerun the fuzzer with
//! `scripts/fuzz raft_frame`.

#[path = "../../fuzz/checks/raft_frame.rs"]
mod check;
#[path = "../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn every_corpus_input_passes_the_targets_checks() {
    replay::replay("raft_frame", check::check);
}
