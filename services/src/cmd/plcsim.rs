//! `canopy plc-sim`: a Modbus TCP PLC simulator.

use anyhow::Context as _;
use tokio::io::AsyncWriteExt;

use adapters::plcsim::{self, Drive, PlcSimConfig};

use crate::cli::PlcSimArgs;

/// Serves until SIGINT/SIGTERM. Prints `{"ready": true, "address": ...}` on
/// stdout once listening (port 0 picks a free port).
pub async fn run(a: PlcSimArgs) -> anyhow::Result<u8> {
    let mut drives = Vec::new();
    for d in &a.drive {
        let drive: Drive = d
            .parse()
            .map_err(|e| anyhow::anyhow!("--drive {d:?}: {e}"))?;
        drives.push(drive);
    }
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let addr = listener.local_addr()?;
    let cancel = super::shutdown_token()?;
    let config = PlcSimConfig {
        drives,
        write_log: a.write_log.clone(),
        ..Default::default()
    };
    let line = serde_json::json!({ "ready": true, "address": addr.to_string() }).to_string() + "\n";
    let mut out = tokio::io::stdout();
    out.write_all(line.as_bytes()).await?;
    out.flush().await?;
    tracing::info!("plc-sim listening on {addr}");
    plcsim::serve(listener, config, cancel).await?;
    Ok(0)
}
