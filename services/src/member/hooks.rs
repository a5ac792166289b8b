//! Hook scripts run on role changes (like keepalived's notify scripts):
//! e.g. taking over a floating address when a member becomes active.

use std::time::{Duration, Instant};

use tokio::process::Command;

/// Runs `script` with `CANOPY_NODE`, `CANOPY_MEMBER`, `CANOPY_EPOCH` and
/// `CANOPY_TRANSITION` (`activate` | `deactivate`) set, killing it after
/// `timeout_ms`. Its failure is logged and returned (false), never fatal:
/// the role does not wait on a script.
pub async fn run(
    script: String,
    transition: &'static str,
    node: String,
    member: String,
    epoch: u64,
    timeout_ms: u64,
) -> bool {
    let started = Instant::now();
    let child = Command::new(&script)
        .env("CANOPY_NODE", &node)
        .env("CANOPY_MEMBER", &member)
        .env("CANOPY_EPOCH", epoch.to_string())
        .env("CANOPY_TRANSITION", transition)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_millis(timeout_ms.max(1)), child).await {
        Ok(Ok(out)) if out.status.success() => {
            tracing::info!(%script, transition, took_ms = started.elapsed().as_millis() as u64, "hook ran");
            return true;
        }
        Ok(Ok(out)) => tracing::error!(
            %script, transition, status = ?out.status,
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "hook failed"
        ),
        Ok(Err(e)) => tracing::error!(%script, transition, "hook could not start: {e}"),
        Err(_) => tracing::error!(%script, transition, timeout_ms, "hook timed out and was killed"),
    }
    false
}
