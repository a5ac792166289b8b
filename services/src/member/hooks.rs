//! Hook scripts run on role changes (like keepalived's notify scripts):
//! e.g. taking over a floating address when a member becomes active.
//!
//! Hooks are side effects like PLC writes, and fenced like them:
//!
//! - `on_activate` starts only while the member holds its lease, and is
//!   killed the moment the lease is lost;
//! - `on_deactivate` runs while the lease still holds when the member
//!   gives the role up itself (a switchover, a shutdown); when the lease was
//!   lost, only until the earliest instant another member can have been
//!   granted the role (`raft::Timing::peer_grant_earliest` after the lease
//!   ended), and is killed then, or skipped if that instant has passed.
//!
//! So the other member's `on_activate`, which starts only after its grant,
//! never overlaps this member's `on_deactivate`.

use std::time::{Duration, Instant};

use tokio::process::Command;

use super::publisher::Fence;

/// Once the lease has ended: the earliest instant another member can have
/// been granted the role (`None` while the lease has not ended).
pub type GrantBound = std::sync::Arc<dyn Fn() -> Option<tokio::time::Instant> + Send + Sync>;

/// What bounds a hook.
#[derive(Clone)]
pub enum HookFence {
    /// No bound (a single node: nobody else can take over).
    None,
    /// `on_activate`: runs only while `fence` holds.
    While(Fence),
    /// `on_deactivate`: runs while `fence` holds, else until `bound`
    /// says another member may have been granted the role (`None`: it may
    /// already have been: do not run).
    UntilGrant {
        /// The lease check.
        fence: Fence,
        /// The earliest instant another member can be granted, once the
        /// lease has ended (tokio's clock).
        bound: GrantBound,
    },
}

impl std::fmt::Debug for HookFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookFence::None => "None",
            HookFence::While(_) => "While",
            HookFence::UntilGrant { .. } => "UntilGrant",
        })
    }
}

/// How a hook run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and exited 0.
    Ok,
    /// It failed, timed out or could not start.
    Failed,
    /// It was killed (or not started) because its fence ended.
    Fenced,
}

impl HookFence {
    /// Whether the hook may run (or go on running) now.
    fn allows(&self) -> bool {
        match self {
            HookFence::None => true,
            HookFence::While(f) => f(),
            HookFence::UntilGrant { fence, bound } => {
                fence() || bound().is_some_and(|b| tokio::time::Instant::now() < b)
            }
        }
    }
}

/// How often a running hook's fence is checked (a fraction of the lease).
const CHECK: Duration = Duration::from_millis(10);

/// Runs `script` with `CANOPY_NODE`, `CANOPY_MEMBER`, `CANOPY_EPOCH` and
/// `CANOPY_TRANSITION` (`activate` | `deactivate`) set, killing it after
/// `timeout_ms` or when `fence` no longer allows it. Its failure is logged
/// and returned, never fatal: the role does not wait on a script.
pub async fn run(
    script: String,
    transition: &'static str,
    node: String,
    member: String,
    epoch: u64,
    timeout_ms: u64,
    fence: HookFence,
) -> Outcome {
    if !fence.allows() {
        tracing::warn!(%script, transition, "hook not run: the lease no longer covers it");
        return Outcome::Fenced;
    }
    let started = Instant::now();
    let child = Command::new(&script)
        .env("CANOPY_NODE", &node)
        .env("CANOPY_MEMBER", &member)
        .env("CANOPY_EPOCH", epoch.to_string())
        .env("CANOPY_TRANSITION", transition)
        .kill_on_drop(true)
        .output();
    let fenced = async {
        loop {
            tokio::time::sleep(CHECK).await;
            if !fence.allows() {
                return;
            }
        }
    };
    let timeout = Duration::from_millis(timeout_ms.max(1));
    tokio::select! {
        out = tokio::time::timeout(timeout, child) => match out {
            Ok(Ok(out)) if out.status.success() => {
                tracing::info!(%script, transition, took_ms = started.elapsed().as_millis() as u64, "hook ran");
                Outcome::Ok
            }
            Ok(Ok(out)) => {
                tracing::error!(
                    %script, transition, status = ?out.status,
                    stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                    "hook failed"
                );
                Outcome::Failed
            }
            Ok(Err(e)) => {
                tracing::error!(%script, transition, "hook could not start: {e}");
                Outcome::Failed
            }
            Err(_) => {
                tracing::error!(%script, transition, timeout_ms, "hook timed out and was killed");
                Outcome::Failed
            }
        },
        // Dropping the child's future kills it (kill_on_drop).
        () = fenced => {
            tracing::warn!(%script, transition, "hook killed: the lease no longer covers it");
            Outcome::Fenced
        }
    }
}
