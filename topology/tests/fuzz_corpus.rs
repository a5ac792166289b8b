//! Replays the `topology_load` fuzz corpus (`fuzz/corpus/topology_load/`) through the
//! target's own checks (`fuzz/checks/topology_load.rs`, included by path, so the
//! fuzzer and this test assert the same things): every input the fuzzer
//! kept runs once in the normal test suite. Rerun the fuzzer with
//! `scripts/fuzz topology_load`.

#[path = "../../fuzz/checks/topology_load.rs"]
mod check;
#[path = "../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn every_corpus_input_passes_the_targets_checks() {
    replay::replay("topology_load", check::check);
}
