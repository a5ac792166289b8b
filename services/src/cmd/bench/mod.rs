//! `canopy bench`: benchmarks that print figures, never pass/fail. Timing
//! goals live here and in BENCHMARKS.md, not in the test suite.
//!
//! Most run on the shared 3-level tree of [`tree`] (real `canopy node`
//! processes for `root` and `root.mid`, the leaf's stream written by the
//! benchmark itself); `failover` runs a whole `canopy lab`. One module per
//! benchmark; new ones go beside them.

pub mod catchup;
pub mod codec;
pub mod failover;
pub mod faults;
pub mod pipeline;
pub mod queries;
pub mod rebuild;
pub mod restart;
pub mod scale;
pub mod tree;

use crate::cli::BenchCmd;

/// Runs one benchmark; returns the process exit code.
pub async fn run(cmd: BenchCmd) -> anyhow::Result<u8> {
    match cmd {
        BenchCmd::Pipeline(a) => pipeline::run(a).await,
        BenchCmd::Codec(a) => codec::run(a),
        BenchCmd::Failover(a) => failover::run(a).await,
        BenchCmd::Catchup(a) => catchup::run(a).await,
        BenchCmd::Rebuild(a) => rebuild::run(a).await,
        BenchCmd::Restart(a) => restart::run(a).await,
        BenchCmd::Faults(a) => faults::run(a).await,
        BenchCmd::Queries(a) => queries::run(a).await,
        BenchCmd::Scale(a) => scale::run(a).await,
    }
}
