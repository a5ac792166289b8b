//! `canopy bench`: benchmarks that print figures.

use crate::cli::BenchPipelineArgs;

/// `canopy bench pipeline`.
pub async fn pipeline(_a: BenchPipelineArgs) -> anyhow::Result<u8> {
    anyhow::bail!("bench pipeline: not built yet")
}
